//! The virtio-net device: features offered, config space, and moving
//! frames between its rx/tx queues and a [`Backend`].

use std::collections::VecDeque;
use std::time::Instant;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::QueueT;

use super::backend::{Backend, MIN_FRAME_LEN};
use super::egress::{EgressFilter, EgressPolicy, Verdict};
use super::frame::{deliver_rx, read_tx_frame, RxOutcome};
use crate::config::NetRateLimit;
use crate::devices::virtio::{read_config_bytes, ChainDone, VirtioCommon, VirtioDevice};
use crate::rate_limiter::{RateLimitError, RateLimiter};

/// Virtio device ID of network devices.
pub const NET_DEVICE_ID: u32 = 1;
const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE; 2];
const RX: usize = 0;
const TX: usize = 1;
/// mac (6), status (2), max_virtqueue_pairs (2), mtu (2).
const CONFIG_LEN: usize = 12;
/// Smallest MTU the device accepts (IPv4's minimum).
pub const MIN_MTU: u16 = 68;
/// Most frames the device itself keeps for the guest (TCP resets of
/// blocked connections); more are dropped.
const MAX_INJECTED: usize = 64;

/// What [`Net::new`] sets up.
pub struct NetDeviceConfig {
    /// The guest interface's MAC address.
    pub mac: [u8; 6],
    /// The MTU offered to the guest (VIRTIO_NET_F_MTU).
    pub mtu: u16,
    /// Whether frames from the backend always carry valid checksums, so
    /// the guest may skip verifying them (VIRTIO_NET_HDR_F_DATA_VALID).
    pub trusted_checksums: bool,
    /// Guest destinations kept from the backend.
    pub egress: EgressPolicy,
}

/// Errors from [`Net::new`].
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The MTU is below the minimum.
    #[error("MTU {0} is below {MIN_MTU}")]
    Mtu(u16),
    /// The MAC address is multicast or all zeros.
    #[error("MAC address {0} is not a unicast address")]
    Mac(String),
    /// Opening or configuring the backend failed.
    #[error("network backend {what}")]
    Backend {
        /// The backend, as the user named it.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Creating the activation eventfd failed.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// Setting up a rate limiter failed.
    #[error("network rate limiter")]
    RateLimiter(#[source] RateLimitError),
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A virtio-net device whose wire is a host [`Backend`].
pub struct Net {
    config: [u8; CONFIG_LEN],
    trusted_checksums: bool,
    pub(super) backend: Box<dyn Backend>,
    /// The backend failed or closed; no more frames either way.
    pub(super) backend_dead: bool,
    /// A frame from the backend waiting for rx buffers.
    rx_frame: Vec<u8>,
    pub(super) rx_pending: bool,
    /// A guest frame the backend did not take yet.
    tx_frame: Vec<u8>,
    pub(super) tx_pending: bool,
    egress: EgressFilter,
    /// Frames of the device's own for the guest (resets answering
    /// blocked TCP segments), delivered before the backend's.
    injected: VecDeque<Vec<u8>>,
    /// Frames from the backend wait here before reaching the guest.
    pub(super) rx_limiter: RateLimiter,
    /// The pending rx frame went through `rx_limiter` already.
    rx_paid: bool,
    /// Guest frames wait here (in the tx queue) before the backend.
    pub(super) tx_limiter: RateLimiter,
    pub(super) common: VirtioCommon,
    /// How the backend fd is registered with epoll (`None`: not at all).
    pub(super) watched: Option<event_manager::EventSet>,
    /// Counters (diagnostics and tests).
    pub(super) stats: Stats,
}

/// Frame counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Guest frames handed to the backend.
    pub tx_frames: u64,
    /// Guest chains dropped as invalid.
    pub tx_dropped: u64,
    /// Guest frames kept from the backend by the egress policy.
    pub tx_blocked: u64,
    /// Backend frames delivered to the guest.
    pub rx_frames: u64,
    /// Backend frames dropped (too large for the guest's buffers, invalid
    /// buffers, runts).
    pub rx_dropped: u64,
}

impl Net {
    /// A device in front of `backend`.
    pub fn new(config: NetDeviceConfig, backend: Box<dyn Backend>) -> Result<Self, NetError> {
        if config.mtu < MIN_MTU {
            return Err(NetError::Mtu(config.mtu));
        }
        if config.mac[0] & 1 != 0 || config.mac == [0; 6] {
            return Err(NetError::Mac(format_mac(&config.mac)));
        }
        let mut cfg = [0u8; CONFIG_LEN];
        cfg[0..6].copy_from_slice(&config.mac);
        cfg[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        cfg[8..10].copy_from_slice(&1u16.to_le_bytes());
        cfg[10..12].copy_from_slice(&config.mtu.to_le_bytes());
        let features = [
            VIRTIO_F_VERSION_1,
            VIRTIO_RING_F_EVENT_IDX,
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_MTU,
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_NET_F_STATUS,
        ]
        .iter()
        .fold(0u64, |f, bit| f | (1u64 << bit));
        let common = VirtioCommon::new("virtio-net", NET_DEVICE_ID, &QUEUE_SIZES, features)
            .map_err(NetError::EventFd)?;
        Ok(Self {
            config: cfg,
            trusted_checksums: config.trusted_checksums,
            backend,
            backend_dead: false,
            rx_frame: Vec::new(),
            rx_pending: false,
            tx_frame: Vec::new(),
            tx_pending: false,
            egress: EgressFilter::new(config.egress),
            injected: VecDeque::new(),
            rx_limiter: RateLimiter::unlimited(),
            rx_paid: false,
            tx_limiter: RateLimiter::unlimited(),
            common,
            watched: None,
            stats: Stats::default(),
        })
    }

    /// The device with `limit` on frames to the guest (rx) and from it
    /// (tx); without this, nothing is limited.
    pub fn with_rate_limit(mut self, limit: &NetRateLimit) -> Result<Self, NetError> {
        self.rx_limiter = RateLimiter::new(&limit.rx).map_err(NetError::RateLimiter)?;
        self.tx_limiter = RateLimiter::new(&limit.tx).map_err(NetError::RateLimiter)?;
        Ok(self)
    }

    /// Forgets the pending rx frame (and whether it was paid for).
    fn drop_pending_rx(&mut self) {
        self.rx_pending = false;
        self.rx_paid = false;
    }

    /// Whether the guest driver is running the device.
    pub fn is_active(&self) -> bool {
        self.common.is_activated()
    }

    /// The MAC address in the config space.
    pub fn mac(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.config[0..6]);
        mac
    }

    /// The MTU offered.
    pub fn mtu(&self) -> u16 {
        u16::from_le_bytes([self.config[10], self.config[11]])
    }

    /// Frame counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub(super) fn mark_backend_dead(&mut self, why: &std::io::Error) {
        if !self.backend_dead {
            log::warn!("virtio-net: backend gone ({why}); the guest's link stays silent");
        }
        self.backend_dead = true;
        self.drop_pending_rx();
        self.tx_pending = false;
    }

    /// Moves frames both ways and raises the interrupt when the guest
    /// needs it.
    pub(super) fn run_queues(&mut self) {
        if !self.common.is_activated() {
            return;
        }
        let tx_used = self.process_tx();
        let rx_used = self.process_rx();
        let name = self.common.name();
        let Some(active) = self.common.activated_mut() else {
            return;
        };
        let mut notify = false;
        if tx_used {
            notify |= active.needs_interrupt(TX);
        }
        if rx_used {
            notify |= active.needs_interrupt(RX);
        }
        if notify {
            active.signal_used(name);
        }
    }

    /// Hands the pending frame to the backend; false if it is still full.
    fn push_pending_tx(&mut self) -> bool {
        if !self.tx_pending || self.backend_dead {
            self.tx_pending = false;
            return true;
        }
        match self.backend.send(&self.tx_frame) {
            Ok(true) => {
                self.tx_pending = false;
                self.stats.tx_frames += 1;
                true
            }
            Ok(false) => false,
            Err(e) => {
                self.mark_backend_dead(&e);
                true
            }
        }
    }

    /// Sends guest frames to the backend until the queue is empty, the
    /// backend is full or the tx rate limit is reached (the frame stays in
    /// the queue until the limiter's timer fires); true if any chain was
    /// used.
    pub(super) fn process_tx(&mut self) -> bool {
        if !self.push_pending_tx() || self.tx_limiter.is_blocked() {
            return false;
        }
        let Some(active) = self.common.activated_mut() else {
            return false;
        };
        let (backend, frame, stats) = (&mut self.backend, &mut self.tx_frame, &mut self.stats);
        let (pending, dead) = (&mut self.tx_pending, &mut self.backend_dead);
        let (egress, injected) = (&mut self.egress, &mut self.injected);
        let limiter = &mut self.tx_limiter;
        let used = active.drain(TX, |mem, chain| {
            if let Err(e) = read_tx_frame(mem, chain, frame) {
                log::debug!("virtio-net: tx frame dropped: {e}");
                stats.tx_dropped += 1;
                return ChainDone::Used(0);
            }
            if *dead {
                return ChainDone::Used(0);
            }
            if !limiter.try_consume(frame.len() as u64, 1) {
                return ChainDone::Unused;
            }
            let verdict = match egress.is_open() {
                true => Verdict::Pass,
                false => egress.outbound(frame, Instant::now()),
            };
            match verdict {
                Verdict::Pass => {}
                Verdict::Drop => {
                    stats.tx_blocked += 1;
                    return ChainDone::Used(0);
                }
                Verdict::Reset(reset) => {
                    stats.tx_blocked += 1;
                    if injected.len() < MAX_INJECTED {
                        injected.push_back(reset);
                    }
                    return ChainDone::Used(0);
                }
            }
            match backend.send(frame) {
                Ok(true) => stats.tx_frames += 1,
                // Full: keep the frame, wait for the backend to become
                // writable.
                Ok(false) => {
                    *pending = true;
                    return ChainDone::UsedThenStop(0);
                }
                Err(e) => {
                    crate::log_limited!(
                        log::Level::Warn,
                        "virtio-net: backend gone ({e}); the guest's link stays silent"
                    );
                    *dead = true;
                }
            }
            ChainDone::Used(0)
        });
        if self.backend_dead {
            self.drop_pending_rx();
        }
        used
    }

    /// Delivers backend frames into rx buffers until the backend or the
    /// buffers run out or the rx rate limit is reached (the frame waits,
    /// pending, for the limiter's timer); true if any buffer was used.
    pub(super) fn process_rx(&mut self) -> bool {
        let mergeable = self.common.has_feature(VIRTIO_NET_F_MRG_RXBUF);
        let guest_csum = self.common.has_feature(VIRTIO_NET_F_GUEST_CSUM);
        let flags = if self.trusted_checksums && guest_csum {
            VIRTIO_NET_HDR_F_DATA_VALID as u8
        } else {
            0
        };
        let mut used = false;
        let mut rechecked = false;
        // Ends when the backend has nothing more, the guest has no buffers
        // left, or the backend is gone.
        loop {
            if self.backend_dead || !self.common.is_activated() {
                break;
            }
            if !self.rx_pending {
                if let Some(frame) = self.injected.pop_front() {
                    self.rx_frame.clear();
                    self.rx_frame.extend_from_slice(&frame);
                    self.rx_pending = true;
                }
            }
            if !self.rx_pending {
                match self.backend.recv(&mut self.rx_frame) {
                    Ok(true) if self.rx_frame.len() < MIN_FRAME_LEN => {
                        self.stats.rx_dropped += 1;
                        continue;
                    }
                    Ok(true) => {
                        if !self.egress.is_open() {
                            self.egress.inbound(&self.rx_frame, Instant::now());
                        }
                        self.rx_pending = true;
                        self.rx_paid = false;
                    }
                    Ok(false) => break,
                    Err(e) => {
                        self.mark_backend_dead(&e);
                        break;
                    }
                }
            }
            if !self.rx_paid {
                if !self.rx_limiter.try_consume(self.rx_frame.len() as u64, 1) {
                    break;
                }
                self.rx_paid = true;
            }
            let Some(active) = self.common.activated_mut() else {
                break;
            };
            let mem = &active.mem;
            let Some(queue) = active.queues.get_mut(RX) else {
                break;
            };
            match deliver_rx(mem, queue, &self.rx_frame, mergeable, flags) {
                RxOutcome::Delivered(_) => {
                    self.rx_pending = false;
                    self.rx_paid = false;
                    self.stats.rx_frames += 1;
                    used = true;
                    rechecked = false;
                }
                RxOutcome::Dropped { consumed } => {
                    self.rx_pending = false;
                    self.rx_paid = false;
                    self.stats.rx_dropped += 1;
                    used |= consumed > 0;
                }
                RxOutcome::NoBuffers => {
                    // Ask for a notification when buffers come, and go on if
                    // some arrived in between (once: the ring may be garbage).
                    if rechecked {
                        break;
                    }
                    rechecked = true;
                    match queue.enable_notification(mem) {
                        Ok(true) => continue,
                        _ => break,
                    }
                }
            }
        }
        used
    }
}

impl VirtioDevice for Net {
    fn common(&self) -> &VirtioCommon {
        &self.common
    }

    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn on_activate(&mut self) {
        self.drop_pending_rx();
        self.tx_pending = false;
        self.injected.clear();
    }

    fn on_reset(&mut self) {
        self.drop_pending_rx();
        self.tx_pending = false;
        self.injected.clear();
    }
}
