//! The boot connection, the same for every VM (container, build step,
//! `husk vm run`): handshake, `Seed`, `CreateContainer`, then
//! [`crate::container`] serves the container (its init process arrives as
//! `Exec` on this connection) until the init process ends. Until
//! `CreateContainer` arrives, a broken connection is reconnected (a VM
//! restored from a snapshot finds its vsock transport reset); see
//! [`crate::system::run_agent`].

use std::io::{self, Write};
use std::time::Instant;

use husk_protocol::{
    read_message, write_message, ContainerSpec, ErrorCode, Message, ReadError, WriteError,
    PROTOCOL_VERSION,
};

use crate::system::System;

/// Why a host connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
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
    /// The init process ended and this exit message was sent.
    Finished(Message),
    /// The request was refused with this error (also sent to the host).
    Refused(ErrorCode),
}

/// How the opening of the boot connection ended.
#[derive(Debug)]
pub enum Opening {
    /// The host asked for a container.
    Create(Box<ContainerSpec>),
    /// The request was refused with this error (also sent to the host);
    /// the agent is done.
    Refused(ErrorCode),
}

/// Opens the boot connection: handshake, any number of `Seed`s, then the
/// request that decides the VM's life (only `CreateContainer` is
/// accepted). An `Err` here means no container was created, so the agent
/// may reconnect (see [`may_reconnect`]).
pub fn open<S: System>(conn: &mut S::Conn, sys: &mut S) -> Result<Opening, ConnError> {
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
            return refused(conn, ErrorCode::VersionMismatch, detail);
        }
        Some(other) => {
            return Err(ConnError::Protocol(format!(
                "expected Hello, got {}",
                variant(&other)
            )))
        }
        None => return Err(ConnError::HostClosed),
    }
    loop {
        match read_message(conn)? {
            Some(Message::Seed {
                entropy,
                unix_time_ns,
            }) => seed(conn, sys, &entropy, unix_time_ns)?,
            Some(Message::CreateContainer(spec)) => return Ok(Opening::Create(Box::new(spec))),
            Some(Message::Exec(_)) => {
                let detail = "Exec needs a container (send CreateContainer first)".to_string();
                return refused(conn, ErrorCode::NoContainer, detail);
            }
            Some(other) => {
                let detail = format!("expected a request, got {}", variant(&other));
                return refused(conn, ErrorCode::BadRequest, detail);
            }
            None => return Err(ConnError::HostClosed),
        }
    }
}

/// Sends the refusal of the boot request.
fn refused<C: Write>(conn: &mut C, code: ErrorCode, detail: String) -> Result<Opening, ConnError> {
    write_message(conn, &Message::Error { code, detail })?;
    Ok(Opening::Refused(code))
}

/// Answers a `Seed`: `Ok` once applied, or an `Error` (the connection
/// stays open; the host decides what a failed seed means).
fn seed<S: System>(
    conn: &mut S::Conn,
    sys: &mut S,
    entropy: &[u8],
    unix_time_ns: u64,
) -> Result<(), ConnError> {
    let reply = match crate::seed::check(entropy) {
        Err(detail) => Message::Error {
            code: ErrorCode::BadRequest,
            detail,
        },
        Ok(()) => match sys.seed(entropy, unix_time_ns) {
            Ok(()) => Message::Ok,
            Err(e) => Message::Error {
                code: e.code(),
                detail: crate::chain(&e),
            },
        },
    };
    Ok(write_message(conn, &reply)?)
}

/// Whether the agent reconnects after the boot connection failed with
/// `err` while [`open`]ing it (no container exists yet) at `now`, given
/// the reconnection `deadline`: only when the connection itself broke
/// (a reset, EOF, an I/O error; what a restored snapshot's vsock
/// transport reset looks like), not when the host broke the protocol.
pub fn may_reconnect(err: &ConnError, now: Instant, deadline: Instant) -> bool {
    let broken = match err {
        ConnError::HostClosed
        | ConnError::Read(ReadError::Io(_) | ReadError::Truncated)
        | ConnError::Write(WriteError::Io(_)) => true,
        ConnError::Read(ReadError::Decode(_))
        | ConnError::Write(WriteError::Encode(_))
        | ConnError::Protocol(_)
        | ConnError::Poll(_) => false,
    };
    broken && now < deadline
}

/// Validates and assembles the container, answers `Ok`, then serves it
/// until its init process ends.
pub fn create_container<S: System>(
    conn: &mut S::Conn,
    sys: &mut S,
    spec: &ContainerSpec,
) -> Result<Outcome, ConnError> {
    if let Err(e) = crate::spec::check_container(spec) {
        return refuse(conn, ErrorCode::BadRequest, e.0);
    }
    let root = match sys.create_container(spec) {
        Ok(root) => root,
        Err(e) => return refuse(conn, e.code(), crate::chain(&e)),
    };
    let listener = match sys.listen_exec() {
        Ok(l) => l,
        Err(e) => return refuse(conn, e.code(), crate::chain(&e)),
    };
    write_message(conn, &Message::Ok)?;
    crate::container::serve(conn, sys, root, listener)
}

fn refuse<C: Write>(conn: &mut C, code: ErrorCode, detail: String) -> Result<Outcome, ConnError> {
    write_message(conn, &Message::Error { code, detail })?;
    Ok(Outcome::Refused(code))
}

/// A message's variant name, for errors (payloads may be large).
pub fn variant(msg: &Message) -> &'static str {
    match msg {
        Message::Hello { .. } => "Hello",
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
        Message::Seed { .. } => "Seed",
        Message::OomKilled { .. } => "OomKilled",
        Message::ExportLayer => "ExportLayer",
        Message::LayerChunk(_) => "LayerChunk",
        Message::LayerEnd { .. } => "LayerEnd",
        Message::Pause => "Pause",
        Message::Resume => "Resume",
        // protocol 9 (issue #14)
        Message::Stats => "Stats",
        Message::StatsReply(_) => "StatsReply",
        Message::Top => "Top",
        Message::TopReply(_) => "TopReply",
        Message::StatPath(_) => "StatPath",
        Message::PathInfo(_) => "PathInfo",
        Message::ArchiveGet(_) => "ArchiveGet",
        Message::ArchivePut(_) => "ArchivePut",
        Message::Diff => "Diff",
        Message::Changes(_) => "Changes",
        Message::ExportChanges => "ExportChanges",
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::time::Duration;

    use husk_protocol::DecodeError;

    use super::*;

    #[test]
    fn only_broken_connections_within_the_window_are_reconnected() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let reset = || io::Error::from_raw_os_error(libc::ECONNRESET);
        let broken = [
            ConnError::HostClosed,
            ConnError::Read(ReadError::Io(reset())),
            ConnError::Read(ReadError::Truncated),
            ConnError::Write(WriteError::Io(reset())),
        ];
        for err in &broken {
            assert!(may_reconnect(err, now, later), "{err:?}");
            assert!(
                !may_reconnect(err, later, later),
                "{err:?} after the window"
            );
        }
        let violations = [
            ConnError::Read(ReadError::Decode(DecodeError::TooLarge(u32::MAX))),
            ConnError::Protocol("expected Hello, got Ok".into()),
            ConnError::Poll(reset()),
        ];
        for err in &violations {
            assert!(!may_reconnect(err, now, later), "{err:?}");
        }
    }
}
