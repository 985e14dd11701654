//! The agent connection against a scripted fake agent on a socket pair (no
//! VM): normal sessions, refusals, and hostile or broken agents.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::{Duration, Instant};

use husk_protocol::{read_message, write_message, ErrorCode, Message, RootFs, PROTOCOL_VERSION};

use super::*;

fn spec() -> ContainerSpec {
    ContainerSpec {
        root: RootFs::Layers {
            layers: vec!["layer0".into()],
            writable: "rw".into(),
        },
        shares: Vec::new(),
        volumes: vec![],
        hostname: "h".into(),
        hosts: vec![],
        resolv_conf: None,
        network: None,
        files: Vec::new(),
        tmpfs: Vec::new(),
        sysctls: Vec::new(),
        read_only_root: false,
    }
}

fn request() -> ExecRequest {
    ExecRequest {
        argv: vec!["true".into()],
        env: vec![],
        cwd: "/".into(),
        user: String::new(),
        tty: false,
        stdin: false,
        size: None,
        security: Default::default(),
    }
}

/// A connection whose agent end runs `agent` on a thread.
fn with_agent<T: Send + 'static>(
    agent: impl FnOnce(UnixStream) -> T + Send + 'static,
) -> (AgentConnection, thread::JoinHandle<T>) {
    let (host, guest) = UnixStream::pair().unwrap();
    // The host's Hello is sent (buffered) before the agent may hang up.
    let conn = AgentConnection::new(host).unwrap();
    (conn, thread::spawn(move || agent(guest)))
}

fn send(conn: &mut UnixStream, msg: Message) {
    write_message(conn, &msg).unwrap();
}

fn hello() -> Message {
    Message::Hello {
        version: PROTOCOL_VERSION,
    }
}

fn soon() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(10))
}

#[test]
fn a_whole_session_create_start_output_exit_teardown() {
    let (mut conn, agent) = with_agent(|mut c| {
        send(&mut c, hello());
        let got: Vec<Message> = (0..2)
            .map(|_| read_message(&mut c).unwrap().unwrap())
            .collect();
        send(&mut c, Message::Ok);
        let exec = read_message(&mut c).unwrap().unwrap();
        send(&mut c, Message::Started { pid: 7 });
        send(&mut c, Message::Stdout(b"out".to_vec()));
        send(&mut c, Message::Stderr(b"err".to_vec()));
        send(&mut c, Message::Exited { code: 3 });
        (got, exec)
    });
    let w = Watch::none();
    conn.create_container(spec(), &w, soon()).unwrap();
    assert_eq!(conn.start(request(), &w, soon()).unwrap(), 7);
    let mut events = Vec::new();
    loop {
        let ev = conn.next_event(&w, soon()).unwrap();
        let end = ev.exit_code();
        events.push(ev);
        if end.is_some() {
            break;
        }
    }
    assert_eq!(
        events,
        [
            Event::Stdout(b"out".to_vec()),
            Event::Stderr(b"err".to_vec()),
            Event::Exited(3)
        ]
    );
    // The agent thread ends: its end of the connection closes.
    let (got, exec) = agent.join().unwrap();
    conn.wait_closed(&w, Instant::now() + Duration::from_secs(10))
        .unwrap();
    assert_eq!(got, [hello(), Message::CreateContainer(spec())]);
    assert_eq!(exec, Message::Exec(request()));
}

#[test]
fn signals_and_refusals_map_to_docker_codes() {
    assert_eq!(Event::Signaled(9).exit_code(), Some(137));
    assert_eq!(Event::Signaled(1000).exit_code(), Some(255));
    assert_eq!(Event::Stdout(vec![]).exit_code(), None);
    for (code, want) in [
        (ErrorCode::NotFound, 127),
        (ErrorCode::PermissionDenied, 126),
        (ErrorCode::MountFailed, 125),
    ] {
        let (mut conn, agent) = with_agent(move |mut c| {
            send(&mut c, hello());
            let _ = read_message(&mut c);
            let _ = read_message(&mut c);
            let detail = "exec: \"x\": executable file not found in $PATH".into();
            send(&mut c, Message::Error { code, detail });
        });
        match conn.start(request(), &Watch::none(), soon()) {
            Err(AgentError::Refused { code, detail }) => {
                assert_eq!(code.exit_code(), want);
                assert!(detail.contains("not found"));
            }
            other => panic!("{:?}", other.map_err(|e| e.to_string())),
        }
        agent.join().unwrap();
    }
    let (mut conn, agent) = with_agent(|mut c| {
        send(&mut c, hello());
        let _ = read_message(&mut c);
        let _ = read_message(&mut c);
        let detail = "no layer0".into();
        send(
            &mut c,
            Message::Error {
                code: ErrorCode::MountFailed,
                detail,
            },
        );
    });
    let err = conn
        .create_container(spec(), &Watch::none(), soon())
        .unwrap_err();
    assert!(
        matches!(
            err,
            AgentError::Refused {
                code: ErrorCode::MountFailed,
                ..
            }
        ),
        "{err}"
    );
    agent.join().unwrap();
}

/// What the host's next read gets from an agent that runs `agent`.
fn first_error(agent: impl FnOnce(UnixStream) + Send + 'static, wait: Duration) -> AgentError {
    let (mut conn, agent) = with_agent(agent);
    let err = conn
        .next(&Watch::none(), Some(Instant::now() + wait))
        .unwrap_err();
    agent.join().unwrap();
    err
}

#[test]
fn hostile_or_broken_agents_fail_cleanly() {
    let long = Duration::from_secs(10);
    let oversize = first_error(
        |mut c| {
            send(&mut c, hello());
            c.write_all(&u32::MAX.to_le_bytes()).unwrap();
        },
        long,
    );
    assert!(matches!(oversize, AgentError::Decode(_)), "{oversize}");
    let garbage = first_error(
        |mut c| {
            send(&mut c, hello());
            c.write_all(&[3, 0, 0, 0, 250, 1, 2]).unwrap();
        },
        long,
    );
    assert!(garbage.to_string().contains("invalid message"), "{garbage}");
    let version = first_error(|mut c| send(&mut c, Message::Hello { version: 99 }), long);
    assert!(
        version.to_string().contains("protocol version 99"),
        "{version}"
    );
    let rude = first_error(|mut c| send(&mut c, Message::Ok), long);
    assert!(matches!(rude, AgentError::NoHello(_)), "{rude}");
    let hung_up = first_error(|mut c| send(&mut c, hello()), long);
    assert!(matches!(hung_up, AgentError::Closed), "{hung_up}");
    let (host, _silent_agent) = UnixStream::pair().unwrap();
    let mut conn = AgentConnection::new(host).unwrap();
    let silent = conn
        .next(
            &Watch::none(),
            Some(Instant::now() + Duration::from_millis(200)),
        )
        .unwrap_err();
    assert!(matches!(silent, AgentError::Timeout), "{silent}");
}

#[test]
fn the_vm_end_is_reported_after_pending_data() {
    let (vm_done, vm_running) = UnixStream::pair().unwrap();
    let watch = Watch {
        signals: None,
        vm_done: Some(vm_done.as_fd()),
    };
    let (mut conn, agent) = with_agent(|mut c| {
        send(&mut c, hello());
        send(&mut c, Message::Stdout(b"last words".to_vec()));
        c
    });
    let _guest = agent.join().unwrap();
    drop(vm_running);
    assert_eq!(
        conn.next_event(&watch, soon()).unwrap(),
        Event::Stdout(b"last words".to_vec())
    );
    let err = conn.next(&watch, soon()).unwrap_err();
    assert!(matches!(err, AgentError::VmEnded), "{err}");
}

#[test]
fn try_next_never_blocks_and_joins_split_frames() {
    let (host, mut guest) = UnixStream::pair().unwrap();
    let mut conn = AgentConnection::new(host).unwrap();
    assert!(conn.try_next().unwrap().is_none());
    send(&mut guest, hello());
    let frame = husk_protocol::encode(&Message::Exited { code: 5 }).unwrap();
    guest.write_all(&frame[..3]).unwrap();
    assert!(conn.try_next().unwrap().is_none());
    guest.write_all(&frame[3..]).unwrap();
    assert_eq!(conn.try_next().unwrap(), Some(Message::Exited { code: 5 }));
    assert!(conn.try_next().unwrap().is_none());
    drop(guest);
    assert!(matches!(conn.try_next(), Err(AgentError::Closed)));
}

#[test]
fn exec_connections_go_through_the_vmm_socket() {
    let dir = tempfile::tempdir().unwrap();
    let vsock = dir.path().join("v.sock");
    let listener = UnixListener::bind(&vsock).unwrap();
    let vmm = thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut line = [0u8; 13];
        std::io::Read::read_exact(&mut c, &mut line).unwrap();
        c.write_all(b"OK 1073741824\n").unwrap();
        send(&mut c, hello());
        assert_eq!(read_message(&mut c).unwrap(), Some(hello()));
        let kill = read_message(&mut c).unwrap();
        send(&mut c, Message::Ok);
        (String::from_utf8_lossy(&line).into_owned(), kill)
    });
    let mut conn = AgentConnection::connect_exec(&vsock, Duration::from_secs(10)).unwrap();
    conn.kill_init(15, Instant::now() + Duration::from_secs(10))
        .unwrap();
    let (line, kill) = vmm.join().unwrap();
    assert_eq!(line, "CONNECT 1025\n");
    assert_eq!(kill, Some(Message::KillInit { signal: 15 }));
}

/// What a fake agent that answers a `Seed` with `reply` received.
fn seed_against(reply: Message) -> (Result<(), AgentError>, Message) {
    let (mut conn, agent) = with_agent(move |mut c| {
        send(&mut c, hello());
        assert_eq!(read_message(&mut c).unwrap(), Some(hello()));
        let seed = read_message(&mut c).unwrap().unwrap();
        send(&mut c, reply);
        seed
    });
    let result = conn.seed();
    (result, agent.join().unwrap())
}

#[test]
fn seeds_carry_fresh_entropy_and_the_wall_clock() {
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    };
    let before = now();
    let (result, first) = seed_against(Message::Ok);
    let after = now();
    result.unwrap();
    let (result, second) = seed_against(Message::Ok);
    result.unwrap();
    let (
        Message::Seed {
            entropy: a,
            unix_time_ns,
        },
        Message::Seed { entropy: b, .. },
    ) = (first, second)
    else {
        panic!("expected two seeds");
    };
    assert_eq!(a.len(), SEED_BYTES);
    assert_eq!(b.len(), SEED_BYTES);
    assert_ne!(a, b, "fresh bytes every time");
    assert!((before..=after).contains(&unix_time_ns));
}

#[test]
fn seed_refusals_and_odd_answers_are_errors() {
    let detail = "Seed carries 3 bytes".to_string();
    let (result, _) = seed_against(Message::Error {
        code: ErrorCode::BadRequest,
        detail,
    });
    match result {
        Err(AgentError::Refused {
            code: ErrorCode::BadRequest,
            detail,
        }) => assert!(detail.contains("3 bytes")),
        other => panic!("{:?}", other.map_err(|e| e.to_string())),
    }
    let (result, _) = seed_against(Message::Started { pid: 1 });
    assert!(matches!(result, Err(AgentError::Unexpected(_))));
}

#[test]
fn handshakes_and_drains_what_one_read_brought() {
    let (host, mut guest) = UnixStream::pair().unwrap();
    send(&mut guest, hello());
    send(&mut guest, Message::Started { pid: 3 });
    send(&mut guest, Message::Stdout(b"a".to_vec()));
    let mut conn = AgentConnection::handshake(host, Duration::from_secs(5)).unwrap();
    assert_eq!(read_message(&mut guest).unwrap(), Some(hello()));
    conn.set_write_timeout(None).unwrap();
    // What came with the peer's Hello is buffered; nothing more is read.
    assert_eq!(
        conn.next_buffered().unwrap(),
        Some(Message::Started { pid: 3 })
    );
    assert_eq!(
        conn.next_buffered().unwrap(),
        Some(Message::Stdout(b"a".to_vec()))
    );
    send(&mut guest, Message::Started { pid: 4 });
    assert_eq!(conn.next_buffered().unwrap(), None);
    assert_eq!(conn.started(&Watch::none(), soon()).unwrap(), 4);
    drop(guest);
    assert!(matches!(conn.try_next(), Err(AgentError::Closed)));
    assert!(matches!(conn.next_buffered(), Err(AgentError::Closed)));
    // A peer that never greets.
    let (host, _guest) = UnixStream::pair().unwrap();
    let err = AgentConnection::handshake(host, Duration::from_millis(50)).err();
    assert!(matches!(err, Some(AgentError::Timeout)), "{err:?}");
}

/// What `receive_layer` (limit `max`) makes of an agent sending `msgs`
/// after its Hello, and what reached the sink.
fn receive(msgs: Vec<Message>, max: u64) -> (Result<u64, AgentError>, Vec<u8>) {
    let (mut conn, agent) = with_agent(move |mut c| {
        send(&mut c, hello());
        for m in msgs {
            send(&mut c, m);
        }
        // Hangs up: what it sent stays readable, then the host sees EOF.
    });
    let mut sink = Vec::new();
    let res = conn.receive_layer(&mut sink, max, &Watch::none(), soon());
    agent.join().unwrap();
    (res, sink)
}

#[test]
fn layer_streams_are_bounded_and_checked() {
    let chunk = |n: usize| Message::LayerChunk(vec![1; n]);
    let (ok, sink) = receive(
        vec![chunk(10), chunk(5), Message::LayerEnd { bytes: 15 }],
        15,
    );
    assert_eq!(ok.unwrap(), 15);
    assert_eq!(sink.len(), 15);
    // One byte over the limit: refused, and nothing past the limit written.
    let (big, sink) = receive(
        vec![chunk(10), chunk(6), Message::LayerEnd { bytes: 16 }],
        15,
    );
    let err = big.unwrap_err();
    assert!(
        matches!(err, AgentError::LayerTooLarge { max: 15 }),
        "{err}"
    );
    assert!(sink.len() <= 15, "{}", sink.len());
    let (lie, _) = receive(vec![chunk(10), Message::LayerEnd { bytes: 3 }], 100);
    let err = lie.unwrap_err();
    assert!(
        err.to_string()
            .contains("3-byte layer tar after sending 10"),
        "{err}"
    );
    let (failed, _) = receive(
        vec![Message::Error {
            code: ErrorCode::Internal,
            detail: "writing the layer tar: boom".into(),
        }],
        100,
    );
    assert!(failed.unwrap_err().to_string().contains("boom"));
    let (odd, _) = receive(vec![Message::Started { pid: 1 }], 100);
    assert!(matches!(odd.unwrap_err(), AgentError::Unexpected(_)));
    // The agent hanging up mid-stream is not a layer.
    let (cut, _) = receive(vec![chunk(10)], 100);
    assert!(matches!(cut.unwrap_err(), AgentError::Closed));
}

/// A container that never ran its init process (a maintenance VM): the
/// host's half-close is the agent's end of input; the agent closes its end
/// after its teardown, which `wait_closed` sees.
#[test]
fn finish_sending_half_closes_and_waits_for_the_teardown() {
    let (mut conn, agent) = with_agent(|mut c| {
        send(&mut c, hello());
        assert_eq!(read_message(&mut c).unwrap(), Some(hello()));
        let create = read_message(&mut c).unwrap().unwrap();
        send(&mut c, Message::Ok);
        // The host's end of input, then the teardown's close.
        let after = read_message(&mut c).unwrap();
        (create, after)
    });
    let w = Watch::none();
    conn.create_container(spec(), &w, soon()).unwrap();
    conn.finish_sending().unwrap();
    conn.wait_closed(&w, Instant::now() + Duration::from_secs(10))
        .unwrap();
    let (create, after) = agent.join().unwrap();
    assert!(matches!(create, Message::CreateContainer(_)), "{create:?}");
    assert_eq!(after, None, "nothing after the half-close");
}
