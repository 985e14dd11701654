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

/// Whether the cgroup v2 hierarchy at `root` (/sys/fs/cgroup on a v2
/// host) has the controllers a jail needs. A hybrid host's empty unified
/// hierarchy (ours: /sys/fs/cgroup/unified) has none.
fn unified(root: &Path) -> bool {
    std::fs::read_to_string(root.join("cgroup.controllers")).is_ok_and(|c| {
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
        let root = Path::new(ROOT);
        if unified(root) {
            Cgroup::create_v2(root, name, limits)
        } else {
            Cgroup::create_v1(name, limits)
        }
    }

    /// Makes the cgroup `husk/<name>` below the v2 hierarchy at `root`.
    fn create_v2(root: &Path, name: &str, limits: &Limits) -> Result<Cgroup, JailError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 hierarchy as the kernel shows its root: the controllers file
    /// and the files `create_v2` writes (cgroupfs has them in every
    /// directory; a plain directory gets them as they are written).
    fn fake_v2_root(controllers: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), controllers).unwrap();
        dir
    }

    #[test]
    fn v2_is_used_only_with_the_controllers_a_jail_needs() {
        assert!(unified(
            fake_v2_root("cpuset cpu io memory hugetlb pids rdma\n").path()
        ));
        // A hybrid host's unified hierarchy: mounted, no controllers.
        assert!(!unified(fake_v2_root("\n").path()));
        assert!(!unified(fake_v2_root("cpu io memory\n").path()));
        assert!(!unified(Path::new("/nonexistent")));
    }

    #[test]
    fn v2_cgroup_gets_the_limits_below_a_delegating_parent() {
        let root = fake_v2_root("cpu memory pids\n");
        let limits = Limits {
            memory: 320 << 20,
            pids: 17,
            cpus: 2,
        };
        let cg = Cgroup::create_v2(root.path(), "husk-vmm-900001", &limits).unwrap();
        let read = |rel: &str| std::fs::read_to_string(root.path().join(rel)).unwrap();
        // Controllers are enabled for the children of the root and of husk/.
        assert_eq!(read("cgroup.subtree_control"), "+memory +pids +cpu");
        assert_eq!(read("husk/cgroup.subtree_control"), "+memory +pids +cpu");
        let dir = "husk/husk-vmm-900001";
        assert_eq!(
            read(&format!("{dir}/memory.max")),
            (320u64 << 20).to_string()
        );
        assert_eq!(read(&format!("{dir}/memory.swap.max")), "0");
        assert_eq!(read(&format!("{dir}/pids.max")), "17");
        assert_eq!(read(&format!("{dir}/cpu.max")), "200000 100000");
        assert_eq!(cg.dirs(), [root.path().join(dir)]);
        assert_eq!(
            cg.procs_files(),
            [root.path().join(dir).join("cgroup.procs")]
        );
        // A process leaves for the root (v2 has no processes in inner nodes).
        assert_eq!(cg.leave_files(), [root.path().join("cgroup.procs")]);
        assert_eq!(cg.display(), "/husk/husk-vmm-900001");
        // Made again (a leftover of a killed caller), it is reused.
        Cgroup::create_v2(root.path(), "husk-vmm-900001", &limits).unwrap();
    }
}
