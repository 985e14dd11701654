//! One running container process — the init process or an exec'd one, the
//! agent treats both alike — and its stdio pump, as seen by the agent's
//! poll loop: forwarding output to the host connection, buffering stdin,
//! signals, terminal resizes, and its exit status.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::PollFlags;
use rustix::process::{Pid, PidfdFlags, Signal};

use husk_protocol::{write_message, Message, WriteError, MAX_CHUNK};

use crate::spawn::Spawned;
use crate::stdio;

/// Most reads of one pipe after the process exited (bounds the drain when
/// a grandchild keeps writing).
const DRAIN_LIMIT: usize = 64;

/// Most stdin bytes buffered for a process before the agent stops reading
/// its connection (back-pressure on the host).
pub const MAX_STDIN_BUF: usize = 1 << 20;

/// Which of a process's fds became ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    /// Output (stdout pipe or pty master).
    Out,
    /// Stderr pipe.
    Err,
    /// Stdin became writable.
    In,
    /// The pidfd: the process exited.
    Pid,
}

/// A process started by `Exec` (on the boot connection: the init).
#[derive(Debug)]
pub struct Proc {
    /// Its pid (and process group).
    pub pid: libc::pid_t,
    /// Its wait status, once reaped.
    pub status: Option<i32>,
    pidfd: Option<OwnedFd>,
    stdout: Option<File>,
    stderr: Option<File>,
    stdin: Option<File>,
    stdin_buf: Vec<u8>,
    stdin_eof: bool,
    pty: Option<File>,
}

impl Proc {
    /// Tracks a freshly spawned process.
    pub fn new(s: Spawned) -> Self {
        Self {
            pid: s.pid,
            status: None,
            pidfd: pidfd_open(s.pid),
            stdout: Some(s.io.stdout),
            stderr: s.io.stderr,
            stdin: s.io.stdin,
            stdin_buf: Vec::new(),
            stdin_eof: false,
            pty: s.io.pty,
        }
    }

    /// Whether the agent may read more stdin for this process now.
    pub fn wants_input(&self) -> bool {
        self.stdin_buf.len() < MAX_STDIN_BUF
    }

    /// Whether the process has no pidfd (its exit is noticed by polling).
    pub fn needs_polling(&self) -> bool {
        self.status.is_none() && self.pidfd.is_none()
    }

    /// The fds to poll, with what each is.
    pub fn poll_fds<'a>(&'a self, out: &mut Vec<(BorrowedFd<'a>, PollFlags, Pipe)>) {
        if let Some(f) = &self.stdout {
            out.push((f.as_fd(), PollFlags::IN, Pipe::Out));
        }
        if let Some(f) = &self.stderr {
            out.push((f.as_fd(), PollFlags::IN, Pipe::Err));
        }
        if let Some(f) = self.stdin.as_ref().filter(|_| !self.stdin_buf.is_empty()) {
            out.push((f.as_fd(), PollFlags::OUT, Pipe::In));
        }
        if let Some(fd) = self.pidfd.as_ref().filter(|_| self.status.is_none()) {
            out.push((fd.as_fd(), PollFlags::IN, Pipe::Pid));
        }
    }

    /// Handles readiness of one of its fds, sending output on `conn`.
    pub fn ready<C: Write>(&mut self, pipe: Pipe, conn: &mut C) -> Result<(), WriteError> {
        match pipe {
            Pipe::Out => forward(&mut self.stdout, conn, Message::Stdout).map(drop),
            Pipe::Err => forward(&mut self.stderr, conn, Message::Stderr).map(drop),
            Pipe::In => {
                self.flush_stdin();
                Ok(())
            }
            Pipe::Pid => Ok(()),
        }
    }

    /// Applies a stdio message from the host; returns the message back if
    /// it is not one (the caller decides what to do with it).
    pub fn input(&mut self, msg: Message) -> Option<Message> {
        match msg {
            Message::Stdin(bytes) => {
                if self.stdin.is_some() && !self.stdin_eof {
                    self.stdin_buf.extend_from_slice(&bytes);
                    self.flush_stdin();
                }
            }
            Message::StdinEof => {
                self.stdin_eof = true;
                self.flush_stdin();
            }
            Message::Signal(sig) => {
                if (1..=64).contains(&sig) {
                    self.signal(sig);
                }
            }
            Message::Resize { rows, cols } => {
                if let Some(pty) = &self.pty {
                    // A failed resize is not worth ending the session.
                    let _ = stdio::resize(pty, rows, cols);
                }
            }
            other => return Some(other),
        }
        None
    }

    /// Sends `sig` to the process, or for a terminal session to the
    /// terminal's foreground process group.
    pub fn signal(&self, sig: i32) {
        if self.status.is_some() {
            return;
        }
        let target = self
            .pty
            .as_ref()
            .and_then(stdio::foreground_group)
            .map_or(self.pid, |pgrp| -pgrp);
        send_signal(target, sig);
    }

    /// SIGKILLs the process and its process group.
    pub fn kill(&self) {
        if self.status.is_none() {
            if let Some(pid) = Pid::from_raw(self.pid) {
                // Errors: the process or its group is already gone.
                let _ = rustix::process::kill_process_group(pid, Signal::KILL);
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
    }

    /// Writes buffered stdin without blocking; closes it after EOF (for a
    /// terminal, forwarding just stops: the master stays open for output).
    fn flush_stdin(&mut self) {
        if let Some(stdin) = &mut self.stdin {
            while !self.stdin_buf.is_empty() {
                match stdin.write(&self.stdin_buf) {
                    Ok(n) => {
                        self.stdin_buf.drain(..n);
                    }
                    Err(e) if is_transient(&e) => return,
                    Err(_) => {
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

    /// After the exit: forwards what is left in its output (bounded).
    pub fn drain<C: Write>(&mut self, conn: &mut C) -> Result<(), WriteError> {
        for _ in 0..DRAIN_LIMIT {
            if !self.ready_bool(Pipe::Out, conn)? {
                break;
            }
        }
        for _ in 0..DRAIN_LIMIT {
            if !self.ready_bool(Pipe::Err, conn)? {
                break;
            }
        }
        Ok(())
    }

    fn ready_bool<C: Write>(&mut self, pipe: Pipe, conn: &mut C) -> Result<bool, WriteError> {
        let slot = if pipe == Pipe::Out {
            &mut self.stdout
        } else {
            &mut self.stderr
        };
        let wrap = if pipe == Pipe::Out {
            Message::Stdout
        } else {
            Message::Stderr
        };
        forward(slot, conn, wrap)
    }

    /// The message reporting its exit (once reaped).
    pub fn exit_message(&self) -> Option<Message> {
        let status = self.status?;
        Some(if libc::WIFSIGNALED(status) {
            Message::Signaled {
                signal: libc::WTERMSIG(status),
            }
        } else {
            Message::Exited {
                code: libc::WEXITSTATUS(status),
            }
        })
    }
}

/// Reads what is available on `conn` into `decoder` and returns the
/// complete messages; `Ok(None)` when the peer closed the connection.
pub fn read_messages<C: Read>(
    conn: &mut C,
    decoder: &mut husk_protocol::FrameDecoder,
) -> Result<Option<Vec<Message>>, husk_protocol::ReadError> {
    let mut buf = vec![0u8; husk_protocol::MAX_CHUNK];
    let n = match conn.read(&mut buf) {
        Ok(0) => return Ok(None),
        Ok(n) => n,
        Err(e) if is_transient(&e) => return Ok(Some(Vec::new())),
        Err(e) => return Err(e.into()),
    };
    decoder.push(&buf[..n]);
    let mut msgs = Vec::new();
    while let Some(msg) = decoder
        .next_message()
        .map_err(husk_protocol::ReadError::from)?
    {
        msgs.push(msg);
    }
    Ok(Some(msgs))
}

/// Reads one chunk from `pipe` and sends it wrapped by `wrap`; false when
/// nothing was read (EOF, which also closes the pipe, or nothing ready).
fn forward<C: Write>(
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

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    rustix::process::pidfd_open(Pid::from_raw(pid)?, PidfdFlags::empty()).ok()
}

/// Sends signal number `sig` (1-64, as the host asked) to `target` (a
/// pid, or minus a process group id). Errors mean the target is gone.
pub fn send_signal(target: libc::pid_t, sig: i32) {
    // rustix only names the standard signals, and the host may forward
    // any (real-time ones included), so this stays a raw kill(2).
    // SAFETY: kill takes two integers and touches no memory of ours.
    unsafe { libc::kill(target, sig) };
}
