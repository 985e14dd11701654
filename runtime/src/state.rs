//! `state.json`: where a container is in its life. The monitor writes it
//! while it runs; [`crate::Runtime::create`], `start` and `delete` write it
//! around that. Readers never trust a `running` state blindly: the monitor
//! holds `monitor.lock` for as long as it lives, so a `running` state
//! whose lock is free belongs to a monitor that died (killed, crashed), and
//! is reported as an exit.

use husk_net::PortMapping;
use serde::{Deserialize, Serialize};

use crate::config::Signal;
use crate::layout::{self, ContainerPaths};
use crate::Error;

/// The exit code reported when the monitor (and with it the VM) died.
pub const MONITOR_DIED_CODE: i32 = 137;

/// The error reported when the monitor died without recording an exit.
pub const MONITOR_DIED: &str = "the container monitor died unexpectedly (killed?); the VM is gone";

/// Lifecycle status, as Docker names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started.
    Created,
    /// A monitor owns a VM for it (booting, or the process runs).
    Running,
    /// Ended.
    Exited,
}

impl Status {
    /// Whether `start` may launch a monitor for it.
    pub fn can_start(self) -> bool {
        match self {
            Status::Created | Status::Exited => true,
            Status::Running => false,
        }
    }

    /// Whether its process can be signalled (`kill`, `stop`'s signal).
    pub fn can_kill(self) -> bool {
        match self {
            Status::Running => true,
            Status::Created | Status::Exited => false,
        }
    }

    /// Whether `delete` may remove it without forcing.
    pub fn can_remove(self) -> bool {
        match self {
            Status::Created | Status::Exited => true,
            Status::Running => false,
        }
    }

    /// Whether `wait` has an answer (the container is not running).
    pub fn can_wait(self) -> bool {
        match self {
            Status::Created | Status::Exited => true,
            Status::Running => false,
        }
    }

    /// Whether `exec` and `attach` can reach its process.
    pub fn can_exec(self) -> bool {
        self.can_kill()
    }

    /// Docker's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
}

/// The monitor process that owns the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorProcess {
    /// Host pid.
    pub pid: i32,
    /// Its start time (field 22 of `/proc/<pid>/stat`), so a recycled pid is
    /// never mistaken for it.
    pub start_time: u64,
}

impl MonitorProcess {
    /// The calling process.
    pub fn current() -> Option<MonitorProcess> {
        let pid = std::process::id() as i32;
        Some(MonitorProcess {
            pid,
            start_time: process_start_time(pid)?,
        })
    }

    /// Whether this very process still exists (not a zombie).
    pub fn alive(&self) -> bool {
        process_start_time(self.pid) == Some(self.start_time)
    }

    /// Sends `sig` if the process is still this one (a recycled pid is
    /// hit only in the microseconds between the check and the call).
    pub fn signal(&self, sig: Signal) -> bool {
        if !self.alive() {
            return false;
        }
        let (Some(pid), Some(sig)) = (
            rustix::process::Pid::from_raw(self.pid),
            rustix::process::Signal::from_named_raw(sig.as_raw()),
        ) else {
            return false;
        };
        rustix::process::kill_process(pid, sig).is_ok()
    }
}

/// The start time of live (non-zombie) process `pid`.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); start time is field 22.
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | None) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// A container's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Status.
    pub status: Status,
    /// The init process's pid inside the guest, once it runs.
    #[serde(default)]
    pub pid: Option<u32>,
    /// The monitor, while one owns the container.
    #[serde(default)]
    pub monitor: Option<MonitorProcess>,
    /// Exit code once exited (128+N after signal N).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why the container ended abnormally, or could not start.
    #[serde(default)]
    pub error: Option<String>,
    /// Last start (RFC 3339).
    #[serde(default)]
    pub started_at: Option<String>,
    /// Last exit (RFC 3339).
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Times the container was started.
    #[serde(default)]
    pub start_count: u32,
    /// Published ports of the current (or last) run with their actual host
    /// ports (entries in the untyped form of older states are dropped).
    #[serde(default, deserialize_with = "bound_ports")]
    pub ports: Vec<PortMapping>,
    /// The warm-start template the current (or last) run's VM was
    /// restored from; `None`: booted from the kernel.
    #[serde(default)]
    pub template: Option<String>,
    /// The guest kernel's OOM killer killed processes of the current (or
    /// last) run (Docker's `State.OOMKilled`).
    #[serde(default)]
    pub oom_killed: bool,
    /// The jail of the current (or last) run's VMM process (`None`: it
    /// ran unjailed in the monitor).
    #[serde(default)]
    pub jail: Option<husk_sandbox::JailInfo>,
    // Day-2 operations (issue #14).
    /// The VM's vCPUs are suspended (`husk pause`; Docker's
    /// `State.Paused`, status `paused`).
    #[serde(default)]
    pub paused: bool,
    /// Restarts by the restart policy since the last `start` (Docker's
    /// `RestartCount`).
    #[serde(default)]
    pub restart_count: u32,
    /// Waiting to be restarted by the restart policy (Docker's
    /// `State.Restarting`, status `restarting`).
    #[serde(default)]
    pub restarting: bool,
}

/// The typed entries of `ports`; strings (`80/tcp -> 0.0.0.0:8080`, from
/// states written before ports were typed) describe a past run and are
/// dropped.
fn bound_ports<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PortMapping>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Mapping(PortMapping),
        Legacy(serde::de::IgnoredAny),
    }
    Ok(Vec::<Stored>::deserialize(d)?
        .into_iter()
        .filter_map(|p| match p {
            Stored::Mapping(m) => Some(m),
            Stored::Legacy(_) => None,
        })
        .collect())
}

impl State {
    /// A freshly created container.
    pub fn created() -> State {
        State {
            status: Status::Created,
            pid: None,
            monitor: None,
            exit_code: None,
            error: None,
            started_at: None,
            finished_at: None,
            start_count: 0,
            ports: Vec::new(),
            template: None,
            oom_killed: false,
            jail: None,
            paused: false,
            restart_count: 0,
            restarting: false,
        }
    }

    /// Reads the state as recorded (no liveness check).
    pub fn read(paths: &ContainerPaths) -> Result<State, Error> {
        layout::read_json(&paths.state())
    }

    /// Writes the state atomically.
    pub fn write(&self, paths: &ContainerPaths) -> Result<(), Error> {
        layout::write_json(&paths.state(), self)
    }

    /// Reads the state and corrects a `running` state whose monitor is
    /// gone into the exit it amounts to (not written back).
    pub fn load(paths: &ContainerPaths) -> Result<State, Error> {
        let state = State::read(paths)?;
        if state.status != Status::Running || monitor_alive(paths) {
            return Ok(state);
        }
        // The monitor may have recorded the exit just before it ended.
        let state = State::read(paths)?;
        if state.status != Status::Running {
            return Ok(state);
        }
        Ok(state.monitor_died())
    }

    /// The exit a dead monitor leaves behind.
    pub fn monitor_died(mut self) -> State {
        self.status = Status::Exited;
        self.pid = None;
        self.exit_code = Some(MONITOR_DIED_CODE);
        self.paused = false;
        self.restarting = false;
        self.error = Some(MONITOR_DIED.to_string());
        if self.finished_at.is_none() {
            self.finished_at = Some(crate::time::now());
        }
        self
    }

    /// Docker's status word: `paused` for a paused running container.
    pub fn status_word(&self) -> &'static str {
        if self.restarting && self.status == Status::Running {
            "restarting"
        } else if self.paused && self.status == Status::Running {
            "paused"
        } else {
            self.status.as_str()
        }
    }

    /// Whether a monitor is (still) at work on this container.
    pub fn is_running(&self) -> bool {
        self.status == Status::Running
    }
}

/// Whether the container's monitor is alive (holds its lock).
pub fn monitor_alive(paths: &ContainerPaths) -> bool {
    layout::FileLock::is_held(&paths.monitor_lock())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_monitor_means_exited() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ContainerPaths {
            dir: dir.path().to_path_buf(),
        };
        let mut s = State::created();
        s.status = Status::Running;
        s.monitor = MonitorProcess::current();
        s.write(&paths).unwrap();
        let held = layout::lock(&paths.monitor_lock()).unwrap();
        assert_eq!(State::load(&paths).unwrap().status, Status::Running);
        drop(held);
        let s = State::load(&paths).unwrap();
        assert_eq!(s.status, Status::Exited);
        assert_eq!(s.exit_code, Some(MONITOR_DIED_CODE));
        assert!(s.error.unwrap().contains("monitor died"));
        assert!(s.finished_at.is_some());
    }

    #[test]
    fn lifecycle_rules_for_every_status() {
        // (status, start, kill, remove, wait, exec)
        let rules = [
            (Status::Created, true, false, true, true, false),
            (Status::Running, false, true, false, false, true),
            (Status::Exited, true, false, true, true, false),
        ];
        for (s, start, kill, remove, wait, exec) in rules {
            assert_eq!(s.can_start(), start, "{s:?} start");
            assert_eq!(s.can_kill(), kill, "{s:?} kill");
            assert_eq!(s.can_remove(), remove, "{s:?} remove");
            assert_eq!(s.can_wait(), wait, "{s:?} wait");
            assert_eq!(s.can_exec(), exec, "{s:?} exec");
        }
    }

    #[test]
    fn states_with_untyped_ports_still_load() {
        let mut s = serde_json::to_value(State::created()).unwrap();
        s["ports"] = serde_json::json!(["80/tcp -> 0.0.0.0:8080"]);
        let read: State = serde_json::from_value(s).unwrap();
        assert!(read.ports.is_empty());
    }

    #[test]
    fn process_identity() {
        let me = MonitorProcess::current().unwrap();
        assert!(me.alive());
        let other = MonitorProcess {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.alive());
        assert!(process_start_time(-5).is_none());
    }
}
