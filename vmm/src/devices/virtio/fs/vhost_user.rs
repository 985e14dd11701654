//! The frontend side of the vhost-user protocol for the virtio-fs device
//! (through the `vhost` crate's [`Frontend`]):
//! - at VM build ([`Backend::connect`]): SET_OWNER, GET_FEATURES and, if
//!   offered, the protocol features (only REPLY_ACK is acked: every
//!   message is then confirmed, so a refusal shows where it happens);
//! - when the driver activates the device ([`Backend::start`]):
//!   SET_FEATURES (the driver's plus VHOST_USER_F_PROTOCOL_FEATURES),
//!   SET_MEM_TABLE (the memfd regions of guest RAM), per queue
//!   SET_VRING_NUM/BASE/ADDR (host virtual addresses)/CALL/KICK, then
//!   SET_VRING_ENABLE when protocol features were negotiated;
//! - when it resets the device, or the VM ends ([`Backend::stop`]):
//!   SET_VRING_ENABLE 0 and GET_VRING_BASE per queue, which stops the
//!   backend's rings.
//!
//! Each message is a blocking exchange bounded by [`SOCKET_TIMEOUT`]. The
//! first failure breaks the connection for good ([`Backend::is_broken`]).

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::EventFd;

use super::device::FsError;
use crate::devices::virtio::GuestMemory;

/// How long one message to or reply from the backend may take.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// The virtio feature bits the device passes on to the driver when the
/// backend offers them: VERSION_1 and the ring layouts the backend
/// handles on its own (the transport's queues are split rings; no
/// ACCESS_PLATFORM, no packed rings, nothing of vhost-user's own).
pub const SUPPORTED_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_INDIRECT_DESC) | (1 << VIRTIO_RING_F_EVENT_IDX);

/// What the driver is offered of the `backend`'s features.
pub fn offered_features(backend: u64) -> Result<u64, FsError> {
    if backend & (1 << VIRTIO_F_VERSION_1) == 0 {
        return Err(FsError::NoVersion1(backend));
    }
    Ok(backend & SUPPORTED_FEATURES)
}

/// The protocol features acked of those the backend `offered`.
pub fn protocol_features_to_ack(offered: VhostUserProtocolFeatures) -> VhostUserProtocolFeatures {
    offered & VhostUserProtocolFeatures::REPLY_ACK
}

/// What the backend needs to run the driver's rings.
pub struct Rings<'a> {
    /// The features the driver acked.
    pub acked: u64,
    /// Guest memory (memfd-backed regions).
    pub mem: &'a GuestMemory,
    /// The driver's queues.
    pub queues: &'a [Queue],
    /// The queue eventfds the transport signals on QueueNotify.
    pub kicks: &'a [EventFd],
    /// The eventfds the backend signals when it used buffers.
    pub calls: &'a [EventFd],
}

/// The connection to a vhost-user backend.
pub struct Backend {
    frontend: Frontend,
    /// The socket the frontend uses (a duplicate of), watched for hang-up.
    socket: Arc<UnixStream>,
    /// GET_FEATURES.
    features: u64,
    /// VHOST_USER_F_PROTOCOL_FEATURES was offered (and is acked).
    protocol: bool,
    broken: bool,
}

impl Backend {
    /// Sets up the backend at the other end of `socket` for a device of
    /// `queues` queues.
    pub fn connect(socket: Arc<UnixStream>, queues: usize) -> Result<Self, FsError> {
        socket
            .set_read_timeout(Some(SOCKET_TIMEOUT))
            .and_then(|()| socket.set_write_timeout(Some(SOCKET_TIMEOUT)))
            .map_err(FsError::Socket)?;
        let stream = socket.try_clone().map_err(FsError::Socket)?;
        let mut frontend = Frontend::from_stream(stream, queues as u64);
        frontend
            .set_owner()
            .map_err(|e| FsError::Vhost("SET_OWNER", e))?;
        let features = frontend
            .get_features()
            .map_err(|e| FsError::Vhost("GET_FEATURES", e))?;
        let protocol = features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0;
        if protocol {
            let offered = frontend
                .get_protocol_features()
                .map_err(|e| FsError::Vhost("GET_PROTOCOL_FEATURES", e))?;
            let ack = protocol_features_to_ack(offered);
            frontend
                .set_protocol_features(ack)
                .map_err(|e| FsError::Vhost("SET_PROTOCOL_FEATURES", e))?;
            if ack.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
        }
        Ok(Self {
            frontend,
            socket,
            features,
            protocol,
            broken: false,
        })
    }

    /// The backend's virtio features (GET_FEATURES).
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The socket, for watching it for hang-up.
    pub fn socket(&self) -> &UnixStream {
        &self.socket
    }

    /// Whether an exchange failed (nothing more is sent).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Marks the connection broken (the backend hung up).
    pub fn set_broken(&mut self) {
        self.broken = true;
    }

    /// Runs one exchange; its failure breaks the connection.
    fn call<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut Frontend) -> vhost::Result<T>,
    ) -> Result<T, FsError> {
        if self.broken {
            return Err(FsError::Broken);
        }
        f(&mut self.frontend).map_err(|e| {
            self.broken = true;
            FsError::Vhost(what, e)
        })
    }

    /// Hands the driver's rings to the backend and starts them.
    pub fn start(&mut self, rings: &Rings) -> Result<(), FsError> {
        let mut features = rings.acked;
        if self.protocol {
            features |= VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        }
        let regions = memory_regions(rings.mem)?;
        let configs = rings
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| vring_config(rings.mem, i, q))
            .collect::<Result<Vec<_>, _>>()?;
        self.call("SET_FEATURES", |f| f.set_features(features))?;
        self.call("SET_MEM_TABLE", |f| f.set_mem_table(&regions))?;
        for (i, (q, config)) in rings.queues.iter().zip(&configs).enumerate() {
            let (Some(kick), Some(call)) = (rings.kicks.get(i), rings.calls.get(i)) else {
                return Err(FsError::EventFd(std::io::ErrorKind::NotFound.into()));
            };
            self.call("SET_VRING_NUM", |f| f.set_vring_num(i, q.size()))?;
            self.call("SET_VRING_BASE", |f| f.set_vring_base(i, q.next_avail()))?;
            self.call("SET_VRING_ADDR", |f| f.set_vring_addr(i, config))?;
            self.call("SET_VRING_CALL", |f| f.set_vring_call(i, call))?;
            self.call("SET_VRING_KICK", |f| f.set_vring_kick(i, kick))?;
        }
        if self.protocol {
            for i in 0..rings.queues.len() {
                self.call("SET_VRING_ENABLE", |f| f.set_vring_enable(i, true))?;
            }
        }
        Ok(())
    }

    /// Stops the backend's `queues` rings.
    pub fn stop(&mut self, queues: usize) -> Result<(), FsError> {
        for i in 0..queues {
            if self.protocol {
                self.call("SET_VRING_ENABLE", |f| f.set_vring_enable(i, false))?;
            }
            self.call("GET_VRING_BASE", |f| f.get_vring_base(i))?;
        }
        Ok(())
    }
}

/// The regions of guest memory as the backend maps them: each region's
/// file (the memfd), offset, size and address in this process.
fn memory_regions(mem: &GuestMemory) -> Result<Vec<VhostUserMemoryRegionInfo>, FsError> {
    mem.iter()
        .map(VhostUserMemoryRegionInfo::from_guest_region)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| FsError::MemoryNotShared)
}

/// Queue `index`'s sizes and ring addresses in this process (which the
/// backend translates through the memory table).
fn vring_config(mem: &GuestMemory, index: usize, q: &Queue) -> Result<VringConfigData, FsError> {
    let host = |addr: u64| {
        mem.get_host_address(GuestAddress(addr))
            .map(|p| p as u64)
            .map_err(|_| FsError::RingAddress(index))
    };
    Ok(VringConfigData {
        queue_max_size: q.max_size(),
        queue_size: q.size(),
        flags: 0,
        desc_table_addr: host(q.desc_table())?,
        used_ring_addr: host(q.used_ring())?,
        avail_ring_addr: host(q.avail_ring())?,
        log_addr: None,
    })
}
