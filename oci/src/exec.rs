//! `exec`: a new process in a running container, through the guest
//! agent's exec port (`Runtime::exec_start`), relayed to this process's
//! stdio or, with `--console-socket`, to a new terminal.
//!
//! In the foreground the relay runs here and the exit status is the
//! process's. With `--detach` (how conmon and containerd's runc shim run
//! every exec) this process returns once the process has started; a
//! forked child — a descendant the caller, a subreaper, reaps — relays
//! the session and exits with the process's exit status, and
//! `--pid-file` names it.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use husk_protocol::Message;
use husk_runtime::relay::{self, ClientIo};
use husk_runtime::signals::Signals;
use husk_runtime::ExecOptions;
use husk_sandbox::{AgentConnection, AgentError, Watch};

use crate::cli::ExecArgs;
use crate::console::{self, RawMode};
use crate::container::{Oci, OciStatus};
use crate::create::write_pid_file;

/// Largest process spec read.
const MAX_PROCESS_SPEC: u64 = 4 << 20;
/// How long the agent may take to start the process.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Exit status when the session ends without one (the VM went away,
/// killing the process).
const LOST_CODE: i32 = 137;
/// Signals the relay watches: resizes, and those forwarded to the
/// process.
const SIGNALS: [i32; 7] = [
    libc::SIGWINCH,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Runs `exec`; the exit status of this process.
pub fn exec(oci: &Oci, args: &ExecArgs) -> Result<i32> {
    if args.preserve_fds > 0 {
        bail!(
            "--preserve-fds {}: host file descriptors cannot be passed into the container's VM",
            args.preserve_fds
        );
    }
    let c = oci.find(&args.id)?;
    c.require(&[OciStatus::Running], "exec in it")?;
    if c.husk.state.pid.is_none() {
        bail!("container \"{}\" has no running process", args.id);
    }
    let mut opts = options(args, &c.husk.config.process.security)?;
    match (opts.tty, &args.console_socket, args.detach) {
        (true, None, true) => bail!("a detached terminal needs a --console-socket"),
        (false, Some(_), _) => bail!("--console-socket was given without a terminal"),
        _ => {}
    }
    let slave = match &args.console_socket {
        Some(socket) => Some(console::send_console(socket)?),
        None => None,
    };
    if opts.tty && opts.size.is_none() {
        opts.size = match &slave {
            Some(s) => relay::terminal_size(s),
            None => relay::terminal_size(std::io::stdout()),
        };
    }
    let mut conn = oci.rt.exec_start(c.husk.id.as_str(), &opts)?;
    started(&mut conn)?;
    if !args.detach {
        if let Some(path) = &args.pid_file {
            write_pid_file(path, std::process::id() as i32)?;
        }
        return Ok(relay_session(&mut conn, slave.as_ref(), opts.tty));
    }
    match fork()? {
        None => {
            let code = daemon_session(&mut conn, slave.as_ref(), opts.tty);
            std::process::exit(code);
        }
        Some(child) => {
            if let Some(path) = &args.pid_file {
                write_pid_file(path, child)?;
            }
            Ok(0)
        }
    }
}

/// The request: the `--process` spec, or the arguments and flags.
fn options(args: &ExecArgs, container: &husk_protocol::ProcessSecurity) -> Result<ExecOptions> {
    if let Some(path) = &args.process {
        let spec = read_process(path)?;
        let p = husk_bundle::process::translate(&spec)?;
        return Ok(ExecOptions {
            argv: p.argv,
            env: p.env,
            workdir: Some(p.cwd),
            user: Some(p.user),
            tty: p.tty,
            // The runtime's stdin is the process's (/dev/null gives EOF).
            stdin: true,
            size: husk_bundle::process::console_size(&spec),
            privileged: false,
            security: Some(p.security),
        });
    }
    if args.command.is_empty() {
        bail!("exec needs a command (or --process FILE)");
    }
    let security = (!args.additional_gids.is_empty() || args.no_new_privs).then(|| {
        let mut s = container.clone();
        s.additional_gids.extend(&args.additional_gids);
        s.no_new_privileges |= args.no_new_privs;
        s
    });
    Ok(ExecOptions {
        argv: args.command.clone(),
        env: args.env.clone(),
        workdir: args.cwd.clone(),
        user: args.user.clone(),
        tty: args.tty,
        stdin: true,
        size: None,
        privileged: false,
        security,
    })
}

/// Reads an OCI process spec (`--process`).
fn read_process(path: &Path) -> Result<oci_spec::runtime::Process> {
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PROCESS_SPEC + 1).read_to_end(&mut text))
        .with_context(|| format!("reading {}", path.display()))?;
    if text.len() as u64 > MAX_PROCESS_SPEC {
        bail!("{} is larger than {MAX_PROCESS_SPEC} bytes", path.display());
    }
    serde_json::from_slice(&text)
        .with_context(|| format!("{}: invalid OCI process spec", path.display()))
}

/// Waits for the agent's `Started` (or the reason the process did not
/// start).
fn started(conn: &mut AgentConnection) -> Result<u32> {
    match conn.started(&Watch::none(), Some(Instant::now() + START_TIMEOUT)) {
        Ok(pid) => Ok(pid),
        Err(AgentError::Refused { detail, .. }) => bail!("{detail}"),
        Err(e) => Err(e).context("starting the process"),
    }
}

/// Forks: `None` in the child, the child's pid in the parent.
fn fork() -> Result<Option<i32>> {
    // fork(2) is only sound when the child has no other thread's locks
    // to inherit; husk-oci starts none.
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    if threads != 1 {
        bail!("cannot detach: {threads} threads in this process");
    }
    // SAFETY: the process is single-threaded (checked above), so the
    // child may run any code; both sides continue normal execution.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()).context("forking the exec session"),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// The detached session: a session of its own (the terminal, if any, as
/// its controlling terminal, for resizes and hangups); exits with the
/// process's exit status.
fn daemon_session(conn: &mut AgentConnection, slave: Option<&OwnedFd>, tty: bool) -> i32 {
    let _ = rustix::process::setsid();
    if let Some(s) = slave {
        let _ = rustix::process::ioctl_tiocsctty(s);
        // The terminal is the process's stdio: the caller's pipes are
        // not held open.
        if let Ok(null) = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            for fd in 0..3 {
                // SAFETY: dup2 onto the standard descriptors, which this
                // process owns.
                unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
            }
        }
    }
    relay_session(conn, slave, tty)
}

/// Relays the session to the terminal `slave` or this process's stdio
/// until the process ends; its exit status.
fn relay_session(conn: &mut AgentConnection, slave: Option<&OwnedFd>, tty: bool) -> i32 {
    let signals = Signals::install_for(&SIGNALS).ok();
    let own = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let (stdin, stdout, stderr): (BorrowedFd<'_>, BorrowedFd<'_>, BorrowedFd<'_>) = match slave {
        Some(s) => (s.as_fd(), s.as_fd(), s.as_fd()),
        None => (own.0.as_fd(), own.1.as_fd(), own.2.as_fd()),
    };
    // Our own terminal in the foreground: raw, the guest's does the rest.
    let _raw = (tty && slave.is_none())
        .then(|| RawMode::enable(stdin))
        .flatten();
    let tty_fd = tty.then_some(stdout);
    // A resize between the request and now is not lost.
    if let Some((rows, cols)) = tty_fd.and_then(relay::terminal_size) {
        let _ = conn.send(&Message::Resize { rows, cols });
    }
    let io = ClientIo {
        stdin: Some(stdin),
        stdout,
        stderr,
        signals: signals.as_ref(),
        tty: tty_fd,
        forward_signals: true,
    };
    match relay::relay(conn, &io) {
        Ok(outcome) => outcome.exit_code().unwrap_or(LOST_CODE),
        Err(e) => {
            eprintln!("husk-oci: exec session: {}", husk_runtime::error_chain(&e));
            LOST_CODE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse, Command, Parsed};

    fn exec_args(args: &[&str]) -> ExecArgs {
        let argv = ["husk-oci", "exec"].into_iter().chain(args.iter().copied());
        match parse(argv) {
            Parsed::Run(_, cmd) => match *cmd {
                Command::Exec(e) => e,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn process_specs_and_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("process.json");
        std::fs::write(
            &path,
            r#"{"terminal":true,"user":{"uid":1000,"gid":100,"additionalGids":[5]},
                "args":["ls","-l"],"env":["PATH=/bin","A=1"],"cwd":"/tmp",
                "consoleSize":{"height":30,"width":100},"noNewPrivileges":true}"#,
        )
        .unwrap();
        let args = exec_args(&["--process", path.to_str().unwrap(), "--detach", "c1"]);
        let o = options(&args, &Default::default()).unwrap();
        assert_eq!(o.argv, ["ls", "-l"]);
        assert_eq!(
            (o.user.as_deref(), o.workdir.as_deref()),
            (Some("1000:100"), Some("/tmp"))
        );
        assert!(o.tty && o.stdin);
        assert_eq!(o.size, Some((30, 100)));
        let s = o.security.unwrap();
        assert!(s.no_new_privileges);
        assert_eq!(s.additional_gids, [5]);

        let container = husk_protocol::ProcessSecurity {
            additional_gids: vec![1],
            ..Default::default()
        };
        let args = exec_args(&["-e", "X=1", "--cwd", "/w", "c1", "echo", "-n", "hi"]);
        let o = options(&args, &container).unwrap();
        assert_eq!(o.argv, ["echo", "-n", "hi"]);
        assert_eq!(o.env, ["X=1"]);
        assert!(o.security.is_none(), "the container's settings apply");
        let args = exec_args(&["-g", "7", "--no-new-privs", "c1", "id"]);
        let s = options(&args, &container).unwrap().security.unwrap();
        assert_eq!(s.additional_gids, [1, 7]);
        assert!(s.no_new_privileges);

        let err = options(&exec_args(&["c1"]), &container).unwrap_err();
        assert!(err.to_string().contains("needs a command"), "{err}");
        std::fs::write(&path, "{not json").unwrap();
        let args = exec_args(&["-p", path.to_str().unwrap(), "c1"]);
        let err = format!("{:#}", options(&args, &container).unwrap_err());
        assert!(err.contains("invalid OCI process spec"), "{err}");
    }
}
