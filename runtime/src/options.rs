//! What a container is created from ([`CreateOptions`]) and how it merges
//! with the image's config, with Docker's precedence rules. Flags are
//! parsed by the caller (the CLI); this module takes typed values.

use std::path::PathBuf;

use images::RuntimeConfig;

use husk_net::{NetworkMode, PortMapping};

use crate::config::{ProcessConfig, Signal};
use crate::security::SecurityFlags;
use crate::Error;

/// The default `PATH` when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// vCPUs when `--cpus` is absent.
pub const DEFAULT_CPUS: u8 = 1;
/// Guest memory when `-m` is absent.
pub const DEFAULT_MEMORY_MIB: u32 = 256;
/// Seconds `stop` waits by default.
pub const DEFAULT_STOP_TIMEOUT: u64 = 10;
/// Smallest guest memory accepted.
pub const MIN_MEMORY_MIB: u32 = 64;

/// Everything `create` needs. Fields left `None`/empty take the image's
/// value, then husk's default.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// Image reference or ID.
    pub image: String,
    /// Container name; random when absent.
    pub name: Option<String>,
    /// `--entrypoint`; `Some(vec![])` clears the image's (and its Cmd).
    pub entrypoint: Option<Vec<String>>,
    /// Arguments after the image; empty: the image's Cmd.
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries (`--env-file` first, then `-e`).
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `--hostname`; default: the short ID.
    pub hostname: Option<String>,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub stdin: bool,
    /// vCPUs.
    pub cpus: Option<u8>,
    /// Guest memory in MiB.
    pub memory_mib: Option<u32>,
    /// `-v` requests.
    pub volumes: Vec<VolumeRequest>,
    /// `--stop-signal`; default: the image's StopSignal, then SIGTERM.
    pub stop_signal: Option<Signal>,
    /// `--stop-timeout` seconds.
    pub stop_timeout: Option<u64>,
    /// `--rm`.
    pub auto_remove: bool,
    /// `-p` values.
    pub ports: Vec<PortMapping>,
    /// `-P`: also publish the image's exposed ports on free host ports.
    pub publish_all: bool,
    /// `--network`.
    pub network: NetworkMode,
    /// `--add-host` entries (`host-gateway`: the container may reach the
    /// host).
    pub extra_hosts: Vec<husk_net::ExtraHost>,
    /// The guest kernel.
    pub kernel: PathBuf,
    /// The agent disk.
    pub agent_disk: PathBuf,
    /// Seconds the guest may take to boot.
    pub boot_timeout: u64,
    /// Warm start (restore from a template) or cold boot (`--cold`).
    pub start: husk_sandbox::StartMode,
    /// What the container's processes get: supplementary groups,
    /// capabilities, resource limits, `no_new_privs` (from
    /// [`SecurityFlags::process_security`], or an OCI bundle's process).
    pub security: husk_protocol::ProcessSecurity,
    /// The security flags as the user gave them (`--cap-add`,
    /// `--cap-drop`, `--privileged`, `--ulimit`, `--security-opt`,
    /// `--group-add`), kept for `inspect`.
    pub security_flags: SecurityFlags,
    /// `--log-opt`: how `log.json` is rotated.
    pub log_config: crate::logs::LogConfig,
    /// `--disk-bps`, `--disk-iops`, `--net-bps`.
    pub io_limits: crate::config::IoLimits,
    // Day-2 operations (issue #14).
    /// `--restart`.
    pub restart_policy: crate::restart::RestartPolicy,
    /// `--health-*`, `--no-healthcheck`.
    pub health: crate::health::HealthFlags,
    // Labels and run flags (see [`crate::run_flags`]).
    /// `-l`/`--label` and `--label-file` entries, in order (a later one
    /// wins; all win over the image's labels).
    pub labels: Vec<(String, String)>,
    /// `--tmpfs` mounts.
    pub tmpfs: Vec<husk_protocol::TmpfsMount>,
    /// `--dns*`, `--read-only`, `--init`, `--shm-size`.
    pub run_flags: crate::run_flags::RunFlags,
}

/// A volume to mount (the CLI's `-v`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeRequest {
    /// `name:/path[:ro]`: a named volume, created if missing.
    Named {
        /// Volume name.
        name: String,
        /// Path in the container.
        target: String,
        /// Read-only.
        read_only: bool,
    },
    /// `/path`: a new anonymous volume.
    Anonymous {
        /// Path in the container.
        target: String,
    },
    /// `/host/path:/path[:ro]`, `--mount type=bind`: a host directory or
    /// file, shared over virtio-fs.
    Bind {
        /// Absolute host path.
        source: String,
        /// Path in the container.
        target: String,
        /// Read-only.
        read_only: bool,
        /// Make a missing source directory (`-v` does, `--mount` refuses).
        create_missing: bool,
    },
}

impl VolumeRequest {
    /// The path inside the container.
    pub fn target(&self) -> &str {
        match self {
            VolumeRequest::Named { target, .. }
            | VolumeRequest::Anonymous { target }
            | VolumeRequest::Bind { target, .. } => target,
        }
    }
}

/// Parses Docker's byte sizes: a whole number with an optional binary
/// unit `k`, `m` or `g` (any case, optionally followed by `b` or `ib`):
/// `512`, `10m`, `1g`, `64KiB`. `None` when malformed or too large.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, unit) = match lower.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => lower.split_at(i),
        None => (lower, ""),
    };
    let n: u64 = num.parse().ok()?;
    let shift = match unit {
        "" => 0,
        "k" | "ki" => 10,
        "m" | "mi" => 20,
        "g" | "gi" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// Checks a mount point: absolute, clean, not `/`; the error says why.
pub fn check_mount_target(t: &str) -> Result<(), String> {
    if !t.starts_with('/') {
        return Err(format!("{t:?} is not an absolute path"));
    }
    if t == "/" {
        return Err("cannot mount over /".into());
    }
    if t.contains('\0') || t.split('/').any(|c| c == "..") {
        return Err(format!("{t:?} is not a clean path"));
    }
    Ok(())
}

/// Merges the image's config with the options into the init process.
pub fn process(
    image: &RuntimeConfig,
    opts: &CreateOptions,
    hostname: &str,
) -> Result<ProcessConfig, Error> {
    let entrypoint = match &opts.entrypoint {
        Some(e) => e.clone(),
        None => image.entrypoint.clone().unwrap_or_default(),
    };
    let cmd = if !opts.cmd.is_empty() {
        opts.cmd.clone()
    } else if opts.entrypoint.is_some() {
        Vec::new()
    } else {
        image.cmd.clone().unwrap_or_default()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(Error::NoCommand);
    }
    let cwd = opts
        .workdir
        .clone()
        .or_else(|| image.working_dir.clone())
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(Error::Invalid(format!(
            "the working directory '{cwd}' is invalid, it needs to be an absolute path"
        )));
    }
    let user = opts
        .user
        .clone()
        .or_else(|| image.user.clone())
        .unwrap_or_default();
    Ok(ProcessConfig {
        argv,
        env: environment(&image.env, &opts.env, hostname, opts.tty)?,
        cwd,
        user,
        tty: opts.tty,
        stdin: opts.stdin,
        security: opts.security.clone(),
    })
}

/// Image env, then the caller's entries (by key, later wins), plus PATH,
/// HOSTNAME and (with a TTY) TERM when missing.
pub fn environment(
    image: &[String],
    extra: &[String],
    hostname: &str,
    tty: bool,
) -> Result<Vec<String>, Error> {
    let mut env: Vec<String> = Vec::new();
    for entry in image.iter().chain(extra) {
        let Some((key, _)) = entry.split_once('=') else {
            return Err(Error::Invalid(format!(
                "invalid environment entry {entry:?}: KEY=VALUE expected"
            )));
        };
        if key.is_empty() || entry.contains('\0') {
            return Err(Error::Invalid(format!(
                "invalid environment entry {entry:?}"
            )));
        }
        set_env(&mut env, entry.clone());
    }
    let has = |k: &str| {
        env.iter()
            .any(|e| e.split_once('=').map(|(a, _)| a) == Some(k))
    };
    let mut out = Vec::new();
    if !has("PATH") {
        out.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has("HOSTNAME") {
        out.push(format!("HOSTNAME={hostname}"));
    }
    if tty && !has("TERM") {
        out.push("TERM=xterm".to_string());
    }
    out.extend(env);
    Ok(out)
}

/// Sets `entry` (`KEY=VALUE`), replacing an entry with the same key.
pub fn set_env(env: &mut Vec<String>, entry: String) {
    let key = entry.split('=').next().unwrap_or_default().to_string();
    match env
        .iter_mut()
        .find(|e| e.split('=').next() == Some(key.as_str()))
    {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

/// /etc/resolv.conf for a container without a network of its own: the
/// host's, without loopback nameservers (unreachable from the guest).
pub fn host_resolv_conf() -> String {
    husk_net::resolv_conf_for(&husk_net::host_resolv_conf(), None)
}

#[cfg(test)]
#[path = "options_tests.rs"]
mod tests;
