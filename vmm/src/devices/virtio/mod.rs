//! Virtio devices over the virtio-mmio transport.
//!
//! What all devices share is in one place: [`common::VirtioCommon`]
//! (features offered and acked, inactive/activated state, activation,
//! reset, queue eventfd registration) and [`queue_loop`] (the loop over a
//! queue with notifications suppressed). Every device lives in its own
//! folder with the same file roles:
//! - `device.rs`: the [`VirtioDevice`] implementation (its config space,
//!   its own state, the [`VirtioCommon`] it embeds);
//! - `queue.rs` (or a name for what it processes): pure processing of
//!   descriptor chains against guest memory, unit-tested with
//!   virtio-queue's mock queues;
//! - `event.rs`: the epoll glue (`event_manager::MutEventSubscriber`);
//! - `persist.rs`: the device's own state in a snapshot (serde), and
//!   `save_state`. What devices share in a snapshot (transport registers,
//!   queues, features, config space) is saved and restored in one place,
//!   [`persist`] with [`mmio::MmioTransport::save`] and
//!   [`mmio::MmioTransport::restore`].
//!
//! A new device:
//! 1. embeds a [`VirtioCommon`] made with its name, device ID, queue sizes
//!    and offered features, and implements [`VirtioDevice`]: `common`,
//!    `common_mut`, `read_config` (usually [`read_config_bytes`]), plus
//!    `write_config`, `on_activate` and `on_reset` if it needs them;
//! 2. processes a queue with [`Activated::drain`] and a per-chain closure
//!    returning a [`ChainDone`], then raises the interrupt with
//!    [`Activated::needs_interrupt`] and [`Activated::signal_used`];
//! 3. in `event.rs`, calls [`VirtioCommon::init_events`] from `init`, and
//!    [`VirtioCommon::sync_events`] then [`VirtioCommon::queue_event`] from
//!    `process`, next to the events of its own backend.
//!
//! Threads: the transport runs on vCPU threads, the devices' queue
//! processing on the event-manager thread; both reach a device through its
//! `Arc<Mutex<_>>`. Activation and reset happen on a vCPU thread and are
//! handed to the event thread through [`activation::QueueEvents`].

pub mod activation;
pub mod block;
pub mod common;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod persist;
pub mod queue_loop;
pub mod vsock;

#[cfg(test)]
pub(crate) mod test_utils;

pub use common::{Activated, DeviceState, Features, VirtioCommon};
pub use queue_loop::ChainDone;

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

    /// Sets the interrupt status without raising the interrupt (snapshot
    /// restore: whether it was delivered is in the saved interrupt
    /// controller state).
    pub fn restore_status(&self, bits: u32) {
        self.status.store(bits, Ordering::SeqCst);
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
    /// The queues as the driver configured them, one per entry of
    /// [`VirtioCommon::queue_sizes`].
    pub queues: Vec<Queue>,
    /// The queue notification eventfds (duplicates of the transport's, which
    /// are registered as ioeventfds on QueueNotify), one per queue.
    pub queue_evts: Vec<EventFd>,
    /// The device's interrupt.
    pub interrupt: Arc<VirtioInterrupt>,
}

/// Errors a device may return from [`VirtioDevice::activate`].
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
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
///
/// A device implements its config space and, if it keeps state of its own
/// beyond its [`VirtioCommon`], the `on_activate`/`on_reset` hooks; the
/// rest (features, activation, reset) is provided.
pub trait VirtioDevice: Send {
    /// The shared state: features, activation state, queue eventfds.
    fn common(&self) -> &VirtioCommon;
    /// The shared state, mutably.
    fn common_mut(&mut self) -> &mut VirtioCommon;
    /// Reads the device configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space (by default: ignored).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::debug!(
            "{}: {}-byte config write at {offset:#x} ignored",
            self.common().name(),
            data.len()
        );
    }
    /// Called once the common state is activated.
    fn on_activate(&mut self) {}
    /// Called once an activated device is back to inactive: drop in-flight
    /// state of the device's own.
    fn on_reset(&mut self) {}

    /// The virtio device ID (1 = net, 2 = block, 19 = vsock, 26 = fs).
    fn device_type(&self) -> u32 {
        self.common().device_type()
    }
    /// Feature bits the device offers (including VIRTIO_F_VERSION_1).
    fn avail_features(&self) -> u64 {
        self.common().features().offered()
    }
    /// Whether the driver runs the device.
    fn is_activated(&self) -> bool {
        self.common().is_activated()
    }
    /// Starts the device with the driver's queues (DRIVER_OK).
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        self.common_mut().activate(ctx)?;
        self.on_activate();
        Ok(())
    }
    /// The driver reset the device: no features, no queues, no in-flight
    /// state. The queue eventfds of `activate` are duplicates of the
    /// transport's (which stay registered as ioeventfds), so the device just
    /// stops using them.
    fn reset(&mut self) {
        if self.common_mut().reset() {
            self.on_reset();
        }
    }
}

/// Copies `config[offset..]` into `data`, zero-filling past its end.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}
