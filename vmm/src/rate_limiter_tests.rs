use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet as EpollSet};

use super::*;

fn bucket(rate: u64, burst: u64, now: Instant) -> TokenBucket {
    TokenBucket::new(BucketConfig { rate, burst }, now).expect("limited")
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn zero_rate_means_unlimited() {
    assert!(TokenBucket::new(BucketConfig::default(), Instant::now()).is_none());
    assert!(TokenBucket::new(BucketConfig { rate: 0, burst: 99 }, Instant::now()).is_none());
    let mut limiter = RateLimiter::new(&RateLimitConfig::default()).unwrap();
    assert!(!limiter.is_limited());
    assert!(limiter.timer().is_none());
    for _ in 0..1000 {
        assert!(limiter.try_consume(u64::MAX, u64::MAX));
    }
    assert!(!limiter.is_blocked());
}

#[test]
fn starts_full_with_the_burst_then_refills_at_the_rate() {
    let t0 = Instant::now();
    let mut b = bucket(1000, 100, t0);
    assert_eq!(b.tokens(t0), 100);
    assert_eq!(b.try_consume(60, t0), Ok(()));
    assert_eq!(b.try_consume(40, t0), Ok(()));
    // Empty: one token takes 1 ms at 1000/s.
    assert_eq!(b.try_consume(1, t0), Err(MS));
    assert_eq!(b.tokens(t0 + 10 * MS), 10);
    // Never more than the burst, however long the bucket idles.
    assert_eq!(b.tokens(t0 + Duration::from_secs(3600)), 100);
}

#[test]
fn default_burst_is_one_second_of_rate() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(BucketConfig::per_second(4096), t0).unwrap();
    assert_eq!(b.tokens(t0), 4096);
}

#[test]
fn fractional_refills_are_not_lost() {
    let t0 = Instant::now();
    // 3 tokens per second: each 100 ms adds 0.3 of a token.
    let mut b = bucket(3, 3, t0);
    b.take(3);
    let mut t = t0;
    for _ in 0..10 {
        t += 100 * MS;
        b.tokens(t);
    }
    assert_eq!(b.tokens(t), 3, "ten 0.3-token steps make 3 tokens");
}

#[test]
fn wait_time_is_exactly_when_the_tokens_are_there() {
    let t0 = Instant::now();
    let mut b = bucket(1000, 1000, t0);
    b.take(1000);
    let wait = b.wait_time(250, t0).unwrap();
    assert_eq!(wait, 250 * MS);
    assert!(b
        .wait_time(250, t0 + wait - Duration::from_nanos(1))
        .is_some());
    assert_eq!(b.try_consume(250, t0 + wait), Ok(()));
    // Odd rate: the wait rounds up, never down.
    let mut b = bucket(3, 3, t0);
    b.take(3);
    let wait = b.wait_time(1, t0).unwrap();
    assert_eq!(wait, Duration::from_nanos(333_333_334));
    assert_eq!(b.try_consume(1, t0 + wait), Ok(()));
}

#[test]
fn a_request_larger_than_the_bucket_makes_progress_and_pays_its_debt() {
    let t0 = Instant::now();
    let mut b = bucket(100, 100, t0);
    b.take(50);
    // 1000 tokens never fit in a 100-token bucket: it waits for a full
    // bucket, then goes through.
    assert_eq!(b.try_consume(1000, t0), Err(500 * MS));
    assert_eq!(b.try_consume(1000, t0 + 500 * MS), Ok(()));
    assert_eq!(b.tokens(t0 + 500 * MS), -900);
    // The debt is paid before anything else: 9 s for 900, then 10 ms for 1.
    assert_eq!(b.try_consume(1, t0 + 500 * MS), Err(9010 * MS));
    assert_eq!(b.try_consume(1, t0 + 9510 * MS), Ok(()));
}

#[test]
fn zero_tokens_always_fit() {
    let t0 = Instant::now();
    let mut b = bucket(10, 10, t0);
    b.take(1_000_000);
    assert_eq!(b.try_consume(0, t0), Ok(()));
}

#[test]
fn time_going_backwards_adds_nothing() {
    let t0 = Instant::now() + Duration::from_secs(10);
    let mut b = bucket(1000, 1000, t0);
    b.take(1000);
    assert_eq!(b.tokens(t0 - Duration::from_secs(5)), 0);
    assert_eq!(b.tokens(t0 + MS), 1);
}

#[test]
fn huge_rates_and_intervals_do_not_overflow() {
    let t0 = Instant::now();
    let mut b = bucket(u64::MAX, u64::MAX, t0);
    b.take(u64::MAX);
    assert_eq!(
        b.tokens(t0 + Duration::from_secs(1 << 40)),
        i128::from(u64::MAX)
    );
    let mut slow = bucket(1, 1, t0);
    slow.take(u64::MAX);
    // Centuries of debt: the wait saturates instead of overflowing.
    assert_eq!(slow.wait_time(1, t0), Some(Duration::from_nanos(u64::MAX)));
}

fn limiter(bytes: u64, ops: u64) -> (RateLimiter, Arc<ManualClock>) {
    let clock = ManualClock::new();
    let config = RateLimitConfig {
        bandwidth: BucketConfig::per_second(bytes),
        ops: BucketConfig::per_second(ops),
    };
    (
        RateLimiter::with_clock(&config, clock.clone()).unwrap(),
        clock,
    )
}

#[test]
fn limiter_needs_both_buckets_and_takes_nothing_when_one_is_short() {
    let (mut l, clock) = limiter(1000, 2);
    assert!(l.is_limited());
    assert!(l.try_consume(100, 1));
    assert!(l.try_consume(100, 1));
    // Bytes left (800) but no op: refused, and the bytes are not taken.
    assert!(!l.try_consume(100, 1));
    assert!(l.is_blocked());
    // Blocked until the timer fires, whatever the clock says.
    clock.advance(Duration::from_secs(1));
    assert!(!l.try_consume(1, 0));
    l.timer_fired();
    assert!(!l.is_blocked());
    assert!(l.try_consume(1000, 2), "the bytes bucket was full again");
}

#[test]
fn limiter_with_only_a_bandwidth_bucket_counts_no_ops() {
    let (mut l, _clock) = limiter(10, 0);
    for _ in 0..100 {
        assert!(l.try_consume(0, 1));
    }
    assert!(l.try_consume(10, 1));
    assert!(!l.try_consume(1, 0));
}

/// The real timer: armed on refusal, its readiness reaches epoll, and
/// clearing it removes the readiness (nothing is ever read from it).
#[test]
fn refusal_arms_the_timerfd_and_firing_clears_it() {
    let config = RateLimitConfig {
        bandwidth: BucketConfig {
            rate: 1_000_000,
            burst: 1000,
        },
        ops: BucketConfig::default(),
    };
    let mut l = RateLimiter::new(&config).unwrap();
    assert!(l.try_consume(1000, 1));
    assert!(!l.try_consume(1000, 1), "needs 1 ms more");
    let timer = l.timer().unwrap();
    assert!(timer.is_armed().unwrap());
    let epoll = Epoll::new().unwrap();
    epoll
        .ctl(
            ControlOperation::Add,
            timer.as_raw_fd(),
            EpollEvent::new(EpollSet::IN, 7),
        )
        .unwrap();
    let mut events = [EpollEvent::default(); 1];
    assert_eq!(epoll.wait(5000, &mut events).unwrap(), 1);
    assert_eq!(events[0].data(), 7);
    l.timer_fired();
    assert!(!l.is_blocked());
    assert_eq!(epoll.wait(0, &mut events).unwrap(), 0, "readiness cleared");
    assert!(l.try_consume(1000, 1));
}
