//! A private containerd for end-to-end tests (tests/tests/containerd.rs
//! with husk's shim, tests/tests/oci_cli.rs with containerd's runc shim
//! driving husk-oci): its own root, state, sockets and config, a runtime
//! binary's directory first on its PATH, a test image imported; `ctr`
//! against it, its event stream, and leak checks.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{
    agent_or_skip, kernel_or_skip, root_or_skip, run, skip, tools_or_skip, vm_lock, Finished,
};

/// The test image as containerd names it (the docker-save tarball the
/// caller writes tags it `bb:test`).
pub const IMAGE: &str = "docker.io/library/bb:test";
/// The containerd namespace the tests use.
pub const NS: &str = "husktest";
/// Bound for anything that boots a VM: boots take 15-60 s on the nested
/// KVM hosts, several times that when two VMs share the two cores, and a
/// first warm start builds a template.
pub const VM_TIMEOUT: Duration = Duration::from_secs(480);
/// Bound for anything else.
pub const SHORT: Duration = Duration::from_secs(60);

/// A private containerd for one test.
pub struct Containerd {
    _lock: crate::VmSlot,
    pub dir: tempfile::TempDir,
    child: Child,
    /// Shim sockets that existed before (in containerd's shared socket
    /// directory).
    sockets: Vec<PathBuf>,
}

impl Containerd {
    /// Starts containerd with `runtime_bin`'s directory first on its PATH
    /// (where it finds shims; `runtime_bin` must exist) and imports the
    /// test image that `write_image` writes (a docker-save tarball tagged
    /// `bb:test`) at the path it is given; `None` when skipped.
    pub fn start(
        test: &str,
        runtime_bin: &Path,
        write_image: impl FnOnce(&Path),
    ) -> Option<Containerd> {
        let kernel = kernel_or_skip(test)?;
        let agent = agent_or_skip(test)?;
        if !root_or_skip(test, "containerd, layer disks, KVM")
            || !tools_or_skip(
                test,
                &["/usr/bin/containerd", "/usr/bin/ctr", "/bin/busybox"],
                "apt install containerd busybox-static",
            )
        {
            return None;
        }
        if !runtime_bin.is_file() {
            skip(test, &format!("{} is not built", runtime_bin.display()));
            return None;
        }
        let lock = vm_lock();
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  level = "debug"
"#,
            root = p.join("root").display(),
            state = p.join("state").display(),
            sock = p.join("c.sock").display(),
        );
        std::fs::write(p.join("config.toml"), config).expect("config");
        let path = format!(
            "{}:{}",
            runtime_bin.parent().expect("runtime dir").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(p.join("containerd.log")).expect("log");
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(p.join("config.toml"))
            .env("PATH", path)
            .env("HUSK_KERNEL", kernel)
            .env("HUSK_AGENT", agent)
            .env("HUSK_CACHE", husk_cache())
            .env("HUSK_CONTAINERD_ROOT", p.join("husk"))
            .env("HUSK_BOOT_TIMEOUT", "400")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let c = Containerd {
            _lock: lock,
            dir,
            child,
            sockets: shim_sockets(),
        };
        c.until("containerd serves its socket", SHORT, || {
            c.run(&["version"], SHORT).code() == 0
        });
        let tar = c.dir.path().join("bb.tar");
        write_image(&tar);
        c.ok(&["image", "import", tar.to_str().expect("utf8")]);
        Some(c)
    }

    /// A `ctr` command against this containerd, in the test namespace.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("/usr/bin/ctr");
        cmd.arg("-a")
            .arg(self.dir.path().join("c.sock"))
            .args(["-n", NS])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `ctr args` to completion within `timeout`.
    pub fn run(&self, args: &[&str], timeout: Duration) -> Finished {
        let done = run(self.ctr(args), timeout).expect("running ctr");
        eprintln!(
            "ctr {args:?} -> {:?}\n  stdout: {:?}\n  stderr: {:?}",
            done.status, done.stdout, done.stderr
        );
        done
    }

    /// Runs `ctr args`, expecting success; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let f = self.run(args, VM_TIMEOUT);
        assert_eq!(f.code(), 0, "ctr {args:?}: {}{}", f.stdout, f.stderr);
        f.stdout
    }

    /// Polls `check` (every 100 ms) until it holds, within `timeout`.
    pub fn until(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !check() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting: {what}\ncontainerd log:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The end of containerd's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Starts following `ctr events`.
    pub fn events(&self) -> Events {
        let mut cmd = Command::new("/usr/bin/ctr");
        cmd.arg("-a")
            .arg(self.dir.path().join("c.sock"))
            .arg("events")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("ctr events");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Events {
            child,
            rx,
            seen: Vec::new(),
        }
    }

    /// The husk container store of the test namespace.
    pub fn husk_root(&self) -> PathBuf {
        self.dir.path().join("husk").join(NS)
    }

    /// Monitor processes of the test namespace's store.
    pub fn monitors(&self) -> Vec<u32> {
        processes_with(&["container-monitor", &self.husk_root().display().to_string()])
    }

    /// Shim processes serving this containerd.
    pub fn shims(&self) -> Vec<u32> {
        let sock = self.dir.path().join("c.sock").display().to_string();
        processes_with(&["containerd-shim-husk-v2", &sock])
    }

    /// Shim sockets made since this containerd started that nobody
    /// listens on any more (a shim that exited without removing its own).
    pub fn dead_sockets(&self) -> Vec<PathBuf> {
        shim_sockets()
            .into_iter()
            .filter(|p| !self.sockets.contains(p))
            .filter(|p| std::os::unix::net::UnixStream::connect(p).is_err())
            .collect()
    }

    /// No monitor left, no container in the husk store, no shim socket.
    pub fn assert_clean(&self) {
        self.until("monitors to exit", SHORT, || self.monitors().is_empty());
        self.until("shims to remove their sockets", SHORT, || {
            self.dead_sockets().is_empty()
        });
        let left: Vec<String> = std::fs::read_dir(self.husk_root().join("containers"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".lock")
            .collect();
        assert_eq!(left, Vec::<String>::new(), "leftover husk containers");
    }
}

impl Drop for Containerd {
    /// Nothing outlives the test: monitors, shims, containerd.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("containerd log (end):\n{}", self.log_tail());
        }
        let own = self.dir.path().display().to_string();
        for pid in processes_with(&[&own]) {
            kill(pid, rustix::process::Signal::KILL);
        }
        for pid in self.monitors().into_iter().chain(self.shims()) {
            kill(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // This containerd's snapshots are gone with it: so are their disks.
        remove_layers_made_under(self.dir.path());
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.path().join("root"))
            .stderr(Stdio::null())
            .status();
    }
}

/// husk's cache (where snapshot layer disks are kept).
pub fn husk_cache() -> PathBuf {
    std::env::var_os("HUSK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/husk"))
}

/// The snapshot layer disks in the cache.
pub fn cached_layers() -> Vec<PathBuf> {
    let dir = husk_cache().join("snapshot-layers");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "erofs"))
        .collect();
    out.sort();
    out
}

/// The cached snapshot layer disks made from directories under `dir`
/// (their `.src` file names the directory): a test's own, never those of
/// a test running beside it.
pub fn layers_made_under(dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    cached_layers()
        .into_iter()
        .filter(|disk| {
            let src = std::fs::read_to_string(disk.with_extension("src")).unwrap_or_default();
            Path::new(&src).starts_with(&dir)
        })
        .collect()
}

/// Removes the disks of [`layers_made_under`] `dir`.
pub fn remove_layers_made_under(dir: &Path) {
    for disk in layers_made_under(dir) {
        for ext in ["erofs", "src", "lock"] {
            let _ = std::fs::remove_file(disk.with_extension(ext));
        }
    }
}

/// The files in containerd's shim socket directory.
fn shim_sockets() -> Vec<PathBuf> {
    std::fs::read_dir("/run/containerd/s")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// Pids of processes whose command line has every one of `words`.
pub fn processes_with(words: &[&str]) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if words.iter().all(|w| text.contains(w)) {
            found.push(pid);
        }
    }
    found
}

/// `ctr events`, followed.
pub struct Events {
    child: Child,
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Events {
    /// Waits for an event of `topic` whose JSON has `"key":value` pairs
    /// `fields` (e.g. `("container_id", "\"t1\"")`); returns its line.
    pub fn wait(&mut self, topic: &str, fields: &[(&str, &str)], timeout: Duration) -> String {
        let matches = |line: &str| {
            line.contains(&format!(" {topic} "))
                && fields
                    .iter()
                    .all(|(k, v)| line.contains(&format!("\"{k}\":{v}")))
        };
        if let Some(i) = self.seen.iter().position(|l| matches(l)) {
            return self.seen.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no {topic} event with {fields:?} within {timeout:?}; saw {:#?}",
                    self.seen
                ),
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// Sends `sig` to `pid`.
fn kill(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}
