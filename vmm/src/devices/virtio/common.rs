//! What every virtio device shares: the features offered and acked, the
//! device state (inactive, or activated with guest memory, queues and the
//! interrupt), activation, reset and the epoll registration of the queue
//! eventfds. A device embeds one [`VirtioCommon`] and hands it to the
//! transport through [`VirtioDevice::common`](super::VirtioDevice::common);
//! what remains in the device is its config space, its queue processing
//! and its backend.
//!
//! [`Features`] is plain data (a snapshot saves it as is); the queues of
//! an [`Activated`] device are saved through `Queue::state()`.

use std::sync::Arc;

use event_manager::EventOps;
use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::{DescriptorChain, Queue, QueueT};

use super::activation::QueueEvents;
use super::persist::{CommonState, SavedQueue};
use super::queue_loop::{drain, ChainDone, GuestQueue};
use super::{ActivateContext, ActivateError, GuestMemory, VirtioInterrupt, INT_VRING};

/// Feature bits: what the device offers and what the driver acked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    offered: u64,
    /// As the driver wrote them, until [`Features::accept`] checks them.
    driver: u64,
}

impl Features {
    /// A device offering `offered` (including VIRTIO_F_VERSION_1).
    pub fn new(offered: u64) -> Self {
        Self { offered, driver: 0 }
    }

    /// The offered bits.
    pub fn offered(&self) -> u64 {
        self.offered
    }

    /// 32 offered bits: `page` 0 is bits 0-31, 1 is bits 32-63, others none.
    pub fn offered_page(&self, page: u32) -> u32 {
        match page {
            0 => self.offered as u32,
            1 => (self.offered >> 32) as u32,
            _ => 0,
        }
    }

    /// Stores 32 bits the driver wrote (`page` as in [`Self::offered_page`]).
    pub fn write_driver_page(&mut self, page: u32, value: u32) {
        let shift = match page {
            0 => 0,
            1 => 32,
            _ => return,
        };
        let mask = 0xffff_ffffu64 << shift;
        self.driver = (self.driver & !mask) | (u64::from(value) << shift);
    }

    /// Stores all 64 bits the driver wrote.
    pub fn write_driver(&mut self, value: u64) {
        self.driver = value;
    }

    /// The driver's FEATURES_OK: its features are acceptable if they are
    /// all offered and include VIRTIO_F_VERSION_1 (no legacy drivers).
    pub fn accept(&self) -> bool {
        self.driver & !self.offered == 0 && self.driver & (1u64 << VIRTIO_F_VERSION_1) != 0
    }

    /// The acked features: never a bit the device did not offer.
    pub fn acked(&self) -> u64 {
        self.driver & self.offered
    }

    /// Whether feature `bit` is acked.
    pub fn has(&self, bit: u32) -> bool {
        bit < 64 && self.acked() & (1u64 << bit) != 0
    }

    /// Forgets the driver's features (device reset).
    pub fn reset(&mut self) {
        self.driver = 0;
    }
}

/// What an activated device works with.
pub struct Activated {
    /// Guest memory.
    pub mem: GuestMemory,
    /// The queues, in the device's queue order.
    pub queues: Vec<Queue>,
    /// The device's interrupt.
    pub interrupt: Arc<VirtioInterrupt>,
}

impl Activated {
    /// Pops every available chain of queue `index` with notifications
    /// suppressed and hands each to `handle`, re-checking for chains that
    /// arrive while notifications are enabled again (see
    /// [`queue_loop`](super::queue_loop)). True if any chain was used.
    pub fn drain<F>(&mut self, index: usize, mut handle: F) -> bool
    where
        F: FnMut(&GuestMemory, DescriptorChain<&GuestMemory>) -> ChainDone,
    {
        let mem = &self.mem;
        let Some(queue) = self.queues.get_mut(index) else {
            return false;
        };
        drain(&mut GuestQueue::new(mem, queue), |chain| handle(mem, chain))
    }

    /// Whether the driver wants an interrupt for the chains used on queue
    /// `index` since the last call.
    pub fn needs_interrupt(&mut self, index: usize) -> bool {
        let mem = &self.mem;
        self.queues
            .get_mut(index)
            .is_some_and(|q| q.needs_notification(mem).unwrap_or(true))
    }

    /// Raises the used-buffer interrupt.
    pub fn signal_used(&self, device: &str) {
        if let Err(e) = self.interrupt.trigger(INT_VRING) {
            crate::log_limited!(log::Level::Error, "{device}: interrupt: {e}");
        }
    }
}

/// Whether the driver runs the device.
pub enum DeviceState {
    /// Not activated yet, or reset.
    Inactive,
    /// DRIVER_OK was set and the queues were handed over.
    Activated(Activated),
}

/// The state and plumbing every virtio device shares.
pub struct VirtioCommon {
    name: &'static str,
    device_type: u32,
    queue_sizes: &'static [u16],
    features: Features,
    state: DeviceState,
    events: QueueEvents,
}

impl VirtioCommon {
    /// An inactive device `name` (for logs) of virtio type `device_type`
    /// with one queue per `queue_sizes` entry, offering `features`.
    pub fn new(
        name: &'static str,
        device_type: u32,
        queue_sizes: &'static [u16],
        features: u64,
    ) -> std::io::Result<Self> {
        Ok(Self {
            name,
            device_type,
            queue_sizes,
            features: Features::new(features),
            state: DeviceState::Inactive,
            events: QueueEvents::new()?,
        })
    }

    /// The device's name in logs and errors.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The virtio device ID.
    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// Maximum size of each queue; its length is the number of queues.
    pub fn queue_sizes(&self) -> &'static [u16] {
        self.queue_sizes
    }

    /// Offered and acked features.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// Offered and acked features, for the transport's negotiation.
    pub fn features_mut(&mut self) -> &mut Features {
        &mut self.features
    }

    /// Whether feature `bit` is acked.
    pub fn has_feature(&self, bit: u32) -> bool {
        self.features.has(bit)
    }

    /// Whether the driver runs the device.
    pub fn is_activated(&self) -> bool {
        matches!(self.state, DeviceState::Activated(_))
    }

    /// Memory, queues and interrupt while activated.
    pub fn activated(&self) -> Option<&Activated> {
        match &self.state {
            DeviceState::Activated(a) => Some(a),
            DeviceState::Inactive => None,
        }
    }

    /// Memory, queues and interrupt while activated.
    pub fn activated_mut(&mut self) -> Option<&mut Activated> {
        match &mut self.state {
            DeviceState::Activated(a) => Some(a),
            DeviceState::Inactive => None,
        }
    }

    /// Takes the driver's queues: checks their number, installs the queue
    /// eventfds for the event thread and becomes [`DeviceState::Activated`].
    pub fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let expected = self.queue_sizes.len();
        if ctx.queues.len() != expected || ctx.queue_evts.len() != expected {
            return Err(ActivateError::QueueCount {
                device: self.name,
                expected,
                got: ctx.queues.len(),
            });
        }
        self.events
            .install(ctx.queue_evts)
            .map_err(ActivateError::EventFd)?;
        self.state = DeviceState::Activated(Activated {
            mem: ctx.mem,
            queues: ctx.queues,
            interrupt: ctx.interrupt,
        });
        Ok(())
    }

    /// Back to [`DeviceState::Inactive`] with no acked features; the queue
    /// eventfds are handed back to the event thread for removal. Returns
    /// whether the device was activated.
    pub fn reset(&mut self) -> bool {
        let was_activated = self.is_activated();
        self.state = DeviceState::Inactive;
        self.features.reset();
        if was_activated {
            self.events.retire();
        }
        was_activated
    }

    /// The state a snapshot keeps: features and, if activated, the running
    /// queues.
    pub fn save(&self) -> CommonState {
        CommonState {
            features: self.features,
            active_queues: self
                .activated()
                .map(|a| a.queues.iter().map(SavedQueue::save).collect()),
        }
    }

    /// Restores the features of a snapshot (what the driver saw offered
    /// and acked); the queues come back through [`Self::activate`].
    pub fn restore_features(&mut self, features: Features) {
        self.features = features;
    }

    /// Event thread, `MutEventSubscriber::init`: registers the control
    /// eventfd of the queue eventfd hand-over.
    pub fn init_events(&self, ops: &mut EventOps) {
        self.events.init(ops);
    }

    /// Event thread, first thing in `MutEventSubscriber::process`: brings
    /// the epoll registration of the queue eventfds up to date.
    pub fn sync_events(&mut self, ops: &mut EventOps) {
        self.events.sync(ops);
    }

    /// If `data` (an `Events::data`) is a queue eventfd of the current
    /// activation, clears its counter and returns the queue index.
    pub fn queue_event(&self, data: u32) -> Option<usize> {
        self.events.consume(data).then_some(data as usize)
    }
}

#[cfg(test)]
#[path = "common_tests.rs"]
mod tests;
