//! The virtio-vsock device: config space and the processing of
//! its rx and tx queues against the [`Muxer`].

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use super::muxer::Muxer;
use super::packet::{parse_tx, HDR_SIZE};
use crate::devices::virtio::{read_config_bytes, Activated, ChainDone, VirtioCommon, VirtioDevice};

/// Virtio device ID of vsock devices.
pub const VSOCK_DEVICE_ID: u32 = 19;
const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];
const RX: usize = 0;
const TX: usize = 1;
/// The event queue: the device posts one event, TRANSPORT_RESET, after a
/// snapshot restore.
const EVENT: usize = 2;
/// `virtio_vsock_event_id` VIRTIO_VSOCK_EVENT_TRANSPORT_RESET.
const EVENT_TRANSPORT_RESET: u32 = 0;

/// What [`Vsock::new`] sets up.
#[derive(Debug, Clone)]
pub struct VsockConfig {
    /// The guest's CID (3 or more).
    pub guest_cid: u64,
    /// Unix socket the VMM listens on for host-initiated connections; guest
    /// connections to port P go to `<uds_path>_<P>`.
    pub uds_path: PathBuf,
    /// An already bound listener used instead of binding `uds_path`.
    pub listener: Option<Arc<UnixListener>>,
    /// What the guest's side of each connection carries.
    pub streams: super::VsockStreams,
}

/// Errors from [`Vsock::new`].
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The CID is reserved or does not fit in 32 bits.
    #[error("invalid guest CID {0} (must be 3 to 4294967294)")]
    Cid(u64),
    /// Another process listens on the socket path.
    #[error("vsock socket {0} is in use by another process")]
    InUse(PathBuf),
    /// Binding the listener failed.
    #[error("cannot listen on vsock socket {path}")]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Creating the activation eventfd failed.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// Creating the accept back-off timer failed.
    #[error("cannot create a timerfd")]
    Timer(#[source] std::io::Error),
}

/// A virtio-vsock device whose host side is a set of Unix sockets.
pub struct Vsock {
    guest_cid: u64,
    config: [u8; 8],
    pub(super) muxer: Muxer,
    pub(super) common: VirtioCommon,
    /// A TRANSPORT_RESET event waits for an event-queue buffer.
    reset_pending: bool,
}

impl Vsock {
    /// Validates the CID and listens on `uds_path`.
    pub fn new(config: VsockConfig) -> Result<Self, VsockError> {
        if config.guest_cid < 3 || config.guest_cid >= u64::from(u32::MAX) {
            return Err(VsockError::Cid(config.guest_cid));
        }
        let muxer = Muxer::new(
            config.guest_cid,
            config.uds_path,
            config.listener,
            config.streams,
        )?;
        let features = (1u64 << VIRTIO_F_VERSION_1) | (1u64 << VIRTIO_RING_F_EVENT_IDX);
        let common = VirtioCommon::new("virtio-vsock", VSOCK_DEVICE_ID, &QUEUE_SIZES, features)
            .map_err(VsockError::EventFd)?;
        Ok(Self {
            guest_cid: config.guest_cid,
            config: config.guest_cid.to_le_bytes(),
            muxer,
            common,
            reset_pending: false,
        })
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// Number of open connections (diagnostics).
    pub fn connection_count(&self) -> usize {
        self.muxer.connection_count()
    }

    /// Whether the guest driver is running the device.
    pub fn is_active(&self) -> bool {
        self.common.is_activated()
    }

    /// Tells the guest driver that every connection is gone (after a
    /// snapshot restore, whose host side has none): queues a
    /// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue, delivered
    /// now if the driver has an event buffer there, else as soon as it
    /// adds one. The driver then resets all its sockets and re-reads the
    /// guest CID.
    pub fn transport_reset(&mut self) {
        self.reset_pending = true;
        self.run_queues();
    }

    /// Whether a TRANSPORT_RESET event waits for an event buffer.
    pub fn transport_reset_pending(&self) -> bool {
        self.reset_pending
    }

    /// Processes the tx queue, then fills rx buffers, then the event
    /// queue; raises the interrupt when the guest needs it.
    pub(super) fn run_queues(&mut self) {
        let name = self.common.name();
        let Some(active) = self.common.activated_mut() else {
            return;
        };
        let mut notify = false;
        if self.reset_pending && post_reset_event(active) {
            self.reset_pending = false;
            notify |= active.needs_interrupt(EVENT);
        }
        if process_tx(active, &mut self.muxer, self.guest_cid) {
            notify |= active.needs_interrupt(TX);
        }
        if process_rx(active, &mut self.muxer) {
            notify |= active.needs_interrupt(RX);
        }
        if notify {
            active.signal_used(name);
        }
    }
}

/// Writes a TRANSPORT_RESET event (`le32 id`) into the first event
/// buffer; true if one was used.
fn post_reset_event(active: &mut Activated) -> bool {
    let mut posted = false;
    active.drain(EVENT, |mem, chain| {
        let id = EVENT_TRANSPORT_RESET.to_le_bytes();
        match chain.writer(mem) {
            Ok(mut writer) if writer.available_bytes() >= id.len() => {
                if writer.write_all(&id).is_err() {
                    return ChainDone::Used(0);
                }
                posted = true;
                ChainDone::UsedThenStop(id.len() as u32)
            }
            // Too small or outside guest memory: hand it back empty.
            _ => ChainDone::Used(0),
        }
    });
    posted
}

/// Handles every guest packet on the tx queue; true if any was used.
fn process_tx(active: &mut Activated, muxer: &mut Muxer, guest_cid: u64) -> bool {
    active.drain(TX, |mem, chain| {
        match chain.reader(mem) {
            Ok(mut reader) => match parse_tx(&mut reader, guest_cid) {
                Ok(pkt) => muxer.handle_guest_packet(pkt),
                Err((err, hdr)) => muxer.handle_bad_packet(&err, hdr),
            },
            Err(e) => log::debug!("vsock: tx chain outside guest memory: {e}"),
        }
        ChainDone::Used(0)
    })
}

/// Moves pending packets into rx buffers; true if any buffer was used.
fn process_rx(active: &mut Activated, muxer: &mut Muxer) -> bool {
    if !muxer.has_pending_rx() {
        return false;
    }
    active.drain(RX, |mem, chain| {
        if !muxer.has_pending_rx() {
            return ChainDone::Unused;
        }
        match chain.writer(mem) {
            Ok(mut writer) if writer.available_bytes() > HDR_SIZE => {
                match muxer.fill_rx(&mut writer) {
                    Some(n) => ChainDone::Used(n),
                    None => ChainDone::Unused,
                }
            }
            // Too small or outside guest memory: hand it back empty.
            _ => ChainDone::Used(0),
        }
    })
}

impl VirtioDevice for Vsock {
    fn common(&self) -> &VirtioCommon {
        &self.common
    }

    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn on_reset(&mut self) {
        self.muxer.reset();
        // A fresh driver knows of no connection to reset.
        self.reset_pending = false;
    }
}
