//! A container's life after `CreateContainer`: the init process on the boot
//! connection, exec sessions on connections to the exec listener, all in
//! one poll(2) loop; then the teardown when init exits.
//!
//! Isolation: the init process unshares the mount namespace and
//! `pivot_root`s into the container's root (so processes never see the
//! agent's own mounts); the agent then keeps `/proc/<init>/ns/mnt` open and
//! exec'd processes `setns` into it. The container ends with its init
//! process, so no helper process is needed to keep the namespace alive;
//! exec requests that arrive before init started are refused with
//! `NoContainer`.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::SocketFlags;
use rustix::process::{wait, waitpid, Pid, WaitOptions};

use husk_protocol::{
    write_message, ErrorCode, ExecRequest, FrameDecoder, Message, PROTOCOL_VERSION,
};

use crate::boot::{variant, ConnError, Outcome};
use crate::proc::{self, read_messages, Pipe, Proc};
use crate::spawn::{self, Entry};
use crate::system::System;
use crate::{archive, log, ops, quirks, spec, users};

/// Most exec sessions served at once.
pub const MAX_EXEC_CONNS: usize = 64;
/// How long the teardown waits for killed processes.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The assembled container, as the agent sees it.
#[derive(Debug, Clone)]
pub struct ContainerRoot {
    /// The root filesystem's path in the agent's mount namespace (where the
    /// agent reads /etc/passwd and /etc/group).
    pub root: PathBuf,
    /// The devpts multiplexer of the container's /dev/pts.
    pub ptmx: PathBuf,
    /// Whether processes enter the root in their own mount namespace
    /// (false only in unit tests, which cannot pivot_root).
    pub isolated: bool,
    /// The overlayfs upper directory of an image root on a writable disk:
    /// what `ExportLayer` turns into a layer (`None` for other roots).
    pub upper: Option<PathBuf>,
}

/// Where an exec session is in its protocol.
enum Phase {
    Hello,
    Request,
    Running(Proc),
    Closed,
}

/// A connection to the exec listener.
struct ExecConn<C> {
    conn: C,
    decoder: FrameDecoder,
    phase: Phase,
}

/// What a ready fd belongs to.
#[derive(Clone, Copy)]
enum Slot {
    Boot,
    Listener,
    ExecConn(usize),
    Init(Pipe),
    ExecProc(usize, Pipe),
}

/// The container's poll loop state.
struct Container<'a, S: System> {
    sys: &'a mut S,
    root: ContainerRoot,
    listener: Option<OwnedFd>,
    boot_decoder: FrameDecoder,
    init: Option<Proc>,
    init_ns: Option<OwnedFd>,
    exec_conns: Vec<ExecConn<S::Conn>>,
    abandoned: Vec<libc::pid_t>,
    /// The host's quirk variables, passed on to every process.
    quirk_env: Vec<(String, String)>,
    /// OOM kills counted so far: the kernel's count when the container
    /// started, and the last one reported.
    oom: OomCount,
    /// The host asked for the container's changes as a layer tar once
    /// the init process ended (`ExportLayer`).
    export: bool,
}

/// What the agent knows of the kernel's OOM kills.
#[derive(Debug, Clone, Copy)]
struct OomCount {
    /// The kernel's count when the container started.
    base: u64,
    /// The count last reported (or `base`).
    reported: u64,
    /// A process ended by SIGKILL was reaped since the last look (an OOM
    /// victim dies of SIGKILL).
    killed_seen: bool,
}

/// Serves the container on the boot connection `boot` (handshake and
/// `CreateContainer` done) and on `listener`, until the init process exits
/// (or the host drops `boot`). Every container process is dead on return.
pub fn serve<S: System>(
    boot: &mut S::Conn,
    sys: &mut S,
    root: ContainerRoot,
    listener: OwnedFd,
) -> Result<Outcome, ConnError> {
    let quirk_env = sys.host_quirk_env();
    let base = sys.oom_kills();
    let mut container = Container {
        sys,
        root,
        listener: Some(listener),
        boot_decoder: FrameDecoder::new(),
        init: None,
        init_ns: None,
        exec_conns: Vec::new(),
        abandoned: Vec::new(),
        quirk_env,
        oom: OomCount {
            base,
            reported: base,
            killed_seen: false,
        },
        export: false,
    };
    let result = container.run(boot);
    container.teardown();
    // Every container process is dead: the upper directory is final.
    if let (Ok(Outcome::Finished(_)), true, Some(upper)) =
        (&result, container.export, &container.root.upper)
    {
        crate::export::send_layer(boot, upper)?;
    }
    result
}

impl<S: System> Container<'_, S> {
    fn run(&mut self, boot: &mut S::Conn) -> Result<Outcome, ConnError> {
        loop {
            self.reap();
            let init_ended = self.init.as_ref().is_some_and(|p| p.status.is_some());
            if self.oom.killed_seen || init_ended {
                self.report_oom(boot)?;
            }
            if let Some(init) = self.init.as_mut().filter(|p| p.status.is_some()) {
                init.drain(boot)?;
                let msg = init.exit_message().unwrap_or(Message::Exited { code: 255 });
                write_message(boot, &msg)?;
                return Ok(Outcome::Finished(msg));
            }
            self.finish_exec_conns();
            for slot in self.wait_ready(boot.as_fd())? {
                if let Some(outcome) = self.dispatch(slot, boot)? {
                    return Ok(outcome);
                }
            }
            self.exec_conns
                .retain(|s| !matches!(s.phase, Phase::Closed));
        }
    }

    /// Tells the host of OOM kills since the last report (only while init
    /// runs or right after it ended: the host expects none earlier).
    fn report_oom(&mut self, boot: &mut S::Conn) -> Result<(), ConnError> {
        self.oom.killed_seen = false;
        if self.init.is_none() {
            return Ok(());
        }
        let now = self.sys.oom_kills();
        if now > self.oom.reported {
            self.oom.reported = now;
            let count = now - self.oom.base;
            write_message(boot, &Message::OomKilled { count })?;
        }
        Ok(())
    }

    /// Waits until some fd is ready (or the timeout passes); returns what
    /// the ready fds belong to.
    fn wait_ready(&self, boot: BorrowedFd<'_>) -> Result<Vec<Slot>, ConnError> {
        let (mut fds, slots) = self.poll_set(boot);
        match rustix::event::poll(&mut fds, self.timeout().as_ref()) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(Vec::new()),
            Err(e) => return Err(ConnError::Poll(e.into())),
        }
        let ready = fds
            .iter()
            .zip(slots)
            .filter(|(fd, _)| !fd.revents().is_empty());
        Ok(ready.map(|(_, slot)| slot).collect())
    }

    /// How long to wait at most: forever, unless exits are noticed by
    /// polling (no pidfd, abandoned processes) or orphans need reaping.
    fn timeout(&self) -> Option<Timespec> {
        let procs = self
            .init
            .iter()
            .chain(self.exec_conns.iter().filter_map(|s| match &s.phase {
                Phase::Running(p) => Some(p),
                _ => None,
            }));
        let mut millis = if self.sys.reaps_orphans() {
            Some(1000)
        } else {
            None
        };
        for p in procs {
            if p.needs_polling() {
                millis = Some(100);
            }
        }
        if !self.abandoned.is_empty() {
            millis = Some(100);
        }
        millis.map(|ms| Timespec {
            tv_sec: ms / 1000,
            tv_nsec: (ms % 1000) * 1_000_000,
        })
    }

    fn poll_set<'a>(&'a self, boot: BorrowedFd<'a>) -> (Vec<PollFd<'a>>, Vec<Slot>) {
        let mut fds = Vec::new();
        let mut slots = Vec::new();
        let mut add = |fd: BorrowedFd<'a>, events: PollFlags, slot: Slot| {
            fds.push(PollFd::from_borrowed_fd(fd, events));
            slots.push(slot);
        };
        if self.init.as_ref().is_none_or(Proc::wants_input) {
            add(boot, PollFlags::IN, Slot::Boot);
        }
        if let Some(l) = &self.listener {
            add(l.as_fd(), PollFlags::IN, Slot::Listener);
        }
        let mut pipes = Vec::new();
        if let Some(init) = &self.init {
            init.poll_fds(&mut pipes);
            for (fd, ev, pipe) in pipes.drain(..) {
                add(fd, ev, Slot::Init(pipe));
            }
        }
        for (i, s) in self.exec_conns.iter().enumerate() {
            let running = match &s.phase {
                Phase::Running(p) => Some(p),
                _ => None,
            };
            if running.is_none_or(|p| p.wants_input()) {
                add(s.conn.as_fd(), PollFlags::IN, Slot::ExecConn(i));
            }
            if let Some(p) = running {
                p.poll_fds(&mut pipes);
                for (fd, ev, pipe) in pipes.drain(..) {
                    add(fd, ev, Slot::ExecProc(i, pipe));
                }
            }
        }
        (fds, slots)
    }

    /// Handles one ready fd; `Some` ends the container.
    fn dispatch(&mut self, slot: Slot, boot: &mut S::Conn) -> Result<Option<Outcome>, ConnError> {
        match slot {
            Slot::Boot => return self.boot_input(boot),
            Slot::Listener => self.accept(),
            Slot::ExecConn(i) => self.exec_conn_input(i),
            Slot::Init(pipe) => {
                if let Some(init) = &mut self.init {
                    init.ready(pipe, boot)?;
                }
            }
            Slot::ExecProc(i, pipe) => {
                let s = &mut self.exec_conns[i];
                if let Phase::Running(p) = &mut s.phase {
                    if p.ready(pipe, &mut s.conn).is_err() {
                        p.kill();
                        self.abandoned.push(p.pid);
                        s.phase = Phase::Closed;
                    }
                }
            }
        }
        Ok(None)
    }

    fn boot_input(&mut self, boot: &mut S::Conn) -> Result<Option<Outcome>, ConnError> {
        let msgs = match read_messages(boot, &mut self.boot_decoder)? {
            Some(msgs) => msgs,
            None => return Err(ConnError::HostClosed),
        };
        for msg in msgs {
            let msg = match &mut self.init {
                Some(init) => match init.input(msg) {
                    Some(other) => other,
                    None => continue,
                },
                None => msg,
            };
            match msg {
                Message::ExportLayer if self.init.is_none() => {
                    let reply = if self.root.upper.is_some() {
                        self.export = true;
                        Message::Ok
                    } else {
                        let detail = "ExportLayer needs an image root on a writable disk".into();
                        error(ErrorCode::BadRequest, detail)
                    };
                    write_message(boot, &reply)?;
                }
                Message::Exec(req) if self.init.is_none() => match self.start(&req, None) {
                    Ok(proc) => {
                        self.init_ns = self.open_ns(proc.pid);
                        write_message(
                            boot,
                            &Message::Started {
                                pid: proc.pid as u32,
                            },
                        )?;
                        self.init = Some(proc);
                    }
                    Err((code, detail)) => {
                        write_message(boot, &Message::Error { code, detail })?;
                        return Ok(Some(Outcome::Refused(code)));
                    }
                },
                other => {
                    let detail = match other {
                        Message::CreateContainer(_) => "the container already exists".into(),
                        m => format!("unexpected {} on the boot connection", variant(&m)),
                    };
                    let code = ErrorCode::BadRequest;
                    write_message(boot, &Message::Error { code, detail })?;
                }
            }
        }
        Ok(None)
    }

    /// Resolves the user and spawns `req`, in the container (`join` = the
    /// init's namespace for exec sessions, `None` for the init itself),
    /// with the host's quirk variables added to its environment.
    fn start(&self, req: &ExecRequest, join: Option<RawFd>) -> Result<Proc, (ErrorCode, String)> {
        spec::check_exec(req).map_err(|e| (ErrorCode::BadRequest, e.0))?;
        let req = ExecRequest {
            env: quirks::merge_env(&req.env, &self.quirk_env),
            ..req.clone()
        };
        let db = |path| {
            let resolved = spec::resolve_in_root(&self.root.root, path);
            resolved.map(|p| users::read_db(&p)).unwrap_or_default()
        };
        let (passwd, group) = (db("/etc/passwd"), db("/etc/group"));
        let creds = users::resolve(&req.user, &passwd, &group).map_err(|e| match e {
            users::UserError::Invalid(_) => (ErrorCode::BadRequest, e.to_string()),
            _ => (ErrorCode::NoSuchUser, e.to_string()),
        })?;
        let entry = match (self.root.isolated, join) {
            (false, _) => Entry::Host,
            (true, Some(fd)) => Entry::Join(fd),
            (true, None) => Entry::Pivot(&self.root.root),
        };
        let spawned =
            spawn::spawn(&req, &creds, entry, &self.root.ptmx).map_err(|e| (e.code, e.detail))?;
        Ok(Proc::new(spawned))
    }

    fn open_ns(&self, pid: libc::pid_t) -> Option<OwnedFd> {
        if !self.root.isolated {
            return None;
        }
        match File::open(format!("/proc/{pid}/ns/mnt")) {
            Ok(f) => Some(OwnedFd::from(f)),
            Err(e) => {
                log::error(&format!("opening the container's mount namespace: {e}"));
                None
            }
        }
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        let Ok(fd) = rustix::net::accept_with(listener, SocketFlags::CLOEXEC) else {
            return; // EAGAIN, ECONNABORTED...: nothing to serve
        };
        let mut conn = S::Conn::from(fd);
        if self.exec_conns.len() >= MAX_EXEC_CONNS {
            let code = ErrorCode::Internal;
            let detail = format!("more than {MAX_EXEC_CONNS} exec sessions");
            let _ = write_message(&mut conn, &Message::Error { code, detail });
            return;
        }
        let hello = Message::Hello {
            version: PROTOCOL_VERSION,
        };
        if write_message(&mut conn, &hello).is_ok() {
            self.exec_conns.push(ExecConn {
                conn,
                decoder: FrameDecoder::new(),
                phase: Phase::Hello,
            });
        }
    }

    fn exec_conn_input(&mut self, i: usize) {
        let s = &mut self.exec_conns[i];
        let msgs = match read_messages(&mut s.conn, &mut s.decoder) {
            Ok(Some(msgs)) => msgs,
            Ok(None) | Err(_) => {
                // The host went away: its process goes too.
                if let Phase::Running(p) = &s.phase {
                    p.kill();
                    self.abandoned.push(p.pid);
                }
                s.phase = Phase::Closed;
                return;
            }
        };
        let mut msgs = msgs.into_iter();
        while let Some(msg) = msgs.next() {
            if matches!(self.exec_conns[i].phase, Phase::Closed) {
                return;
            }
            if let (Phase::Request, Message::ArchivePut(req)) = (&self.exec_conns[i].phase, &msg) {
                // The tar follows: what was decoded already, then the
                // connection.
                let s = &mut self.exec_conns[i];
                let mut input = archive::Incoming::new(&mut s.conn, &mut s.decoder, msgs.collect());
                let reply = archive::receive(&self.root.root, req, &mut input);
                if let Err(e) = write_message(&mut s.conn, &reply) {
                    log::error(&format!("exec session: {e}"));
                }
                s.phase = Phase::Closed;
                return;
            }
            if let Err(e) = self.exec_conn_message(i, msg) {
                log::error(&format!("exec session: {e}"));
                let s = &mut self.exec_conns[i];
                if let Phase::Running(p) = &s.phase {
                    p.kill();
                    self.abandoned.push(p.pid);
                }
                s.phase = Phase::Closed;
            }
        }
    }

    fn exec_conn_message(&mut self, i: usize, msg: Message) -> Result<(), ConnError> {
        let phase = std::mem::replace(&mut self.exec_conns[i].phase, Phase::Closed);
        let (next, reply) = match (phase, msg) {
            (Phase::Running(mut p), msg) => match p.input(msg) {
                None => (Phase::Running(p), None),
                Some(other) => {
                    let detail = format!("unexpected {} in an exec session", variant(&other));
                    (
                        Phase::Running(p),
                        Some(error(ErrorCode::BadRequest, detail)),
                    )
                }
            },
            (Phase::Hello, Message::Hello { version }) if version == PROTOCOL_VERSION => {
                (Phase::Request, None)
            }
            (Phase::Hello, Message::Hello { version }) => {
                let detail = format!("host speaks protocol {version}, agent {PROTOCOL_VERSION}");
                (
                    Phase::Closed,
                    Some(error(ErrorCode::VersionMismatch, detail)),
                )
            }
            (Phase::Request, Message::Exec(req)) => self.exec_request(&req),
            (Phase::Request, Message::KillInit { signal }) => {
                (Phase::Closed, Some(self.kill_init(signal)))
            }
            // protocol 9 (issue #14): stats, top, cp, diff, export
            (
                Phase::Request,
                query @ (Message::Stats
                | Message::Top
                | Message::StatPath(_)
                | Message::ArchiveGet(_)
                | Message::Diff
                | Message::ExportChanges),
            ) => {
                self.query(i, query)?;
                (Phase::Closed, None)
            }
            (_, other) => {
                let detail = format!("unexpected {} in an exec session", variant(&other));
                (Phase::Closed, Some(error(ErrorCode::BadRequest, detail)))
            }
        };
        let s = &mut self.exec_conns[i];
        s.phase = next;
        if let Some(reply) = reply {
            write_message(&mut s.conn, &reply)?;
        }
        Ok(())
    }

    fn exec_request(&self, req: &ExecRequest) -> (Phase, Option<Message>) {
        let join = self.init_ns.as_ref().map(AsRawFd::as_raw_fd);
        let started = self.init.as_ref().is_some_and(|p| p.status.is_none());
        if !started || (self.root.isolated && join.is_none()) {
            let detail = "the container's init process is not running".to_string();
            return (Phase::Closed, Some(error(ErrorCode::NoContainer, detail)));
        }
        match self.start(req, join) {
            Ok(p) => {
                let pid = p.pid as u32;
                (Phase::Running(p), Some(Message::Started { pid }))
            }
            Err((code, detail)) => (Phase::Closed, Some(error(code, detail))),
        }
    }

    /// Answers one of the host's questions about the container (see
    /// [`crate::ops`] and [`crate::archive`]).
    fn query(&mut self, i: usize, query: Message) -> Result<(), ConnError> {
        let proc_dir = std::path::Path::new("/proc");
        let root = &self.root;
        let conn = &mut self.exec_conns[i].conn;
        let reply = match query {
            Message::Stats => Message::StatsReply(ops::guest_stats(proc_dir)),
            Message::Top => Message::TopReply(ops::processes(proc_dir)),
            Message::StatPath(req) => archive::stat(&root.root, &req),
            Message::ArchiveGet(req) => return archive::send(conn, &root.root, &req),
            Message::ExportChanges => match &root.upper {
                Some(upper) => return crate::export::send_layer(conn, upper),
                None => error(
                    ErrorCode::BadRequest,
                    "the container's root has no writable layer".into(),
                ),
            },
            Message::Diff => match &root.upper {
                Some(upper) => {
                    let mut batch = Vec::new();
                    let done = ops::diff(upper, &crate::rootfs::layer_dirs(), &mut |c| {
                        batch.push(c);
                        if batch.len() >= husk_protocol::MAX_CHANGES_PER_FRAME {
                            write_message(conn, &Message::Changes(std::mem::take(&mut batch)))
                                .map_err(std::io::Error::other)?;
                        }
                        Ok(())
                    });
                    match done {
                        Ok(()) if batch.is_empty() => Message::Ok,
                        Ok(()) => {
                            write_message(conn, &Message::Changes(batch))?;
                            Message::Ok
                        }
                        Err(e) => error(ErrorCode::Internal, format!("reading the changes: {e}")),
                    }
                }
                None => error(
                    ErrorCode::BadRequest,
                    "the container's root has no writable layer".into(),
                ),
            },
            other => error(
                ErrorCode::BadRequest,
                format!("unexpected {}", variant(&other)),
            ),
        };
        Ok(write_message(conn, &reply)?)
    }

    fn kill_init(&self, signal: i32) -> Message {
        if !(1..=64).contains(&signal) {
            return error(ErrorCode::BadRequest, format!("invalid signal {signal}"));
        }
        match self.init.as_ref().filter(|p| p.status.is_none()) {
            Some(init) => {
                proc::send_signal(init.pid, signal);
                Message::Ok
            }
            None => error(
                ErrorCode::NoContainer,
                "the container's init process is not running".into(),
            ),
        }
    }

    /// Reports the exit of every exec'd process that ended, and closes its
    /// session.
    fn finish_exec_conns(&mut self) {
        for s in &mut self.exec_conns {
            let Phase::Running(p) = &mut s.phase else {
                continue;
            };
            if p.status.is_none() {
                continue;
            }
            let msg = p.exit_message();
            if p.drain(&mut s.conn).is_ok() {
                if let Some(msg) = msg {
                    let _ = write_message(&mut s.conn, &msg);
                }
            }
            s.phase = Phase::Closed;
        }
        self.exec_conns
            .retain(|s| !matches!(s.phase, Phase::Closed));
    }

    /// Collects exit statuses (as PID 1, of every process).
    fn reap(&mut self) {
        if self.sys.reaps_orphans() {
            // `wait` is waitpid(-1): any child; rustix's `waitpid(None)` is pid 0, the
            // caller's process group only, which misses every container process
            // (they run in sessions of their own).
            while let Ok(Some((pid, status))) = wait(WaitOptions::NOHANG) {
                self.record(pid.as_raw_nonzero().get(), status.as_raw());
            }
            self.abandoned.clear();
            return;
        }
        let mut pids: Vec<libc::pid_t> = self
            .procs()
            .filter(|p| p.status.is_none())
            .map(|p| p.pid)
            .collect();
        pids.extend(&self.abandoned);
        for pid in pids {
            let Some(child) = Pid::from_raw(pid) else {
                continue;
            };
            if let Ok(Some((_, status))) = waitpid(Some(child), WaitOptions::NOHANG) {
                self.record(pid, status.as_raw());
                self.abandoned.retain(|p| *p != pid);
            }
        }
    }

    fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.init
            .iter()
            .chain(self.exec_conns.iter().filter_map(|s| match &s.phase {
                Phase::Running(p) => Some(p),
                _ => None,
            }))
    }

    fn record(&mut self, pid: libc::pid_t, status: i32) {
        if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL {
            self.oom.killed_seen = true;
        }
        let init = self.init.iter_mut();
        let conns = self
            .exec_conns
            .iter_mut()
            .filter_map(|s| match &mut s.phase {
                Phase::Running(p) => Some(p),
                _ => None,
            });
        if let Some(p) = init
            .chain(conns)
            .find(|p| p.pid == pid && p.status.is_none())
        {
            p.status = Some(status);
        }
    }

    /// The container is over: kill everything, report each exec'd
    /// process's end to its session and close the sessions.
    fn teardown(&mut self) {
        self.listener = None;
        if let Some(init) = &self.init {
            init.kill();
        }
        self.sys.kill_all();
        for s in &self.exec_conns {
            if let Phase::Running(p) = &s.phase {
                p.kill();
            }
        }
        let deadline = Instant::now() + KILL_WAIT;
        loop {
            self.reap();
            let pending = self.procs().any(|p| p.status.is_none()) || !self.abandoned.is_empty();
            if !pending || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.finish_exec_conns();
        self.exec_conns.clear();
        self.init_ns = None;
    }
}

fn error(code: ErrorCode, detail: String) -> Message {
    Message::Error { code, detail }
}

#[cfg(test)]
#[path = "container_tests.rs"]
mod tests;
