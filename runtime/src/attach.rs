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

use husk_protocol::{write_message, Message};

use crate::layout::{ContainerPaths, ShortPath};
use crate::{vsock, Error, Runtime};

/// Timeout of the attach handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

impl Runtime {
    /// Attaches to running container `name`; `size` is the client's
    /// terminal size. Returns the connection, ready for
    /// [`crate::relay::relay`].
    pub fn attach(&self, name: &str, size: Option<(u16, u16)>) -> Result<UnixStream, Error> {
        let c = self.container(name)?;
        let not_running = || Error::NotRunning(c.id.short().to_string());
        if !c.state.status.can_exec() {
            return Err(not_running());
        }
        let path = ShortPath::new(&c.paths.dir, ContainerPaths::ATTACH)?;
        let mut conn = UnixStream::connect(path.path()).map_err(|_| not_running())?;
        let failed = |e: &dyn std::fmt::Display| Error::Monitor(format!("attaching: {e}"));
        conn.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .and_then(|()| conn.set_write_timeout(Some(HANDSHAKE_TIMEOUT)))
            .map_err(|e| failed(&e))?;
        vsock::greet(&mut conn).map_err(|e| failed(&e))?;
        if let Some((rows, cols)) = size {
            write_message(&mut conn, &Message::Resize { rows, cols }).map_err(|e| failed(&e))?;
        }
        write_message(&mut conn, &Message::Ok).map_err(|e| failed(&e))?;
        conn.set_read_timeout(None)
            .and_then(|()| conn.set_write_timeout(None))
            .map_err(|e| failed(&e))?;
        Ok(conn)
    }
}
