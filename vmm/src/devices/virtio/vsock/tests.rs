//! Device-level vsock tests: a real event manager, real Unix sockets, and
//! the guest driver played through mock queues.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use virtio_queue::QueueT;
use vmm_sys_util::eventfd::EventFd;

use super::connection::BUF_ALLOC;
use super::packet::*;
use super::{Vsock, VsockConfig, VsockError, VsockStreams, GATED_BUF_ALLOC};
use crate::devices::virtio::test_utils::{
    activate_context, guest_memory, read_mem, write_mem, Driver,
};
use crate::devices::virtio::{GuestMemory, VirtioDevice};

const CID: u64 = 3;
const RX_BUF: u32 = 4096 + HDR_SIZE as u32;
const RX_BUFS: u64 = 32;
const RX_AREA: u64 = 0x10_0000;
const TX_AREA: u64 = 0x40_0000;
const TX_SLOT: u64 = 0x11000;

type Em = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

struct Harness<'a> {
    mem: &'a GuestMemory,
    rx: Driver<'a>,
    tx: Driver<'a>,
    dev: Arc<Mutex<Vsock>>,
    em: Em,
    evts: Vec<EventFd>,
    rx_bufs: HashMap<u16, u64>,
    tx_slot: u64,
    uds: PathBuf,
    _dir: tempfile::TempDir,
}

fn ghdr(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 64 * 1024,
        fwd_cnt: 0,
    }
}

impl<'a> Harness<'a> {
    fn new(mem: &'a GuestMemory) -> Self {
        Self::with_streams(mem, VsockStreams::Raw)
    }

    fn with_streams(mem: &'a GuestMemory, streams: VsockStreams) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let dev = Arc::new(Mutex::new(
            Vsock::new(VsockConfig {
                guest_cid: CID,
                uds_path: uds.clone(),
                listener: None,
                streams,
            })
            .unwrap(),
        ));
        let mut em = Em::new().unwrap();
        em.add_subscriber(dev.clone());
        let rx = Driver::new(mem, 0, 256);
        let tx = Driver::new(mem, 0x1_0000, 256);
        let ev = Driver::new(mem, 0x2_0000, 256);
        let mut queues = vec![rx.queue(), tx.queue(), ev.queue()];
        for q in &mut queues {
            q.set_event_idx(true);
        }
        let (ctx, evts) = activate_context(mem, queues);
        dev.lock().unwrap().activate(ctx).unwrap();
        let mut h = Harness {
            mem,
            rx,
            tx,
            dev,
            em,
            evts,
            rx_bufs: HashMap::new(),
            tx_slot: 0,
            uds,
            _dir: dir,
        };
        for i in 0..RX_BUFS {
            h.post_rx(RX_AREA + i * 0x2000);
        }
        h.pump();
        h
    }

    fn post_rx(&mut self, addr: u64) {
        let head = self.rx.push(&[(addr, RX_BUF, true)]);
        self.rx_bufs.insert(head, addr);
        self.evts[0].write(1).unwrap();
    }

    /// Runs the event loop until it has been idle for 20 ms (bounded).
    fn pump(&mut self) {
        for _ in 0..200 {
            if self.em.run_with_timeout(20).unwrap() == 0 {
                return;
            }
        }
    }

    fn send(&mut self, mut hdr: Header, data: &[u8]) {
        hdr.len = data.len() as u32;
        let addr = TX_AREA + (self.tx_slot % 16) * TX_SLOT;
        self.tx_slot += 1;
        write_mem(self.mem, addr, &hdr.to_bytes());
        write_mem(self.mem, addr + HDR_SIZE as u64, data);
        if data.is_empty() {
            self.tx.push(&[(addr, HDR_SIZE as u32, false)]);
        } else {
            self.tx.push(&[
                (addr, HDR_SIZE as u32, false),
                (addr + HDR_SIZE as u64, data.len() as u32, false),
            ]);
        }
        self.evts[1].write(1).unwrap();
        self.pump();
        assert!(!self.tx.take_used().is_empty(), "tx chain consumed");
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let addr = TX_AREA + (self.tx_slot % 16) * TX_SLOT;
        self.tx_slot += 1;
        write_mem(self.mem, addr, bytes);
        self.tx.push(&[(addr, bytes.len() as u32, false)]);
        self.evts[1].write(1).unwrap();
        self.pump();
        assert_eq!(self.tx.take_used().len(), 1);
    }

    /// Packets the device put in rx buffers (buffers are re-posted).
    fn recv(&mut self) -> Vec<(Header, Vec<u8>)> {
        self.pump();
        let mut out = Vec::new();
        for (head, len) in self.rx.take_used() {
            let addr = self.rx_bufs.remove(&head).expect("known rx buffer");
            assert!(len as usize >= HDR_SIZE, "rx packet of {len} bytes");
            let bytes = read_mem(self.mem, addr, len as usize);
            let raw: [u8; HDR_SIZE] = bytes[..HDR_SIZE].try_into().unwrap();
            let hdr = Header::from_bytes(&raw);
            assert_eq!(hdr.len as usize, len as usize - HDR_SIZE);
            assert_eq!(
                (hdr.src_cid, hdr.dst_cid, hdr.type_),
                (HOST_CID, CID, TYPE_STREAM)
            );
            out.push((hdr, bytes[HDR_SIZE..].to_vec()));
            self.post_rx(addr);
        }
        out
    }

    fn recv_one(&mut self, op: u16) -> (Header, Vec<u8>) {
        let mut pkts = self.recv();
        assert_eq!(pkts.len(), 1, "expected one packet, got {pkts:?}");
        let p = pkts.remove(0);
        assert_eq!(p.0.op, op, "packet {p:?}");
        p
    }

    fn conns(&self) -> usize {
        self.dev.lock().unwrap().connection_count()
    }

    /// Host client handshake up to the guest's REQUEST; returns the client
    /// and the host port the device chose.
    fn host_connect(&mut self, port: u32) -> (UnixStream, u32) {
        let mut client = UnixStream::connect(&self.uds).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .unwrap();
        let (req, _) = self.recv_one(OP_REQUEST);
        assert_eq!(req.dst_port, port);
        assert!(req.src_port >= 1 << 30);
        assert_eq!(req.buf_alloc, BUF_ALLOC);
        (client, req.src_port)
    }
}

fn read_line(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 64 {
        match s.read(&mut b) {
            Ok(1) if b[0] == b'\n' => break,
            Ok(1) => line.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8(line).unwrap()
}

fn read_n(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.read_exact(&mut v).unwrap();
    v
}

fn assert_eof(s: &mut UnixStream) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 16];
    assert_eq!(s.read(&mut b).unwrap(), 0, "EOF expected");
}

#[test]
fn host_to_guest_connect_handshake_and_data() {
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::new(&mem);
    let (mut client, local) = h.host_connect(5000);

    h.send(ghdr(OP_RESPONSE, 5000, local), &[]);
    assert_eq!(read_line(&mut client), format!("OK {local}"));

    client.write_all(b"ping").unwrap();
    let (hdr, data) = h.recv_one(OP_RW);
    assert_eq!(
        (hdr.src_port, hdr.dst_port, data.as_slice()),
        (local, 5000, &b"ping"[..])
    );

    h.send(ghdr(OP_RW, 5000, local), b"pong");
    assert_eq!(read_n(&mut client, 4), b"pong");

    // Host half-close: the guest is told, and can still send.
    client.shutdown(Shutdown::Write).unwrap();
    let (hdr, _) = h.recv_one(OP_SHUTDOWN);
    assert_eq!(hdr.flags, SHUTDOWN_SEND);
    h.send(ghdr(OP_RW, 5000, local), b"after");
    assert_eq!(read_n(&mut client, 5), b"after");

    // Guest close: the device answers RST and closes the host stream.
    let mut shut = ghdr(OP_SHUTDOWN, 5000, local);
    shut.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    h.send(shut, &[]);
    h.recv_one(OP_RST);
    assert_eof(&mut client);
    assert_eq!(h.conns(), 0);
}

#[test]
fn host_connect_refused_by_guest() {
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::new(&mem);
    let (mut client, local) = h.host_connect(5001);
    h.send(ghdr(OP_RST, 5001, local), &[]);
    assert_eof(&mut client);
    assert!(h.recv().is_empty(), "no answer to an RST");
    assert_eq!(h.conns(), 0);
}

#[test]
fn bad_connect_lines_close_the_client() {
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::new(&mem);
    for line in [&b"HELLO\n"[..], b"CONNECT x\n", &[b'A'; 100]] {
        let mut client = UnixStream::connect(&h.uds).unwrap();
        client.write_all(line).unwrap();
        h.pump();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 16];
        // EOF, or a reset when the device closed with bytes left unread.
        match client.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("client not closed: {other:?}"),
        }
    }
    assert!(h.recv().is_empty());
    // A client that leaves mid-line is forgotten.
    let mut client = UnixStream::connect(&h.uds).unwrap();
    client.write_all(b"CONN").unwrap();
    drop(client);
    h.pump();
    assert!(h.recv().is_empty());
    assert_eq!(h.conns(), 0);
}

#[test]
fn host_client_leaving_before_response() {
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::new(&mem);
    let (client, local) = h.host_connect(5002);
    drop(client);
    let (rst, _) = h.recv_one(OP_RST);
    assert_eq!((rst.src_port, rst.dst_port), (local, 5002));
    assert_eq!(h.conns(), 0);
    // The guest's late RESPONSE is answered with an RST.
    h.send(ghdr(OP_RESPONSE, 5002, local), &[]);
    h.recv_one(OP_RST);
}

#[test]
fn guest_to_host_connect_with_data_both_ways() {
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::new(&mem);
    let listener = UnixListener::bind(format!("{}_6000", h.uds.display())).unwrap();

    h.send(ghdr(OP_REQUEST, 40000, 6000), &[]);
    let (resp, _) = h.recv_one(OP_RESPONSE);
    assert_eq!((resp.src_port, resp.dst_port), (6000, 40000));
    let (mut s, _) = listener.accept().unwrap();

    h.send(ghdr(OP_RW, 40000, 6000), b"hello");
    assert_eq!(read_n(&mut s, 5), b"hello");

    s.write_all(b"world").unwrap();
    let (hdr, data) = h.recv_one(OP_RW);
    assert_eq!(data, b"world");
    assert_eq!(hdr.fwd_cnt, 5, "our fwd_cnt counts forwarded guest bytes");

    // Forwarding a quarter of the buffer triggers a credit update.
    let len = BUF_ALLOC as usize / 8 + 100;
    let chunk = vec![7u8; len];
    h.send(ghdr(OP_RW, 40000, 6000), &chunk);
    assert!(h.recv().is_empty(), "no update for an eighth");
    h.send(ghdr(OP_RW, 40000, 6000), &chunk);
    assert_eq!(read_n(&mut s, 2 * len).len(), 2 * len);
    let (upd, _) = h.recv_one(OP_CREDIT_UPDATE);
    let forwarded = 5 + 2 * len as u32;
    assert_eq!(upd.fwd_cnt, forwarded);
    assert_eq!(upd.buf_alloc, BUF_ALLOC);

    // The guest asks for credit explicitly.
    h.send(ghdr(OP_CREDIT_REQUEST, 40000, 6000), &[]);
    let (upd, _) = h.recv_one(OP_CREDIT_UPDATE);
    assert_eq!(upd.fwd_cnt, forwarded);

    // Guest half-close reaches the host as EOF; the host can still answer.
    let mut shut = ghdr(OP_SHUTDOWN, 40000, 6000);
    shut.flags = SHUTDOWN_SEND;
    h.send(shut, &[]);
    assert_eof(&mut s);
    s.write_all(b"bye").unwrap();
    let (_, data) = h.recv_one(OP_RW);
    assert_eq!(data, b"bye");

    // Host close: the guest gets a full SHUTDOWN, then resets.
    drop(s);
    let (shut, _) = h.recv_one(OP_SHUTDOWN);
    assert_eq!(shut.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    h.send(ghdr(OP_RST, 40000, 6000), &[]);
    assert_eq!(h.conns(), 0);
}

#[test]
fn guest_connect_without_listener_is_reset() {
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::new(&mem);
    h.send(ghdr(OP_REQUEST, 40001, 6001), &[]);
    let (rst, _) = h.recv_one(OP_RST);
    assert_eq!((rst.src_port, rst.dst_port), (6001, 40001));
    assert_eq!(h.conns(), 0);
}

#[test]
fn host_data_respects_guest_credit() {
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::new(&mem);
    let listener = UnixListener::bind(format!("{}_7000", h.uds.display())).unwrap();
    let mut req = ghdr(OP_REQUEST, 40002, 7000);
    req.buf_alloc = 100;
    h.send(req, &[]);
    h.recv_one(OP_RESPONSE);
    let (mut s, _) = listener.accept().unwrap();

    s.write_all(&[1u8; 1000]).unwrap();
    let pkts = h.recv();
    let data: usize = pkts
        .iter()
        .filter(|(hdr, _)| hdr.op == OP_RW)
        .map(|(_, d)| d.len())
        .sum();
    assert_eq!(data, 100, "exactly the guest's credit: {pkts:?}");
    assert_eq!(pkts.last().unwrap().0.op, OP_CREDIT_REQUEST);
    assert!(h.recv().is_empty(), "nothing more without credit");

    let mut upd = ghdr(OP_CREDIT_UPDATE, 40002, 7000);
    upd.buf_alloc = 100;
    upd.fwd_cnt = 100;
    h.send(upd, &[]);
    let data: usize = h.recv().iter().map(|(_, d)| d.len()).sum();
    assert_eq!(data, 100);
}

#[test]
fn guest_overrunning_its_credit_is_reset() {
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::new(&mem);
    let listener = UnixListener::bind(format!("{}_7001", h.uds.display())).unwrap();
    h.send(ghdr(OP_REQUEST, 40003, 7001), &[]);
    h.recv_one(OP_RESPONSE);
    let (_s, _) = listener.accept().unwrap(); // never read
    let chunk = vec![9u8; MAX_PKT_DATA as usize];
    let mut reset = false;
    for _ in 0..64 {
        h.send(ghdr(OP_RW, 40003, 7001), &chunk);
        if h.recv().iter().any(|(hdr, _)| hdr.op == OP_RST) {
            reset = true;
            break;
        }
    }
    assert!(
        reset,
        "a guest sending beyond {BUF_ALLOC} buffered bytes is reset"
    );
    assert_eq!(h.conns(), 0);
}

#[test]
fn malformed_guest_packets() {
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::new(&mem);
    // Truncated header: dropped silently.
    h.send_raw(&ghdr(OP_REQUEST, 1, 2).to_bytes()[..20]);
    assert!(h.recv().is_empty());
    // Wrong source CID: dropped silently.
    let mut bad = ghdr(OP_REQUEST, 1, 2);
    bad.src_cid = 99;
    h.send_raw(&bad.to_bytes());
    assert!(h.recv().is_empty());
    // len beyond the buffer: dropped.
    let mut bad = ghdr(OP_RW, 1, 2);
    bad.len = 1000;
    h.send_raw(&bad.to_bytes());
    assert!(h.recv().is_empty());
    // Unknown op and datagram type: RST.
    h.send_raw(&ghdr(42, 1, 2).to_bytes());
    h.recv_one(OP_RST);
    let mut dgram = ghdr(OP_REQUEST, 1, 2);
    dgram.type_ = 3;
    h.send_raw(&dgram.to_bytes());
    h.recv_one(OP_RST);
    // Data for a connection that does not exist: RST; an RST: nothing.
    h.send(ghdr(OP_RW, 1, 2), b"x");
    h.recv_one(OP_RST);
    h.send(ghdr(OP_RST, 1, 2), &[]);
    assert!(h.recv().is_empty());
    // A chain outside guest memory.
    h.tx.push(&[(0x4000_0000, 44, false)]);
    h.evts[1].write(1).unwrap();
    h.pump();
    assert_eq!(h.tx.take_used().len(), 1);
    // An rx buffer too small for a header is returned empty.
    h.rx.push(&[(RX_AREA + 0x100_000, 10, true)]);
    h.send(ghdr(OP_RW, 1, 2), b"x");
    assert_eq!(h.conns(), 0);
}

#[test]
fn rx_waits_for_guest_buffers() {
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::new(&mem);
    // Use up every rx buffer with RSTs, without re-posting.
    for i in 0..RX_BUFS as u32 + 5 {
        h.send(ghdr(OP_RW, 100 + i, 2), b"x");
    }
    let used = h.rx.take_used();
    assert_eq!(used.len(), RX_BUFS as usize);
    for (head, _) in used {
        let addr = h.rx_bufs.remove(&head).unwrap();
        h.post_rx(addr);
    }
    // The queued RSTs go out once buffers come back.
    let pkts = h.recv();
    assert_eq!(pkts.len(), 5);
    assert!(pkts.iter().all(|(hdr, _)| hdr.op == OP_RST));
}

#[test]
fn reset_closes_connections_and_keeps_listening() {
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::new(&mem);
    let (mut client, local) = h.host_connect(5003);
    h.send(ghdr(OP_RESPONSE, 5003, local), &[]);
    assert_eq!(read_line(&mut client), format!("OK {local}"));
    h.dev.lock().unwrap().reset();
    h.pump();
    assert_eof(&mut client);
    assert_eq!(h.conns(), 0);
    assert!(!h.dev.lock().unwrap().is_active());
    // Connections made while inactive wait for the next activation.
    let mut c2 = UnixStream::connect(&h.uds).unwrap();
    c2.write_all(b"CONNECT 5004\n").unwrap();
    h.pump();
    assert_eq!(h.conns(), 1);
}

#[test]
fn new_validates_cid_and_socket_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.sock");
    let cfg = |cid| VsockConfig {
        guest_cid: cid,
        uds_path: path.clone(),
        listener: None,
        streams: VsockStreams::Raw,
    };
    for cid in [0, 1, 2, u64::from(u32::MAX), u64::MAX] {
        assert!(matches!(Vsock::new(cfg(cid)), Err(VsockError::Cid(_))));
    }
    // A stale socket file is replaced.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let v = Vsock::new(cfg(3)).unwrap();
    assert_eq!(v.device_type(), 19);
    let mut cid = [0u8; 8];
    v.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), 3);
    // A live one is not.
    let err = Vsock::new(cfg(4)).err().unwrap();
    assert!(matches!(err, VsockError::InUse(_)), "{err}");
    drop(v);
    assert!(!path.exists(), "socket file removed on drop");
    // A path in a missing directory fails clearly.
    let err = Vsock::new(VsockConfig {
        guest_cid: 3,
        uds_path: dir.path().join("no/such/dir.sock"),
        listener: None,
        streams: VsockStreams::Raw,
    })
    .err()
    .unwrap();
    assert!(err.to_string().starts_with("cannot listen on vsock socket"));
}

#[path = "limits_tests.rs"]
mod limits;

/// A frame of the agent protocol, as the agent sends one.
fn agent_frame(msg: &husk_protocol::Message) -> Vec<u8> {
    husk_protocol::encode(msg).unwrap()
}

#[test]
fn gated_guest_data_reaches_the_host_only_as_whole_valid_frames() {
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::with_streams(&mem, VsockStreams::AgentFrames);
    let listener = UnixListener::bind(format!("{}_1024", h.uds.display())).unwrap();
    h.send(ghdr(OP_REQUEST, 40010, 1024), &[]);
    let (resp, _) = h.recv_one(OP_RESPONSE);
    assert_eq!(
        resp.buf_alloc, GATED_BUF_ALLOC,
        "credit for one whole frame"
    );
    let (mut s, _) = listener.accept().unwrap();

    // Half a frame is held; the whole one passes, byte for byte.
    let frame = agent_frame(&husk_protocol::Message::Stdout(vec![5; 300]));
    h.send(ghdr(OP_RW, 40010, 1024), &frame[..100]);
    s.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        s.read(&mut byte).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "nothing of an incomplete frame reaches the host"
    );
    s.set_nonblocking(false).unwrap();
    h.send(ghdr(OP_RW, 40010, 1024), &frame[100..]);
    assert_eq!(read_n(&mut s, frame.len()), frame);

    // The credit given back counts the frame once it is out.
    h.send(ghdr(OP_CREDIT_REQUEST, 40010, 1024), &[]);
    let (upd, _) = h.recv_one(OP_CREDIT_UPDATE);
    assert_eq!(upd.fwd_cnt as usize, frame.len());

    // Bytes that are no frame of a known message reset the connection and
    // never reach the host: it sees the end of the stream, not the bytes.
    h.send(ghdr(OP_RW, 40010, 1024), &[1, 0, 0, 0, 0xff]);
    let (rst, _) = h.recv_one(OP_RST);
    assert_eq!((rst.src_port, rst.dst_port), (1024, 40010));
    assert_eq!(h.conns(), 0);
    assert_eof(&mut s);
}

#[test]
fn gated_host_initiated_connections_pass_frames_and_refuse_oversize_headers() {
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::with_streams(&mem, VsockStreams::AgentFrames);
    let mut client = UnixStream::connect(&h.uds).unwrap();
    client.write_all(b"CONNECT 1025\n").unwrap();
    let (req, _) = h.recv_one(OP_REQUEST);
    assert_eq!(req.buf_alloc, GATED_BUF_ALLOC);
    let local = req.src_port;
    h.send(ghdr(OP_RESPONSE, 1025, local), &[]);
    assert_eq!(read_line(&mut client), format!("OK {local}"));

    let frame = agent_frame(&husk_protocol::Message::Exited { code: 3 });
    h.send(ghdr(OP_RW, 1025, local), &frame);
    assert_eq!(read_n(&mut client, frame.len()), frame);

    // A header announcing more than a frame may hold: reset at once.
    let huge = ((husk_protocol::MAX_FRAME + 1) as u32).to_le_bytes();
    h.send(ghdr(OP_RW, 1025, local), &huge);
    h.recv_one(OP_RST);
    assert_eq!(h.conns(), 0);
    assert_eof(&mut client);
}
