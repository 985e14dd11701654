//! husk's own stdio wired to a container's process: `run`/`start -a`/
//! `attach` (through the monitor) and `exec` (through the agent), with a
//! raw terminal for `-t`, window resizes and signal forwarding.

use std::io::IsTerminal;
use std::os::fd::BorrowedFd;

use anyhow::{bail, Context, Result};
use clap::Args;
use husk_runtime::relay::{self, ClientIo, Outcome};
use husk_runtime::signals::Signals;
use husk_runtime::{ExecOptions, Runtime, StdioWiring};
use husk_sandbox::AgentConnection;
use rustix::process::Signal;
use rustix::termios::{tcgetattr, tcsetattr, OptionalActions, Termios};

use super::RootArgs;

/// An error that makes husk exit with `code` after printing `detail`.
#[derive(Debug)]
pub struct ExitWith {
    /// The exit code.
    pub code: i32,
    /// The message.
    pub detail: String,
}

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for ExitWith {}

/// How husk's stdio takes part in an attached run, attach or exec.
pub struct LocalStdio {
    /// Forward stdin.
    pub stdin: bool,
    /// The process has a TTY.
    pub tty: bool,
    /// Forward signals (non-TTY).
    pub sig_proxy: bool,
}

/// Whether husk's stdin is a terminal.
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// Signals watched while attached: SIGWINCH for resizes, and those
/// forwarded.
const ATTACHED_SIGNALS: [i32; 7] = [
    Signal::INT.as_raw(),
    Signal::TERM.as_raw(),
    Signal::HUP.as_raw(),
    Signal::QUIT.as_raw(),
    Signal::USR1.as_raw(),
    Signal::USR2.as_raw(),
    Signal::WINCH.as_raw(),
];

/// The local terminal's size, if it is one.
fn local_size() -> Option<(u16, u16)> {
    relay::terminal_size(rustix::stdio::stdin())
        .or_else(|| relay::terminal_size(rustix::stdio::stdout()))
}

/// Starts container `id` with its process waiting for us, attaches, and
/// relays until it ends; returns its exit code.
pub fn start_attached(rt: &Runtime, id: &str, how: &LocalStdio) -> Result<i32> {
    let signals = Signals::install_for(&ATTACHED_SIGNALS)?;
    super::run::start_or_report(rt, id, StdioWiring::Attach)?;
    let conn = rt.attach(
        id,
        if how.tty {
            local_size().or(Some((24, 80)))
        } else {
            None
        },
    )?;
    let outcome = relay_local(conn, how, &signals)?;
    finish(rt, id, outcome)
}

/// Attaches to a running container.
pub fn attach_running(rt: &Runtime, id: &str, how: &LocalStdio) -> Result<i32> {
    let signals = Signals::install_for(&ATTACHED_SIGNALS)?;
    let conn = rt.attach(id, if how.tty { local_size() } else { None })?;
    let outcome = relay_local(conn, how, &signals)?;
    finish(rt, id, outcome)
}

/// Relays a session with husk's own stdio, the terminal raw for `-t`.
fn relay_local(mut conn: AgentConnection, how: &LocalStdio, signals: &Signals) -> Result<Outcome> {
    let _raw = if how.tty && how.stdin && stdin_is_terminal() {
        Some(RawTerminal::enable()?)
    } else {
        None
    };
    let (stdin, stdout) = (rustix::stdio::stdin(), rustix::stdio::stdout());
    let io = ClientIo {
        stdin: how.stdin.then_some(stdin),
        stdout,
        stderr: rustix::stdio::stderr(),
        signals: Some(signals),
        tty: how.tty.then(|| {
            if std::io::stdin().is_terminal() {
                stdin
            } else {
                stdout
            }
        }),
        forward_signals: !how.tty && how.sig_proxy,
    };
    Ok(relay::relay(&mut conn, &io)?)
}

/// The exit code of an attached session; a lost monitor is explained from
/// the container's state.
fn finish(rt: &Runtime, id: &str, outcome: Outcome) -> Result<i32> {
    if let Some(code) = outcome.exit_code() {
        return Ok(code);
    }
    match rt.container(id) {
        Ok(c) if !c.state.is_running() => {
            if let Some(e) = &c.state.error {
                eprintln!("husk: {e}");
            }
            Ok(c.state.exit_code.unwrap_or(125))
        }
        _ => bail!("lost the connection to the container's monitor"),
    }
}

/// `husk exec` flags.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    tty: bool,
    /// Set environment variables.
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Give the process every capability (otherwise it gets the
    /// container's security settings).
    #[arg(long)]
    privileged: bool,
    #[command(flatten)]
    root: RootArgs,
    /// The container.
    container: String,
    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

/// `husk exec`: returns the command's exit code.
pub fn exec(a: ExecArgs) -> Result<i32> {
    if a.interactive && a.tty && !stdin_is_terminal() {
        bail!("the input device is not a TTY");
    }
    let rt = super::runtime(&a.root)?;
    let env = crate::cmd::flags::env_flags(&a.env);
    let opts = ExecOptions {
        argv: a.command.clone(),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        tty: a.tty,
        stdin: a.interactive,
        size: if a.tty { local_size() } else { None },
        privileged: a.privileged,
        security: None,
    };
    let signals = Signals::install_for(&ATTACHED_SIGNALS)?;
    let conn = rt.exec_start(&a.container, &opts)?;
    let how = LocalStdio {
        stdin: a.interactive,
        tty: a.tty,
        sig_proxy: true,
    };
    let code = relay_local(conn, &how, &signals)?.exit_code();
    rt.exec_died(&a.container, code);
    match code {
        Some(code) => Ok(code),
        None => bail!("the exec session ended without an exit status (the container stopped?)"),
    }
}

/// The terminal in raw mode, restored on drop.
struct RawTerminal {
    fd: BorrowedFd<'static>,
    saved: Termios,
}

impl RawTerminal {
    /// Puts husk's stdin (a terminal) in raw mode.
    fn enable() -> Result<RawTerminal> {
        let fd = rustix::stdio::stdin();
        let saved = tcgetattr(fd).context("reading the terminal mode")?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(fd, OptionalActions::Now, &raw).context("setting the terminal to raw mode")?;
        Ok(RawTerminal { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = tcsetattr(self.fd, OptionalActions::Now, &self.saved);
    }
}
