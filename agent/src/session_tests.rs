//! The agent's session logic against a real host-side peer over a Unix
//! socket pair, running real commands (no VM, no root).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use husk_protocol::{read_message, write_message, ErrorCode, Message, RootDisk, RunRequest};

use super::*;
use crate::system::{run_agent, AgentError, SysError, System};

/// A test environment: the connection is one end of a socket pair, no
/// mounts, and only the agent's own child is reaped.
struct FakeSystem {
    conn: Option<UnixStream>,
    shut_down: Arc<AtomicBool>,
}

impl System for FakeSystem {
    type Conn = UnixStream;

    fn mount_early(&mut self) -> Result<(), SysError> {
        Ok(())
    }

    fn connect(&mut self) -> Result<UnixStream, SysError> {
        Ok(self.conn.take().expect("connect called once"))
    }

    fn mount_root(&mut self, disk: &RootDisk) -> Result<PathBuf, SysError> {
        Err(SysError::DiskNotFound(disk.serial.clone()))
    }

    fn create_container(
        &mut self,
        _spec: &husk_protocol::ContainerSpec,
    ) -> Result<crate::container::ContainerRoot, SysError> {
        Err(SysError::DiskNotFound("layer0".into()))
    }

    fn listen_exec(&mut self) -> Result<std::os::fd::OwnedFd, SysError> {
        Err(SysError::Invalid("no listener in this test".into()))
    }

    fn kill_all(&mut self) {}

    fn reaps_orphans(&self) -> bool {
        false
    }

    fn shutdown(&mut self) {
        self.shut_down.store(true, Ordering::SeqCst);
    }
}

fn request(argv: &[&str]) -> RunRequest {
    RunRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/usr/bin:/bin".into()],
        cwd: "/".into(),
        root: None,
        user: None,
        stdin: false,
    }
}

/// Everything the host saw, with the arrival time of the first stdout.
#[derive(Default, Debug)]
struct Seen {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    end: Option<Message>,
    first_stdout_at: Option<Duration>,
    closed_after_shutdown: bool,
}

/// Runs the agent against a host thread that performs `host`.
fn with_host<F>(host: F) -> (Result<Outcome, AgentError>, Seen, bool)
where
    F: FnOnce(&mut UnixStream) -> Seen + Send + 'static,
{
    let (agent_end, mut host_end) = UnixStream::pair().unwrap();
    host_end
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let shut_down = Arc::new(AtomicBool::new(false));
    let flag = shut_down.clone();
    let host = thread::spawn(move || {
        let mut seen = host(&mut host_end);
        // The agent closes the connection only after its teardown.
        while let Ok(Some(_)) = read_message(&mut host_end) {}
        seen.closed_after_shutdown = flag.load(Ordering::SeqCst);
        seen
    });
    let mut sys = FakeSystem {
        conn: Some(agent_end),
        shut_down: shut_down.clone(),
    };
    let outcome = run_agent(&mut sys);
    let seen = host.join().unwrap();
    (outcome, seen, shut_down.load(Ordering::SeqCst))
}

fn handshake(conn: &mut UnixStream) {
    match read_message(conn).unwrap() {
        Some(Message::Hello { version }) => assert_eq!(version, PROTOCOL_VERSION),
        other => panic!("expected Hello, got {other:?}"),
    }
    write_message(
        conn,
        &Message::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .unwrap();
}

/// Reads until an exit or error message (or EOF).
fn collect(conn: &mut UnixStream) -> Seen {
    let start = Instant::now();
    let mut seen = Seen::default();
    while let Some(msg) = read_message(conn).unwrap() {
        match msg {
            Message::Stdout(b) => {
                seen.first_stdout_at.get_or_insert(start.elapsed());
                seen.stdout.extend(b)
            }
            Message::Stderr(b) => seen.stderr.extend(b),
            end => {
                seen.end = Some(end);
                break;
            }
        }
    }
    seen
}

fn run_simple(req: RunRequest) -> (Result<Outcome, AgentError>, Seen, bool) {
    with_host(move |conn| {
        handshake(conn);
        write_message(conn, &Message::Run(req)).unwrap();
        collect(conn)
    })
}

#[test]
fn streams_both_outputs_and_the_exit_code() {
    let (outcome, seen, shut_down) =
        run_simple(request(&["sh", "-c", "echo out; echo err >&2; exit 3"]));
    assert_eq!(seen.stdout, b"out\n");
    assert_eq!(seen.stderr, b"err\n");
    assert_eq!(seen.end, Some(Message::Exited { code: 3 }));
    assert_eq!(
        outcome.unwrap(),
        Outcome::Finished(Message::Exited { code: 3 })
    );
    assert!(shut_down, "shutdown runs after the session");
    assert!(
        seen.closed_after_shutdown,
        "connection closed after shutdown"
    );
}

#[test]
fn missing_command_is_a_typed_error() {
    let (outcome, seen, _) = run_simple(request(&["husk-no-such-command"]));
    match seen.end {
        Some(Message::Error { code, detail }) => {
            assert_eq!(code, ErrorCode::NotFound);
            assert!(detail.contains("husk-no-such-command"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(outcome.unwrap(), Outcome::Refused(ErrorCode::NotFound));
}

#[test]
fn output_is_streamed_not_buffered() {
    let (_, seen, _) = run_simple(request(&["sh", "-c", "echo first; sleep 2; echo second"]));
    assert_eq!(seen.stdout, b"first\nsecond\n");
    let first = seen.first_stdout_at.unwrap();
    assert!(
        first < Duration::from_millis(1500),
        "first chunk after {first:?}"
    );
}

#[test]
fn killed_commands_report_the_signal() {
    let (_, seen, _) = run_simple(request(&["sh", "-c", "kill -9 $$"]));
    assert_eq!(seen.end, Some(Message::Signaled { signal: 9 }));
}

#[test]
fn stdin_and_signals_reach_the_command() {
    let mut req = request(&["cat"]);
    req.stdin = true;
    let (_, seen, _) = with_host(move |conn| {
        handshake(conn);
        write_message(conn, &Message::Run(req)).unwrap();
        write_message(conn, &Message::Stdin(b"abc".to_vec())).unwrap();
        write_message(conn, &Message::StdinEof).unwrap();
        collect(conn)
    });
    assert_eq!(seen.stdout, b"abc");
    assert_eq!(seen.end, Some(Message::Exited { code: 0 }));

    let (_, seen, _) = with_host(move |conn| {
        handshake(conn);
        write_message(conn, &Message::Run(request(&["sleep", "100"]))).unwrap();
        write_message(conn, &Message::Signal(15)).unwrap();
        collect(conn)
    });
    assert_eq!(seen.end, Some(Message::Signaled { signal: 15 }));
}

#[test]
fn host_disconnect_kills_the_command() {
    let start = Instant::now();
    let (outcome, _, shut_down) = with_host(|conn| {
        handshake(conn);
        write_message(conn, &Message::Run(request(&["sleep", "100"]))).unwrap();
        thread::sleep(Duration::from_millis(200));
        conn.shutdown(std::net::Shutdown::Both).unwrap();
        Seen::default()
    });
    assert!(matches!(
        outcome,
        Err(AgentError::Session(SessionError::HostClosed))
    ));
    assert!(shut_down);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn garbage_from_the_host_ends_the_session() {
    let (outcome, _, _) = with_host(|conn| {
        handshake(conn);
        write_message(conn, &Message::Run(request(&["sleep", "100"]))).unwrap();
        conn.write_all(&[255, 255, 255, 255, 1, 2, 3]).unwrap();
        collect(conn)
    });
    assert!(matches!(
        outcome,
        Err(AgentError::Session(SessionError::Read(_)))
    ));
}

#[test]
fn refusals_are_typed() {
    let (_, seen, _) = with_host(|conn| {
        read_message(conn).unwrap();
        write_message(conn, &Message::Hello { version: 999 }).unwrap();
        collect(conn)
    });
    assert!(matches!(
        seen.end,
        Some(Message::Error {
            code: ErrorCode::VersionMismatch,
            ..
        })
    ));

    let mut req = request(&["true"]);
    req.root = Some(RootDisk {
        serial: "disk9".into(),
        fs_type: "ext4".into(),
        read_only: false,
    });
    let (_, seen, _) = run_simple(req);
    match seen.end {
        Some(Message::Error { code, detail }) => {
            assert_eq!(code, ErrorCode::MountFailed);
            assert!(detail.contains("disk9"), "{detail}");
        }
        other => panic!("{other:?}"),
    }

    let (_, seen, _) = with_host(|conn| {
        handshake(conn);
        write_message(conn, &Message::StdinEof).unwrap();
        collect(conn)
    });
    assert!(matches!(
        seen.end,
        Some(Message::Error {
            code: ErrorCode::BadRequest,
            ..
        })
    ));
}
