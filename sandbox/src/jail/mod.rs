//! The jailed VMM process: the code that faces the guest (device
//! emulation, vCPUs) runs in its own process, `husk-vmm`, not in the
//! caller's (a root monitor).
//!
//! The caller (root) allocates a uid/gid for the VM ([`uid`]), makes its
//! cgroup ([`cgroup`]: memory = guest memory + [`MEMORY_OVERHEAD_MIB`],
//! pids, cpu), binds the vsock listener and starts `husk-vmm` with a
//! socket pair ([`proto`]: a typed, postcard-encoded control protocol with
//! descriptors passed by `SCM_RIGHTS`). The child ([`child`]) joins the
//! cgroup, forks once into a new pid namespace (the VMM is pid 1 there),
//! unshares its mount, ipc, uts and (once the network backend is open)
//! network namespaces, builds the VM while still root (opening `/dev/kvm`,
//! the kernel or snapshot, the disks, a tap device), `pivot_root`s into an
//! empty tmpfs that holds only the agent's socket, sets its resource
//! limits, drops to the VM's uid/gid with no groups, no capabilities in
//! any set and `no_new_privs`, and only then starts the VM's threads. The
//! guest console reaches the caller through a pipe, which the caller
//! writes to the console log (rotated as before); the parent side is
//! [`VmProcess`].
//!
//! Only root can jail. Others (a rootless `husk vm run`) run the VMM
//! unjailed in their own process, with a one-line warning; so does root
//! with `HUSK_NO_JAIL=1`, a debugging knob. Template VMs (the warm-start
//! snapshots) are jailed too ([`proto::VmSpec::Template`]): the jailed
//! process saves them into files its caller opened.

pub mod cgroup;
pub mod child;
mod process;
pub mod proto;
pub mod uid;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Once;

use serde::{Deserialize, Serialize};

pub use process::VmProcess;
pub(crate) use process::VmRequest;

/// Set to `1` to run the VMM unjailed, in the caller's process (debugging
/// only: the jail is what keeps a device-model bug off the host).
pub const NO_JAIL_ENV: &str = "HUSK_NO_JAIL";

/// The uids (and gids: the same numbers) for jails, `BASE:COUNT`;
/// default [`DEFAULT_UID_BASE`]:[`DEFAULT_UID_COUNT`].
pub const UIDS_ENV: &str = "HUSK_JAIL_UIDS";

/// The first uid of the default jail range (above the usual subuid ranges
/// of rootless containers, which start at 100000 and take 65536 each).
pub const DEFAULT_UID_BASE: u32 = 900_000;

/// How many uids the default range has (and so how many VMs may run at
/// once).
pub const DEFAULT_UID_COUNT: u32 = 65_536;

/// What the VMM process may use besides guest memory, for its cgroup's
/// memory limit. Measured: about 6 MiB (a cold-booted 1-vCPU, 256 MiB
/// container after an exec: 28.7 MiB charged, of which 22.9 MiB guest
/// memory touched, 1.9 MiB kernel memory, 2.5 MiB page cache). The limit
/// leaves room for the vsock buffers (up to 128 connections of 64 KiB per
/// port) and for disk page cache (reclaimed at the limit, not fatal).
pub const MEMORY_OVERHEAD_MIB: u64 = 64;

/// Tasks (threads) a VMM process may have besides one per vCPU: its main
/// thread, the `vm` thread, the forking parent, and some slack.
pub const PIDS_OVERHEAD: u64 = 16;

/// The jail of a running VMM process, as `husk inspect` shows it
/// (`State.Jail`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailInfo {
    /// The VMM process (as the host sees it; pid 1 of its namespace).
    #[serde(rename = "Pid")]
    pub pid: u32,
    /// Its uid.
    #[serde(rename = "Uid")]
    pub uid: u32,
    /// Its gid.
    #[serde(rename = "Gid")]
    pub gid: u32,
    /// Its cgroup (the memory controller's path, or the unified one).
    #[serde(rename = "Cgroup")]
    pub cgroup: String,
}

/// Errors jailing a VMM process.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// `HUSK_JAIL_UIDS` is not `BASE:COUNT`.
    #[error(
        "${UIDS_ENV} must be BASE:COUNT with BASE > 0 and a range that fits 32 bits (got {0:?})"
    )]
    UidRange(String),
    /// Every uid of the range is in use.
    #[error("no free jail uid in {base}..{end} (${UIDS_ENV})")]
    NoUid {
        /// First uid.
        base: u32,
        /// One past the last.
        end: u64,
    },
    /// The host has none of the cgroup controllers needed.
    #[error("no usable cgroup hierarchy for {0} (cgroup v2 or v1 memory, pids and cpu)")]
    NoCgroup(&'static str),
    /// A file or process operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The control protocol broke.
    #[error("VMM control protocol: {0}")]
    Protocol(String),
    /// The VMM process could not build the VM.
    #[error("{message}")]
    Vm {
        /// The failure comes from the snapshot's files (rebuild it).
        damaged: bool,
        /// The VMM's error chain.
        message: String,
    },
    /// The VMM process ended before it reported.
    #[error("the VMM process ended before the VM ran ({0}; see the monitor log)")]
    Died(String),
    /// The `husk-vmm` binary was not found.
    #[error(transparent)]
    Asset(#[from] crate::assets::AssetError),
    /// The VMM process did not report in time.
    #[error("the VMM process did not report within {0} s")]
    Timeout(u64),
}

/// `FnOnce(io::Error) -> JailError` naming what was being done.
pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> JailError {
    let context = context.into();
    move |source| JailError::Io { context, source }
}

/// Whether VMs are jailed here: as root unless `HUSK_NO_JAIL=1`. Others
/// get a one-line warning (once per process) and unjailed VMs.
pub fn enabled() -> bool {
    static WARN: Once = Once::new();
    if std::env::var_os(NO_JAIL_ENV).is_some_and(|v| v == "1") {
        WARN.call_once(|| {
            eprintln!("husk: warning: {NO_JAIL_ENV}=1: the VMM runs unjailed (debugging only)")
        });
        return false;
    }
    if !rustix::process::geteuid().is_root() {
        WARN.call_once(|| {
            eprintln!("husk: warning: not root: the VMM runs unjailed in this process")
        });
        return false;
    }
    true
}

/// Where jails keep their per-VM directories and uid locks. One place per
/// host whatever `$HUSK_RUN_DIR` says: uids must be unique among all the
/// VMs of the host.
pub(crate) fn jail_base() -> PathBuf {
    PathBuf::from(JAIL_DIR)
}

/// Where jails keep their root directories and uid locks (one place per
/// host).
pub const JAIL_DIR: &str = "/run/husk/jail";

/// Makes `dir` (and its parents) if missing.
pub(crate) fn make_dir(dir: &Path) -> Result<(), JailError> {
    std::fs::create_dir_all(dir).map_err(io_ctx(format!("creating {}", dir.display())))
}

/// Makes `dir` (and its parents) if missing, private (0700) where new:
/// other users must not hold the uid locks or see the jails.
pub(crate) fn make_private_dir(dir: &Path) -> Result<(), JailError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_ctx(format!("creating {}", dir.display())))
}
