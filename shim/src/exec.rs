//! Exec processes: added from containerd's OCI process spec, started over
//! the agent's exec port (`Runtime::exec_start`), relayed between the
//! session and containerd's FIFOs on a thread of their own, which also
//! carries resizes, signals and the end of input ([`Control`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_shim::protos::events::task::TaskExecStarted;
use containerd_shim::protos::shim::shim::ExecProcessRequest;
use containerd_shim::protos::topics;
use husk_protocol::Message;
use husk_runtime::relay::{self, ClientIo, Control, Outcome};
use husk_runtime::{ExecOptions, Signal};
use husk_sandbox::{AgentConnection, AgentError, Watch};

use crate::errors::{Result, ShimError};
use crate::service::Inner;
use crate::tasks::{Exec, Proc, Status, Stdio};

/// How long the agent may take to start an exec'd process.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a FIFO's reader may take to appear.
const FIFO_TIMEOUT: Duration = Duration::from_secs(10);
/// Exit status of an exec whose session ended without one (its VM went
/// away, killing it).
const LOST_CODE: i32 = 137;

impl Inner {
    /// Records exec process `req.exec_id` (started by `Start`).
    pub fn add_exec(&self, req: &ExecProcessRequest) -> Result<()> {
        let spec: oci_spec::runtime::Process = serde_json::from_slice(&req.spec.value)
            .map_err(|e| ShimError::Invalid(format!("the exec process spec: {e}")))?;
        let p = husk_bundle::process::translate(&spec)
            .map_err(|e| ShimError::Invalid(e.to_string()))?;
        let opts = ExecOptions {
            argv: p.argv,
            env: p.env,
            workdir: Some(p.cwd),
            user: Some(p.user),
            tty: req.terminal,
            stdin: !req.stdin.is_empty(),
            size: husk_bundle::process::console_size(&spec),
            privileged: false,
            security: Some(p.security),
        };
        let stdio = Stdio {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        self.tasks.with(&req.id, |t| {
            if t.init.status != Status::Running {
                return Err(ShimError::Precondition(format!(
                    "task {} is not running",
                    req.id
                )));
            }
            if t.execs.contains_key(&req.exec_id) {
                return Err(ShimError::Exists(format!(
                    "exec process {} already exists",
                    req.exec_id
                )));
            }
            let exec = Exec {
                proc_: Proc::new(stdio),
                opts,
                control: None,
            };
            t.execs.insert(req.exec_id.clone(), exec);
            Ok(())
        })
    }

    /// Starts exec process `exec_id` of task `id`; its guest pid.
    pub fn start_exec(self: &Arc<Self>, id: &str, exec_id: &str) -> Result<u32> {
        let (husk_id, opts, stdio) = self.tasks.with(id, |t| {
            let husk_id = t.husk_id.clone();
            let e = t
                .execs
                .get(exec_id)
                .ok_or_else(|| ShimError::NotFound(format!("exec process {exec_id} not found")))?;
            if e.proc_.status != Status::Created {
                return Err(ShimError::Precondition(format!(
                    "exec process {exec_id} was started already"
                )));
            }
            Ok((husk_id, e.opts.clone(), e.proc_.stdio.clone()))
        })?;
        let files = Fifos::open(&stdio)?;
        let mut conn = self.runtime()?.exec_start(husk_id.as_str(), &opts)?;
        let pid = match first_reply(&mut conn) {
            Ok(pid) => pid,
            Err((code, detail)) => {
                self.tasks.with(id, |t| {
                    t.proc_mut(exec_id)?.status = Status::Running;
                    Ok(())
                })?;
                self.tasks.exited(id, exec_id, code);
                return Err(ShimError::Failed(detail));
            }
        };
        let control = Arc::new(
            Control::new().map_err(|e| ShimError::Failed(format!("creating a pipe: {e}")))?,
        );
        self.tasks.with(id, |t| {
            let e = t
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| ShimError::NotFound(format!("exec process {exec_id} not found")))?;
            e.proc_.status = Status::Running;
            e.proc_.pid = pid;
            e.control = Some(control.clone());
            Ok(())
        })?;
        let mut ev = TaskExecStarted::new();
        ev.container_id = id.to_string();
        ev.exec_id = exec_id.to_string();
        ev.pid = pid;
        self.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(ev));
        let me = self.clone();
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        std::thread::spawn(move || {
            let code = files.relay(&mut conn, &control);
            drop(files);
            me.publish_exit(&id, &exec_id, code);
        });
        Ok(pid)
    }

    /// Signals exec process `exec_id`.
    pub fn kill_exec(&self, id: &str, exec_id: &str, signal: Signal) -> Result<()> {
        self.to_exec(id, exec_id, Message::Signal(signal.as_raw()))
    }

    /// Queues `msg` (resize, signal, end of input) for a running exec.
    pub fn to_exec(&self, id: &str, exec_id: &str, msg: Message) -> Result<()> {
        self.tasks.with(id, |t| {
            let e = t
                .execs
                .get(exec_id)
                .ok_or_else(|| ShimError::NotFound(format!("exec process {exec_id} not found")))?;
            match (&e.control, e.proc_.status) {
                (Some(c), Status::Running) => {
                    c.send(msg);
                    Ok(())
                }
                _ => Err(ShimError::NotFound(format!(
                    "exec process {exec_id} is not running"
                ))),
            }
        })
    }
}

/// The guest pid from the session's first reply, or the exit code and
/// reason the process did not start.
fn first_reply(conn: &mut AgentConnection) -> std::result::Result<u32, (i32, String)> {
    match conn.started(&Watch::none(), Some(Instant::now() + START_TIMEOUT)) {
        Ok(pid) => Ok(pid),
        Err(AgentError::Refused { code, detail }) => Err((code.exit_code(), detail)),
        Err(e) => Err((
            125,
            format!(
                "starting the exec process: {}",
                husk_runtime::error_chain(&e)
            ),
        )),
    }
}

/// An exec's open FIFOs (`/dev/null` for those containerd did not name).
struct Fifos {
    stdin: Option<File>,
    stdout: File,
    stderr: File,
}

impl Fifos {
    fn open(stdio: &Stdio) -> Result<Fifos> {
        let failed = |p: &str, e: io::Error| ShimError::Failed(format!("opening {p}: {e}"));
        let stdin = match stdio.stdin.as_str() {
            "" => None,
            p => Some(
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(p)
                    .map_err(|e| failed(p, e))?,
            ),
        };
        let out = |p: &str| -> Result<File> {
            if p.is_empty() {
                return File::options()
                    .write(true)
                    .open("/dev/null")
                    .map_err(|e| failed("/dev/null", e));
            }
            open_writer(Path::new(p)).map_err(|e| failed(p, e))
        };
        Ok(Fifos {
            stdin,
            stdout: out(&stdio.stdout)?,
            stderr: out(&stdio.stderr)?,
        })
    }

    /// Relays the session to the FIFOs until the process ends; its exit
    /// status.
    fn relay(&self, conn: &mut AgentConnection, control: &Control) -> i32 {
        let io = ClientIo {
            stdin: self.stdin.as_ref().map(|f| f.as_fd()),
            stdout: self.stdout.as_fd(),
            stderr: self.stderr.as_fd(),
            signals: None,
            tty: None,
            forward_signals: false,
        };
        match relay::relay_with(conn, &io, Some(control)) {
            Ok(Outcome::Closed) => LOST_CODE,
            Ok(outcome) => outcome.exit_code().unwrap_or(LOST_CODE),
            Err(e) => {
                log::warn!("exec session: {}", husk_runtime::error_chain(&e));
                LOST_CODE
            }
        }
    }
}

/// Opens FIFO `path` for writing without blocking, waiting (bounded) for
/// its reader to appear.
fn open_writer(path: &Path) -> io::Result<File> {
    let deadline = Instant::now() + FIFO_TIMEOUT;
    loop {
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
        {
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}
