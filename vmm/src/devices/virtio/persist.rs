//! Saving and restoring what every virtio device shares: the virtio-mmio
//! transport (registers, interrupt status, the queues as the driver
//! programmed them, the config space the driver saw) and the
//! [`VirtioCommon`](super::VirtioCommon) state (features, and the live
//! queues of an activated device). Each device folder has a `persist.rs`
//! with the state of its own; [`VirtioDeviceState`] puts the three together.
//!
//! Restoring validates everything that came from the file: queue sizes
//! against the device's maxima, ring addresses against guest memory, ring
//! indices against the rings, features against what was offered. Bad state
//! is a [`PersistError`], never a panic.
//!
//! After a restore with other backends, a device whose config space reads
//! differently from the saved one (a disk of another capacity, another
//! MAC) gets a new config generation and, if the driver runs it, a
//! configuration-change interrupt, so that the guest driver re-reads it.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_queue::{Queue, QueueT};

use super::block::BlockState;
use super::mmio::MmioRegisters;
use super::net::NetState;
use super::vsock::VsockState;
use super::{Features, GuestMemory};

/// How many bytes of a device's config space a snapshot keeps (more than
/// any device here has; the rest reads as zeros).
pub const CONFIG_SPACE_LEN: usize = 64;

/// Errors restoring virtio state from a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The saved device is of another kind than the one in that slot.
    #[error("virtio slot {slot}: the snapshot holds a {saved} device, the VM has a {found}")]
    DeviceKind {
        /// Slot index.
        slot: usize,
        /// What the snapshot holds.
        saved: &'static str,
        /// What the VM has there.
        found: &'static str,
    },
    /// The number of saved queues differs from the device's.
    #[error("{device}: the snapshot has {saved} queues, the device {expected}")]
    QueueCount {
        /// Device name.
        device: &'static str,
        /// Saved count.
        saved: usize,
        /// The device's count.
        expected: usize,
    },
    /// A saved queue is invalid.
    #[error("{device} queue {index}: {reason}")]
    Queue {
        /// Device name.
        device: &'static str,
        /// Queue index.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The saved features are inconsistent.
    #[error("{0}: the snapshot's acked features were never offered")]
    Features(&'static str),
    /// The saved registers are inconsistent.
    #[error("{0}: the snapshot's device status is inconsistent")]
    Status(&'static str),
    /// Activating the restored device failed.
    #[error("{0}: cannot activate the restored device: {1}")]
    Activate(&'static str, String),
}

/// One queue as a snapshot holds it (virtio-queue's `QueueState`, with
/// serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedQueue {
    /// The device's maximum size.
    pub max_size: u16,
    /// The size the driver chose.
    pub size: u16,
    /// Whether the driver set QueueReady.
    pub ready: bool,
    /// Descriptor table address.
    pub desc_table: u64,
    /// Available ring address.
    pub avail_ring: u64,
    /// Used ring address.
    pub used_ring: u64,
    /// The next available-ring entry the device reads.
    pub next_avail: u16,
    /// The next used-ring entry the device writes.
    pub next_used: u16,
    /// VIRTIO_F_RING_EVENT_IDX is in use.
    pub event_idx: bool,
}

impl SavedQueue {
    /// The state of `queue`.
    pub fn save(queue: &Queue) -> Self {
        let s = queue.state();
        Self {
            max_size: s.max_size,
            size: s.size,
            ready: s.ready,
            desc_table: s.desc_table,
            avail_ring: s.avail_ring,
            used_ring: s.used_ring,
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx: s.event_idx_enabled,
        }
    }

    /// Rebuilds the queue for a device whose maximum is `max_size`. With
    /// `live`, the queue must be ready, inside `mem`, and its indices must
    /// agree with the rings in `mem` (the device's running copy).
    fn restore(&self, max_size: u16, mem: &GuestMemory, live: bool) -> Result<Queue, String> {
        if self.max_size != max_size {
            return Err(format!(
                "maximum size {} differs from the device's {max_size}",
                self.max_size
            ));
        }
        let state = virtio_queue::QueueState {
            max_size: self.max_size,
            next_avail: self.next_avail,
            next_used: self.next_used,
            event_idx_enabled: self.event_idx,
            size: self.size,
            ready: self.ready,
            desc_table: self.desc_table,
            avail_ring: self.avail_ring,
            used_ring: self.used_ring,
        };
        let queue = Queue::try_from(state).map_err(|e| e.to_string())?;
        if !live {
            return Ok(queue);
        }
        if !queue.is_valid(mem) {
            return Err("not ready or its rings are not in guest memory".into());
        }
        let avail = queue
            .avail_idx(mem, Ordering::Acquire)
            .map_err(|e| e.to_string())?;
        let used = queue
            .used_idx(mem, Ordering::Acquire)
            .map_err(|e| e.to_string())?;
        if used.0 != self.next_used {
            return Err(format!(
                "next used {} differs from the used ring's index {}",
                self.next_used, used.0
            ));
        }
        if avail.0.wrapping_sub(self.next_avail) > self.size {
            return Err(format!(
                "next avail {} is more than a ring behind the available index {}",
                self.next_avail, avail.0
            ));
        }
        Ok(queue)
    }
}

/// Rebuilds every queue of `saved` against the device's `max_sizes`.
pub fn restore_queues(
    device: &'static str,
    saved: &[SavedQueue],
    max_sizes: &[u16],
    mem: &GuestMemory,
    live: bool,
) -> Result<Vec<Queue>, PersistError> {
    if saved.len() != max_sizes.len() {
        return Err(PersistError::QueueCount {
            device,
            saved: saved.len(),
            expected: max_sizes.len(),
        });
    }
    saved
        .iter()
        .zip(max_sizes)
        .enumerate()
        .map(|(index, (q, &max))| {
            q.restore(max, mem, live)
                .map_err(|reason| PersistError::Queue {
                    device,
                    index,
                    reason,
                })
        })
        .collect()
}

/// The virtio-mmio transport's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    /// Status, selectors and config generation.
    pub regs: MmioRegisters,
    /// The InterruptStatus register.
    pub interrupt_status: u32,
    /// The queues as the driver programmed them.
    pub queues: Vec<SavedQueue>,
    /// The first [`CONFIG_SPACE_LEN`] bytes of the device's config space as
    /// the driver could read them.
    pub config_space: Vec<u8>,
}

impl TransportState {
    /// Checks the registers against the saved features.
    pub fn check(&self, device: &'static str, features: &Features) -> Result<(), PersistError> {
        let status = self.regs.status;
        let features_ok = status & VIRTIO_CONFIG_S_FEATURES_OK != 0;
        if features_ok && !features.accept() {
            return Err(PersistError::Features(device));
        }
        if status & VIRTIO_CONFIG_S_DRIVER_OK != 0 && !features_ok {
            return Err(PersistError::Status(device));
        }
        Ok(())
    }

    /// Whether the driver runs the device (DRIVER_OK, no NEEDS_RESET), so
    /// that it may be sent a configuration-change interrupt.
    pub fn driver_ok(&self) -> bool {
        let s = self.regs.status;
        s & VIRTIO_CONFIG_S_DRIVER_OK != 0 && s & VIRTIO_CONFIG_S_NEEDS_RESET == 0
    }
}

/// The [`VirtioCommon`](super::VirtioCommon) state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommonState {
    /// Features offered and acked.
    pub features: Features,
    /// The device's running queues, if the driver activated it.
    pub active_queues: Option<Vec<SavedQueue>>,
}

/// The state of one device of its own, by kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceKindState {
    /// A disk slot.
    Block(BlockState),
    /// The vsock device.
    Vsock(VsockState),
    /// The network interface.
    Net(NetState),
}

impl DeviceKindState {
    /// The kind's name, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Block(_) => "block",
            Self::Vsock(_) => "vsock",
            Self::Net(_) => "net",
        }
    }
}

/// Everything a snapshot holds of one virtio device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioDeviceState {
    /// Its transport.
    pub transport: TransportState,
    /// Its shared device state.
    pub common: CommonState,
    /// Its own state.
    pub device: DeviceKindState,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{guest_memory, Driver};

    #[test]
    fn queues_round_trip_and_bad_ones_are_refused() {
        let mem = guest_memory(0x10_0000);
        let driver = Driver::new(&mem, 0x1000, 16);
        let saved = SavedQueue::save(&driver.queue());
        let q = restore_queues("t", &[saved], &[16], &mem, true).unwrap();
        assert_eq!(SavedQueue::save(&q[0]), saved);

        let err = restore_queues("t", &[saved], &[16, 16], &mem, true).unwrap_err();
        assert!(matches!(err, PersistError::QueueCount { .. }), "{err}");
        let bad = |f: &dyn Fn(&mut SavedQueue)| {
            let mut q = saved;
            f(&mut q);
            restore_queues("t", &[q], &[16], &mem, true).unwrap_err()
        };
        bad(&|q| q.max_size = 32);
        bad(&|q| q.size = 32);
        bad(&|q| q.size = 3);
        bad(&|q| q.desc_table = 1 << 40);
        bad(&|q| q.used_ring = 0xf_fff0);
        bad(&|q| q.next_used = 5);
        bad(&|q| q.next_avail = 100);
        // A queue the driver is still programming needs no valid rings.
        let mut q = saved;
        q.ready = false;
        q.desc_table = 1 << 40;
        assert!(restore_queues("t", &[q], &[16], &mem, false).is_ok());
    }

    #[test]
    fn device_state_round_trips_through_serde() {
        let mem = guest_memory(0x10_0000);
        let driver = Driver::new(&mem, 0x1000, 16);
        let state = VirtioDeviceState {
            transport: TransportState {
                regs: MmioRegisters {
                    status: 0xf,
                    config_generation: 3,
                    ..MmioRegisters::default()
                },
                interrupt_status: 1,
                queues: vec![SavedQueue::save(&driver.queue())],
                config_space: vec![7; CONFIG_SPACE_LEN],
            },
            common: CommonState {
                features: Features::new(1 << 32),
                active_queues: Some(vec![SavedQueue::save(&driver.queue())]),
            },
            device: DeviceKindState::Net(NetState {
                mac: [0x52, 0, 0, 0, 0, 1],
                mtu: 1500,
            }),
        };
        let bytes = postcard::to_stdvec(&state).unwrap();
        let back: VirtioDeviceState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, state);
    }
}
