//! The one readiness waiter: poll(2) over the caller's fds, the signal fd
//! and the VM's "done" fd, until a deadline.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::signals::Signals;

/// Waits until one of `fds` is readable (or hung up) or `deadline` passes;
/// returns the indexes of the ready fds (empty: the deadline passed).
/// `EINTR` is retried; a deadline in the past still looks once.
pub fn poll_readable(fds: &[BorrowedFd<'_>], deadline: Option<Instant>) -> io::Result<Vec<usize>> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN))
        .collect();
    loop {
        // After the deadline, one last poll that does not block.
        let (timeout, last) = match deadline {
            None => (None, false),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up, so a wake-up is never before the deadline.
                let left = if left.is_zero() {
                    left
                } else {
                    left + Duration::from_millis(1)
                };
                let timeout = Timespec {
                    tv_sec: left.as_secs().min(60) as i64,
                    tv_nsec: i64::from(left.subsec_nanos()),
                };
                (Some(timeout), left.is_zero())
            }
        };
        match poll(&mut pfds, timeout.as_ref()) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(0) if last => return Ok(Vec::new()),
            Ok(0) => continue,
            Ok(_) => {
                return Ok(pfds
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| !p.revents().is_empty())
                    .map(|(i, _)| i)
                    .collect())
            }
        }
    }
}

/// What ended a [`Watch::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The fd is readable (data, EOF or an error to read).
    Ready,
    /// A handled signal arrived (the last one received).
    Signal(i32),
    /// The VM thread ended.
    VmDone,
    /// The deadline passed.
    Timeout,
}

/// What blocking waits watch besides their own fd: signals and the VM.
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    /// Installed handlers whose signals interrupt the wait.
    pub signals: Option<&'a Signals>,
    /// Readable once the VM has ended (see [`crate::VmThread::done_fd`]).
    pub vm_done: Option<BorrowedFd<'a>>,
}

/// Waits until `done` (a VM's "ended" fd) is readable (true), a handled
/// signal arrives or the deadline passes (false).
pub fn until_done(done: BorrowedFd<'_>, signals: Option<&Signals>, deadline: Instant) -> bool {
    let watch = Watch {
        signals,
        vm_done: None,
    };
    matches!(watch.wait(done, Some(deadline)), Ok(Wake::Ready))
}

impl Watch<'_> {
    /// Nothing but the fd and the deadline.
    pub fn none() -> Watch<'static> {
        Watch {
            signals: None,
            vm_done: None,
        }
    }

    /// Waits until `fd` is readable, a signal arrives, the VM ends or the
    /// deadline passes. A signal wins over data, data over the VM's end
    /// (so what the guest sent before it ended is read first).
    pub fn wait(&self, fd: BorrowedFd<'_>, deadline: Option<Instant>) -> io::Result<Wake> {
        let mut fds = vec![fd];
        let signal_at = self.signals.map(|s| {
            fds.push(s.as_fd());
            fds.len() - 1
        });
        let done_at = self.vm_done.map(|d| {
            fds.push(d);
            fds.len() - 1
        });
        loop {
            let ready = poll_readable(&fds, deadline)?;
            if ready.is_empty() {
                return Ok(Wake::Timeout);
            }
            if let (Some(at), Some(signals)) = (signal_at, self.signals) {
                if ready.contains(&at) {
                    if let Some(sig) = signals.received() {
                        return Ok(Wake::Signal(sig));
                    }
                }
            }
            if ready.contains(&0) {
                return Ok(Wake::Ready);
            }
            if done_at.is_some_and(|at| ready.contains(&at)) {
                return Ok(Wake::VmDone);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn data_wins_over_the_vm_end_and_deadlines_pass() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let (done, done_peer) = UnixStream::pair().unwrap();
        let watch = Watch {
            signals: None,
            vm_done: Some(done.as_fd()),
        };
        let soon = || Some(Instant::now() + Duration::from_millis(30));
        assert_eq!(watch.wait(a.as_fd(), soon()).unwrap(), Wake::Timeout);
        drop(done_peer);
        assert_eq!(watch.wait(a.as_fd(), soon()).unwrap(), Wake::VmDone);
        b.write_all(b"x").unwrap();
        assert_eq!(watch.wait(a.as_fd(), soon()).unwrap(), Wake::Ready);
        // A deadline in the past still looks once.
        let past = Some(Instant::now() - Duration::from_millis(1));
        assert_eq!(Watch::none().wait(a.as_fd(), past).unwrap(), Wake::Ready);
        let (idle, _idle_peer) = UnixStream::pair().unwrap();
        assert_eq!(
            Watch::none().wait(idle.as_fd(), past).unwrap(),
            Wake::Timeout
        );
    }

    #[test]
    fn poll_reports_every_ready_fd() {
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, _b_peer) = UnixStream::pair().unwrap();
        let (c, c_peer) = UnixStream::pair().unwrap();
        a_peer.write_all(b"x").unwrap();
        drop(c_peer);
        let fds = [a.as_fd(), b.as_fd(), c.as_fd()];
        assert_eq!(poll_readable(&fds, None).unwrap(), vec![0, 2]);
    }
}
