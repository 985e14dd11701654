//! The VMM process's cgroup: memory, pids and cpu limits, on cgroup v2
//! where the host uses it, else on the v1 `memory`, `pids` and `cpu`
//! hierarchies (as runc does). The cgroup is named after the VM's jail
//! uid, `husk-vmm-<uid>`, so a leftover of a monitor that was killed is
//! found and reused by the next VM with that uid.
//!
//! On v1 the cgroups are made below the caller's own cgroup of each
//! hierarchy (a VM never escapes the limits its starter lives under); on
//! v2 below `/sys/fs/cgroup/husk` (the "no internal processes" rule keeps
//! a v2 cgroup with processes from having limited children).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{io_ctx, JailError};

const ROOT: &str = "/sys/fs/cgroup";

/// The v1 controllers a jail uses.
const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// The CFS period for the cpu quota.
const CPU_PERIOD_US: u64 = 100_000;

/// How long removal waits for the killed processes to leave.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A jail's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Memory, bytes.
    pub memory: u64,
    /// Tasks.
    pub pids: u64,
    /// CPUs' worth of time per period.
    pub cpus: u64,
}

/// The cgroup (one directory per v1 hierarchy, or one v2 directory).
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    /// The `cgroup.procs` files of where a process goes to leave it (the
    /// caller's own cgroups on v1, the root on v2).
    leave: Vec<PathBuf>,
    /// The path shown to users: relative to the hierarchy's root.
    display: String,
}

/// Whether the host's cgroup v2 hierarchy is mounted at /sys/fs/cgroup
/// with the controllers a jail needs.
fn unified() -> bool {
    std::fs::read_to_string(Path::new(ROOT).join("cgroup.controllers")).is_ok_and(|c| {
        let c: Vec<&str> = c.split_whitespace().collect();
        ["memory", "pids", "cpu"].iter().all(|n| c.contains(n))
    })
}

/// This process's cgroup in the v1 hierarchy holding `controller`.
fn own_v1_path(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.trim_start_matches('/').to_string())
    })
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), JailError> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(io_ctx(format!("writing {value} to {}", path.display())))
}

impl Cgroup {
    /// Makes (or reuses) the cgroup `name` with `limits`.
    pub fn create(name: &str, limits: &Limits) -> Result<Cgroup, JailError> {
        if unified() {
            Cgroup::create_v2(name, limits)
        } else {
            Cgroup::create_v1(name, limits)
        }
    }

    fn create_v2(name: &str, limits: &Limits) -> Result<Cgroup, JailError> {
        let root = Path::new(ROOT);
        let parent = root.join("husk");
        super::make_dir(&parent)?;
        write(root, "cgroup.subtree_control", "+memory +pids +cpu")?;
        write(&parent, "cgroup.subtree_control", "+memory +pids +cpu")?;
        let dir = parent.join(name);
        super::make_dir(&dir)?;
        write(&dir, "memory.max", &limits.memory.to_string())?;
        write(&dir, "memory.swap.max", "0").or_else(ignore_missing)?;
        write(&dir, "pids.max", &limits.pids.to_string())?;
        let quota = limits.cpus * CPU_PERIOD_US;
        write(&dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
        Ok(Cgroup {
            dirs: vec![dir],
            leave: vec![root.join("cgroup.procs")],
            display: format!("/husk/{name}"),
        })
    }

    fn create_v1(name: &str, limits: &Limits) -> Result<Cgroup, JailError> {
        let mut dirs = Vec::new();
        let mut leave = Vec::new();
        let mut display = String::new();
        for ctrl in V1_CONTROLLERS {
            let mount = Path::new(ROOT).join(ctrl);
            let own = own_v1_path(ctrl).ok_or(JailError::NoCgroup(ctrl))?;
            if !mount.join("cgroup.procs").exists() {
                return Err(JailError::NoCgroup(ctrl));
            }
            leave.push(mount.join(&own).join("cgroup.procs"));
            let rel = Path::new(&own).join("husk").join(name);
            let dir = mount.join(&rel);
            super::make_dir(&dir)?;
            if ctrl == "memory" {
                display = format!("/{}", rel.display());
            }
            dirs.push(dir);
        }
        let cg = Cgroup {
            dirs,
            leave,
            display,
        };
        let [memory, pids, cpu] = [&cg.dirs[0], &cg.dirs[1], &cg.dirs[2]];
        write(memory, "memory.limit_in_bytes", &limits.memory.to_string())?;
        write(pids, "pids.max", &limits.pids.to_string())?;
        write(cpu, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
        write(
            cpu,
            "cpu.cfs_quota_us",
            &(limits.cpus * CPU_PERIOD_US).to_string(),
        )?;
        Ok(cg)
    }

    /// Removes the empty cgroups next to this one that `stale` says
    /// belong to no running VM (left by a caller that was killed): it
    /// returns a guard (the uid's lock) held while one is removed.
    pub fn sweep_siblings<G>(&self, stale: impl Fn(&str) -> Option<G>) {
        for dir in &self.dirs {
            let Some(parent) = dir.parent() else { continue };
            for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.path() == *dir || !e.path().is_dir() {
                    continue;
                }
                if let Some(_guard) = stale(&name) {
                    // Fails (EBUSY) while a process is still in it.
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
    }

    /// The `cgroup.procs` files a process writes its pid to, to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// The cgroup's directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The `cgroup.procs` files a process of the cgroup writes its pid to,
    /// to leave it (before removing it).
    pub fn leave_files(&self) -> &[PathBuf] {
        &self.leave
    }

    /// The path `husk inspect` shows (`State.Jail.Cgroup`).
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Removes the cgroup once its processes have left (the caller killed
    /// them), waiting at most `REMOVE_TIMEOUT` (5 s); a failure is logged.
    pub fn remove(&self) {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        for dir in &self.dirs {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e) if Instant::now() >= deadline => {
                        log::warn!("removing cgroup {}: {e}", dir.display());
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

/// A limit file the kernel does not have (an optional accounting) is not
/// an error.
fn ignore_missing(e: JailError) -> Result<(), JailError> {
    match &e {
        JailError::Io { source, .. } if source.kind() == ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    }
}
