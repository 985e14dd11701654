//! The agent's container path in a real KVM microVM, driven by a small
//! host harness speaking husk-protocol directly (no `husk` binary): EROFS
//! layers built from busybox, an ext4 writable disk, overlayfs with a
//! whiteout, exec sessions on the exec port (user resolution, tty),
//! KillInit and the init's exit code.
//!
//! Skipped (with a message) unless `HUSK_KERNEL` and `HUSK_AGENT` are set
//! (scripts/test.sh sets both). One boot covers everything (~20-40 s here).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use husk_protocol::{
    read_message, write_message, ContainerSpec, ErrorCode, ExecRequest, Message, RootFs,
    AGENT_PORT, EXEC_PORT, PROTOCOL_VERSION,
};
use husk_tests::{agent_or_skip, kernel_or_skip, mkfs_ext4, vm_lock};

/// Generous: a boot takes 15-30 s on the nested-KVM CI hosts, each guest
/// fork+exec about half a second.
const TIMEOUT: Duration = Duration::from_secs(180);

fn mkfs_erofs(dir: &Path, image: &Path) {
    let out = Command::new("mkfs.erofs")
        .arg(image)
        .arg(dir)
        .output()
        .expect("running mkfs.erofs (apt install erofs-utils)");
    assert!(out.status.success(), "mkfs.erofs: {out:?}");
}

fn agent_disk(agent: &Path, work: &Path) -> PathBuf {
    let dir = work.join("agent");
    for sub in ["proc", "sys", "dev", "run", "mnt", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let bin = dir.join("husk-agent");
    std::fs::copy(agent, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let disk = work.join("agent.erofs");
    mkfs_erofs(&dir, &disk);
    disk
}

/// layer0: busybox, users, a file layer1 deletes; layer1: the whiteout
/// and a new file.
fn layers(work: &Path) -> [PathBuf; 2] {
    let l0 = work.join("l0");
    for dir in ["bin", "etc", "home", "tmp", "root"] {
        std::fs::create_dir_all(l0.join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", l0.join("bin/busybox")).expect("apt install busybox-static");
    for applet in [
        "sh", "cat", "echo", "grep", "test", "id", "pwd", "stty", "tty", "sleep", "awk", "sort",
        "tr", "ls",
    ] {
        std::os::unix::fs::symlink("busybox", l0.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        l0.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        l0.join("etc/group"),
        "root:x:0:\nalice:x:1000:\nstaff:x:50:alice\n",
    )
    .unwrap();
    std::fs::write(l0.join("etc/gone.txt"), "deleted by layer1\n").unwrap();
    let l1 = work.join("l1");
    std::fs::create_dir_all(l1.join("etc")).unwrap();
    std::fs::write(l1.join("layer1.txt"), "from layer1\n").unwrap();
    let whiteout = l1.join("etc/gone.txt");
    let status = Command::new("mknod")
        .arg(&whiteout)
        .args(["c", "0", "0"])
        .status()
        .unwrap();
    assert!(status.success(), "mknod (needs root)");
    let disks = [work.join("layer0.erofs"), work.join("layer1.erofs")];
    mkfs_erofs(&l0, &disks[0]);
    mkfs_erofs(&l1, &disks[1]);
    disks
}

/// One protocol connection with a read timeout.
struct Conn(UnixStream);

impl Conn {
    fn new(s: UnixStream) -> Conn {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_nonblocking(false).unwrap();
        let mut c = Conn(s);
        assert_eq!(
            c.recv(),
            Message::Hello {
                version: PROTOCOL_VERSION
            }
        );
        c.send(Message::Hello {
            version: PROTOCOL_VERSION,
        });
        c
    }

    /// A new connection to the agent's exec port through the VMM's
    /// hybrid vsock socket.
    fn exec_port(vsock: &Path) -> Conn {
        let mut s = UnixStream::connect(vsock).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(format!("CONNECT {EXEC_PORT}\n").as_bytes())
            .unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8];
        while byte[0] != b'\n' && line.len() < 64 {
            s.read_exact(&mut byte).unwrap();
            line.push(byte[0]);
        }
        assert!(
            line.starts_with(b"OK "),
            "{:?}",
            String::from_utf8_lossy(&line)
        );
        Conn::new(s)
    }

    fn send(&mut self, msg: Message) {
        write_message(&mut self.0, &msg).unwrap();
    }

    fn recv(&mut self) -> Message {
        read_message(&mut self.0).unwrap().expect("a message")
    }

    fn start(&mut self, req: ExecRequest) {
        self.send(Message::Exec(req));
        match self.recv() {
            Message::Started { .. } => {}
            other => panic!("expected Started, got {other:?}"),
        }
    }

    /// Output until `until` appears in it, or (empty `until`) the end.
    fn output(&mut self, until: &str) -> (String, Option<Message>) {
        let mut out = Vec::new();
        loop {
            match self.recv() {
                Message::Stdout(b) | Message::Stderr(b) => out.extend(b),
                end => return (String::from_utf8_lossy(&out).into_owned(), Some(end)),
            }
            let text = String::from_utf8_lossy(&out);
            if !until.is_empty() && text.contains(until) {
                return (text.into_owned(), None);
            }
        }
    }
}

fn exec(script: &str) -> ExecRequest {
    ExecRequest {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        user: String::new(),
        tty: false,
        stdin: false,
        size: None,
        security: Default::default(),
    }
}

/// Prints the guest console if the test fails.
struct Console(PathBuf);

impl Drop for Console {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            eprintln!("--- guest console ---\n{log}\n---");
        }
    }
}

fn accept(listener: &UnixListener) -> UnixStream {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match listener.accept() {
            Ok((s, _)) => return s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "the agent never connected");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

const INIT: &str = r#"
echo "host=$(cat /etc/hostname)"
grep -q '10.1.2.3 db' /etc/hosts && echo hosts-ok
test -e /etc/gone.txt && echo gone-visible || echo whiteout-ok
cat /layer1.txt
echo persisted > /written.txt
echo "mounts=$(awk '{print $2}' /proc/mounts | sort | tr '\n' ' ')"
read line
echo "init-read:$line"
trap 'echo got-term; exit 42' TERM
echo ready
while :; do sleep 1; done
"#;

#[test]
fn container_in_a_real_vm() {
    let Some(kernel) = kernel_or_skip("container_in_a_real_vm") else {
        return;
    };
    let Some(agent) = agent_or_skip("container_in_a_real_vm") else {
        return;
    };
    let _lock = vm_lock();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let agent_disk = agent_disk(&agent, work);
    let [layer0, layer1] = layers(work);
    let rw = work.join("rw.ext4");
    std::fs::create_dir_all(work.join("empty")).unwrap();
    mkfs_ext4(&work.join("empty"), &rw).unwrap();
    let vsock = work.join("v.sock");
    let listener = UnixListener::bind(format!("{}_{AGENT_PORT}", vsock.display())).unwrap();
    listener.set_nonblocking(true).unwrap();
    let console = Console(work.join("console.log"));
    let disk = |path: &Path, ro: bool, serial: &str| vmm::DiskConfig {
        path: Some(path.to_path_buf()),
        read_only: ro,
        serial: serial.into(),
        rate_limit: Default::default(),
    };
    let vm = vmm::Vm::new(vmm::VmConfig {
        kernel,
        initrd: None,
        cmdline_extra: "root=/dev/vda ro rootfstype=erofs init=/husk-agent quiet panic=-1".into(),
        vcpus: 1,
        mem_mib: 256,
        disks: vec![
            disk(&agent_disk, true, "husk-agent"),
            disk(&layer0, true, "layer0"),
            disk(&layer1, true, "layer1"),
            disk(&rw, false, "rw"),
        ],
        vsock: Some(vmm::VsockConfig {
            guest_cid: 3,
            uds_path: vsock.clone(),
            listener: None,
            streams: vmm::VsockStreams::AgentFrames,
        }),
        net: None,
        fs: None,
        console: vmm::ConsoleOutput::File(console.0.clone()),
        seccomp: vmm::SeccompMode::Enforce,
    })
    .unwrap();
    let stop = vm.stop_handle();
    let vm_thread = std::thread::spawn(move || vm.run());
    // Stops the VM whatever happens below.
    struct Stop(vmm::StopHandle);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.stop();
        }
    }
    let _stop = Stop(stop);

    let mut boot = Conn::new(accept(&listener));
    boot.send(Message::CreateContainer(ContainerSpec {
        root: RootFs::Layers {
            layers: vec!["layer0".into(), "layer1".into()],
            writable: "rw".into(),
        },
        shares: Vec::new(),
        volumes: vec![],
        hostname: "testbox".into(),
        hosts: vec!["10.1.2.3 db".into()],
        resolv_conf: Some("nameserver 10.1.2.1\n".into()),
        network: None,
        files: Vec::new(),
        tmpfs: Vec::new(),
        sysctls: Vec::new(),
        read_only_root: false,
    }));
    assert_eq!(boot.recv(), Message::Ok);
    let mut init = exec(INIT);
    init.stdin = true;
    boot.start(init);
    boot.send(Message::Stdin(b"hello\n".to_vec()));
    let (out, end) = boot.output("ready");
    assert_eq!(end, None, "{out}");
    for want in [
        "host=testbox\n",
        "hosts-ok\n",
        "whiteout-ok\n",
        "from layer1\n",
        "mounts=/ /dev /dev/pts /dev/shm /proc /sys \n",
        "init-read:hello\n",
    ] {
        assert!(out.contains(want), "{want:?} missing from {out:?}");
    }

    // Two concurrent exec sessions: a user from /etc/passwd with a new
    // working directory, and a terminal.
    let mut user = Conn::exec_port(&vsock);
    user.start(ExecRequest {
        user: "alice".into(),
        cwd: "/home/alice/work".into(),
        ..exec("id -u; id -G; echo $HOME; pwd; ls -ldn . | awk '{print $3}'")
    });
    let mut tty = Conn::exec_port(&vsock);
    tty.start(ExecRequest {
        tty: true,
        size: Some((24, 80)),
        security: Default::default(),
        ..exec("stty size; tty")
    });
    let (out, end) = user.output("");
    assert_eq!(end, Some(Message::Exited { code: 0 }), "{out}");
    assert_eq!(out, "1000\n1000 50\n/home/alice\n/home/alice/work\n1000\n");
    let (out, end) = tty.output("");
    assert_eq!(end, Some(Message::Exited { code: 0 }), "{out}");
    assert_eq!(out, "24 80\r\n/dev/pts/0\r\n");

    let mut missing = Conn::exec_port(&vsock);
    missing.send(Message::Exec(exec("x").clone_with_argv(&["no-such-cmd"])));
    match missing.recv() {
        Message::Error { code, .. } => assert_eq!(code, ErrorCode::NotFound),
        other => panic!("{other:?}"),
    }

    let mut kill = Conn::exec_port(&vsock);
    kill.send(Message::KillInit { signal: 15 });
    assert_eq!(kill.recv(), Message::Ok);
    let (out, end) = boot.output("");
    assert_eq!(end, Some(Message::Exited { code: 42 }), "{out}");
    assert!(out.contains("got-term"), "{out}");
    // The agent closes the boot connection after its teardown, then the
    // guest powers off.
    assert!(matches!(read_message(&mut boot.0), Ok(None)));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !vm_thread.is_finished() {
        assert!(Instant::now() < deadline, "the guest did not power off");
        std::thread::sleep(Duration::from_millis(50));
    }
    let reason = vm_thread.join().unwrap().unwrap();
    assert_eq!(reason, vmm::ExitReason::PowerOff);

    // The container's writes landed on the writable disk.
    let out = Command::new("debugfs")
        .args(["-R", "cat /upper/written.txt"])
        .arg(&rw)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "persisted\n");
}

trait WithArgv {
    fn clone_with_argv(self, argv: &[&str]) -> ExecRequest;
}

impl WithArgv for ExecRequest {
    fn clone_with_argv(mut self, argv: &[&str]) -> ExecRequest {
        self.argv = argv.iter().map(|s| s.to_string()).collect();
        self
    }
}
