//! Host-initiated connections to the guest over the VMM's hybrid vsock
//! socket (`CONNECT <port>\n` → `OK <hostport>\n`); the protocol
//! session on top is [`crate::agent::AgentConnection`].

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Why a connection to the guest could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The VM's socket is missing or refuses (the VM is not running).
    #[error("cannot reach the VM's vsock socket")]
    Socket(#[source] io::Error),
    /// The VMM refused or nothing listens on the port in the guest.
    #[error("the guest does not accept connections on vsock port {port} (yet)")]
    Refused {
        /// The guest port.
        port: u32,
    },
}

/// Longest `OK <port>\n` line accepted.
const MAX_REPLY: usize = 32;

/// Connects to guest port `port` through the VMM socket `uds`, with
/// `timeout` for each step.
pub fn connect(uds: &Path, port: u32, timeout: Duration) -> Result<UnixStream, ConnectError> {
    let mut s = UnixStream::connect(uds).map_err(ConnectError::Socket)?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(ConnectError::Socket)?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(ConnectError::Socket)?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_REPLY {
        match s.read(&mut byte) {
            Ok(0) => return Err(ConnectError::Refused { port }),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) =>
            {
                return Err(ConnectError::Refused { port })
            }
            Err(e) => return Err(ConnectError::Socket(e)),
        }
    }
    if !line.starts_with(b"OK ") {
        return Err(ConnectError::Refused { port });
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake VMM socket answering one CONNECT with `reply`.
    fn vmm(
        reply: &'static [u8],
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        std::thread::JoinHandle<String>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let l = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 13];
            c.read_exact(&mut buf).unwrap();
            c.write_all(reply).unwrap();
            String::from_utf8_lossy(&buf).into_owned()
        });
        (dir, path, t)
    }

    #[test]
    fn connect_ok_and_refused() {
        let (_d, path, t) = vmm(b"OK 1073741824\n");
        connect(&path, 1025, Duration::from_secs(5)).unwrap();
        assert_eq!(t.join().unwrap(), "CONNECT 1025\n");
        let (_d, path, t) = vmm(b"");
        let err = connect(&path, 1025, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, ConnectError::Refused { port: 1025 }), "{err}");
        t.join().unwrap();
        let err = connect(
            Path::new("/nonexistent/v.sock"),
            1025,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, ConnectError::Socket(_)));
    }
}
