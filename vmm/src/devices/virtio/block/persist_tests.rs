//! A disk slot saved through its transport and restored with another
//! backing: capacity change interrupt, new serial, read-only enforcement.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tempfile::NamedTempFile;
use virtio_bindings::virtio_blk::*;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::persist::{DeviceKindState, VirtioDeviceState};
use crate::devices::virtio::test_utils::{guest_memory, read_mem, write_mem, Driver};
use crate::devices::virtio::test_utils::{mmio_read as rd, mmio_write as wr};
use crate::devices::virtio::{GuestMemory, VirtioDevice, VirtioInterrupt, INT_CONFIG};

const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x11_0000;
const STATUS: u64 = 0x12_0000;
const REG_STATUS: u64 = 0x70;
const REG_CONFIG_GENERATION: u64 = 0xfc;

struct Slot {
    dev: Arc<Mutex<Block>>,
    mmio: MmioTransport,
    interrupt: Arc<VirtioInterrupt>,
}

fn slot(mem: &GuestMemory, config: BlockConfig) -> Slot {
    let dev = Arc::new(Mutex::new(Block::new(config).unwrap()));
    let interrupt = Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let mmio = MmioTransport::new(mem.clone(), dev.clone(), interrupt.clone()).unwrap();
    Slot {
        dev,
        mmio,
        interrupt,
    }
}

/// The guest driver's bring-up: VERSION_1 and EVENT_IDX, one queue.
fn bring_up(m: &mut MmioTransport, drv: &Driver) {
    wr(m, REG_STATUS, 1);
    wr(m, REG_STATUS, 3);
    wr(m, 0x24, 0);
    wr(m, 0x20, 1 << 29); // EVENT_IDX
    wr(m, 0x24, 1);
    wr(m, 0x20, 1); // VERSION_1
    wr(m, REG_STATUS, 0xb);
    let (d, a, u) = (
        drv.mock().desc_table_addr().0,
        drv.mock().avail_addr().0,
        drv.mock().used_addr().0,
    );
    wr(m, 0x30, 0);
    wr(m, 0x38, 256);
    wr(m, 0x80, d as u32);
    wr(m, 0x90, a as u32);
    wr(m, 0xa0, u as u32);
    wr(m, 0x44, 1);
    wr(m, REG_STATUS, 0xf);
}

fn disk(sectors: u64) -> NamedTempFile {
    let mut f = NamedTempFile::new().unwrap();
    let data: Vec<u8> = (0..sectors * 512).map(|i| (i % 251) as u8).collect();
    f.write_all(&data).unwrap();
    f
}

/// Runs one request; returns its status byte.
fn request(
    mem: &GuestMemory,
    drv: &mut Driver,
    dev: &Arc<Mutex<Block>>,
    kind: u32,
    len: u32,
) -> u8 {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&1u64.to_le_bytes());
    write_mem(mem, HDR, &h);
    write_mem(mem, STATUS, &[0xaa]);
    let data_writable = kind != VIRTIO_BLK_T_OUT;
    drv.push(&[
        (HDR, 16, false),
        (DATA, len, data_writable),
        (STATUS, 1, true),
    ]);
    dev.lock().unwrap().process_queue();
    assert_eq!(drv.take_used().len(), 1);
    read_mem(mem, STATUS, 1)[0]
}

/// Saves a running template slot (empty, writable) through serde.
fn save_template(mem: &GuestMemory, drv: &mut Driver) -> VirtioDeviceState {
    let mut template = slot(
        mem,
        BlockConfig {
            path: None,
            read_only: false,
            serial: "empty-slot".into(),
            rate_limit: Default::default(),
        },
    );
    bring_up(&mut template.mmio, drv);
    assert!(template.dev.lock().unwrap().is_active());
    // The empty slot fails reads, answers GET_ID.
    let status = request(mem, drv, &template.dev, VIRTIO_BLK_T_IN, 512);
    assert_eq!(u32::from(status), VIRTIO_BLK_S_IOERR);
    let status = request(mem, drv, &template.dev, VIRTIO_BLK_T_GET_ID, 20);
    assert_eq!(u32::from(status), VIRTIO_BLK_S_OK);
    assert_eq!(&read_mem(mem, DATA, 10), b"empty-slot");

    let (transport, common) = template.mmio.save();
    let device = DeviceKindState::Block(template.dev.lock().unwrap().save_state());
    let state = VirtioDeviceState {
        transport,
        common,
        device,
    };
    let bytes = postcard::to_stdvec(&state).unwrap();
    let back: VirtioDeviceState = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, state);
    assert_eq!(
        back.device,
        DeviceKindState::Block(BlockState {
            capacity: 0,
            serial: "empty-slot".into(),
            read_only: false,
        })
    );
    back
}

#[test]
fn restore_with_a_bigger_disk_raises_a_config_change() {
    let mem = guest_memory(0x20_0000);
    let mut drv = Driver::new(&mem, 0, 256);
    let saved = save_template(&mem, &mut drv);

    let image = disk(64);
    let mut new = slot(
        &mem,
        BlockConfig {
            path: Some(image.path().to_path_buf()),
            read_only: false,
            serial: "container-disk".into(),
            rate_limit: Default::default(),
        },
    );
    new.mmio.restore(&saved.transport, &saved.common).unwrap();
    assert!(new.dev.lock().unwrap().is_active());
    assert_eq!(rd(&mut new.mmio, REG_STATUS), 0xf);
    assert_eq!(new.interrupt.status() & INT_CONFIG, INT_CONFIG);
    assert_eq!(new.interrupt.irqfd().read().unwrap(), 1);
    assert_eq!(
        rd(&mut new.mmio, REG_CONFIG_GENERATION),
        saved.transport.regs.config_generation.wrapping_add(1)
    );
    assert_eq!(rd(&mut new.mmio, 0x100), 64, "capacity in sectors");
    // The device is told to look at its queue once.
    assert_eq!(new.mmio.queue_evts()[0].read().unwrap(), 1);

    // The queue goes on where it was, on the new backing.
    let status = request(&mem, &mut drv, &new.dev, VIRTIO_BLK_T_IN, 512);
    assert_eq!(u32::from(status), VIRTIO_BLK_S_OK);
    let expected: Vec<u8> = (512..1024u64).map(|i| (i % 251) as u8).collect();
    assert_eq!(read_mem(&mem, DATA, 512), expected);
    let status = request(&mem, &mut drv, &new.dev, VIRTIO_BLK_T_GET_ID, 20);
    assert_eq!(u32::from(status), VIRTIO_BLK_S_OK);
    assert_eq!(&read_mem(&mem, DATA, 14), b"container-disk");
}

#[test]
fn restore_with_the_same_capacity_raises_nothing() {
    let mem = guest_memory(0x20_0000);
    let mut drv = Driver::new(&mem, 0, 256);
    let saved = save_template(&mem, &mut drv);
    let mut new = slot(
        &mem,
        BlockConfig {
            path: None,
            read_only: true,
            serial: "other".into(),
            rate_limit: Default::default(),
        },
    );
    new.mmio.restore(&saved.transport, &saved.common).unwrap();
    assert_eq!(new.interrupt.status(), 0);
    assert!(new.interrupt.irqfd().read().is_err(), "no interrupt");
    assert_eq!(
        rd(&mut new.mmio, REG_CONFIG_GENERATION),
        saved.transport.regs.config_generation
    );
}

#[test]
fn read_only_backing_in_a_writable_slot_refuses_writes() {
    let mem = guest_memory(0x20_0000);
    let mut drv = Driver::new(&mem, 0, 256);
    let saved = save_template(&mem, &mut drv);
    let image = disk(8);
    let before = std::fs::read(image.path()).unwrap();
    let mut new = slot(
        &mem,
        BlockConfig {
            path: Some(image.path().to_path_buf()),
            read_only: true,
            serial: "ro".into(),
            rate_limit: Default::default(),
        },
    );
    new.mmio.restore(&saved.transport, &saved.common).unwrap();
    // The driver still sees the template's features: writable, with flush.
    let offered = new.dev.lock().unwrap().avail_features();
    assert_eq!(offered & (1 << VIRTIO_BLK_F_RO), 0);
    assert_ne!(offered & (1 << VIRTIO_BLK_F_FLUSH), 0);
    write_mem(&mem, DATA, &[0x5a; 512]);
    let status = request(&mem, &mut drv, &new.dev, VIRTIO_BLK_T_OUT, 512);
    assert_eq!(u32::from(status), VIRTIO_BLK_S_IOERR);
    assert_eq!(std::fs::read(image.path()).unwrap(), before);
    let status = request(&mem, &mut drv, &new.dev, VIRTIO_BLK_T_IN, 512);
    assert_eq!(u32::from(status), VIRTIO_BLK_S_OK);
}

#[test]
fn bad_saved_state_is_refused() {
    let mem = guest_memory(0x20_0000);
    let mut drv = Driver::new(&mem, 0, 256);
    let saved = save_template(&mem, &mut drv);
    let fresh = || {
        slot(
            &mem,
            BlockConfig {
                path: None,
                read_only: false,
                serial: String::new(),
                rate_limit: Default::default(),
            },
        )
    };
    let mut bad = saved.clone();
    bad.common.active_queues.as_mut().unwrap()[0].used_ring = 1 << 40;
    assert!(fresh().mmio.restore(&bad.transport, &bad.common).is_err());
    let mut bad = saved.clone();
    bad.transport.queues[0].size = 512;
    assert!(fresh().mmio.restore(&bad.transport, &bad.common).is_err());
    let mut bad = saved.clone();
    bad.transport.queues.push(bad.transport.queues[0]);
    assert!(fresh().mmio.restore(&bad.transport, &bad.common).is_err());
    let mut bad = saved.clone();
    bad.transport.regs.status = 0x7; // active queues without DRIVER_OK
    assert!(fresh().mmio.restore(&bad.transport, &bad.common).is_err());
    let mut bad = saved;
    bad.common.features = crate::devices::virtio::Features::new(0);
    let err = fresh()
        .mmio
        .restore(&bad.transport, &bad.common)
        .unwrap_err();
    assert!(err.to_string().contains("features"), "{err}");
}
