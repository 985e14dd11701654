//! A new process's stdio: three pipes, or a pseudo-terminal from the
//! container's devpts, and the agent's (non-blocking) ends of them.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
use rustix::pipe::PipeFlags;
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;

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
        rustix::pty::unlockpt(&master)?;
        if let Some((rows, cols)) = size {
            resize(&master, rows, cols)?;
        }
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)?;
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

    /// After the child started: closes the child's ends in the agent and makes the
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
    Ok(rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?)
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = fcntl_getfl(&fd)?;
    Ok(fcntl_setfl(&fd, flags | OFlags::NONBLOCK)?)
}

/// Sets a terminal's window size.
pub fn resize(pty: &File, rows: u16, cols: u16) -> io::Result<()> {
    let size = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    Ok(rustix::termios::tcsetwinsize(pty, size)?)
}

/// The terminal's foreground process group, if any.
pub fn foreground_group(pty: &File) -> Option<libc::pid_t> {
    rustix::termios::tcgetpgrp(pty)
        .ok()
        .map(|pgrp| pgrp.as_raw_nonzero().get())
}
