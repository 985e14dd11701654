//! A [`vmm::Vm`] running on its own thread, with a pollable "done" fd.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::signals::{self, Signals};

/// How long to wait for the VM thread after asking it to stop.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How a VM's run ended.
pub type VmResult = Result<vmm::ExitReason, VmFailure>;

/// Why a VM failed.
#[derive(Debug, thiserror::Error)]
pub enum VmFailure {
    /// The VMM (on a thread of this process) failed.
    #[error(transparent)]
    Vmm(#[from] vmm::VmError),
    /// The jailed VMM process failed or died (its error chain).
    #[error("{0}")]
    Jailed(String),
}

/// What the VM thread hands back: how the run ended, and the VM itself
/// (to resume or save it if it was paused, see [`VmThread::pause`], and in
/// any case to drop it on the caller's thread).
type ThreadResult = (VmResult, HandBack);

/// The VM on its way back from its thread. Its thread runs under the event
/// loop's seccomp filter, which allows none of what dropping a VM does
/// (removing its vsock socket): if nobody takes it back (the thread ended
/// after [`VmThread`] gave up waiting for it), it is leaked rather than
/// dropped there.
struct HandBack(Option<vmm::Vm>);

impl Drop for HandBack {
    fn drop(&mut self) {
        if vmm::seccomp::current_thread_filtered() {
            std::mem::forget(self.0.take());
        }
    }
}

/// Errors pausing the VM.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    /// The VM thread did not hand the VM back in time.
    #[error("the VM did not pause within {0} s")]
    Timeout(u64),
    /// The VM ended (or failed) instead of pausing.
    #[error("the VM ended instead of pausing ({0})")]
    Ended(String),
}

/// The VM running on its own thread (started with the handled signals
/// blocked, so they reach the caller's thread).
pub struct VmThread {
    stop: vmm::StopHandle,
    /// EOF once the thread has ended.
    done: UnixStream,
    handle: Option<JoinHandle<ThreadResult>>,
    result: Option<VmResult>,
    /// Suspended (`husk pause`): the vCPUs are frozen in place.
    frozen: bool,
}

impl VmThread {
    /// Starts `vm` on a thread named `vm`.
    pub fn start(vm: vmm::Vm) -> io::Result<Self> {
        let stop = vm.stop_handle();
        let (done, notify) = UnixStream::pair()?;
        let handle = Self::spawn(vm, notify)?;
        Ok(Self {
            stop,
            done,
            handle: Some(handle),
            result: None,
            frozen: false,
        })
    }

    /// Runs `vm` on a new `vm` thread that closes `notify` when it ends.
    fn spawn(vm: vmm::Vm, notify: UnixStream) -> io::Result<JoinHandle<ThreadResult>> {
        signals::blocked_in_new_threads(|| {
            std::thread::Builder::new()
                .name("vm".into())
                .spawn(move || {
                    let mut vm = vm;
                    let result = vm.run_until_paused_filtered().map_err(VmFailure::from);
                    drop(notify);
                    (result, HandBack(Some(vm)))
                })
        })
    }

    /// Suspends the VM (`husk pause`): its vCPUs leave the guest and wait
    /// in place ([`vmm::StopHandle::freeze`]); its threads and devices
    /// stay, so nothing is created or torn down (the threads' seccomp
    /// filters allow neither). Until [`VmThread::resume`] the guest runs
    /// no instruction; [`VmThread::stop`] ends it as usual.
    pub fn suspend(&mut self, timeout: Duration) -> Result<(), PauseError> {
        if let Some(r) = &self.result {
            return Err(PauseError::Ended(format!("{r:?}")));
        }
        if !self.stop.freeze(timeout) {
            self.stop.thaw();
            if self.is_done() {
                return Err(PauseError::Ended("the VM ended".into()));
            }
            return Err(PauseError::Timeout(timeout.as_secs()));
        }
        self.frozen = true;
        Ok(())
    }

    /// Resumes a suspended VM. Nothing to do unless suspended.
    pub fn resume(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.frozen) {
            self.stop.thaw();
        }
        Ok(())
    }

    /// Readable (EOF) once the VM thread has ended.
    pub fn done_fd(&self) -> BorrowedFd<'_> {
        self.done.as_fd()
    }

    /// [`VmThread::done_fd`] as a raw number (for callers' own poll sets).
    pub fn done_raw_fd(&self) -> RawFd {
        self.done.as_raw_fd()
    }

    /// Whether the VM thread has ended.
    pub fn is_done(&self) -> bool {
        self.result.is_some()
            || crate::wait::poll_readable(&[self.done_fd()], Some(Instant::now()))
                .is_ok_and(|r| !r.is_empty())
    }

    /// Asks the VM to stop (returns at once).
    pub fn request_stop(&self) {
        self.stop.stop();
    }

    /// Waits until the VM thread ends (true), a signal arrives or the
    /// deadline passes (false).
    pub fn wait_done(&self, signals: Option<&Signals>, deadline: Instant) -> bool {
        crate::wait::until_done(self.done_fd(), signals, deadline)
    }

    /// Stops the VM (if still running) and collects its result, waiting at
    /// most [`STOP_TIMEOUT`]; `None` if the thread did not end in time.
    pub fn stop(&mut self) -> Option<&VmResult> {
        self.frozen = false;
        if self.result.is_none() {
            self.stop.stop();
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if self.wait_done(None, deadline) {
                    self.result = self.handle.take()?.join().ok().map(|(r, _)| r);
                    break;
                }
            }
        }
        self.result.as_ref()
    }

    /// Pauses the VM and takes it back (vCPUs out of KVM_RUN, devices
    /// idle), ready to be saved, within `timeout`.
    pub fn pause(&mut self, timeout: Duration) -> Result<vmm::Vm, PauseError> {
        let ended = |r: &VmResult| PauseError::Ended(format!("{r:?}"));
        if let Some(r) = &self.result {
            return Err(ended(r));
        }
        self.stop.pause();
        let deadline = Instant::now() + timeout;
        while !self.wait_done(None, deadline) {
            if Instant::now() >= deadline {
                return Err(PauseError::Timeout(timeout.as_secs()));
            }
        }
        let Some(handle) = self.handle.take() else {
            return Err(PauseError::Ended("no VM thread".into()));
        };
        let (result, mut vm) = handle
            .join()
            .map_err(|_| PauseError::Ended("the VM thread panicked".into()))?;
        match (&result, vm.0.take()) {
            (Ok(vmm::ExitReason::Paused), Some(vm)) => Ok(vm),
            _ => {
                let err = ended(&result);
                self.result = Some(result);
                Err(err)
            }
        }
    }
}
