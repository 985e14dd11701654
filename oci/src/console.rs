//! Terminals: with `--console-socket` the runtime makes a pseudo-terminal
//! on the host and hands its master to the caller over that Unix socket
//! (SCM_RIGHTS, the way runc does); the slave, in raw mode, is relayed to
//! the process's terminal in the guest (made by the agent), which does the
//! line discipline (echo, signals, `\n` → `\r\n`).

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::{OptionalActions, Termios};

/// Why a terminal could not be made or handed over.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Making the pseudo-terminal failed.
    #[error("creating a pseudo-terminal: {0}")]
    Pty(#[source] std::io::Error),
    /// Connecting to the console socket failed.
    #[error("connecting to the console socket {path}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Sending the master failed.
    #[error("sending the terminal to the console socket {path}")]
    Send {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Makes a pseudo-terminal, sends its master over `socket` and returns
/// the slave (raw, not the caller's controlling terminal).
pub fn send_console(socket: &Path) -> Result<OwnedFd, ConsoleError> {
    let pty = |e: rustix::io::Errno| ConsoleError::Pty(e.into());
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags).map_err(pty)?;
    rustix::pty::grantpt(&master).map_err(pty)?;
    rustix::pty::unlockpt(&master).map_err(pty)?;
    let name = rustix::pty::ptsname(&master, Vec::new()).map_err(pty)?;
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)
        .or_else(|_| {
            let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC;
            rustix::fs::open(name.as_c_str(), flags, Mode::empty())
        })
        .map_err(pty)?;
    make_raw(slave.as_fd()).map_err(pty)?;
    let conn = UnixStream::connect(socket).map_err(|source| ConsoleError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    send_fd(&conn, name.as_bytes(), master.as_fd()).map_err(|e| ConsoleError::Send {
        path: socket.to_path_buf(),
        source: e.into(),
    })?;
    Ok(slave)
}

/// Sends `fd` with `data` (the terminal's name, as runc sends it) in one
/// message.
fn send_fd(conn: &UnixStream, data: &[u8], fd: BorrowedFd<'_>) -> rustix::io::Result<()> {
    let fds = [fd];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(rustix::io::Errno::NOSPC);
    }
    rustix::net::sendmsg(
        conn,
        &[IoSlice::new(data)],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// Puts terminal `fd` in raw mode.
pub fn make_raw(fd: BorrowedFd<'_>) -> rustix::io::Result<()> {
    let mut t = rustix::termios::tcgetattr(fd)?;
    t.make_raw();
    rustix::termios::tcsetattr(fd, OptionalActions::Now, &t)
}

/// A terminal put in raw mode, restored when dropped (a foreground `exec
/// --tty` on the caller's own terminal).
pub struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    /// Raw mode on `fd` if it is a terminal.
    pub fn enable(fd: BorrowedFd<'a>) -> Option<RawMode<'a>> {
        let saved = rustix::termios::tcgetattr(fd).ok()?;
        make_raw(fd).ok()?;
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(self.fd, OptionalActions::Now, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSliceMut;
    use std::os::unix::net::UnixListener;

    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

    #[test]
    fn the_master_arrives_and_talks_to_the_raw_slave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let slave = send_console(&path).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let mut name = [0u8; 64];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            &conn,
            &mut [IoSliceMut::new(&mut name)],
            &mut control,
            RecvFlags::empty(),
        )
        .unwrap();
        assert!(name[..got.bytes].starts_with(b"/dev/pts/"));
        let mut master = None;
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = msg {
                master = fds.into_iter().next();
            }
        }
        let master = master.expect("a master fd");
        assert!(rustix::termios::isatty(&slave));
        // Raw: no echo, no translation.
        rustix::io::write(&master, b"ab\n").unwrap();
        let mut buf = [0u8; 16];
        let n = rustix::io::read(&slave, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"ab\n");
        rustix::io::write(&slave, b"x\n").unwrap();
        let n = rustix::io::read(&master, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"x\n");
    }
}
