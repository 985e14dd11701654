//! Signals as a pollable fd (the self-pipe trick), so event loops can
//! forward them, stop VMs and clean up instead of dying mid-way.
//!
//! One [`Signals`] is installed per process at a time. The handler writes
//! each signal's number into a pipe; [`Signals::take`] reads them back in
//! order, [`Signals::received`] reports the last one.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

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
        // SAFETY: errno is saved and restored around write(2), which is
        // async-signal-safe; the buffer is a local byte.
        unsafe {
            let errno = *libc::__errno_location();
            let byte = sig as u8;
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = errno;
        }
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
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid array of two ints.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 returned two new fds that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
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

    /// The fd that becomes readable when a signal arrives.
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
        loop {
            // SAFETY: reading into a valid local buffer from our own pipe.
            let n =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend(buf[..n as usize].iter().map(|&b| i32::from(b)));
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
