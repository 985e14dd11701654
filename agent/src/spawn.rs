//! Starting the requested command: fork, enter the root, exec.
//!
//! Everything the child needs is prepared before `fork`, so the child only
//! makes async-signal-safe system calls (this also keeps it correct when the
//! unit tests fork from a multi-threaded test process). If the child fails
//! before or at `execve`, it writes the stage and errno to a close-on-exec
//! pipe; the parent reads that pipe to tell success (EOF) from failure.

use std::ffi::{CString, NulError};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use husk_protocol::{ErrorCode, RunRequest, User};

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
    pub(crate) fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    pub(crate) fn internal(what: &str, err: io::Error) -> Self {
        Self::new(ErrorCode::Internal, format!("{what}: {err}"))
    }
}

/// A started command: its pid and the parent's ends of its stdio pipes.
#[derive(Debug)]
pub struct Child {
    /// Process id (also its process group id: the child calls `setsid`).
    pub pid: libc::pid_t,
    /// Write end of the child's stdin pipe, when stdin was requested.
    pub stdin: Option<File>,
    /// Read end of the child's stdout (non-blocking).
    pub stdout: File,
    /// Read end of the child's stderr (non-blocking).
    pub stderr: File,
}

/// Stages at which the child can fail, reported through the error pipe.
#[derive(Clone, Copy)]
#[repr(u8)]
pub(crate) enum Stage {
    Stdio = 1,
    Chroot = 2,
    Chdir = 3,
    Credentials = 4,
    Exec = 5,
    /// Entering the container's mount namespace (or pivoting into it).
    Namespace = 6,
    /// Making the pty the controlling terminal.
    Tty = 7,
}

/// Everything prepared for the child before forking.
struct Prepared {
    candidates: Vec<CString>,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
    root: Option<CString>,
    user: Option<User>,
}

/// Starts `req` inside `root` (or the agent's own root when `None`).
pub fn spawn(req: &RunRequest, root: Option<&Path>) -> Result<Child, SpawnError> {
    let prep = prepare(req, root)
        .map_err(|_| SpawnError::new(ErrorCode::BadRequest, "request contains a NUL byte"))?;
    if prep.argv.is_empty() {
        return Err(SpawnError::new(ErrorCode::BadRequest, "empty command"));
    }
    let (stdin_child, stdin_parent) = if req.stdin {
        let (r, w) = pipe().map_err(|e| SpawnError::internal("pipe", e))?;
        (r, Some(File::from(w)))
    } else {
        let null = File::open("/dev/null").map_err(|e| SpawnError::internal("/dev/null", e))?;
        (OwnedFd::from(null), None)
    };
    let (out_r, out_w) = pipe().map_err(|e| SpawnError::internal("pipe", e))?;
    let (err_r, err_w) = pipe().map_err(|e| SpawnError::internal("pipe", e))?;
    let (report_r, report_w) = pipe().map_err(|e| SpawnError::internal("pipe", e))?;
    let argv_ptrs = null_terminated(&prep.argv);
    let env_ptrs = null_terminated(&prep.env);
    let fds = [
        stdin_child.as_raw_fd(),
        out_w.as_raw_fd(),
        err_w.as_raw_fd(),
    ];

    // SAFETY: fork has no memory-safety preconditions; the child branch only
    // makes async-signal-safe calls on data prepared above and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError::internal("fork", io::Error::last_os_error()));
    }
    if pid == 0 {
        child(&prep, &argv_ptrs, &env_ptrs, fds, report_w.as_raw_fd());
    }
    drop((stdin_child, out_w, err_w, report_w));
    if let Some(err) = read_report(report_r, &prep.cwd.to_string_lossy(), &req.argv[0]) {
        reap(pid);
        return Err(err);
    }
    set_nonblocking(&out_r).map_err(|e| SpawnError::internal("fcntl", e))?;
    set_nonblocking(&err_r).map_err(|e| SpawnError::internal("fcntl", e))?;
    if let Some(w) = &stdin_parent {
        set_nonblocking(w).map_err(|e| SpawnError::internal("fcntl", e))?;
    }
    Ok(Child {
        pid,
        stdin: stdin_parent,
        stdout: File::from(out_r),
        stderr: File::from(err_r),
    })
}

fn prepare(req: &RunRequest, root: Option<&Path>) -> Result<Prepared, NulError> {
    let argv = req
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let env = req
        .env
        .iter()
        .map(|e| CString::new(e.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let path = req
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let candidates = match req.argv.first() {
        Some(cmd) => lookup_candidates(cmd, path)
            .into_iter()
            .map(CString::new)
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let cwd = if req.cwd.is_empty() { "/" } else { &req.cwd };
    let root = match root {
        Some(r) => Some(CString::new(r.as_os_str().as_encoded_bytes())?),
        None => None,
    };
    Ok(Prepared {
        candidates,
        argv,
        env,
        cwd: CString::new(cwd)?,
        root,
        user: req.user,
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

pub(crate) fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on an fd we own; no pointers involved.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits for `pid`, retrying on EINTR.
pub(crate) fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid with a valid pointer to an int.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
}

/// Reads the child's failure report; `None` means execve succeeded.
pub(crate) fn read_report(report: OwnedFd, cwd: &str, cmd: &str) -> Option<SpawnError> {
    let mut buf = Vec::with_capacity(5);
    let mut file = File::from(report);
    if let Err(e) = file.read_to_end(&mut buf) {
        return Some(SpawnError::internal("reading the exec report", e));
    }
    let [stage, e0, e1, e2, e3] = buf[..] else {
        return (!buf.is_empty())
            .then(|| SpawnError::new(ErrorCode::Internal, "garbled exec report"));
    };
    let errno = i32::from_ne_bytes([e0, e1, e2, e3]);
    Some(describe_failure(stage, errno, cwd, cmd))
}

fn describe_failure(stage: u8, errno: i32, cwd: &str, cmd: &str) -> SpawnError {
    let err = io::Error::from_raw_os_error(errno);
    match stage {
        s if s == Stage::Exec as u8 => exec_error(errno, cmd, !cmd.contains('/')),
        s if s == Stage::Chdir as u8 => SpawnError::new(
            ErrorCode::BadRequest,
            format!("working directory {cwd:?}: {err}"),
        ),
        s if s == Stage::Chroot as u8 || s == Stage::Namespace as u8 => {
            SpawnError::internal("entering the root", err)
        }
        s if s == Stage::Tty as u8 => SpawnError::internal("setting up the terminal", err),
        s if s == Stage::Credentials as u8 => SpawnError::new(
            ErrorCode::BadRequest,
            format!("switching to the requested user: {err}"),
        ),
        _ => SpawnError::internal("setting up stdio", err),
    }
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

// ---- child side: async-signal-safe calls only, never returns ----

fn child(
    prep: &Prepared,
    argv: &[*const libc::c_char],
    env: &[*const libc::c_char],
    fds: [RawFd; 3],
    report: RawFd,
) -> ! {
    // SAFETY: all calls below are async-signal-safe system calls on fds and
    // NUL-terminated strings prepared before fork; pointer arrays end in NULL.
    unsafe {
        libc::setsid();
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // Rust ignores SIGPIPE; ignored signals survive execve.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if !setup_stdio(fds) {
            fail(report, Stage::Stdio, errno());
        }
        if let Some(root) = &prep.root {
            if libc::chdir(root.as_ptr()) != 0 || libc::chroot(c".".as_ptr()) != 0 {
                fail(report, Stage::Chroot, errno());
            }
        }
        if libc::chdir(prep.cwd.as_ptr()) != 0 {
            fail(report, Stage::Chdir, errno());
        }
        if let Some(user) = prep.user {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(user.gid) != 0
                || libc::setuid(user.uid) != 0
            {
                fail(report, Stage::Credentials, errno());
            }
        }
        let err = exec_candidates(&prep.candidates, argv, env);
        fail(report, Stage::Exec, err)
    }
}

/// Moves the three stdio fds into place (clearing close-on-exec).
///
/// # Safety
/// Child-after-fork only: raw fd manipulation.
pub(crate) unsafe fn setup_stdio(fds: [RawFd; 3]) -> bool {
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
/// Child-after-fork only; `argv`/`env` are NULL-terminated pointer arrays.
pub(crate) unsafe fn exec_candidates(
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

pub(crate) fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

pub(crate) fn fail(report: RawFd, stage: Stage, errno: i32) -> ! {
    let e = errno.to_ne_bytes();
    let msg = [stage as u8, e[0], e[1], e[2], e[3]];
    // SAFETY: write from a stack buffer, then _exit; both async-signal-safe.
    unsafe {
        libc::write(report, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

#[cfg(test)]
#[path = "spawn_tests.rs"]
mod tests;
