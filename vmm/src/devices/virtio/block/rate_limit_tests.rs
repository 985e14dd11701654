//! The block device under a rate limit: requests wait in the queue (they
//! are never failed) until the limiter's timer fires; without a limit
//! nothing changes.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use tempfile::NamedTempFile;
use virtio_bindings::virtio_blk::*;

use super::*;
use crate::devices::virtio::test_utils::{activate_context, guest_memory, write_mem, Driver};
use crate::devices::virtio::{GuestMemory, VirtioDevice};
use crate::rate_limiter::{BucketConfig, ManualClock, RateLimitConfig, RateLimiter};

const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x11_0000;
const STATUS: u64 = 0x12_0000;
/// Offset of the next request header from `HDR`.
static NEXT_HEADER: AtomicU64 = AtomicU64::new(0);
const SECOND: Duration = Duration::from_secs(1);

fn image() -> NamedTempFile {
    let mut f = NamedTempFile::new().unwrap();
    f.write_all(&[0x42; 64 * 512]).unwrap();
    f
}

fn config(f: &NamedTempFile, rate_limit: RateLimitConfig) -> BlockConfig {
    BlockConfig {
        path: Some(f.path().to_path_buf()),
        read_only: false,
        serial: "limited".into(),
        rate_limit,
    }
}

fn bytes_per_second(rate: u64, burst: u64) -> RateLimitConfig {
    RateLimitConfig {
        bandwidth: BucketConfig { rate, burst },
        ops: BucketConfig::default(),
    }
}

/// An active device whose limiter reads `clock`.
fn limited<'a>(
    mem: &'a GuestMemory,
    f: &NamedTempFile,
    limit: RateLimitConfig,
    clock: Arc<ManualClock>,
) -> (Block, Driver<'a>) {
    let drv = Driver::new(mem, 0, 256);
    let mut dev = Block::new(config(f, limit)).unwrap();
    dev.limiter = RateLimiter::with_clock(&limit, clock).unwrap();
    dev.test_activate(mem.clone(), drv.queue());
    (dev, drv)
}

/// Makes a request of `kind` moving `len` bytes available (each request
/// has its own header).
fn push(mem: &GuestMemory, drv: &mut Driver, kind: u32, len: u32) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    let hdr = HDR + NEXT_HEADER.fetch_add(16, Ordering::Relaxed) % 0x1_0000;
    write_mem(mem, hdr, &h);
    let descs: &[(u64, u32, bool)] = match kind {
        VIRTIO_BLK_T_FLUSH => &[(hdr, 16, false), (STATUS, 1, true)],
        _ => &[
            (hdr, 16, false),
            (DATA, len, kind != VIRTIO_BLK_T_OUT),
            (STATUS, 1, true),
        ],
    };
    drv.push(descs);
}

#[test]
fn queue_runs_up_to_the_budget_and_resumes_when_the_timer_fires() {
    let mem = guest_memory(0x20_0000);
    let f = image();
    let clock = ManualClock::new();
    let (mut dev, mut drv) = limited(&mem, &f, bytes_per_second(4096, 4096), clock.clone());
    for _ in 0..4 {
        push(&mem, &mut drv, VIRTIO_BLK_T_IN, 2048);
    }
    assert!(dev.process_queue());
    assert_eq!(drv.take_used().len(), 2, "the 4096-byte burst: two reads");
    assert!(dev.limiter.is_blocked());
    assert!(dev.limiter.timer().unwrap().is_armed().unwrap());
    // Guest kicks while waiting change nothing, even once time has passed.
    clock.advance(SECOND / 2);
    assert!(!dev.process_queue());
    assert!(drv.take_used().is_empty());
    // The timer's event: 2048 bytes have accrued in 0.5 s, one more read.
    dev.handle_rate_limit_timer();
    assert_eq!(drv.take_used().len(), 1);
    assert!(dev.limiter.is_blocked());
    clock.advance(SECOND / 2);
    dev.handle_rate_limit_timer();
    let used = drv.take_used();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].1, 2049, "a full read, not a failure");
    assert!(!dev.limiter.is_blocked());
}

#[test]
fn requests_per_second_count_reads_and_writes_only() {
    let mem = guest_memory(0x20_0000);
    let f = image();
    let clock = ManualClock::new();
    let limit = RateLimitConfig {
        bandwidth: BucketConfig::default(),
        ops: BucketConfig::per_second(2),
    };
    let (mut dev, mut drv) = limited(&mem, &f, limit, clock.clone());
    push(&mem, &mut drv, VIRTIO_BLK_T_OUT, 512);
    push(&mem, &mut drv, VIRTIO_BLK_T_FLUSH, 0);
    push(&mem, &mut drv, VIRTIO_BLK_T_GET_ID, 20);
    push(&mem, &mut drv, VIRTIO_BLK_T_IN, 512);
    push(&mem, &mut drv, VIRTIO_BLK_T_OUT, 512);
    push(&mem, &mut drv, VIRTIO_BLK_T_FLUSH, 0);
    assert!(dev.process_queue());
    assert_eq!(drv.take_used().len(), 4, "write, flush, get-id, read");
    clock.advance(SECOND / 2);
    dev.handle_rate_limit_timer();
    assert_eq!(drv.take_used().len(), 2, "write, flush");
    assert!(!dev.limiter.is_blocked());
}

#[test]
fn a_request_larger_than_the_burst_goes_through_then_pays() {
    let mem = guest_memory(0x20_0000);
    let f = image();
    let clock = ManualClock::new();
    let (mut dev, mut drv) = limited(&mem, &f, bytes_per_second(1024, 512), clock.clone());
    push(&mem, &mut drv, VIRTIO_BLK_T_IN, 4096);
    push(&mem, &mut drv, VIRTIO_BLK_T_IN, 512);
    assert!(dev.process_queue());
    assert_eq!(drv.take_used(), vec![(0, 4097)]);
    // 3584 bytes of debt plus 512: 4 s.
    clock.advance(SECOND * 4 - Duration::from_millis(1));
    dev.handle_rate_limit_timer();
    assert!(drv.take_used().is_empty(), "not yet");
    clock.advance(Duration::from_millis(1));
    dev.handle_rate_limit_timer();
    assert_eq!(drv.take_used().len(), 1);
}

#[test]
fn without_a_limit_every_request_runs_at_once() {
    let mem = guest_memory(0x20_0000);
    let f = image();
    let mut drv = Driver::new(&mem, 0, 256);
    let mut dev = Block::new(config(&f, RateLimitConfig::default())).unwrap();
    dev.test_activate(mem.clone(), drv.queue());
    assert!(!dev.limiter.is_limited());
    assert!(dev.limiter.timer().is_none());
    for _ in 0..64 {
        push(&mem, &mut drv, VIRTIO_BLK_T_IN, 4096);
    }
    assert!(dev.process_queue());
    assert_eq!(drv.take_used().len(), 64);
    assert!(!dev.limiter.is_blocked());
}

/// The epoll glue: the timer registered at `init` brings the device back
/// on its own, with the real clock.
#[test]
fn the_event_loop_resumes_a_limited_queue_on_the_timer() {
    let mem = guest_memory(0x20_0000);
    let f = image();
    let mut drv = Driver::new(&mem, 0, 256);
    // 4 KiB burst at 400 KiB/s: each further 4 KiB read waits 10 ms.
    let limit = bytes_per_second(400 * 1024, 4096);
    let mut block = Block::new(config(&f, limit)).unwrap();
    let (ctx, evts) = activate_context(&mem, vec![drv.queue()]);
    block.activate(ctx).unwrap();
    let dev = Arc::new(Mutex::new(block));
    let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
    em.add_subscriber(dev.clone());
    for _ in 0..4 {
        push(&mem, &mut drv, VIRTIO_BLK_T_IN, 4096);
    }
    evts[0].write(1).unwrap();
    let start = Instant::now();
    let mut used = 0;
    while used < 4 && start.elapsed() < Duration::from_secs(10) {
        em.run_with_timeout(100).unwrap();
        used += drv.take_used().len();
    }
    assert_eq!(used, 4);
    // Three waits of 10 ms: a lower bound only.
    assert!(start.elapsed() >= Duration::from_millis(30));
}
