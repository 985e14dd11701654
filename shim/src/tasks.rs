//! What the shim knows about its tasks: each containerd container (the
//! init process) and its exec processes, their status and exit, and a
//! condition variable `Wait` blocks on.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

use husk_runtime::relay::Control;
use husk_runtime::{ContainerId, ExecOptions};

use crate::errors::{Result, ShimError};

/// Where a process is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Created, not started.
    Created,
    /// Started, not exited.
    Running,
    /// Exited.
    Stopped,
}

/// The FIFOs containerd named for a process.
#[derive(Clone, Debug, Default)]
pub struct Stdio {
    /// Read for the process's stdin (empty: none).
    pub stdin: String,
    /// Written with its stdout.
    pub stdout: String,
    /// Written with its stderr.
    pub stderr: String,
    /// A terminal (stdout and stderr are one stream).
    pub terminal: bool,
}

/// A process: the init process or an exec.
#[derive(Clone, Debug)]
pub struct Proc {
    /// Status.
    pub status: Status,
    /// The pid containerd is told: the VM's monitor (a host process that
    /// lives as long as the container) for init, the guest pid for execs.
    pub pid: u32,
    /// Exit status (128+N for signal N).
    pub exit_status: u32,
    /// When it exited.
    pub exited_at: Option<SystemTime>,
    /// Its FIFOs.
    pub stdio: Stdio,
}

impl Proc {
    /// A created process.
    pub fn new(stdio: Stdio) -> Proc {
        Proc {
            status: Status::Created,
            pid: 0,
            exit_status: 0,
            exited_at: None,
            stdio,
        }
    }
}

/// An exec process.
pub struct Exec {
    /// Its state.
    pub proc_: Proc,
    /// What to run.
    pub opts: ExecOptions,
    /// Resizes, signals and end of input for its session, once started.
    pub control: Option<Arc<Control>>,
}

/// A task: a containerd container in its VM.
pub struct Task {
    /// The container in the husk store.
    pub husk_id: ContainerId,
    /// containerd's bundle directory.
    pub bundle: String,
    /// The init process.
    pub init: Proc,
    /// Exec processes by exec ID.
    pub execs: HashMap<String, Exec>,
    /// The VM's memory (MiB), for stats.
    pub memory_mib: u32,
}

impl Task {
    /// The process `exec_id` (empty: init).
    pub fn proc_mut(&mut self, exec_id: &str) -> Result<&mut Proc> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs
            .get_mut(exec_id)
            .map(|e| &mut e.proc_)
            .ok_or_else(|| ShimError::NotFound(format!("exec process {exec_id} not found")))
    }
}

/// All tasks of this shim.
#[derive(Default)]
pub struct Tasks {
    map: Mutex<HashMap<String, Task>>,
    changed: Condvar,
}

impl Tasks {
    /// The table, locked.
    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, Task>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on task `id`.
    pub fn with<R>(&self, id: &str, f: impl FnOnce(&mut Task) -> Result<R>) -> Result<R> {
        let mut map = self.lock();
        let task = map
            .get_mut(id)
            .ok_or_else(|| ShimError::NotFound(format!("task {id} not found")))?;
        f(task)
    }

    /// Records the exit of process `exec_id` of task `id` and wakes the
    /// waiters; returns its pid, or `None` if it is gone or had exited.
    pub fn exited(&self, id: &str, exec_id: &str, code: i32) -> Option<(u32, SystemTime)> {
        let now = SystemTime::now();
        let pid = self
            .with(id, |t| {
                let p = t.proc_mut(exec_id)?;
                if p.status == Status::Stopped {
                    return Ok(None);
                }
                p.status = Status::Stopped;
                p.exit_status = u32::try_from(code).unwrap_or(255);
                p.exited_at = Some(now);
                Ok(Some(p.pid))
            })
            .ok()
            .flatten();
        self.changed.notify_all();
        pid.map(|p| (p, now))
    }

    /// Blocks until process `exec_id` of task `id` has exited; its exit
    /// status and time.
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<(u32, SystemTime)> {
        let mut map = self.lock();
        loop {
            let task = map
                .get_mut(id)
                .ok_or_else(|| ShimError::NotFound(format!("task {id} not found")))?;
            let p = task.proc_mut(exec_id)?;
            if p.status == Status::Stopped {
                return Ok((p.exit_status, p.exited_at.unwrap_or_else(SystemTime::now)));
            }
            map = self.changed.wait(map).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Wakes the waiters (a task was removed).
    pub fn notify(&self) {
        self.changed.notify_all();
    }
}
