//! The network device under rate limits: tx frames wait in the guest's
//! queue, rx frames wait pending (the backend is not read meanwhile),
//! until the direction's timer fires; no limit changes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_manager::EventSet;

use super::*;
use crate::config::NetRateLimit;
use crate::rate_limiter::{BucketConfig, ManualClock, RateLimitConfig, RateLimiter};

const SECOND: Duration = Duration::from_secs(1);

fn frames_per_second(n: u64) -> RateLimitConfig {
    RateLimitConfig {
        bandwidth: BucketConfig::default(),
        ops: BucketConfig::per_second(n),
    }
}

fn bytes_per_second(rate: u64, burst: u64) -> RateLimitConfig {
    RateLimitConfig {
        bandwidth: BucketConfig { rate, burst },
        ops: BucketConfig::default(),
    }
}

impl Harness<'_> {
    /// Puts `limit` on one direction, on a clock the test moves.
    fn limit(&mut self, tx: bool, limit: RateLimitConfig) -> Arc<ManualClock> {
        let clock = ManualClock::new();
        let limiter = RateLimiter::with_clock(&limit, clock.clone()).unwrap();
        let mut dev = self.dev.lock().unwrap();
        if tx {
            dev.tx_limiter = limiter;
        } else {
            dev.rx_limiter = limiter;
        }
        clock
    }

    /// What the device does when a direction's timer fires.
    fn fire_timer(&mut self, tx: bool) {
        {
            let mut dev = self.dev.lock().unwrap();
            if tx {
                dev.tx_limiter.timer_fired();
            } else {
                dev.rx_limiter.timer_fired();
            }
            dev.run_queues();
        }
        self.pump();
    }
}

#[test]
fn tx_sends_up_to_the_budget_and_resumes_when_the_timer_fires() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, all_features());
    let clock = h.limit(true, frames_per_second(2));
    for seed in 0..4 {
        h.transmit(&[&hdr(0, 0, 0, 0), &eth_frame(100, seed)]);
    }
    assert_eq!(h.backend_frames(2).len(), 2);
    h.assert_backend_silent();
    assert_eq!(h.tx.take_used().len(), 2, "the third frame stays queued");
    assert!(h.dev.lock().unwrap().tx_limiter.is_blocked());
    clock.advance(SECOND / 2);
    h.fire_timer(true);
    assert_eq!(h.backend_frames(1), vec![eth_frame(100, 2)]);
    h.assert_backend_silent();
    clock.advance(SECOND / 2);
    h.fire_timer(true);
    assert_eq!(h.backend_frames(1), vec![eth_frame(100, 3)]);
    assert_eq!(h.tx.take_used().len(), 2);
    assert_eq!(h.stats().tx_frames, 4);
    assert_eq!(h.stats().tx_dropped, 0);
}

#[test]
fn rx_delivers_up_to_the_budget_and_stops_reading_the_backend() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, all_features());
    let clock = h.limit(false, bytes_per_second(1000, 1000));
    for i in 0..4 {
        h.post_rx(i, 4096);
    }
    h.kick(0);
    for seed in 0..3 {
        h.inject(&eth_frame(600, seed));
    }
    assert_eq!(h.used_rx().len(), 1, "600 of 1000 bytes, then 400 left");
    {
        let dev = h.dev.lock().unwrap();
        assert!(dev.rx_limiter.is_blocked());
        // Neither the frame waiting nor the limiter lets the backend be read.
        assert!(!dev
            .watched
            .unwrap_or(EventSet::empty())
            .contains(EventSet::IN));
    }
    clock.advance(SECOND / 5);
    h.fire_timer(false);
    let used = h.used_rx();
    assert_eq!(used.len(), 1);
    assert_eq!(&used[0].2[HDR_LEN..], &eth_frame(600, 1)[..]);
    clock.advance(SECOND * 3 / 5);
    h.fire_timer(false);
    assert_eq!(h.used_rx().len(), 1);
    assert!(!h.dev.lock().unwrap().rx_limiter.is_blocked());
    assert_eq!(h.stats().rx_frames, 3);
    assert_eq!(h.stats().rx_dropped, 0);
}

#[test]
fn rx_frame_waiting_for_buffers_is_charged_once() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, all_features());
    let _clock = h.limit(false, frames_per_second(1));
    // No buffers: the frame is paid for and waits for them.
    h.inject(&eth_frame(100, 1));
    assert!(h.used_rx().is_empty());
    h.post_rx(0, 4096);
    h.kick(0);
    assert_eq!(h.used_rx().len(), 1, "not charged a second time");
}

#[test]
fn without_limits_nothing_waits_and_no_timer_exists() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, all_features());
    {
        let dev = h.dev.lock().unwrap();
        assert!(!dev.tx_limiter.is_limited() && !dev.rx_limiter.is_limited());
    }
    for seed in 0..32 {
        h.transmit(&[&hdr(0, 0, 0, 0), &eth_frame(1500, seed)]);
    }
    assert_eq!(h.backend_frames(32).len(), 32);
    for i in 0..32 {
        h.post_rx(i, 4096);
    }
    h.kick(0);
    for seed in 0..32 {
        h.inject(&eth_frame(1500, seed));
    }
    assert_eq!(h.used_rx().len(), 32);
}

/// The epoll glue with the real clock: the tx timer registered at `init`
/// brings the queue back on its own.
#[test]
fn the_event_loop_resumes_limited_tx_on_the_timer() {
    let mem = guest_memory(MEM_SIZE);
    let limit = NetRateLimit {
        rx: RateLimitConfig::default(),
        // 1000 bytes of burst, then 10 ms per 1000-byte frame.
        tx: bytes_per_second(100_000, 1000),
    };
    let mut h = Harness::with_rate_limit(&mem, all_features(), &limit);
    let start = Instant::now();
    for seed in 0..4 {
        h.transmit(&[&hdr(0, 0, 0, 0), &eth_frame(1000, seed)]);
    }
    while h.stats().tx_frames < 4 && start.elapsed() < Duration::from_secs(10) {
        h.em.run_with_timeout(100).unwrap();
    }
    assert_eq!(h.backend_frames(4).len(), 4);
    // Three waits of 10 ms: a lower bound only.
    assert!(start.elapsed() >= Duration::from_millis(30));
}
