//! The monitor's event loop: one poll(2) over the agent's boot connection,
//! the attach clients, the local stdio (FIFOs/fds), signals and the VM
//! thread, driving the container from boot to its end.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use husk_protocol::{ErrorCode, Message, MAX_CHUNK};
use husk_sandbox::wait::poll_readable;
use husk_sandbox::{AgentConnection, AgentError, Sandbox, Signals};

use super::boot;
use super::clients::{ClientEvent, Clients, EndNotice};
use super::Recorder;
use crate::config::ContainerConfig;
use crate::layout::ContainerPaths;
use crate::logs::LogWriter;
use crate::relay::write_out_within;

/// How long the reader of the container's stdout or stderr FIFO (or fd)
/// may accept nothing before the monitor stops writing to it (the output
/// still goes to the container's log): a reader that keeps the FIFO open
/// without reading must not stall the monitor, which also handles
/// signals, attach clients and the VM's end.
const OUTPUT_STALL: Duration = Duration::from_secs(30);

/// How long the agent may take to answer CreateContainer or Exec.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the process waits for a first attach client ([`Gate::Attach`]).
const ATTACH_WAIT: Duration = Duration::from_secs(60);
/// How long the agent may take to tear down and power off after the end.
/// Generous: the teardown unmounts the writable disk, which writes back
/// what the container wrote last; stopping the VM before that loses it.
/// Seconds normally, but guest kernel code is slow on nested hosts and
/// slower still when other VMs share the cores.
pub(crate) const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the VM may take to end after the agent went away.
const LOST_GRACE: Duration = Duration::from_secs(5);
/// How long the VM may take to pause or resume.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of input buffered before the process starts.
const MAX_PENDING: usize = 1 << 20;

/// How the container ended.
#[derive(Clone, Debug)]
pub struct End {
    /// Exit code (128+N for signal N).
    pub code: i32,
    /// Why it ended abnormally or did not start.
    pub error: Option<(ErrorCode, String)>,
}

impl End {
    fn failed(detail: String) -> End {
        End {
            code: boot::FAILED_CODE,
            error: Some((ErrorCode::Internal, detail)),
        }
    }

    /// What attach clients are told.
    pub fn notice(&self) -> EndNotice {
        EndNotice {
            code: self.code,
            error: self.error.clone(),
        }
    }
}

/// When the init process starts, once the container exists in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// At once.
    Open,
    /// When a first client has attached (so it sees all output), or after
    /// [`ATTACH_WAIT`]: a foreground `husk run`.
    Attach,
    /// When a first client has attached, however long that takes; the
    /// starter is told `ready` when the hold begins (an OCI `create`).
    Held,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Booting,
    Creating,
    WaitAttach,
    Starting,
    Running,
    /// The agent connection broke; waiting for the VM to end.
    Lost,
    Ending,
}

/// The local ends of stdio (FIFOs or inherited fds), if any.
#[derive(Default)]
pub struct LocalStdio {
    /// Read as the process's stdin.
    pub stdin: Option<File>,
    /// Written with stdout.
    pub stdout: Option<File>,
    /// Written with stderr.
    pub stderr: Option<File>,
    /// stdout (or stdin) is a terminal: its size is the process's.
    pub tty: bool,
    broken: [bool; 2],
}

/// Everything the loop works with.
pub struct Session<'a> {
    pub(super) cfg: &'a ContainerConfig,
    pub(super) paths: &'a ContainerPaths,
    pub(super) signals: &'a Signals,
    pub(super) sandbox: &'a mut Sandbox,
    pub(super) clients: Clients,
    pub(super) local: LocalStdio,
    pub(super) logs: Option<LogWriter>,
    pub(super) gate: Gate,
    /// A client attached before the process could start.
    attach_seen: bool,
    pub(super) recorder: &'a mut Recorder,
    /// The guest's network (set after [`Session::new`]).
    pub(super) guest_net: boot::GuestNet,
    agent: Option<AgentConnection>,
    phase: Phase,
    deadline: Option<Instant>,
    size: Option<(u16, u16)>,
    pending: Vec<Message>,
    pending_bytes: usize,
    end: Option<End>,
    /// The health check's thread while the process runs.
    health: Option<crate::health::Checker>,
}

impl<'a> Session<'a> {
    /// A session in the booting phase.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &'a ContainerConfig,
        paths: &'a ContainerPaths,
        signals: &'a Signals,
        sandbox: &'a mut Sandbox,
        clients: Clients,
        local: LocalStdio,
        gate: Gate,
        recorder: &'a mut Recorder,
    ) -> Session<'a> {
        let logs = LogWriter::open(&paths.log(), cfg.log_config)
            .map_err(|e| eprintln!("husk monitor: cannot open the log: {e}"))
            .ok();
        Session {
            cfg,
            paths,
            signals,
            sandbox,
            clients,
            local,
            logs,
            gate,
            attach_seen: false,
            recorder,
            guest_net: boot::GuestNet::default(),
            agent: None,
            phase: Phase::Booting,
            deadline: Some(Instant::now() + Duration::from_secs(cfg.boot_timeout)),
            size: None,
            pending: Vec::new(),
            pending_bytes: 0,
            end: None,
            health: None,
        }
    }

    /// Runs the container to its end; returns the end and the clients
    /// (told already, unless the container is removed automatically).
    pub fn run(mut self) -> (End, Clients) {
        loop {
            match self.step() {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    self.fail(format!("monitor: {e}"));
                    break;
                }
            }
        }
        let end = match self.end.take() {
            Some(end) => {
                self.sandbox.stop();
                end
            }
            None => {
                let why = self.sandbox.explain_end("the VM ended");
                let end = End::failed(why);
                self.recorder.ended(&end);
                if !self.cfg.auto_remove {
                    self.clients.finish(end.notice());
                }
                end
            }
        };
        (end, self.clients)
    }

    /// One poll round; true when the loop is over.
    fn step(&mut self) -> io::Result<bool> {
        // Rotates a full monitor.log that only the VMM's (filtered)
        // threads wrote to (they cannot rotate it).
        super::cap_monitor_log();
        let booting = self.phase == Phase::Booting;
        let stdin_open = self.phase == Phase::Running;
        let (ready, clients_at, clients_len, listener_at, agent_at, stdin_at) = {
            let mut fds: Vec<BorrowedFd<'_>> =
                vec![self.signals.as_fd(), self.sandbox.vm().done_fd()];
            let clients_at = fds.len();
            fds.extend(self.clients.fds());
            let clients_len = fds.len() - clients_at;
            let mut listener_at = None;
            if let Some(fd) = self.sandbox.listener_fd().filter(|_| booting) {
                fds.push(fd);
                listener_at = Some(fds.len() - 1);
            }
            let mut agent_at = None;
            if let Some(a) = &self.agent {
                fds.push(a.fd());
                agent_at = Some(fds.len() - 1);
            }
            let mut stdin_at = None;
            if let (Some(f), true) = (&self.local.stdin, stdin_open) {
                fds.push(f.as_fd());
                stdin_at = Some(fds.len() - 1);
            }
            let ready = poll_readable(&fds, self.deadline)?;
            (
                ready,
                clients_at,
                clients_len,
                listener_at,
                agent_at,
                stdin_at,
            )
        };
        if ready.is_empty() {
            return Ok(self.on_timeout());
        }
        let is = |i: usize| ready.contains(&i);
        if is(0) {
            for sig in self.signals.take() {
                if sig == libc::SIGWINCH {
                    self.on_local_resize();
                } else if matches!(sig, libc::SIGTERM | libc::SIGINT) && self.end.is_none() {
                    // Not restarted by its policy either.
                    let _ = std::fs::write(self.paths.user_stop(), b"");
                    // Told to stop from outside (stop's last resort, kill
                    // before the agent runs): the container is killed.
                    self.finish(End {
                        code: 137,
                        error: None,
                    });
                    self.sandbox.request_stop();
                }
            }
        }
        if is(clients_at) {
            self.clients.accept();
        }
        for k in 1..clients_len {
            if is(clients_at + k) {
                for ev in self.clients.read(k - 1) {
                    self.on_client(ev);
                }
            }
        }
        self.clients.reap();
        if listener_at.is_some_and(is) {
            self.accept_agent();
        }
        if agent_at.is_some_and(is) {
            self.read_agent();
        }
        if stdin_at.is_some_and(is) {
            self.read_local_stdin();
        }
        if is(1) {
            if self.end.is_none() {
                let why = self.sandbox.explain_end("the VM stopped");
                self.finish(End::failed(why));
            }
            return Ok(true);
        }
        Ok(false)
    }

    fn on_timeout(&mut self) -> bool {
        match self.phase {
            Phase::Booting => self.fail(format!(
                "the guest did not reach the agent within {} s (console log: {})",
                self.cfg.boot_timeout,
                self.paths.console().display()
            )),
            Phase::Creating | Phase::Starting => self.fail("the agent did not answer".into()),
            Phase::WaitAttach => self.send_exec(),
            Phase::Lost => {
                let why = husk_sandbox::explain::early_end(
                    None,
                    &self.paths.console(),
                    "the agent closed its connection unexpectedly",
                );
                self.fail(why);
            }
            Phase::Running => self.deadline = None,
            Phase::Ending => {
                if self.agent.is_some() && !self.disposable() {
                    eprintln!(
                        "husk monitor: the guest did not finish its teardown within {} s; \
                         stopping the VM (writes not yet on its disks are lost)",
                        TEARDOWN_TIMEOUT.as_secs()
                    );
                }
                return true;
            }
        }
        false
    }

    /// Ends the container with an error and stops the VM.
    fn fail(&mut self, detail: String) {
        if self.end.is_none() {
            self.finish(End::failed(detail));
        }
        self.sandbox.request_stop();
    }

    /// A disposable container (`--rm`, no volumes) has nothing the guest's
    /// teardown would save: its writable disk is deleted next, so the VM
    /// is stopped at once instead.
    fn disposable(&self) -> bool {
        self.cfg.auto_remove && self.cfg.mounts.is_empty()
    }

    /// Records the end (state, clients) and waits for the teardown.
    fn finish(&mut self, end: End) {
        self.health = None;
        self.resume_to_end();
        self.recorder.ended(&end);
        if !self.cfg.auto_remove {
            self.clients.finish(end.notice());
        }
        self.end = Some(end);
        self.phase = Phase::Ending;
        let teardown = if self.disposable() {
            Duration::ZERO
        } else {
            TEARDOWN_TIMEOUT
        };
        self.deadline = Some(Instant::now() + teardown);
    }

    fn accept_agent(&mut self) {
        let conn = match self.sandbox.try_accept() {
            Ok(Some(conn)) => conn,
            Ok(None) => return,
            Err(e) => {
                vmm::log_limited!(
                    log::Level::Warn,
                    "the agent's connection: {}",
                    crate::error_chain(&e)
                );
                return;
            }
        };
        self.agent = Some(conn);
        self.phase = Phase::Creating;
        self.deadline = Some(Instant::now() + self.guest_work_timeout());
        let spec = Message::CreateContainer(boot::container_spec(self.cfg, &self.guest_net));
        self.send_agent(&spec);
    }

    fn send_agent(&mut self, msg: &Message) {
        let Some(agent) = &mut self.agent else {
            return;
        };
        if agent.send(msg).is_err() {
            self.agent_lost();
        }
    }

    fn agent_lost(&mut self) {
        self.agent = None;
        match self.phase {
            Phase::Ending => {
                let soon = Instant::now() + LOST_GRACE;
                self.deadline = Some(self.deadline.map_or(soon, |d| d.min(soon)));
            }
            _ => {
                self.phase = Phase::Lost;
                self.deadline = Some(Instant::now() + LOST_GRACE);
            }
        }
    }

    fn read_agent(&mut self) {
        loop {
            let Some(agent) = &mut self.agent else {
                return;
            };
            match agent.try_next() {
                Ok(Some(msg)) => self.on_agent(msg),
                Ok(None) => return,
                Err(AgentError::Closed | AgentError::Io { .. }) => return self.agent_lost(),
                Err(e) => {
                    self.fail(e.to_string());
                    self.agent = None;
                    return;
                }
            }
        }
    }

    fn on_agent(&mut self, msg: Message) {
        match (self.phase, msg) {
            (Phase::Creating, Message::Ok) => self.after_create(),
            (Phase::Creating, Message::Error { code, detail }) => self.finish(End {
                code: code.exit_code(),
                error: Some((code, format!("creating the container: {detail}"))),
            }),
            (Phase::Starting, Message::Started { pid }) => {
                self.phase = Phase::Running;
                self.deadline = None;
                self.recorder.started(pid);
                self.start_health();
                for m in std::mem::take(&mut self.pending) {
                    self.send_agent(&m);
                }
            }
            (Phase::Starting | Phase::Running, Message::Error { code, detail }) => {
                self.finish(End {
                    code: code.exit_code(),
                    error: Some((code, detail)),
                })
            }
            (Phase::Running, Message::Stdout(b)) => self.output("stdout", b),
            (Phase::Running, Message::Stderr(b)) => self.output("stderr", b),
            (Phase::Running, Message::OomKilled { .. }) => self.recorder.oom_killed(),
            (Phase::Running, Message::Exited { code }) => self.finish(End { code, error: None }),
            (Phase::Running, Message::Signaled { signal }) => self.finish(End {
                code: husk_protocol::signal_exit_code(signal),
                error: None,
            }),
            (Phase::Ending, _) => {}
            (phase, other) => self.fail(format!(
                "unexpected message from the agent while {phase:?}: {other:?}"
            )),
        }
    }

    fn after_create(&mut self) {
        let attached = self.attach_seen || self.clients.any_attached();
        match self.gate {
            Gate::Attach | Gate::Held if !attached => {
                self.phase = Phase::WaitAttach;
                if self.gate == Gate::Held {
                    self.deadline = None;
                    self.recorder.held();
                } else {
                    self.deadline = Some(Instant::now() + ATTACH_WAIT);
                }
            }
            _ => self.send_exec(),
        }
    }

    /// The local terminal's size, if stdio is one.
    fn local_size(&self) -> Option<(u16, u16)> {
        let tty = self.local.stdout.as_ref().or(self.local.stdin.as_ref());
        tty.filter(|_| self.local.tty)
            .and_then(crate::relay::terminal_size)
    }

    /// SIGWINCH: the local terminal's new size goes to the process.
    fn on_local_resize(&mut self) {
        let Some((rows, cols)) = self.local_size() else {
            return;
        };
        if self.phase == Phase::Running {
            self.send_agent(&Message::Resize { rows, cols });
        } else {
            self.size = Some((rows, cols));
        }
    }

    /// How long the agent may take to create the container or start its
    /// init: guest kernel work like a boot (emulated on some hosts, and
    /// slower with many guests at once), so at least the boot timeout.
    fn guest_work_timeout(&self) -> Duration {
        REPLY_TIMEOUT.max(Duration::from_secs(self.cfg.boot_timeout))
    }

    fn send_exec(&mut self) {
        self.phase = Phase::Starting;
        self.deadline = Some(Instant::now() + self.guest_work_timeout());
        if self.size.is_none() {
            self.size = self.local_size();
        }
        let req = boot::init_request(self.cfg, self.size);
        self.send_agent(&Message::Exec(req));
    }

    fn output(&mut self, stream: &str, bytes: Vec<u8>) {
        if let Some(l) = &mut self.logs {
            if let Err(e) = l.write(stream, &bytes) {
                eprintln!("husk monitor: writing the log: {e}");
                self.logs = None;
            }
        }
        let (file, broken) = if stream == "stdout" {
            (&self.local.stdout, &mut self.local.broken[0])
        } else {
            (&self.local.stderr, &mut self.local.broken[1])
        };
        if let Some(f) = file {
            let fd = std::os::fd::AsFd::as_fd(f);
            if write_out_within(fd, &bytes, broken, Some(OUTPUT_STALL)) {
                eprintln!(
                    "husk monitor: the {stream} reader accepted nothing for {}s; \
                     the container's {stream} now goes only to its log",
                    OUTPUT_STALL.as_secs()
                );
            }
        }
        let msg = if stream == "stdout" {
            Message::Stdout(bytes)
        } else {
            Message::Stderr(bytes)
        };
        self.clients.broadcast(&msg);
    }

    fn on_client(&mut self, ev: ClientEvent) {
        let running = self.phase == Phase::Running;
        match ev {
            ClientEvent::Attached if self.phase == Phase::WaitAttach => self.send_exec(),
            ClientEvent::Attached => {
                if matches!(self.phase, Phase::Booting | Phase::Creating) {
                    self.attach_seen = true;
                }
            }
            ClientEvent::Resize(rows, cols) if running => {
                self.send_agent(&Message::Resize { rows, cols })
            }
            ClientEvent::Resize(rows, cols) => self.size = Some((rows, cols)),
            ClientEvent::Stdin(b) => self.input(Message::Stdin(b)),
            ClientEvent::StdinEof => self.input(Message::StdinEof),
            ClientEvent::Signal(s) if running => self.send_agent(&Message::Signal(s)),
            ClientEvent::Signal(_) => {}
            ClientEvent::Pause(i, pause) => {
                let why = self.pause(pause);
                self.clients.answer(i, why);
            }
        }
    }

    /// Suspends (`pause`) or resumes the VM; why not, if it cannot.
    fn pause(&mut self, pause: bool) -> Option<String> {
        let id = &self.cfg.id;
        if self.phase != Phase::Running || self.end.is_some() {
            return Some(format!("Container {id} is not running"));
        }
        if self.recorder.state.paused == pause {
            return Some(if pause {
                format!("Container {id} is already paused")
            } else {
                format!("Container {id} is not paused")
            });
        }
        let done = if pause {
            self.sandbox.suspend(PAUSE_TIMEOUT)
        } else {
            self.sandbox.resume(PAUSE_TIMEOUT)
        };
        match done {
            Ok(()) => {
                self.recorder.paused(pause);
                None
            }
            Err(e) => Some(format!("Cannot pause container {id}: {e}")),
        }
    }

    /// Starts the health check's thread, if the container has one.
    fn start_health(&mut self) {
        let Some(check) = self.cfg.health.clone() else {
            return;
        };
        let events = self.recorder.events.clone();
        match crate::health::Checker::start(
            check,
            self.cfg,
            self.paths,
            self.sandbox.vsock(),
            events,
        ) {
            Ok(c) => self.health = Some(c),
            Err(e) => eprintln!("husk monitor: starting the health check: {e}"),
        }
    }

    /// Resumes a paused VM before it is stopped (its teardown needs it).
    fn resume_to_end(&mut self) {
        if self.recorder.state.paused {
            if let Err(e) = self.sandbox.resume(PAUSE_TIMEOUT) {
                eprintln!("husk monitor: resuming the paused VM: {e}");
            }
            self.recorder.state.paused = false;
        }
    }

    /// Input for the process: sent when it runs, kept until then.
    fn input(&mut self, msg: Message) {
        if !self.cfg.process.stdin || self.end.is_some() {
            return;
        }
        if self.phase == Phase::Running {
            return self.send_agent(&msg);
        }
        let len = match &msg {
            Message::Stdin(b) => b.len(),
            _ => 0,
        };
        if self.pending_bytes + len <= MAX_PENDING {
            self.pending_bytes += len;
            self.pending.push(msg);
        }
    }

    fn read_local_stdin(&mut self) {
        let Some(f) = &mut self.local.stdin else {
            return;
        };
        let mut buf = vec![0u8; MAX_CHUNK];
        match f.read(&mut buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Ok(0) | Err(_) => {
                self.local.stdin = None;
                self.input(Message::StdinEof);
            }
            Ok(n) => {
                buf.truncate(n);
                self.input(Message::Stdin(buf));
            }
        }
    }
}
