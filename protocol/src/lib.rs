//! The wire format between the host (husk) and the guest agent.
//! Owned by the agent/protocol work; see docs/ARCHITECTURE.md.
