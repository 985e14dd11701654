//! The privileged operations of the agent's life cycle (mounts, the vsock
//! connection, teardown), behind a trait so the protocol and process logic
//! can be tested on a development host without root or a VM.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use husk_protocol::RootDisk;

use crate::log;
use crate::session::{self, Outcome, SessionError};

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
}

/// The privileged operations the agent needs from its environment.
pub trait System {
    /// The connection to the host.
    type Conn: Read + Write + AsRawFd;

    /// Prepares the agent's own environment (proc, sys, dev, ...).
    fn mount_early(&mut self) -> Result<(), SysError>;
    /// Connects to the host.
    fn connect(&mut self) -> Result<Self::Conn, SysError>;
    /// Mounts `disk` and what the command needs inside it; returns the
    /// directory to chroot into.
    fn mount_root(&mut self, disk: &RootDisk) -> Result<PathBuf, SysError>;
    /// Whether the agent is PID 1 and must reap every process.
    fn reaps_orphans(&self) -> bool;
    /// Kills leftover processes, syncs and unmounts.
    fn shutdown(&mut self);
}

/// Why the agent's life cycle ended early.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Setting up the environment failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The session with the host failed.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// The agent's whole life: set up, connect, serve one session, tear down.
/// The connection is closed only after teardown (disks synced and
/// unmounted), which tells the host it may stop the VM. The caller powers
/// off afterwards in every case.
pub fn run_agent<S: System>(sys: &mut S) -> Result<Outcome, AgentError> {
    sys.mount_early()?;
    let mut conn = match sys.connect() {
        Ok(conn) => conn,
        Err(e) => {
            sys.shutdown();
            return Err(e.into());
        }
    };
    let result = session::serve(&mut conn, sys);
    sys.shutdown();
    drop(conn);
    Ok(result?)
}

/// The real guest: PID 1 on the agent disk.
#[derive(Debug, Default)]
pub struct GuestSystem {
    /// Mount points made for the command, in mount order.
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
        crate::guest::mount_early()
    }

    fn connect(&mut self) -> Result<File, SysError> {
        crate::guest::connect_host(husk_protocol::AGENT_PORT)
    }

    fn mount_root(&mut self, disk: &RootDisk) -> Result<PathBuf, SysError> {
        crate::guest::mount_root(disk, &mut self.mounts)
    }

    fn reaps_orphans(&self) -> bool {
        true
    }

    fn shutdown(&mut self) {
        crate::guest::kill_all();
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
        while let Some(target) = self.mounts.pop() {
            if let Err(e) = crate::guest::unmount(&target) {
                log::error(&format!("unmounting {}: {e}", target.display()));
            }
        }
    }
}
