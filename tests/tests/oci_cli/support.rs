//! Helpers for tests/tests/oci_cli.rs: `husk-oci` run directly on bundles
//! made here (its own root and `--log` file), a created container's
//! output through a pipe, bounded waits for a process's exit (a pidfd,
//! woken by the exit itself), a private podman with husk-oci as its
//! runtime, and leak checks.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use husk_tests::containerd::{processes_with, remove_layers_made_under, SHORT, VM_TIMEOUT};
use husk_tests::{
    agent_or_skip, busybox_root_dir, kernel_or_skip, oci_bin, root_or_skip, run, skip,
    tools_or_skip, vm_lock, Finished,
};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions};
use serde_json::{json, Value};

/// The test image as podman names it after `podman load`.
pub const PODMAN_IMAGE: &str = "localhost/bb:test";

/// Seconds a guest may take to boot here (a first warm start builds its
/// template: a cold boot and a snapshot on a slow nested host).
const BOOT_TIMEOUT: &str = "400";

/// Writes the busybox test image as a docker-save tarball tagged
/// `bb:test`.
pub fn busybox_image_tar(path: &Path) {
    let layer = crate::csupport::busybox_layer();
    let img = crate::csupport::image(&layer, json!({}));
    crate::support::write_docker_save(path, &img, "bb:test");
}

/// Waits (bounded) for child `pid` to exit and reaps it: its exit status,
/// 128+N after signal N.
pub fn wait_exit(pid: i32, timeout: Duration) -> i32 {
    let pidfd = exited_within(pid, timeout);
    let status = rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED)
        .expect("waitid")
        .expect("an exit status");
    status
        .exit_status()
        .or(status.terminating_signal().map(|s| 128 + s))
        .expect("exited or killed")
}

/// Waits (bounded) for `child` to exit and reaps it: its exit status,
/// 128+N after signal N.
pub fn wait_child(child: &mut std::process::Child, timeout: Duration) -> i32 {
    exited_within(child.id() as i32, timeout);
    let status = child.wait().expect("wait");
    status
        .code()
        .or(std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s))
        .expect("exited or killed")
}

/// Waits until process `pid` has exited (its pidfd, which becomes
/// readable then), within `timeout`; the pidfd.
fn exited_within(pid: i32, timeout: Duration) -> OwnedFd {
    let pid_ = Pid::from_raw(pid).expect("a pid");
    let pidfd = rustix::process::pidfd_open(pid_, PidfdFlags::empty()).expect("pidfd_open");
    let deadline = Instant::now() + timeout;
    loop {
        let left = Timespec::try_from(deadline.saturating_duration_since(Instant::now()))
            .expect("timeout");
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&left)) {
            Ok(0) => panic!("process {pid} did not exit within {timeout:?}"),
            Ok(_) => return pidfd,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("waiting for {pid}: {e}"),
        }
    }
}

/// What a container wrote to its stdout and stderr (one pipe), read on a
/// thread.
pub struct Output {
    rx: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl Output {
    fn new(read: OwnedFd) -> Output {
        let (tx, rx) = mpsc::channel();
        let mut file = std::fs::File::from(read);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = file.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Output {
            rx,
            seen: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Waits until `want` has been written.
    pub fn expect(&mut self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.text().contains(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.seen.extend(chunk),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {want:?} within {timeout:?}; got {:?}", self.text())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("output ended without {want:?}: {:?}", self.text())
                }
            }
        }
    }

    /// Whether nothing has arrived so far (no waiting).
    pub fn nothing_yet(&mut self) -> bool {
        while let Ok(chunk) = self.rx.try_recv() {
            self.seen.extend(chunk);
        }
        self.seen.is_empty()
    }

    /// Everything, once every writer has closed the pipe.
    pub fn rest(mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.seen.extend(chunk),
                Err(RecvTimeoutError::Disconnected) => return self.text(),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("output not closed within {timeout:?}: {:?}", self.text())
                }
            }
        }
    }
}

/// husk-oci run directly: its own root and `--log` file, bundles made in
/// a temporary directory.
pub struct Direct {
    _lock: husk_tests::VmSlot,
    pub dir: tempfile::TempDir,
    kernel: PathBuf,
    agent: PathBuf,
}

impl Direct {
    /// The environment, or `None` (skipped).
    pub fn new(test: &str) -> Option<Direct> {
        let kernel = kernel_or_skip(test)?;
        let agent = agent_or_skip(test)?;
        if !root_or_skip(test, "KVM, layer disks")
            || !tools_or_skip(
                test,
                &["/bin/busybox", "/usr/bin/mkfs.erofs"],
                "apt install busybox-static erofs-utils",
            )
        {
            return None;
        }
        if !oci_bin().is_file() {
            skip(test, &format!("{} is not built", oci_bin().display()));
            return None;
        }
        Some(Direct {
            _lock: vm_lock(),
            dir: tempfile::tempdir().expect("tempdir"),
            kernel,
            agent,
        })
    }

    /// The state root (`--root`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The `--log` file (JSON).
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("log.json")
    }

    /// `husk-oci --root ... --log ... --log-format json args...`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(oci_bin());
        cmd.arg("--root")
            .arg(self.root())
            .arg("--log")
            .arg(self.log())
            .args(["--log-format", "json"])
            .args(args)
            .env("HUSK_KERNEL", &self.kernel)
            .env("HUSK_AGENT", &self.agent)
            .env("HUSK_BOOT_TIMEOUT", BOOT_TIMEOUT)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `husk-oci args` to completion (commands that leave no process
    /// holding their output).
    pub fn run(&self, args: &[&str]) -> Finished {
        let done = run(self.cmd(args), VM_TIMEOUT).expect("running husk-oci");
        eprintln!(
            "husk-oci {args:?} -> {:?}\n  stdout: {:?}\n  stderr: {:?}",
            done.status, done.stdout, done.stderr
        );
        done
    }

    /// Runs `husk-oci args`, expecting success; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let done = self.run(args);
        assert_eq!(done.code(), 0, "husk-oci {args:?}: {}", done.stderr);
        done.stdout
    }

    /// `state id`, parsed.
    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state JSON")
    }

    /// A bundle like `runc spec` writes (with a writable root) running
    /// `args`, with a busybox root directory.
    pub fn bundle(&self, name: &str, args: &[&str]) -> PathBuf {
        let dir = self.dir.path().join(name);
        busybox_root_dir(&dir.join("rootfs")).expect("rootfs");
        let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        let spec = json!({
            "ociVersion": "1.0.2-dev",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/bin", "TERM=xterm"],
                "cwd": "/",
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps,
                                 "ambient": caps},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs"},
            "hostname": "runc",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                             "gid=5"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                 "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                 "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
            ],
            "annotations": {"io.example.test": "oci_cli"},
            "linux": {
                "resources": {"devices": [{"allow": false, "access": "rwm"}]},
                "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                               {"type": "uts"}, {"type": "mount"}],
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"]
            }
        });
        std::fs::write(dir.join("config.json"), spec.to_string()).expect("config.json");
        dir
    }

    /// `create --bundle bundle --pid-file ... id` with a pipe as its
    /// stdout and stderr (the container's); the pid file's pid and the
    /// output.
    pub fn create(&self, id: &str, bundle: &Path) -> (i32, Output) {
        let pid_file = self.dir.path().join(format!("{id}.pid"));
        let _ = std::fs::remove_file(&pid_file);
        let (read, write) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
        let output = Output::new(read);
        let mut cmd = self.cmd(&[
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            id,
        ]);
        cmd.stdout(Stdio::from(write.try_clone().expect("dup")))
            .stderr(Stdio::from(write));
        let mut child = cmd.spawn().expect("husk-oci create");
        // Only the container's side keeps the pipe open from here.
        drop(cmd);
        let status = wait_child(&mut child, VM_TIMEOUT);
        if status != 0 {
            panic!("create {id}: exit {status}: {}", output.rest(SHORT));
        }
        let pid = std::fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("a pid");
        (pid, output)
    }

    /// No monitor, container or layer disk left.
    pub fn assert_clean(&self) {
        assert_no_monitors(&self.root());
        assert_no_containers(&self.root());
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        kill_all(&processes_with(&[
            "container-monitor",
            &self.root().display().to_string(),
        ]));
    }
}

/// Waits (bounded) until no monitor of store `root` is left.
pub fn assert_no_monitors(root: &Path) {
    let root = root.display().to_string();
    let deadline = Instant::now() + SHORT;
    while !processes_with(&["container-monitor", &root]).is_empty() {
        assert!(Instant::now() < deadline, "monitors of {root} left");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// No container and no layer disk in husk-oci store `root`.
pub fn assert_no_containers(root: &Path) {
    let entries = |dir: PathBuf| -> Vec<String> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".lock")
            .collect()
    };
    assert_eq!(entries(root.join("containers")), Vec::<String>::new());
    assert_eq!(entries(root.join("oci-layers")), Vec::<String>::new());
}

fn kill_all(pids: &[u32]) {
    for &pid in pids {
        crate::csupport::kill(pid, rustix::process::Signal::KILL);
    }
}

/// A private podman (its own storage, run and tmp directories) whose
/// runtime is husk-oci, with the busybox test image loaded.
pub struct Podman {
    _lock: husk_tests::VmSlot,
    pub dir: tempfile::TempDir,
    runtime: PathBuf,
}

impl Podman {
    /// The environment, or `None` (skipped).
    pub fn new(test: &str) -> Option<Podman> {
        let kernel = kernel_or_skip(test)?;
        let agent = agent_or_skip(test)?;
        if !root_or_skip(test, "podman, KVM")
            || !tools_or_skip(
                test,
                &["/usr/bin/podman", "/usr/bin/conmon", "/bin/busybox"],
                "apt install podman conmon busybox-static",
            )
        {
            return None;
        }
        if !oci_bin().is_file() {
            skip(test, &format!("{} is not built", oci_bin().display()));
            return None;
        }
        let lock = vm_lock();
        let dir = tempfile::tempdir().expect("tempdir");
        // podman gives conmon and the runtime a fixed environment, so the
        // test's assets and state root reach husk-oci through a wrapper
        // (installed, husk-oci finds /usr/local/lib/husk by itself).
        let runtime = dir.path().join("husk-oci");
        let script = format!(
            "#!/bin/sh\nexport HUSK_KERNEL='{}' HUSK_AGENT='{}' HUSK_BOOT_TIMEOUT={BOOT_TIMEOUT}\n\
             exec '{}' --root '{}' \"$@\"\n",
            kernel.display(),
            agent.display(),
            oci_bin().display(),
            dir.path().join("oci").display(),
        );
        std::fs::write(&runtime, script).expect("wrapper");
        let perms = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&runtime, perms).expect("chmod");
        let p = Podman {
            _lock: lock,
            dir,
            runtime,
        };
        let tar = p.dir.path().join("bb.tar");
        busybox_image_tar(&tar);
        p.ok(&["load", "-i", tar.to_str().unwrap()]);
        Some(p)
    }

    /// `podman` with the private directories and husk-oci as runtime.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("/usr/bin/podman");
        cmd.arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "overlay"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .arg("--runtime")
            .arg(&self.runtime)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `podman args` to completion within `timeout`.
    pub fn run(&self, args: &[&str], timeout: Duration) -> Finished {
        let done = run(self.cmd(args), timeout).expect("running podman");
        eprintln!(
            "podman {args:?} -> {:?}\n  stdout: {:?}\n  stderr: {:?}",
            done.status, done.stdout, done.stderr
        );
        done
    }

    /// Runs `podman args`, expecting success; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let done = self.run(args, VM_TIMEOUT);
        assert_eq!(done.code(), 0, "podman {args:?}: {}", done.stderr);
        done.stdout
    }

    /// No monitor, container or layer disk of husk-oci left.
    pub fn assert_clean(&self) {
        assert_no_monitors(&self.dir.path().join("oci"));
        assert_no_containers(&self.dir.path().join("oci"));
    }
}

impl Drop for Podman {
    /// Nothing outlives the test: containers, conmon, monitors, mounts.
    fn drop(&mut self) {
        let _ = run(self.cmd(&["rm", "--all", "--force"]), SHORT);
        kill_all(&processes_with(&[&self.dir.path().display().to_string()]));
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(self.dir.path()))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(m)
                .stderr(Stdio::null())
                .status();
        }
        // This podman's image layers are gone with it: so are their disks.
        remove_layers_made_under(self.dir.path());
    }
}
