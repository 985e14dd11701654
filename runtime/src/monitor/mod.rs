//! The per-container monitor: a daemon (detached from whoever started it)
//! that owns the container's VM for one run.
//!
//! It is the `husk` binary (or a shim) re-executed with a hidden
//! subcommand that calls [`main`]. It forks once more so that nobody has
//! to reap it, starts a new session, takes `monitor.lock` for its whole
//! life (that lock is how everyone else knows it is alive), claims the
//! volumes' disks, records the `running` state, boots the VM (the VMM
//! runs in a jailed child process that stops the VM when the monitor
//! dies: see `husk_sandbox::jail`), creates the
//! container through the agent, starts the init process, writes the logs,
//! relays stdio to attach clients, and records the exit. With `--rm` it
//! removes the container itself.
//!
//! The VM is booted and the agent spoken to through the sandbox layer
//! ([`husk_sandbox`]); the monitor adds the container's side: state, logs,
//! attach clients, local stdio.
//!
//! It reports progress to the starter on its stdout, one line each (see
//! `ready` below): `registered`, then `ready` or `exited`, or
//! `error <message>` if it fails before the container runs.
//!
//! Its exit status is the container's exit code (128+N after signal N;
//! 125 when it failed before the container ran), so a parent that reaps
//! it — an OCI runtime's caller such as conmon or containerd's runc shim,
//! which are subreapers — learns the container's exit from it. Launched
//! with `hold` (see [`crate::Runtime::start_held`]) it reports `ready`
//! once the container exists in the guest and starts the init process
//! when a first client attaches.

pub mod boot;
mod clients;
mod session;

/// The monitor's launch progress protocol: lines it writes to the starter
/// (`Runtime::start`) on its stdout.
pub(crate) mod ready {
    /// The monitor recorded itself in the state.
    pub const REGISTERED: &str = "registered";
    /// Attach socket listening (Attach), container created in the guest
    /// (held), or process started (others).
    pub const READY: &str = "ready";
    /// The container already ended; see its state.
    pub const EXITED: &str = "exited";
    /// Prefix of a failure line.
    pub const ERROR: &str = "error ";
}

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use husk_sandbox::{Sandbox, Signals};

use crate::config::ContainerConfig;
use crate::id::ContainerId;
use crate::layout::{self, ContainerPaths, ShortPath};
pub use crate::lifecycle::{Launch, StdioMode};
use crate::state::{MonitorProcess, State, Status};
use crate::{error_chain, io_err, Error, Runtime};
pub(crate) use session::TEARDOWN_TIMEOUT;
use session::{End, Gate, LocalStdio, Session};

/// Whether the progress pipe (stdout) has been closed.
static READY_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes a progress line to the starter.
fn report(line: &str) {
    if !READY_CLOSED.load(Ordering::SeqCst) {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }
}

/// Sends the last progress line and points stdout at /dev/null, so the
/// starter sees EOF and nothing else is ever written there.
fn report_last(line: &str) {
    report(line);
    if !READY_CLOSED.swap(true, Ordering::SeqCst) {
        if let Ok(null) = File::options().write(true).open("/dev/null") {
            use std::os::fd::AsRawFd;
            // SAFETY: dup2 onto fd 1, which we own as our stdout.
            unsafe { libc::dup2(null.as_raw_fd(), 1) };
        }
    }
}

/// Exit status of a monitor that failed before the container ran.
pub const FAILED_EXIT: i32 = 125;

/// The monitor's entry point: `root`, full container `id`, and the JSON
/// [`Launch`]. Returns the process exit code: 0 in the process that
/// forks, the container's exit code (see the module's description) in
/// the monitor. Call it before starting any thread (it forks).
pub fn main(root: &Path, id: &str, launch: &str) -> i32 {
    // SAFETY: fork(2) in a process that has not started threads (the
    // caller's contract); the child only continues normal execution.
    match unsafe { libc::fork() } {
        -1 => {
            report_last(&format!(
                "{}cannot fork: {}",
                ready::ERROR,
                std::io::Error::last_os_error()
            ));
            return 1;
        }
        0 => {}
        _ => return 0,
    }
    // SAFETY: setsid(2) has no memory effects.
    unsafe { libc::setsid() };
    init_logging();
    match run(root, id, launch) {
        // An exit status is 8 bits; codes are 0..=255 anyway.
        Ok(code) => code & 0xff,
        Err(e) => {
            let msg = error_chain(&e);
            eprintln!("{} husk monitor {id}: {msg}", crate::time::now());
            report_last(&format!("{}{msg}", ready::ERROR));
            FAILED_EXIT
        }
    }
}

/// Sends warnings and errors of the VMM (and everything with
/// `HUSK_DEBUG` set) to stderr, i.e. `monitor.log`.
fn init_logging() {
    vmm::logging::log_to_stderr(crate::time::now, cap_monitor_log);
}

/// The most bytes `monitor.log` holds before it becomes `monitor.log.1`
/// (so at most twice this is on disk).
const MONITOR_LOG_MAX_BYTES: u64 = 1 << 20;

/// `monitor.log`, once known (see [`cap_monitor_log`]).
static MONITOR_LOG: OnceLock<PathBuf> = OnceLock::new();

/// Rotates `monitor.log`, this process's stderr, once it holds
/// [`MONITOR_LOG_MAX_BYTES`]. Runs before each message of the logger,
/// which writes everything a guest can trigger (rate-limited, see
/// [`vmm::log_limited`]). False if the message must be dropped: the log is
/// full and this is a VMM thread, whose seccomp filter forbids the open
/// and rename of a rotation (the monitor's own thread rotates it, also at
/// each round of its poll loop).
fn cap_monitor_log() -> bool {
    static ROTATING: Mutex<()> = Mutex::new(());
    let Some(path) = MONITOR_LOG.get() else {
        return true;
    };
    let stderr = std::io::stderr();
    if vmm::seccomp::current_thread_filtered() {
        return rustix::fs::fstat(stderr.as_fd())
            .is_ok_and(|st| u64::try_from(st.st_size).unwrap_or(0) < MONITOR_LOG_MAX_BYTES);
    }
    let _one = ROTATING.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(Some(file)) = rotate_full(path, stderr.as_fd(), MONITOR_LOG_MAX_BYTES) {
        let _ = rustix::stdio::dup2_stderr(&file);
    }
    true
}

/// If `current` is the file at `path` and holds `max` bytes or more: moves
/// it to `NAME.1` and returns a new file at `path` (to write instead).
fn rotate_full(path: &Path, current: BorrowedFd<'_>, max: u64) -> std::io::Result<Option<File>> {
    let st = rustix::fs::fstat(current)?;
    if u64::try_from(st.st_size).unwrap_or(0) < max {
        return Ok(None);
    }
    // Only that file (stderr may be a terminal someone debugs with).
    let m = std::fs::metadata(path)?;
    if (m.dev(), m.ino()) != (st.st_dev, st.st_ino) {
        return Ok(None);
    }
    vmm::logging::rotate(path, 2)?;
    let file = vmm::logging::open_log(path, true)?;
    Ok(Some(file))
}

/// Records the container's progress in its state and tells the starter.
pub(crate) struct Recorder {
    paths: ContainerPaths,
    state: State,
    // Day-2 operations (issue #14): events.
    events: crate::events::EventLog,
    config: ContainerConfig,
}

impl Recorder {
    fn write(&self) {
        if let Err(e) = self.state.write(&self.paths) {
            eprintln!("husk monitor: recording the state: {e}");
        }
    }

    /// Records container event `action`.
    pub(crate) fn event(&self, action: &str, extra: &[(&str, String)]) {
        self.events.record(&crate::events::Event::container(
            &self.config,
            action,
            extra,
        ));
    }

    /// The container exists in the guest and its init process is held.
    pub(crate) fn held(&mut self) {
        report_last(ready::READY);
    }

    /// The init process runs as guest pid `pid`. (The starter was told
    /// `ready` already unless it waits for this.)
    pub(crate) fn started(&mut self, pid: u32) {
        self.state.pid = Some(pid);
        self.write();
        report_last(ready::READY);
    }

    /// The guest's OOM killer killed processes of the container.
    pub(crate) fn oom_killed(&mut self) {
        if !self.state.oom_killed {
            self.state.oom_killed = true;
            self.write();
        }
    }

    /// The VM was paused (`true`) or resumed.
    pub(crate) fn paused(&mut self, paused: bool) {
        self.state.paused = paused;
        self.write();
        self.event(if paused { "pause" } else { "unpause" }, &[]);
    }

    /// The container waits for its `count`th restart (the policy's).
    pub(crate) fn restarting(&mut self, count: u32) {
        self.state.status = Status::Running;
        self.state.restarting = true;
        self.state.restart_count = count;
        self.write();
    }

    /// The container is not restarted after all (stopped while waiting).
    pub(crate) fn stays_down(&mut self) {
        self.state.status = Status::Exited;
        self.state.restarting = false;
        self.write();
    }

    /// The container is restarted: running again.
    pub(crate) fn restarted(&mut self) {
        self.state.status = Status::Running;
        self.state.restarting = false;
        self.state.pid = None;
        self.state.error = None;
        self.state.oom_killed = false;
        self.state.started_at = Some(crate::time::now());
        self.state.start_count += 1;
        self.write();
        self.event("restart", &[]);
        self.event("start", &[]);
    }

    /// The container ended.
    pub(crate) fn ended(&mut self, end: &End) {
        self.state.paused = false;
        self.state.status = Status::Exited;
        self.state.pid = None;
        self.state.exit_code = Some(end.code);
        self.state.error = end.error.as_ref().map(|(_, d)| d.clone());
        self.state.finished_at = Some(crate::time::now());
        self.write();
        self.event("die", &[("exitCode", end.code.to_string())]);
        report_last(ready::EXITED);
    }
}

/// How long a monitor whose VM failed before anyone attached waits for
/// its starter (`husk run` in the foreground, `start -a`) to attach and
/// hear why.
const LATE_ATTACH_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs the container to its end; its exit code.
fn run(root: &Path, id: &str, launch: &str) -> Result<i32, Error> {
    let rt = Runtime::open(root)?;
    let id = ContainerId::parse(id).ok_or_else(|| Error::NoSuchContainer(id.to_string()))?;
    let paths = rt.layout().container(id.as_str());
    let _ = MONITOR_LOG.set(paths.monitor_log());
    let cfg: ContainerConfig = layout::read_json(&paths.config())?;
    let Launch { stdio: mode, hold } = serde_json::from_str(launch)
        .map_err(|e| Error::Monitor(format!("bad launch mode: {e}")))?;
    let Some(_alive) = layout::try_lock(&paths.monitor_lock())? else {
        return Err(Error::AlreadyRunning(id.short().to_string()));
    };
    let vols = rt.volumes();
    let mut claims = Vec::new();
    let mut volume_disks = Vec::new();
    for m in &cfg.mounts {
        claims.push(vols.claim(&m.name)?);
        volume_disks.push(vols.get(&m.name)?.disk);
    }
    // Before anything is recorded: a host port in use leaves the
    // container as it was (created, or exited). Dropping it stops passt.
    let mut network = husk_net::Network::start(crate::ports::network_options(&cfg)?)?;
    let local = open_local(&mode)?;
    // SIGWINCH: a local terminal (see `LocalStdio::tty`) was resized.
    let signals =
        Signals::install_for(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGWINCH])
            .map_err(io_err("installing signal handlers"))?;
    let attach = ShortPath::new(&paths.dir, ContainerPaths::ATTACH)?;
    let attach_listener = bind(attach.path())?;
    let vsock = ShortPath::new(&paths.dir, ContainerPaths::VSOCK)?;
    let clients =
        clients::Clients::new(attach_listener).map_err(io_err("configuring the attach socket"))?;

    let previous = State::read(&paths).unwrap_or_else(|_| State::created());
    let state = State {
        status: Status::Running,
        pid: None,
        monitor: MonitorProcess::current(),
        exit_code: None,
        error: None,
        started_at: Some(crate::time::now()),
        finished_at: None,
        start_count: previous.start_count + 1,
        ports: network.ports().to_vec(),
        template: None,
        oom_killed: false,
        jail: None,
        paused: false,
        restart_count: 0,
        restarting: false,
    };
    state.write(&paths)?;
    let gate = match (hold, &mode) {
        (true, _) => Gate::Held,
        (false, StdioMode::Attach) => Gate::Attach,
        (false, _) => Gate::Open,
    };
    let mut recorder = Recorder {
        paths: paths.clone(),
        state,
        events: rt.events(),
        config: cfg.clone(),
    };
    recorder.event("start", &[]);
    let mut config = boot::sandbox_config(
        &cfg,
        &paths,
        &volume_disks,
        vsock.path(),
        network.net_config(),
    );
    // A first warm start builds its template (a cold boot) here, before
    // the starter is told to attach: clients are served once the VM runs.
    // If that fails, the VM boots cold (whose failure, if it fails too,
    // is the one reported).
    if let Err(e) = Sandbox::prepare(&config, Some(&signals)) {
        eprintln!(
            "husk: warning: warm start failed, booting cold: {}",
            error_chain(&e)
        );
        config.start = husk_sandbox::StartMode::Cold;
    }
    report(ready::REGISTERED);
    if gate == Gate::Attach {
        report_last(ready::READY);
    }

    let guest_net = boot::GuestNet::of(&network, &cfg.hostname);
    let run = Run {
        cfg: &cfg,
        paths: &paths,
        signals: &signals,
        config: &config,
        guest_net: &guest_net,
    };
    let (end, mut clients) = run.with_policy(clients, local, gate, &mut recorder);
    let _ = std::fs::remove_file(attach.path());
    // The VM is gone: its volumes and ports are free for others.
    network.stop();
    drop(claims);
    if cfg.auto_remove {
        if let Err(e) = rt.remove_files(&id, &cfg, true) {
            eprintln!("husk monitor: removing the container: {}", error_chain(&e));
        }
    }
    clients.finish(end.notice());
    if gate == Gate::Attach {
        clients.serve_late(std::time::Instant::now() + LATE_ATTACH_WAIT);
    }
    Ok(end.code)
}

/// What every run of the container's VM shares.
struct Run<'a> {
    cfg: &'a ContainerConfig,
    paths: &'a ContainerPaths,
    signals: &'a Signals,
    config: &'a husk_sandbox::SandboxConfig,
    guest_net: &'a boot::GuestNet,
}

impl Run<'_> {
    /// Runs the container, and again as its restart policy says: the same
    /// VM configuration boots again (warm, from the template, unless that
    /// failed), on the same writable disk, after the policy's back-off.
    fn with_policy(
        &self,
        mut clients: clients::Clients,
        local: LocalStdio,
        mut gate: Gate,
        recorder: &mut Recorder,
    ) -> (End, clients::Clients) {
        let mut restarts = crate::restart::Restarts::new(self.cfg.restart_policy);
        let mut local = Some(local);
        loop {
            let began = std::time::Instant::now();
            let local = local.take().unwrap_or_default();
            let (end, back) = self.once(clients, local, gate, recorder);
            clients = back;
            let stopped = self.paths.user_stop().exists();
            let Some(delay) = restarts.next(end.code, began.elapsed(), stopped) else {
                return (end, clients);
            };
            recorder.restarting(restarts.count);
            if !back_off(self.signals, delay) || self.paths.user_stop().exists() {
                recorder.stays_down();
                return (end, clients);
            }
            clients.restart();
            gate = Gate::Open;
            recorder.restarted();
        }
    }

    /// Boots the VM and runs the container to its end.
    fn once(
        &self,
        clients: clients::Clients,
        local: LocalStdio,
        gate: Gate,
        recorder: &mut Recorder,
    ) -> (End, clients::Clients) {
        match Sandbox::start(self.config, Some(self.signals)) {
            Ok(mut sandbox) => {
                recorder.state.template = sandbox.template().map(String::from);
                recorder.state.jail = sandbox.jail().cloned();
                let mut session = Session::new(
                    self.cfg,
                    self.paths,
                    self.signals,
                    &mut sandbox,
                    clients,
                    local,
                    gate,
                    recorder,
                );
                session.guest_net = self.guest_net.clone();
                session.run()
            }
            Err(e) => {
                let end = End {
                    code: 125,
                    error: Some((husk_protocol::ErrorCode::Internal, error_chain(&e))),
                };
                recorder.ended(&end);
                (end, clients)
            }
        }
    }
}

/// Waits `delay` before a restart; false if told to stop meanwhile
/// (SIGTERM, SIGINT: `husk stop`'s last resort).
fn back_off(signals: &Signals, delay: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + delay;
    loop {
        match husk_sandbox::wait::poll_readable(&[signals.as_fd()], Some(deadline)) {
            Ok(ready) if ready.is_empty() => return true,
            Ok(_) => {
                if signals
                    .take()
                    .iter()
                    .any(|s| matches!(*s, libc::SIGTERM | libc::SIGINT))
                {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}

/// Binds a Unix socket at `path`, replacing a stale socket file.
fn bind(path: &Path) -> Result<UnixListener, Error> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).map_err(io_err(format!("listening on {}", path.display())))
}

/// Opens the FIFOs, or adopts the inherited fds 3, 4, 5.
fn open_local(mode: &StdioMode) -> Result<LocalStdio, Error> {
    let mut local = LocalStdio::default();
    match mode {
        StdioMode::Detached | StdioMode::Attach => {}
        StdioMode::Fifos {
            stdin,
            stdout,
            stderr,
        } => {
            let open = |p: &Path, write: bool| {
                OpenOptions::new()
                    .read(!write)
                    .write(write)
                    .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(p)
                    .map_err(io_err(format!("opening {}", p.display())))
            };
            local.stdin = stdin.as_deref().map(|p| open(p, false)).transpose()?;
            local.stdout = stdout.as_deref().map(|p| open(p, true)).transpose()?;
            local.stderr = stderr.as_deref().map(|p| open(p, true)).transpose()?;
        }
        StdioMode::Fds {
            stdin,
            stdout,
            stderr,
        } => {
            // SAFETY: the starter placed these descriptors at 3, 4 and 5
            // for us (see `Runtime::start`); nothing else owns them.
            let adopt = |set: bool, fd: i32| set.then(|| unsafe { File::from_raw_fd(fd) });
            local.stdin = adopt(*stdin, 3);
            local.stdout = adopt(*stdout, 4);
            local.stderr = adopt(*stderr, 5);
            // Output is written without blocking (see session::OUTPUT_STALL).
            for f in [&local.stdout, &local.stderr].into_iter().flatten() {
                let flags = rustix::fs::fcntl_getfl(f)
                    .map_err(|e| io_err("reading the output's flags")(e.into()))?;
                rustix::fs::fcntl_setfl(f, flags | rustix::fs::OFlags::NONBLOCK)
                    .map_err(|e| io_err("making the output non-blocking")(e.into()))?;
            }
        }
    }
    // A terminal (an OCI runtime's console): its size is the process's,
    // and as the controlling terminal of this session (the monitor leads
    // one) it sends SIGWINCH when resized.
    let tty = local.stdout.as_ref().or(local.stdin.as_ref());
    if let Some(t) = tty.filter(|t| rustix::termios::isatty(t)) {
        if let Err(e) = rustix::process::ioctl_tiocsctty(t) {
            eprintln!("husk monitor: the terminal's resizes will not be seen: {e}");
        }
        local.tty = true;
    }
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_monitor_log_is_rotated_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("monitor.log");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        log.write_all(b"0123456789").unwrap();
        assert!(rotate_full(&path, log.as_fd(), 11).unwrap().is_none());
        // Not the file at the path (stderr elsewhere): left alone.
        let mut other = tempfile::tempfile().unwrap();
        other.write_all(b"0123456789").unwrap();
        assert!(rotate_full(&path, other.as_fd(), 10).unwrap().is_none());
        let mut new = rotate_full(&path, log.as_fd(), 10).unwrap().unwrap();
        new.write_all(b"next").unwrap();
        let old = vmm::logging::rotated(&path, 1);
        assert_eq!(std::fs::read_to_string(old).unwrap(), "0123456789");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "next");
    }
}
