//! The virtio-vsock device: config space, activation and the processing of
//! its rx and tx queues against the [`Muxer`].

use std::path::PathBuf;
use std::sync::Arc;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueOwnedT, QueueT};

use super::muxer::Muxer;
use super::packet::{parse_tx, HDR_SIZE};
use crate::devices::virtio::activation::QueueEvents;
use crate::devices::virtio::{
    read_config_bytes, ActivateContext, ActivateError, GuestMemory, VirtioDevice, VirtioInterrupt,
    INT_VRING,
};

/// Virtio device ID of vsock devices.
pub const VSOCK_DEVICE_ID: u32 = 19;
const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];
pub(super) const RX: usize = 0;
pub(super) const TX: usize = 1;
pub(super) const EVQ: usize = 2;

/// What [`Vsock::new`] sets up.
#[derive(Debug, Clone)]
pub struct VsockConfig {
    /// The guest's CID (3 or more).
    pub guest_cid: u64,
    /// Unix socket the VMM listens on for host-initiated connections; guest
    /// connections to port P go to `<uds_path>_<P>`.
    pub uds_path: PathBuf,
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
}

pub(super) struct Active {
    pub(super) mem: GuestMemory,
    pub(super) queues: Vec<Queue>,
    pub(super) interrupt: Arc<VirtioInterrupt>,
}

/// A virtio-vsock device whose host side is a set of Unix sockets.
pub struct Vsock {
    guest_cid: u64,
    config: [u8; 8],
    acked_features: u64,
    pub(super) muxer: Muxer,
    pub(super) events: QueueEvents,
    pub(super) active: Option<Active>,
}

impl Vsock {
    /// Validates the CID and listens on `uds_path`.
    pub fn new(config: VsockConfig) -> Result<Self, VsockError> {
        if config.guest_cid < 3 || config.guest_cid >= u64::from(u32::MAX) {
            return Err(VsockError::Cid(config.guest_cid));
        }
        let muxer = Muxer::new(config.guest_cid, config.uds_path)?;
        Ok(Self {
            guest_cid: config.guest_cid,
            config: config.guest_cid.to_le_bytes(),
            acked_features: 0,
            muxer,
            events: QueueEvents::new().map_err(VsockError::EventFd)?,
            active: None,
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
        self.active.is_some()
    }

    /// Processes the tx queue, then fills rx buffers; raises the interrupt
    /// when the guest needs it.
    pub(super) fn run_queues(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut notify = false;
        if process_tx(active, &mut self.muxer, self.guest_cid) {
            notify |= needs_notification(active, TX);
        }
        if process_rx(active, &mut self.muxer) {
            notify |= needs_notification(active, RX);
        }
        if notify {
            if let Err(e) = active.interrupt.trigger(INT_VRING) {
                log::error!("vsock: interrupt: {e}");
            }
        }
    }
}

fn needs_notification(active: &mut Active, index: usize) -> bool {
    let mem = &active.mem;
    active
        .queues
        .get_mut(index)
        .is_some_and(|q| q.needs_notification(mem).unwrap_or(true))
}

/// Handles every guest packet on the tx queue; true if any was used.
fn process_tx(active: &mut Active, muxer: &mut Muxer, guest_cid: u64) -> bool {
    let mem = &active.mem;
    let Some(queue) = active.queues.get_mut(TX) else {
        return false;
    };
    let mut used = false;
    loop {
        if queue.disable_notification(mem).is_err() {
            break;
        }
        let mut count = 0usize;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            match chain.reader(mem) {
                Ok(mut reader) => match parse_tx(&mut reader, guest_cid) {
                    Ok(pkt) => muxer.handle_guest_packet(pkt),
                    Err((err, hdr)) => muxer.handle_bad_packet(&err, hdr),
                },
                Err(e) => log::debug!("vsock: tx chain outside guest memory: {e}"),
            }
            if let Err(e) = queue.add_used(mem, head, 0) {
                log::debug!("vsock: add_used: {e}");
            }
            count += 1;
            used = true;
        }
        match queue.enable_notification(mem) {
            Ok(true) if count > 0 => continue,
            _ => break,
        }
    }
    used
}

/// Moves pending packets into rx buffers; true if any buffer was used.
fn process_rx(active: &mut Active, muxer: &mut Muxer) -> bool {
    let mem = &active.mem;
    let Some(queue) = active.queues.get_mut(RX) else {
        return false;
    };
    let mut used = false;
    let mut rechecked = false;
    while muxer.has_pending_rx() {
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            // Out of buffers: ask for a notification, and go on if buffers
            // arrived in between (once, in case the ring is garbage).
            if rechecked {
                break;
            }
            rechecked = true;
            match queue.enable_notification(mem) {
                Ok(true) => continue,
                _ => break,
            }
        };
        rechecked = false;
        let head = chain.head_index();
        let len = match chain.writer(mem) {
            Ok(mut writer) if writer.available_bytes() > HDR_SIZE => {
                match muxer.fill_rx(&mut writer) {
                    Some(n) => n,
                    None => {
                        queue.go_to_previous_position();
                        break;
                    }
                }
            }
            // Too small or outside guest memory: hand it back empty.
            _ => 0,
        };
        if let Err(e) = queue.add_used(mem, head, len) {
            log::debug!("vsock: add_used: {e}");
        }
        used = true;
    }
    used
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VSOCK_DEVICE_ID
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        (1u64 << VIRTIO_F_VERSION_1) | (1u64 << VIRTIO_RING_F_EVENT_IDX)
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::debug!("vsock: config write at {offset:#x} ignored");
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        ctx.expect_queues("virtio-vsock", QUEUE_SIZES.len())?;
        self.active = Some(Active {
            mem: ctx.mem,
            queues: ctx.queues,
            interrupt: ctx.interrupt,
        });
        self.events
            .install(ctx.queue_evts)
            .map_err(ActivateError::EventFd)
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
        self.muxer.reset();
        self.events.retire();
    }
}
