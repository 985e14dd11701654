//! A typed connection to the guest agent: the boot connection (the agent
//! connects to [`crate::contract::AGENT_PORT`] when it starts)
//! or an exec connection (the host connects to
//! [`crate::contract::EXEC_PORT`]).
//!
//! Two ways to use it: blocking calls that wait on a [`Watch`] (signals,
//! the VM's end, a deadline) for simple drivers (`husk build`,
//! `husk vm run`), or [`AgentConnection::fd`] + [`AgentConnection::try_next`]
//! for event loops that multiplex the agent with other fds (the container
//! monitor). Everything read is from the guest and is validated: a
//! malformed frame is an error, never a panic.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use husk_protocol::{
    write_message, ContainerSpec, ErrorCode, ExecRequest, FrameDecoder, Message, MAX_CHUNK,
    PROTOCOL_VERSION,
};

use crate::contract::EXEC_PORT;
use crate::vsock;
use crate::wait::{Wake, Watch};

/// How long a write to the agent may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many random bytes [`AgentConnection::seed`] sends.
pub const SEED_BYTES: usize = 64;

/// How long [`AgentConnection::seed`] waits for the agent's answer.
const SEED_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Reading, writing or waiting failed on the host.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The agent sent something that is not a valid frame.
    #[error("invalid message from the agent: {0}")]
    Decode(#[from] husk_protocol::DecodeError),
    /// The agent speaks another protocol version.
    #[error("the agent speaks protocol version {0}, husk {PROTOCOL_VERSION} (rebuild the agent)")]
    Version(u32),
    /// The agent's first message was not `Hello`.
    #[error("the agent did not say hello: {0}")]
    NoHello(String),
    /// A message that has no place at this point of the conversation.
    #[error("unexpected message from the agent: {0}")]
    Unexpected(String),
    /// The agent refused a request (or the process did not start).
    #[error("{detail}")]
    Refused {
        /// What kind of failure.
        code: ErrorCode,
        /// The agent's description.
        detail: String,
    },
    /// The agent closed the connection.
    #[error("the agent closed the connection")]
    Closed,
    /// The VM ended (and nothing more was to be read).
    #[error("the VM ended")]
    VmEnded,
    /// The deadline passed.
    #[error("the agent did not answer in time")]
    Timeout,
    /// A handled signal arrived.
    #[error("interrupted by signal {0}")]
    Interrupted(i32),
    /// Connecting to the exec port failed.
    #[error(transparent)]
    Connect(#[from] vsock::ConnectError),
    /// The agent's layer tar is larger than the host accepts.
    #[error("the layer tar from the agent is larger than {max} bytes")]
    LayerTooLarge {
        /// The limit.
        max: u64,
    },
    /// The agent's `LayerEnd` does not match the chunks it sent.
    #[error("the agent announced a {announced}-byte layer tar after sending {received} bytes")]
    LayerSize {
        /// What `LayerEnd` said.
        announced: u64,
        /// What arrived.
        received: u64,
    },
}

impl AgentError {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> AgentError {
        move |source| AgentError::Io { context, source }
    }
}

/// What the container's process (of this connection) reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Bytes written to stdout (or the terminal).
    Stdout(Vec<u8>),
    /// Bytes written to stderr.
    Stderr(Vec<u8>),
    /// The process exited with this status.
    Exited(i32),
    /// The process was killed by this signal.
    Signaled(i32),
    /// The guest kernel's OOM killer has killed this many processes of the
    /// container so far (boot connection only).
    OomKilled(u64),
}

impl Event {
    /// The exit code (128+N for signal N) if this is the process's end.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Event::Exited(code) => Some(*code),
            Event::Signaled(sig) => Some(husk_protocol::signal_exit_code(*sig)),
            _ => None,
        }
    }
}

/// One connection to the agent; `Hello` has been sent, the agent's is
/// checked by the first read.
pub struct AgentConnection {
    stream: UnixStream,
    decoder: FrameDecoder,
    greeted: bool,
    closed: bool,
    buf: Vec<u8>,
}

impl AgentConnection {
    /// Takes over an accepted (or connected) stream to the agent and sends
    /// `Hello`. The stream is made non-blocking for reads; writes block
    /// for at most a few seconds.
    pub fn new(stream: UnixStream) -> Result<AgentConnection, AgentError> {
        // Blocking writes with a timeout, reads only after poll says so.
        stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
            .and_then(|()| stream.set_read_timeout(Some(Duration::from_millis(1))))
            .map_err(AgentError::io("configuring the agent connection"))?;
        let mut conn = AgentConnection {
            stream,
            decoder: FrameDecoder::new(),
            greeted: false,
            closed: false,
            buf: vec![0; MAX_CHUNK + 64],
        };
        conn.send(&Message::Hello {
            version: PROTOCOL_VERSION,
        })?;
        Ok(conn)
    }

    /// Connects to the agent's exec port through the VMM socket `vsock`
    /// (each step within `timeout`), greets and waits for its `Hello`.
    pub fn connect_exec(vsock: &Path, timeout: Duration) -> Result<AgentConnection, AgentError> {
        let stream = vsock::connect(vsock, EXEC_PORT, timeout)?;
        AgentConnection::handshake(stream, timeout)
    }

    /// Takes over a connected stream that speaks the agent's protocol (an
    /// exec connection, or a container monitor's attach socket, which
    /// relays the agent), sends `Hello` and waits up to `timeout` for the
    /// peer's.
    pub fn handshake(stream: UnixStream, timeout: Duration) -> Result<AgentConnection, AgentError> {
        let mut conn = AgentConnection::new(stream)?;
        conn.await_hello(Instant::now() + timeout)?;
        Ok(conn)
    }

    /// How long a write may block (`None`: without limit, for a session
    /// whose peer may stop reading for a while, e.g. a process that does
    /// not read its stdin). A few seconds by default.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> Result<(), AgentError> {
        self.stream
            .set_write_timeout(timeout)
            .map_err(AgentError::io("configuring the agent connection"))
    }

    /// The fd to poll for [`AgentConnection::try_next`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// Sends one message.
    pub fn send(&mut self, msg: &Message) -> Result<(), AgentError> {
        write_message(&mut self.stream, msg).map_err(|e| match e {
            husk_protocol::WriteError::Io(source) => AgentError::Io {
                context: "sending to the agent",
                source,
            },
            other => AgentError::Io {
                context: "sending to the agent",
                source: io::Error::other(other.to_string()),
            },
        })
    }

    /// The next complete message, without blocking: `Ok(None)` when no
    /// full message has arrived yet (poll [`AgentConnection::fd`]),
    /// [`AgentError::Closed`] once the agent closed the connection and
    /// everything it sent has been returned.
    pub fn try_next(&mut self) -> Result<Option<Message>, AgentError> {
        loop {
            if let Some(msg) = self.decoded()? {
                return Ok(Some(msg));
            }
            if self.closed {
                return Err(AgentError::Closed);
            }
            if !self.read_some()? {
                return Ok(None);
            }
        }
    }

    /// The next message already received, without reading: an event loop
    /// that calls [`AgentConnection::try_next`] once per wake-up drains
    /// with this what that read brought before it polls again (so one
    /// busy stream cannot starve its other fds). `Ok(None)` when no
    /// complete message is buffered, [`AgentError::Closed`] once the
    /// agent closed the connection and everything it sent was returned.
    pub fn next_buffered(&mut self) -> Result<Option<Message>, AgentError> {
        match self.decoded()? {
            Some(msg) => Ok(Some(msg)),
            None if self.closed => Err(AgentError::Closed),
            None => Ok(None),
        }
    }

    /// A decoded message other than the agent's `Hello` (which is checked
    /// and swallowed).
    fn decoded(&mut self) -> Result<Option<Message>, AgentError> {
        while let Some(msg) = self.decoder.next_message()? {
            if self.greeted {
                return Ok(Some(msg));
            }
            self.check_hello(msg)?;
        }
        Ok(None)
    }

    /// One read without waiting; false if nothing was there.
    fn read_some(&mut self) -> Result<bool, AgentError> {
        let ready = crate::wait::poll_readable(&[self.stream.as_fd()], Some(Instant::now()))
            .map_err(AgentError::io("waiting for the agent"))?;
        if ready.is_empty() {
            return Ok(false);
        }
        match self.stream.read(&mut self.buf) {
            Ok(0) => self.closed = true,
            Ok(n) => self.decoder.push(&self.buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => self.closed = true,
            Err(e) => return Err(AgentError::io("reading from the agent")(e)),
        }
        Ok(true)
    }

    /// Waits for the agent's `Hello` (nothing else is read).
    fn await_hello(&mut self, deadline: Instant) -> Result<(), AgentError> {
        while !self.greeted {
            if let Some(msg) = self.decoder.next_message()? {
                self.check_hello(msg)?;
                continue;
            }
            if self.closed {
                return Err(AgentError::Closed);
            }
            self.wait_readable(&Watch::none(), Some(deadline))?;
            self.read_some()?;
        }
        Ok(())
    }

    fn check_hello(&mut self, msg: Message) -> Result<(), AgentError> {
        match msg {
            Message::Hello { version } if version == PROTOCOL_VERSION => {
                self.greeted = true;
                Ok(())
            }
            Message::Hello { version } => Err(AgentError::Version(version)),
            Message::Error { code, detail } => Err(AgentError::Refused { code, detail }),
            other => Err(AgentError::NoHello(format!("{other:?}"))),
        }
    }

    fn wait_readable(&self, watch: &Watch, deadline: Option<Instant>) -> Result<(), AgentError> {
        match watch
            .wait(self.stream.as_fd(), deadline)
            .map_err(AgentError::io("waiting for the agent"))?
        {
            Wake::Ready => Ok(()),
            Wake::Signal(sig) => Err(AgentError::Interrupted(sig)),
            Wake::VmDone => Err(AgentError::VmEnded),
            Wake::Timeout => Err(AgentError::Timeout),
        }
    }

    /// The next message, waiting for it on `watch` until `deadline`.
    pub fn next(
        &mut self,
        watch: &Watch,
        deadline: Option<Instant>,
    ) -> Result<Message, AgentError> {
        loop {
            if let Some(msg) = self.try_next()? {
                return Ok(msg);
            }
            self.wait_readable(watch, deadline)?;
        }
    }

    /// `CreateContainer(spec)`, answered `Ok` (or the agent's refusal).
    pub fn create_container(
        &mut self,
        spec: ContainerSpec,
        watch: &Watch,
        deadline: Option<Instant>,
    ) -> Result<(), AgentError> {
        self.send(&Message::CreateContainer(spec))?;
        match self.next(watch, deadline)? {
            Message::Ok => Ok(()),
            Message::Error { code, detail } => Err(AgentError::Refused { code, detail }),
            other => Err(AgentError::Unexpected(format!("{other:?}"))),
        }
    }

    /// `Seed` on the boot connection, right after the handshake, on every
    /// start (cold or restored from a snapshot): [`SEED_BYTES`] bytes from
    /// the host's `getrandom` and the host's wall-clock time, which the
    /// agent credits to the guest kernel's random pool and sets as the
    /// guest's clock; answered `Ok` (or the agent's refusal), within a
    /// few seconds.
    pub fn seed(&mut self) -> Result<(), AgentError> {
        let entropy = host_entropy()?;
        let unix_time_ns = host_time_ns()?;
        self.send(&Message::Seed {
            entropy,
            unix_time_ns,
        })?;
        match self.next(&Watch::none(), Some(Instant::now() + SEED_TIMEOUT))? {
            Message::Ok => Ok(()),
            Message::Error { code, detail } => Err(AgentError::Refused { code, detail }),
            other => Err(AgentError::Unexpected(format!("{other:?}"))),
        }
    }

    /// `Exec(request)`, answered `Started` with the guest pid (or the
    /// agent's refusal: the process did not start).
    pub fn start(
        &mut self,
        request: ExecRequest,
        watch: &Watch,
        deadline: Option<Instant>,
    ) -> Result<u32, AgentError> {
        self.send(&Message::Exec(request))?;
        self.started(watch, deadline)
    }

    /// The answer to an `Exec` already sent: `Started` with the guest pid
    /// (or the agent's refusal: the process did not start).
    pub fn started(&mut self, watch: &Watch, deadline: Option<Instant>) -> Result<u32, AgentError> {
        match self.next(watch, deadline)? {
            Message::Started { pid } => Ok(pid),
            Message::Error { code, detail } => Err(AgentError::Refused { code, detail }),
            other => Err(AgentError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The process's next output or its end. After the end, the boot
    /// connection's agent tears down; see [`AgentConnection::wait_closed`].
    pub fn next_event(
        &mut self,
        watch: &Watch,
        deadline: Option<Instant>,
    ) -> Result<Event, AgentError> {
        event(self.next(watch, deadline)?)
    }

    /// `KillInit(signal)` on an exec connection, answered `Ok`.
    pub fn kill_init(&mut self, signal: i32, deadline: Instant) -> Result<(), AgentError> {
        self.send(&Message::KillInit { signal })?;
        match self.next(&Watch::none(), Some(deadline))? {
            Message::Ok => Ok(()),
            Message::Error { code, detail } => Err(AgentError::Refused { code, detail }),
            other => Err(AgentError::Unexpected(format!("{other:?}"))),
        }
    }

    /// `ExportLayer` on the boot connection, after `CreateContainer` and
    /// before the init's `Exec`, answered `Ok`: the agent will send the
    /// container's changes as a layer tar after the init's exit status
    /// (see [`AgentConnection::receive_layer`]).
    pub fn export_layer(
        &mut self,
        watch: &Watch,
        deadline: Option<Instant>,
    ) -> Result<(), AgentError> {
        self.send(&Message::ExportLayer)?;
        match self.next(watch, deadline)? {
            Message::Ok => Ok(()),
            Message::Error { code, detail } => Err(AgentError::Refused { code, detail }),
            other => Err(AgentError::Unexpected(format!("{other:?}"))),
        }
    }

    /// After the init's exit status (with `ExportLayer` asked): the layer
    /// tar's chunks, written to `sink` as they arrive, until `LayerEnd`;
    /// returns its size. Guest input: more than `max_bytes` is refused as
    /// soon as it arrives (nothing beyond the limit is written), a
    /// `LayerEnd` that disagrees with the chunks is an error, and so is
    /// the agent's `Error` (its conversion failed). What `sink` received
    /// on an error is garbage for the caller to discard.
    pub fn receive_layer(
        &mut self,
        sink: &mut dyn Write,
        max_bytes: u64,
        watch: &Watch,
        deadline: Option<Instant>,
    ) -> Result<u64, AgentError> {
        let mut received: u64 = 0;
        loop {
            match self.next(watch, deadline)? {
                Message::LayerChunk(b) => {
                    received = received.saturating_add(b.len() as u64);
                    if received > max_bytes {
                        return Err(AgentError::LayerTooLarge { max: max_bytes });
                    }
                    sink.write_all(&b)
                        .map_err(AgentError::io("writing the layer tar"))?;
                }
                Message::LayerEnd { bytes } if bytes == received => return Ok(received),
                Message::LayerEnd { bytes } => {
                    return Err(AgentError::LayerSize {
                        announced: bytes,
                        received,
                    })
                }
                Message::Error { code, detail } => {
                    return Err(AgentError::Refused { code, detail })
                }
                other => return Err(AgentError::Unexpected(format!("{other:?}"))),
            }
        }
    }

    /// Tells the agent that the host sends nothing more (a half-close; the
    /// VMM passes it on as a vsock shutdown). On the boot connection of a
    /// container whose init process never started (a maintenance VM), the
    /// agent then ends the container as when an init process ends: it
    /// kills what runs, unmounts the writable disks, closes the connection
    /// ([`AgentConnection::wait_closed`]) and powers the VM off.
    pub fn finish_sending(&mut self) -> Result<(), AgentError> {
        self.stream
            .shutdown(std::net::Shutdown::Write)
            .map_err(AgentError::io("closing the connection to the agent"))
    }

    /// Waits until the agent closes the connection (it does after syncing
    /// and unmounting the container's disks), discarding what it sends.
    pub fn wait_closed(&mut self, watch: &Watch, deadline: Instant) -> Result<(), AgentError> {
        loop {
            match self.next(watch, Some(deadline)) {
                Ok(_) => {}
                Err(AgentError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// The underlying stream (e.g. to hand an exec session to a relay).
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }
}

/// [`SEED_BYTES`] bytes from the host's `getrandom`.
fn host_entropy() -> Result<Vec<u8>, AgentError> {
    let mut buf = vec![0u8; SEED_BYTES];
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(AgentError::io("drawing random bytes (getrandom)")(e.into())),
        }
    }
    Ok(buf)
}

/// The host's wall-clock time in nanoseconds since the Unix epoch.
fn host_time_ns() -> Result<u64, AgentError> {
    let bad = |what: String| AgentError::io("reading the host's clock")(io::Error::other(what));
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| bad(e.to_string()))?;
    u64::try_from(since.as_nanos()).map_err(|_| bad(format!("{since:?} since 1970")))
}

/// A process event from a message; anything else is unexpected (an
/// `Error` after `Started` is the agent's refusal).
pub fn event(msg: Message) -> Result<Event, AgentError> {
    match msg {
        Message::Stdout(b) => Ok(Event::Stdout(b)),
        Message::Stderr(b) => Ok(Event::Stderr(b)),
        Message::Exited { code } => Ok(Event::Exited(code)),
        Message::Signaled { signal } => Ok(Event::Signaled(signal)),
        Message::OomKilled { count } => Ok(Event::OomKilled(count)),
        Message::Error { code, detail } => Err(AgentError::Refused { code, detail }),
        other => Err(AgentError::Unexpected(format!("{other:?}"))),
    }
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
