//! virtio-fs: a host directory the guest mounts (`mount -t virtiofs TAG
//! /mnt`), whose FUSE requests an external vhost-user backend (virtiofsd)
//! serves straight from the device's queues.
//!
//! The VMM keeps the transport, the config space and the interrupt; the
//! backend gets guest memory (shared: the VM's RAM is a memfd when it has
//! a virtio-fs device), the rings and the queue eventfds:
//! - `device.rs`: [`Fs`] (config space: tag and number of request queues,
//!   the features offered, the hand-over of the queues at activation) and
//!   [`FsError`];
//! - `vhost_user.rs`: the frontend side of the vhost-user protocol
//!   ([`Backend`]): set-up at VM build, starting the rings on activation,
//!   stopping them on reset and at VM end;
//! - `event.rs`: the epoll glue: the backend's "call" eventfds become the
//!   device's interrupt (virtio-mmio drivers read InterruptStatus, so an
//!   irqfd straight to KVM would not do), and a backend that hangs up
//!   marks the device broken.
//!
//! Every vhost-user exchange happens on the event-loop thread (activation
//! and reset on a vCPU thread only record what the driver did). A backend
//! that errs, times out or disconnects breaks the device for good: the
//! guest's requests then never complete; the VMM logs it and goes on.
//!
//! A VM with a virtio-fs device cannot be snapshotted: the backend's
//! state is not the VMM's to save.

mod device;
mod event;
mod vhost_user;

pub use device::{check_tag, Fs, FsError, FS_DEVICE_ID, TAG_LEN};
pub use vhost_user::{Backend, Rings, SOCKET_TIMEOUT, SUPPORTED_FEATURES};

#[cfg(test)]
mod tests;
