//! The monitor's attach socket (`attach.sock` in the container directory)
//! and its client side.
//!
//! Protocol (husk-protocol frames): the client sends `Hello`, optionally
//! `Resize` (its terminal size, used as the initial size when the process
//! has not started yet), then `Ok` ("attached"). The monitor answers
//! `Hello`, then streams `Stdout`/`Stderr` produced from then on; the
//! client may send `Stdin`, `StdinEof`, `Resize` and `Signal` at any time.
//! When the container ends the monitor sends `Error` (if it ended
//! abnormally or its process could not start) and then `Exited` with the
//! container's exit code, and closes the connection.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use husk_protocol::Message;
use husk_sandbox::{AgentConnection, AgentError};

use crate::layout::{ContainerPaths, ShortPath};
use crate::{Error, Runtime};

/// Timeout of the attach handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

impl Runtime {
    /// Attaches to running container `name`; `size` is the client's
    /// terminal size. Returns the connection (the monitor speaks the
    /// agent's protocol), ready for [`crate::relay::relay`]; writes to it
    /// may block without limit.
    pub fn attach(&self, name: &str, size: Option<(u16, u16)>) -> Result<AgentConnection, Error> {
        let c = self.container(name)?;
        let not_running = || Error::NotRunning(c.id.short().to_string());
        if !c.state.status.can_exec() {
            return Err(not_running());
        }
        let path = ShortPath::new(&c.paths.dir, ContainerPaths::ATTACH)?;
        let stream = UnixStream::connect(path.path()).map_err(|_| not_running())?;
        let failed =
            |e: AgentError| Error::Monitor(format!("attaching: {}", crate::error_chain(&e)));
        let mut conn = AgentConnection::handshake(stream, HANDSHAKE_TIMEOUT).map_err(failed)?;
        if let Some((rows, cols)) = size {
            conn.send(&Message::Resize { rows, cols }).map_err(failed)?;
        }
        conn.send(&Message::Ok).map_err(failed)?;
        conn.set_write_timeout(None).map_err(failed)?;
        Ok(conn)
    }
}
