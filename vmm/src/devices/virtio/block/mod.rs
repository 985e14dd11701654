//! virtio-blk: a disk image file exposed to the guest.
//!
//! - `device.rs`: [`Block`] (features offered, config space, running the
//!   request queue);
//! - `request.rs`: pure parsing and execution of one request chain;
//! - `event.rs`: the epoll glue.

mod device;
mod event;
mod request;

pub use device::{Block, BlockConfig, BlockError};
pub use request::DiskBackend;

#[cfg(test)]
mod tests;
