//! A [`vmm::Vm`] running on its own thread, with a pollable "done" fd.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::signals::{self, Signals};
use crate::wait::{Wake, Watch};

/// How long to wait for the VM thread after asking it to stop.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the VM thread returns.
pub type VmResult = Result<vmm::ExitReason, vmm::VmError>;

/// The VM running on its own thread (started with the handled signals
/// blocked, so they reach the caller's thread).
pub struct VmThread {
    stop: vmm::StopHandle,
    /// EOF once the thread has ended.
    done: UnixStream,
    handle: Option<JoinHandle<VmResult>>,
    result: Option<VmResult>,
}

impl VmThread {
    /// Starts `vm` on a thread named `vm`.
    pub fn start(vm: vmm::Vm) -> io::Result<Self> {
        let stop = vm.stop_handle();
        let (done, notify) = UnixStream::pair()?;
        let handle = signals::blocked_in_new_threads(|| {
            std::thread::Builder::new()
                .name("vm".into())
                .spawn(move || {
                    let result = vm.run();
                    drop(notify);
                    result
                })
        })?;
        Ok(Self {
            stop,
            done,
            handle: Some(handle),
            result: None,
        })
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
        let watch = Watch {
            signals,
            vm_done: None,
        };
        matches!(watch.wait(self.done_fd(), Some(deadline)), Ok(Wake::Ready))
    }

    /// Stops the VM (if still running) and collects its result, waiting at
    /// most [`STOP_TIMEOUT`]; `None` if the thread did not end in time.
    pub fn stop(&mut self) -> Option<&VmResult> {
        if self.result.is_none() {
            self.stop.stop();
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if self.wait_done(None, deadline) {
                    self.result = self.handle.take()?.join().ok();
                    break;
                }
            }
        }
        self.result.as_ref()
    }
}
