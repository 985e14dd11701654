//! Signals as a pollable fd (the self-pipe trick), so event loops can
//! forward them, stop VMs and clean up instead of dying mid-way.
//!
//! One [`Signals`] is installed per process at a time (tests that
//! install one must not run beside each other in one process). The handler writes
//! each signal's number into a pipe; [`Signals::take`] reads them back in
//! order, [`Signals::received`] reports the last one.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::str::FromStr;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use rustix::pipe::{pipe_with, PipeFlags};
use rustix::process::Signal as Sig;
use serde::{Deserialize, Serialize};

/// Write end of the pipe, for the handler (-1: not installed).
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
/// The last signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// Bit N set: signal N is handled by the installed [`Signals`].
static INSTALLED: AtomicU64 = AtomicU64::new(0);

/// SIGINT and SIGTERM: what a foreground command must survive to clean up.
pub const TERMINATING: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

extern "C" fn on_signal(sig: libc::c_int) {
    RECEIVED.store(sig, Ordering::SeqCst);
    let fd = PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: `fd` is the write end of the pipe owned by the installed
        // `Signals`, which unpublishes it (stores -1) before closing it.
        let pipe = unsafe { BorrowedFd::borrow_raw(fd) };
        // rustix issues write(2) directly (async-signal-safe) and does not
        // touch errno; a full pipe just drops the byte.
        let _ = rustix::io::write(pipe, &[sig as u8]);
    }
}

/// Installed handlers; restored to the default on drop.
pub struct Signals {
    read: OwnedFd,
    _write: OwnedFd,
    handled: Vec<libc::c_int>,
}

impl Signals {
    /// Installs handlers for SIGINT and SIGTERM.
    pub fn install() -> io::Result<Self> {
        Self::install_for(&TERMINATING)
    }

    /// Installs handlers for `sigs` (1..=63).
    pub fn install_for(sigs: &[libc::c_int]) -> io::Result<Self> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        PIPE_WRITE.store(write.as_raw_fd(), Ordering::SeqCst);
        RECEIVED.store(0, Ordering::SeqCst);
        let mut mask = 0u64;
        for &sig in sigs {
            if !(1..64).contains(&sig) {
                return Err(io::Error::from(io::ErrorKind::InvalidInput));
            }
            set_handler(sig, on_signal as *const () as libc::sighandler_t)?;
            mask |= 1 << sig;
        }
        INSTALLED.store(mask, Ordering::SeqCst);
        Ok(Self {
            read,
            _write: write,
            handled: sigs.to_vec(),
        })
    }

    /// The fd that becomes readable when a signal arrives (also through
    /// [`AsFd`]).
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// [`Signals::fd`], borrowed.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.read)
    }

    /// The last signal received since installation, if any (drains the
    /// pipe).
    pub fn received(&self) -> Option<i32> {
        let _ = self.take();
        match RECEIVED.load(Ordering::SeqCst) {
            0 => None,
            sig => Some(sig),
        }
    }

    /// The signals received since the last call, in order.
    pub fn take(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = rustix::io::read(&self.read, &mut buf) {
            out.extend(buf[..n].iter().map(|&b| i32::from(b)));
        }
        out
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for &sig in &self.handled {
            let _ = set_handler(sig, libc::SIG_DFL);
        }
        INSTALLED.store(0, Ordering::SeqCst);
        PIPE_WRITE.store(-1, Ordering::SeqCst);
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

/// Sends `sig` to this process (as `kill -SIG $$` would).
pub fn raise(sig: i32) -> io::Result<()> {
    let sig = rustix::process::Signal::from_named_raw(sig)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    rustix::process::kill_process(rustix::process::getpid(), sig)?;
    Ok(())
}

fn set_handler(sig: libc::c_int, handler: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; we set the handler and an empty
    // mask, and pass valid pointers to sigaction(2).
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(sig, &action, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` (which starts threads) with the handled signals (at least
/// SIGINT and SIGTERM) blocked, so the threads it starts inherit the block
/// and the signals reach the main thread only.
pub fn blocked_in_new_threads<T>(f: impl FnOnce() -> T) -> T {
    let mask = INSTALLED.load(Ordering::SeqCst);
    // SAFETY: sigset manipulation on local values; pthread_sigmask with
    // valid pointers.
    let old = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in TERMINATING {
            libc::sigaddset(&mut set, sig);
        }
        for sig in 1..64 {
            if mask & (1 << sig) != 0 {
                libc::sigaddset(&mut set, sig);
            }
        }
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    };
    let result = f();
    // SAFETY: restoring the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    result
}

/// A signal (1 to 64), stored by number; parsed from Docker's spellings
/// (`KILL`, `SIGKILL`, `9`, `SIGRTMIN+3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "i32", into = "i32")]
pub struct Signal(i32);

impl Signal {
    /// SIGKILL.
    pub const KILL: Signal = Signal(Sig::KILL.as_raw());
    /// SIGTERM.
    pub const TERM: Signal = Signal(Sig::TERM.as_raw());

    /// The signal numbered `n`, if it is one.
    pub fn from_raw(n: i32) -> Option<Signal> {
        (1..=64).contains(&n).then_some(Signal(n))
    }

    /// Its number.
    pub fn as_raw(self) -> i32 {
        self.0
    }
}

/// A string that names no signal.
#[derive(Debug, thiserror::Error)]
#[error("invalid signal {0:?}")]
pub struct InvalidSignal(pub String);

impl FromStr for Signal {
    type Err = InvalidSignal;

    fn from_str(s: &str) -> Result<Signal, InvalidSignal> {
        parse_signal(s).ok_or_else(|| InvalidSignal(s.to_string()))
    }
}

impl TryFrom<i32> for Signal {
    type Error = InvalidSignal;

    fn try_from(n: i32) -> Result<Signal, InvalidSignal> {
        Signal::from_raw(n).ok_or_else(|| InvalidSignal(n.to_string()))
    }
}

impl From<Signal> for i32 {
    fn from(s: Signal) -> i32 {
        s.0
    }
}

impl fmt::Display for Signal {
    /// `SIGTERM`, or the number for signals without a name here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match SIGNAL_NAMES.iter().find(|&&(_, n)| n == self.0) {
            Some((name, _)) => write!(f, "SIG{name}"),
            None => write!(f, "{}", self.0),
        }
    }
}

fn parse_signal(s: &str) -> Option<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::from_raw(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')?.parse().ok()?
        };
        let n = libc::SIGRTMIN().checked_add(off)?;
        return (off >= 0 && n <= libc::SIGRTMAX()).then_some(Signal(n));
    }
    SIGNAL_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, v)| Signal(v))
}

const SIGNAL_NAMES: &[(&str, i32)] = &[
    ("HUP", Sig::HUP.as_raw()),
    ("INT", Sig::INT.as_raw()),
    ("QUIT", Sig::QUIT.as_raw()),
    ("ILL", Sig::ILL.as_raw()),
    ("TRAP", Sig::TRAP.as_raw()),
    ("ABRT", Sig::ABORT.as_raw()),
    ("IOT", Sig::ABORT.as_raw()),
    ("BUS", Sig::BUS.as_raw()),
    ("FPE", Sig::FPE.as_raw()),
    ("KILL", Sig::KILL.as_raw()),
    ("USR1", Sig::USR1.as_raw()),
    ("SEGV", Sig::SEGV.as_raw()),
    ("USR2", Sig::USR2.as_raw()),
    ("PIPE", Sig::PIPE.as_raw()),
    ("ALRM", Sig::ALARM.as_raw()),
    ("TERM", Sig::TERM.as_raw()),
    ("STKFLT", Sig::STKFLT.as_raw()),
    ("CHLD", Sig::CHILD.as_raw()),
    ("CONT", Sig::CONT.as_raw()),
    ("STOP", Sig::STOP.as_raw()),
    ("TSTP", Sig::TSTP.as_raw()),
    ("TTIN", Sig::TTIN.as_raw()),
    ("TTOU", Sig::TTOU.as_raw()),
    ("URG", Sig::URG.as_raw()),
    ("XCPU", Sig::XCPU.as_raw()),
    ("XFSZ", Sig::XFSZ.as_raw()),
    ("VTALRM", Sig::VTALARM.as_raw()),
    ("PROF", Sig::PROF.as_raw()),
    ("WINCH", Sig::WINCH.as_raw()),
    ("IO", Sig::IO.as_raw()),
    ("PWR", Sig::POWER.as_raw()),
    ("SYS", Sig::SYS.as_raw()),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(s: &str) -> Option<i32> {
        s.parse::<Signal>().ok().map(Signal::as_raw)
    }

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(sig("KILL"), Some(9));
        assert_eq!(sig("sigterm"), Some(15));
        assert_eq!(sig("SIGUSR1"), Some(10));
        assert_eq!(sig("3"), Some(3));
        assert_eq!(sig("SIGRTMIN+2"), Some(libc::SIGRTMIN() + 2));
        assert_eq!(sig("0"), None);
        assert_eq!(sig("65"), None);
        assert_eq!(sig("NOPE"), None);
        assert_eq!(Signal::TERM.to_string(), "SIGTERM");
        let err = "NOPE".parse::<Signal>().unwrap_err();
        assert_eq!(err.to_string(), "invalid signal \"NOPE\"");
    }

    #[test]
    fn signals_are_stored_as_numbers() {
        assert_eq!(serde_json::to_string(&Signal::KILL).unwrap(), "9");
        assert_eq!(serde_json::from_str::<Signal>("15").unwrap(), Signal::TERM);
        assert!(serde_json::from_str::<Signal>("0").is_err());
        assert!(serde_json::from_str::<Signal>("99").is_err());
    }
    #[test]
    fn signals_arrive_on_the_fd_in_order() {
        let signals = Signals::install_for(&[libc::SIGUSR1, libc::SIGUSR2]).unwrap();
        // `raise` is process-directed: the handler may run on another
        // thread, after `raise` returned. Wait for each byte on the fd.
        let next = || {
            let ready = crate::wait::poll_readable(&[signals.as_fd()], None).unwrap();
            assert_eq!(ready, vec![0]);
            signals.take()
        };
        raise(libc::SIGUSR2).unwrap();
        assert_eq!(next(), vec![libc::SIGUSR2]);
        raise(libc::SIGUSR1).unwrap();
        assert_eq!(next(), vec![libc::SIGUSR1]);
        raise(libc::SIGUSR2).unwrap();
        let ready = crate::wait::poll_readable(&[signals.as_fd()], None).unwrap();
        assert_eq!(ready, vec![0]);
        assert_eq!(signals.received(), Some(libc::SIGUSR2));
    }
}
