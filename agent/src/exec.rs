//! Starting a process inside the container (`Exec`): credentials, working
//! directory, a pseudo-terminal or pipes, and entering the container's
//! mount namespace.
//!
//! As in [`crate::spawn`], everything is prepared before `fork` and the
//! child only makes async-signal-safe system calls, reporting a failure
//! stage and errno through a close-on-exec pipe.

use std::ffi::{CString, NulError};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use husk_protocol::{ErrorCode, ExecRequest};

use crate::spawn::{self, SpawnError, Stage, DEFAULT_PATH};
use crate::users::Creds;

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
    /// Where to write the process's stdin (pipe, or the pty master).
    pub stdin: Option<File>,
    /// Its stdout pipe, or the pty master (non-blocking).
    pub stdout: File,
    /// Its stderr pipe (`None` with a pty: stderr goes to the terminal).
    pub stderr: Option<File>,
    /// The pty master, for resizing and finding the foreground group.
    pub pty: Option<File>,
}

/// Everything the child needs, prepared before forking.
struct Prepared {
    candidates: Vec<CString>,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
    /// `cwd`'s ancestors and itself, to create when missing.
    cwd_parts: Vec<CString>,
    pivot: Option<CString>,
    creds: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
}

/// Starts `req` as `creds` in the container reached through `entry`; a
/// terminal comes from the devpts multiplexer `ptmx`.
pub fn spawn(
    req: &ExecRequest,
    creds: &Creds,
    entry: Entry<'_>,
    ptmx: &Path,
) -> Result<Spawned, SpawnError> {
    let prep = prepare(req, creds, &entry)
        .map_err(|_| SpawnError::new(ErrorCode::BadRequest, "request contains a NUL byte"))?;
    if prep.argv.is_empty() {
        return Err(SpawnError::new(ErrorCode::BadRequest, "empty command"));
    }
    let io = if req.tty {
        Stdio::pty(ptmx, req.size, req.stdin)
    } else {
        Stdio::pipes(req.stdin)
    }
    .map_err(|e| SpawnError::internal("allocating stdio", e))?;
    let (report_r, report_w) = spawn::pipe().map_err(|e| SpawnError::internal("pipe", e))?;
    let argv = spawn::null_terminated(&prep.argv);
    let env = spawn::null_terminated(&prep.env);
    let join = match entry {
        Entry::Join(fd) => Some(fd),
        _ => None,
    };
    let ctty = io.pty.is_some();
    let fds = io.child_fds();
    // SAFETY: fork has no memory-safety preconditions; the child branch only
    // makes async-signal-safe calls on data prepared above and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError::internal("fork", io::Error::last_os_error()));
    }
    if pid == 0 {
        child(&prep, &argv, &env, fds, ctty, join, report_w.as_raw_fd());
    }
    drop(report_w);
    let cwd = prep.cwd.to_string_lossy().into_owned();
    let io = io.into_parent();
    if let Some(err) = spawn::read_report(report_r, &cwd, &req.argv[0]) {
        spawn::reap(pid);
        return Err(err);
    }
    io.finish(pid)
}

fn cstrings(v: &[String]) -> Result<Vec<CString>, NulError> {
    v.iter().map(|s| CString::new(s.as_str())).collect()
}

fn prepare(req: &ExecRequest, creds: &Creds, entry: &Entry<'_>) -> Result<Prepared, NulError> {
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
        Some(cmd) => cstrings(&spawn::lookup_candidates(cmd, path))?,
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
    // SAFETY: getuid has no preconditions.
    let privileged = unsafe { libc::getuid() } == 0;
    Ok(Prepared {
        candidates,
        argv: cstrings(&req.argv)?,
        env: cstrings(&env)?,
        cwd: CString::new(cwd)?,
        cwd_parts,
        pivot,
        // Without root (unit tests) the credentials cannot change.
        creds: privileged.then(|| (creds.uid, creds.gid, creds.groups.clone())),
    })
}

/// The process's stdio: the child's three fds and the agent's ends.
struct Stdio {
    child: [OwnedFd; 3],
    stdin: Option<File>,
    stdout: File,
    stderr: Option<File>,
    pty: Option<File>,
}

/// The agent's ends once the child has its own.
struct ParentIo {
    stdin: Option<File>,
    stdout: File,
    stderr: Option<File>,
    pty: Option<File>,
}

impl Stdio {
    fn pipes(stdin: bool) -> io::Result<Stdio> {
        let (child_in, parent_in) = if stdin {
            let (r, w) = spawn::pipe()?;
            (r, Some(File::from(w)))
        } else {
            (OwnedFd::from(File::open("/dev/null")?), None)
        };
        let (out_r, out_w) = spawn::pipe()?;
        let (err_r, err_w) = spawn::pipe()?;
        Ok(Stdio {
            child: [child_in, out_w, err_w],
            stdin: parent_in,
            stdout: File::from(out_r),
            stderr: Some(File::from(err_r)),
            pty: None,
        })
    }

    fn pty(ptmx: &Path, size: Option<(u16, u16)>, stdin: bool) -> io::Result<Stdio> {
        let master = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(ptmx)?;
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads an int from a valid pointer.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some((rows, cols)) = size {
            resize(&master, rows, cols)?;
        }
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
        // SAFETY: TIOCGPTPEER takes open flags and returns a new fd.
        let slave = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
        if slave < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the ioctl returned a new fd that nothing else owns.
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        Ok(Stdio {
            child: [slave.try_clone()?, slave.try_clone()?, slave],
            stdin: if stdin {
                Some(master.try_clone()?)
            } else {
                None
            },
            stdout: master.try_clone()?,
            stderr: None,
            pty: Some(master),
        })
    }

    fn child_fds(&self) -> [RawFd; 3] {
        [
            self.child[0].as_raw_fd(),
            self.child[1].as_raw_fd(),
            self.child[2].as_raw_fd(),
        ]
    }

    /// Closes the child's ends in the agent.
    fn into_parent(self) -> ParentIo {
        ParentIo {
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr,
            pty: self.pty,
        }
    }
}

impl ParentIo {
    fn finish(self, pid: libc::pid_t) -> Result<Spawned, SpawnError> {
        let nb = |f: &File| spawn::set_nonblocking(f).map_err(|e| SpawnError::internal("fcntl", e));
        nb(&self.stdout)?;
        for f in [&self.stdin, &self.stderr].into_iter().flatten() {
            nb(f)?;
        }
        Ok(Spawned {
            pid,
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr,
            pty: self.pty,
        })
    }
}

/// Sets a terminal's window size.
pub fn resize(pty: &File, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    if unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The terminal's foreground process group, if any.
pub fn foreground_group(pty: &File) -> Option<libc::pid_t> {
    let mut pgrp: libc::pid_t = 0;
    // SAFETY: TIOCGPGRP writes a pid_t to a valid pointer.
    let rc = unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCGPGRP, &mut pgrp) };
    (rc == 0 && pgrp > 0).then_some(pgrp)
}

// ---- child side: async-signal-safe calls only, never returns ----

fn child(
    prep: &Prepared,
    argv: &[*const libc::c_char],
    env: &[*const libc::c_char],
    fds: [RawFd; 3],
    ctty: bool,
    join: Option<RawFd>,
    report: RawFd,
) -> ! {
    // SAFETY: all calls below are async-signal-safe system calls on fds and
    // NUL-terminated strings prepared before fork; pointer arrays end in NULL.
    unsafe {
        libc::setsid();
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if ctty && libc::ioctl(fds[0], libc::TIOCSCTTY, 0) != 0 {
            spawn::fail(report, Stage::Tty, spawn::errno());
        }
        if !spawn::setup_stdio(fds) {
            spawn::fail(report, Stage::Stdio, spawn::errno());
        }
        if !enter(prep, join) {
            spawn::fail(report, Stage::Namespace, spawn::errno());
        }
        make_cwd(prep);
        if libc::chdir(prep.cwd.as_ptr()) != 0 {
            spawn::fail(report, Stage::Chdir, spawn::errno());
        }
        if let Some((uid, gid, groups)) = &prep.creds {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(*gid) != 0
                || libc::setuid(*uid) != 0
            {
                spawn::fail(report, Stage::Credentials, spawn::errno());
            }
        }
        let err = spawn::exec_candidates(&prep.candidates, argv, env);
        spawn::fail(report, Stage::Exec, err)
    }
}

/// Enters the container: a new mount namespace rooted at the pivot
/// directory, or the existing one behind `join`.
///
/// # Safety
/// Child-after-fork only.
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
/// Child-after-fork only.
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
