//! virtio-blk: a disk image file exposed to the guest.
//!
//! - `device.rs`: [`Block`] (features offered, config space, running the
//!   request queue);
//! - `request.rs`: pure parsing and execution of one request chain;
//! - `persist.rs`: [`BlockState`], what a snapshot keeps of a slot;
//! - `event.rs`: the epoll glue.
//!
//! A slot may be empty (no backing, capacity 0). Read-only is enforced by
//! the device itself, not only offered as VIRTIO_BLK_F_RO: a restored
//! slot keeps the features the template offered.

mod device;
mod event;
mod persist;
mod request;

pub use device::{Block, BlockConfig, BlockError};
pub use persist::BlockState;
pub use request::DiskBackend;

#[cfg(test)]
mod rate_limit_tests;
#[cfg(test)]
mod tests;
