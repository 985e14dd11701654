//! `process` of config.json → the container's init process
//! ([`ProcessConfig`]), also used for the processes of `exec`.
//!
//! Honoured: `args`, `env`, `cwd`, `terminal`, `user.uid`/`user.gid` (as
//! the runtime's `"uid:gid"`), `user.additionalGids`, `rlimits`,
//! `capabilities`, `noNewPrivileges` (the last four applied by the agent,
//! see [`ProcessSecurity`]). Ambient capabilities that are not both
//! permitted and inheritable cannot be raised and are left out, as runc
//! leaves them out. `consoleSize` is the initial terminal size.
//! `apparmorProfile`, `selinuxLabel`, `oomScoreAdj`, `ioPriority`,
//! `scheduler` and `execCPUAffinity` describe the host's treatment of a
//! host process; a husk container's processes run in their own kernel,
//! behind the VM boundary, so they are accepted and have no effect.
//! `user.umask` is the process's file mode creation mask (applied by the
//! agent).

use husk_protocol::{Capabilities, ProcessSecurity, Rlimit, RlimitResource};
use husk_runtime::ProcessConfig;
use oci_spec::runtime::{LinuxCapabilities, PosixRlimitType, Process};

/// Why a `process` cannot be run as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProcessError {
    /// `args` is missing or empty.
    #[error("process.args is empty: there is no command to run")]
    NoArgs,
    /// An `env` entry is not `KEY=VALUE`.
    #[error("process.env entry {0:?} is not KEY=VALUE")]
    Env(String),
    /// `cwd` is not absolute (or has a NUL byte).
    #[error("process.cwd {0:?} is not an absolute path")]
    Cwd(String),
    /// A field that cannot be honoured inside the VM yet.
    #[error("{0} is not supported by husk yet")]
    Unsupported(&'static str),
    /// A umask with bits beyond the permissions.
    #[error("process.user.umask {0:#o} is not a file mode creation mask (0 to 0o777)")]
    Umask(u32),
    /// A capability name husk does not know.
    #[error("unknown capability {0} in process.capabilities")]
    Capability(String),
    /// An argument or variable holds a NUL byte.
    #[error("process.{0} contains a NUL byte")]
    Nul(&'static str),
}

/// The `PATH` given to a process whose environment has none.
const DEFAULT_PATH: &str = husk_runtime::options::DEFAULT_PATH;

/// The process `p` describes. `stdin` is left false: whether input is
/// forwarded depends on the caller's stdio, which sets it.
pub fn translate(p: &Process) -> Result<ProcessConfig, ProcessError> {
    let argv = p.args().clone().unwrap_or_default();
    if argv.is_empty() || argv[0].is_empty() {
        return Err(ProcessError::NoArgs);
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(ProcessError::Nul("args"));
    }
    let cwd = p.cwd().to_string_lossy().into_owned();
    if !cwd.starts_with('/') || cwd.contains('\0') {
        return Err(ProcessError::Cwd(cwd));
    }
    Ok(ProcessConfig {
        argv,
        env: environment(p.env().as_deref().unwrap_or_default())?,
        cwd,
        user: format!("{}:{}", p.user().uid(), p.user().gid()),
        tty: p.terminal().unwrap_or(false),
        stdin: false,
        security: security(p)?,
    })
}

/// The initial terminal size (rows, cols) of `consoleSize`, if set.
pub fn console_size(p: &Process) -> Option<(u16, u16)> {
    let b = p.console_size()?;
    let rows = u16::try_from(b.height()).ok()?;
    let cols = u16::try_from(b.width()).ok()?;
    (rows > 0 && cols > 0).then_some((rows, cols))
}

/// The entries, checked, plus `PATH` when they have none (so commands are
/// found the way a shell would).
fn environment(entries: &[String]) -> Result<Vec<String>, ProcessError> {
    let mut env = Vec::with_capacity(entries.len() + 1);
    for e in entries {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => return Err(ProcessError::Env(e.clone())),
        }
        if e.contains('\0') {
            return Err(ProcessError::Nul("env"));
        }
        env.push(e.clone());
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    Ok(env)
}

/// Supplementary groups, rlimits, capabilities and `no_new_privs`.
pub fn security(p: &Process) -> Result<ProcessSecurity, ProcessError> {
    let rlimits = p
        .rlimits()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|r| Rlimit {
            resource: resource(r.typ()),
            soft: r.soft(),
            hard: r.hard(),
        })
        .collect();
    Ok(ProcessSecurity {
        additional_gids: p.user().additional_gids().clone().unwrap_or_default(),
        rlimits,
        capabilities: p.capabilities().as_ref().map(capabilities).transpose()?,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        umask: match p.user().umask() {
            Some(m) if m > 0o777 => return Err(ProcessError::Umask(m)),
            other => other,
        },
    })
}

fn capabilities(c: &LinuxCapabilities) -> Result<Capabilities, ProcessError> {
    let set = |s: &Option<oci_spec::runtime::Capabilities>| {
        s.as_ref().map_or(Ok(0), |caps| {
            husk_protocol::capability_mask(caps.iter().map(oci_name))
                .map_err(|e| ProcessError::Capability(e.to_string()))
        })
    };
    let permitted = set(c.permitted())?;
    let inheritable = set(c.inheritable())?;
    Ok(Capabilities {
        bounding: set(c.bounding())?,
        effective: set(c.effective())?,
        permitted,
        inheritable,
        // The kernel raises an ambient capability only if it is permitted
        // and inheritable; runc skips the others (`runc spec` asks for
        // ambient ones without inheritable ones), and so does husk.
        ambient: set(c.ambient())? & permitted & inheritable,
    })
}

/// The name oci-spec gives `cap` in config.json (`CAP_CHOWN`).
fn oci_name(cap: &oci_spec::runtime::Capability) -> String {
    serde_json::to_value(cap)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| format!("{cap:?}"))
}

fn resource(t: PosixRlimitType) -> RlimitResource {
    use PosixRlimitType as T;
    use RlimitResource as R;
    match t {
        T::RlimitAs => R::RlimitAs,
        T::RlimitCore => R::RlimitCore,
        T::RlimitCpu => R::RlimitCpu,
        T::RlimitData => R::RlimitData,
        T::RlimitFsize => R::RlimitFsize,
        T::RlimitLocks => R::RlimitLocks,
        T::RlimitMemlock => R::RlimitMemlock,
        T::RlimitMsgqueue => R::RlimitMsgqueue,
        T::RlimitNice => R::RlimitNice,
        T::RlimitNofile => R::RlimitNofile,
        T::RlimitNproc => R::RlimitNproc,
        T::RlimitRss => R::RlimitRss,
        T::RlimitRtprio => R::RlimitRtprio,
        T::RlimitRttime => R::RlimitRttime,
        T::RlimitSigpending => R::RlimitSigpending,
        T::RlimitStack => R::RlimitStack,
    }
}
