//! Virtio devices over the virtio-mmio transport.
//!
//! Every device lives in its own folder with the same file roles:
//! - `device.rs`: the [`VirtioDevice`] implementation (features, config space,
//!   activation, state);
//! - `queue.rs` (or a name for what it processes): pure processing of
//!   descriptor chains against guest memory, unit-tested with
//!   virtio-queue's mock queues;
//! - `event.rs`: the epoll glue (`event_manager::MutEventSubscriber`).
//!
//! Threads: the transport runs on vCPU threads, the devices' queue
//! processing on the event-manager thread; both reach a device through its
//! `Arc<Mutex<_>>`. Activation and reset happen on a vCPU thread and are
//! handed to the event thread through [`activation::QueueEvents`].

pub mod activation;
pub mod block;
pub mod mmio;
pub mod net;
pub mod vsock;

#[cfg(test)]
pub(crate) mod test_utils;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Guest memory as the devices see it.
pub type GuestMemory = GuestMemoryMmap<()>;

/// `interrupt_status` bit: a used buffer was added to a queue.
pub const INT_VRING: u32 = 0x1;
/// `interrupt_status` bit: the configuration space changed.
pub const INT_CONFIG: u32 = 0x2;

/// The interrupt line of one virtio-mmio device: the status register the
/// transport exposes to the guest plus the irqfd that raises the GSI.
#[derive(Debug)]
pub struct VirtioInterrupt {
    status: AtomicU32,
    irqfd: EventFd,
}

impl VirtioInterrupt {
    /// Wraps the irqfd registered with KVM for this device's GSI.
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            irqfd,
        }
    }

    /// Sets `bits` in the interrupt status and raises the interrupt.
    pub fn trigger(&self, bits: u32) -> std::io::Result<()> {
        self.status.fetch_or(bits, Ordering::SeqCst);
        self.irqfd.write(1)
    }

    /// The current interrupt status (the `InterruptStatus` register).
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clears `bits` (the guest's `InterruptACK` write).
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The irqfd, for registration with KVM.
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }
}

/// What a device receives when the driver sets DRIVER_OK.
pub struct ActivateContext {
    /// Guest memory, for queue processing.
    pub mem: GuestMemory,
    /// The queues as the driver configured them, one per `queue_max_sizes` entry.
    pub queues: Vec<Queue>,
    /// The queue notification eventfds (duplicates of the transport's, which
    /// are registered as ioeventfds on QueueNotify), one per queue.
    pub queue_evts: Vec<EventFd>,
    /// The device's interrupt.
    pub interrupt: Arc<VirtioInterrupt>,
}

impl ActivateContext {
    /// Checks that the context carries exactly `expected` queues and queue
    /// eventfds; `device` names the device in the error.
    pub fn expect_queues(
        &self,
        device: &'static str,
        expected: usize,
    ) -> Result<(), ActivateError> {
        if self.queues.len() == expected && self.queue_evts.len() == expected {
            return Ok(());
        }
        Err(ActivateError::QueueCount {
            device,
            expected,
            got: self.queues.len(),
        })
    }
}

/// Errors a device may return from [`VirtioDevice::activate`].
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver's configuration is unusable (bad queue count, invalid queue...).
    #[error("invalid configuration: {0}")]
    BadConfig(&'static str),
    /// The device was handed the wrong number of queues.
    #[error("{device} needs {expected} queues, got {got}")]
    QueueCount {
        /// The device's name.
        device: &'static str,
        /// How many queues it has.
        expected: usize,
        /// How many it was given.
        got: usize,
    },
    /// Registering or signalling an eventfd failed.
    #[error("eventfd")]
    EventFd(#[source] std::io::Error),
}

/// A virtio device behind a virtio-mmio transport. Called from vCPU threads
/// (through the transport) under the device's mutex; must never panic on
/// guest-chosen offsets, lengths or feature bits.
pub trait VirtioDevice: Send {
    /// The virtio device ID (2 = block, 19 = vsock).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers (including VIRTIO_F_VERSION_1).
    fn avail_features(&self) -> u64;
    /// The features the driver accepted (a subset of `avail_features`).
    fn set_acked_features(&mut self, features: u64);
    /// Reads the device configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device with the driver's queues.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// The driver reset the device: drop queues and in-flight state. The
    /// queue eventfds of `activate` are duplicates of the transport's (which
    /// stay registered as ioeventfds), so the device just stops using them.
    fn reset(&mut self);
}

/// Copies `config[offset..]` into `data`, zero-filling past its end.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}
