//! The host side of the agent protocol: wait for the agent to connect,
//! send the run request, relay the command's output, collect its exit.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use husk_protocol::{
    write_message, FrameDecoder, Message, NetworkSpec, RunRequest, MAX_CHUNK, PROTOCOL_VERSION,
};

use super::signals::Signals;

/// How a session with the agent ended.
#[derive(Debug)]
pub enum Ending {
    /// The command finished or was refused; husk exits with this code.
    Exit(i32),
    /// husk received this signal.
    Interrupted(i32),
    /// The VM or the agent failed; the console log may tell why.
    Failed(anyhow::Error),
}

/// What the main thread waits on besides its I/O.
pub struct Watch<'a> {
    /// SIGINT/SIGTERM.
    pub signals: &'a Signals,
    /// Readable (EOF) once the VM thread has ended.
    pub vm_done: RawFd,
}

enum Wake {
    Ready,
    Signal(i32),
    VmDone,
    Timeout,
}

impl Watch<'_> {
    /// Waits until `fd` is readable, a signal arrives, the VM ends or the
    /// deadline passes (in that order of precedence, except that pending
    /// data is read before the VM's end is reported).
    fn wait(&self, fd: RawFd, deadline: Option<Instant>) -> io::Result<Wake> {
        loop {
            let timeout = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Wake::Timeout);
                    }
                    left.as_millis().min(60_000) as i32 + 1
                }
            };
            let mut fds = [fd, self.signals.fd(), self.vm_done].map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            // SAFETY: a valid array of three pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if fds[1].revents != 0 {
                if let Some(sig) = self.signals.received() {
                    return Ok(Wake::Signal(sig));
                }
            }
            if fds[0].revents != 0 {
                return Ok(Wake::Ready);
            }
            if fds[2].revents != 0 {
                return Ok(Wake::VmDone);
            }
        }
    }
}

/// Runs `req` through the agent that connects to `listener`.
pub fn drive(
    listener: &UnixListener,
    watch: &Watch,
    req: &RunRequest,
    network: Option<&NetworkSpec>,
    boot_timeout: Duration,
) -> Ending {
    let deadline = Instant::now() + boot_timeout;
    let mut conn = match accept(listener, watch, deadline, boot_timeout) {
        Ok(conn) => conn,
        Err(ending) => return ending,
    };
    match Session::default().converse(&mut conn, watch, req, network, deadline) {
        Ending::Exit(code) => match wait_for_teardown(&mut conn, watch) {
            Some(sig) => Ending::Interrupted(sig),
            None => Ending::Exit(code),
        },
        other => other,
    }
}

/// How long the agent may take to sync and unmount after the command.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// After the exit message: waits until the agent closes the connection
/// (it does so after syncing and unmounting the disks), the VM ends, or
/// the timeout passes. Returns a signal that interrupted the wait.
fn wait_for_teardown(conn: &mut UnixStream, watch: &Watch) -> Option<i32> {
    let deadline = Instant::now() + TEARDOWN_TIMEOUT;
    let mut buf = [0u8; 4096];
    loop {
        match watch.wait(conn.as_raw_fd(), Some(deadline)) {
            Ok(Wake::Ready) => match conn.read(&mut buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) => {}
                Err(_) => return None,
            },
            Ok(Wake::Signal(sig)) => return Some(sig),
            Ok(Wake::VmDone | Wake::Timeout) | Err(_) => return None,
        }
    }
}

fn accept(
    listener: &UnixListener,
    watch: &Watch,
    deadline: Instant,
    boot_timeout: Duration,
) -> Result<UnixStream, Ending> {
    loop {
        match watch.wait(listener.as_raw_fd(), Some(deadline)) {
            Ok(Wake::Ready) => {}
            Ok(Wake::Signal(sig)) => return Err(Ending::Interrupted(sig)),
            Ok(Wake::VmDone) => {
                return Err(Ending::Failed(anyhow!(
                    "the VM stopped before the agent connected"
                )))
            }
            Ok(Wake::Timeout) => {
                return Err(Ending::Failed(anyhow!(
                    "guest never reached the agent within {} s",
                    boot_timeout.as_secs()
                )))
            }
            Err(e) => return Err(Ending::Failed(anyhow!("waiting for the agent: {e}"))),
        }
        match listener.accept() {
            Ok((conn, _)) => {
                return conn
                    .set_nonblocking(false)
                    .map(|()| conn)
                    .map_err(|e| Ending::Failed(anyhow!("agent connection: {e}")))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(Ending::Failed(anyhow!("accepting the agent: {e}"))),
        }
    }
}

/// State of one conversation with the agent.
#[derive(Default)]
struct Session {
    decoder: FrameDecoder,
    greeted: bool,
    stdout_broken: bool,
    stderr_broken: bool,
}

impl Session {
    fn converse(
        &mut self,
        conn: &mut UnixStream,
        watch: &Watch,
        req: &RunRequest,
        network: Option<&NetworkSpec>,
        deadline: Instant,
    ) -> Ending {
        let hello = Message::Hello {
            version: PROTOCOL_VERSION,
        };
        let net = network.map(|spec| Message::ConfigureNetwork(spec.clone()));
        for msg in [Some(hello), net, Some(Message::Run(req.clone()))]
            .into_iter()
            .flatten()
        {
            if let Err(e) = write_message(conn, &msg) {
                return Ending::Failed(anyhow!("sending to the agent: {e}"));
            }
        }
        let mut buf = vec![0u8; MAX_CHUNK];
        loop {
            let hello_deadline = (!self.greeted).then_some(deadline);
            match watch.wait(conn.as_raw_fd(), hello_deadline) {
                Ok(Wake::Ready) => {}
                Ok(Wake::Signal(sig)) => return Ending::Interrupted(sig),
                Ok(Wake::VmDone) => {
                    return Ending::Failed(anyhow!("the VM stopped before the command finished"))
                }
                Ok(Wake::Timeout) => return Ending::Failed(anyhow!("the agent did not answer")),
                Err(e) => return Ending::Failed(anyhow!("waiting for the agent: {e}")),
            }
            let n = match conn.read(&mut buf) {
                Ok(0) => {
                    return Ending::Failed(anyhow!(
                        "the agent closed the connection before the command finished"
                    ))
                }
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) =>
                {
                    continue
                }
                Err(e) => return Ending::Failed(anyhow!("reading from the agent: {e}")),
            };
            self.decoder.push(&buf[..n]);
            loop {
                match self.decoder.next_message() {
                    Ok(Some(msg)) => {
                        if let Some(ending) = self.on_message(msg) {
                            return ending;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Ending::Failed(anyhow!("invalid message from the agent: {e}"))
                    }
                }
            }
        }
    }

    /// Handles one message; returns the ending if it ends the session.
    fn on_message(&mut self, msg: Message) -> Option<Ending> {
        if !self.greeted {
            return match msg {
                Message::Hello { version } if version == PROTOCOL_VERSION => {
                    self.greeted = true;
                    None
                }
                Message::Hello { version } => Some(Ending::Failed(anyhow!(
                    "the agent speaks protocol version {version}, husk {PROTOCOL_VERSION} (rebuild the agent)"
                ))),
                _ => Some(Ending::Failed(anyhow!("the agent did not say hello"))),
            };
        }
        match msg {
            Message::Stdout(bytes) => relay(&mut io::stdout(), &bytes, &mut self.stdout_broken),
            Message::Stderr(bytes) => relay(&mut io::stderr(), &bytes, &mut self.stderr_broken),
            Message::Exited { code } => return Some(Ending::Exit(code)),
            Message::Signaled { signal } => {
                return Some(Ending::Exit(husk_protocol::signal_exit_code(signal)))
            }
            Message::Error { code, detail } => {
                eprintln!("husk: {detail}");
                return Some(Ending::Exit(code.exit_code()));
            }
            other => {
                return Some(Ending::Failed(anyhow!(
                    "unexpected message from the agent: {other:?}"
                )))
            }
        }
        None
    }
}

/// Writes command output through; after the first failure (e.g. a closed
/// pipe) the rest of that stream is discarded.
fn relay(out: &mut dyn Write, bytes: &[u8], broken: &mut bool) {
    if *broken {
        return;
    }
    if out.write_all(bytes).and_then(|()| out.flush()).is_err() {
        *broken = true;
    }
}

#[cfg(test)]
#[path = "host_tests.rs"]
mod tests;
