//! virtio-net: one interface whose wire is a host backend (passt over a
//! Unix stream socket, or a TAP device).
//!
//! - `device.rs`: [`Net`] (features offered, config space, moving
//!   frames between the queues and the backend);
//! - `frame.rs`: pure processing of tx and rx chains (header, checksum
//!   completion, mergeable rx buffers);
//! - `egress.rs`: the [`EgressPolicy`], guest destinations the device
//!   keeps from the backend (pure frame inspection);
//! - `backend.rs`: the [`Backend`]s;
//! - `persist.rs`: [`NetState`], what a snapshot keeps (no backend);
//! - `event.rs`: the epoll glue.
//!
//! Offloads: the device offers checksum offload both ways (it completes
//! partial checksums itself before a frame reaches the backend, and tells
//! the guest that frames from a trusted backend need no verification),
//! mergeable rx buffers and an MTU, so that with passt's 65520-byte MTU
//! the guest sends and receives 64 KiB frames without segmentation
//! offloads.

mod backend;
mod device;
pub mod egress;
mod event;
pub mod frame;
mod persist;

use std::os::unix::net::UnixStream;
use std::sync::Arc;

pub use backend::{Backend, StreamBackend, TapBackend, MAX_FRAME_LEN, MIN_FRAME_LEN};
pub use device::{format_mac, Net, NetDeviceConfig, NetError, Stats, MIN_MTU, NET_DEVICE_ID};
pub use egress::{EgressPolicy, Ipv4Net};
pub use persist::NetState;

use crate::config::{NetBackend, NetConfig};

impl Net {
    /// Opens the backend `config` names and creates the device.
    pub fn from_config(config: &NetConfig) -> Result<Self, NetError> {
        let backend_err = |what: String| move |source| NetError::Backend { what, source };
        let (backend, trusted): (Box<dyn Backend>, bool) = match &config.backend {
            NetBackend::Unix(path) => {
                let what = format!("socket {}", path.display());
                let stream = UnixStream::connect(path).map_err(backend_err(what.clone()))?;
                let b = StreamBackend::new(Arc::new(stream)).map_err(backend_err(what))?;
                (Box::new(b), true)
            }
            NetBackend::Stream(stream) => {
                let b = StreamBackend::new(stream.clone())
                    .map_err(backend_err("stream socket".to_string()))?;
                (Box::new(b), true)
            }
            NetBackend::Tap(name) => {
                let b =
                    TapBackend::open(name).map_err(backend_err(format!("TAP device {name}")))?;
                (Box::new(b), false)
            }
        };
        Net::new(
            NetDeviceConfig {
                mac: config.mac,
                mtu: config.mtu,
                trusted_checksums: trusted,
                egress: config.egress.clone(),
            },
            backend,
        )?
        .with_rate_limit(&config.rate_limit)
    }
}

#[cfg(test)]
mod tests;
