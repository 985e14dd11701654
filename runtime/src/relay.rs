//! The client side of a process session (an exec'd process through the
//! agent, or the container's init through the monitor's attach socket):
//! local stdin → `Stdin`, `Stdout`/`Stderr` → local fds, SIGWINCH →
//! `Resize`, other signals → `Signal`, until the process's exit arrives.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use husk_protocol::{write_message, ErrorCode, FrameDecoder, Message, MAX_CHUNK};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;

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
    pub stdin: Option<BorrowedFd<'a>>,
    /// Where `Stdout` goes.
    pub stdout: BorrowedFd<'a>,
    /// Where `Stderr` goes.
    pub stderr: BorrowedFd<'a>,
    /// Installed signal handlers to watch (SIGWINCH and those to forward).
    pub signals: Option<&'a Signals>,
    /// The terminal whose size is sent on SIGWINCH.
    pub tty: Option<BorrowedFd<'a>>,
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
pub fn terminal_size(fd: impl AsFd) -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(fd).ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Messages other threads put into a running session ([`relay_with`]):
/// terminal resizes, signals, the end of input. Shareable between threads.
pub struct Control {
    wake_rx: OwnedFd,
    wake_tx: OwnedFd,
    queue: Mutex<Vec<Message>>,
}

impl Control {
    /// A control channel (a non-blocking pipe wakes the relay).
    pub fn new() -> io::Result<Control> {
        let (wake_rx, wake_tx) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )?;
        Ok(Control {
            wake_rx,
            wake_tx,
            queue: Mutex::new(Vec::new()),
        })
    }

    /// Queues `msg` for the process (`Resize`, `Signal`, `StdinEof`...);
    /// the relay sends it on its next round.
    pub fn send(&self, msg: Message) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg);
        // A full pipe already wakes the relay.
        let _ = rustix::io::write(&self.wake_tx, &[1]);
    }

    fn take(&self) -> Vec<Message> {
        let mut sink = [0u8; 64];
        while matches!(rustix::io::read(&self.wake_rx, &mut sink), Ok(n) if n > 0) {}
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Relays until the process ends. Errors reported before the exit (e.g.
/// an abnormal end explained by the monitor) are printed to `io.stderr`
/// prefixed with `husk: ` and returned if no exit follows.
pub fn relay(conn: &mut UnixStream, io: &ClientIo) -> Result<Outcome, RelayError> {
    relay_with(conn, io, None)
}

/// [`relay`], also sending what other threads put into `control`.
pub fn relay_with(
    conn: &mut UnixStream,
    io: &ClientIo,
    control: Option<&Control>,
) -> Result<Outcome, RelayError> {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; MAX_CHUNK];
    let mut stdin = io.stdin;
    let mut broken = [false, false];
    let mut failure: Option<Outcome> = None;
    loop {
        let (conn_ready, stdin_ready, signal_ready, control_ready) = {
            let mut fds = vec![PollFd::new(&*conn, PollFlags::IN)];
            if let Some(fd) = stdin {
                fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
            }
            if let Some(s) = io.signals {
                fds.push(PollFd::from_borrowed_fd(s.as_fd(), PollFlags::IN));
            }
            if let Some(c) = control {
                fds.push(PollFd::new(&c.wake_rx, PollFlags::IN));
            }
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => return Err(io::Error::from(e).into()),
            }
            let ready = |p: &PollFd| !p.revents().is_empty();
            let signals_at = 1 + usize::from(stdin.is_some());
            (
                ready(&fds[0]),
                stdin.is_some() && ready(&fds[1]),
                io.signals.is_some() && ready(&fds[signals_at]),
                control.is_some() && fds.last().is_some_and(ready),
            )
        };
        if let (Some(s), true) = (io.signals, signal_ready) {
            on_signals(conn, io, s.take())?;
        }
        if let (Some(c), true) = (control, control_ready) {
            for msg in c.take() {
                if msg == Message::StdinEof {
                    // Sent once, whoever ends the input first.
                    if stdin.take().is_none() && io.stdin.is_some() {
                        continue;
                    }
                }
                write_message(conn, &msg).map_err(to_io)?;
            }
        }
        if let (Some(fd), true) = (stdin, stdin_ready) {
            if !forward_stdin(conn, fd, &mut buf)? {
                write_message(conn, &Message::StdinEof).map_err(to_io)?;
                stdin = None;
            }
        }
        if !conn_ready {
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

fn to_io(e: husk_protocol::WriteError) -> RelayError {
    match e {
        husk_protocol::WriteError::Io(e) => RelayError::Io(e),
        other => RelayError::Decode(other.to_string()),
    }
}

fn on_signals(conn: &mut UnixStream, io: &ClientIo, sigs: Vec<i32>) -> Result<(), RelayError> {
    for sig in sigs {
        if sig == rustix::process::Signal::WINCH.as_raw() {
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
fn forward_stdin(
    conn: &mut UnixStream,
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<bool, RelayError> {
    let n = match rustix::io::read(fd, &mut *buf) {
        Ok(0) => return Ok(false),
        Ok(n) => n,
        Err(Errno::INTR | Errno::AGAIN) => return Ok(true),
        // EIO: the terminal hung up.
        Err(_) => return Ok(false),
    };
    write_message(conn, &Message::Stdin(buf[..n].to_vec())).map_err(to_io)?;
    Ok(true)
}

/// Writes all of `bytes` to `fd` (waiting out a non-blocking fd); after
/// the first failure (e.g. a closed pipe) the stream is discarded.
pub fn write_out(fd: BorrowedFd<'_>, mut bytes: &[u8], broken: &mut bool) {
    while !*broken && !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => *broken = true,
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                let mut p = [PollFd::from_borrowed_fd(fd, PollFlags::OUT)];
                let second = Timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                };
                let _ = poll(&mut p, Some(&second));
            }
            Err(_) => *broken = true,
        }
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
