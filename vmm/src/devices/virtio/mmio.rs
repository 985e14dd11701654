//! The virtio-mmio transport, version 2 ("modern") register layout.
//!
//! The guest's accesses arrive on vCPU threads through [`BusDevice`]. The
//! transport owns the queue configuration until the driver sets DRIVER_OK,
//! then hands copies of the queues plus duplicates of its queue eventfds to
//! the device. Features are negotiated straight into the device's
//! [`Features`](super::Features), the only copy. Every guest access is
//! validated; none can panic.
//!
//! The transport's own state is [`MmioRegisters`] (plain data), its queues
//! as the driver programmed them (`Queue::state()`: addresses, size,
//! ready) and the interrupt status. Once the device runs, the live ring
//! positions (next avail/used) are in the device's copies of the queues
//! ([`Activated::queues`](super::Activated::queues)).

use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::persist::{
    restore_queues, CommonState, PersistError, SavedQueue, TransportState, CONFIG_SPACE_LEN,
};
use super::{ActivateContext, GuestMemory, VirtioDevice, VirtioInterrupt, INT_CONFIG};
use crate::bus::BusDevice;

/// Size of the MMIO window of one device.
pub const MMIO_SIZE: u64 = 0x1000;
/// Offset of the QueueNotify register (for ioeventfd registration).
pub const NOTIFY_OFFSET: u64 = 0x50;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x4b53_5548; // "HUSK"
const CONFIG_OFFSET: u64 = 0x100;

const REG_MAGIC: u64 = 0x00;
const REG_VERSION: u64 = 0x04;
const REG_DEVICE_ID: u64 = 0x08;
const REG_VENDOR_ID: u64 = 0x0c;
const REG_DEVICE_FEATURES: u64 = 0x10;
const REG_DEVICE_FEATURES_SEL: u64 = 0x14;
const REG_DRIVER_FEATURES: u64 = 0x20;
const REG_DRIVER_FEATURES_SEL: u64 = 0x24;
const REG_QUEUE_SEL: u64 = 0x30;
const REG_QUEUE_NUM_MAX: u64 = 0x34;
const REG_QUEUE_NUM: u64 = 0x38;
const REG_QUEUE_READY: u64 = 0x44;
const REG_QUEUE_NOTIFY: u64 = NOTIFY_OFFSET;
const REG_INTERRUPT_STATUS: u64 = 0x60;
const REG_INTERRUPT_ACK: u64 = 0x64;
const REG_STATUS: u64 = 0x70;
const REG_QUEUE_DESC_LOW: u64 = 0x80;
const REG_QUEUE_DESC_HIGH: u64 = 0x84;
const REG_QUEUE_AVAIL_LOW: u64 = 0x90;
const REG_QUEUE_AVAIL_HIGH: u64 = 0x94;
const REG_QUEUE_USED_LOW: u64 = 0xa0;
const REG_QUEUE_USED_HIGH: u64 = 0xa4;
const REG_SHM_LEN_LOW: u64 = 0xb0;
const REG_SHM_LEN_HIGH: u64 = 0xb4;
const REG_CONFIG_GENERATION: u64 = 0xfc;

/// Errors from [`MmioTransport::new`].
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// Creating a queue notification eventfd failed.
    #[error("creating a queue eventfd")]
    EventFd(#[source] std::io::Error),
    /// The device declares an unusable queue size.
    #[error("device queue {index} has an invalid maximum size")]
    QueueSize {
        /// Queue index.
        index: usize,
    },
}

/// The transport's registers that hold state (what the driver selected and
/// set), as plain data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioRegisters {
    /// Device status (ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK...).
    pub status: u32,
    /// Which 32 feature bits DeviceFeatures shows.
    pub device_features_sel: u32,
    /// Which 32 feature bits DriverFeatures writes.
    pub driver_features_sel: u32,
    /// The queue the queue registers address.
    pub queue_sel: u32,
    /// ConfigGeneration: changes whenever the config space changes.
    pub config_generation: u32,
}

/// One virtio device behind a virtio-mmio register window.
pub struct MmioTransport {
    mem: GuestMemory,
    device: Arc<Mutex<dyn VirtioDevice>>,
    interrupt: Arc<VirtioInterrupt>,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    regs: MmioRegisters,
}

impl MmioTransport {
    /// Wraps `device`, creating one notification eventfd per queue.
    pub fn new(
        mem: GuestMemory,
        device: Arc<Mutex<dyn VirtioDevice>>,
        interrupt: Arc<VirtioInterrupt>,
    ) -> Result<Self, MmioError> {
        let sizes = lock(&device).common().queue_sizes();
        let mut queues = Vec::with_capacity(sizes.len());
        let mut queue_evts = Vec::with_capacity(sizes.len());
        for (index, &size) in sizes.iter().enumerate() {
            queues.push(Queue::new(size).map_err(|_| MmioError::QueueSize { index })?);
            queue_evts.push(EventFd::new(EFD_NONBLOCK).map_err(MmioError::EventFd)?);
        }
        Ok(Self {
            mem,
            device,
            interrupt,
            queues,
            queue_evts,
            regs: MmioRegisters::default(),
        })
    }

    /// The queue notification eventfds, in queue order: register each with
    /// `IoEventAddress::Mmio(base + NOTIFY_OFFSET)` and datamatch = index.
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The device's interrupt.
    pub fn interrupt(&self) -> &Arc<VirtioInterrupt> {
        &self.interrupt
    }

    /// The device status register as the driver last set it.
    pub fn status(&self) -> u32 {
        self.regs.status
    }

    /// The transport's registers.
    pub fn registers(&self) -> &MmioRegisters {
        &self.regs
    }

    /// The transport's and the device's shared state, for a snapshot (the
    /// VM is paused: nothing is in flight).
    pub fn save(&self) -> (TransportState, CommonState) {
        let dev = lock(&self.device);
        let mut config_space = vec![0u8; CONFIG_SPACE_LEN];
        dev.read_config(0, &mut config_space);
        let transport = TransportState {
            regs: self.regs,
            interrupt_status: self.interrupt.status(),
            queues: self.queues.iter().map(SavedQueue::save).collect(),
            config_space,
        };
        (transport, dev.common().save())
    }

    /// Brings a freshly created transport and device to the saved state:
    /// registers, queues, features and, if the driver ran the device, its
    /// activation with the saved queues. If the device's config space now
    /// reads differently (new backends), the config generation changes
    /// and a running driver gets a configuration-change interrupt. An
    /// activated device is notified on every queue, so that it serves
    /// what the driver made available before the snapshot. Call it after
    /// the interrupt controllers are restored.
    pub fn restore(
        &mut self,
        transport: &TransportState,
        common: &CommonState,
    ) -> Result<(), PersistError> {
        let mut dev = lock(&self.device);
        let name = dev.common().name();
        let sizes = dev.common().queue_sizes();
        transport.check(name, &common.features)?;
        let queues = restore_queues(name, &transport.queues, sizes, &self.mem, false)?;
        let active = match &common.active_queues {
            Some(_) if transport.regs.status & VIRTIO_CONFIG_S_DRIVER_OK == 0 => {
                return Err(PersistError::Status(name));
            }
            Some(saved) => Some(restore_queues(name, saved, sizes, &self.mem, true)?),
            None => None,
        };
        dev.common_mut().restore_features(common.features);
        self.queues = queues;
        self.regs = transport.regs;
        self.interrupt.restore_status(transport.interrupt_status);
        if let Some(queues) = active {
            let queue_evts = self
                .queue_evts
                .iter()
                .map(EventFd::try_clone)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| PersistError::Activate(name, e.to_string()))?;
            let ctx = ActivateContext {
                mem: self.mem.clone(),
                queues,
                queue_evts,
                interrupt: self.interrupt.clone(),
            };
            dev.activate(ctx)
                .map_err(|e| PersistError::Activate(name, e.to_string()))?;
            // A notification the saved VM's event loop had not read yet is
            // lost with its eventfds, and with EVENT_IDX the driver would
            // not notify again: have the device look at every queue once.
            for evt in &self.queue_evts {
                if let Err(e) = evt.write(1) {
                    crate::log_limited!(log::Level::Error, "{name}: queue notification: {e}");
                }
            }
        }
        let mut config_space = vec![0u8; CONFIG_SPACE_LEN];
        dev.read_config(0, &mut config_space);
        if config_space != transport.config_space {
            self.regs.config_generation = self.regs.config_generation.wrapping_add(1);
            if transport.driver_ok() && dev.is_activated() {
                if let Err(e) = self.interrupt.trigger(INT_CONFIG) {
                    crate::log_limited!(log::Level::Error, "{name}: config interrupt: {e}");
                }
            }
        }
        Ok(())
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.regs.queue_sel as usize)
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.regs.queue_sel as usize);
        match offset {
            REG_MAGIC => MAGIC,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => lock(&self.device).device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => lock(&self.device)
                .common()
                .features()
                .offered_page(self.regs.device_features_sel),
            REG_QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.regs.status,
            // No shared memory regions: length all ones means "absent".
            REG_SHM_LEN_LOW | REG_SHM_LEN_HIGH => u32::MAX,
            REG_CONFIG_GENERATION => self.regs.config_generation,
            _ => {
                log::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, value: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.regs.device_features_sel = value,
            REG_DRIVER_FEATURES_SEL => self.regs.driver_features_sel = value,
            REG_DRIVER_FEATURES => self.write_driver_features(value),
            REG_QUEUE_SEL => self.regs.queue_sel = value,
            REG_QUEUE_NOTIFY => self.notify(value),
            REG_INTERRUPT_ACK => self.interrupt.ack(value),
            REG_STATUS => self.write_status(value),
            REG_QUEUE_NUM | REG_QUEUE_READY | REG_QUEUE_DESC_LOW | REG_QUEUE_DESC_HIGH
            | REG_QUEUE_AVAIL_LOW | REG_QUEUE_AVAIL_HIGH | REG_QUEUE_USED_LOW
            | REG_QUEUE_USED_HIGH => self.write_queue_reg(offset, value),
            _ => log::debug!("virtio-mmio: write of unknown register {offset:#x}"),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        let status = self.regs.status;
        let negotiating =
            status & VIRTIO_CONFIG_S_DRIVER != 0 && status & VIRTIO_CONFIG_S_FEATURES_OK == 0;
        if !negotiating {
            log::debug!("virtio-mmio: feature write outside negotiation ignored");
            return;
        }
        lock(&self.device)
            .common_mut()
            .features_mut()
            .write_driver_page(self.regs.driver_features_sel, value);
    }

    fn write_queue_reg(&mut self, offset: u64, value: u32) {
        // DRIVER_OK stays set while the device runs (only a reset clears it).
        if self.regs.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            // Only "not ready" is accepted (drivers tearing queues down); it
            // changes the transport's copy, never the running device.
            if offset == REG_QUEUE_READY && value == 0 {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(false);
                }
            } else {
                log::debug!("virtio-mmio: queue write after DRIVER_OK ignored");
            }
            return;
        }
        let Some(q) = self.selected_queue() else {
            log::debug!("virtio-mmio: write to a non-existent queue ignored");
            return;
        };
        match offset {
            REG_QUEUE_NUM => q.set_size(u16::try_from(value).unwrap_or(0)),
            REG_QUEUE_READY => q.set_ready(value == 1),
            REG_QUEUE_DESC_LOW => q.set_desc_table_address(Some(value), None),
            REG_QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(value)),
            REG_QUEUE_AVAIL_LOW => q.set_avail_ring_address(Some(value), None),
            REG_QUEUE_AVAIL_HIGH => q.set_avail_ring_address(None, Some(value)),
            REG_QUEUE_USED_LOW => q.set_used_ring_address(Some(value), None),
            REG_QUEUE_USED_HIGH => q.set_used_ring_address(None, Some(value)),
            _ => {}
        }
    }

    fn notify(&self, index: u32) {
        match self.queue_evts.get(index as usize) {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    crate::log_limited!(log::Level::Error, "virtio-mmio: queue notify: {e}");
                }
            }
            None => log::debug!("virtio-mmio: notify of non-existent queue {index}"),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let status = self.regs.status;
        if value & status != status {
            log::debug!("virtio-mmio: status {value:#x} clears bits of {status:#x}, ignored");
            return;
        }
        let known = VIRTIO_CONFIG_S_ACKNOWLEDGE
            | VIRTIO_CONFIG_S_DRIVER
            | VIRTIO_CONFIG_S_FEATURES_OK
            | VIRTIO_CONFIG_S_DRIVER_OK
            | VIRTIO_CONFIG_S_FAILED
            | VIRTIO_CONFIG_S_NEEDS_RESET;
        let mut value = value & known;
        let new_bits = value & !status;
        if new_bits & VIRTIO_CONFIG_S_FEATURES_OK != 0 && !self.accept_features() {
            value &= !VIRTIO_CONFIG_S_FEATURES_OK;
        }
        if new_bits & VIRTIO_CONFIG_S_DRIVER_OK != 0 && value & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
            log::debug!("virtio-mmio: DRIVER_OK without FEATURES_OK ignored");
            value &= !VIRTIO_CONFIG_S_DRIVER_OK;
        }
        self.regs.status = value;
        if new_bits & value & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.activate();
        }
    }

    /// Checks the driver's features when it sets FEATURES_OK.
    fn accept_features(&self) -> bool {
        let dev = lock(&self.device);
        let features = dev.common().features();
        let ok = features.accept();
        if !ok {
            crate::log_limited!(
                log::Level::Warn,
                "virtio-mmio: {} refused the driver's features (device offers {:#x})",
                dev.common().name(),
                features.offered()
            );
        }
        ok
    }

    fn activate(&mut self) {
        if let Err(reason) = self.try_activate() {
            crate::log_limited!(log::Level::Error, "virtio-mmio: activation: {reason}");
            self.regs.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
            if let Err(e) = self.interrupt.trigger(INT_CONFIG) {
                crate::log_limited!(log::Level::Error, "virtio-mmio: config interrupt: {e}");
            }
        }
    }

    fn try_activate(&mut self) -> Result<(), String> {
        let mut dev = lock(&self.device);
        let name = dev.common().name();
        if let Some(i) = self.queues.iter().position(|q| !q.is_valid(&self.mem)) {
            return Err(format!(
                "{name} queue {i} is not ready or not in guest memory"
            ));
        }
        let event_idx = dev.common().has_feature(VIRTIO_RING_F_EVENT_IDX);
        let mut queues = Vec::with_capacity(self.queues.len());
        for q in &self.queues {
            let mut copy = Queue::try_from(q.state()).map_err(|e| format!("{name} queue: {e}"))?;
            copy.set_event_idx(event_idx);
            queues.push(copy);
        }
        let queue_evts = self
            .queue_evts
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("duplicating the queue eventfds of {name}: {e}"))?;
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            queues,
            queue_evts,
            interrupt: self.interrupt.clone(),
        };
        dev.activate(ctx).map_err(|e| format!("{name}: {e}"))
    }

    fn reset(&mut self) {
        lock(&self.device).reset();
        for q in &mut self.queues {
            q.reset();
        }
        // Drain notifications written before the reset.
        for evt in &self.queue_evts {
            let _ = evt.read();
        }
        self.interrupt.ack(u32::MAX);
        self.regs = MmioRegisters {
            config_generation: self.regs.config_generation,
            ..MmioRegisters::default()
        };
    }
}

fn lock(device: &Arc<Mutex<dyn VirtioDevice>>) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
    device.lock().unwrap_or_else(|e| e.into_inner())
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_OFFSET {
            data.fill(0);
            lock(&self.device).read_config(offset - CONFIG_OFFSET, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            log::debug!("virtio-mmio: {}-byte read at {offset:#x}", data.len());
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_OFFSET {
            lock(&self.device).write_config(offset - CONFIG_OFFSET, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::debug!("virtio-mmio: {}-byte write at {offset:#x}", data.len());
            return;
        };
        if !offset.is_multiple_of(4) {
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;
