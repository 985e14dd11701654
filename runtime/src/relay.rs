//! The client side of a process session (an exec'd process through the
//! agent, or the container's init through the monitor's attach socket):
//! local stdin → `Stdin`, `Stdout`/`Stderr` → local fds, SIGWINCH →
//! `Resize`, other signals → `Signal`, until the process's exit arrives.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use husk_protocol::{ErrorCode, Message, MAX_CHUNK};
use husk_sandbox::{AgentConnection, AgentError};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::signals::Signals;

/// Why a session broke (as opposed to the process ending).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Waiting for the session's fds failed.
    #[error("waiting for the session")]
    Io(#[from] io::Error),
    /// Reading or writing the connection failed, or the peer sent
    /// something invalid or out of place.
    #[error("connection to the container")]
    Agent(#[from] AgentError),
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
pub fn relay(conn: &mut AgentConnection, io: &ClientIo) -> Result<Outcome, RelayError> {
    relay_with(conn, io, None)
}

/// Which of the relay's fds are ready.
struct Ready {
    conn: bool,
    stdin: bool,
    signals: bool,
    control: bool,
}

/// Waits until one of the session's fds is ready (`None`: interrupted).
fn wait(
    conn: &AgentConnection,
    stdin: Option<BorrowedFd<'_>>,
    io: &ClientIo,
    control: Option<&Control>,
) -> Result<Option<Ready>, RelayError> {
    let mut fds = vec![PollFd::from_borrowed_fd(conn.fd(), PollFlags::IN)];
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
        Err(Errno::INTR) => return Ok(None),
        Err(e) => return Err(io::Error::from(e).into()),
    }
    let ready = |p: &PollFd| !p.revents().is_empty();
    let signals_at = 1 + usize::from(stdin.is_some());
    Ok(Some(Ready {
        conn: ready(&fds[0]),
        stdin: stdin.is_some() && ready(&fds[1]),
        signals: io.signals.is_some() && ready(&fds[signals_at]),
        control: control.is_some() && fds.last().is_some_and(ready),
    }))
}

/// [`relay`], also sending what other threads put into `control`.
pub fn relay_with(
    conn: &mut AgentConnection,
    io: &ClientIo,
    control: Option<&Control>,
) -> Result<Outcome, RelayError> {
    let mut buf = vec![0u8; MAX_CHUNK];
    let mut stdin = io.stdin;
    let mut out = Output {
        broken: [false, false],
        failure: None,
    };
    loop {
        let Some(ready) = wait(conn, stdin, io, control)? else {
            continue;
        };
        if let (Some(s), true) = (io.signals, ready.signals) {
            on_signals(conn, io, s.take())?;
        }
        if let (Some(c), true) = (control, ready.control) {
            for msg in c.take() {
                if msg == Message::StdinEof {
                    // Sent once, whoever ends the input first.
                    if stdin.take().is_none() && io.stdin.is_some() {
                        continue;
                    }
                }
                conn.send(&msg)?;
            }
        }
        if let (Some(fd), true) = (stdin, ready.stdin) {
            if !forward_stdin(conn, fd, &mut buf)? {
                conn.send(&Message::StdinEof)?;
                stdin = None;
            }
        }
        if !ready.conn {
            continue;
        }
        // One read, then what it brought, before polling again.
        let mut next = conn.try_next();
        loop {
            match next {
                Ok(Some(msg)) => {
                    if let Some(end) = out.on_message(io, msg)? {
                        return Ok(end);
                    }
                }
                Ok(None) => break,
                Err(AgentError::Closed) => return Ok(out.failure.unwrap_or(Outcome::Closed)),
                Err(e) => return Err(e.into()),
            }
            next = conn.next_buffered();
        }
    }
}

/// The local side of a session's output.
struct Output {
    /// stdout, stderr failed (discarded from then on).
    broken: [bool; 2],
    /// The error reported before the exit.
    failure: Option<Outcome>,
}

impl Output {
    /// Handles one message from the peer; the outcome once it ends.
    fn on_message(&mut self, io: &ClientIo, msg: Message) -> Result<Option<Outcome>, RelayError> {
        match msg {
            Message::Stdout(b) => write_out(io.stdout, &b, &mut self.broken[0]),
            Message::Stderr(b) => write_out(io.stderr, &b, &mut self.broken[1]),
            Message::Exited { code } => return Ok(Some(Outcome::Exited(code))),
            Message::Signaled { signal } => return Ok(Some(Outcome::Signaled(signal))),
            Message::Error { code, detail } => {
                let line = format!("husk: {detail}\n");
                write_out(io.stderr, line.as_bytes(), &mut self.broken[1]);
                self.failure = Some(Outcome::Failed { code, detail });
            }
            Message::Started { .. } | Message::Ok | Message::Hello { .. } => {}
            other => return Err(AgentError::Unexpected(format!("{other:?}")).into()),
        }
        Ok(None)
    }
}

fn on_signals(conn: &mut AgentConnection, io: &ClientIo, sigs: Vec<i32>) -> Result<(), RelayError> {
    for sig in sigs {
        if sig == rustix::process::Signal::WINCH.as_raw() {
            if let Some((rows, cols)) = io.tty.and_then(terminal_size) {
                conn.send(&Message::Resize { rows, cols })?;
            }
        } else if io.forward_signals {
            conn.send(&Message::Signal(sig))?;
        }
    }
    Ok(())
}

/// Reads one chunk of stdin and sends it; false at end of input.
fn forward_stdin(
    conn: &mut AgentConnection,
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
    conn.send(&Message::Stdin(buf[..n].to_vec()))?;
    Ok(true)
}

/// Writes all of `bytes` to `fd` (waiting out a non-blocking fd); after
/// the first failure (e.g. a closed pipe) the stream is discarded.
pub fn write_out(fd: BorrowedFd<'_>, bytes: &[u8], broken: &mut bool) {
    write_out_within(fd, bytes, broken, None);
}

/// [`write_out`], giving up on a reader that accepts nothing for `stall`
/// (when given): the stream is then discarded as if broken, so a reader
/// that keeps a pipe or FIFO open without reading it cannot hold the
/// writer forever. True when it gave up for that reason.
pub fn write_out_within(
    fd: BorrowedFd<'_>,
    mut bytes: &[u8],
    broken: &mut bool,
    stall: Option<Duration>,
) -> bool {
    let mut progress_at = Instant::now();
    while !*broken && !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => *broken = true,
            Ok(n) => {
                bytes = &bytes[n..];
                progress_at = Instant::now();
            }
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                let mut wait = Duration::from_secs(1);
                if let Some(stall) = stall {
                    let left = stall.saturating_sub(progress_at.elapsed());
                    if left.is_zero() {
                        *broken = true;
                        return true;
                    }
                    wait = wait.min(left);
                }
                let mut p = [PollFd::from_borrowed_fd(fd, PollFlags::OUT)];
                let timeout = Timespec::try_from(wait).unwrap_or(Timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                });
                let _ = poll(&mut p, Some(&timeout));
            }
            Err(_) => *broken = true,
        }
    }
    false
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
