//! Token-bucket rate limiting of device I/O (disk and network bandwidth
//! and operations), off unless configured.
//!
//! - [`TokenBucket`]: pure arithmetic over [`Instant`]s handed in by the
//!   caller: `rate` tokens per second accrue up to `size`; a request
//!   larger than `size` is let through once the bucket is full and leaves
//!   it in debt, so it makes progress and the long-term rate still holds.
//! - [`RateLimiter`]: an optional bandwidth bucket and an optional
//!   operations bucket, a [`Clock`] (tests inject their own) and a
//!   non-blocking **timerfd**. When a request does not fit, the device
//!   stops processing its queue and the limiter arms the timer for the
//!   moment the request fits; the device's epoll loop watches the timer
//!   ([`RateLimiter::register`]) and resumes when it fires
//!   ([`RateLimiter::timer_fired`]). No sleeping, no polling.
//!
//! An unlimited [`RateLimiter`] has no timer and costs one branch per
//! request. Fill levels are not part of a snapshot: a restored device
//! starts with full buckets from the restoring VM's own configuration.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_manager::{EventOps, EventSet, Events};
use serde::{Deserialize, Serialize};
use vmm_sys_util::timerfd::TimerFd;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// `Events::data` of a device's (first) limiter timer: apart from queue
/// indices and from [`CTL_DATA`](crate::devices::virtio::activation::CTL_DATA).
pub const TIMER_DATA: u32 = u32::MAX - 1;
/// `Events::data` of a device's second limiter timer (network rx).
pub const SECOND_TIMER_DATA: u32 = u32::MAX - 2;

/// One bucket as configured: `rate` tokens (bytes or operations) per
/// second, at most `burst` spent at once after idling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketConfig {
    /// Tokens per second; 0 means unlimited.
    pub rate: u64,
    /// Bucket size; 0 means one second's worth (`rate`).
    pub burst: u64,
}

impl BucketConfig {
    /// `rate` per second with the default burst (one second's worth).
    pub fn per_second(rate: u64) -> Self {
        Self { rate, burst: 0 }
    }

    /// Whether this bucket limits anything.
    pub fn is_limited(&self) -> bool {
        self.rate != 0
    }
}

/// The limits of one device queue (or direction); the default limits
/// nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitConfig {
    /// Bytes per second.
    pub bandwidth: BucketConfig,
    /// Requests (disk) or frames (network) per second.
    pub ops: BucketConfig,
}

impl RateLimitConfig {
    /// Whether any bucket limits anything.
    pub fn is_limited(&self) -> bool {
        self.bandwidth.is_limited() || self.ops.is_limited()
    }
}

/// Errors setting up a [`RateLimiter`].
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// The timerfd could not be created.
    #[error("cannot create the rate limiter's timerfd")]
    Timer(#[source] std::io::Error),
}

/// A token bucket; every method takes the current time.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    size: u64,
    /// Negative after a request larger than what was left (debt).
    tokens: i128,
    /// Token-nanoseconds accrued towards the next whole token (< 1e9).
    carry: u128,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `config`; `None` if it limits nothing.
    pub fn new(config: BucketConfig, now: Instant) -> Option<Self> {
        if !config.is_limited() {
            return None;
        }
        let size = if config.burst == 0 {
            config.rate
        } else {
            config.burst
        };
        Some(Self {
            rate: config.rate,
            size,
            tokens: i128::from(size),
            carry: 0,
            last: now,
        })
    }

    /// Tokens available now (negative while in debt).
    pub fn tokens(&mut self, now: Instant) -> i128 {
        self.refill(now);
        self.tokens
    }

    fn refill(&mut self, now: Instant) {
        let Some(elapsed) = now.checked_duration_since(self.last) else {
            return;
        };
        self.last = now;
        let size = i128::from(self.size);
        if self.tokens >= size {
            self.carry = 0;
            return;
        }
        let credit = elapsed
            .as_nanos()
            .saturating_mul(u128::from(self.rate))
            .saturating_add(self.carry);
        let added = i128::try_from(credit / NANOS_PER_SEC).unwrap_or(i128::MAX);
        self.carry = credit % NANOS_PER_SEC;
        self.tokens = self.tokens.saturating_add(added).min(size);
        if self.tokens == size {
            self.carry = 0;
        }
    }

    /// `None` if `n` tokens may be taken now, else how long until they
    /// may. `n` larger than the bucket may be taken once it is full.
    pub fn wait_time(&mut self, n: u64, now: Instant) -> Option<Duration> {
        self.refill(now);
        let needed = i128::from(n.min(self.size));
        if n == 0 || self.tokens >= needed {
            return None;
        }
        // needed - tokens >= 1 and carry < 1e9, so this is >= 1 ns.
        let missing = u128::try_from(needed - self.tokens).unwrap_or(u128::MAX);
        let token_ns = missing
            .saturating_mul(NANOS_PER_SEC)
            .saturating_sub(self.carry);
        let rate = u128::from(self.rate);
        let ns = token_ns.div_ceil(rate).max(1);
        Some(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)))
    }

    /// Takes `n` tokens (after [`Self::wait_time`] said yes), going into
    /// debt for a request larger than what is left.
    pub fn take(&mut self, n: u64) {
        self.tokens = self.tokens.saturating_sub(i128::from(n));
    }

    /// Takes `n` tokens if possible now; otherwise how long to wait.
    pub fn try_consume(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        match self.wait_time(n, now) {
            None => {
                self.take(n);
                Ok(())
            }
            Some(wait) => Err(wait),
        }
    }
}

/// Where a [`RateLimiter`] reads the time.
pub trait Clock: Send + Sync {
    /// The current monotonic time.
    fn now(&self) -> Instant;
}

/// The real monotonic clock (`CLOCK_MONOTONIC`, as the timerfd).
#[derive(Debug, Default, Clone, Copy)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The token buckets of one queue (or direction) and the timer that
/// brings the device back when tokens have accrued.
pub struct RateLimiter {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    /// Present iff a bucket is.
    timer: Option<TimerFd>,
    blocked: bool,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("bandwidth", &self.bandwidth)
            .field("ops", &self.ops)
            .field("blocked", &self.blocked)
            .finish_non_exhaustive()
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::unlimited()
    }
}

impl RateLimiter {
    /// A limiter that never refuses and has no timer.
    pub fn unlimited() -> Self {
        Self {
            bandwidth: None,
            ops: None,
            timer: None,
            blocked: false,
            clock: Arc::new(MonotonicClock),
        }
    }

    /// A limiter for `config` on the monotonic clock.
    pub fn new(config: &RateLimitConfig) -> Result<Self, RateLimitError> {
        Self::with_clock(config, Arc::new(MonotonicClock))
    }

    /// A limiter for `config` reading the time from `clock`.
    pub fn with_clock(
        config: &RateLimitConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RateLimitError> {
        if !config.is_limited() {
            return Ok(Self {
                clock,
                ..Self::unlimited()
            });
        }
        let now = clock.now();
        Ok(Self {
            bandwidth: TokenBucket::new(config.bandwidth, now),
            ops: TokenBucket::new(config.ops, now),
            timer: Some(TimerFd::new().map_err(|e| RateLimitError::Timer(e.into()))?),
            blocked: false,
            clock,
        })
    }

    /// Whether any bucket limits anything.
    pub fn is_limited(&self) -> bool {
        self.timer.is_some()
    }

    /// Whether the device must wait for the timer before going on.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Takes `bytes` and `ops` tokens if both buckets have them (and the
    /// limiter is not already waiting); otherwise takes nothing, arms the
    /// timer for when they will, and returns false: the device leaves the
    /// request where it is and stops until [`Self::timer_fired`].
    pub fn try_consume(&mut self, bytes: u64, ops: u64) -> bool {
        if self.timer.is_none() {
            return true;
        }
        if self.blocked {
            return false;
        }
        let now = self.clock.now();
        let wait_bytes = self
            .bandwidth
            .as_mut()
            .and_then(|b| b.wait_time(bytes, now));
        let wait_ops = self.ops.as_mut().and_then(|b| b.wait_time(ops, now));
        let Some(wait) = wait_bytes.max(wait_ops) else {
            if let Some(b) = self.bandwidth.as_mut() {
                b.take(bytes);
            }
            if let Some(b) = self.ops.as_mut() {
                b.take(ops);
            }
            return true;
        };
        self.blocked = self.arm(wait);
        // Without a timer the device would never come back: let the
        // request through rather than stall the queue.
        !self.blocked
    }

    /// Arms the timer for `wait`; false if it could not be armed.
    fn arm(&mut self, wait: Duration) -> bool {
        let Some(timer) = self.timer.as_mut() else {
            return false;
        };
        // A zero duration would disarm the timer.
        match timer.reset(wait.max(Duration::from_nanos(1)), None) {
            Ok(()) => true,
            Err(e) => {
                crate::log_limited!(log::Level::Error, "rate limiter: cannot arm the timer: {e}");
                false
            }
        }
    }

    /// The timer's epoll event arrived: disarms it (which also clears its
    /// readiness, so nothing is read from it) and lets the device go on.
    pub fn timer_fired(&mut self) {
        if let Some(timer) = self.timer.as_mut() {
            if let Err(e) = timer.clear() {
                crate::log_limited!(
                    log::Level::Error,
                    "rate limiter: cannot clear the timer: {e}"
                );
            }
        }
        self.blocked = false;
    }

    /// Event thread (`MutEventSubscriber::init`): watches the timer with
    /// `Events::data` `data`. Does nothing for an unlimited limiter.
    pub fn register(&self, ops: &mut EventOps, data: u32) {
        let Some(timer) = &self.timer else {
            return;
        };
        if let Err(e) = ops.add(Events::with_data(timer, data, EventSet::IN)) {
            log::error!("rate limiter: cannot register the timerfd: {e:?}");
        }
    }

    /// The timer, for tests that wait on it.
    #[cfg(test)]
    pub(crate) fn timer(&self) -> Option<&TimerFd> {
        self.timer.as_ref()
    }
}

/// A clock that moves only when told (tests).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct ManualClock {
    base: Instant,
    offset_ns: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
impl ManualClock {
    /// A clock standing at an arbitrary instant.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            offset_ns: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Moves the clock forward.
    pub(crate) fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_ns
            .fetch_add(ns, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        let ns = self.offset_ns.load(std::sync::atomic::Ordering::SeqCst);
        self.base + Duration::from_nanos(ns)
    }
}

#[cfg(test)]
#[path = "rate_limiter_tests.rs"]
mod tests;
