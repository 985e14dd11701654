//! The host's questions about a running container on an exec connection
//! (protocol 9: `husk stats`, `top`, `cp`, `diff`, `export`). Each call
//! is one request on a fresh connection (the agent closes it after its
//! answer). Everything the agent answers is guest input: bounded by the
//! frame limit, by `max_bytes` for archives, and by a deadline.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use husk_protocol::{
    ArchiveRequest, Change, GuestProcess, GuestStats, Message, PathInfo, PathRequest, MAX_CHUNK,
};

use crate::agent::{AgentConnection, AgentError};
use crate::wait::Watch;

/// How long a question may take (minutes on nested-KVM hosts under load).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a whole archive may take to arrive.
pub const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Most changes [`AgentConnection::diff`] accepts.
pub const MAX_CHANGES: usize = 1 << 20;

fn deadline() -> Option<Instant> {
    Some(Instant::now() + QUERY_TIMEOUT)
}

fn unexpected(msg: Message) -> AgentError {
    match msg {
        Message::Error { code, detail } => AgentError::Refused { code, detail },
        other => AgentError::Unexpected(format!("{other:?}")),
    }
}

impl AgentConnection {
    fn ask(&mut self, request: &Message) -> Result<Message, AgentError> {
        self.send(request)?;
        self.next(&Watch::none(), deadline())
    }

    /// `Stats`: the guest's memory, process, network and disk figures.
    pub fn guest_stats(&mut self) -> Result<GuestStats, AgentError> {
        match self.ask(&Message::Stats)? {
            Message::StatsReply(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// `Top`: the guest's processes.
    pub fn top(&mut self) -> Result<Vec<GuestProcess>, AgentError> {
        match self.ask(&Message::Top)? {
            Message::TopReply(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// `StatPath`: what is at a path of the container.
    pub fn stat_path(&mut self, req: PathRequest) -> Result<PathInfo, AgentError> {
        match self.ask(&Message::StatPath(req))? {
            Message::PathInfo(i) => Ok(i),
            other => Err(unexpected(other)),
        }
    }

    /// `Diff`: the container's changes to its image.
    pub fn diff(&mut self) -> Result<Vec<Change>, AgentError> {
        self.send(&Message::Diff)?;
        let mut changes = Vec::new();
        loop {
            match self.next(&Watch::none(), deadline())? {
                Message::Changes(c) if changes.len() + c.len() <= MAX_CHANGES => {
                    changes.extend(c);
                }
                Message::Changes(_) => {
                    return Err(AgentError::Unexpected(format!(
                        "more than {MAX_CHANGES} changes"
                    )))
                }
                Message::Ok => return Ok(changes),
                other => return Err(unexpected(other)),
            }
        }
    }

    /// `ArchiveGet`: the tar of a path, written to `sink` as it arrives
    /// (at most `max_bytes`); returns its size. What `sink` received on an
    /// error is garbage for the caller to discard.
    pub fn archive_get(
        &mut self,
        req: ArchiveRequest,
        sink: &mut dyn Write,
        max_bytes: u64,
    ) -> Result<u64, AgentError> {
        self.send(&Message::ArchiveGet(req))?;
        let deadline = Some(Instant::now() + ARCHIVE_TIMEOUT);
        self.receive_layer(sink, max_bytes, &Watch::none(), deadline)
    }

    /// `ExportChanges`: the container's changes as a layer tar, written to
    /// `sink` as it arrives (at most `max_bytes`); returns its size.
    pub fn export_changes(
        &mut self,
        sink: &mut dyn Write,
        max_bytes: u64,
    ) -> Result<u64, AgentError> {
        self.send(&Message::ExportChanges)?;
        let deadline = Some(Instant::now() + ARCHIVE_TIMEOUT);
        self.receive_layer(sink, max_bytes, &Watch::none(), deadline)
    }

    /// `ArchivePut`: sends the tar read from `source` to be unpacked into
    /// the directory at `req`, and waits for the agent's `Ok`.
    pub fn archive_put(
        &mut self,
        req: PathRequest,
        source: &mut dyn Read,
    ) -> Result<u64, AgentError> {
        self.send(&Message::ArchivePut(req))?;
        self.set_write_timeout(Some(QUERY_TIMEOUT))?;
        let mut buf = vec![0u8; MAX_CHUNK];
        let mut sent = 0u64;
        loop {
            let n = source
                .read(&mut buf)
                .map_err(AgentError::io("reading the archive"))?;
            if n == 0 {
                break;
            }
            self.send(&Message::LayerChunk(buf[..n].to_vec()))?;
            sent += n as u64;
        }
        self.send(&Message::LayerEnd { bytes: sent })?;
        match self.next(&Watch::none(), deadline())? {
            Message::Ok => Ok(sent),
            other => Err(unexpected(other)),
        }
    }
}
