//! start, kill, stop and wait: launching the monitor and talking to it or
//! to the agent.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use serde::{Deserialize, Serialize};

use crate::config::Signal;
use crate::exec::connect_agent;
use crate::id::ContainerId;
use crate::layout::{self, ContainerPaths};
use crate::monitor::ready;
use crate::state::{self, State, Status};
use crate::{io_err, Error, Runtime};

/// How the container's stdio is wired when it starts.
#[derive(Debug)]
pub enum StdioWiring {
    /// Output goes to the log only; clients may attach any time.
    Detached,
    /// Like `Detached`, but the process starts only once a first client
    /// has attached (so it sees all output): `start` returns when the
    /// attach socket is ready, and the caller attaches.
    Attach,
    /// FIFOs (or files) the monitor opens: stdin is read, stdout and
    /// stderr are written, besides the log. The writers of stdin and
    /// readers of stdout/stderr must already be open.
    Fifos {
        /// Read for the process's stdin.
        stdin: Option<PathBuf>,
        /// Written with its stdout.
        stdout: Option<PathBuf>,
        /// Written with its stderr.
        stderr: Option<PathBuf>,
    },
    /// Open descriptors handed to the monitor (as its fds 3, 4, 5).
    Fds {
        /// Read for the process's stdin.
        stdin: Option<OwnedFd>,
        /// Written with its stdout.
        stdout: Option<OwnedFd>,
        /// Written with its stderr.
        stderr: Option<OwnedFd>,
    },
}

/// What the monitor is told about stdio (serialised on its command line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StdioMode {
    /// See [`StdioWiring::Detached`].
    Detached,
    /// See [`StdioWiring::Attach`].
    Attach,
    /// See [`StdioWiring::Fifos`].
    Fifos {
        /// stdin path.
        stdin: Option<PathBuf>,
        /// stdout path.
        stdout: Option<PathBuf>,
        /// stderr path.
        stderr: Option<PathBuf>,
    },
    /// See [`StdioWiring::Fds`]: which of fds 3 (stdin), 4 (stdout), 5
    /// (stderr) are set.
    Fds {
        /// fd 3 is stdin.
        stdin: bool,
        /// fd 4 is stdout.
        stdout: bool,
        /// fd 5 is stderr.
        stderr: bool,
    },
}

/// What the monitor is told at launch (the JSON last argument of its
/// command line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// Its stdio.
    pub stdio: StdioMode,
    /// Hold the init process once the container exists in the guest,
    /// until a client attaches (see [`Runtime::start_held`]).
    #[serde(default)]
    pub hold: bool,
}

/// How monitors are started: `program args... <root> <id> <launch-json>`
/// (a [`Launch`]).
#[derive(Clone, Debug)]
pub struct MonitorCommand {
    /// The executable.
    pub program: PathBuf,
    /// Arguments before the root, ID and stdio mode.
    pub args: Vec<String>,
}

impl MonitorCommand {
    /// The calling executable with the hidden `container-monitor`
    /// subcommand (the `husk` binary's).
    pub fn current_exe() -> MonitorCommand {
        MonitorCommand {
            program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
            args: vec!["container-monitor".into()],
        }
    }
}

/// Extra time `start` allows beyond the boot timeout.
const START_MARGIN: Duration = Duration::from_secs(60);
/// How long an exiting monitor may take to let go of the container.
pub(crate) const OLD_MONITOR_WAIT: Duration =
    Duration::from_secs(crate::monitor::TEARDOWN_TIMEOUT.as_secs() + 30);
/// How long after SIGKILL the init process may take to be reported.
const KILL_GRACE: Duration = Duration::from_secs(15);
/// Poll interval of the waiting loops.
const POLL: Duration = Duration::from_millis(50);

impl Runtime {
    /// Starts a created or exited container: launches its monitor, which
    /// boots the VM. Returns when the process has started (or, for
    /// [`StdioWiring::Attach`], when a client can attach).
    pub fn start(&self, name: &str, stdio: StdioWiring) -> Result<(), Error> {
        self.launch(name, stdio, false)
    }

    /// Like [`Runtime::start`], but the init process is held: the monitor
    /// boots the VM and creates the container in the guest, and the
    /// process starts only when [`Runtime::release`] is called (an OCI
    /// runtime's `create` and `start`), however long that takes. Returns
    /// once the container exists in the guest; a failure to create it
    /// there is the error. The monitor process (the state's `monitor`)
    /// lives exactly as long as the container and exits with its exit
    /// code.
    pub fn start_held(&self, name: &str, stdio: StdioWiring) -> Result<(), Error> {
        self.launch(name, stdio, true)
    }

    /// Lets the held process of a container started with
    /// [`Runtime::start_held`] start (the monitor's hold ends with the
    /// first attach client). Returns once it runs, or once the container
    /// ended: with its error if the process could not start.
    pub fn release(&self, name: &str) -> Result<(), Error> {
        let c = self.container(name)?;
        drop(self.attach(c.id.as_str(), None)?);
        let timeout = Duration::from_secs(c.config.boot_timeout) + START_MARGIN;
        let mut state = State::load(&c.paths)?;
        let started = wait_until(timeout, || {
            match State::load(&c.paths) {
                Ok(s) => state = s,
                Err(_) => return true,
            }
            state.status != Status::Running || state.pid.is_some()
        });
        if started.is_err() {
            return Err(Error::Timeout("waiting for the process to start".into()));
        }
        match state.status {
            Status::Running => Ok(()),
            _ => exited_at_start(&c.paths),
        }
    }

    fn launch(&self, name: &str, stdio: StdioWiring, hold: bool) -> Result<(), Error> {
        let c = self.container(name)?;
        let busy = layout::lock(&c.paths.lock())?;
        let state = State::load(&c.paths)?;
        if !state.status.can_start() {
            return Err(Error::AlreadyRunning(c.id.short().to_string()));
        }
        wait_until(OLD_MONITOR_WAIT, || !state::monitor_alive(&c.paths))
            .map_err(|_| Error::Timeout("waiting for the previous run's monitor to exit".into()))?;
        let (stdio, fds) = split_stdio(stdio)?;
        let _ = std::fs::remove_file(c.paths.user_stop());
        let launch = Launch { stdio, hold };
        let mut child = self.spawn_monitor(&c.id, &c.paths, &launch, &fds)?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| Error::Monitor("no pipe".into()))?;
        let deadline = Instant::now() + Duration::from_secs(c.config.boot_timeout) + START_MARGIN;
        let mut lines = BufReader::new(out);
        let mut busy = Some(busy);
        let result = loop {
            let line = match read_line(&mut lines, deadline) {
                Ok(Some(l)) => l,
                Ok(None) => {
                    break Err(Error::Monitor(format!(
                        "the monitor died during startup (see {})",
                        c.paths.monitor_log().display()
                    )))
                }
                Err(e) => break Err(e),
            };
            match line.as_str() {
                ready::REGISTERED => drop(busy.take()),
                ready::READY => break Ok(()),
                ready::EXITED => break exited_at_start(&c.paths),
                other => {
                    let msg = other.strip_prefix(ready::ERROR).unwrap_or(other);
                    break Err(Error::Monitor(msg.to_string()));
                }
            }
        };
        // The intermediate process exits at once after forking the monitor.
        let _ = child.wait();
        result
    }

    fn spawn_monitor(
        &self,
        id: &ContainerId,
        paths: &ContainerPaths,
        launch: &Launch,
        fds: &[Option<OwnedFd>; 3],
    ) -> Result<std::process::Child, Error> {
        let log = vmm::logging::open_log(&paths.monitor_log(), true)
            .map_err(io_err("opening the monitor log"))?;
        let launch_json =
            serde_json::to_string(launch).map_err(|e| Error::Monitor(e.to_string()))?;
        let mut cmd = Command::new(&self.monitor.program);
        cmd.args(&self.monitor.args)
            .arg(self.layout.root())
            .arg(id.as_str())
            .arg(launch_json)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let raw: Vec<RawFd> = fds
            .iter()
            .map(|f| f.as_ref().map_or(-1, |f| f.as_raw_fd()))
            .collect();
        if raw.iter().any(|&f| f >= 0) {
            // SAFETY: the closure runs in the forked child before exec and
            // only calls dup2(2), which is async-signal-safe. The sources
            // are above 9 (see `split_stdio`), so no target clobbers one.
            unsafe {
                cmd.pre_exec(move || {
                    for (i, &fd) in raw.iter().enumerate() {
                        if fd >= 0 && libc::dup2(fd, 3 + i as i32) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        cmd.spawn().map_err(io_err(format!(
            "starting the monitor {}",
            self.monitor.program.display()
        )))
    }

    /// Sends `signal` to the container's init process (through the agent;
    /// if the agent cannot be reached, e.g. while the VM boots, the monitor
    /// is told to stop the VM).
    pub fn kill(&self, name: &str, signal: Signal) -> Result<(), Error> {
        let c = self.container(name)?;
        if !c.state.status.can_kill() {
            return Err(Error::NotRunning(c.id.short().to_string()));
        }
        self.unpause_for_kill(&c)?;
        mark_user_stop(&c.paths);
        self.container_event(
            &c.config,
            "kill",
            &[("signal", signal.as_raw().to_string())],
        );
        if kill_init(&c.paths, c.id.short(), signal).is_err() {
            self.kill_monitor(&c.paths, Signal::TERM, Duration::from_secs(20))?;
        }
        Ok(())
    }

    /// Stops the container: its stop signal, then after `timeout` SIGKILL,
    /// then (if the guest does not comply) the VM is stopped from outside.
    /// Returns once the VM is gone.
    pub fn stop(&self, name: &str, timeout: Option<Duration>) -> Result<(), Error> {
        let c = self.container(name)?;
        let timeout = timeout.unwrap_or(Duration::from_secs(c.config.stop_timeout));
        let exited = || {
            State::load(&c.paths)
                .map(|s| !s.status.can_kill())
                .unwrap_or(true)
        };
        mark_user_stop(&c.paths);
        if !exited() {
            self.unpause_for_kill(&c)?;
            let signal = c.config.stop_signal.as_raw().to_string();
            self.container_event(&c.config, "kill", &[("signal", signal)]);
            let sent = kill_init(&c.paths, c.id.short(), c.config.stop_signal).is_ok();
            if !sent || wait_until(timeout, exited).is_err() {
                let killed = kill_init(&c.paths, c.id.short(), Signal::KILL).is_ok();
                if !killed || wait_until(KILL_GRACE, exited).is_err() {
                    self.kill_monitor(&c.paths, Signal::TERM, Duration::from_secs(20))?;
                }
            }
        }
        if wait_until(OLD_MONITOR_WAIT, || !state::monitor_alive(&c.paths)).is_err() {
            self.kill_monitor(&c.paths, Signal::KILL, Duration::from_secs(10))?;
        }
        self.container_event(&c.config, "stop", &[]);
        Ok(())
    }

    /// Waits until the container is not running and returns its exit code
    /// (`None` for a container never started). `timeout` bounds the wait.
    pub fn wait(&self, name: &str, timeout: Option<Duration>) -> Result<Option<i32>, Error> {
        let c = self.container(name)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let s = match State::load(&c.paths) {
                Ok(s) => s,
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::NoSuchContainer(name.to_string()))
                }
                Err(e) => return Err(e),
            };
            if s.status.can_wait() {
                return Ok(s.exit_code);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout(format!(
                    "waiting for container {}",
                    c.id.short()
                )));
            }
            std::thread::sleep(POLL * 2);
        }
    }

    /// Signals the container's monitor (`signal`, then SIGKILL if it is
    /// still there after `timeout`) and waits until it is gone.
    pub(crate) fn kill_monitor(
        &self,
        paths: &ContainerPaths,
        signal: Signal,
        timeout: Duration,
    ) -> Result<(), Error> {
        let mut sig = signal;
        let mut deadline = Instant::now() + timeout;
        while state::monitor_alive(paths) {
            if let Some(m) = State::read(paths).ok().and_then(|s| s.monitor) {
                m.signal(sig);
            }
            if Instant::now() >= deadline {
                if sig == Signal::KILL {
                    return Err(Error::Timeout(
                        "waiting for the container monitor to die".into(),
                    ));
                }
                sig = Signal::KILL;
                deadline = Instant::now() + Duration::from_secs(10);
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }
}

/// Asks the agent to signal the init process.
fn kill_init(paths: &ContainerPaths, short_id: &str, signal: Signal) -> Result<(), Error> {
    let mut conn = connect_agent(paths, short_id)?;
    let deadline = Instant::now() + crate::exec::CONNECT_TIMEOUT;
    conn.kill_init(signal.as_raw(), deadline)
        .map_err(|e| Error::Agent(crate::error_chain(&e)))
}

/// Marks the container stopped by the user (its restart policy stops).
fn mark_user_stop(paths: &ContainerPaths) {
    if let Err(e) = std::fs::write(paths.user_stop(), b"") {
        log::warn!("marking {} stopped: {e}", paths.dir.display());
    }
}

/// The error for a container whose process ended during `start`, or
/// nothing when it simply ran to completion.
fn exited_at_start(paths: &ContainerPaths) -> Result<(), Error> {
    let s = State::read(paths)?;
    match s.error {
        Some(detail) if !detail.is_empty() => Err(Error::Exec {
            code: s.exit_code.unwrap_or(125),
            detail,
        }),
        _ => Ok(()),
    }
}

/// Reads one line from the monitor, bounded by `deadline`.
fn read_line(
    r: &mut BufReader<std::process::ChildStdout>,
    deadline: Instant,
) -> Result<Option<String>, Error> {
    if r.buffer().is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut p = [PollFd::new(r.get_ref(), PollFlags::IN)];
        // Too far to represent: no timeout.
        let timeout = Timespec::try_from(left).ok();
        match poll(&mut p, timeout.as_ref()) {
            Ok(0) => return Err(Error::Timeout("waiting for the container to start".into())),
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(io_err("waiting for the monitor")(e.into())),
        }
    }
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(line.trim_end().to_string())),
        Err(e) => Err(io_err("reading from the monitor")(e)),
    }
}

/// Polls `done` until it holds or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(());
        }
        std::thread::sleep(POLL);
    }
}

/// The mode for the monitor and the fds it inherits (duplicated above 9,
/// close-on-exec, so `pre_exec` can place them at 3, 4, 5 safely).
fn split_stdio(stdio: StdioWiring) -> Result<(StdioMode, [Option<OwnedFd>; 3]), Error> {
    Ok(match stdio {
        StdioWiring::Detached => (StdioMode::Detached, [None, None, None]),
        StdioWiring::Attach => (StdioMode::Attach, [None, None, None]),
        StdioWiring::Fifos {
            stdin,
            stdout,
            stderr,
        } => (
            StdioMode::Fifos {
                stdin,
                stdout,
                stderr,
            },
            [None, None, None],
        ),
        StdioWiring::Fds {
            stdin,
            stdout,
            stderr,
        } => {
            let mode = StdioMode::Fds {
                stdin: stdin.is_some(),
                stdout: stdout.is_some(),
                stderr: stderr.is_some(),
            };
            let high = |f: Option<OwnedFd>| -> Result<Option<OwnedFd>, Error> {
                let Some(f) = f else { return Ok(None) };
                let high = rustix::io::fcntl_dupfd_cloexec(f.as_fd(), 10)
                    .map_err(|e| io_err("duplicating a stdio descriptor")(e.into()))?;
                Ok(Some(high))
            };
            (mode, [high(stdin)?, high(stdout)?, high(stderr)?])
        }
    })
}
