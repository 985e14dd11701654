//! `husk stats` and `husk top`: a running container's figures, from two
//! sides. The host's: the VMM process (the jailed `husk-vmm`, `State.Jail.Pid`,
//! or the monitor when the VMM runs unjailed in it) — its resident memory
//! (`VmRSS`) and CPU time (utime + stime of all its threads, the vCPUs'
//! included). The guest's, through the agent (`Stats`, `Top`): the guest
//! kernel's memory use (`MemTotal` − `MemAvailable`), its processes, and
//! the network and disk byte counters its kernel keeps.

use husk_protocol::{GuestProcess, GuestStats};

use crate::exec::connect_agent;
use crate::{Error, Runtime};

/// Clock ticks per second of /proc's CPU times (`USER_HZ`, 100 on Linux).
pub const USER_HZ: u64 = 100;

/// utime and stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in
/// clock ticks.
pub fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3.
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

/// `VmRSS` of a `/proc/<pid>/status`, in bytes.
pub fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The host's view of a VMM process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmmUsage {
    /// Its resident memory, bytes.
    pub rss: u64,
    /// Its CPU time (user + system), nanoseconds.
    pub cpu_ns: u64,
}

impl VmmUsage {
    /// The figures of process `pid`; `None` when it is gone.
    pub fn of(pid: u32) -> Option<VmmUsage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let (user, kernel) = cpu_ticks(&stat)?;
        Some(VmmUsage {
            rss: vm_rss(&status).unwrap_or(0),
            cpu_ns: user
                .saturating_add(kernel)
                .saturating_mul(1_000_000_000 / USER_HZ),
        })
    }
}

/// One sample of a running container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The host's view of its VMM (`None`: the process is gone).
    pub vmm: Option<VmmUsage>,
    /// The guest's own figures (guest input: for display only).
    pub guest: GuestStats,
    /// The VM's configured memory, bytes.
    pub memory_limit: u64,
    /// Its vCPUs.
    pub vcpus: u32,
}

impl Runtime {
    /// A sample of running container `name`.
    pub fn stats(&self, name: &str) -> Result<Sample, Error> {
        let c = self.container(name)?;
        let mut conn = connect_agent(&c.paths, c.id.short())?;
        let guest = conn
            .guest_stats()
            .map_err(|e| Error::Agent(crate::error_chain(&e)))?;
        let vmm_pid = match (&c.state.jail, &c.state.monitor) {
            (Some(j), _) => Some(j.pid),
            (None, Some(m)) => u32::try_from(m.pid).ok(),
            (None, None) => None,
        };
        Ok(Sample {
            vmm: vmm_pid.and_then(VmmUsage::of),
            guest,
            memory_limit: u64::from(c.config.memory_mib) << 20,
            vcpus: u32::from(c.config.cpus),
        })
    }

    /// The processes in running container `name`'s VM (the agent and
    /// kernel threads left out).
    pub fn top(&self, name: &str) -> Result<Vec<GuestProcess>, Error> {
        let c = self.container(name)?;
        let mut conn = connect_agent(&c.paths, c.id.short())?;
        conn.top().map_err(|e| Error::Agent(crate::error_chain(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "42 (husk (monitor)) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1 2 3";
        assert_eq!(cpu_ticks(stat), Some((250, 75)));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(vm_rss("Name:\tx\nVmRSS:\t  2048 kB\n"), Some(2 << 20));
        assert_eq!(vm_rss("Name:\tx\n"), None);
        let me = VmmUsage::of(std::process::id()).unwrap();
        assert!(me.rss > 0);
        assert!(VmmUsage::of(u32::MAX).is_none());
    }
}
