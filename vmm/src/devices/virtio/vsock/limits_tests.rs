//! Tests of the limits a hostile guest runs into: the per-connection
//! buffer, the per-port connection cap and the accept() back-off.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::time::{Duration, Instant};

use super::super::muxer::MAX_CONNECTIONS_PER_PORT;
use super::*;

/// Guest packets (header only) sent in one tx kick; fits the 16 tx slots
/// and the 32 rx buffers the answers need.
const BATCH: usize = 16;
/// Set in the environment of the child process of the EMFILE test.
const EMFILE_CHILD_ENV: &str = "HUSK_VSOCK_EMFILE_CHILD";

/// Sends header-only packets in one tx kick.
fn send_batch(h: &mut Harness, hdrs: &[Header]) {
    for hdr in hdrs {
        let addr = TX_AREA + (h.tx_slot % 16) * TX_SLOT;
        h.tx_slot += 1;
        write_mem(h.mem, addr, &hdr.to_bytes());
        h.tx.push(&[(addr, HDR_SIZE as u32, false)]);
    }
    h.evts[1].write(1).unwrap();
    h.pump();
    assert_eq!(h.tx.take_used().len(), hdrs.len());
}

/// Reads what the peer of a closed connection can still read.
fn read_available(s: &mut UnixStream) -> usize {
    s.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return total,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return total,
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn guest_data_beyond_the_64k_buffer_is_reset_not_buffered() {
    assert_eq!(BUF_ALLOC, 64 * 1024);
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::new(&mem);
    let listener = UnixListener::bind(format!("{}_7100", h.uds.display())).unwrap();
    h.send(ghdr(OP_REQUEST, 41000, 7100), &[]);
    h.recv_one(OP_RESPONSE);
    let (mut s, _) = listener.accept().unwrap(); // not read until the end
    let chunk = vec![5u8; 16 * 1024];
    let mut accepted = 0;
    let mut reset = false;
    for _ in 0..200 {
        h.send(ghdr(OP_RW, 41000, 7100), &chunk);
        if h.recv().iter().any(|(hdr, _)| hdr.op == OP_RST) {
            reset = true;
            break;
        }
        accepted += chunk.len();
    }
    assert!(reset, "a guest ignoring its credit is reset");
    assert_eq!(h.conns(), 0);
    // What the socket took reached the host; the rest was the buffer.
    let buffered = accepted - read_available(&mut s);
    assert!(
        buffered <= 64 * 1024,
        "{buffered} bytes buffered for one connection"
    );
}

#[test]
fn guest_connections_to_one_host_port_are_capped() {
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::new(&mem);
    let listener = UnixListener::bind(format!("{}_7200", h.uds.display())).unwrap();
    let mut streams = Vec::new();
    for batch in 0..MAX_CONNECTIONS_PER_PORT / BATCH {
        let first = 42000 + (batch * BATCH) as u32;
        let reqs: Vec<Header> = (0..BATCH as u32)
            .map(|i| ghdr(OP_REQUEST, first + i, 7200))
            .collect();
        send_batch(&mut h, &reqs);
        let answers = h.recv();
        assert_eq!(answers.len(), BATCH);
        assert!(answers.iter().all(|(hdr, _)| hdr.op == OP_RESPONSE));
        for _ in 0..BATCH {
            streams.push(listener.accept().unwrap().0);
        }
    }
    assert_eq!(h.conns(), MAX_CONNECTIONS_PER_PORT);
    // One more to the same host port is refused...
    h.send(ghdr(OP_REQUEST, 41999, 7200), &[]);
    let (rst, _) = h.recv_one(OP_RST);
    assert_eq!((rst.src_port, rst.dst_port), (7200, 41999));
    assert_eq!(h.conns(), MAX_CONNECTIONS_PER_PORT);
    // ...but another port still gets connections.
    let other = UnixListener::bind(format!("{}_7201", h.uds.display())).unwrap();
    h.send(ghdr(OP_REQUEST, 41999, 7201), &[]);
    h.recv_one(OP_RESPONSE);
    assert!(other.accept().is_ok());
}

#[test]
fn host_connections_to_one_guest_port_are_capped() {
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::new(&mem);
    let mut clients = Vec::new();
    for _ in 0..MAX_CONNECTIONS_PER_PORT / BATCH {
        for _ in 0..BATCH {
            let mut c = UnixStream::connect(&h.uds).unwrap();
            c.write_all(b"CONNECT 5100\n").unwrap();
            clients.push(c);
        }
        let reqs = h.recv();
        assert_eq!(reqs.len(), BATCH);
        assert!(reqs.iter().all(|(hdr, _)| hdr.op == OP_REQUEST));
    }
    assert_eq!(h.conns(), MAX_CONNECTIONS_PER_PORT);
    // One more client for the same guest port is closed, the guest never
    // hears of it...
    let mut extra = UnixStream::connect(&h.uds).unwrap();
    extra.write_all(b"CONNECT 5100\n").unwrap();
    assert!(h.recv().is_empty());
    assert_eof(&mut extra);
    assert_eq!(h.conns(), MAX_CONNECTIONS_PER_PORT);
    // ...but another guest port is still reachable.
    h.host_connect(5101);
}

#[test]
fn failing_accept_backs_off_instead_of_spinning() {
    let exe = std::env::current_exe().unwrap();
    let module = module_path!().split_once("::").unwrap().1;
    // Few fds, in a child process: the limit must not hit other tests.
    let out = Command::new("prlimit")
        .arg("--nofile=128:128")
        .arg(exe)
        .args(["--exact", "--ignored", "--test-threads=1"])
        .arg(format!("{module}::emfile_child"))
        .env(EMFILE_CHILD_ENV, "1")
        .output()
        .expect("running the test binary under prlimit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run by [`failing_accept_backs_off_instead_of_spinning`] with few fds.
#[test]
#[ignore = "run in a child process with a low fd limit"]
fn emfile_child() {
    if std::env::var_os(EMFILE_CHILD_ENV).is_none() {
        return;
    }
    let mem = guest_memory(0x100_0000);
    let mut h = Harness::new(&mem);
    // A client waits in the listener's backlog; then every fd is used.
    let mut client = UnixStream::connect(&h.uds).unwrap();
    client.write_all(b"CONNECT 5200\n").unwrap();
    let null = File::open("/dev/null").unwrap();
    let mut hog = Vec::new();
    loop {
        match null.try_clone() {
            Ok(f) => hog.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("dup: {e}"),
        }
        assert!(hog.len() < 1024, "the fd limit is not in force");
    }
    // The listener stays readable while accept() fails: the event loop
    // must nevertheless go idle.
    let busy = (0..50)
        .take_while(|_| h.em.run_with_timeout(20).unwrap() > 0)
        .count();
    assert!(busy < 50, "the event loop spins on a failing accept()");
    assert!(h.dev.lock().unwrap().muxer.listener_paused());
    // With fds free again the client is served after the back-off.
    drop(hog);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut reqs = Vec::new();
    while reqs.is_empty() && Instant::now() < deadline {
        h.em.run_with_timeout(50).unwrap();
        reqs = h.recv();
    }
    assert_eq!(reqs.len(), 1, "client served after the back-off: {reqs:?}");
    assert_eq!(reqs[0].0.op, OP_REQUEST);
    assert!(!h.dev.lock().unwrap().muxer.listener_paused());
    drop(client);
}
