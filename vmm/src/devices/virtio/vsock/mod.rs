//! virtio-vsock with the host side in the VMM, bridged to Unix sockets the
//! way Firecracker's hybrid vsock does it:
//! - a host process connects to the Unix socket `uds_path`, writes
//!   `CONNECT <port>\n`, and once the guest accepts reads `OK <hostport>\n`;
//!   the stream is then bridged to guest port `<port>`;
//! - a guest connection to CID 2 port P is bridged to a new connection to
//!   the Unix socket `<uds_path>_<P>` (RST if nobody listens there).
//!
//! Files: `packet.rs` (header parsing and validation), `connection.rs` (one
//! connection), `gate.rs` (the agent-frame gate on guest data, for VMs
//! whose vsock carries only husk's agent protocol), `muxer.rs` (the set of connections and the listener),
//! `device.rs` ([`Vsock`] and queue processing, including the
//! TRANSPORT_RESET event a restored device posts), `persist.rs`
//! ([`VsockState`]), `event.rs` (epoll glue).

mod connection;
mod device;
mod event;
mod gate;
mod muxer;
pub mod packet;
mod persist;

pub use device::{Vsock, VsockConfig, VsockError};
pub use gate::{GateError, VsockStreams, GATED_BUF_ALLOC};
pub use persist::VsockState;

#[cfg(test)]
mod tests;
