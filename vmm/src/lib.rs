//! husk's virtual machine monitor: one KVM microVM with a serial console,
//! virtio-mmio block and vsock devices, booted directly into a 64-bit Linux
//! kernel.
//!
//! Module map (see docs/ARCHITECTURE.md):
//! - [`bus`]: MMIO and port-I/O dispatch from vCPU exits to devices.
//! - [`devices`]: the 8250 serial port and the virtio devices.
//! - the remaining modules (boot, vCPUs, host detection, the VM itself) are
//!   owned by the VM core.

pub mod bus;
pub mod devices;
