//! What a snapshot keeps of the vsock device: the guest CID. No
//! connection survives: a restored device listens on its new socket path
//! with none, and posts a TRANSPORT_RESET event
//! ([`Vsock::transport_reset`]) so that the guest drops its own.

use serde::{Deserialize, Serialize};

use super::device::Vsock;

/// The vsock device's own state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockState {
    /// The guest's CID when it was saved.
    pub guest_cid: u64,
}

impl Vsock {
    /// The device's state for a snapshot.
    pub fn save_state(&self) -> VsockState {
        VsockState {
            guest_cid: self.guest_cid(),
        }
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
