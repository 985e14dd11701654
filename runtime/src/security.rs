//! Docker's security flags of `create` and `run` — `--cap-add`,
//! `--cap-drop`, `--privileged`, `--ulimit`, `--security-opt
//! no-new-privileges`, `--group-add` — as typed values: parsed once by
//! [`SecurityFlags::parse`], kept in the container's config as given (what
//! `inspect` shows), and turned into the [`ProcessSecurity`] the agent
//! applies to the init process and to every exec.
//!
//! `--privileged` gives every capability and nothing else: no host device
//! enters the VM, and the guest's devices are the VM's own.

use std::fmt;
use std::str::FromStr;

use husk_protocol::{
    Capabilities, Capability, ProcessSecurity, Rlimit, RlimitResource, SecurityParseError,
};
use serde::{Deserialize, Serialize};

/// A security flag value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// `--cap-add`/`--cap-drop` with a name that is no capability.
    #[error("invalid capability {0:?} (e.g. NET_ADMIN, CAP_NET_ADMIN, ALL)")]
    Capability(String),
    /// A malformed `--ulimit`.
    #[error("invalid --ulimit {value:?}: {why}")]
    Ulimit {
        /// The flag's value.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `--security-opt` husk does not support.
    #[error("unsupported --security-opt {0:?}: husk supports no-new-privileges[=true|false]")]
    SecurityOpt(String),
    /// A `--group-add` that is not a numeric group ID.
    #[error(
        "invalid --group-add {0:?}: a numeric group ID is expected (group names are not supported)"
    )]
    GroupAdd(String),
}

/// A `--cap-add`/`--cap-drop` value: one capability, or `ALL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum CapFlag {
    /// Every capability.
    All,
    /// One capability.
    Cap(Capability),
}

impl CapFlag {
    fn mask(self) -> u64 {
        match self {
            CapFlag::All => Capabilities::ALL_MASK,
            CapFlag::Cap(c) => c.mask(),
        }
    }
}

impl FromStr for CapFlag {
    type Err = FlagError;

    /// `ALL`, `CAP_X` or `X`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("ALL") {
            return Ok(CapFlag::All);
        }
        s.parse()
            .map(CapFlag::Cap)
            .map_err(|_: SecurityParseError| FlagError::Capability(s.to_string()))
    }
}

impl fmt::Display for CapFlag {
    /// `ALL` or `CAP_X` (Docker's normalized spelling).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapFlag::All => f.write_str("ALL"),
            CapFlag::Cap(c) => c.fmt(f),
        }
    }
}

impl TryFrom<String> for CapFlag {
    type Error = FlagError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<CapFlag> for String {
    fn from(c: CapFlag) -> String {
        c.to_string()
    }
}

/// The security flags of `create`/`run`, typed, as the user gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityFlags {
    /// `--cap-add`, in order.
    #[serde(default)]
    pub cap_add: Vec<CapFlag>,
    /// `--cap-drop`, in order.
    #[serde(default)]
    pub cap_drop: Vec<CapFlag>,
    /// `--privileged`: every capability.
    #[serde(default)]
    pub privileged: bool,
    /// `--ulimit`, one per resource (a later flag replaces an earlier one).
    #[serde(default)]
    pub ulimits: Vec<Rlimit>,
    /// `--security-opt no-new-privileges[=BOOL]`, when given.
    #[serde(default)]
    pub no_new_privileges: Option<bool>,
    /// `--group-add`, in order.
    #[serde(default)]
    pub group_add: Vec<u32>,
}

/// The raw values of the security flags, as the command line has them.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawSecurityFlags<'a> {
    /// `--cap-add` values.
    pub cap_add: &'a [String],
    /// `--cap-drop` values.
    pub cap_drop: &'a [String],
    /// `--privileged`.
    pub privileged: bool,
    /// `--ulimit` values.
    pub ulimits: &'a [String],
    /// `--security-opt` values.
    pub security_opts: &'a [String],
    /// `--group-add` values.
    pub group_add: &'a [String],
}

impl SecurityFlags {
    /// Parses the flags' values; the first bad one is the error.
    pub fn parse(raw: RawSecurityFlags<'_>) -> Result<SecurityFlags, FlagError> {
        let caps = |v: &[String]| v.iter().map(|s| s.parse()).collect::<Result<Vec<_>, _>>();
        let mut flags = SecurityFlags {
            cap_add: caps(raw.cap_add)?,
            cap_drop: caps(raw.cap_drop)?,
            privileged: raw.privileged,
            ..SecurityFlags::default()
        };
        for u in raw.ulimits {
            let limit = parse_ulimit(u)?;
            flags.ulimits.retain(|l| l.resource != limit.resource);
            flags.ulimits.push(limit);
        }
        for opt in raw.security_opts {
            flags.no_new_privileges = Some(parse_security_opt(opt)?);
        }
        for g in raw.group_add {
            flags.group_add.push(parse_group_add(g)?);
        }
        Ok(flags)
    }

    /// The capability sets Docker derives from the flags: all of them with
    /// `--privileged`; otherwise, starting from the default set, the
    /// `--cap-drop`s removed, then the `--cap-add`s added (`--cap-add ALL`
    /// is every capability but the dropped ones; `--cap-drop ALL` leaves
    /// only the added ones). `None` without any such flag: the agent then
    /// chooses by user, as Docker does.
    pub fn capabilities(&self) -> Option<Capabilities> {
        if self.privileged {
            return Some(Capabilities::all());
        }
        if self.cap_add.is_empty() && self.cap_drop.is_empty() {
            return None;
        }
        let mask = |flags: &[CapFlag]| flags.iter().fold(0, |m, c| m | c.mask());
        let (add, drop) = (mask(&self.cap_add), mask(&self.cap_drop));
        let set = if self.cap_add.contains(&CapFlag::All) {
            Capabilities::ALL_MASK & !drop
        } else {
            (Capabilities::docker_default_mask() & !drop) | add
        };
        Some(Capabilities::from_mask(set))
    }

    /// What the agent applies to the container's processes.
    pub fn process_security(&self) -> ProcessSecurity {
        ProcessSecurity {
            umask: None,
            additional_gids: self.group_add.clone(),
            rlimits: self.ulimits.clone(),
            capabilities: self.capabilities(),
            no_new_privileges: self.no_new_privileges.unwrap_or(false),
        }
    }

    /// Docker's `HostConfig.SecurityOpt` entries.
    pub fn security_opt(&self) -> Vec<String> {
        match self.no_new_privileges {
            Some(true) => vec!["no-new-privileges".into()],
            Some(false) => vec!["no-new-privileges=false".into()],
            None => Vec::new(),
        }
    }
}

/// Parses Docker's `--ulimit NAME=SOFT[:HARD]` (`nofile=1024:4096`); the
/// hard limit defaults to the soft one; `unlimited` or `-1` means no
/// limit.
pub fn parse_ulimit(value: &str) -> Result<Rlimit, FlagError> {
    let bad = |why: String| FlagError::Ulimit {
        value: value.to_string(),
        why,
    };
    let Some((name, limits)) = value.split_once('=') else {
        return Err(bad("NAME=SOFT[:HARD] expected".into()));
    };
    let resource: RlimitResource = name.parse().map_err(|e| bad(format!("{e}")))?;
    let (soft, hard) = match limits.split_once(':') {
        Some((soft, hard)) => (soft, hard),
        None => (limits, limits),
    };
    let number = |s: &str| -> Result<u64, FlagError> {
        match s {
            "unlimited" | "-1" => Ok(u64::MAX),
            _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
                .parse::<i64>()
                .ok()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| bad(format!("{s:?} is out of range"))),
            _ => Err(bad(format!(
                "{s:?} is not a limit (a number, -1 or unlimited)"
            ))),
        }
    };
    let (soft, hard) = (number(soft)?, number(hard)?);
    if soft > hard {
        return Err(bad(
            "the soft limit must be less than or equal to the hard limit".into(),
        ));
    }
    Ok(Rlimit {
        resource,
        soft,
        hard,
    })
}

/// Parses `--security-opt`: only `no-new-privileges`, bare or with
/// `=BOOL` or `:BOOL`; returns its value.
pub fn parse_security_opt(value: &str) -> Result<bool, FlagError> {
    let unsupported = || FlagError::SecurityOpt(value.to_string());
    let (key, setting) = match value.find(['=', ':']) {
        Some(i) => (&value[..i], Some(&value[i + 1..])),
        None => (value, None),
    };
    if key != "no-new-privileges" {
        return Err(unsupported());
    }
    match setting {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(unsupported()),
    }
}

/// Parses `--group-add`: a numeric group ID.
pub fn parse_group_add(value: &str) -> Result<u32, FlagError> {
    let numeric = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    numeric
        .then(|| value.parse().ok())
        .flatten()
        .ok_or_else(|| FlagError::GroupAdd(value.to_string()))
}

/// Docker's `Ulimits` entry of a limit: unlimited is -1.
pub fn ulimit_value(limit: u64) -> i64 {
    i64::try_from(limit).unwrap_or(-1)
}

#[cfg(test)]
#[path = "security_tests.rs"]
mod tests;
