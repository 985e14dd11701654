//! The client side of a process session (an exec'd process through the
//! agent, or the container's init through the monitor's attach socket):
//! local stdin → `Stdin`, `Stdout`/`Stderr` → local fds, SIGWINCH →
//! `Resize`, other signals → `Signal`, until the process's exit arrives.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use husk_protocol::{write_message, ErrorCode, FrameDecoder, Message, MAX_CHUNK};

use crate::signals::Signals;

/// Why a session broke (as opposed to the process ending).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading or writing the connection failed.
    #[error("connection to the container")]
    Io(#[from] io::Error),
    /// The peer sent something that is not a valid frame.
    #[error("invalid message from the container: {0}")]
    Decode(String),
}

/// The local ends of a session.
pub struct ClientIo<'a> {
    /// Forwarded as the process's stdin (`None`: nothing is sent).
    pub stdin: Option<RawFd>,
    /// Where `Stdout` goes.
    pub stdout: RawFd,
    /// Where `Stderr` goes.
    pub stderr: RawFd,
    /// Installed signal handlers to watch (SIGWINCH and those to forward).
    pub signals: Option<&'a Signals>,
    /// The terminal whose size is sent on SIGWINCH.
    pub tty: Option<RawFd>,
    /// Forward signals other than SIGWINCH to the process.
    pub forward_signals: bool,
}

/// How the process ended, as the peer reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
    /// Did not start, or ended abnormally, for this reason.
    Failed {
        /// The typed reason.
        code: ErrorCode,
        /// Its description.
        detail: String,
    },
    /// The connection ended without an exit (peer died).
    Closed,
}

impl Outcome {
    /// Docker's exit code for this outcome (`None` when unknown).
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Outcome::Exited(c) => Some(*c),
            Outcome::Signaled(s) => Some(husk_protocol::signal_exit_code(*s)),
            Outcome::Failed { code, .. } => Some(code.exit_code()),
            Outcome::Closed => None,
        }
    }
}

/// The size of terminal `fd` as (rows, cols).
pub fn terminal_size(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ writes a winsize into our local.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: ioctl with a valid pointer to a winsize.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Relays until the process ends. Errors reported before the exit (e.g.
/// an abnormal end explained by the monitor) are printed to `io.stderr`
/// prefixed with `husk: ` and returned if no exit follows.
pub fn relay(conn: &mut UnixStream, io: &ClientIo) -> Result<Outcome, RelayError> {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; MAX_CHUNK];
    let mut stdin = io.stdin;
    let mut broken = [false, false];
    let mut failure: Option<Outcome> = None;
    loop {
        let mut fds = vec![pollfd(conn.as_raw_fd())];
        if let Some(fd) = stdin {
            fds.push(pollfd(fd));
        }
        if let Some(s) = io.signals {
            fds.push(pollfd(s.fd()));
        }
        // SAFETY: a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err.into());
        }
        if let Some(s) = io.signals {
            if fds.last().is_some_and(|p| p.revents != 0) {
                on_signals(conn, io, s.take())?;
            }
        }
        if stdin.is_some() && fds[1].revents != 0 {
            let fd = fds[1].fd;
            if !forward_stdin(conn, fd, &mut buf)? {
                write_message(conn, &Message::StdinEof).map_err(to_io)?;
                stdin = None;
            }
        }
        if fds[0].revents == 0 {
            continue;
        }
        let n = match conn.read(&mut buf) {
            Ok(0) => return Ok(failure.unwrap_or(Outcome::Closed)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Ok(failure.unwrap_or(Outcome::Closed))
            }
            Err(e) => return Err(e.into()),
        };
        decoder.push(&buf[..n]);
        while let Some(msg) = decoder
            .next_message()
            .map_err(|e| RelayError::Decode(e.to_string()))?
        {
            match msg {
                Message::Stdout(b) => write_out(io.stdout, &b, &mut broken[0]),
                Message::Stderr(b) => write_out(io.stderr, &b, &mut broken[1]),
                Message::Exited { code } => return Ok(Outcome::Exited(code)),
                Message::Signaled { signal } => return Ok(Outcome::Signaled(signal)),
                Message::Error { code, detail } => {
                    let line = format!("husk: {detail}\n");
                    write_out(io.stderr, line.as_bytes(), &mut broken[1]);
                    failure = Some(Outcome::Failed { code, detail });
                }
                Message::Started { .. } | Message::Ok | Message::Hello { .. } => {}
                other => return Err(RelayError::Decode(format!("unexpected message {other:?}"))),
            }
        }
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn to_io(e: husk_protocol::WriteError) -> RelayError {
    match e {
        husk_protocol::WriteError::Io(e) => RelayError::Io(e),
        other => RelayError::Decode(other.to_string()),
    }
}

fn on_signals(conn: &mut UnixStream, io: &ClientIo, sigs: Vec<i32>) -> Result<(), RelayError> {
    for sig in sigs {
        if sig == libc::SIGWINCH {
            if let Some((rows, cols)) = io.tty.and_then(terminal_size) {
                write_message(conn, &Message::Resize { rows, cols }).map_err(to_io)?;
            }
        } else if io.forward_signals {
            write_message(conn, &Message::Signal(sig)).map_err(to_io)?;
        }
    }
    Ok(())
}

/// Reads one chunk of stdin and sends it; false at end of input.
fn forward_stdin(conn: &mut UnixStream, fd: RawFd, buf: &mut [u8]) -> Result<bool, RelayError> {
    // SAFETY: reading into a valid buffer of the given length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let err = io::Error::last_os_error();
        return match err.kind() {
            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => Ok(true),
            // EIO: the terminal hung up.
            _ => Ok(false),
        };
    }
    if n == 0 {
        return Ok(false);
    }
    write_message(conn, &Message::Stdin(buf[..n as usize].to_vec())).map_err(to_io)?;
    Ok(true)
}

/// Writes all of `bytes` to `fd` (waiting out a non-blocking fd); after
/// the first failure (e.g. a closed pipe) the stream is discarded.
pub fn write_out(fd: RawFd, mut bytes: &[u8], broken: &mut bool) {
    while !*broken && !bytes.is_empty() {
        // SAFETY: writing from a valid buffer of the given length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
            continue;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 1000) };
            }
            _ => *broken = true,
        }
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
