use super::*;
use crate::devices::virtio::test_utils::{mmio_read as rd, mmio_write as wr};
use crate::devices::virtio::{ActivateError, VirtioCommon};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::GuestAddress;

const FEATURES: u64 = (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX) | 0b101;

const QUEUE_SIZES: [u16; 2] = [16, 8];

struct Dummy {
    common: VirtioCommon,
    config: [u8; 8],
    activations: usize,
    resets: usize,
    evts: Vec<EventFd>,
    fail_activate: bool,
}

impl Dummy {
    fn new() -> Self {
        Self {
            common: VirtioCommon::new("dummy", 42, &QUEUE_SIZES, FEATURES).unwrap(),
            config: [0; 8],
            activations: 0,
            resets: 0,
            evts: Vec::new(),
            fail_activate: false,
        }
    }

    fn queues(&self) -> &[Queue] {
        &self.common.activated().expect("activated").queues
    }
}

impl VirtioDevice for Dummy {
    fn common(&self) -> &VirtioCommon {
        &self.common
    }
    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| self.config.get(o as usize))
                .copied()
                .unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = self.config.get_mut(offset as usize + i) {
                *slot = *b;
            }
        }
    }
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if self.fail_activate {
            return Err(ActivateError::EventFd(std::io::Error::other("test")));
        }
        self.evts = ctx
            .queue_evts
            .iter()
            .map(|e| e.try_clone().unwrap())
            .collect();
        self.common.activate(ctx)?;
        self.activations += 1;
        Ok(())
    }
    fn on_reset(&mut self) {
        self.resets += 1;
        self.evts.clear();
    }
}

struct Fixture {
    mem: GuestMemory,
    dev: Arc<Mutex<Dummy>>,
    mmio: MmioTransport,
}

fn fixture() -> Fixture {
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let dev = Arc::new(Mutex::new(Dummy::new()));
    let irq = Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let mmio = MmioTransport::new(mem.clone(), dev.clone(), irq).unwrap();
    Fixture { mem, dev, mmio }
}

/// Programs queue `sel` with the layout of `vq`.
fn setup_queue(m: &mut MmioTransport, sel: u32, vq: &MockSplitQueue<GuestMemory>, size: u32) {
    wr(m, REG_QUEUE_SEL, sel);
    wr(m, REG_QUEUE_NUM, size);
    let d = vq.desc_table_addr().0;
    let a = vq.avail_addr().0;
    let u = vq.used_addr().0;
    wr(m, REG_QUEUE_DESC_LOW, d as u32);
    wr(m, REG_QUEUE_DESC_HIGH, (d >> 32) as u32);
    wr(m, REG_QUEUE_AVAIL_LOW, a as u32);
    wr(m, REG_QUEUE_AVAIL_HIGH, (a >> 32) as u32);
    wr(m, REG_QUEUE_USED_LOW, u as u32);
    wr(m, REG_QUEUE_USED_HIGH, (u >> 32) as u32);
    wr(m, REG_QUEUE_READY, 1);
}

fn negotiate(m: &mut MmioTransport, features: u64) {
    wr(m, REG_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    wr(
        m,
        REG_STATUS,
        VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
    );
    wr(m, REG_DRIVER_FEATURES_SEL, 0);
    wr(m, REG_DRIVER_FEATURES, features as u32);
    wr(m, REG_DRIVER_FEATURES_SEL, 1);
    wr(m, REG_DRIVER_FEATURES, (features >> 32) as u32);
    wr(
        m,
        REG_STATUS,
        VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
    );
}

const ALL_OK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE
    | VIRTIO_CONFIG_S_DRIVER
    | VIRTIO_CONFIG_S_FEATURES_OK
    | VIRTIO_CONFIG_S_DRIVER_OK;

fn bring_up(f: &mut Fixture) {
    bring_up_with(f, FEATURES);
}

fn bring_up_with(f: &mut Fixture, features: u64) {
    let mem = f.mem.clone();
    let q0 = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    let q1 = MockSplitQueue::create(&mem, GuestAddress(0x4000), 8);
    negotiate(&mut f.mmio, features);
    setup_queue(&mut f.mmio, 0, &q0, 16);
    setup_queue(&mut f.mmio, 1, &q1, 8);
    wr(&mut f.mmio, REG_STATUS, ALL_OK);
}

#[test]
fn identification_registers() {
    let mut f = fixture();
    let m = &mut f.mmio;
    assert_eq!(rd(m, REG_MAGIC), 0x7472_6976);
    assert_eq!(rd(m, REG_VERSION), 2);
    assert_eq!(rd(m, REG_DEVICE_ID), 42);
    assert_eq!(rd(m, REG_VENDOR_ID), VENDOR_ID);
    wr(m, REG_DEVICE_FEATURES_SEL, 0);
    assert_eq!(rd(m, REG_DEVICE_FEATURES), FEATURES as u32);
    wr(m, REG_DEVICE_FEATURES_SEL, 1);
    assert_eq!(rd(m, REG_DEVICE_FEATURES), (FEATURES >> 32) as u32);
    wr(m, REG_DEVICE_FEATURES_SEL, 7);
    assert_eq!(rd(m, REG_DEVICE_FEATURES), 0);
    wr(m, REG_QUEUE_SEL, 0);
    assert_eq!(rd(m, REG_QUEUE_NUM_MAX), 16);
    wr(m, REG_QUEUE_SEL, 1);
    assert_eq!(rd(m, REG_QUEUE_NUM_MAX), 8);
    wr(m, REG_QUEUE_SEL, 2);
    assert_eq!(rd(m, REG_QUEUE_NUM_MAX), 0, "absent queue");
    assert_eq!(rd(m, REG_QUEUE_READY), 0);
    assert_eq!(m.queue_evts().len(), 2);
}

#[test]
fn config_space_is_delegated() {
    let mut f = fixture();
    f.mmio.write(0x102, &[7, 8]);
    let mut b = [0u8; 4];
    f.mmio.read(0x100, &mut b);
    assert_eq!(b, [0, 0, 7, 8]);
    let mut b = [0xffu8; 8];
    f.mmio.read(0x106, &mut b);
    assert_eq!(b, [0; 8], "beyond the config space reads as zeros");
}

#[test]
fn activation_hands_queues_and_eventfds_to_the_device() {
    let mut f = fixture();
    bring_up(&mut f);
    assert_eq!(rd(&mut f.mmio, REG_STATUS), ALL_OK);
    let dev = f.dev.lock().unwrap();
    assert_eq!(dev.activations, 1);
    assert_eq!(dev.common.features().acked(), FEATURES);
    assert_eq!(dev.queues().len(), 2);
    assert_eq!(dev.queues()[1].size(), 8);
    assert!(dev.queues()[0].event_idx_enabled());
    // The device's eventfds are duplicates of the transport's.
    f.mmio.queue_evts()[1].write(3).unwrap();
    assert_eq!(dev.evts[1].read().unwrap(), 3);
}

#[test]
fn notify_register_writes_the_queue_eventfd() {
    let mut f = fixture();
    wr(&mut f.mmio, REG_QUEUE_NOTIFY, 1);
    assert_eq!(f.mmio.queue_evts()[1].read().unwrap(), 1);
    wr(&mut f.mmio, REG_QUEUE_NOTIFY, 99); // ignored, no panic
    assert!(
        f.mmio.queue_evts()[0].read().is_err(),
        "queue 0 not notified"
    );
}

#[test]
fn features_without_version_1_are_refused() {
    let mut f = fixture();
    negotiate(&mut f.mmio, 0b1);
    assert_eq!(
        rd(&mut f.mmio, REG_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK,
        0,
        "FEATURES_OK must not stick"
    );
    let mut g = fixture();
    negotiate(&mut g.mmio, (1 << VIRTIO_F_VERSION_1) | (1 << 40));
    assert_eq!(rd(&mut g.mmio, REG_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK, 0);
    // DRIVER_OK without FEATURES_OK does not activate.
    wr(&mut g.mmio, REG_STATUS, 0b111);
    assert_eq!(g.dev.lock().unwrap().activations, 0);
}

#[test]
fn invalid_queue_sets_needs_reset() {
    let mut f = fixture();
    negotiate(&mut f.mmio, FEATURES);
    // Queue 0 points outside guest memory; queue 1 never made ready.
    wr(&mut f.mmio, REG_QUEUE_SEL, 0);
    wr(&mut f.mmio, REG_QUEUE_DESC_HIGH, 0x10);
    wr(&mut f.mmio, REG_QUEUE_READY, 1);
    wr(&mut f.mmio, REG_STATUS, ALL_OK);
    assert_eq!(f.dev.lock().unwrap().activations, 0);
    assert_ne!(rd(&mut f.mmio, REG_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    assert_ne!(rd(&mut f.mmio, REG_INTERRUPT_STATUS) & INT_CONFIG, 0);
}

#[test]
fn failed_device_activation_sets_needs_reset() {
    let mut f = fixture();
    f.dev.lock().unwrap().fail_activate = true;
    bring_up(&mut f);
    assert_ne!(rd(&mut f.mmio, REG_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
}

#[test]
fn reset_and_reactivate() {
    let mut f = fixture();
    bring_up(&mut f);
    f.mmio.interrupt().trigger(1).unwrap();
    assert_eq!(rd(&mut f.mmio, REG_INTERRUPT_STATUS), 1);
    wr(&mut f.mmio, REG_INTERRUPT_ACK, 1);
    assert_eq!(rd(&mut f.mmio, REG_INTERRUPT_STATUS), 0);
    wr(&mut f.mmio, REG_STATUS, 0);
    assert_eq!(rd(&mut f.mmio, REG_STATUS), 0);
    wr(&mut f.mmio, REG_QUEUE_SEL, 0);
    assert_eq!(rd(&mut f.mmio, REG_QUEUE_READY), 0, "queues reset");
    assert_eq!(f.dev.lock().unwrap().resets, 1);
    assert!(!f.dev.lock().unwrap().is_activated());
    assert_eq!(*f.mmio.registers(), MmioRegisters::default());
    bring_up(&mut f);
    assert_eq!(f.dev.lock().unwrap().activations, 2);
}

#[test]
fn features_are_negotiated_into_the_device_only() {
    let mut f = fixture();
    negotiate(&mut f.mmio, FEATURES & !(1 << VIRTIO_RING_F_EVENT_IDX));
    let acked = f.dev.lock().unwrap().common.features().acked();
    assert_eq!(acked, FEATURES & !(1 << VIRTIO_RING_F_EVENT_IDX));
    // Writes after FEATURES_OK change nothing.
    wr(&mut f.mmio, REG_DRIVER_FEATURES_SEL, 0);
    wr(&mut f.mmio, REG_DRIVER_FEATURES, 0);
    assert_eq!(f.dev.lock().unwrap().common.features().acked(), acked);
    // A reset before activation forgets them, without the device's reset hook.
    wr(&mut f.mmio, REG_STATUS, 0);
    let dev = f.dev.lock().unwrap();
    assert_eq!(dev.common.features().acked(), 0);
    assert_eq!(dev.resets, 0, "never activated");
    drop(dev);
    // Without EVENT_IDX, the queues run without it.
    bring_up_with(&mut f, FEATURES & !(1 << VIRTIO_RING_F_EVENT_IDX));
    assert!(!f.dev.lock().unwrap().queues()[0].event_idx_enabled());
}

#[test]
fn writes_after_driver_ok_are_ignored() {
    let mut f = fixture();
    bring_up(&mut f);
    wr(&mut f.mmio, REG_QUEUE_SEL, 0);
    wr(&mut f.mmio, REG_QUEUE_NUM, 2);
    wr(&mut f.mmio, REG_QUEUE_DESC_LOW, 0x8000);
    wr(&mut f.mmio, REG_DRIVER_FEATURES, 0);
    wr(&mut f.mmio, REG_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE); // clears bits: ignored
    assert_eq!(rd(&mut f.mmio, REG_STATUS), ALL_OK);
    wr(&mut f.mmio, REG_STATUS, ALL_OK); // DRIVER_OK again: no second activation
    let dev = f.dev.lock().unwrap();
    assert_eq!(dev.activations, 1);
    assert_eq!(dev.common.features().acked(), FEATURES);
    assert_eq!(dev.queues()[0].size(), 16);
    assert_eq!(dev.queues()[0].desc_table(), 0x1000);
    drop(dev);
    // Tearing a queue down is visible in the register only.
    wr(&mut f.mmio, REG_QUEUE_READY, 0);
    assert_eq!(rd(&mut f.mmio, REG_QUEUE_READY), 0);
    assert!(f.dev.lock().unwrap().queues()[0].ready());
}

#[test]
fn garbage_accesses_do_not_panic() {
    let mut f = fixture();
    let mut big = [0u8; 64];
    for off in [
        0u64,
        1,
        2,
        3,
        0x4f,
        0x50,
        0xfe,
        0xff,
        0x100,
        0xfff,
        u64::MAX - 4,
        u64::MAX,
    ] {
        for len in [0usize, 1, 2, 3, 4, 8, 64] {
            f.mmio.read(off, &mut big[..len]);
            f.mmio.write(off, &big[..len]);
        }
    }
    for off in (0..0x100).step_by(4) {
        wr(&mut f.mmio, off, 0xffff_ffff);
        rd(&mut f.mmio, off);
    }
    wr(&mut f.mmio, REG_QUEUE_SEL, 0xffff_ffff);
    wr(&mut f.mmio, REG_QUEUE_NUM, 0xffff_ffff);
    wr(&mut f.mmio, REG_QUEUE_READY, 1);
    // Odd-sized register reads return zeros.
    let mut b = [0xffu8; 2];
    f.mmio.read(REG_MAGIC, &mut b);
    assert_eq!(b, [0, 0]);
    assert_eq!(f.dev.lock().unwrap().activations, 0);
}
