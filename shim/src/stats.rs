//! `Stats`: the VM's memory and CPU, as containerd's cgroups v1 metrics.
//!
//! A container's VM (its VMM, vCPU threads and guest memory) lives in its
//! monitor process, so the monitor's resident memory and CPU time are the
//! container's: `memory.usage` (limit: the VM's memory size) and `rss`,
//! `cpu.usage` total/user/kernel in nanoseconds.

use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageFull};

use crate::errors::{Result, ShimError};

use husk_runtime::stats::{cpu_ticks, vm_rss, USER_HZ};

/// The metrics of the VM in monitor `pid` with `memory_mib` of memory.
pub fn metrics(pid: u32, memory_mib: u32) -> Result<Any> {
    let gone = || ShimError::NotFound(format!("the container's VM (process {pid}) is not running"));
    if pid == 0 {
        return Err(gone());
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|_| gone())?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|_| gone())?;
    let (user, kernel) = cpu_ticks(&stat).ok_or_else(gone)?;
    let to_ns = |ticks: u64| ticks.saturating_mul(1_000_000_000 / USER_HZ);
    let rss = vm_rss(&status).unwrap_or(0);

    let mut m = Metrics::new();
    let mut usage = CPUUsage::new();
    usage.user = to_ns(user);
    usage.kernel = to_ns(kernel);
    usage.total = usage.user + usage.kernel;
    let mut cpu = CPUStat::new();
    cpu.usage = Some(usage).into();
    m.cpu = Some(cpu).into();
    let mut entry = MemoryEntry::new();
    entry.usage = rss;
    entry.max = rss;
    entry.limit = u64::from(memory_mib) << 20;
    let mut mem = MemoryStat::new();
    mem.rss = rss;
    mem.total_rss = rss;
    mem.usage = Some(entry).into();
    m.memory = Some(mem).into();

    let mut any = Any::new();
    // containerd looks the type up by its full protobuf name.
    any.type_url = Metrics::descriptor().full_name().to_string();
    any.value = m
        .write_to_bytes()
        .map_err(|e| ShimError::Failed(format!("encoding metrics: {e}")))?;
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The /proc parsing is runtime's (tested there); this is the
    /// metrics message built from this very process.
    #[test]
    fn metrics_of_a_live_process() {
        let me = std::process::id();
        let any = metrics(me, 256).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = Metrics::parse_from_bytes(&any.value).unwrap();
        assert!(m.memory.usage.usage > 0);
        assert_eq!(m.memory.usage.limit, 256 << 20);
        assert!(metrics(0, 256).is_err());
    }
}
