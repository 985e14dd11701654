//! One command in a fresh VM, run to completion: what `husk vm run` and
//! `husk build`'s RUN steps do. (A container lives longer and is driven by
//! the runtime's monitor through the same [`AgentConnection`].)
//!
//! The sequence is the agent protocol's: accept the agent, create the
//! container, start the command, relay its output until it ends, wait for
//! the agent's teardown (disks synced and unmounted, connection closed),
//! then for the guest to power off by itself. A build step also asks for
//! the container's changes: the agent streams them as a layer tar after
//! the exit status ([`Sandbox::run_exporting_layer`]).

use std::io::Write;
use std::time::{Duration, Instant};

use husk_protocol::{ContainerSpec, ExecRequest};

use crate::agent::{AgentConnection, AgentError, Event};
use crate::sandbox::{Sandbox, SandboxError};
use crate::signals::Signals;

/// Which stream a chunk of the command's output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// What to run and how long each phase may take.
#[derive(Clone, Debug)]
pub struct OneShot {
    /// The container the command runs in.
    pub spec: ContainerSpec,
    /// The command.
    pub request: ExecRequest,
    /// How long the guest may take to reach the agent (and to create the
    /// container).
    pub boot_timeout: Duration,
    /// How long the agent may take to tear down after the command ended.
    pub teardown_timeout: Duration,
    /// How long the guest may take to power off after the teardown.
    pub poweroff_timeout: Duration,
}

/// How the command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It ran: its exit code (128+N when killed by signal N).
    Code(i32),
    /// The agent refused to start it (not found, not executable, no such
    /// user...): Docker's exit code for that (125/126/127) and why.
    Refused {
        /// 125, 126 or 127.
        code: i32,
        /// The agent's message.
        detail: String,
    },
}

/// A command that ran to its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// How it ended.
    pub exit: Exit,
    /// Whether the guest then powered off by itself (only then are its
    /// writable disks complete).
    pub powered_off: bool,
}

/// Where the container's layer tar goes (see
/// [`Sandbox::run_exporting_layer`]) and what the host accepts of it.
pub struct LayerSink<'a> {
    /// Receives the tar's bytes as they arrive.
    pub to: &'a mut dyn Write,
    /// The most bytes accepted; more fails the run.
    pub max_bytes: u64,
    /// How long the agent may take to send it all, from the command's end.
    pub timeout: Duration,
}

/// Why a one-shot run did not complete.
#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    /// A handled signal arrived; the VM is stopped.
    #[error("interrupted by signal {0}")]
    Interrupted(i32),
    /// The agent could not create the container (a missing or bad disk...).
    #[error("the agent could not create the container: {0}")]
    NotCreated(String),
    /// The VM or the agent failed; the text includes what the console
    /// says about it (a kernel panic, a VM error) when it says anything.
    #[error("{0}")]
    Failed(String),
    /// The container's layer tar did not arrive whole or broke the host's
    /// limits; the VM is stopped.
    #[error("the container's changes: {0}")]
    Layer(#[source] AgentError),
}

impl From<SandboxError> for OneShotError {
    fn from(e: SandboxError) -> OneShotError {
        match e {
            SandboxError::Interrupted(sig) => OneShotError::Interrupted(sig),
            other => OneShotError::Failed(crate::explain::error_chain(&other)),
        }
    }
}

impl From<AgentError> for OneShotError {
    fn from(e: AgentError) -> OneShotError {
        match e {
            AgentError::Interrupted(sig) => OneShotError::Interrupted(sig),
            AgentError::VmEnded => {
                OneShotError::Failed("the VM stopped before the command finished".into())
            }
            AgentError::Closed => OneShotError::Failed(
                "the agent closed the connection before the command finished".into(),
            ),
            other => OneShotError::Failed(crate::explain::error_chain(&other)),
        }
    }
}

impl Sandbox {
    /// Runs `job` in this freshly started VM, handing its output to `out`
    /// as it arrives, and waits for the teardown and power-off. The VM is
    /// stopped on return, whatever happened.
    pub fn run_to_completion(
        &mut self,
        signals: &Signals,
        job: OneShot,
        out: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<Completion, OneShotError> {
        self.complete(signals, job, out, None).map(|(c, _)| c)
    }

    /// [`Sandbox::run_to_completion`] for an image root on a writable
    /// disk, also asking the agent (`ExportLayer`) for the container's
    /// changes as a layer tar once the command ended; the tar goes to
    /// `layer.to` (within `layer`'s limits) and its size is returned
    /// beside the completion (`None` when the command did not start).
    /// Nothing the guest wrote is mounted: this stream is all the host
    /// reads of it.
    pub fn run_exporting_layer(
        &mut self,
        signals: &Signals,
        job: OneShot,
        out: &mut dyn FnMut(Stream, &[u8]),
        layer: LayerSink<'_>,
    ) -> Result<(Completion, Option<u64>), OneShotError> {
        self.complete(signals, job, out, Some(layer))
    }

    fn complete(
        &mut self,
        signals: &Signals,
        job: OneShot,
        out: &mut dyn FnMut(Stream, &[u8]),
        layer: Option<LayerSink<'_>>,
    ) -> Result<(Completion, Option<u64>), OneShotError> {
        let result = self.drive(signals, job.clone(), out, layer);
        let (exit, layer_bytes) = match result {
            Ok(done) => done,
            Err(OneShotError::Failed(why)) => {
                return Err(OneShotError::Failed(self.explain_end(&why)));
            }
            Err(e) => {
                self.stop();
                return Err(e);
            }
        };
        let off = self.wait_power_off(Some(signals), Instant::now() + job.poweroff_timeout);
        if let (false, Some(sig)) = (off, signals.received()) {
            self.stop();
            return Err(OneShotError::Interrupted(sig));
        }
        let powered_off = off && matches!(self.stop(), Some(Ok(vmm::ExitReason::PowerOff)));
        Ok((Completion { exit, powered_off }, layer_bytes))
    }

    /// Ends the container of this VM whose init process never started (a
    /// maintenance VM, which only answered questions on exec connections):
    /// the host stops sending on the boot connection `boot`
    /// ([`AgentConnection::finish_sending`]), the agent tears the
    /// container down (its writable disks unmounted) and closes the
    /// connection within `teardown`, then the guest powers off within
    /// `poweroff`. True when all of that happened (only then are the
    /// writable disks complete). The VM is stopped on return, whatever
    /// happened.
    pub fn end_without_init(
        &mut self,
        mut boot: AgentConnection,
        signals: Option<&Signals>,
        teardown: Duration,
        poweroff: Duration,
    ) -> bool {
        let closed = boot.finish_sending().is_ok()
            && boot
                .wait_closed(&self.watch(signals), Instant::now() + teardown)
                .is_ok();
        drop(boot);
        let off = closed && self.wait_power_off(signals, Instant::now() + poweroff);
        let powered_off = off && matches!(self.stop(), Some(Ok(vmm::ExitReason::PowerOff)));
        self.stop();
        powered_off
    }

    /// The agent session: create, (ask for the layer,) start, relay,
    /// (receive the layer,) teardown.
    fn drive(
        &mut self,
        signals: &Signals,
        job: OneShot,
        out: &mut dyn FnMut(Stream, &[u8]),
        layer: Option<LayerSink<'_>>,
    ) -> Result<(Exit, Option<u64>), OneShotError> {
        let mut conn: AgentConnection = self.accept_agent(Some(signals), job.boot_timeout)?;
        let watch = self.watch(Some(signals));
        let deadline = Some(Instant::now() + job.boot_timeout);
        match conn.create_container(job.spec, &watch, deadline) {
            Ok(()) => {}
            Err(AgentError::Refused { detail, .. }) => {
                return Err(OneShotError::NotCreated(detail))
            }
            Err(e) => return Err(e.into()),
        }
        if layer.is_some() {
            match conn.export_layer(&watch, deadline) {
                Ok(()) => {}
                Err(AgentError::Refused { detail, .. }) => {
                    return Err(OneShotError::NotCreated(detail))
                }
                Err(e) => return Err(e.into()),
            }
        }
        let exit = match conn.start(job.request, &watch, None) {
            Ok(_pid) => loop {
                match conn.next_event(&watch, None)? {
                    Event::Stdout(b) => out(Stream::Stdout, &b),
                    Event::Stderr(b) => out(Stream::Stderr, &b),
                    Event::Exited(code) => break Exit::Code(code),
                    Event::Signaled(sig) => break Exit::Code(husk_protocol::signal_exit_code(sig)),
                    // The victim's status (137) tells a one-shot job's user.
                    Event::OomKilled(_) => {}
                }
            },
            Err(AgentError::Refused { code, detail }) => Exit::Refused {
                code: code.exit_code(),
                detail,
            },
            Err(e) => return Err(e.into()),
        };
        let layer_bytes = match (layer, &exit) {
            (Some(sink), Exit::Code(_)) => {
                let deadline = Some(Instant::now() + sink.timeout);
                match conn.receive_layer(sink.to, sink.max_bytes, &watch, deadline) {
                    Ok(n) => Some(n),
                    Err(AgentError::Interrupted(sig)) => {
                        return Err(OneShotError::Interrupted(sig))
                    }
                    Err(e) => return Err(OneShotError::Layer(e)),
                }
            }
            _ => None,
        };
        match conn.wait_closed(&watch, Instant::now() + job.teardown_timeout) {
            Err(AgentError::Interrupted(sig)) => Err(OneShotError::Interrupted(sig)),
            _ => Ok((exit, layer_bytes)),
        }
    }
}
