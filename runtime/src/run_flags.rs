//! `husk run`/`create` settings beyond the process and the VM's size:
//! labels (`-l`, `--label-file`, merged with the image's), DNS
//! (`--dns`, `--dns-search`, `--dns-option`), a read-only root
//! (`--read-only`), `--init`, `--tmpfs` and `--shm-size`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use husk_protocol::TmpfsMount;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Settings kept in `config.json` (shown by `inspect`) and applied when
/// the container's VM boots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFlags {
    /// `--dns`, `--dns-search`, `--dns-option`.
    #[serde(default, skip_serializing_if = "DnsConfig::is_empty")]
    pub dns: DnsConfig,
    /// `--read-only`: the agent remounts the container's root read-only
    /// once it is assembled (volumes and tmpfs mounts stay writable).
    #[serde(default)]
    pub read_only: bool,
    /// `--init`: accepted and recorded. The guest agent is PID 1 of the
    /// VM and already reaps every orphan and forwards signals, which is
    /// what Docker's init (tini) adds; the container's process shares the
    /// VM's PID namespace, so no second init is started.
    #[serde(default)]
    pub init: bool,
    /// `--shm-size` in bytes (`None`: the agent's 64 MiB /dev/shm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
}

impl RunFlags {
    /// Whether nothing is set.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The tmpfs mounts these flags add to the `--tmpfs` ones: /dev/shm
    /// with `--shm-size` (mounted over the agent's, after the others).
    pub fn tmpfs(&self) -> Option<TmpfsMount> {
        self.shm_size.map(|bytes| TmpfsMount {
            target: "/dev/shm".into(),
            size: Some(format!("{}k", bytes.div_ceil(1024))),
            mode: Some(0o1777),
            read_only: false,
            nosuid: true,
            nodev: true,
            noexec: true,
        })
    }
}

/// The container's resolver settings; each non-empty list replaces the
/// corresponding lines of the resolv.conf husk would write otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// `nameserver` addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<IpAddr>,
    /// `search` domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// `options` entries (`ndots:2`, `timeout:1`...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// Most entries of each resolver list (glibc reads 3 nameservers and 6
/// search domains; the rest would be ignored).
const MAX_DNS_ENTRIES: usize = 32;

impl DnsConfig {
    /// Whether no flag was given.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.search.is_empty() && self.options.is_empty()
    }

    /// Parses the flags' values: addresses, then words without spaces.
    pub fn parse(servers: &[String], search: &[String], options: &[String]) -> Result<Self, Error> {
        let servers = servers
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|_| Error::Invalid(format!("{s} is not an ip address")))
            })
            .collect::<Result<Vec<IpAddr>, _>>()?;
        let word = |flag: &str, v: &String| {
            if v.is_empty()
                || v.len() > 253
                || v.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(Error::Invalid(format!("invalid {flag} value {v:?}")));
            }
            Ok(v.clone())
        };
        let dns = DnsConfig {
            servers,
            search: search
                .iter()
                .map(|v| word("--dns-search", v))
                .collect::<Result<_, _>>()?,
            options: options
                .iter()
                .map(|v| word("--dns-option", v))
                .collect::<Result<_, _>>()?,
        };
        let longest = [dns.servers.len(), dns.search.len(), dns.options.len()];
        if longest.iter().any(|&n| n > MAX_DNS_ENTRIES) {
            return Err(Error::Invalid(format!(
                "at most {MAX_DNS_ENTRIES} --dns, --dns-search or --dns-option values each"
            )));
        }
        Ok(dns)
    }

    /// `conf` with the lines these settings replace replaced (Docker:
    /// `--dns-search .` clears the search list).
    pub fn apply(&self, conf: &str) -> String {
        if self.is_empty() {
            return conf.to_string();
        }
        let replaced = |key: &str| match key {
            "nameserver" => !self.servers.is_empty(),
            "search" | "domain" => !self.search.is_empty(),
            "options" => !self.options.is_empty(),
            _ => false,
        };
        let mut out = String::new();
        for s in &self.servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        for line in conf.lines() {
            if !replaced(line.split_whitespace().next().unwrap_or_default()) {
                out.push_str(line);
                out.push('\n');
            }
        }
        let search: Vec<&str> = self
            .search
            .iter()
            .map(String::as_str)
            .filter(|s| *s != ".")
            .collect();
        if !search.is_empty() {
            out.push_str(&format!("search {}\n", search.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// A `-l`/`--label` value, or a `--label-file` line: `KEY=VALUE`, or
/// `KEY` for an empty value.
pub fn parse_label(s: &str) -> Result<(String, String), Error> {
    let (k, v) = s.split_once('=').unwrap_or((s, ""));
    if k.trim().is_empty() || s.contains('\0') {
        return Err(Error::Invalid(format!(
            "invalid label {s:?}: KEY=VALUE expected"
        )));
    }
    Ok((k.to_string(), v.to_string()))
}

/// The labels of a `--label-file`: one per line, blank lines and `#`
/// comments skipped.
pub fn parse_label_file(text: &str) -> Result<Vec<(String, String)>, Error> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(parse_label)
        .collect()
}

/// The image's labels overridden by the container's (later flags win).
pub fn merge_labels(
    image: &BTreeMap<String, String>,
    flags: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut out = image.clone();
    out.extend(flags.iter().cloned());
    out
}

/// A `--tmpfs` value: `PATH[:OPTIONS]`, the options as mount(8) spells
/// them (`rw`, `ro`, `nosuid`, `nodev`, `noexec`, `exec`, `suid`, `dev`,
/// `size=64m`, `mode=1777`). Docker's defaults: `nosuid,nodev,noexec`.
pub fn parse_tmpfs(s: &str) -> Result<TmpfsMount, Error> {
    let (target, opts) = s.split_once(':').unwrap_or((s, ""));
    crate::options::check_mount_target(target)
        .map_err(|why| Error::Invalid(format!("invalid --tmpfs {s:?}: {why}")))?;
    let mut m = docker_tmpfs(target);
    let bad = |what: &str| Error::Invalid(format!("invalid --tmpfs {s:?}: {what}"));
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", v)) => m.size = Some(tmpfs_size(v).ok_or_else(|| bad("bad size"))?),
            Some(("mode", v)) => m.mode = Some(tmpfs_mode(v).ok_or_else(|| bad("bad mode"))?),
            Some(_) => return Err(bad(&format!("unsupported option {o:?}"))),
            None => match o {
                "rw" => m.read_only = false,
                "ro" => m.read_only = true,
                "nosuid" => m.nosuid = true,
                "suid" => m.nosuid = false,
                "nodev" => m.nodev = true,
                "dev" => m.nodev = false,
                "noexec" => m.noexec = true,
                "exec" => m.noexec = false,
                _ => return Err(bad(&format!("unsupported option {o:?}"))),
            },
        }
    }
    Ok(m)
}

/// A tmpfs at `target` with Docker's defaults (`--tmpfs`, `--mount
/// type=tmpfs`): read-write, `nosuid,nodev,noexec`, the kernel's size.
pub fn docker_tmpfs(target: &str) -> TmpfsMount {
    TmpfsMount {
        target: target.trim_end_matches('/').to_string(),
        size: None,
        mode: None,
        read_only: false,
        nosuid: true,
        nodev: true,
        noexec: true,
    }
}

/// A tmpfs size in Docker's byte syntax (`64m`, `1g`, `65536`) as the
/// mount option's value, in KiB (`65536k`); `None` when malformed or 0.
pub fn tmpfs_size(v: &str) -> Option<String> {
    let bytes = crate::options::parse_bytes(v).filter(|b| *b > 0)?;
    Some(format!("{}k", bytes.div_ceil(1024)))
}

/// A tmpfs root's permission bits in octal (`1777`); `None` when
/// malformed or above `7777`.
pub fn tmpfs_mode(v: &str) -> Option<u32> {
    u32::from_str_radix(v, 8).ok().filter(|m| *m <= 0o7777)
}

#[cfg(test)]
#[path = "run_flags_tests.rs"]
mod tests;
