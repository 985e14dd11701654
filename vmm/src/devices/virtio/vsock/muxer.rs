//! The host side of the vsock device: the Unix listener, pending host
//! clients (`CONNECT <port>\n`), the set of connections, port allocation and
//! the order in which packets go to the guest.
//!
//! The muxer never touches epoll itself: it records the registrations it
//! needs as [`EpollChange`]s, which the event glue applies in order. Sockets
//! are closed only through that list, after their epoll removal, so that a
//! reused fd number is never confused with a closed one.
//!
//! When accepting on the listener fails (EMFILE, ENFILE...), the listener
//! would stay readable and the event loop would spin: it is taken out of
//! epoll instead, and put back when a socket of ours closes or after
//! [`ACCEPT_BACKOFF`] (a timer fd).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{ErrorKind, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use event_manager::EventSet;
use virtio_queue::Writer;
use vmm_sys_util::timerfd::TimerFd;

use super::connection::{Connection, Ends, RxOutcome, Service, Verdict};
use super::packet::{
    write_rx, Header, PacketError, TxPacket, HOST_CID, OP_REQUEST, OP_RST, TYPE_STREAM,
};
use super::{VsockError, VsockStreams};

/// Most connections at once.
const MAX_CONNECTIONS: usize = 1024;
/// Most connections at once to one port: guest connections to one host
/// port, or host clients to one guest port. The excess is refused (an RST
/// to the guest, or the host client closed).
pub(super) const MAX_CONNECTIONS_PER_PORT: usize = 128;
/// How long the listener is not polled after accept() failed (unless one of
/// our sockets closes first).
pub(super) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Most accepted host clients that have not sent their CONNECT line.
const MAX_PENDING_CLIENTS: usize = 64;
/// Longest CONNECT line accepted.
const MAX_LINE: usize = 32;
/// Most RSTs waiting for rx buffers (older ones are dropped).
const MAX_RST_QUEUE: usize = 1024;
/// Most connections accepted per listener event.
const ACCEPT_BATCH: usize = 16;
/// First host port given to host-initiated connections.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// An epoll registration change for the event glue to apply.
#[derive(Debug)]
pub enum EpollChange {
    /// Register `fd` with this interest.
    Add(RawFd, EventSet),
    /// Change the interest of `fd`.
    Modify(RawFd, EventSet),
    /// Unregister `fd`, then close the socket if one is given.
    Remove(RawFd, Option<UnixStream>),
    /// Close a socket that is not registered.
    Close(UnixStream),
    /// Stop polling the listener (accept() is failing).
    ListenerOff,
    /// Poll the listener again.
    ListenerOn,
}

/// Identifies a connection: (host port, guest port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    local_port: u32,
    peer_port: u32,
}

#[derive(Debug)]
struct PendingClient {
    stream: UnixStream,
    line: Vec<u8>,
}

/// All host-side vsock state of one device.
#[derive(Debug)]
pub struct Muxer {
    ends: Ends,
    uds_path: PathBuf,
    listener: UnixListener,
    /// The socket file's identity when this muxer bound it (and so
    /// removes it); `None` for a listener the caller passed.
    listener_id: Option<(u64, u64)>,
    conns: HashMap<ConnKey, Connection>,
    by_fd: HashMap<RawFd, ConnKey>,
    clients: HashMap<RawFd, PendingClient>,
    rx_queue: VecDeque<ConnKey>,
    rst_queue: VecDeque<Header>,
    next_local_port: u32,
    changes: Vec<EpollChange>,
    scratch: Vec<u8>,
    /// The listener is out of epoll after a failed accept().
    listener_paused: bool,
    /// Expires when a paused listener is polled again. Not part of a
    /// snapshot: a restored device listens afresh on a new socket.
    backoff: TimerFd,
}

impl Muxer {
    /// Binds the listener on `uds_path`, replacing a stale socket file that
    /// nobody listens on; or uses `listener`, already bound by the caller
    /// (whose socket file stays the caller's). `streams` says whether guest
    /// data is gated.
    pub fn new(
        guest_cid: u64,
        uds_path: PathBuf,
        listener: Option<Arc<UnixListener>>,
        streams: VsockStreams,
    ) -> Result<Self, VsockError> {
        let bind_err = |source| VsockError::Bind {
            path: uds_path.clone(),
            source,
        };
        let (listener, listener_id) = match listener {
            Some(l) => (l.try_clone().map_err(bind_err)?, None),
            None => {
                remove_stale_socket(&uds_path)?;
                let listener = UnixListener::bind(&uds_path).map_err(bind_err)?;
                let meta = std::fs::metadata(&uds_path).map_err(bind_err)?;
                (listener, Some((meta.dev(), meta.ino())))
            }
        };
        listener.set_nonblocking(true).map_err(bind_err)?;
        let backoff = TimerFd::new().map_err(|e| VsockError::Timer(e.into()))?;
        Ok(Self {
            ends: Ends {
                guest_cid,
                gated: streams == VsockStreams::AgentFrames,
            },
            uds_path,
            listener,
            listener_id,
            conns: HashMap::new(),
            by_fd: HashMap::new(),
            clients: HashMap::new(),
            rx_queue: VecDeque::new(),
            rst_queue: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
            changes: Vec::new(),
            scratch: Vec::new(),
            listener_paused: false,
            backoff,
        })
    }

    /// The listening socket.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// The back-off timer: readable when a paused listener may be polled
    /// again (see [`Muxer::handle_backoff`]).
    pub fn backoff_timer(&self) -> &TimerFd {
        &self.backoff
    }

    /// Whether the listener is out of epoll after a failed accept().
    #[cfg(test)]
    pub fn listener_paused(&self) -> bool {
        self.listener_paused
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Takes the epoll changes recorded since the last call.
    pub fn take_changes(&mut self) -> Vec<EpollChange> {
        std::mem::take(&mut self.changes)
    }

    /// Whether a packet waits for an rx buffer.
    pub fn has_pending_rx(&self) -> bool {
        !self.rst_queue.is_empty() || !self.rx_queue.is_empty()
    }

    /// The listener is readable: accept host clients.
    pub fn handle_listener(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::log_limited!(
                        log::Level::Warn,
                        "vsock: accept on {}: {e}; pausing it",
                        self.uds_path.display()
                    );
                    self.pause_listener();
                    return;
                }
            };
            if self.clients.len() >= MAX_PENDING_CLIENTS || stream.set_nonblocking(true).is_err() {
                crate::log_limited!(
                    log::Level::Warn,
                    "vsock: too many pending host clients, dropping one"
                );
                continue;
            }
            let fd = stream.as_raw_fd();
            self.changes.push(EpollChange::Add(fd, EventSet::IN));
            let client = PendingClient {
                stream,
                line: Vec::new(),
            };
            self.clients.insert(fd, client);
        }
    }

    /// Takes the listener out of epoll until a socket of ours closes or
    /// [`ACCEPT_BACKOFF`] passes: a failing accept() must not make the
    /// event loop spin on a listener that stays readable.
    fn pause_listener(&mut self) {
        if self.listener_paused {
            return;
        }
        if let Err(e) = self.backoff.reset(ACCEPT_BACKOFF, None) {
            // Without the timer, only a closing socket resumes it.
            log::warn!("vsock: cannot arm the accept back-off timer: {e}");
        }
        self.listener_paused = true;
        self.changes.push(EpollChange::ListenerOff);
    }

    fn resume_listener(&mut self) {
        if self.listener_paused {
            self.listener_paused = false;
            self.changes.push(EpollChange::ListenerOn);
        }
    }

    /// The back-off timer expired: poll the listener again.
    pub fn handle_backoff(&mut self) {
        if let Err(e) = self.backoff.clear() {
            log::debug!("vsock: clearing the back-off timer: {e}");
        }
        self.resume_listener();
    }

    /// Whether another connection to `service` would exceed
    /// [`MAX_CONNECTIONS_PER_PORT`].
    fn port_full(&self, service: Service) -> bool {
        let open = self.conns.values().filter(|c| c.service() == service);
        open.count() >= MAX_CONNECTIONS_PER_PORT
    }

    /// An event on a client or connection socket.
    pub fn handle_fd_event(&mut self, fd: RawFd, set: EventSet) {
        if self.clients.contains_key(&fd) {
            self.handle_client(fd);
            return;
        }
        let Some(&key) = self.by_fd.get(&fd) else {
            log::debug!("vsock: event on unknown fd {fd}");
            return;
        };
        let mut verdict = Verdict::Keep;
        let mut silent = false;
        if let Some(conn) = self.conns.get_mut(&key) {
            if set.contains(EventSet::IN) {
                conn.on_readable();
            }
            if set.contains(EventSet::OUT) {
                verdict = conn.on_writable();
            }
            if verdict == Verdict::Keep && set.intersects(EventSet::HANG_UP | EventSet::ERROR) {
                silent = conn.unseen_by_guest();
                verdict = conn.on_hangup();
                if verdict == Verdict::Keep && conn.registered {
                    // A hung-up socket stays "ready" forever: stop polling it
                    // and read what is left as the guest takes it.
                    conn.registered = false;
                    self.changes.push(EpollChange::Remove(fd, None));
                }
            }
        }
        self.apply_verdict(key, verdict, silent);
    }

    fn handle_client(&mut self, fd: RawFd) {
        let Some(client) = self.clients.get_mut(&fd) else {
            return;
        };
        let mut byte = [0u8; 1];
        // One byte at a time: nothing after the newline may be consumed.
        for _ in 0..=MAX_LINE {
            match (&client.stream).read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => {
                    let line = std::mem::take(&mut client.line);
                    self.client_line(fd, &line);
                    return;
                }
                Ok(1) if client.line.len() < MAX_LINE => client.line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                _ => break, // EOF, error or line too long
            }
        }
        self.drop_client(fd);
    }

    fn drop_client(&mut self, fd: RawFd) {
        if let Some(client) = self.clients.remove(&fd) {
            self.changes
                .push(EpollChange::Remove(fd, Some(client.stream)));
            // An fd is free again: accept() may work now.
            self.resume_listener();
        }
    }

    fn client_line(&mut self, fd: RawFd, line: &[u8]) {
        let port = parse_connect(line);
        let Some(port) = port else {
            log::debug!(
                "vsock: bad host request {:?}",
                String::from_utf8_lossy(line)
            );
            self.drop_client(fd);
            return;
        };
        if self.conns.len() >= MAX_CONNECTIONS || self.port_full(Service::GuestPort(port)) {
            crate::log_limited!(
                log::Level::Warn,
                "vsock: connection limit reached (guest port {port})"
            );
            self.drop_client(fd);
            return;
        }
        let Some(local_port) = self.allocate_local_port() else {
            self.drop_client(fd);
            return;
        };
        let Some(client) = self.clients.remove(&fd) else {
            return;
        };
        let mut conn = Connection::host_initiated(client.stream, local_port, port, self.ends);
        conn.registered = true;
        conn.interest = EventSet::IN;
        let key = ConnKey {
            local_port,
            peer_port: port,
        };
        self.by_fd.insert(fd, key);
        self.conns.insert(key, conn);
        self.refresh(key);
    }

    fn allocate_local_port(&mut self) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_local_port;
            self.next_local_port = match port.checked_add(1) {
                Some(p) if p != u32::MAX => p,
                _ => FIRST_LOCAL_PORT,
            };
            if !self.conns.keys().any(|k| k.local_port == port) {
                return Some(port);
            }
        }
        None
    }

    /// Handles a validated packet from the guest.
    pub fn handle_guest_packet(&mut self, pkt: TxPacket) {
        let key = ConnKey {
            local_port: pkt.hdr.dst_port,
            peer_port: pkt.hdr.src_port,
        };
        if pkt.hdr.op == OP_REQUEST {
            if self.conns.contains_key(&key) {
                self.remove(key, true);
                return;
            }
            self.guest_connect(&pkt.hdr);
            return;
        }
        let verdict = match self.conns.get_mut(&key) {
            Some(conn) => conn.handle_guest(pkt),
            None => {
                if pkt.hdr.op != OP_RST {
                    self.queue_rst(pkt.hdr.rst_reply());
                }
                return;
            }
        };
        self.apply_verdict(key, verdict, false);
    }

    /// A guest packet failed validation.
    pub fn handle_bad_packet(&mut self, err: &PacketError, hdr: Option<Header>) {
        log::debug!("vsock: dropping guest packet: {err}");
        if let Some(hdr) = hdr.filter(|h| err.wants_rst() && h.op != OP_RST) {
            self.queue_rst(hdr.rst_reply());
        }
    }

    fn guest_connect(&mut self, hdr: &Header) {
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if self.conns.len() >= MAX_CONNECTIONS || self.port_full(Service::HostPort(hdr.dst_port)) {
            crate::log_limited!(
                log::Level::Warn,
                "vsock: guest connection limit reached (host port {})",
                hdr.dst_port
            );
            self.queue_rst(hdr.rst_reply());
            return;
        }
        let mut path = OsString::from(self.uds_path.as_os_str());
        path.push(format!("_{}", hdr.dst_port));
        let stream = match connect_nonblocking(Path::new(&path)) {
            Ok(s) => s,
            Err(e) => {
                log::debug!(
                    "vsock: guest connect to {}: {e}",
                    Path::new(&path).display()
                );
                self.queue_rst(hdr.rst_reply());
                return;
            }
        };
        let conn = Connection::guest_initiated(stream, hdr, self.ends);
        let fd = conn.fd();
        let mut conn = conn;
        conn.registered = true;
        conn.interest = conn.wanted_interest();
        self.changes.push(EpollChange::Add(fd, conn.interest));
        self.by_fd.insert(fd, key);
        self.conns.insert(key, conn);
        self.refresh(key);
    }

    fn apply_verdict(&mut self, key: ConnKey, verdict: Verdict, silent: bool) {
        match verdict {
            Verdict::Keep => self.refresh(key),
            Verdict::Reset => self.remove(key, !silent),
            Verdict::Close => self.remove(key, false),
        }
    }

    /// Re-queues a connection for rx and updates its epoll interest.
    fn refresh(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.has_pending_rx() && !conn.in_rx_queue {
            conn.in_rx_queue = true;
            self.rx_queue.push_back(key);
        }
        let wanted = conn.wanted_interest();
        if conn.registered && wanted != conn.interest {
            conn.interest = wanted;
            self.changes.push(EpollChange::Modify(conn.fd(), wanted));
        }
    }

    /// Removes a connection, optionally telling the guest with an RST.
    fn remove(&mut self, key: ConnKey, rst: bool) {
        let Some(conn) = self.conns.remove(&key) else {
            return;
        };
        let fd = conn.fd();
        self.by_fd.remove(&fd);
        if rst {
            self.queue_rst(Header {
                src_cid: HOST_CID,
                dst_cid: self.ends.guest_cid,
                src_port: key.local_port,
                dst_port: key.peer_port,
                type_: TYPE_STREAM,
                op: OP_RST,
                ..Header::default()
            });
        }
        let registered = conn.registered;
        let stream = conn.into_stream();
        self.changes.push(if registered {
            EpollChange::Remove(fd, Some(stream))
        } else {
            EpollChange::Close(stream)
        });
        self.resume_listener();
    }

    fn queue_rst(&mut self, hdr: Header) {
        if self.rst_queue.len() >= MAX_RST_QUEUE {
            self.rst_queue.pop_front();
        }
        self.rst_queue.push_back(hdr);
    }

    /// Writes the next packet for the guest into `writer`; None if there is
    /// nothing to send.
    pub fn fill_rx(&mut self, writer: &mut Writer) -> Option<u32> {
        loop {
            if let Some(hdr) = self.rst_queue.pop_front() {
                return write_rx(writer, &hdr, &[]);
            }
            let key = self.rx_queue.pop_front()?;
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            conn.in_rx_queue = false;
            match conn.fill_rx(writer, &mut self.scratch) {
                RxOutcome::Written(n) => {
                    self.refresh(key);
                    return Some(n);
                }
                RxOutcome::Nothing => self.refresh(key),
                RxOutcome::Reset => self.remove(key, true),
            }
        }
    }

    /// Drops every connection and client (device reset: the guest driver
    /// forgot them all).
    pub fn reset(&mut self) {
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for key in keys {
            self.remove(key, false);
        }
        let fds: Vec<RawFd> = self.clients.keys().copied().collect();
        for fd in fds {
            self.drop_client(fd);
        }
        self.rx_queue.clear();
        self.rst_queue.clear();
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        // Remove the socket file only if it is still the one we bound.
        if let Ok(meta) = std::fs::metadata(&self.uds_path) {
            if Some((meta.dev(), meta.ino())) == self.listener_id {
                let _ = std::fs::remove_file(&self.uds_path);
            }
        }
    }
}

/// Parses `CONNECT <port>` (an optional trailing CR is accepted).
fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let port = line.strip_prefix("CONNECT ")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

/// Removes `path` if it is a socket nobody listens on; fails if someone
/// does.
fn remove_stale_socket(path: &Path) -> Result<(), VsockError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Ok(()); // bind reports the conflict
    }
    match connect_nonblocking(path) {
        Ok(_) => Err(VsockError::InUse(path.to_path_buf())),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Err(VsockError::InUse(path.to_path_buf())),
        Err(_) => std::fs::remove_file(path).map_err(|source| VsockError::Bind {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Connects a non-blocking Unix stream socket to `path` without ever
/// blocking: a listener with a full backlog yields `WouldBlock`.
pub fn connect_nonblocking(path: &Path) -> std::io::Result<UnixStream> {
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid, NUL-terminated sockaddr_un of `len` bytes
    // and `owned` is an open socket.
    let rc = unsafe {
        libc::connect(
            owned.as_raw_fd(),
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_line_parsing() {
        assert_eq!(parse_connect(b"CONNECT 1024"), Some(1024));
        assert_eq!(parse_connect(b"CONNECT 52\r"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 4294967295"), Some(u32::MAX));
        assert_eq!(parse_connect(b"CONNECT 4294967296"), None);
        assert_eq!(parse_connect(b"CONNECT "), None);
        assert_eq!(parse_connect(b"CONNECT -1"), None);
        assert_eq!(parse_connect(b"CONNECT +1"), None);
        assert_eq!(parse_connect(b"connect 1"), None);
        assert_eq!(parse_connect(b"\xff\xfe"), None);
    }

    #[test]
    fn connect_nonblocking_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = connect_nonblocking(&dir.path().join("nobody")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let long = dir.path().join("x".repeat(200));
        assert_eq!(
            connect_nonblocking(&long).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        let path = dir.path().join("l");
        let _l = UnixListener::bind(&path).unwrap();
        assert!(connect_nonblocking(&path).is_ok());
    }
}
