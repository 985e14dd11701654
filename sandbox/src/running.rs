//! A running VM, whichever way it runs: jailed in its own `husk-vmm`
//! process ([`crate::jail`]) or, unjailed, on a thread of this process
//! ([`VmThread`]: non-root callers, `HUSK_NO_JAIL=1`).

use std::os::fd::{BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use crate::jail::proto::ToVmm;
use crate::jail::{JailInfo, VmProcess};
use crate::sandbox::SandboxError;
use crate::signals::Signals;
use crate::vmthread::{PauseError, VmResult, VmThread};

/// A running VM with a pollable "done" fd.
pub enum RunningVm {
    /// On a thread of this process.
    Thread(VmThread),
    /// In a jailed process.
    Jailed(VmProcess),
}

impl RunningVm {
    /// Readable once the VM has ended.
    pub fn done_fd(&self) -> BorrowedFd<'_> {
        match self {
            RunningVm::Thread(t) => t.done_fd(),
            RunningVm::Jailed(p) => p.done_fd(),
        }
    }

    /// [`RunningVm::done_fd`] as a raw number (for callers' own poll sets).
    pub fn done_raw_fd(&self) -> RawFd {
        match self {
            RunningVm::Thread(t) => t.done_raw_fd(),
            RunningVm::Jailed(p) => p.done_raw_fd(),
        }
    }

    /// Whether the VM has ended.
    pub fn is_done(&self) -> bool {
        match self {
            RunningVm::Thread(t) => t.is_done(),
            RunningVm::Jailed(p) => p.is_done(),
        }
    }

    /// Asks the VM to stop (returns at once).
    pub fn request_stop(&self) {
        match self {
            RunningVm::Thread(t) => t.request_stop(),
            RunningVm::Jailed(p) => p.request_stop(),
        }
    }

    /// Waits until the VM ends (true), a signal arrives or the deadline
    /// passes (false).
    pub fn wait_done(&self, signals: Option<&Signals>, deadline: Instant) -> bool {
        match self {
            RunningVm::Thread(t) => t.wait_done(signals, deadline),
            RunningVm::Jailed(p) => p.wait_done(signals, deadline),
        }
    }

    /// Stops the VM if it still runs and returns how it ended (`None` if
    /// its thread did not end in time).
    pub fn stop(&mut self) -> Option<&VmResult> {
        match self {
            RunningVm::Thread(t) => t.stop(),
            RunningVm::Jailed(p) => p.stop(),
        }
    }

    /// Pauses the VM for good and saves it into `files` (a warm-start
    /// template): on its thread here, or by its jailed process (which must
    /// run a [`crate::jail::proto::VmSpec::Template`]).
    pub fn save_template(
        &mut self,
        files: &vmm::SnapshotFiles,
        timeout: Duration,
    ) -> Result<(), SandboxError> {
        match self {
            RunningVm::Thread(t) => Ok(t.pause(timeout)?.save_snapshot(files)?),
            RunningVm::Jailed(p) => Ok(p.save_template(files, timeout)?),
        }
    }

    /// Suspends the VM's vCPUs and devices (`husk pause`) until
    /// [`RunningVm::resume`]; the VM stays this process's (or its jailed
    /// process's), and [`RunningVm::done_fd`] does not become readable.
    pub fn suspend(&mut self, timeout: Duration) -> Result<(), PauseError> {
        match self {
            RunningVm::Thread(t) => t.suspend(timeout),
            RunningVm::Jailed(p) => p.control(ToVmm::Pause, timeout),
        }
    }

    /// Resumes a VM suspended by [`RunningVm::suspend`].
    pub fn resume(&mut self, timeout: Duration) -> Result<(), PauseError> {
        match self {
            RunningVm::Thread(t) => t.resume().map_err(|e| PauseError::Ended(e.to_string())),
            RunningVm::Jailed(p) => p.control(ToVmm::Resume, timeout),
        }
    }

    /// The jail, if the VM runs in one.
    pub fn jail(&self) -> Option<&JailInfo> {
        match self {
            RunningVm::Thread(_) => None,
            RunningVm::Jailed(p) => Some(p.info()),
        }
    }
}
