//! Helpers for tests/tests/containers.rs: a private store with busybox
//! test images loaded, husk runs against it, leak checks, a pseudo-terminal.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use husk_tests::{husk, kernel_or_skip, root_or_skip, run, vm_lock, vm_lock_all, Finished, VmSlot};

use crate::support::{write_docker_save, LayerTar, TestImage};

/// Generous: boots take 15-60 s on the nested-KVM hosts, several times
/// that when other VMs (or builds) share the two cores.
pub const VM_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a container's guest may take to reach its agent in these tests
/// (`HUSK_BOOT_TIMEOUT`): they run beside each other, ten VMs at once in
/// one of them, and guest kernel code is emulated on our hosts, so a boot
/// can take minutes; still well within [`VM_TIMEOUT`].
pub const BOOT_TIMEOUT: &str = "480";

/// The test image: busybox with its applets, users `root` and `app`
/// (1000), a non-executable /bin/notexec; Env IMG/OVR, WorkingDir
/// /srv/app (missing from the image: created at start).
pub const IMAGE: &str = "bb:test";
/// The same layer with `VOLUME /cache` and `StopSignal SIGUSR1`.
pub const VOLUME_IMAGE: &str = "bbvol:test";

/// A private store root with the test images, for one test.
pub struct Env {
    _lock: VmSlot,
    pub dir: tempfile::TempDir,
}

/// Whether the test can run here; [`husk_tests::skip`]s if not.
pub fn can_run(test: &str) -> bool {
    kernel_or_skip(test).is_some() && root_or_skip(test, "layer disks, KVM")
}

impl Env {
    /// A store with the test images loaded, or `None` (skipped).
    pub fn new(test: &str) -> Option<Env> {
        Env::with_slot(test, vm_lock)
    }

    /// Like [`Env::new`], for a test that runs many VMs at once: no other
    /// VM test of the binary runs beside it.
    pub fn exclusive(test: &str) -> Option<Env> {
        Env::with_slot(test, vm_lock_all)
    }

    fn with_slot(test: &str, slot: fn() -> VmSlot) -> Option<Env> {
        if !can_run(test) {
            return None;
        }
        let lock = slot();
        let env = Env {
            _lock: lock,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let layer = busybox_layer();
        for (tag, extra) in [
            (IMAGE, serde_json::json!({})),
            (
                VOLUME_IMAGE,
                serde_json::json!({"Volumes": {"/cache": {}}, "StopSignal": "SIGUSR1"}),
            ),
        ] {
            let img = image(&layer, extra);
            let tar = env.dir.path().join("img.tar");
            write_docker_save(&tar, &img, tag);
            env.ok(&["load", "-q", "-i", tar.to_str().expect("utf8")]);
        }
        Some(env)
    }

    /// The store root.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A husk command against this store.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = husk(&self.dir.path().join("run"), args);
        cmd.env("HUSK_ROOT", self.root())
            .env("HUSK_BOOT_TIMEOUT", BOOT_TIMEOUT);
        cmd
    }

    /// A husk command against this store, in no particular process group
    /// (for [`PtyProcess`], which makes it a session leader).
    pub fn session_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(husk_tests::husk_bin());
        cmd.args(args)
            .env("HUSK_ROOT", self.root())
            .env("HUSK_BOOT_TIMEOUT", BOOT_TIMEOUT)
            .env("HUSK_RUN_DIR", self.dir.path().join("run"));
        cmd
    }

    /// Runs husk to completion.
    pub fn husk(&self, args: &[&str]) -> Finished {
        let done = run(self.cmd(args), VM_TIMEOUT)
            .unwrap_or_else(|e| panic!("husk {args:?}: {e:#}\n{}", self.container_logs()));
        eprintln!(
            "husk {args:?} -> {:?}\n  stdout: {:?}\n  stderr: {:?}",
            done.status, done.stdout, done.stderr
        );
        done
    }

    /// The end of every container's monitor and console log (for a
    /// failure message).
    pub fn container_logs(&self) -> String {
        let mut out = String::new();
        let dirs = std::fs::read_dir(self.root().join("containers"));
        for dir in dirs.into_iter().flatten().flatten() {
            for log in ["monitor.log", "console.log"] {
                let path = dir.path().join(log);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                out += &format!("--- {} (end):\n{tail}\n", path.display());
            }
        }
        out
    }

    /// Runs husk, expecting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let f = self.husk(args);
        assert_eq!(
            f.code(),
            0,
            "husk {args:?} failed: {}{}",
            f.stdout,
            f.stderr
        );
        f.stdout
    }

    /// Runs husk, expecting exit code `code` and a one-line error.
    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        let f = self.husk(args);
        assert_eq!(f.code(), code, "husk {args:?}: {}{}", f.stdout, f.stderr);
        assert!(
            f.stderr.starts_with("husk: "),
            "one-line error expected: {}",
            f.stderr
        );
        assert!(!f.stderr.contains("panicked"), "{}", f.stderr);
        f.stderr
    }

    /// `husk inspect -f FORMAT name`.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, name]).trim().to_string()
    }

    /// Polls `check` every 200 ms until it holds, for at most `timeout`.
    pub fn eventually(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Monitor processes of this store still alive.
    pub fn monitors(&self) -> Vec<u32> {
        let root = self.root().display().to_string();
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.iter().any(|a| a == "container-monitor") && args.contains(&root) {
                found.push(pid);
            }
        }
        found
    }

    /// No container, no monitor, no leftover file in the container store.
    pub fn assert_clean(&self) {
        self.eventually("monitors to exit", Duration::from_secs(180), || {
            self.monitors().is_empty()
        });
        let left: Vec<String> = std::fs::read_dir(self.root().join("containers"))
            .expect("containers dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".lock")
            .collect();
        assert_eq!(left, Vec::<String>::new(), "leftover container files");
        assert_eq!(self.ok(&["ps", "-aq"]), "");
    }
}

impl Drop for Env {
    /// A failed test must not leave VMs behind: force-remove whatever is
    /// left, then kill monitors that survived that.
    fn drop(&mut self) {
        if let Ok(ids) = run(self.cmd(&["ps", "-aq"]), Duration::from_secs(60)) {
            for id in ids.stdout.split_whitespace() {
                let _ = run(self.cmd(&["rm", "-f", id]), Duration::from_secs(60));
            }
        }
        for pid in self.monitors() {
            kill(pid, rustix::process::Signal::KILL);
        }
    }
}

/// busybox-static with every applet linked, /etc/passwd and /etc/group
/// with `app` (1000), and a non-executable /bin/notexec.
pub fn busybox_layer() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").expect("/bin/busybox (apt install busybox-static)");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    let mut t = LayerTar::new();
    t.dir("bin", 0o755, 0, 0)
        .file("bin/busybox", &bb, 0o755, 0, 0)
        .file("bin/notexec", b"not a program\n", 0o644, 0, 0)
        .dir("etc", 0o755, 0, 0)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
            0o644,
            0,
            0,
        )
        .file("etc/group", b"root:x:0:\napp:x:1000:\n", 0o644, 0, 0)
        .dir("tmp", 0o1777, 0, 0);
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.contains('/') {
            t.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    t.finish()
}

/// An image of `layer` with the test config plus `extra` config keys.
pub fn image(layer: &[u8], extra: serde_json::Value) -> TestImage {
    let diff_id = crate::support::sha(layer);
    let mut config = serde_json::json!({
        "Cmd": ["sh"],
        "Env": ["PATH=/bin", "IMG=image", "OVR=image"],
        "WorkingDir": "/srv/app",
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .expect("json");
    TestImage {
        manifest: Vec::new(),
        config,
        layers: vec![layer.to_vec()],
        diff_ids: vec![diff_id],
    }
}

/// A process on a new pseudo-terminal (its controlling terminal).
pub struct PtyProcess {
    pub child: std::process::Child,
    master: OwnedFd,
    pub output: Vec<u8>,
}

impl PtyProcess {
    /// Starts `cmd` on a new pty of `rows` x `cols`.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> PtyProcess {
        let (mut master, mut slave) = (0, 0);
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two fds; the name and termios are unused.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty");
        // SAFETY: fresh fds owned by nobody else.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        cmd.stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe; they
        // make the pty the child's controlling terminal.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn on pty");
        PtyProcess {
            child,
            master,
            output: Vec::new(),
        }
    }

    /// Writes keystrokes.
    pub fn write(&self, bytes: &[u8]) {
        let mut f = std::fs::File::from(self.master.try_clone().expect("dup"));
        std::io::Write::write_all(&mut f, bytes).expect("write to pty");
    }

    /// Changes the terminal size (the kernel sends SIGWINCH to husk).
    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&self.master, ws).expect("TIOCSWINSZ");
    }

    /// Reads until the output (since the last match) contains `want`.
    pub fn expect(&mut self, want: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut f = std::fs::File::from(self.master.try_clone().expect("dup"));
        loop {
            let text = String::from_utf8_lossy(&self.output).into_owned();
            if let Some(i) = text.find(want) {
                let upto = i + want.len();
                self.output.drain(..upto.min(self.output.len()));
                return text[..upto].to_string();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {want:?} on the terminal; got {text:?}");
            use rustix::event::{poll, PollFd, PollFlags, Timespec};
            let mut p = [PollFd::new(&self.master, PollFlags::IN)];
            let wait = Timespec::try_from(left.min(Duration::from_secs(1))).ok();
            if poll(&mut p, wait.as_ref()).unwrap_or(0) > 0 {
                let mut buf = [0u8; 4096];
                match f.read(&mut buf) {
                    Ok(n) if n > 0 => self.output.extend_from_slice(&buf[..n]),
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }

    /// Waits for the exit code.
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("husk on the pty did not exit");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PtyProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `sig` to `pid`.
pub fn kill(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// The path of a file in a test directory, as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}
