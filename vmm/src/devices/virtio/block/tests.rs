use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use tempfile::NamedTempFile;
use virtio_bindings::virtio_blk::*;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::bus::BusDevice;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::test_utils::{guest_memory, read_mem, write_mem, Driver};
use crate::devices::virtio::{GuestMemory, VirtioDevice, VirtioInterrupt};

const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x11_0000;
const STATUS: u64 = 0x12_0000;
const DISK_SECTORS: u64 = 64;

fn image() -> NamedTempFile {
    let mut f = NamedTempFile::new().unwrap();
    let data: Vec<u8> = (0..DISK_SECTORS * 512).map(|i| (i % 251) as u8).collect();
    f.write_all(&data).unwrap();
    f
}

fn block(f: &NamedTempFile, read_only: bool) -> Block {
    Block::new(BlockConfig {
        path: Some(f.path().to_path_buf()),
        read_only,
        serial: "disk0".into(),
        rate_limit: Default::default(),
    })
    .unwrap()
}

fn header(mem: &GuestMemory, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    write_mem(mem, HDR, &h);
    write_mem(mem, STATUS, &[0xaa]);
}

fn status(mem: &GuestMemory) -> u32 {
    u32::from(read_mem(mem, STATUS, 1)[0])
}

fn file_bytes(f: &NamedTempFile) -> Vec<u8> {
    let mut v = Vec::new();
    let mut file = f.reopen().unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut v).unwrap();
    v
}

struct Setup<'a> {
    drv: Driver<'a>,
    dev: Block,
}

fn setup<'a>(mem: &'a GuestMemory, f: &NamedTempFile, read_only: bool) -> Setup<'a> {
    let drv = Driver::new(mem, 0, 256);
    let mut dev = block(f, read_only);
    dev.test_activate(mem.clone(), drv.queue());
    Setup { drv, dev }
}

impl Setup<'_> {
    /// Submits one chain, processes the queue, returns the used length.
    fn run(&mut self, descs: &[(u64, u32, bool)]) -> u32 {
        let head = self.drv.push(descs);
        assert!(self.dev.process_queue(), "interrupt expected");
        let used = self.drv.take_used();
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].0, head);
        used[0].1
    }
}

#[test]
fn config_and_features() {
    let f = image();
    let dev = block(&f, false);
    assert_eq!(dev.device_type(), 2);
    assert_eq!(dev.capacity_sectors(), DISK_SECTORS);
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), DISK_SECTORS);
    let mut seg = [0u8; 4];
    dev.read_config(12, &mut seg);
    assert_eq!(u32::from_le_bytes(seg), 254);
    let mut beyond = [0xffu8; 4];
    dev.read_config(u64::MAX, &mut beyond);
    assert_eq!(beyond, [0; 4]);
    assert_ne!(dev.avail_features() & (1 << VIRTIO_BLK_F_FLUSH), 0);
    assert_eq!(dev.avail_features() & (1 << VIRTIO_BLK_F_RO), 0);
    let ro = block(&f, true);
    assert_ne!(ro.avail_features() & (1 << VIRTIO_BLK_F_RO), 0);
    assert_ne!(ro.avail_features() & (1 << 32), 0, "VERSION_1");
}

#[test]
fn new_reports_missing_file_and_long_serial() {
    let err = Block::new(BlockConfig {
        path: Some("/nonexistent/husk.img".into()),
        read_only: true,
        serial: String::new(),
        rate_limit: Default::default(),
    })
    .err()
    .unwrap();
    assert_eq!(
        err.to_string(),
        "disk image /nonexistent/husk.img does not exist"
    );
    let f = image();
    let err = Block::new(BlockConfig {
        path: Some(f.path().into()),
        read_only: true,
        serial: "x".repeat(21),
        rate_limit: Default::default(),
    })
    .err()
    .unwrap();
    assert!(matches!(err, BlockError::Serial(_)));
}

#[test]
fn read_sectors() {
    let mem = guest_memory(0x20_0000);
    let f = image();
    let mut s = setup(&mem, &f, true);
    header(&mem, VIRTIO_BLK_T_IN, 3);
    let len = s.run(&[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)]);
    assert_eq!(len, 1025);
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
    assert_eq!(read_mem(&mem, DATA, 1024), file_bytes(&f)[3 * 512..5 * 512]);
}

#[test]
fn write_sectors_and_flush() {
    let mem = guest_memory(0x20_0000);
    let f = image();
    let mut s = setup(&mem, &f, false);
    header(&mem, VIRTIO_BLK_T_OUT, 2);
    write_mem(&mem, DATA, &[0x5a; 512]);
    let len = s.run(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]);
    assert_eq!(len, 1);
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
    let bytes = file_bytes(&f);
    assert_eq!(&bytes[1024..1536], &[0x5a; 512][..]);
    assert_eq!(
        bytes[1023],
        (1023 % 251) as u8,
        "neighbour sector untouched"
    );

    header(&mem, VIRTIO_BLK_T_FLUSH, 0);
    s.run(&[(HDR, 16, false), (STATUS, 1, true)]);
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
}

#[test]
fn get_id_returns_serial() {
    let mem = guest_memory(0x20_0000);
    let f = image();
    let mut s = setup(&mem, &f, true);
    header(&mem, VIRTIO_BLK_T_GET_ID, 0);
    write_mem(&mem, DATA, &[0xff; 20]);
    let len = s.run(&[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)]);
    assert_eq!(len, 21);
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
    let mut want = b"disk0".to_vec();
    want.resize(20, 0);
    assert_eq!(read_mem(&mem, DATA, 20), want);
}

#[test]
fn write_and_flush_on_read_only_disk_fail() {
    let mem = guest_memory(0x20_0000);
    let f = image();
    let before = file_bytes(&f);
    let mut s = setup(&mem, &f, true);
    header(&mem, VIRTIO_BLK_T_OUT, 0);
    write_mem(&mem, DATA, &[0x11; 512]);
    s.run(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]);
    assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR);
    header(&mem, VIRTIO_BLK_T_FLUSH, 0);
    s.run(&[(HDR, 16, false), (STATUS, 1, true)]);
    assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR);
    assert_eq!(file_bytes(&f), before);
}

#[test]
fn out_of_range_and_overflowing_requests_fail() {
    let mem = guest_memory(0x20_0000);
    let f = image();
    let before = file_bytes(&f);
    let mut s = setup(&mem, &f, false);
    for (kind, sector) in [
        (VIRTIO_BLK_T_IN, DISK_SECTORS),
        (VIRTIO_BLK_T_IN, DISK_SECTORS - 1), // 2 sectors from the last one
        (VIRTIO_BLK_T_OUT, DISK_SECTORS),
        (VIRTIO_BLK_T_IN, u64::MAX / 512 + 1), // sector * 512 overflows
        (VIRTIO_BLK_T_OUT, u64::MAX / 512),    // offset + len overflows
    ] {
        header(&mem, kind, sector);
        let w = kind == VIRTIO_BLK_T_IN;
        let len = s.run(&[(HDR, 16, false), (DATA, 1024, w), (STATUS, 1, true)]);
        assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR, "{kind} {sector}");
        assert_eq!(len, 1);
    }
    // Not a whole number of sectors.
    header(&mem, VIRTIO_BLK_T_IN, 0);
    s.run(&[(HDR, 16, false), (DATA, 100, true), (STATUS, 1, true)]);
    assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR);
    assert_eq!(file_bytes(&f), before);
}

#[test]
fn unknown_request_type_is_unsupported() {
    let mem = guest_memory(0x20_0000);
    let f = image();
    let mut s = setup(&mem, &f, false);
    header(&mem, 0x1234, 0);
    s.run(&[(HDR, 16, false), (STATUS, 1, true)]);
    assert_eq!(status(&mem), VIRTIO_BLK_S_UNSUPP);
}

#[test]
fn malformed_chains_are_failed_or_dropped() {
    let mem = guest_memory(0x20_0000);
    let f = image();
    let before = file_bytes(&f);
    let mut s = setup(&mem, &f, false);

    // No status descriptor at all: dropped.
    header(&mem, VIRTIO_BLK_T_OUT, 0);
    assert_eq!(s.run(&[(HDR, 16, false), (DATA, 512, false)]), 0);
    // Status descriptor read-only: dropped, nothing written.
    assert_eq!(
        s.run(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, false)]),
        0
    );
    assert_eq!(status(&mem), 0xaa);
    // Header too short: IOERR.
    header(&mem, VIRTIO_BLK_T_IN, 0);
    assert_eq!(s.run(&[(HDR, 8, false), (STATUS, 1, true)]), 1);
    assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR);
    // Data descriptor outside guest memory: dropped.
    header(&mem, VIRTIO_BLK_T_IN, 0);
    assert_eq!(
        s.run(&[
            (HDR, 16, false),
            (0x4000_0000, 512, true),
            (STATUS, 1, true)
        ]),
        0
    );
    // Header outside guest memory, wrapping address: dropped.
    assert_eq!(s.run(&[(u64::MAX - 4, 16, false), (STATUS, 1, true)]), 0);
    // Huge lengths aliasing guest memory: bounded by the capacity check.
    header(&mem, VIRTIO_BLK_T_IN, 0);
    assert_eq!(
        s.run(&[
            (HDR, 16, false),
            (0, 0x20_0000, true),
            (0, 0x20_0000, true),
            (STATUS, 1, true)
        ]),
        1
    );
    assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR);
    assert_eq!(file_bytes(&f), before);
}

#[test]
fn bogus_ring_state_does_not_hang_or_panic() {
    let mem = guest_memory(0x20_0000);
    let f = image();
    let mut s = setup(&mem, &f, false);
    // An available index far beyond the queue size.
    s.drv.set_avail_idx(1000);
    assert!(!s.dev.process_queue());
    // A head index beyond the descriptor table.
    s.drv.set_avail_idx(0);
    s.drv.publish(300);
    s.dev.process_queue();
}

#[test]
fn several_requests_in_one_pass() {
    let mem = guest_memory(0x20_0000);
    let f = image();
    let mut s = setup(&mem, &f, true);
    header(&mem, VIRTIO_BLK_T_IN, 0);
    for _ in 0..10 {
        s.drv
            .push(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
    }
    assert!(s.dev.process_queue());
    assert_eq!(s.drv.take_used().len(), 10);
}

/// The whole path: MMIO registers, activation, the event manager picking up
/// the queue eventfd, the request and the interrupt.
#[test]
fn transport_and_event_loop_end_to_end() {
    let mem = guest_memory(0x20_0000);
    let f = image();
    let dev = Arc::new(Mutex::new(block(&f, true)));
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let interrupt = Arc::new(VirtioInterrupt::new(irq.try_clone().unwrap()));
    let mut mmio = MmioTransport::new(mem.clone(), dev.clone(), interrupt.clone()).unwrap();
    let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
    em.add_subscriber(dev.clone());

    let mut drv = Driver::new(&mem, 0, 256);
    let w = |m: &mut MmioTransport, off: u64, v: u32| m.write(off, &v.to_le_bytes());
    w(&mut mmio, 0x70, 1);
    w(&mut mmio, 0x70, 3);
    w(&mut mmio, 0x24, 1);
    w(&mut mmio, 0x20, 1); // VERSION_1
    w(&mut mmio, 0x70, 0xb);
    let (d, a, u) = (
        drv.mock().desc_table_addr().0,
        drv.mock().avail_addr().0,
        drv.mock().used_addr().0,
    );
    w(&mut mmio, 0x30, 0);
    w(&mut mmio, 0x38, 256);
    w(&mut mmio, 0x80, d as u32);
    w(&mut mmio, 0x90, a as u32);
    w(&mut mmio, 0xa0, u as u32);
    w(&mut mmio, 0x44, 1);
    w(&mut mmio, 0x70, 0xf);
    assert!(dev.lock().unwrap().is_active());

    header(&mem, VIRTIO_BLK_T_IN, 1);
    drv.push(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
    w(&mut mmio, 0x50, 0); // QueueNotify without an ioeventfd
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut used = Vec::new();
    while used.is_empty() && Instant::now() < deadline {
        em.run_with_timeout(100).unwrap();
        used = drv.take_used();
    }
    assert_eq!(used.len(), 1, "request completed through the event loop");
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
    assert_eq!(read_mem(&mem, DATA, 512), file_bytes(&f)[512..1024]);
    assert_eq!(irq.read().unwrap(), 1, "interrupt raised");
    let mut isr = [0u8; 4];
    mmio.read(0x60, &mut isr);
    assert_eq!(u32::from_le_bytes(isr), 1);

    // Reset, then the event loop must drop the old registration cleanly.
    w(&mut mmio, 0x70, 0);
    assert!(!dev.lock().unwrap().is_active());
    em.run_with_timeout(100).unwrap();
}
