//! Signals as a pollable fd (the self-pipe trick), so event loops can
//! forward them, stop VMs and clean up instead of dying mid-way.
//!
//! One [`Signals`] is installed per process at a time (tests that
//! install one must not run beside each other in one process). The handler writes
//! each signal's number into a pipe; [`Signals::take`] reads them back in
//! order, [`Signals::received`] reports the last one.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use rustix::pipe::{pipe_with, PipeFlags};

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

/// Signal names Docker accepts (`KILL`, `SIGKILL`, `9`, `SIGRTMIN+3`).
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')?.parse().ok()?
        };
        let n = libc::SIGRTMIN() + off;
        return (off >= 0 && n <= libc::SIGRTMAX()).then_some(n);
    }
    SIGNAL_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, v)| v)
}

const SIGNAL_NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse_signal("KILL"), Some(9));
        assert_eq!(parse_signal("sigterm"), Some(15));
        assert_eq!(parse_signal("SIGUSR1"), Some(10));
        assert_eq!(parse_signal("3"), Some(3));
        assert_eq!(parse_signal("SIGRTMIN+2"), Some(libc::SIGRTMIN() + 2));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("65"), None);
        assert_eq!(parse_signal("NOPE"), None);
    }

    #[test]
    fn signals_arrive_on_the_fd_in_order() {
        let signals = Signals::install_for(&[libc::SIGUSR1, libc::SIGUSR2]).unwrap();
        raise(libc::SIGUSR2).unwrap();
        raise(libc::SIGUSR1).unwrap();
        let ready = crate::wait::poll_readable(&[signals.as_fd()], None).unwrap();
        assert_eq!(ready, vec![0]);
        assert_eq!(signals.take(), vec![libc::SIGUSR2, libc::SIGUSR1]);
        raise(libc::SIGUSR1).unwrap();
        assert_eq!(signals.received(), Some(libc::SIGUSR1));
    }
}
