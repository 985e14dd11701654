//! A new process's stdio: three pipes, or a pseudo-terminal from the
//! container's devpts, and the agent's (non-blocking) ends of them.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The process's stdio before the fork: the child's three fds and the
/// agent's ends.
pub struct Stdio {
    child: [OwnedFd; 3],
    parent: ProcIo,
}

/// The agent's ends of a process's stdio.
#[derive(Debug)]
pub struct ProcIo {
    /// Where the agent writes the process's stdin (pipe, or pty master).
    pub stdin: Option<File>,
    /// Its stdout pipe, or the pty master.
    pub stdout: File,
    /// Its stderr pipe (`None` with a pty: stderr goes to the terminal).
    pub stderr: Option<File>,
    /// The pty master, for resizing and finding the foreground group.
    pub pty: Option<File>,
}

impl Stdio {
    /// Pipes for stdout and stderr; a pipe for stdin when `stdin`, else
    /// /dev/null.
    pub fn pipes(stdin: bool) -> io::Result<Stdio> {
        let (child_in, parent_in) = if stdin {
            let (r, w) = pipe()?;
            (r, Some(File::from(w)))
        } else {
            (OwnedFd::from(File::open("/dev/null")?), None)
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        Ok(Stdio {
            child: [child_in, out_w, err_w],
            parent: ProcIo {
                stdin: parent_in,
                stdout: File::from(out_r),
                stderr: Some(File::from(err_r)),
                pty: None,
            },
        })
    }

    /// A new terminal from the devpts multiplexer `ptmx`, of `size`.
    pub fn pty(ptmx: &Path, size: Option<(u16, u16)>, stdin: bool) -> io::Result<Stdio> {
        let master = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(ptmx)?;
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads an int from a valid pointer.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some((rows, cols)) = size {
            resize(&master, rows, cols)?;
        }
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
        // SAFETY: TIOCGPTPEER takes open flags and returns a new fd.
        let slave = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
        if slave < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the ioctl returned a new fd that nothing else owns.
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        Ok(Stdio {
            child: [slave.try_clone()?, slave.try_clone()?, slave],
            parent: ProcIo {
                stdin: if stdin {
                    Some(master.try_clone()?)
                } else {
                    None
                },
                stdout: master.try_clone()?,
                stderr: None,
                pty: Some(master),
            },
        })
    }

    /// Whether the child gets a terminal (to make it its controlling one).
    pub fn is_tty(&self) -> bool {
        self.parent.pty.is_some()
    }

    /// The child's fds, to become its 0, 1 and 2.
    pub fn child_fds(&self) -> [RawFd; 3] {
        [
            self.child[0].as_raw_fd(),
            self.child[1].as_raw_fd(),
            self.child[2].as_raw_fd(),
        ]
    }

    /// After the fork: closes the child's ends in the agent and makes the
    /// agent's ends non-blocking (for its poll loop).
    pub fn into_parent(self) -> io::Result<ProcIo> {
        drop(self.child);
        let io = self.parent;
        set_nonblocking(&io.stdout)?;
        for f in [&io.stdin, &io.stderr].into_iter().flatten() {
            set_nonblocking(f)?;
        }
        Ok(io)
    }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on an fd we own; no pointers involved.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets a terminal's window size.
pub fn resize(pty: &File, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    if unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The terminal's foreground process group, if any.
pub fn foreground_group(pty: &File) -> Option<libc::pid_t> {
    let mut pgrp: libc::pid_t = 0;
    // SAFETY: TIOCGPGRP writes a pid_t to a valid pointer.
    let rc = unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCGPGRP, &mut pgrp) };
    (rc == 0 && pgrp > 0).then_some(pgrp)
}
