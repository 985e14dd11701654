//! Starting a process in the container — the init process and exec'd
//! ones alike: credentials, working directory, stdio (pipes or a
//! pseudo-terminal), entering the container's mount namespace, and the
//! process's security settings (`security.rs`).
//!
//! The child is started the way `posix_spawn` starts one: `clone` with
//! `CLONE_VM | CLONE_VFORK`, on a stack of its own, sharing the agent's
//! memory until its `execve`, while the agent waits. Nothing of the
//! agent's address space is copied, so neither side takes copy-on-write
//! page faults; on hosts where guest kernel code is emulated each of those
//! costs milliseconds (`husk exec` got about a quarter faster there,
//! docs/BENCHMARKS.md). Everything the child needs is prepared before, so
//! the child only reads that and makes async-signal-safe system calls, the
//! credential ones raw (libc's `setuid` and friends would ask every thread
//! of the process whose memory the child shares to switch too); this also
//! keeps it correct when the unit tests spawn from a multi-threaded test
//! process.
//! If the child fails before or at `execve`, it writes the stage and errno
//! to a close-on-exec pipe; the parent reads that pipe to tell success
//! (EOF) from failure.

use std::ffi::{CString, NulError};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use husk_protocol::{ErrorCode, ExecRequest};
use rustix::process::{waitpid, Pid, Signal, WaitOptions};

use crate::security::{self, Plan};
use crate::stdio::{self, ProcIo, Stdio};
use crate::users::Creds;

/// `PATH` used for the lookup when the request's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why the command did not start; carries the code reported to the host.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct SpawnError {
    /// The protocol error code.
    pub code: ErrorCode,
    /// A description for the user.
    pub detail: String,
}

impl SpawnError {
    fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    fn internal(what: &str, err: io::Error) -> Self {
        Self::new(ErrorCode::Internal, format!("{what}: {err}"))
    }
}

/// Stages at which the child can fail, reported through the error pipe.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Stage {
    Stdio = 1,
    Chroot = 2,
    Chdir = 3,
    Credentials = 4,
    Exec = 5,
    /// Entering the container's mount namespace (or pivoting into it).
    Namespace = 6,
    /// Making the pty the controlling terminal.
    Tty = 7,
    /// Setting a resource limit (argument: its index).
    Rlimit = 8,
    /// Dropping a capability from the bounding set (argument: its number).
    Bounding = 9,
    /// Keeping capabilities across the user switch.
    KeepCaps = 10,
    /// Setting the effective, permitted and inheritable capabilities.
    Capabilities = 11,
    /// Raising an ambient capability (argument: its number).
    Ambient = 12,
    /// Setting `no_new_privs`.
    NoNewPrivs = 13,
}

/// How the new process enters the container.
#[derive(Debug)]
pub enum Entry<'a> {
    /// Stay in the agent's own root (unit tests without root).
    Host,
    /// Unshare the mount namespace and `pivot_root` into this directory
    /// (the init process; its namespace becomes the container's).
    Pivot(&'a Path),
    /// Join the mount namespace behind this fd (`/proc/<init>/ns/mnt`).
    Join(RawFd),
}

/// A started process and the agent's ends of its stdio.
#[derive(Debug)]
pub struct Spawned {
    /// Process id (also its session and process group id).
    pub pid: libc::pid_t,
    /// The agent's ends of its stdio (non-blocking).
    pub io: ProcIo,
}

/// Everything the child needs, prepared before the child is cloned.
struct Prepared {
    candidates: Vec<CString>,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
    /// `cwd`'s ancestors and itself, to create when missing.
    cwd_parts: Vec<CString>,
    pivot: Option<CString>,
    creds: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    security: Plan,
}

/// Starts `req` as `creds` in the container reached through `entry`; a
/// terminal comes from the devpts multiplexer `ptmx`.
pub fn spawn(
    req: &ExecRequest,
    creds: &Creds,
    entry: Entry<'_>,
    ptmx: &Path,
) -> Result<Spawned, SpawnError> {
    let prep = prepare(req, creds, &entry)?;
    if prep.argv.is_empty() {
        return Err(SpawnError::new(ErrorCode::BadRequest, "empty command"));
    }
    let io = if req.tty {
        Stdio::pty(ptmx, req.size, req.stdin)
    } else {
        Stdio::pipes(req.stdin)
    }
    .map_err(|e| SpawnError::internal("allocating stdio", e))?;
    let (report_r, report_w) = stdio::pipe().map_err(|e| SpawnError::internal("pipe", e))?;
    let argv = null_terminated(&prep.argv);
    let env = null_terminated(&prep.env);
    let join = match entry {
        Entry::Join(fd) => Some(fd),
        _ => None,
    };
    let args = ChildArgs {
        prep: &prep,
        argv: &argv,
        env: &env,
        fds: io.child_fds(),
        ctty: io.is_tty(),
        join,
        report: report_w.as_raw_fd(),
    };
    let stack = ChildStack::new().map_err(|e| SpawnError::internal("child stack", e))?;
    // SAFETY: `child_entry` gets a pointer to `args`, which outlives the
    // child's use of it: with CLONE_VFORK this thread is suspended until the
    // child has called execve or exited. The child runs on `stack` (its own,
    // with a guard page, unmapped only after clone returns), does not
    // return, and only reads `args` and makes async-signal-safe calls.
    let pid = unsafe {
        libc::clone(
            child_entry,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(&args).cast_mut().cast(),
        )
    };
    if pid < 0 {
        return Err(SpawnError::internal("clone", io::Error::last_os_error()));
    }
    drop(stack);
    drop(report_w);
    let cwd = prep.cwd.to_string_lossy().into_owned();
    let io = io.into_parent();
    if let Some(err) = read_report(report_r, &prep, &cwd, &req.argv[0]) {
        reap(pid);
        return Err(err);
    }
    match io {
        Ok(io) => Ok(Spawned { pid, io }),
        Err(e) => {
            if let Some(child) = Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(child, Signal::KILL);
            }
            reap(pid);
            Err(SpawnError::internal("fcntl", e))
        }
    }
}

fn cstrings(v: &[String]) -> Result<Vec<CString>, NulError> {
    v.iter().map(|s| CString::new(s.as_str())).collect()
}

/// Prepares everything the child needs; the security settings are
/// checked here, so a bad request fails before `clone`.
fn prepare(req: &ExecRequest, creds: &Creds, entry: &Entry<'_>) -> Result<Prepared, SpawnError> {
    // Without root (unit tests) the credentials and capabilities cannot
    // change.
    let privileged = rustix::process::getuid().is_root();
    let bad = |e: security::SecurityError| SpawnError::new(ErrorCode::BadRequest, e.to_string());
    let security = security::plan(&req.security, creds.uid, privileged).map_err(bad)?;
    let groups = security::groups(&creds.groups, &req.security.additional_gids).map_err(bad)?;
    let nul = |_| SpawnError::new(ErrorCode::BadRequest, "request contains a NUL byte");
    let mut prep = prepare_strings(req, creds, entry).map_err(nul)?;
    prep.creds = privileged.then_some((creds.uid, creds.gid, groups));
    prep.security = security;
    Ok(prep)
}

/// The C strings of the request (no credentials, no security settings).
fn prepare_strings(
    req: &ExecRequest,
    creds: &Creds,
    entry: &Entry<'_>,
) -> Result<Prepared, NulError> {
    let mut env = req.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", creds.home));
    }
    if req.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let candidates = match req.argv.first() {
        Some(cmd) => cstrings(&lookup_candidates(cmd, path))?,
        None => Vec::new(),
    };
    let cwd = if req.cwd.is_empty() { "/" } else { &req.cwd };
    let mut cwd_parts = Vec::new();
    let mut prefix = String::new();
    for part in cwd.split('/').filter(|p| !p.is_empty()) {
        prefix.push('/');
        prefix.push_str(part);
        cwd_parts.push(CString::new(prefix.as_str())?);
    }
    let pivot = match entry {
        Entry::Pivot(root) => Some(CString::new(root.as_os_str().as_encoded_bytes())?),
        _ => None,
    };
    Ok(Prepared {
        candidates,
        argv: cstrings(&req.argv)?,
        env: cstrings(&env)?,
        cwd: CString::new(cwd)?,
        cwd_parts,
        pivot,
        creds: None,
        security: Plan::default(),
    })
}

/// The paths `execvp` would try for `cmd`: `cmd` itself when it contains a
/// `/`, else `dir/cmd` for each `PATH` entry (an empty entry means `.`).
pub fn lookup_candidates(cmd: &str, path: &str) -> Vec<String> {
    if cmd.contains('/') {
        return vec![cmd.to_string()];
    }
    if cmd.is_empty() {
        return Vec::new();
    }
    path.split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            format!("{}/{cmd}", dir.trim_end_matches('/'))
        })
        .collect()
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Waits for `pid`, retrying on EINTR.
fn reap(pid: libc::pid_t) {
    let Some(pid) = Pid::from_raw(pid) else {
        return;
    };
    while let Err(rustix::io::Errno::INTR) = waitpid(Some(pid), WaitOptions::empty()) {}
}

/// Reads the child's failure report; `None` means execve succeeded.
fn read_report(report: OwnedFd, prep: &Prepared, cwd: &str, cmd: &str) -> Option<SpawnError> {
    let mut buf = Vec::with_capacity(REPORT_LEN);
    let mut file = File::from(report);
    if let Err(e) = file.read_to_end(&mut buf) {
        return Some(SpawnError::internal("reading the exec report", e));
    }
    let [stage, arg, e0, e1, e2, e3] = buf[..] else {
        return (!buf.is_empty())
            .then(|| SpawnError::new(ErrorCode::Internal, "garbled exec report"));
    };
    let errno = i32::from_ne_bytes([e0, e1, e2, e3]);
    let failure = Failure { stage, arg, errno };
    Some(describe_failure(failure, &prep.security, cwd, cmd))
}

/// What the child reported.
struct Failure {
    stage: u8,
    /// Which item of the stage failed (see [`Stage`]).
    arg: u8,
    errno: i32,
}

fn describe_failure(f: Failure, plan: &Plan, cwd: &str, cmd: &str) -> SpawnError {
    let err = io::Error::from_raw_os_error(f.errno);
    let bad = |what: String| SpawnError::new(ErrorCode::BadRequest, format!("{what}: {err}"));
    match f.stage {
        s if s == Stage::Exec as u8 => exec_error(f.errno, cmd, !cmd.contains('/')),
        s if s == Stage::Chdir as u8 => bad(format!("working directory {cwd:?}")),
        s if s == Stage::Chroot as u8 || s == Stage::Namespace as u8 => {
            SpawnError::internal("entering the root", err)
        }
        s if s == Stage::Tty as u8 => SpawnError::internal("setting up the terminal", err),
        s if s == Stage::Credentials as u8 => bad("switching to the requested user".into()),
        s if s == Stage::Rlimit as u8 => bad(describe_rlimit(plan, f.arg)),
        s if s == Stage::Bounding as u8 => SpawnError::internal(
            &format!(
                "dropping {} from the bounding set",
                security::names(1 << f.arg)
            ),
            err,
        ),
        s if s == Stage::KeepCaps as u8 => {
            SpawnError::internal("keeping capabilities for the user", err)
        }
        s if s == Stage::Capabilities as u8 => bad(describe_caps(plan)),
        s if s == Stage::Ambient as u8 => bad(format!(
            "raising the ambient capability {}",
            security::names(1 << f.arg)
        )),
        s if s == Stage::NoNewPrivs as u8 => SpawnError::internal("setting no_new_privs", err),
        _ => SpawnError::internal("setting up stdio", err),
    }
}

fn describe_rlimit(plan: &Plan, index: u8) -> String {
    match plan.rlimits.get(usize::from(index)) {
        Some((resource, limit)) => {
            let text = |l: Option<u64>| security::limit_text(l.unwrap_or(u64::MAX));
            format!(
                "setting the resource limit {} (soft {}, hard {})",
                resource.linux_name(),
                text(limit.current),
                text(limit.maximum)
            )
        }
        None => "setting a resource limit".into(),
    }
}

fn describe_caps(plan: &Plan) -> String {
    let Some(caps) = &plan.caps else {
        return "setting the capabilities".into();
    };
    let s = &caps.sets;
    format!(
        "setting the capabilities (effective {:#x}, permitted {:#x}, inheritable {:#x})",
        s.effective, s.permitted, s.inheritable
    )
}

/// Maps an execve errno to the protocol's error code and a Docker-like
/// message.
fn exec_error(errno: i32, cmd: &str, searched: bool) -> SpawnError {
    let err = io::Error::from_raw_os_error(errno);
    match errno {
        libc::ENOENT | libc::ENOTDIR if searched => SpawnError::new(
            ErrorCode::NotFound,
            format!("exec: {cmd:?}: executable file not found in $PATH"),
        ),
        libc::ENOENT | libc::ENOTDIR => SpawnError::new(
            ErrorCode::NotFound,
            format!("exec: {cmd:?}: no such file or directory"),
        ),
        libc::EACCES | libc::EPERM => SpawnError::new(
            ErrorCode::PermissionDenied,
            format!("exec: {cmd:?}: permission denied"),
        ),
        libc::ENOEXEC => SpawnError::new(
            ErrorCode::NotExecutable,
            format!("exec: {cmd:?}: exec format error"),
        ),
        _ => SpawnError::new(ErrorCode::Internal, format!("exec: {cmd:?}: {err}")),
    }
}

/// The size of the child's stack (it runs `child` and `execve`).
const CHILD_STACK_LEN: usize = 256 * 1024;

/// The child's own stack while it shares the agent's memory: an anonymous
/// mapping whose lowest page is a guard (an overflow faults instead of
/// writing over the agent's memory). Unmapped on drop.
struct ChildStack {
    base: *mut libc::c_void,
}

impl ChildStack {
    fn new() -> io::Result<Self> {
        use rustix::mm::{mmap_anonymous, mprotect, MapFlags, MprotectFlags, ProtFlags};
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        let flags = MapFlags::PRIVATE | MapFlags::STACK;
        // SAFETY: a new anonymous mapping at an address the kernel picks
        // aliases nothing.
        let base = unsafe { mmap_anonymous(std::ptr::null_mut(), CHILD_STACK_LEN, prot, flags) }?;
        let stack = Self { base };
        // SAFETY: the first page lies in the mapping made above, which
        // nothing uses yet.
        unsafe {
            mprotect(
                stack.base,
                rustix::param::page_size(),
                MprotectFlags::empty(),
            )
        }?;
        Ok(stack)
    }

    /// The initial stack pointer (the stack grows down; 16-byte aligned).
    fn top(&self) -> *mut libc::c_void {
        self.base.wrapping_byte_add(CHILD_STACK_LEN)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; the child no longer runs on it
        // (it has exec'd or exited once clone returned).
        let _ = unsafe { rustix::mm::munmap(self.base, CHILD_STACK_LEN) };
    }
}

/// What the child is started with: data prepared before `clone`, read
/// (never written) by the child through a pointer.
#[derive(Clone, Copy)]
struct ChildArgs<'a> {
    prep: &'a Prepared,
    argv: &'a [*const libc::c_char],
    env: &'a [*const libc::c_char],
    fds: [RawFd; 3],
    ctty: bool,
    join: Option<RawFd>,
    report: RawFd,
}

// ---- child side: async-signal-safe calls only, never returns ----

/// `clone`'s entry point.
extern "C" fn child_entry(args: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `spawn` passes a pointer to a `ChildArgs` that stays alive and
    // unchanged while the parent is suspended (CLONE_VFORK).
    child(unsafe { &*args.cast_const().cast::<ChildArgs<'_>>() })
}

fn child(args: &ChildArgs<'_>) -> ! {
    let ChildArgs {
        prep,
        argv,
        env,
        fds,
        ctty,
        join,
        report,
    } = *args;
    // SAFETY: all calls below are async-signal-safe system calls on fds and
    // NUL-terminated strings prepared before clone; pointer arrays end in NULL.
    unsafe {
        libc::setsid();
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if ctty && libc::ioctl(fds[0], libc::TIOCSCTTY, 0) != 0 {
            fail(report, Stage::Tty, 0, errno());
        }
        if !setup_stdio(fds) {
            fail(report, Stage::Stdio, 0, errno());
        }
        if !enter(prep, join) {
            fail(report, Stage::Namespace, 0, errno());
        }
        make_cwd(prep);
        if libc::chdir(prep.cwd.as_ptr()) != 0 {
            fail(report, Stage::Chdir, 0, errno());
        }
        apply_security(prep, report);
        let err = exec_candidates(&prep.candidates, argv, env);
        fail(report, Stage::Exec, 0, err)
    }
}

/// Applies the resource limits, the user and the capabilities, in the
/// order `security.rs` explains; reports the first failure and exits.
///
/// # Safety
/// Spawned child only (before its execve).
unsafe fn apply_security(prep: &Prepared, report: RawFd) {
    let plan = &prep.security;
    if let Err((i, e)) = security::set_rlimits(plan) {
        fail(report, Stage::Rlimit, i, e);
    }
    if let Some(caps) = &plan.caps {
        // SAFETY: prctl calls in the spawned child (caller contract).
        if let Err((cap, e)) = unsafe { security::drop_bounding(caps) } {
            fail(report, Stage::Bounding, cap, e);
        }
    }
    if let Some((uid, gid, groups)) = &prep.creds {
        if let Some(caps) = &plan.caps {
            // SAFETY: a prctl call in the spawned child.
            if let Err(e) = unsafe { security::keep_caps(caps) } {
                fail(report, Stage::KeepCaps, 0, e);
            }
        }
        // SAFETY: the group list lives in `prep` for the call. Raw system
        // calls: libc's wrappers would ask the agent's other threads (whose
        // memory this child shares) to switch too.
        let switched = unsafe {
            libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) == 0
                && libc::syscall(libc::SYS_setgid, *gid) == 0
                && libc::syscall(libc::SYS_setuid, *uid) == 0
        };
        if !switched {
            fail(report, Stage::Credentials, 0, errno());
        }
    }
    if let Some(caps) = &plan.caps {
        // SAFETY: capset in the spawned child.
        if let Err(e) = unsafe { security::set_caps(caps) } {
            fail(report, Stage::Capabilities, 0, e);
        }
        // SAFETY: prctl calls in the spawned child.
        if let Err((cap, e)) = unsafe { security::raise_ambient(caps) } {
            fail(report, Stage::Ambient, cap, e);
        }
    }
    // SAFETY: a prctl call in the spawned child.
    if let Err(e) = unsafe { security::set_no_new_privs(plan) } {
        fail(report, Stage::NoNewPrivs, 0, e);
    }
    if let Some(mask) = plan.umask {
        // SAFETY: umask(2) cannot fail and touches no memory.
        unsafe { libc::umask(mask) };
    }
}

/// Enters the container: a new mount namespace rooted at the pivot
/// directory, or the existing one behind `join`.
///
/// # Safety
/// Spawned child only (before its execve).
unsafe fn enter(prep: &Prepared, join: Option<RawFd>) -> bool {
    // SAFETY: plain system calls with valid C strings (caller contract).
    unsafe {
        if let Some(ns) = join {
            // setns also moves root and cwd to the namespace's root.
            return libc::setns(ns, libc::CLONE_NEWNS) == 0;
        }
        let Some(root) = &prep.pivot else {
            return true;
        };
        let null = std::ptr::null::<libc::c_char>();
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
            && libc::chdir(root.as_ptr()) == 0
            && libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == 0
            && libc::umount2(c".".as_ptr(), libc::MNT_DETACH) == 0
            && libc::chdir(c"/".as_ptr()) == 0
    }
}

/// Creates the missing directories of the working directory, owned by the
/// process's user (errors surface at `chdir`).
///
/// # Safety
/// Spawned child only (before its execve).
unsafe fn make_cwd(prep: &Prepared) {
    for dir in &prep.cwd_parts {
        // SAFETY: valid C string; mkdir/chown have no other preconditions.
        unsafe {
            if libc::mkdir(dir.as_ptr(), 0o755) == 0 {
                if let Some((uid, gid, _)) = &prep.creds {
                    libc::chown(dir.as_ptr(), *uid, *gid);
                }
            }
        }
    }
}

/// Moves the three stdio fds into place (clearing close-on-exec).
///
/// # Safety
/// Spawned child only (before its execve): raw fd manipulation.
unsafe fn setup_stdio(fds: [RawFd; 3]) -> bool {
    // First move any source fd that sits at 0..=2 out of the way, so one
    // dup2 cannot clobber a source needed by the next.
    let mut fds = fds;
    for fd in fds.iter_mut() {
        if *fd <= 2 {
            // SAFETY: duplicating an open fd (caller contract).
            let moved = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3) };
            if moved < 0 {
                return false;
            }
            *fd = moved;
        }
    }
    for (target, fd) in fds.iter().enumerate() {
        // SAFETY: dup2 onto 0..=2; the new fd has close-on-exec cleared.
        if unsafe { libc::dup2(*fd, target as RawFd) } < 0 {
            return false;
        }
    }
    true
}

/// Tries each candidate like `execvp`: remembers EACCES, skips missing
/// entries, stops at any other error. Returns the errno to report.
///
/// # Safety
/// Spawned child only (before its execve); `argv`/`env` are NULL-terminated pointer arrays.
unsafe fn exec_candidates(
    candidates: &[CString],
    argv: &[*const libc::c_char],
    env: &[*const libc::c_char],
) -> i32 {
    let mut saw_eacces = false;
    let mut last = libc::ENOENT;
    for path in candidates {
        // SAFETY: valid C strings and NULL-terminated arrays (caller contract).
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), env.as_ptr()) };
        last = errno();
        match last {
            libc::EACCES => saw_eacces = true,
            libc::ENOENT | libc::ENOTDIR => {}
            _ => return last,
        }
    }
    if saw_eacces {
        libc::EACCES
    } else {
        last
    }
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// The length of a failure report: stage, argument, errno.
const REPORT_LEN: usize = 6;

fn fail(report: RawFd, stage: Stage, arg: u8, errno: i32) -> ! {
    let e = errno.to_ne_bytes();
    let msg: [u8; REPORT_LEN] = [stage as u8, arg, e[0], e[1], e[2], e[3]];
    // SAFETY: write from a stack buffer, then _exit; both async-signal-safe.
    unsafe {
        libc::write(report, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

#[cfg(test)]
#[path = "spawn_tests.rs"]
mod tests;
