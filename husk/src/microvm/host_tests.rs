//! The host side against a scripted agent on a real Unix socket (no VM):
//! normal runs, refusals, and hostile or broken agents.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::Duration;

use husk_protocol::{
    read_message, write_message, ErrorCode, Message, RunRequest, PROTOCOL_VERSION,
};

use super::*;

fn request() -> RunRequest {
    RunRequest {
        argv: vec!["true".into()],
        env: vec![],
        cwd: "/".into(),
        root: None,
        user: None,
        stdin: false,
    }
}

/// Runs `drive` against an agent thread that connects and runs `agent`.
fn drive_with<F>(agent: F, timeout: Duration) -> Ending
where
    F: FnOnce(UnixStream) + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.sock_1024");
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let agent = thread::spawn(move || agent(UnixStream::connect(&path).unwrap()));
    let signals = Signals::install().unwrap();
    let (vm_done, _vm_running) = UnixStream::pair().unwrap();
    let watch = Watch {
        signals: &signals,
        vm_done: vm_done.as_raw_fd(),
    };
    let ending = drive(&listener, &watch, &request(), None, timeout);
    drop(listener);
    agent.join().unwrap();
    ending
}

/// Agent side of the handshake: hello both ways, then the run request.
fn greet(conn: &mut UnixStream) {
    write_message(
        conn,
        &Message::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .unwrap();
    assert!(matches!(
        read_message(conn).unwrap(),
        Some(Message::Hello { .. })
    ));
    assert!(matches!(read_message(conn).unwrap(), Some(Message::Run(_))));
}

fn failure(ending: Ending) -> String {
    match ending {
        Ending::Failed(e) => format!("{e:#}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn exit_code_after_output_and_teardown() {
    let ending = drive_with(
        |mut conn| {
            greet(&mut conn);
            write_message(&mut conn, &Message::Stderr(b"".to_vec())).unwrap();
            write_message(&mut conn, &Message::Exited { code: 3 }).unwrap();
        },
        Duration::from_secs(10),
    );
    assert!(matches!(ending, Ending::Exit(3)), "{ending:?}");
    let ending = drive_with(
        |mut conn| {
            greet(&mut conn);
            write_message(&mut conn, &Message::Signaled { signal: 9 }).unwrap();
        },
        Duration::from_secs(10),
    );
    assert!(matches!(ending, Ending::Exit(137)), "{ending:?}");
}

#[test]
fn agent_errors_map_to_docker_codes() {
    for (code, want) in [
        (ErrorCode::NotFound, 127),
        (ErrorCode::PermissionDenied, 126),
        (ErrorCode::MountFailed, 125),
    ] {
        let ending = drive_with(
            move |mut conn| {
                greet(&mut conn);
                let detail = "exec: \"x\": executable file not found in $PATH".into();
                write_message(&mut conn, &Message::Error { code, detail }).unwrap();
            },
            Duration::from_secs(10),
        );
        assert!(matches!(ending, Ending::Exit(c) if c == want), "{ending:?}");
    }
}

#[test]
fn hostile_agents_fail_cleanly() {
    let oversize = drive_with(
        |mut conn| {
            greet(&mut conn);
            conn.write_all(&u32::MAX.to_le_bytes()).unwrap();
        },
        Duration::from_secs(10),
    );
    assert!(failure(oversize).contains("invalid message"));

    let garbage = drive_with(
        |mut conn| {
            greet(&mut conn);
            conn.write_all(&[3, 0, 0, 0, 250, 1, 2]).unwrap();
        },
        Duration::from_secs(10),
    );
    assert!(failure(garbage).contains("invalid message"));

    let wrong_version = drive_with(
        |mut conn| {
            // Read everything the host sends up front (hello and request)
            // before answering, so the host is not still writing when this
            // end closes.
            read_message(&mut conn).unwrap();
            read_message(&mut conn).unwrap();
            write_message(&mut conn, &Message::Hello { version: 99 }).unwrap();
        },
        Duration::from_secs(10),
    );
    assert!(failure(wrong_version).contains("protocol version 99"));

    let hung_up = drive_with(
        |mut conn| {
            greet(&mut conn);
            write_message(&mut conn, &Message::Stdout(Vec::new())).unwrap();
        },
        Duration::from_secs(10),
    );
    assert!(failure(hung_up).contains("closed the connection"));

    let silent = drive_with(
        |conn| {
            thread::sleep(Duration::from_millis(1500));
            drop(conn);
        },
        Duration::from_secs(1),
    );
    assert!(failure(silent).contains("did not answer"));
}

#[test]
fn no_agent_or_a_stopped_vm_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(dir.path().join("s")).unwrap();
    listener.set_nonblocking(true).unwrap();
    let signals = Signals::install().unwrap();
    let (vm_done, vm_running) = UnixStream::pair().unwrap();
    let watch = Watch {
        signals: &signals,
        vm_done: vm_done.as_raw_fd(),
    };
    let msg = failure(drive(
        &listener,
        &watch,
        &request(),
        None,
        Duration::from_millis(300),
    ));
    assert_eq!(msg, "guest never reached the agent within 0 s");
    drop(vm_running);
    let msg = failure(drive(
        &listener,
        &watch,
        &request(),
        None,
        Duration::from_secs(10),
    ));
    assert!(
        msg.contains("VM stopped before the agent connected"),
        "{msg}"
    );
}
