//! The boot connection, the same for every VM (container, build step,
//! `husk vm run`): handshake, `CreateContainer`, then [`crate::container`]
//! serves the container (its init process arrives as `Exec` on this
//! connection) until the init process ends.

use std::io::{self, Write};

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

/// Serves the boot connection: handshake, `CreateContainer`, then the
/// container until its init process ends.
pub fn serve<S: System>(conn: &mut S::Conn, sys: &mut S) -> Result<Outcome, ConnError> {
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
            return Err(ConnError::Protocol(format!(
                "expected Hello, got {}",
                variant(&other)
            )))
        }
        None => return Err(ConnError::HostClosed),
    }
    match read_message(conn)? {
        Some(Message::CreateContainer(spec)) => create_container(conn, sys, &spec),
        Some(Message::Exec(_)) => {
            let detail = "Exec needs a container (send CreateContainer first)".to_string();
            refuse(conn, ErrorCode::NoContainer, detail)
        }
        Some(other) => {
            let detail = format!("expected a request, got {}", variant(&other));
            refuse(conn, ErrorCode::BadRequest, detail)
        }
        None => Err(ConnError::HostClosed),
    }
}

/// Validates and assembles the container, answers `Ok`, then serves it
/// until its init process ends.
fn create_container<S: System>(
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
    }
}
