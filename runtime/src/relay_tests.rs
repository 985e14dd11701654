//! The client relay against a scripted peer on a real socket pair, with
//! real pipes for the local stdio.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use husk_protocol::{read_message, write_message, PROTOCOL_VERSION};

use super::*;

/// A session with a scripted peer, the greetings exchanged.
fn session() -> (AgentConnection, UnixStream) {
    let (client, mut peer) = UnixStream::pair().unwrap();
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
    };
    write_message(&mut peer, &hello).unwrap();
    let conn = AgentConnection::handshake(client, Duration::from_secs(5)).unwrap();
    assert_eq!(read_message(&mut peer).unwrap(), Some(hello));
    (conn, peer)
}

fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
}

fn read_all(fd: OwnedFd) -> String {
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s).unwrap();
    s
}

#[test]
fn output_stdin_and_exit() {
    let (mut client, mut peer) = session();
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let (in_r, in_w) = pipe();
    let peer_thread = thread::spawn(move || {
        write_message(&mut peer, &Message::Started { pid: 7 }).unwrap();
        write_message(&mut peer, &Message::Stdout(b"out\n".to_vec())).unwrap();
        write_message(&mut peer, &Message::Stderr(b"err\n".to_vec())).unwrap();
        let mut got = Vec::new();
        loop {
            match read_message(&mut peer).unwrap() {
                Some(Message::Stdin(b)) => got.extend(b),
                Some(Message::StdinEof) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        write_message(&mut peer, &Message::Exited { code: 3 }).unwrap();
        got
    });
    let mut w = std::fs::File::from(in_w);
    w.write_all(b"typed").unwrap();
    drop(w);
    let io = ClientIo {
        stdin: Some(in_r.as_fd()),
        stdout: out_w.as_fd(),
        stderr: err_w.as_fd(),
        signals: None,
        tty: None,
        forward_signals: false,
    };
    let outcome = relay(&mut client, &io).unwrap();
    assert_eq!(outcome, Outcome::Exited(3));
    assert_eq!(outcome.exit_code(), Some(3));
    assert_eq!(peer_thread.join().unwrap(), b"typed");
    drop((out_w, err_w));
    assert_eq!(read_all(out_r), "out\n");
    assert_eq!(read_all(err_r), "err\n");
}

#[test]
fn errors_closed_and_garbage() {
    // An error, then the peer goes away: the error is the outcome.
    let (mut client, mut peer) = session();
    let (err_r, err_w) = pipe();
    write_message(
        &mut peer,
        &Message::Error {
            code: ErrorCode::NotFound,
            detail: "nosuch: not found".into(),
        },
    )
    .unwrap();
    drop(peer);
    let io = ClientIo {
        stdin: None,
        stdout: err_w.as_fd(),
        stderr: err_w.as_fd(),
        signals: None,
        tty: None,
        forward_signals: false,
    };
    let outcome = relay(&mut client, &io).unwrap();
    assert_eq!(outcome.exit_code(), Some(127));
    // Nothing at all: closed.
    let (mut client, peer) = session();
    drop(peer);
    assert_eq!(relay(&mut client, &io).unwrap(), Outcome::Closed);
    // A hostile frame header.
    let (mut client, mut peer) = session();
    peer.write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert!(matches!(
        relay(&mut client, &io),
        Err(RelayError::Agent(AgentError::Decode(_)))
    ));
    // Only the error was written.
    drop(err_w);
    assert_eq!(read_all(err_r), "husk: nosuch: not found\n");
    assert_eq!(Outcome::Signaled(9).exit_code(), Some(137));
}

#[test]
fn control_messages_reach_the_peer_and_end_input_once() {
    let (mut client, mut peer) = session();
    let (_out_r, out_w) = pipe();
    let (in_r, in_w) = pipe();
    let control = std::sync::Arc::new(Control::new().unwrap());
    let remote = control.clone();
    let peer_thread = thread::spawn(move || {
        write_message(&mut peer, &Message::Started { pid: 1 }).unwrap();
        remote.send(Message::Resize {
            rows: 30,
            cols: 100,
        });
        remote.send(Message::Signal(15));
        remote.send(Message::StdinEof);
        remote.send(Message::StdinEof);
        let mut got = Vec::new();
        while got.len() < 3 {
            got.push(read_message(&mut peer).unwrap().unwrap());
        }
        write_message(&mut peer, &Message::Signaled { signal: 15 }).unwrap();
        got
    });
    let io = ClientIo {
        stdin: Some(in_r.as_fd()),
        stdout: out_w.as_fd(),
        stderr: out_w.as_fd(),
        signals: None,
        tty: None,
        forward_signals: false,
    };
    let outcome = relay_with(&mut client, &io, Some(&control)).unwrap();
    assert_eq!(outcome.exit_code(), Some(143));
    let got = peer_thread.join().unwrap();
    assert_eq!(
        got,
        vec![
            Message::Resize {
                rows: 30,
                cols: 100
            },
            Message::Signal(15),
            Message::StdinEof
        ]
    );
    drop(in_w);
}

/// A pipe whose write end does not block.
fn nonblocking_pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = pipe();
    let flags = rustix::fs::fcntl_getfl(&w).unwrap();
    rustix::fs::fcntl_setfl(&w, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
    (r, w)
}

#[test]
fn a_reader_that_never_reads_is_given_up_on() {
    let (_reader, w) = nonblocking_pipe();
    // More than a pipe holds, to a reader that keeps the pipe open.
    let data = vec![b'x'; 1 << 20];
    let mut broken = false;
    let gave_up = write_out_within(
        w.as_fd(),
        &data,
        &mut broken,
        Some(Duration::from_millis(200)),
    );
    assert!(gave_up && broken);
    // Discarded from then on, at once.
    assert!(!write_out_within(
        w.as_fd(),
        b"more",
        &mut broken,
        Some(Duration::from_secs(60))
    ));
}

#[test]
fn a_slow_reader_gets_everything() {
    let (r, w) = nonblocking_pipe();
    let reader = thread::spawn(move || {
        let mut f = std::fs::File::from(r);
        let (mut got, mut buf) = (0, vec![0u8; 64 * 1024]);
        loop {
            thread::sleep(Duration::from_millis(20));
            match f.read(&mut buf).unwrap() {
                0 => return got,
                n => got += n,
            }
        }
    });
    let data = vec![b'y'; 1 << 20];
    let mut broken = false;
    let gave_up = write_out_within(w.as_fd(), &data, &mut broken, Some(Duration::from_secs(10)));
    drop(w);
    assert!(!gave_up && !broken);
    assert_eq!(reader.join().unwrap(), data.len());
}
