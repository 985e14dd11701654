//! Emulated devices.

pub mod legacy;
pub mod serial;
pub mod virtio;
