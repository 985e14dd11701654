//! Helpers shared by the end-to-end tests: locating the `husk` binary and
//! the guest assets, building root filesystems from Debian's busybox-static,
//! running `husk` with timeouts, and checking for leaked processes and
//! files.

pub mod containerd;
pub mod net;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The `husk` binary: `$HUSK_BIN`, else next to the test executable
/// (`target/<profile>/husk`).
pub fn husk_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HUSK_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/husk
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps");
    profile_dir.join("husk")
}

/// The containerd shim binary: `$HUSK_SHIM`, else next to the test
/// executable (`target/<profile>/containerd-shim-husk-v2`).
pub fn shim_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HUSK_SHIM") {
        return PathBuf::from(p);
    }
    husk_bin().with_file_name("containerd-shim-husk-v2")
}

/// The OCI runtime CLI: `$HUSK_OCI`, else next to the test executable
/// (`target/<profile>/husk-oci`).
pub fn oci_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HUSK_OCI") {
        return PathBuf::from(p);
    }
    husk_bin().with_file_name("husk-oci")
}

/// The variable scripts/test.sh sets so that a test that cannot run here
/// fails instead of skipping.
/// VM memory for the OOM tests: the smallest VM, so that the guest's OOM
/// killer comes after touching as little memory as possible (each page a
/// guest process touches costs guest-kernel time, which is slow on nested
/// PVM hosts: about 2 s per MiB).
pub const OOM_VM_MIB: u32 = 64;

/// A shell script for a container that gets one of its processes OOM-killed
/// and lives: one `dd` buffer just under the guest's total memory is allowed
/// by the kernel's overcommit heuristic (it refuses only more than MemTotal)
/// but cannot be filled, since the kernel and the agent use some of it; the
/// OOM killer ends the `dd` (the largest process) and the shell prints
/// `survived 137`.
pub const OOM_SCRIPT: &str =
    "mib=$(awk '/^MemTotal:/ { print int($2 / 1024) - 1 }' /proc/meminfo); \
     dd if=/dev/zero of=/dev/null bs=${mib}M count=1; echo survived $?";

pub const STRICT_ENV: &str = "HUSK_TEST_STRICT";

/// Whether skips are failures: [`STRICT_ENV`] is set to anything but
/// empty or `0`.
pub fn strict() -> bool {
    std::env::var_os(STRICT_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// `test` cannot run here because of `reason`: under scripts/test.sh
/// ([`strict`]) the test fails with the reason; under a plain `cargo test`
/// it prints that it is skipped and the caller returns.
pub fn skip(test: &str, reason: &str) {
    if strict() {
        panic!("{test} cannot run: {reason} ({STRICT_ENV} is set: skipping is a failure)");
    }
    eprintln!("SKIPPED {test}: {reason}");
}

/// The guest kernel from `$HUSK_KERNEL`, or `None` after [`skip`]ping
/// (plain `cargo test` without scripts/test.sh).
pub fn kernel_or_skip(test: &str) -> Option<PathBuf> {
    match std::env::var_os("HUSK_KERNEL") {
        Some(k) => Some(PathBuf::from(k)),
        None => {
            skip(
                test,
                "HUSK_KERNEL is not set (run scripts/test.sh to boot VMs)",
            );
            None
        }
    }
}

/// The static agent from `$HUSK_AGENT`, or `None` after [`skip`]ping.
pub fn agent_or_skip(test: &str) -> Option<PathBuf> {
    match std::env::var_os("HUSK_AGENT") {
        Some(a) => Some(PathBuf::from(a)),
        None => {
            skip(
                test,
                "HUSK_AGENT is not set (run scripts/test.sh to build the static agent)",
            );
            None
        }
    }
}

/// Whether the test runs as root; [`skip`]s with `needs` (what root is
/// needed for) if not.
pub fn root_or_skip(test: &str, needs: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        skip(test, &format!("needs root ({needs})"));
    }
    root
}

/// Whether every program in `tools` (absolute paths) exists; [`skip`]s
/// naming the first missing one and `install` (how to get it) if not.
pub fn tools_or_skip(test: &str, tools: &[&str], install: &str) -> bool {
    match tools.iter().find(|t| !Path::new(t).exists()) {
        Some(missing) => {
            skip(test, &format!("{missing} is missing ({install})"));
            false
        }
        None => true,
    }
}

/// How many tests of one test binary may run VMs at once when
/// `HUSK_TEST_VMS` does not say: one per core of our two-core hosts (a VM
/// keeps most of one core busy while it boots).
const DEFAULT_VM_SLOTS: usize = 2;

/// A test's right to run VMs (some of the slots); given back when dropped.
pub struct VmSlot {
    slots: usize,
    since: Instant,
}

impl Drop for VmSlot {
    /// Gives the slots back; with `HUSK_TEST_TIMES=FILE`, appends the
    /// test's name and how long it held them to FILE.
    fn drop(&mut self) {
        let (taken, freed) = &VM_SLOTS;
        *taken.lock().unwrap_or_else(|e| e.into_inner()) -= self.slots;
        freed.notify_all();
        if let Some(file) = std::env::var_os("HUSK_TEST_TIMES") {
            let test = std::thread::current().name().unwrap_or("?").to_string();
            let line = format!("{test} {:.1}\n", self.since.elapsed().as_secs_f64());
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
        }
    }
}

/// Slots in use, and the condition a waiter sleeps on.
static VM_SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// The number of slots: `HUSK_TEST_VMS`, else [`DEFAULT_VM_SLOTS`].
fn vm_slots() -> usize {
    std::env::var("HUSK_TEST_VMS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_VM_SLOTS)
}

/// Takes `want` slots once that many are free.
fn take_slots(want: usize) -> VmSlot {
    let (taken, freed) = &VM_SLOTS;
    let mut n = taken.lock().unwrap_or_else(|e| e.into_inner());
    while *n + want > vm_slots().max(want) {
        n = freed.wait(n).unwrap_or_else(|e| e.into_inner());
    }
    *n += want;
    VmSlot {
        slots: want,
        since: Instant::now(),
    }
}

/// Waits for one of the `HUSK_TEST_VMS` (default 2)
/// slots for tests that boot VMs, so a test binary never runs more VM
/// tests at once than the host has cores.
pub fn vm_lock() -> VmSlot {
    take_slots(1)
}

/// Waits until no other test of this binary runs VMs and keeps it so: for
/// a test that runs many VMs at once.
pub fn vm_lock_all() -> VmSlot {
    take_slots(vm_slots())
}

/// Builds an ext4 image at `image` from Debian's busybox-static: /bin with
/// busybox and its applet links, /etc, and empty proc, sys, dev, tmp.
pub fn busybox_rootfs(work: &Path, image: &Path) -> Result<()> {
    let root = work.join("rootfs");
    busybox_root_dir(&root)?;
    mkfs_ext4(&root, image)
}

/// Fills directory `root` with Debian's busybox-static: /bin with busybox
/// and its applet links, /etc/passwd, and empty proc, sys, dev, tmp, root.
pub fn busybox_root_dir(root: &Path) -> Result<()> {
    for dir in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("copying /bin/busybox (apt install busybox-static)")?;
    // The host's busybox lists the applets, not the fresh copy: another
    // test thread forking while the copy was open for writing would hold
    // it open in its child, and executing the copy would fail with
    // ETXTBSY ("Text file busy").
    let list = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    Ok(())
}

/// `mkfs.ext4 -q -d dir image 64M`.
pub fn mkfs_ext4(dir: &Path, image: &Path) -> Result<()> {
    // An existing file keeps mke2fs from announcing that it creates one.
    std::fs::File::create(image).with_context(|| format!("creating {}", image.display()))?;
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(dir)
        .arg(image)
        .arg("64M")
        .status()
        .context("running mkfs.ext4")?;
    if !status.success() {
        bail!("mkfs.ext4 failed: {status}");
    }
    Ok(())
}

/// A finished `husk` process.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
    /// Process id (also its process group id).
    pub pid: u32,
}

impl Finished {
    /// The exit code (-1 if killed by a signal).
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

/// A `husk` command in its own process group, with the test's asset
/// environment and `HUSK_RUN_DIR` set to `run_dir`.
pub fn husk(run_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(husk_bin());
    cmd.args(args)
        .env("HUSK_RUN_DIR", run_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd
}

/// A running `husk`, with its output collected on threads.
pub struct Running {
    child: Child,
    stdout_lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Running {
    /// Starts `cmd` (made with [`husk`]).
    pub fn start(mut cmd: Command) -> Result<Self> {
        let mut child = cmd.spawn().context("starting husk")?;
        let out = child.stdout.take().context("stdout")?;
        let mut err = child.stderr.take().context("stderr")?;
        let (tx, stdout_lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(out);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Ok(Self {
            child,
            stdout_lines,
            stdout: Vec::new(),
            stderr,
        })
    }

    /// The write end of husk's stdin, if `cmd` had `Stdio::piped()` there
    /// (once; dropping it closes husk's stdin).
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stdout line equal to `want` (without the newline).
    pub fn wait_for_line(&mut self, want: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.trim_end_matches('\n') == want;
                    self.stdout.push(line);
                    if done {
                        return Ok(());
                    }
                }
                Err(_) => bail!("no line {want:?} within {timeout:?}; got {:?}", self.stdout),
            }
        }
    }

    /// Sends `sig` to husk.
    pub fn signal(&self, sig: rustix::process::Signal) {
        let _ = rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), sig);
    }

    /// Waits for husk to exit; on timeout kills its process group and
    /// fails.
    pub fn finish(mut self, timeout: Duration) -> Result<Finished> {
        let pid = self.child.id();
        let group = rustix::process::Pid::from_child(&self.child);
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                let _ = self.child.wait();
                bail!("husk did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let rest: Vec<String> = self.stdout_lines.iter().collect();
        self.stdout.extend(rest);
        let stderr = self.stderr.join().unwrap_or_default();
        Ok(Finished {
            status,
            stdout: self.stdout.concat(),
            stderr,
            pid,
        })
    }
}

/// Runs `cmd` to completion within `timeout`.
pub fn run(cmd: Command, timeout: Duration) -> Result<Finished> {
    Running::start(cmd)?.finish(timeout)
}

/// Processes still alive in process group `pgid` (husk's children).
pub fn processes_in_group(pgid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state ppid pgrp ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) {
            found.push(pid);
        }
    }
    found
}

/// Entries left in `dir` (recursively listed, relative paths).
pub fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}
