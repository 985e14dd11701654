//! Names and presets of the per-process security settings
//! ([`ProcessSecurity`](crate::ProcessSecurity)): the capability table of
//! `linux/capability.h`, Docker's default capability set, and the
//! resource names of `setrlimit(2)` as OCI (`RLIMIT_NOFILE`) and Docker
//! (`nofile`) spell them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::message::{Capabilities, RlimitResource};

/// The capability names, indexed by number (`CAP_CHOWN` is 0); the last
/// one is the newest capability this crate knows ([`Capability::LAST`]).
pub const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities Docker gives a container's root process by default.
const DOCKER_DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// A name that is not a capability or not a resource limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityParseError {
    /// Not one of [`CAPABILITY_NAMES`] (with or without `CAP_`).
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    /// Not a resource of `setrlimit(2)`.
    #[error("unknown resource limit {0:?} (e.g. nofile, RLIMIT_NOFILE)")]
    UnknownRlimit(String),
}

/// One capability, by its number in `linux/capability.h`. Parses from
/// `CAP_NET_ADMIN` or `NET_ADMIN`, in any case; prints (and serializes)
/// as `CAP_NET_ADMIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Capability(u8);

impl Capability {
    /// The newest capability known here (`CAP_CHECKPOINT_RESTORE`).
    pub const LAST: Capability = Capability(CAPABILITY_NAMES.len() as u8 - 1);

    /// The capability with number `bit`, if it is a known one.
    pub fn new(bit: u8) -> Option<Capability> {
        (usize::from(bit) < CAPABILITY_NAMES.len()).then_some(Capability(bit))
    }

    /// Its number.
    pub fn bit(self) -> u8 {
        self.0
    }

    /// Its bit in a capability mask.
    pub fn mask(self) -> u64 {
        1 << self.0
    }

    /// Its name, `CAP_...`.
    pub fn name(self) -> &'static str {
        CAPABILITY_NAMES[usize::from(self.0)]
    }

    /// Every known capability, in number order.
    pub fn all() -> impl Iterator<Item = Capability> {
        (0..CAPABILITY_NAMES.len() as u8).map(Capability)
    }

    /// The capabilities of `mask`, in number order (unknown bits skipped).
    pub fn in_mask(mask: u64) -> impl Iterator<Item = Capability> {
        Capability::all().filter(move |c| mask & c.mask() != 0)
    }
}

impl FromStr for Capability {
    type Err = SecurityParseError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let unknown = || SecurityParseError::UnknownCapability(name.to_string());
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if bare.is_empty() {
            return Err(unknown());
        }
        CAPABILITY_NAMES
            .iter()
            .position(|n| n[4..] == *bare)
            .and_then(|i| u8::try_from(i).ok())
            .map(Capability)
            .ok_or_else(unknown)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<String> for Capability {
    type Error = SecurityParseError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl From<Capability> for String {
    fn from(cap: Capability) -> String {
        cap.name().to_string()
    }
}

/// The mask of the capabilities `names` lists (each `CAP_X` or `X`, any
/// case), as an OCI `config.json` lists each set. An unknown name is an
/// error, not skipped.
pub fn capability_mask<I, S>(names: I) -> Result<u64, SecurityParseError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    names.into_iter().try_fold(0, |mask, name| {
        Ok(mask | name.as_ref().parse::<Capability>()?.mask())
    })
}

/// The names of the capabilities in `mask` (`CAP_...`, number order;
/// unknown bits skipped).
pub fn capability_names(mask: u64) -> Vec<&'static str> {
    Capability::in_mask(mask).map(Capability::name).collect()
}

impl Capabilities {
    /// The mask of every capability this crate knows (0 to
    /// [`Capability::LAST`]).
    pub const ALL_MASK: u64 = (1 << (CAPABILITY_NAMES.len() as u32)) - 1;

    /// `mask` in the bounding, effective and permitted sets; the
    /// inheritable and ambient sets empty (how Docker gives a container
    /// its capabilities).
    pub fn from_mask(mask: u64) -> Capabilities {
        Capabilities {
            bounding: mask,
            effective: mask,
            permitted: mask,
            inheritable: 0,
            ambient: 0,
        }
    }

    /// Docker's default set (`CHOWN`, `DAC_OVERRIDE`, `FSETID`, `FOWNER`,
    /// `MKNOD`, `NET_RAW`, `SETGID`, `SETUID`, `SETFCAP`, `SETPCAP`,
    /// `NET_BIND_SERVICE`, `SYS_CHROOT`, `KILL`, `AUDIT_WRITE`): mask
    /// `0xa80425fb`.
    pub fn docker_default() -> Capabilities {
        Capabilities::from_mask(Capabilities::docker_default_mask())
    }

    /// The mask of Docker's default set.
    pub fn docker_default_mask() -> u64 {
        // The names are constants of this module: the table has them all.
        capability_mask(DOCKER_DEFAULT).unwrap_or(0)
    }

    /// Every capability (`--privileged`): bounding, effective and
    /// permitted full, inheritable and ambient empty.
    pub fn all() -> Capabilities {
        Capabilities::from_mask(Capabilities::ALL_MASK)
    }
}

/// Every resource, in the order of [`RlimitResource`]'s variants.
const RESOURCES: [(RlimitResource, &str); 16] = [
    (RlimitResource::RlimitAs, "as"),
    (RlimitResource::RlimitCore, "core"),
    (RlimitResource::RlimitCpu, "cpu"),
    (RlimitResource::RlimitData, "data"),
    (RlimitResource::RlimitFsize, "fsize"),
    (RlimitResource::RlimitLocks, "locks"),
    (RlimitResource::RlimitMemlock, "memlock"),
    (RlimitResource::RlimitMsgqueue, "msgqueue"),
    (RlimitResource::RlimitNice, "nice"),
    (RlimitResource::RlimitNofile, "nofile"),
    (RlimitResource::RlimitNproc, "nproc"),
    (RlimitResource::RlimitRss, "rss"),
    (RlimitResource::RlimitRtprio, "rtprio"),
    (RlimitResource::RlimitRttime, "rttime"),
    (RlimitResource::RlimitSigpending, "sigpending"),
    (RlimitResource::RlimitStack, "stack"),
];

impl RlimitResource {
    /// Every resource.
    pub fn all() -> impl Iterator<Item = RlimitResource> {
        RESOURCES.iter().map(|(r, _)| *r)
    }

    /// Docker's name (`--ulimit nofile=...`).
    pub fn docker_name(self) -> &'static str {
        RESOURCES
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("", |(_, name)| name)
    }

    /// The Linux (and OCI) name, `RLIMIT_NOFILE`.
    pub fn linux_name(self) -> String {
        format!("RLIMIT_{}", self.docker_name().to_ascii_uppercase())
    }
}

impl FromStr for RlimitResource {
    type Err = SecurityParseError;

    /// `RLIMIT_NOFILE` (OCI) or `nofile` (Docker), in any case.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let lower = name.to_ascii_lowercase();
        let bare = lower.strip_prefix("rlimit_").unwrap_or(&lower);
        RESOURCES
            .iter()
            .find(|(_, n)| *n == bare)
            .map(|(r, _)| *r)
            .ok_or_else(|| SecurityParseError::UnknownRlimit(name.to_string()))
    }
}

impl fmt::Display for RlimitResource {
    /// Docker's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.docker_name())
    }
}

#[cfg(test)]
#[path = "security_tests.rs"]
mod tests;
