//! The virtio-fs device: its config space, the features it offers (the
//! backend's, masked) and the hand-over of the driver's queues to the
//! vhost-user backend.

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::vhost_user::{offered_features, Backend, Rings};
use crate::devices::virtio::{
    read_config_bytes, ActivateContext, ActivateError, VirtioCommon, VirtioDevice,
};

/// Virtio device ID of file system devices.
pub const FS_DEVICE_ID: u32 = 26;
/// Length of the tag field of the config space (NUL padded).
pub const TAG_LEN: usize = 36;
/// The high-priority queue (FUSE_INTERRUPT, FUSE_FORGET), then one
/// request queue. virtiofsd (libvhost-user) takes rings of up to 1024.
const QUEUE_SIZES: [u16; 2] = [128, 1024];
/// Request queues besides the high-priority queue.
const REQUEST_QUEUES: u32 = 1;
/// tag (36 bytes), num_request_queues (le32).
const CONFIG_LEN: usize = TAG_LEN + 4;

/// Errors creating or running a virtio-fs device.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The tag is empty, longer than the config space holds, or has a NUL.
    #[error("virtio-fs tag {0:?} is invalid (1 to 36 bytes, no NUL)")]
    Tag(String),
    /// The configuration has no socket.
    #[error("virtio-fs device {0:?} has no vhost-user socket")]
    NoSocket(String),
    /// The socket's timeouts cannot be set or it cannot be duplicated.
    #[error("virtio-fs: vhost-user socket")]
    Socket(#[source] std::io::Error),
    /// A vhost-user exchange with the backend failed.
    #[error("virtio-fs: vhost-user {0} failed")]
    Vhost(&'static str, #[source] vhost::Error),
    /// The backend does not offer VIRTIO_F_VERSION_1.
    #[error("virtio-fs: the vhost-user backend lacks VIRTIO_F_VERSION_1 (features {0:#x})")]
    NoVersion1(u64),
    /// A queue's ring is not in guest memory.
    #[error("virtio-fs: queue {0} has a ring outside guest memory")]
    RingAddress(usize),
    /// Guest memory is not backed by a file the backend can map.
    #[error("virtio-fs: guest memory is not shareable (no memfd)")]
    MemoryNotShared,
    /// An earlier failure broke the connection to the backend.
    #[error("virtio-fs: the vhost-user backend connection is broken")]
    Broken,
    /// Creating an eventfd failed.
    #[error("virtio-fs: cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
}

/// Checks a tag: 1 to [`TAG_LEN`] bytes, no NUL (the guest reads it up
/// to the first NUL).
pub fn check_tag(tag: &str) -> Result<(), FsError> {
    if tag.is_empty() || tag.len() > TAG_LEN || tag.contains('\0') {
        return Err(FsError::Tag(tag.to_string()));
    }
    Ok(())
}

/// The config space of a device with `tag` (checked).
pub(super) fn config_space(tag: &str) -> [u8; CONFIG_LEN] {
    let mut config = [0u8; CONFIG_LEN];
    config[..tag.len()].copy_from_slice(tag.as_bytes());
    config[TAG_LEN..].copy_from_slice(&REQUEST_QUEUES.to_le_bytes());
    config
}

/// A virtio-fs device served by a vhost-user backend.
pub struct Fs {
    pub(super) common: VirtioCommon,
    config: [u8; CONFIG_LEN],
    pub(super) backend: Backend,
    /// The backend's "call" eventfds, one per queue (created here: a vCPU
    /// thread may duplicate an eventfd but not create one). Duplicates
    /// stand in for the queue eventfds in [`VirtioCommon`], so that the
    /// event loop watches these instead of the kicks.
    calls: Vec<EventFd>,
    /// The queue eventfds of the current activation (the transport's
    /// QueueNotify ioeventfds), the backend's "kick" eventfds.
    kicks: Vec<EventFd>,
    /// Counts activations, so that a reset and a new activation between
    /// two event-loop passes still restart the rings.
    activation: u64,
    /// The activation whose rings the backend runs, if any.
    started: Option<u64>,
}

impl Fs {
    /// Checks `tag` and sets the backend up on `socket`: owner, features
    /// and protocol features (blocks until the backend answers, at most
    /// [`SOCKET_TIMEOUT`](super::SOCKET_TIMEOUT) per message).
    pub fn new(tag: &str, socket: Arc<UnixStream>) -> Result<Self, FsError> {
        check_tag(tag)?;
        let backend = Backend::connect(socket, QUEUE_SIZES.len())?;
        let features = offered_features(backend.features())?;
        let common = VirtioCommon::new("virtio-fs", FS_DEVICE_ID, &QUEUE_SIZES, features)
            .map_err(FsError::EventFd)?;
        let calls = QUEUE_SIZES
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(FsError::EventFd)?;
        Ok(Self {
            common,
            config: config_space(tag),
            backend,
            calls,
            kicks: Vec::new(),
            activation: 0,
            started: None,
        })
    }

    /// The tag the guest mounts.
    pub fn tag(&self) -> String {
        let end = self.config[..TAG_LEN]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(TAG_LEN);
        String::from_utf8_lossy(&self.config[..end]).into_owned()
    }

    /// Whether the backend runs the driver's rings.
    pub fn is_started(&self) -> bool {
        self.started.is_some()
    }

    /// Whether the connection to the backend failed.
    pub fn is_broken(&self) -> bool {
        self.backend.is_broken()
    }

    /// Event thread: brings the backend in line with the driver: stops
    /// the rings of a reset (or replaced) activation, starts those of the
    /// current one.
    pub(super) fn sync_backend(&mut self) {
        let want = self.common.is_activated().then_some(self.activation);
        if self.started.is_some() && self.started != want {
            self.started = None;
            if let Err(e) = self.backend.stop(QUEUE_SIZES.len()) {
                crate::log_limited!(log::Level::Error, "{}", crate::logging::error_chain(&e));
            }
        }
        if want.is_none() || self.started.is_some() || self.backend.is_broken() {
            return;
        }
        let Some(active) = self.common.activated() else {
            return;
        };
        let rings = Rings {
            acked: self.common.features().acked(),
            mem: &active.mem,
            queues: &active.queues,
            kicks: &self.kicks,
            calls: &self.calls,
        };
        match self.backend.start(&rings) {
            Ok(()) => self.started = want,
            Err(e) => {
                self.backend.set_broken();
                crate::log_limited!(
                    log::Level::Error,
                    "{}; its requests will not complete",
                    crate::logging::error_chain(&e)
                );
            }
        }
    }

    /// Event thread: the backend used buffers of a queue.
    pub(super) fn signal_used(&self) {
        if let Some(active) = self.common.activated() {
            active.signal_used(self.common.name());
        }
    }
}

impl VirtioDevice for Fs {
    fn common(&self) -> &VirtioCommon {
        &self.common
    }

    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    /// Keeps the queue eventfds for the backend and has the event loop
    /// watch duplicates of the call eventfds instead; the backend itself
    /// is started on the event thread.
    fn activate(&mut self, mut ctx: ActivateContext) -> Result<(), ActivateError> {
        let calls = self
            .calls
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .map_err(ActivateError::EventFd)?;
        let kicks = std::mem::replace(&mut ctx.queue_evts, calls);
        self.common.activate(ctx)?;
        self.kicks = kicks;
        self.activation = self.activation.wrapping_add(1);
        Ok(())
    }

    fn on_reset(&mut self) {
        // The event thread stops the backend's rings (woken by the reset).
        self.kicks.clear();
    }
}

impl Drop for Fs {
    /// Stops the backend's rings when the VM ends.
    fn drop(&mut self) {
        if self.started.take().is_some() {
            if let Err(e) = self.backend.stop(QUEUE_SIZES.len()) {
                log::warn!("{}", crate::logging::error_chain(&e));
            }
        }
    }
}
