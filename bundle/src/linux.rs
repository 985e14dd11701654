//! `linux` of config.json: resources → the VM's size, namespaces → the
//! VM boundary and its network, and what cannot be honoured.
//!
//! - `resources.memory.limit` → guest memory (MiB, rounded up; below
//!   husk's minimum fails); `resources.cpu.quota`/`period` → vCPUs
//!   (rounded up, at least 1). The other cgroup settings (shares, cpuset,
//!   pids, block I/O, the device allowlist...) are accepted: the VM's own
//!   memory and vCPUs bound the container as a whole, and the guest's /dev
//!   holds only the default devices anyway.
//! - Namespaces: a container is alone in its VM, with its own kernel, so
//!   every *new* namespace (pid, mount, ipc, uts, cgroup, user, time) is
//!   what it gets whether asked or not. A new network namespace gives a
//!   VM with loopback only (as runc's empty namespace); no network
//!   namespace entry (the host's network, `ctr run --net-host`) gives
//!   user-mode networking through the host (passt). Joining an existing
//!   namespace (`path`) and user-namespace ID mappings cannot be honoured
//!   and fail.
//! - `sysctl`: set by the agent in the guest kernel (the container's
//!   own), after its network is configured; a name that is not a dotted
//!   parameter name fails, and so does create if the guest kernel has no
//!   such parameter.
//! - `devices` beyond the guest's default ones, `intelRdt`,
//!   `personality`, `timeOffsets` and `memoryPolicy` fail.
//! - `seccomp`, `maskedPaths`, `readonlyPaths`, `mountLabel`,
//!   `rootfsPropagation`, `cgroupsPath` concern the host kernel's view of
//!   a host process and are accepted without effect: the guest kernel is
//!   the container's own.

use std::collections::HashMap;

use husk_net::NetworkMode;
use husk_protocol::{Sysctl, MAX_SYSCTLS};
use oci_spec::runtime::{Linux, LinuxNamespaceType, LinuxResources};

/// Why the `linux` section cannot be honoured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinuxError {
    /// The memory limit is below what a VM needs.
    #[error("linux.resources.memory.limit of {mib} MiB is below husk's minimum of {min} MiB per container VM")]
    MemoryTooSmall {
        /// The limit, rounded up to MiB.
        mib: u64,
        /// The minimum.
        min: u32,
    },
    /// Joining an existing namespace.
    #[error("joining the existing {kind} namespace {path} is not possible: a husk container runs in its own VM (for the network: ask for a new namespace, loopback only, or none, the host's network through user-mode networking; podman: --network none or --network host)")]
    JoinNamespace {
        /// Which namespace.
        kind: String,
        /// Its path.
        path: String,
    },
    /// A device node the guest does not have.
    #[error(
        "device {0} cannot be given to the container: only the default devices exist in its VM"
    )]
    Device(String),
    /// A sysctl husk cannot set.
    #[error("linux.sysctl {0:?}: not a kernel parameter name (dotted parts of letters, digits, _ and -), or a value that cannot be written")]
    Sysctl(String),
    /// Too many sysctls.
    #[error("linux.sysctl: at most {MAX_SYSCTLS} parameters")]
    TooManySysctls,
    /// Another field that cannot be honoured.
    #[error("{0} is not supported by husk")]
    Unsupported(&'static str),
}

/// What `linux` decides for the VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmShape {
    /// vCPUs, when a CPU quota is set.
    pub cpus: Option<u8>,
    /// Memory in MiB, when a limit is set.
    pub memory_mib: Option<u32>,
    /// The network.
    pub network: NetworkMode,
    /// Kernel parameters of the guest, sorted by name.
    pub sysctls: Vec<Sysctl>,
}

/// Devices every container VM has (see the agent's /dev).
pub const DEFAULT_DEVICES: [&str; 8] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/console",
    "/dev/ptmx",
];

/// Checks `linux` and derives the VM's shape from it (`None`: no `linux`
/// section, the host's namespaces: user networking).
pub fn translate(linux: Option<&Linux>) -> Result<VmShape, LinuxError> {
    let Some(linux) = linux else {
        return Ok(VmShape::default());
    };
    let mut network = NetworkMode::User;
    for ns in linux.namespaces().as_deref().unwrap_or_default() {
        if let Some(path) = ns.path() {
            return Err(LinuxError::JoinNamespace {
                kind: ns.typ().to_string(),
                path: path.display().to_string(),
            });
        }
        if ns.typ() == LinuxNamespaceType::Network {
            network = NetworkMode::None;
        }
    }
    let mapped = |m: &Option<Vec<_>>| m.as_ref().is_some_and(|m: &Vec<_>| !m.is_empty());
    if mapped(linux.uid_mappings()) || mapped(linux.gid_mappings()) {
        return Err(LinuxError::Unsupported(
            "a user namespace with uidMappings/gidMappings",
        ));
    }
    for d in linux.devices().as_deref().unwrap_or_default() {
        let path = d.path().display().to_string();
        if !DEFAULT_DEVICES.contains(&path.as_str()) {
            return Err(LinuxError::Device(path));
        }
    }
    let sysctls = sysctls(linux.sysctl().as_ref())?;
    if linux.intel_rdt().is_some() {
        return Err(LinuxError::Unsupported("linux.intelRdt"));
    }
    if linux.personality().is_some() {
        return Err(LinuxError::Unsupported("linux.personality"));
    }
    if linux.time_offsets().as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(LinuxError::Unsupported("linux.timeOffsets"));
    }
    if linux.memory_policy().is_some() {
        return Err(LinuxError::Unsupported("linux.memoryPolicy"));
    }
    let (cpus, memory_mib) = match linux.resources() {
        Some(r) => resources(r)?,
        None => (None, None),
    };
    Ok(VmShape {
        cpus,
        memory_mib,
        network,
        sysctls,
    })
}

/// The sysctls, checked, in name order.
fn sysctls(map: Option<&HashMap<String, String>>) -> Result<Vec<Sysctl>, LinuxError> {
    let Some(map) = map else {
        return Ok(Vec::new());
    };
    if map.len() > MAX_SYSCTLS {
        return Err(LinuxError::TooManySysctls);
    }
    let mut out: Vec<Sysctl> = map
        .iter()
        .map(|(key, value)| Sysctl {
            key: key.clone(),
            value: value.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    if let Some(bad) = out
        .iter()
        .find(|s| !Sysctl::valid_key(&s.key) || !Sysctl::valid_value(&s.value))
    {
        return Err(LinuxError::Sysctl(bad.key.clone()));
    }
    Ok(out)
}

/// vCPUs and memory from the CPU quota and the memory limit.
fn resources(r: &LinuxResources) -> Result<(Option<u8>, Option<u32>), LinuxError> {
    let min = husk_runtime::options::MIN_MEMORY_MIB;
    let memory = match r.memory().as_ref().and_then(|m| m.limit()) {
        Some(limit) if limit > 0 => {
            let mib = (limit as u64).div_ceil(1 << 20);
            if mib < u64::from(min) {
                return Err(LinuxError::MemoryTooSmall { mib, min });
            }
            Some(u32::try_from(mib).unwrap_or(u32::MAX))
        }
        // Absent, 0 or -1: unlimited.
        _ => None,
    };
    let cpus = r.cpu().as_ref().and_then(|c| {
        let quota = u64::try_from(c.quota()?).ok().filter(|&q| q > 0)?;
        let period = c.period().filter(|&p| p > 0).unwrap_or(100_000);
        Some(
            u8::try_from(quota.div_ceil(period))
                .unwrap_or(u8::MAX)
                .max(1),
        )
    });
    Ok((cpus, memory))
}
