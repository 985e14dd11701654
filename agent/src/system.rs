//! The privileged operations of the agent's life cycle (mounts, the vsock
//! connection, teardown), behind a trait so the protocol and process logic
//! can be tested on a development host without root or a VM.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use husk_protocol::{ContainerSpec, ErrorCode};

use crate::boot::{self, ConnError, Opening, Outcome};
use crate::container::ContainerRoot;
use crate::log;

/// Why a system operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// mount(2) failed.
    #[error("mounting {what} on {target}")]
    Mount {
        /// Filesystem or device.
        what: String,
        /// Mount point.
        target: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No block device carries the requested serial.
    #[error("no disk with serial {0:?}")]
    DiskNotFound(String),
    /// Connecting to the host failed.
    #[error("connecting to the host on vsock port {port}")]
    Connect {
        /// The host port.
        port: u32,
        /// The last OS error.
        source: std::io::Error,
    },
    /// Listening for host connections failed.
    #[error("listening on vsock port {port}")]
    Listen {
        /// The guest port.
        port: u32,
        /// The OS error.
        source: std::io::Error,
    },
    /// Preparing the container's filesystem failed.
    #[error("{what}")]
    Setup {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The request named something the agent refuses.
    #[error("{0}")]
    Invalid(String),
    /// Configuring the network failed.
    #[error("configuring the network: {0}")]
    Network(String),
    /// A disk with the requested serial is there but has no capacity (yet).
    #[error("the disk with serial {0:?} is empty (size 0)")]
    DiskEmpty(String),
    /// Applying the host's `Seed` failed.
    #[error("{what}")]
    Seed {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

impl SysError {
    /// The protocol error code reported for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            SysError::Mount { .. } | SysError::DiskNotFound(_) | SysError::DiskEmpty(_) => {
                ErrorCode::MountFailed
            }
            SysError::Invalid(_) => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        }
    }
}

/// The privileged operations the agent needs from its environment.
pub trait System {
    /// The connection to the host.
    type Conn: Read + Write + AsFd + From<OwnedFd>;

    /// Prepares the agent's own environment (proc, sys, dev, ...).
    fn mount_early(&mut self) -> Result<(), SysError>;
    /// Connects to the host.
    fn connect(&mut self) -> Result<Self::Conn, SysError>;
    /// Connects to the host again after the boot connection failed (a
    /// restored snapshot's vsock transport was reset): a short pause, then
    /// attempts until `deadline`.
    fn reconnect(&mut self, deadline: Instant) -> Result<Self::Conn, SysError>;
    /// Applies the host's `Seed` (entropy credited to the kernel's pool,
    /// the wall clock); `entropy` has been checked.
    fn seed(&mut self, entropy: &[u8], unix_time_ns: u64) -> Result<(), SysError>;
    /// Assembles a container's root filesystem and environment.
    fn create_container(&mut self, spec: &ContainerSpec) -> Result<ContainerRoot, SysError>;
    /// Opens the non-blocking listener for exec connections.
    fn listen_exec(&mut self) -> Result<OwnedFd, SysError>;
    /// The host's quirk variables to pass on to every process
    /// ([`crate::quirks`]).
    fn host_quirk_env(&self) -> Vec<(String, String)>;
    /// Sends SIGKILL to every process but the agent (without reaping).
    fn kill_all(&mut self);
    /// Whether the agent is PID 1 and must reap every process.
    fn reaps_orphans(&self) -> bool;
    /// Processes the kernel's OOM killer has killed since boot.
    fn oom_kills(&self) -> u64;
    /// Kills leftover processes and unmounts the writable disks (the
    /// power-off syncs the rest).
    fn shutdown(&mut self);
}

/// Why the agent's life cycle ended early.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Setting up the environment failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The connection with the host failed.
    #[error(transparent)]
    Conn(#[from] ConnError),
}

/// How long the agent keeps reconnecting after its boot connection broke
/// before a container was created (from the first failure on).
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(60);

/// The pause before each reconnection.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// The agent's whole life: set up, connect, serve the container, tear down.
/// A boot connection that breaks before `CreateContainer` (a restored
/// snapshot's vsock transport reset) is reconnected and opened again, for
/// [`RECONNECT_WINDOW`] at most. The connection is closed only after
/// teardown (disks synced and unmounted), which tells the host it may stop
/// the VM. The caller powers off afterwards in every case.
pub fn run_agent<S: System>(sys: &mut S) -> Result<Outcome, AgentError> {
    sys.mount_early()?;
    let mut conn = match sys.connect() {
        Ok(conn) => conn,
        Err(e) => {
            sys.shutdown();
            return Err(e.into());
        }
    };
    let mut window = None;
    let result = loop {
        let err = match boot::open(&mut conn, sys) {
            Ok(Opening::Create(spec)) => {
                break boot::create_container(&mut conn, sys, &spec).map_err(AgentError::from)
            }
            Ok(Opening::Refused(code)) => break Ok(Outcome::Refused(code)),
            Err(e) => e,
        };
        let deadline = *window.get_or_insert_with(|| Instant::now() + RECONNECT_WINDOW);
        if !boot::may_reconnect(&err, Instant::now(), deadline) {
            break Err(err.into());
        }
        log::info(&format!(
            "boot connection lost before a container was created ({}); reconnecting",
            crate::chain(&err)
        ));
        match sys.reconnect(deadline) {
            Ok(c) => conn = c,
            Err(e) => break Err(e.into()),
        }
    };
    sys.shutdown();
    drop(conn);
    result
}

/// The real guest: PID 1 on the agent disk.
#[derive(Debug, Default)]
pub struct GuestSystem {
    /// Mount points to undo at teardown, in mount order (the writable
    /// disks and what sits on them, see `rootfs::create`).
    mounts: Vec<PathBuf>,
}

impl GuestSystem {
    /// A guest system with nothing mounted yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl System for GuestSystem {
    type Conn = File;

    fn mount_early(&mut self) -> Result<(), SysError> {
        crate::guest::mount_early()?;
        crate::rootfs::prepare()
    }

    fn connect(&mut self) -> Result<File, SysError> {
        crate::guest::connect_host(husk_protocol::AGENT_PORT)
    }

    fn reconnect(&mut self, deadline: Instant) -> Result<File, SysError> {
        std::thread::sleep(RECONNECT_PAUSE);
        crate::guest::connect_host_until(husk_protocol::AGENT_PORT, deadline)
    }

    fn seed(&mut self, entropy: &[u8], unix_time_ns: u64) -> Result<(), SysError> {
        crate::seed::apply(entropy, unix_time_ns)
    }

    fn create_container(&mut self, spec: &ContainerSpec) -> Result<ContainerRoot, SysError> {
        crate::rootfs::create(spec, &mut self.mounts)
    }

    fn listen_exec(&mut self) -> Result<OwnedFd, SysError> {
        crate::guest::vsock_listen(husk_protocol::EXEC_PORT)
    }

    fn host_quirk_env(&self) -> Vec<(String, String)> {
        crate::quirks::from_agent_env()
    }

    fn kill_all(&mut self) {
        crate::guest::kill_everyone();
    }

    fn reaps_orphans(&self) -> bool {
        true
    }

    fn oom_kills(&self) -> u64 {
        crate::guest::oom_kills()
    }

    fn shutdown(&mut self) {
        crate::guest::kill_all();
        // No sync(2) first: unmounting a disk writes it back, and the
        // power-off syncs whatever stayed mounted.
        while let Some(target) = self.mounts.pop() {
            if let Err(e) = crate::guest::unmount(&target) {
                log::error(&format!("unmounting {}: {e}", target.display()));
            }
        }
    }
}
