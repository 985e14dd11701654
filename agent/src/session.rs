//! The boot connection: handshake, then either a run request (`husk vm
//! run`: stream the command's output back until it exits) or
//! `CreateContainer` (then [`crate::container`] serves the container).
//!
//! Single-threaded: one `poll(2)` loop over the connection, the child's
//! pipes and a pidfd for the child (threads are very slow to start in the
//! guest on some hosts).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use husk_protocol::{
    read_message, write_message, ContainerSpec, ErrorCode, FrameDecoder, Message, ReadError,
    RunRequest, WriteError, MAX_CHUNK, PROTOCOL_VERSION,
};

use crate::spawn::{self, Child};
use crate::system::System;

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The host closed the connection.
    #[error("host closed the connection")]
    HostClosed,
    /// Reading from the host failed (I/O or an invalid frame).
    #[error("reading from the host")]
    Read(#[from] ReadError),
    /// Writing to the host failed.
    #[error("writing to the host")]
    Write(#[from] WriteError),
    /// The host broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// poll(2) failed.
    #[error("poll")]
    Poll(#[source] io::Error),
}

/// What the host asked for ended; the result was sent to the host.
// Returned once per agent life; boxing the message buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The command ran and this exit message was sent.
    Finished(Message),
    /// The request was refused with this error (also sent to the host).
    Refused(ErrorCode),
}

/// Serves one host connection: handshake, one run request, its output and
/// its exit.
pub fn serve<S: System>(conn: &mut S::Conn, sys: &mut S) -> Result<Outcome, SessionError> {
    write_message(
        conn,
        &Message::Hello {
            version: PROTOCOL_VERSION,
        },
    )?;
    match read_message(conn)? {
        Some(Message::Hello { version }) if version == PROTOCOL_VERSION => {}
        Some(Message::Hello { version }) => {
            let detail = format!("host speaks protocol {version}, agent {PROTOCOL_VERSION}");
            return refuse(conn, ErrorCode::VersionMismatch, detail);
        }
        Some(other) => {
            return Err(SessionError::Protocol(format!(
                "expected Hello, got {other:?}"
            )))
        }
        None => return Err(SessionError::HostClosed),
    }
    let mut request = read_message(conn)?;
    // `husk vm run` with a network: configure it before the run request.
    if let Some(Message::ConfigureNetwork(spec)) = &request {
        if let Err(e) = sys.configure_network(spec) {
            return refuse(conn, e.code(), crate::chain(&e));
        }
        request = read_message(conn)?;
    }
    match request {
        Some(Message::Run(req)) => run(conn, sys, &req),
        Some(Message::CreateContainer(spec)) => create_container(conn, sys, &spec),
        Some(Message::Exec(_)) => {
            let detail = "Exec needs a container (send CreateContainer first)".to_string();
            refuse(conn, ErrorCode::NoContainer, detail)
        }
        Some(other) => {
            let detail = format!("expected a request, got {}", variant(&other));
            refuse(conn, ErrorCode::BadRequest, detail)
        }
        None => Err(SessionError::HostClosed),
    }
}

/// Validates and assembles the container, answers `Ok`, then serves it
/// until its init process ends.
fn create_container<S: System>(
    conn: &mut S::Conn,
    sys: &mut S,
    spec: &ContainerSpec,
) -> Result<Outcome, SessionError> {
    if let Err(e) = crate::spec::check_container(spec) {
        return refuse(conn, ErrorCode::BadRequest, e.0);
    }
    let root = match sys.create_container(spec) {
        Ok(root) => root,
        Err(e) => return refuse(conn, e.code(), crate::chain(&e)),
    };
    let listener = match sys.listen_exec() {
        Ok(l) => Some(l),
        Err(e) => return refuse(conn, e.code(), crate::chain(&e)),
    };
    write_message(conn, &Message::Ok)?;
    crate::container::serve(conn, sys, root, listener)
}

fn run<C, S>(conn: &mut C, sys: &mut S, req: &RunRequest) -> Result<Outcome, SessionError>
where
    C: Read + Write + AsRawFd,
    S: System,
{
    let root = match &req.root {
        Some(disk) => match sys.mount_root(disk) {
            Ok(path) => Some(path),
            Err(e) => return refuse(conn, ErrorCode::MountFailed, e.to_string()),
        },
        None => None,
    };
    let child = match spawn::spawn(req, root.as_deref()) {
        Ok(child) => child,
        Err(e) => return refuse(conn, e.code, e.detail),
    };
    let status = Pump::new(child, sys.reaps_orphans()).run(conn)?;
    let msg = if libc::WIFSIGNALED(status) {
        Message::Signaled {
            signal: libc::WTERMSIG(status),
        }
    } else {
        Message::Exited {
            code: libc::WEXITSTATUS(status),
        }
    };
    write_message(conn, &msg)?;
    Ok(Outcome::Finished(msg))
}

pub(crate) fn refuse<C: Write>(
    conn: &mut C,
    code: ErrorCode,
    detail: String,
) -> Result<Outcome, SessionError> {
    write_message(conn, &Message::Error { code, detail })?;
    Ok(Outcome::Refused(code))
}

/// A message's variant name, for errors (payloads may be large).
pub(crate) fn variant(msg: &Message) -> &'static str {
    match msg {
        Message::Hello { .. } => "Hello",
        Message::Run(_) => "Run",
        Message::Stdout(_) => "Stdout",
        Message::Stderr(_) => "Stderr",
        Message::Stdin(_) => "Stdin",
        Message::StdinEof => "StdinEof",
        Message::Signal(_) => "Signal",
        Message::Exited { .. } => "Exited",
        Message::Signaled { .. } => "Signaled",
        Message::Error { .. } => "Error",
        Message::CreateContainer(_) => "CreateContainer",
        Message::Ok => "Ok",
        Message::Exec(_) => "Exec",
        Message::Started { .. } => "Started",
        Message::Resize { .. } => "Resize",
        Message::KillInit { .. } => "KillInit",
        Message::ConfigureNetwork(_) => "ConfigureNetwork",
    }
}

/// Most reads of one pipe after the child exited (bounds the drain when a
/// grandchild keeps writing).
pub(crate) const DRAIN_LIMIT: usize = 64;

/// Moves data between the connection and a running child.
struct Pump {
    pid: libc::pid_t,
    stdout: Option<File>,
    stderr: Option<File>,
    stdin: Option<File>,
    stdin_buf: Vec<u8>,
    stdin_eof: bool,
    pidfd: Option<OwnedFd>,
    reap_orphans: bool,
    decoder: FrameDecoder,
}

impl Pump {
    fn new(child: Child, reap_orphans: bool) -> Self {
        Self {
            pid: child.pid,
            stdout: Some(child.stdout),
            stderr: Some(child.stderr),
            stdin: child.stdin,
            stdin_buf: Vec::new(),
            stdin_eof: false,
            pidfd: pidfd_open(child.pid),
            reap_orphans,
            decoder: FrameDecoder::new(),
        }
    }

    /// Runs until the child exits; returns its wait status.
    fn run<C: Read + Write + AsRawFd>(mut self, conn: &mut C) -> Result<i32, SessionError> {
        loop {
            if let Some(status) = self.try_reap() {
                self.drain(conn)?;
                return Ok(status);
            }
            let mut fds = self.poll_set(conn.as_raw_fd());
            let timeout = match (&self.pidfd, self.reap_orphans) {
                (None, _) => 100,
                (Some(_), true) => 1000,
                (Some(_), false) => -1,
            };
            // SAFETY: `fds` is a valid, correctly sized array of pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(SessionError::Poll(err));
            }
            for pfd in fds.iter().filter(|p| p.revents != 0) {
                if let Err(e) = self.handle(pfd.fd, conn) {
                    self.kill_and_reap();
                    return Err(e);
                }
            }
        }
    }

    fn poll_set(&self, conn: RawFd) -> Vec<libc::pollfd> {
        let pollfd = |fd: RawFd, events: libc::c_short| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let mut fds = vec![pollfd(conn, libc::POLLIN)];
        for f in [&self.stdout, &self.stderr].into_iter().flatten() {
            fds.push(pollfd(f.as_raw_fd(), libc::POLLIN));
        }
        if let Some(pidfd) = &self.pidfd {
            fds.push(pollfd(pidfd.as_raw_fd(), libc::POLLIN));
        }
        if let Some(stdin) = self.stdin.as_ref().filter(|_| !self.stdin_buf.is_empty()) {
            fds.push(pollfd(stdin.as_raw_fd(), libc::POLLOUT));
        }
        fds
    }

    fn handle<C: Read + Write + AsRawFd>(
        &mut self,
        fd: RawFd,
        conn: &mut C,
    ) -> Result<(), SessionError> {
        if fd == conn.as_raw_fd() {
            return self.read_host(conn);
        }
        if self.stdout.as_ref().is_some_and(|f| f.as_raw_fd() == fd) {
            return Ok(forward(&mut self.stdout, conn, Message::Stdout).map(drop)?);
        }
        if self.stderr.as_ref().is_some_and(|f| f.as_raw_fd() == fd) {
            return Ok(forward(&mut self.stderr, conn, Message::Stderr).map(drop)?);
        }
        if self.stdin.as_ref().is_some_and(|f| f.as_raw_fd() == fd) {
            self.flush_stdin();
        }
        // The pidfd: the next try_reap collects the status.
        Ok(())
    }

    fn read_host<C: Read>(&mut self, conn: &mut C) -> Result<(), SessionError> {
        let mut buf = vec![0u8; MAX_CHUNK];
        let n = match conn.read(&mut buf) {
            Ok(0) => return Err(SessionError::HostClosed),
            Ok(n) => n,
            Err(e) if is_transient(&e) => return Ok(()),
            Err(e) => return Err(SessionError::Read(e.into())),
        };
        self.decoder.push(&buf[..n]);
        while let Some(msg) = self
            .decoder
            .next_message()
            .map_err(|e| SessionError::Read(e.into()))?
        {
            self.on_message(msg)?;
        }
        Ok(())
    }

    fn on_message(&mut self, msg: Message) -> Result<(), SessionError> {
        match msg {
            Message::Stdin(bytes) if self.stdin.is_some() => {
                self.stdin_buf.extend_from_slice(&bytes);
                self.flush_stdin();
            }
            Message::Stdin(_) => {}
            Message::StdinEof => {
                self.stdin_eof = true;
                self.flush_stdin();
            }
            Message::Signal(sig) if (1..=64).contains(&sig) => {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(self.pid, sig) };
            }
            other => {
                return Err(SessionError::Protocol(format!(
                    "unexpected {} while a command runs",
                    variant(&other)
                )))
            }
        }
        Ok(())
    }

    /// Writes buffered stdin without blocking; closes it after EOF.
    fn flush_stdin(&mut self) {
        if let Some(stdin) = &mut self.stdin {
            while !self.stdin_buf.is_empty() {
                match stdin.write(&self.stdin_buf) {
                    Ok(n) => {
                        self.stdin_buf.drain(..n);
                    }
                    Err(e) if is_transient(&e) => return,
                    Err(_) => {
                        // The child closed its stdin: discard the rest.
                        self.stdin_buf.clear();
                        self.stdin = None;
                        return;
                    }
                }
            }
        }
        if self.stdin_eof && self.stdin_buf.is_empty() {
            self.stdin = None;
        }
    }

    /// Collects the child's status if it exited (and, as PID 1, any
    /// orphan's).
    fn try_reap(&mut self) -> Option<i32> {
        let target = if self.reap_orphans { -1 } else { self.pid };
        let mut found = None;
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid status pointer.
            let pid = unsafe { libc::waitpid(target, &mut status, libc::WNOHANG) };
            if pid == self.pid {
                found = Some(status);
            }
            if pid <= 0 || !self.reap_orphans {
                return found;
            }
        }
    }

    /// After the child exited: forward what is left in its pipes.
    fn drain<C: Write>(&mut self, conn: &mut C) -> Result<(), SessionError> {
        for _ in 0..DRAIN_LIMIT {
            if !forward(&mut self.stdout, conn, Message::Stdout)? {
                break;
            }
        }
        for _ in 0..DRAIN_LIMIT {
            if !forward(&mut self.stderr, conn, Message::Stderr)? {
                break;
            }
        }
        Ok(())
    }

    /// The session failed: kill the command's process group and reap it.
    fn kill_and_reap(&mut self) {
        // SAFETY: kill/waitpid have no memory-safety preconditions beyond
        // the valid status pointer.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
            libc::kill(self.pid, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}

/// Reads one chunk from `pipe` and sends it; closes the pipe at EOF.
/// Returns whether data was forwarded.
pub(crate) fn forward<C: Write>(
    pipe: &mut Option<File>,
    conn: &mut C,
    wrap: fn(Vec<u8>) -> Message,
) -> Result<bool, WriteError> {
    let Some(file) = pipe else {
        return Ok(false);
    };
    let mut buf = vec![0u8; MAX_CHUNK];
    match file.read(&mut buf) {
        Ok(0) => {
            *pipe = None;
            Ok(false)
        }
        Ok(n) => {
            buf.truncate(n);
            write_message(conn, &wrap(buf))?;
            Ok(true)
        }
        Err(e) if is_transient(&e) => Ok(false),
        Err(_) => {
            *pipe = None;
            Ok(false)
        }
    }
}

pub(crate) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

pub(crate) fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the syscall returned a new fd that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
