//! The container loop against real host-side peers over Unix sockets:
//! the boot connection plus exec sessions on a Unix listener, running real
//! processes (no VM; user switching only when the tests run as root).

use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use husk_protocol::{
    read_message, write_message, ContainerSpec, ErrorCode, ExecRequest, Message, RootDisk, RootFs,
};

use super::*;
use crate::boot::{ConnError, Outcome};
use crate::system::{run_agent, AgentError, SysError, System};

/// A test environment: the boot connection is one end of a socket pair,
/// exec connections come from a Unix listener, nothing is mounted, and
/// only the agent's own children are reaped.
struct FakeSystem {
    /// The boot connections `connect` and `reconnect` hand out, in order.
    conns: Vec<UnixStream>,
    /// The seeds applied.
    seeds: Arc<Mutex<Seeds>>,
    root: PathBuf,
    sock: PathBuf,
    shut_down: Arc<AtomicBool>,
}

impl System for FakeSystem {
    type Conn = UnixStream;

    fn mount_early(&mut self) -> Result<(), SysError> {
        Ok(())
    }

    fn connect(&mut self) -> Result<UnixStream, SysError> {
        if self.conns.is_empty() {
            let source = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
            return Err(SysError::Connect { port: 1024, source });
        }
        Ok(self.conns.remove(0))
    }

    fn reconnect(&mut self, _deadline: Instant) -> Result<UnixStream, SysError> {
        self.connect()
    }

    fn seed(&mut self, entropy: &[u8], unix_time_ns: u64) -> Result<(), SysError> {
        if entropy.starts_with(b"fail") {
            return Err(SysError::Seed {
                what: "adding entropy (RNDADDENTROPY)",
                source: std::io::Error::from_raw_os_error(libc::EPERM),
            });
        }
        self.seeds
            .lock()
            .unwrap()
            .push((entropy.to_vec(), unix_time_ns));
        Ok(())
    }

    fn create_container(&mut self, spec: &ContainerSpec) -> Result<ContainerRoot, SysError> {
        let serial = match &spec.root {
            RootFs::Layers { layers, .. } => &layers[0],
            RootFs::Disk(disk) => &disk.serial,
        };
        if serial.starts_with("missing") {
            return Err(SysError::DiskNotFound(serial.clone()));
        }
        let upper = match &spec.root {
            RootFs::Layers { writable, .. } if !writable.is_empty() => {
                Some(self.sock.with_file_name("upper"))
            }
            _ => None,
        };
        Ok(ContainerRoot {
            root: self.root.clone(),
            ptmx: PathBuf::from("/dev/ptmx"),
            isolated: false,
            upper,
        })
    }

    fn listen_exec(&mut self) -> Result<OwnedFd, SysError> {
        let l = UnixListener::bind(&self.sock)
            .map_err(|source| SysError::Listen { port: 1025, source })?;
        l.set_nonblocking(true).unwrap();
        Ok(OwnedFd::from(l))
    }

    fn host_quirk_env(&self) -> Vec<(String, String)> {
        QUIRKS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn kill_all(&mut self) {}

    fn reaps_orphans(&self) -> bool {
        false
    }

    /// The number in the file `oom_kill` beside the exec socket (0 without
    /// one): tests play the kernel's OOM killer by writing it.
    fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.sock.with_file_name("oom_kill"))
            .map_or(0, |n| n.trim().parse().expect("a count"))
    }

    fn shutdown(&mut self) {
        self.shut_down.store(true, Ordering::SeqCst);
    }
}

/// The host quirk variables this fake agent "booted" with.
const QUIRKS: [(&str, &str); 2] = [
    ("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX2_Usable"),
    ("GODEBUG", "cpu.avx2=off"),
];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
const GROUP: &str = "root:x:0:\nalice:x:1000:\nstaff:x:50:alice\n";

fn spec() -> ContainerSpec {
    ContainerSpec {
        root: RootFs::Layers {
            layers: vec!["layer0".into()],
            writable: "rw".into(),
        },
        shares: Vec::new(),
        volumes: vec![],
        hostname: "box".into(),
        hosts: vec![],
        resolv_conf: None,
        network: None,
        files: Vec::new(),
        tmpfs: Vec::new(),
        sysctls: Vec::new(),
        read_only_root: false,
    }
}

fn exec(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/usr/bin:/bin".into()],
        cwd: "/".into(),
        user: String::new(),
        tty: false,
        stdin: false,
        size: None,
        security: Default::default(),
    }
}

/// A host-side view of one connection.
struct Host {
    conn: UnixStream,
}

impl Host {
    fn new(conn: UnixStream) -> Host {
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut h = Host { conn };
        h.handshake();
        h
    }

    fn handshake(&mut self) {
        match self.recv() {
            Message::Hello { version } => assert_eq!(version, PROTOCOL_VERSION),
            other => panic!("expected Hello, got {other:?}"),
        }
        self.send(Message::Hello {
            version: PROTOCOL_VERSION,
        });
    }

    fn session(sock: &PathBuf) -> Host {
        Host::new(UnixStream::connect(sock).unwrap())
    }

    fn send(&mut self, msg: Message) {
        write_message(&mut self.conn, &msg).unwrap();
    }

    fn recv(&mut self) -> Message {
        read_message(&mut self.conn).unwrap().expect("a message")
    }

    /// Sends `req` and expects `Started`.
    fn start(&mut self, req: ExecRequest) -> u32 {
        self.send(Message::Exec(req));
        match self.recv() {
            Message::Started { pid } => pid,
            other => panic!("expected Started, got {other:?}"),
        }
    }

    /// Collects output until the end message.
    fn finish(&mut self) -> (String, String, Message) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match self.recv() {
                Message::Stdout(b) => out.extend(b),
                Message::Stderr(b) => err.extend(b),
                end => {
                    let s = |v: Vec<u8>| String::from_utf8_lossy(&v).into_owned();
                    return (s(out), s(err), end);
                }
            }
        }
    }

    /// Expects an `Error` with `code`; returns its detail.
    fn expect_error(&mut self, code: ErrorCode) -> String {
        match self.recv() {
            Message::Error { code: got, detail } if got == code => detail,
            other => panic!("expected {code:?}, got {other:?}"),
        }
    }
}

/// Runs the agent against `host`, which gets the boot connection (after
/// the handshake) and the exec socket path.
fn with_container<F>(host: F) -> Result<Outcome, AgentError>
where
    F: FnOnce(Host, PathBuf) + Send + 'static,
{
    with_raw_host(|conn, sock, _| host(Host::new(conn), sock))
}

/// Runs the agent against `host`, which gets the raw boot connection, the
/// exec socket path and the flag set by the agent's teardown.
fn with_raw_host<F>(host: F) -> Result<Outcome, AgentError>
where
    F: FnOnce(UnixStream, PathBuf, Arc<AtomicBool>) + Send + 'static,
{
    with_boot_conns(1, |mut conns, sock, flag| host(conns.remove(0), sock, flag)).0
}

/// The seeds the fake system applied.
type Seeds = Vec<(Vec<u8>, u64)>;

/// Runs the agent against `host`, which gets `n` raw boot connections (the
/// agent's `connect`, then each `reconnect`, takes the next one), the
/// exec socket path and the teardown flag; also returns the seeds applied.
fn with_boot_conns<F>(n: usize, host: F) -> (Result<Outcome, AgentError>, Seeds)
where
    F: FnOnce(Vec<UnixStream>, PathBuf, Arc<AtomicBool>) + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), PASSWD).unwrap();
    std::fs::write(root.join("etc/group"), GROUP).unwrap();
    let sock = dir.path().join("exec.sock");
    let (mut agent_ends, mut host_ends) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let (agent_end, host_end) = UnixStream::pair().unwrap();
        host_end
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        agent_ends.push(agent_end);
        host_ends.push(host_end);
    }
    let shut_down = Arc::new(AtomicBool::new(false));
    let (sock2, flag) = (sock.clone(), shut_down.clone());
    let t = thread::spawn(move || host(host_ends, sock2, flag));
    let seeds = Arc::new(Mutex::new(Vec::new()));
    let mut sys = FakeSystem {
        conns: agent_ends,
        seeds: seeds.clone(),
        root,
        sock,
        shut_down,
    };
    let outcome = run_agent(&mut sys);
    drop(sys);
    t.join().unwrap();
    let seeds = std::mem::take(&mut *seeds.lock().unwrap());
    (outcome, seeds)
}

fn create(boot: &mut Host) {
    boot.send(Message::CreateContainer(spec()));
    assert_eq!(boot.recv(), Message::Ok);
}

#[test]
fn init_and_concurrent_exec_sessions() {
    let outcome = with_container(|mut boot, sock| {
        create(&mut boot);
        let mut init = exec(&["sh", "-c", "read x; echo init-got-$x; exit 7"]);
        init.stdin = true;
        boot.start(init);
        let mut a = Host::session(&sock);
        let mut b = Host::session(&sock);
        let mut req = exec(&["sh", "-c", "echo a; cat; echo \"$HOME\""]);
        req.stdin = true;
        a.start(req);
        b.start(exec(&["sh", "-c", "echo b >&2; exit 3"]));
        assert_eq!(
            b.finish(),
            ("".into(), "b\n".into(), Message::Exited { code: 3 })
        );
        a.send(Message::Stdin(b"hello ".to_vec()));
        a.send(Message::Stdin(b"world\n".to_vec()));
        a.send(Message::StdinEof);
        let (out, _, end) = a.finish();
        assert_eq!(out, "a\nhello world\n/root\n");
        assert_eq!(end, Message::Exited { code: 0 });
        // A second container is refused; the init keeps running.
        boot.send(Message::CreateContainer(spec()));
        assert!(boot.expect_error(ErrorCode::BadRequest).contains("already"));
        boot.send(Message::Stdin(b"x\n".to_vec()));
        let (out, _, end) = boot.finish();
        assert_eq!(out, "init-got-x\n");
        assert_eq!(end, Message::Exited { code: 7 });
    });
    assert_eq!(
        outcome.unwrap(),
        Outcome::Finished(Message::Exited { code: 7 })
    );
}

#[test]
fn kill_init_ends_the_container_and_its_sessions() {
    let start = Instant::now();
    let outcome = with_container(|mut boot, sock| {
        create(&mut boot);
        boot.start(exec(&["sleep", "100"]));
        let mut long = Host::session(&sock);
        long.start(exec(&["sh", "-c", "echo up; exec sleep 100"]));
        assert_eq!(long.recv(), Message::Stdout(b"up\n".to_vec()));
        let mut k = Host::session(&sock);
        k.send(Message::KillInit { signal: 99 });
        k.expect_error(ErrorCode::BadRequest);
        let mut k = Host::session(&sock);
        k.send(Message::KillInit { signal: 15 });
        assert_eq!(k.recv(), Message::Ok);
        assert_eq!(boot.finish().2, Message::Signaled { signal: 15 });
        assert_eq!(long.finish().2, Message::Signaled { signal: 9 });
    });
    assert_eq!(
        outcome.unwrap(),
        Outcome::Finished(Message::Signaled { signal: 15 })
    );
    assert!(start.elapsed() < Duration::from_secs(15));
}

#[test]
fn failures_are_typed() {
    let outcome = with_container(|mut boot, sock| {
        create(&mut boot);
        let mut early = Host::session(&sock);
        early.send(Message::Exec(exec(&["true"])));
        early.expect_error(ErrorCode::NoContainer);
        boot.start(exec(&["sleep", "100"]));
        let cases = [
            (exec(&["husk-no-such-cmd"]), ErrorCode::NotFound),
            (exec(&["/etc"]), ErrorCode::PermissionDenied),
            (
                ExecRequest {
                    user: "mallory".into(),
                    ..exec(&["true"])
                },
                ErrorCode::NoSuchUser,
            ),
            (
                ExecRequest {
                    user: "alice:nogroup".into(),
                    ..exec(&["true"])
                },
                ErrorCode::NoSuchUser,
            ),
            (
                ExecRequest {
                    cwd: "relative".into(),
                    ..exec(&["true"])
                },
                ErrorCode::BadRequest,
            ),
        ];
        for (req, code) in cases {
            let mut s = Host::session(&sock);
            s.send(Message::Exec(req));
            s.expect_error(code);
        }
        let mut s = Host::session(&sock);
        s.send(Message::Stdin(vec![1]));
        s.expect_error(ErrorCode::BadRequest);
        boot.send(Message::Signal(9));
        assert_eq!(boot.finish().2, Message::Signaled { signal: 9 });
    });
    assert!(outcome.is_ok());

    // A container that cannot be created, and an Exec without one.
    let outcome = with_container(|mut boot, _| {
        let mut bad = spec();
        bad.root = RootFs::Disk(RootDisk {
            serial: "missing9".into(),
            fs_type: "ext4".into(),
            read_only: false,
        });
        boot.send(Message::CreateContainer(bad));
        let detail = boot.expect_error(ErrorCode::MountFailed);
        assert!(detail.contains("missing9"), "{detail}");
    });
    assert_eq!(outcome.unwrap(), Outcome::Refused(ErrorCode::MountFailed));
    let outcome = with_container(|mut boot, _| {
        boot.send(Message::CreateContainer(ContainerSpec {
            root: RootFs::Layers {
                layers: vec![],
                writable: String::new(),
            },
            ..spec()
        }));
        boot.expect_error(ErrorCode::BadRequest);
    });
    assert_eq!(outcome.unwrap(), Outcome::Refused(ErrorCode::BadRequest));
    let outcome = with_container(|mut boot, _| {
        boot.send(Message::Exec(exec(&["true"])));
        boot.expect_error(ErrorCode::NoContainer);
    });
    assert_eq!(outcome.unwrap(), Outcome::Refused(ErrorCode::NoContainer));
}

#[test]
fn tty_sessions_get_a_terminal() {
    let outcome = with_container(|mut boot, sock| {
        create(&mut boot);
        boot.start(exec(&["sleep", "100"]));
        let mut t = Host::session(&sock);
        let mut req = exec(&["sh", "-c", "stty size; tty; echo $TERM; echo err >&2"]);
        req.tty = true;
        req.size = Some((24, 80));
        t.start(req);
        let (out, err, end) = t.finish();
        assert_eq!(end, Message::Exited { code: 0 });
        assert!(err.is_empty(), "stderr goes to the terminal");
        let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
        assert_eq!(lines[0], "24 80", "{out:?}");
        assert!(lines[1].starts_with("/dev/pts/"), "{out:?}");
        assert_eq!(&lines[2..], ["xterm", "err"], "{out:?}");

        let mut t = Host::session(&sock);
        let mut req = exec(&["sh", "-c", "read l; stty size; echo got:$l"]);
        req.tty = true;
        req.stdin = true;
        req.size = Some((10, 20));
        t.start(req);
        t.send(Message::Resize {
            rows: 30,
            cols: 100,
        });
        t.send(Message::Stdin(b"hi\n".to_vec()));
        let (out, _, end) = t.finish();
        assert_eq!(end, Message::Exited { code: 0 });
        assert!(out.contains("30 100") && out.contains("got:hi"), "{out:?}");

        let mut t = Host::session(&sock);
        let mut req = exec(&["sleep", "100"]);
        req.tty = true;
        t.start(req);
        t.send(Message::Signal(2));
        assert_eq!(t.finish().2, Message::Signaled { signal: 2 });
        boot.send(Message::Signal(15));
        assert_eq!(boot.finish().2, Message::Signaled { signal: 15 });
    });
    assert!(outcome.is_ok());
}

#[test]
fn users_and_working_directories() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("made/here");
    let cwd_s = cwd.to_str().unwrap().to_string();
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    let outcome = with_container(move |mut boot, sock| {
        create(&mut boot);
        boot.start(exec(&["sleep", "100"]));
        let mut s = Host::session(&sock);
        s.start(ExecRequest {
            user: "alice".into(),
            cwd: cwd_s.clone(),
            ..exec(&["sh", "-c", "pwd; echo $HOME; id -u; id -G"])
        });
        let (out, _, end) = s.finish();
        assert_eq!(end, Message::Exited { code: 0 });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..2], [cwd_s.as_str(), "/home/alice"], "{out:?}");
        if root {
            assert_eq!(lines[2..], ["1000", "1000 50"], "{out:?}");
        }
        boot.send(Message::Signal(9));
        boot.finish();
    });
    assert!(outcome.is_ok());
    let meta = std::fs::metadata(&cwd).unwrap();
    if root {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.uid(), 1000, "cwd owned by the user");
    }
}

#[test]
fn host_disconnects_kill_processes() {
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = with_container(move |mut boot, sock| {
        create(&mut boot);
        tx.send(boot.start(exec(&["sleep", "100"]))).unwrap();
        // An exec session whose host goes away: its process is killed and
        // the container keeps running.
        let mut s = Host::session(&sock);
        s.start(exec(&["sleep", "100"]));
        drop(s);
        let mut s = Host::session(&sock);
        s.start(exec(&["echo", "still"]));
        assert_eq!(s.finish().0, "still\n");
        drop(boot);
    });
    assert!(matches!(
        outcome,
        Err(AgentError::Conn(ConnError::HostClosed))
    ));
    let pid = rx.recv().unwrap() as libc::pid_t;
    // SAFETY: kill with signal 0 only checks for existence.
    assert_eq!(unsafe { libc::kill(pid, 0) }, -1, "init killed and reaped");
    assert!(start.elapsed() < Duration::from_secs(15));
}

/// Stdin sent right behind the `Exec` (before `Started` came back), then
/// its end, is delivered in full: to the init and to exec'd processes.
#[test]
fn stdin_sent_with_the_exec_request_is_delivered() {
    let outcome = with_container(|mut boot, sock| {
        create(&mut boot);
        let mut req = exec(&["sh", "-c", "tr a-z A-Z; echo done"]);
        req.stdin = true;
        let mut init = exec(&["sh", "-c", "tr a-z A-Z; echo done; exec sleep 100"]);
        init.stdin = true;
        boot.send(Message::Exec(init));
        boot.send(Message::Stdin(b"to init\n".to_vec()));
        boot.send(Message::StdinEof);
        assert!(matches!(boot.recv(), Message::Started { .. }));
        let mut out = Vec::new();
        while out.len() < "TO INIT\ndone\n".len() {
            match boot.recv() {
                Message::Stdout(b) => out.extend(b),
                other => panic!("{other:?} after {out:?}"),
            }
        }
        assert_eq!(String::from_utf8_lossy(&out), "TO INIT\ndone\n");
        for round in 0..20 {
            let mut s = Host::session(&sock);
            let input = format!("piped input {round}\n");
            s.send(Message::Exec(req.clone()));
            s.send(Message::Stdin(input.clone().into_bytes()));
            s.send(Message::StdinEof);
            assert!(matches!(s.recv(), Message::Started { .. }));
            let (out, err, end) = s.finish();
            assert_eq!(out, format!("{}done\n", input.to_uppercase()), "{err}");
            assert_eq!(end, Message::Exited { code: 0 });
        }
        boot.send(Message::Signal(9));
        assert_eq!(boot.finish().2, Message::Signaled { signal: 9 });
    });
    assert!(outcome.is_ok());
}

#[test]
fn init_output_and_exit_then_teardown_before_the_connection_closes() {
    let outcome = with_raw_host(|conn, _, shut_down| {
        let mut boot = Host::new(conn);
        create(&mut boot);
        boot.start(exec(&["sh", "-c", "echo out; echo err >&2; exit 3"]));
        assert_eq!(
            boot.finish(),
            ("out\n".into(), "err\n".into(), Message::Exited { code: 3 })
        );
        // The agent closes the connection only after its teardown.
        assert!(read_message(&mut boot.conn).unwrap().is_none());
        assert!(shut_down.load(Ordering::SeqCst), "closed before teardown");
    });
    assert_eq!(
        outcome.unwrap(),
        Outcome::Finished(Message::Exited { code: 3 })
    );
}

#[test]
fn init_output_is_streamed_and_signals_are_reported() {
    let outcome = with_container(|mut boot, _| {
        create(&mut boot);
        let mut init = exec(&["sh", "-c", "echo first; read x; echo second; kill -9 $$"]);
        init.stdin = true;
        boot.start(init);
        // "first" arrives while the process still waits for its input.
        assert_eq!(boot.recv(), Message::Stdout(b"first\n".to_vec()));
        boot.send(Message::Stdin(b"go\n".to_vec()));
        assert_eq!(
            boot.finish(),
            (
                "second\n".into(),
                "".into(),
                Message::Signaled { signal: 9 }
            )
        );
    });
    assert_eq!(
        outcome.unwrap(),
        Outcome::Finished(Message::Signaled { signal: 9 })
    );
}

#[test]
fn oom_kills_during_the_container_are_reported_before_its_end() {
    let outcome = with_container(|mut boot, sock| {
        // Two kills before the container started are not its own.
        let counter = sock.with_file_name("oom_kill");
        std::fs::write(&counter, "2").unwrap();
        create(&mut boot);
        let script = format!("echo 5 > {}; kill -9 $$", counter.display());
        boot.start(exec(&["sh", "-c", &script]));
        assert_eq!(boot.recv(), Message::OomKilled { count: 3 });
        assert_eq!(boot.recv(), Message::Signaled { signal: 9 });
    });
    assert_eq!(
        outcome.unwrap(),
        Outcome::Finished(Message::Signaled { signal: 9 })
    );
}

#[test]
fn an_init_that_cannot_start_is_a_typed_refusal() {
    let outcome = with_container(|mut boot, _| {
        create(&mut boot);
        boot.send(Message::Exec(exec(&["husk-no-such-command"])));
        let detail = boot.expect_error(ErrorCode::NotFound);
        assert!(detail.contains("husk-no-such-command"), "{detail}");
    });
    assert_eq!(outcome.unwrap(), Outcome::Refused(ErrorCode::NotFound));
}

#[test]
fn garbage_from_the_host_ends_the_container() {
    let start = Instant::now();
    let outcome = with_container(|mut boot, _| {
        create(&mut boot);
        boot.start(exec(&["sleep", "100"]));
        use std::io::Write;
        boot.conn.write_all(&[255, 255, 255, 255, 1, 2, 3]).unwrap();
        assert!(read_message(&mut boot.conn).unwrap().is_none());
    });
    assert!(matches!(outcome, Err(AgentError::Conn(ConnError::Read(_)))));
    assert!(start.elapsed() < Duration::from_secs(15));
}

#[test]
fn handshake_and_request_refusals_are_typed() {
    let outcome = with_raw_host(|mut conn, _, _| {
        assert!(matches!(
            read_message(&mut conn).unwrap(),
            Some(Message::Hello { .. })
        ));
        write_message(&mut conn, &Message::Hello { version: 999 }).unwrap();
        let mut host = Host { conn };
        let detail = host.expect_error(ErrorCode::VersionMismatch);
        assert!(detail.contains("999"), "{detail}");
    });
    assert_eq!(
        outcome.unwrap(),
        Outcome::Refused(ErrorCode::VersionMismatch)
    );
    let outcome = with_container(|mut boot, _| {
        boot.send(Message::StdinEof);
        let detail = boot.expect_error(ErrorCode::BadRequest);
        assert!(detail.contains("StdinEof"), "{detail}");
    });
    assert_eq!(outcome.unwrap(), Outcome::Refused(ErrorCode::BadRequest));
}

/// Every process the agent starts, init and exec'd alike, carries the
/// host's quirk variables, merged with the container's own.
#[test]
fn host_quirk_variables_reach_every_process() {
    let show = "echo \"$GLIBC_TUNABLES|$GODEBUG\"";
    let outcome = with_container(move |mut boot, sock| {
        create(&mut boot);
        let mut init = exec(&["sh", "-c", &format!("{show}; exec sleep 100")]);
        init.env.push("GODEBUG=http2client=0".into());
        boot.start(init);
        assert_eq!(
            boot.recv(),
            Message::Stdout(b"glibc.cpu.hwcaps=-AVX2_Usable|http2client=0,cpu.avx2=off\n".to_vec())
        );
        let mut s = Host::session(&sock);
        s.start(exec(&["sh", "-c", show]));
        assert_eq!(s.finish().0, "glibc.cpu.hwcaps=-AVX2_Usable|cpu.avx2=off\n");
        boot.send(Message::Signal(9));
        boot.finish();
    });
    assert!(outcome.is_ok());
}

/// A `Seed` from the host.
fn seed_msg(entropy: &[u8], unix_time_ns: u64) -> Message {
    Message::Seed {
        entropy: entropy.to_vec(),
        unix_time_ns,
    }
}

/// Seeds before `CreateContainer` are applied and answered `Ok`; bad ones
/// are refused with a typed error and the connection goes on.
#[test]
fn seeds_are_applied_checked_and_answered() {
    let (outcome, seeds) = with_boot_conns(1, |mut conns, _, _| {
        let mut boot = Host::new(conns.remove(0));
        boot.send(seed_msg(&[7; 64], 1_700_000_000_000_000_001));
        assert_eq!(boot.recv(), Message::Ok);
        for n in [0, 15, 513] {
            boot.send(seed_msg(&vec![1; n], 5));
            let detail = boot.expect_error(ErrorCode::BadRequest);
            assert!(detail.contains(&format!("{n} bytes")), "{detail}");
        }
        boot.send(seed_msg(b"fail: not privileged", 5));
        let detail = boot.expect_error(ErrorCode::Internal);
        assert!(detail.contains("RNDADDENTROPY"), "{detail}");
        create(&mut boot);
        boot.start(exec(&["true"]));
        assert_eq!(boot.finish().2, Message::Exited { code: 0 });
    });
    assert_eq!(
        outcome.unwrap(),
        Outcome::Finished(Message::Exited { code: 0 })
    );
    assert_eq!(seeds, [(vec![7; 64], 1_700_000_000_000_000_001)]);
}

/// A boot connection that breaks before `CreateContainer` (EOF after the
/// handshake, then a reset before it) is reconnected; the handshake and
/// the seed happen again on the new connection, which becomes the boot
/// connection.
#[test]
fn a_boot_connection_lost_before_create_is_reconnected() {
    let (outcome, seeds) = with_boot_conns(3, |mut conns, _, _| {
        let mut first = Host::new(conns.remove(0));
        first.send(seed_msg(&[1; 16], 1));
        assert_eq!(first.recv(), Message::Ok);
        drop(first); // EOF (the template's host end going away)
                     // Closed with the agent's Hello unread: the agent's read fails
                     // with ECONNRESET, as after a vsock transport reset.
        let second = conns.remove(0);
        let mut byte = [0u8; 1];
        rustix::net::recv(&second, &mut byte, rustix::net::RecvFlags::PEEK).unwrap();
        drop(second);
        let mut third = Host::new(conns.remove(0));
        third.send(seed_msg(&[3; 32], 3));
        assert_eq!(third.recv(), Message::Ok);
        create(&mut third);
        third.start(exec(&["sh", "-c", "exit 4"]));
        assert_eq!(third.finish().2, Message::Exited { code: 4 });
    });
    assert_eq!(
        outcome.unwrap(),
        Outcome::Finished(Message::Exited { code: 4 })
    );
    assert_eq!(seeds, [(vec![1; 16], 1), (vec![3; 32], 3)]);
}

/// Once a container exists, a lost boot connection ends it as before (no
/// reconnection); before that, a protocol violation is not reconnected
/// either, and a reconnection that fails ends the agent.
#[test]
fn reconnection_only_before_create_and_only_for_broken_connections() {
    let (outcome, _) = with_boot_conns(2, |mut conns, _, _| {
        let mut boot = Host::new(conns.remove(0));
        create(&mut boot);
        drop(boot);
        // The agent never opened the spare connection.
        let mut spare = conns.remove(0);
        assert!(read_message(&mut spare).unwrap().is_none());
    });
    assert!(matches!(
        outcome,
        Err(AgentError::Conn(ConnError::HostClosed))
    ));
    let (outcome, _) = with_boot_conns(2, |mut conns, _, _| {
        let mut rude = conns.remove(0);
        read_message(&mut rude).unwrap();
        write_message(&mut rude, &Message::Ok).unwrap();
        let mut spare = conns.remove(0);
        assert!(read_message(&mut spare).unwrap().is_none());
    });
    assert!(matches!(
        outcome,
        Err(AgentError::Conn(ConnError::Protocol(_)))
    ));
    let (outcome, _) = with_boot_conns(1, |conns, _, _| drop(conns));
    assert!(matches!(
        outcome,
        Err(AgentError::Sys(SysError::Connect { .. }))
    ));
}

/// Receives a layer tar (chunks up to `LayerEnd`) from `boot`.
fn receive_layer(boot: &mut Host) -> Vec<u8> {
    let mut tar = Vec::new();
    loop {
        match boot.recv() {
            Message::LayerChunk(b) => tar.extend(b),
            Message::LayerEnd { bytes } => {
                assert_eq!(bytes, tar.len() as u64);
                return tar;
            }
            other => panic!("expected the layer, got {other:?}"),
        }
    }
}

#[test]
fn export_layer_streams_the_upper_directory_after_the_exit() {
    let outcome = with_container(|mut boot, sock| {
        let upper = sock.with_file_name("upper");
        create(&mut boot);
        boot.send(Message::ExportLayer);
        assert_eq!(boot.recv(), Message::Ok);
        // The init writes into the upper directory (the fake's root is
        // the host's, so by its absolute path).
        let script = format!("mkdir -p {0}/d && echo hi > {0}/d/f", upper.display());
        std::fs::create_dir_all(&upper).unwrap();
        boot.start(exec(&["sh", "-c", &script]));
        let (_, _, end) = boot.finish();
        assert_eq!(end, Message::Exited { code: 0 });
        let tar = receive_layer(&mut boot);
        let mut ar = tar::Archive::new(&tar[..]);
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut body = String::new();
            std::io::Read::read_to_string(&mut e, &mut body).unwrap();
            names.push(format!("{} {body}", e.path().unwrap().display()));
        }
        assert_eq!(names, ["d ", "d/f hi\n"]);
    });
    assert_eq!(
        outcome.unwrap(),
        Outcome::Finished(Message::Exited { code: 0 })
    );
}

#[test]
fn export_layer_needs_an_image_root_on_a_writable_disk_and_comes_first() {
    let outcome = with_container(|mut boot, _| {
        let mut s = spec();
        s.root = RootFs::Disk(RootDisk {
            serial: "disk0".into(),
            fs_type: "ext4".into(),
            read_only: false,
        });
        boot.send(Message::CreateContainer(s));
        assert_eq!(boot.recv(), Message::Ok);
        boot.send(Message::ExportLayer);
        let detail = boot.expect_error(ErrorCode::BadRequest);
        assert!(detail.contains("writable disk"), "{detail}");
        let mut init = exec(&["sh", "-c", "read x"]);
        init.stdin = true;
        boot.start(init);
        // Too late once the init runs (it waits for its input).
        boot.send(Message::ExportLayer);
        let detail = boot.expect_error(ErrorCode::BadRequest);
        assert!(detail.contains("unexpected ExportLayer"), "{detail}");
        boot.send(Message::Stdin(b"x\n".to_vec()));
        let (_, _, end) = boot.finish();
        assert_eq!(end, Message::Exited { code: 0 });
        // No layer without the request: the connection just ends.
        assert!(read_message(&mut boot.conn).unwrap().is_none());
    });
    assert!(outcome.is_ok());
}

/// A maintenance VM's container (`husk cp` on a stopped container, issue
/// #14): its init process never runs, yet questions about its root are
/// answered on exec sessions; the host's half-close of the boot connection
/// ends it like an init's end: teardown, then the agent closes its end.
#[test]
fn a_container_without_init_answers_questions_and_ends_on_half_close() {
    let outcome = with_raw_host(|conn, sock, shut_down| {
        let mut boot = Host::new(conn);
        create(&mut boot);
        let mut q = Host::session(&sock);
        q.send(Message::StatPath(husk_protocol::PathRequest {
            path: "/etc/passwd".into(),
            follow_link: false,
        }));
        match q.recv() {
            Message::PathInfo(i) => assert!(!i.dir && i.size > 0, "{i:?}"),
            other => panic!("expected PathInfo, got {other:?}"),
        }
        // Processes still need the init's namespace.
        let mut e = Host::session(&sock);
        e.send(Message::Exec(exec(&["true"])));
        e.expect_error(ErrorCode::NoContainer);
        boot.conn.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_message(&mut boot.conn).unwrap(), None);
        assert!(
            shut_down.load(Ordering::SeqCst),
            "closed after the teardown"
        );
    });
    assert!(matches!(
        outcome,
        Err(AgentError::Conn(ConnError::HostClosed))
    ));
}
