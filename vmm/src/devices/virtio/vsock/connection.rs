//! One vsock stream connection bridged to a Unix stream: its state machine,
//! credit-based flow control in both directions and bounded buffering.
//!
//! Host -> guest data is never buffered: it is read from the Unix socket
//! straight into a guest rx buffer, and only as much as the guest's credit
//! allows. Guest -> host data goes to the socket directly; what the socket
//! cannot take yet waits in a buffer of at most [`BUF_ALLOC`] bytes (64 KiB,
//! like Firecracker's per-connection buffer), the credit advertised to the
//! guest: a guest ignoring it is reset rather than buffered for. On a gated
//! connection ([`super::VsockStreams::AgentFrames`]) guest data passes a
//! [`FrameGate`] first, and the credit is one whole frame.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use event_manager::EventSet;
use virtio_queue::Writer;

use super::gate::{FrameGate, GATED_BUF_ALLOC};
use super::packet::{
    write_rx, Header, TxPacket, HDR_SIZE, HOST_CID, MAX_PKT_DATA, OP_CREDIT_REQUEST,
    OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN, SHUTDOWN_RCV,
    SHUTDOWN_SEND, TYPE_STREAM,
};

/// Receive buffer advertised to the guest for each connection: the most
/// guest data buffered for a host socket that does not keep up.
pub const BUF_ALLOC: u32 = 64 * 1024;
/// Send a credit update once this many bytes were forwarded unannounced.
const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;

/// What the muxer must do with a connection after an operation.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it.
    Keep,
    /// Remove it and send an RST to the guest.
    Reset,
    /// Remove it silently (the guest already considers it closed).
    Close,
}

/// Result of [`Connection::fill_rx`].
#[derive(Debug, PartialEq, Eq)]
pub enum RxOutcome {
    /// A packet of this many bytes was written.
    Written(u32),
    /// Nothing to send right now.
    Nothing,
    /// The socket failed: reset the connection.
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Host-initiated, waiting for the guest's RESPONSE.
    Connecting,
    /// Data flows.
    Established,
}

/// Control packets waiting for an rx buffer.
#[derive(Debug, Default)]
struct Pending {
    request: bool,
    response: bool,
    shutdown: u32,
    credit_update: bool,
    credit_request: bool,
}

/// The port a connection was opened to, for the per-port connection cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The guest connected to this host port (`<uds>_<port>`).
    HostPort(u32),
    /// A host client connected to this guest port (`CONNECT <port>`).
    GuestPort(u32),
}

/// What every connection of a device shares: the guest's CID and whether
/// guest data is gated ([`super::VsockStreams::AgentFrames`]).
#[derive(Debug, Clone, Copy)]
pub struct Ends {
    /// The guest's CID.
    pub guest_cid: u64,
    /// Guest data passes a [`FrameGate`].
    pub gated: bool,
}

/// One connection.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    /// Host-side port.
    pub local_port: u32,
    /// Guest-side port.
    pub peer_port: u32,
    guest_cid: u64,
    by_guest: bool,
    state: State,
    pending: Pending,
    // Host -> guest.
    tx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    readable: bool,
    host_eof: bool,
    host_hup: bool,
    credit_requested: bool,
    // Guest -> host.
    /// The credit advertised to the guest.
    buf_alloc: u32,
    /// Decodes and re-encodes guest data on a gated connection.
    gate: Option<FrameGate>,
    rx_cnt: Wrapping<u32>,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    tx_buf: VecDeque<u8>,
    guest_shut_send: bool,
    guest_shut_rcv: bool,
    host_write_shut: bool,
    /// Registered in epoll with `interest`.
    pub registered: bool,
    /// The epoll interest currently registered.
    pub interest: EventSet,
    /// Queued in the muxer's rx queue.
    pub in_rx_queue: bool,
}

impl Connection {
    fn new(stream: UnixStream, local_port: u32, peer_port: u32, ends: Ends) -> Self {
        let (buf_alloc, gate) = if ends.gated {
            (GATED_BUF_ALLOC, Some(FrameGate::default()))
        } else {
            (BUF_ALLOC, None)
        };
        Self {
            stream,
            local_port,
            peer_port,
            guest_cid: ends.guest_cid,
            by_guest: false,
            state: State::Connecting,
            pending: Pending::default(),
            tx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            readable: false,
            host_eof: false,
            host_hup: false,
            credit_requested: false,
            buf_alloc,
            gate,
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            tx_buf: VecDeque::new(),
            guest_shut_send: false,
            guest_shut_rcv: false,
            host_write_shut: false,
            registered: false,
            interest: EventSet::empty(),
            in_rx_queue: false,
        }
    }

    /// A host client asked for guest port `peer_port`: send a REQUEST.
    pub fn host_initiated(stream: UnixStream, local: u32, peer_port: u32, ends: Ends) -> Self {
        let mut c = Self::new(stream, local, peer_port, ends);
        c.pending.request = true;
        c
    }

    /// The guest connected to host port `local` and the bridge socket is
    /// open: answer with a RESPONSE.
    pub fn guest_initiated(stream: UnixStream, hdr: &Header, ends: Ends) -> Self {
        let mut c = Self::new(stream, hdr.dst_port, hdr.src_port, ends);
        c.by_guest = true;
        c.state = State::Established;
        c.pending.response = true;
        c.update_peer_credit(hdr);
        c
    }

    /// The port this connection was opened to.
    pub fn service(&self) -> Service {
        if self.by_guest {
            Service::HostPort(self.local_port)
        } else {
            Service::GuestPort(self.peer_port)
        }
    }

    /// The Unix socket's fd.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Gives up the Unix socket (to close it after epoll removal).
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    fn peer_credit(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn can_send_data(&self) -> bool {
        self.state == State::Established
            && self.readable
            && !self.host_eof
            && !self.guest_shut_rcv
            && self.peer_credit() > 0
    }

    /// Whether a packet is waiting for an rx buffer.
    pub fn has_pending_rx(&self) -> bool {
        let p = &self.pending;
        p.request
            || p.response
            || p.shutdown != 0
            || p.credit_update
            || p.credit_request
            || self.can_send_data()
    }

    /// The epoll interest this connection needs now.
    pub fn wanted_interest(&self) -> EventSet {
        let mut set = EventSet::empty();
        if self.state != State::Established {
            return set;
        }
        if !self.readable && !self.host_eof && !self.guest_shut_rcv {
            set |= EventSet::IN;
        }
        if !self.tx_buf.is_empty() && !self.host_write_shut {
            set |= EventSet::OUT;
        }
        set
    }

    fn header(&mut self, op: u16, len: u32, flags: u32) -> Header {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.pending.credit_update = false;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: self.buf_alloc,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    fn control(&mut self, writer: &mut Writer, op: u16, flags: u32) -> RxOutcome {
        let hdr = self.header(op, 0, flags);
        match write_rx(writer, &hdr, &[]) {
            Some(n) => RxOutcome::Written(n),
            None => RxOutcome::Nothing,
        }
    }

    /// Writes the next packet for the guest into `writer` (which has room
    /// for more than a header). `scratch` is a reusable bounce buffer.
    pub fn fill_rx(&mut self, writer: &mut Writer, scratch: &mut Vec<u8>) -> RxOutcome {
        if self.pending.request {
            self.pending.request = false;
            return self.control(writer, OP_REQUEST, 0);
        }
        if self.pending.response {
            self.pending.response = false;
            return self.control(writer, OP_RESPONSE, 0);
        }
        if self.pending.shutdown != 0 {
            let flags = std::mem::take(&mut self.pending.shutdown);
            return self.control(writer, OP_SHUTDOWN, flags);
        }
        if self.can_send_data() {
            match self.read_data(writer, scratch) {
                RxOutcome::Nothing => {}
                other => {
                    self.check_credit();
                    return other;
                }
            }
        }
        if self.pending.credit_request {
            self.pending.credit_request = false;
            return self.control(writer, OP_CREDIT_REQUEST, 0);
        }
        if self.pending.credit_update {
            return self.control(writer, OP_CREDIT_UPDATE, 0);
        }
        RxOutcome::Nothing
    }

    fn read_data(&mut self, writer: &mut Writer, scratch: &mut Vec<u8>) -> RxOutcome {
        let room = writer.available_bytes().saturating_sub(HDR_SIZE);
        let max = room
            .min(self.peer_credit() as usize)
            .min(MAX_PKT_DATA as usize);
        if max == 0 {
            return RxOutcome::Nothing;
        }
        if scratch.len() < max {
            scratch.resize(max, 0);
        }
        match (&self.stream).read(&mut scratch[..max]) {
            Ok(0) => {
                self.host_eof = true;
                self.readable = false;
                let mut flags = SHUTDOWN_SEND;
                if self.host_hup {
                    flags |= SHUTDOWN_RCV;
                }
                self.control(writer, OP_SHUTDOWN, flags)
            }
            Ok(n) => {
                // n <= MAX_PKT_DATA, so it fits in u32.
                let len = n as u32;
                let hdr = self.header(OP_RW, len, 0);
                match write_rx(writer, &hdr, &scratch[..n]) {
                    Some(w) => {
                        self.tx_cnt += Wrapping(len);
                        RxOutcome::Written(w)
                    }
                    None => RxOutcome::Reset,
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.readable = false;
                RxOutcome::Nothing
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => RxOutcome::Nothing,
            Err(e) => {
                log::debug!("vsock: read from host socket: {e}");
                RxOutcome::Reset
            }
        }
    }

    fn update_peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
    }

    /// Handles a validated guest packet addressed to this connection.
    pub fn handle_guest(&mut self, pkt: TxPacket) -> Verdict {
        let hdr = pkt.hdr;
        if hdr.op == OP_RST {
            return Verdict::Close;
        }
        self.update_peer_credit(&hdr);
        match (self.state, hdr.op) {
            (State::Connecting, OP_RESPONSE) if !self.pending.request => self.established(),
            (State::Connecting, _) => Verdict::Reset,
            (State::Established, OP_RW) => self.guest_data(&pkt.data),
            (State::Established, OP_SHUTDOWN) => self.guest_shutdown(hdr.flags),
            (State::Established, OP_CREDIT_UPDATE) => Verdict::Keep,
            (State::Established, OP_CREDIT_REQUEST) => {
                self.pending.credit_update = true;
                Verdict::Keep
            }
            // REQUEST or RESPONSE on an established connection.
            _ => Verdict::Reset,
        }
    }

    fn established(&mut self) -> Verdict {
        self.state = State::Established;
        let line = format!("OK {}\n", self.local_port);
        // The socket is fresh and empty: a short line fits in its buffer.
        match (&self.stream).write(line.as_bytes()) {
            Ok(n) if n == line.len() => Verdict::Keep,
            Ok(_) => Verdict::Reset,
            Err(e) => {
                log::debug!("vsock: host client gone before OK: {e}");
                Verdict::Reset
            }
        }
    }

    fn guest_data(&mut self, data: &[u8]) -> Verdict {
        if self.guest_shut_send {
            return Verdict::Reset;
        }
        // Received and not yet credited back: what waits in this process.
        let held = (self.rx_cnt - self.fwd_cnt).0 as usize;
        if held + data.len() > self.buf_alloc as usize {
            log::debug!(
                "vsock: guest overran its credit on port {}",
                self.local_port
            );
            return Verdict::Reset;
        }
        self.rx_cnt += Wrapping(data.len() as u32);
        if let Some(gate) = &mut self.gate {
            if let Err(e) = gate.push(data, &mut self.tx_buf) {
                crate::log_limited!(
                    log::Level::Warn,
                    "vsock: resetting a connection on port {}: {e}",
                    self.local_port
                );
                return Verdict::Reset;
            }
            return self.on_writable();
        }
        let mut rest = data;
        if self.tx_buf.is_empty() && !self.host_write_shut {
            match (&self.stream).write(data) {
                Ok(n) => {
                    self.forwarded(n);
                    rest = &data[n..];
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("vsock: write to host socket: {e}");
                    return Verdict::Reset;
                }
            }
        }
        self.tx_buf.extend(rest);
        self.after_flush()
    }

    /// `n` bytes went out to the host socket: credit the guest bytes
    /// that finishes.
    fn forwarded(&mut self, n: usize) {
        let n = match &mut self.gate {
            Some(gate) => gate.written(n),
            None => n,
        };
        self.fwd_cnt += Wrapping(n as u32);
        if (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD {
            self.pending.credit_update = true;
        }
    }

    fn guest_shutdown(&mut self, flags: u32) -> Verdict {
        self.guest_shut_rcv |= flags & SHUTDOWN_RCV != 0;
        self.guest_shut_send |= flags & SHUTDOWN_SEND != 0;
        if self.guest_shut_rcv {
            self.readable = false;
            let _ = self.stream.shutdown(Shutdown::Read);
        }
        self.after_flush()
    }

    /// Applies the guest's half-close once buffered data is out.
    fn after_flush(&mut self) -> Verdict {
        if !self.tx_buf.is_empty() || !self.guest_shut_send {
            return Verdict::Keep;
        }
        if self.gate.as_ref().is_some_and(|g| g.partial() > 0) {
            // The guest stopped sending inside a frame.
            return Verdict::Reset;
        }
        if self.guest_shut_rcv {
            // The guest closed its socket and waits for our RST.
            return Verdict::Reset;
        }
        if !self.host_write_shut {
            self.host_write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Verdict::Keep
    }

    /// The socket is readable (or at EOF).
    pub fn on_readable(&mut self) {
        self.readable = true;
        self.check_credit();
    }

    /// Asks the guest for credit (once) when host data waits for it.
    fn check_credit(&mut self) {
        if self.readable
            && self.state == State::Established
            && !self.host_eof
            && !self.guest_shut_rcv
            && !self.credit_requested
            && self.peer_credit() == 0
        {
            self.credit_requested = true;
            self.pending.credit_request = true;
        }
    }

    /// The socket is writable: flush buffered guest data.
    pub fn on_writable(&mut self) -> Verdict {
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match (&self.stream).write(front) {
                Ok(0) => return Verdict::Reset,
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.forwarded(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("vsock: write to host socket: {e}");
                    return Verdict::Reset;
                }
            }
        }
        self.after_flush()
    }

    /// The host end hung up (both directions). Returns Reset while the
    /// guest has not even seen the connection yet.
    pub fn on_hangup(&mut self) -> Verdict {
        self.host_hup = true;
        match self.state {
            State::Connecting => Verdict::Reset,
            State::Established => {
                // Remaining data and the EOF are read as rx buffers allow.
                self.readable = !self.host_eof;
                Verdict::Keep
            }
        }
    }

    /// Whether the guest has not seen this connection at all yet.
    pub fn unseen_by_guest(&self) -> bool {
        self.pending.request
    }
}
