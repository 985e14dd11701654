//! `husk pause` / `husk unpause`: the container's monitor suspends or
//! resumes its VM's vCPUs (and devices) when asked over its attach socket
//! (`Hello`, then `Pause` or `Resume`, answered `Ok` or `Error`; see
//! [`crate::attach`]). The monitor records `State.paused` and the
//! `pause`/`unpause` events.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use husk_protocol::Message;
use husk_sandbox::wait::Watch;
use husk_sandbox::AgentConnection;

use crate::layout::{ContainerPaths, ShortPath};
use crate::store::Container;
use crate::{Error, Runtime};

/// How long the monitor may take to answer (it waits for the vCPUs to
/// leave the guest, at most 10 s, itself).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

impl Runtime {
    /// Suspends running container `name`'s VM.
    pub fn pause(&self, name: &str) -> Result<(), Error> {
        let c = self.container(name)?;
        if c.state.paused {
            return Err(Error::Invalid(format!(
                "Container {} is already paused",
                c.id
            )));
        }
        ask(&c, Message::Pause)
    }

    /// Resumes paused container `name`'s VM.
    pub fn unpause(&self, name: &str) -> Result<(), Error> {
        let c = self.container(name)?;
        if !c.state.paused {
            return Err(Error::Invalid(format!("Container {} is not paused", c.id)));
        }
        ask(&c, Message::Resume)
    }

    /// Resumes `c` if it is paused (before its process is signalled:
    /// Docker's `kill` and `stop` work on paused containers).
    pub(crate) fn unpause_for_kill(&self, c: &Container) -> Result<(), Error> {
        if c.state.paused && c.state.status.can_kill() {
            ask(c, Message::Resume)?;
        }
        Ok(())
    }
}

/// Sends `msg` to `c`'s monitor and waits for its answer.
fn ask(c: &Container, msg: Message) -> Result<(), Error> {
    let not_running = || Error::Invalid(format!("Container {} is not running", c.id));
    if !c.state.status.can_kill() {
        return Err(not_running());
    }
    let path = ShortPath::new(&c.paths.dir, ContainerPaths::ATTACH)?;
    let stream = UnixStream::connect(path.path()).map_err(|_| not_running())?;
    let failed = |e: husk_sandbox::AgentError| Error::Monitor(crate::error_chain(&e));
    let mut conn = AgentConnection::handshake(stream, ANSWER_TIMEOUT).map_err(failed)?;
    conn.send(&msg).map_err(failed)?;
    match conn
        .next(&Watch::none(), Some(Instant::now() + ANSWER_TIMEOUT))
        .map_err(failed)?
    {
        Message::Ok => Ok(()),
        Message::Error { detail, .. } => Err(Error::Invalid(detail)),
        other => Err(Error::Monitor(format!("unexpected answer {other:?}"))),
    }
}
