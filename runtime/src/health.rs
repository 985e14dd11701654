//! Health checks (`--health-cmd` and friends, or the image's
//! `HEALTHCHECK`): while the container's process runs, a thread of its
//! monitor runs the check every interval as an exec session through the
//! agent (the one agent path, [`AgentConnection`]), and records the result
//! in `health.json` in the container's directory (written only by that
//! thread, atomically) and, when the status changes, as a
//! `health_status: healthy|unhealthy` event.
//!
//! Status: `starting` until the first success (failures within the start
//! period do not count), `healthy` after a success, `unhealthy` after
//! `retries` failures in a row. Docker's `State.Health` keeps the last five
//! results.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use husk_protocol::Message;
use husk_sandbox::wait::Watch;
use husk_sandbox::AgentConnection;
use serde::{Deserialize, Serialize};

use crate::config::ContainerConfig;
use crate::events::{Event, EventLog};
use crate::exec::{ExecOptions, CONNECT_TIMEOUT};
use crate::layout::{self, ContainerPaths};
use crate::state::State;

/// Docker's default interval, timeout (30 s) and retries (3).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Docker's default timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Docker's default retries.
pub const DEFAULT_RETRIES: u32 = 3;
/// Results kept.
const KEEP: usize = 5;
/// Output kept per result (Docker: 4096 bytes).
const MAX_OUTPUT: usize = 4096;

/// A container's health check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// The command run in the container (`CMD-SHELL x` is `/bin/sh -c x`).
    pub argv: Vec<String>,
    /// Between checks.
    pub interval: Duration,
    /// A check running longer fails.
    pub timeout: Duration,
    /// Failures in a row that make the container unhealthy.
    pub retries: u32,
    /// Failures within this time after the start do not count.
    pub start_period: Duration,
}

/// The `--health-*` flags.
#[derive(Clone, Debug, Default)]
pub struct HealthFlags {
    /// `--health-cmd` (run by `/bin/sh -c`).
    pub cmd: Option<String>,
    /// `--health-interval`.
    pub interval: Option<Duration>,
    /// `--health-timeout`.
    pub timeout: Option<Duration>,
    /// `--health-retries`.
    pub retries: Option<u32>,
    /// `--health-start-period`.
    pub start_period: Option<Duration>,
    /// `--no-healthcheck`.
    pub none: bool,
}

/// The image's `Healthcheck` (Docker's config field; durations in ns).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageHealthcheck {
    /// `["CMD-SHELL", cmd]`, `["CMD", argv...]` or `["NONE"]`.
    #[serde(default)]
    pub test: Vec<String>,
    /// Nanoseconds (0: default).
    #[serde(default)]
    pub interval: u64,
    /// Nanoseconds (0: default).
    #[serde(default)]
    pub timeout: u64,
    /// Nanoseconds.
    #[serde(default)]
    pub start_period: u64,
    /// 0: default.
    #[serde(default)]
    pub retries: u32,
}

impl HealthFlags {
    /// The check: the flags over the image's, Docker's defaults for what
    /// neither sets; `None` with `--no-healthcheck`, `NONE` or no test.
    pub fn resolve(
        &self,
        image: Option<&ImageHealthcheck>,
    ) -> Result<Option<HealthConfig>, String> {
        if self.none {
            if self.cmd.is_some() {
                return Err("--no-healthcheck conflicts with --health-* options".into());
            }
            return Ok(None);
        }
        let argv = match (&self.cmd, image.map(|i| i.test.as_slice())) {
            (Some(cmd), _) => shell(cmd),
            (None, Some([kind, cmd])) if kind == "CMD-SHELL" => shell(cmd),
            (None, Some([kind, argv @ ..])) if kind == "CMD" && !argv.is_empty() => argv.to_vec(),
            _ => return Ok(None),
        };
        let ns = |v: u64| (v > 0).then(|| Duration::from_nanos(v));
        let pick = |flag: Option<Duration>, img: Option<u64>| flag.or_else(|| img.and_then(ns));
        let interval = pick(self.interval, image.map(|i| i.interval)).unwrap_or(DEFAULT_INTERVAL);
        let timeout = pick(self.timeout, image.map(|i| i.timeout)).unwrap_or(DEFAULT_TIMEOUT);
        let start_period =
            pick(self.start_period, image.map(|i| i.start_period)).unwrap_or_default();
        for (name, d) in [
            ("--health-interval", interval),
            ("--health-timeout", timeout),
        ] {
            if d < Duration::from_millis(1) {
                return Err(format!("{name} cannot be less than 1ms"));
            }
        }
        let retries = self
            .retries
            .or_else(|| image.map(|i| i.retries).filter(|r| *r > 0))
            .unwrap_or(DEFAULT_RETRIES);
        Ok(Some(HealthConfig {
            argv,
            interval,
            timeout,
            retries,
            start_period,
        }))
    }
}

fn shell(cmd: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), cmd.into()]
}

/// One check's result (Docker's `State.Health.Log` entries).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthResult {
    /// RFC 3339.
    pub start: String,
    /// RFC 3339.
    pub end: String,
    /// The check's exit code (-1: it could not run or timed out).
    pub exit_code: i32,
    /// Its output (stdout and stderr, at most 4096 bytes).
    pub output: String,
}

/// Docker's `State.Health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Failures in a row.
    pub failing_streak: u32,
    /// The last results, oldest first.
    pub log: Vec<HealthResult>,
}

impl Health {
    fn starting() -> Health {
        Health {
            status: "starting".into(),
            failing_streak: 0,
            log: Vec::new(),
        }
    }

    /// The recorded health of the container at `paths` (`None`: no check,
    /// or none recorded yet).
    pub fn read(paths: &ContainerPaths) -> Option<Health> {
        layout::read_json(&health_path(paths)).ok()
    }

    /// Adds `r`; failures count once `counting` (after the start
    /// period). Returns whether the status changed.
    fn add(&mut self, r: HealthResult, retries: u32, counting: bool) -> bool {
        let before = self.status.clone();
        if r.exit_code == 0 {
            self.failing_streak = 0;
            self.status = "healthy".into();
        } else if counting {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = "unhealthy".into();
            }
        }
        self.log.push(r);
        if self.log.len() > KEEP {
            self.log.remove(0);
        }
        self.status != before
    }
}

fn health_path(paths: &ContainerPaths) -> PathBuf {
    paths.dir.join("health.json")
}

/// The monitor's health-check thread for one run of the container.
pub struct Checker {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Checker {
    /// Starts checking the container of `cfg` (its health check is
    /// `check`) through the agent at `vsock`.
    pub fn start(
        check: HealthConfig,
        cfg: &ContainerConfig,
        paths: &ContainerPaths,
        vsock: &Path,
        events: EventLog,
    ) -> std::io::Result<Checker> {
        let (stop, stopped) = mpsc::channel();
        let job = Job {
            check,
            cfg: cfg.clone(),
            paths: paths.clone(),
            vsock: vsock.to_path_buf(),
            events,
        };
        let handle = std::thread::Builder::new()
            .name("health".into())
            .spawn(move || job.run(&stopped))?;
        Ok(Checker {
            stop: Some(stop),
            handle: Some(handle),
        })
    }
}

impl Drop for Checker {
    /// Tells the thread to stop; not waited for (a check under way ends
    /// within its timeout, and the monitor's loop must not wait for it).
    fn drop(&mut self) {
        drop(self.stop.take());
        drop(self.handle.take());
    }
}

struct Job {
    check: HealthConfig,
    cfg: ContainerConfig,
    paths: ContainerPaths,
    vsock: PathBuf,
    events: EventLog,
}

impl Job {
    fn run(&self, stopped: &mpsc::Receiver<()>) {
        let began = Instant::now();
        let mut health = Health::starting();
        self.write(&health);
        // The interval's timer: the channel closes when the run ends.
        while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(self.check.interval) {
            if State::read(&self.paths).is_ok_and(|s| s.paused) {
                continue;
            }
            let result = self.once();
            let counting = began.elapsed() >= self.check.start_period;
            let changed = health.add(result, self.check.retries, counting);
            // The state first, then the event: whoever reacts to the event
            // reads the state it announces (inspect's Status, FailingStreak).
            self.write(&health);
            if changed {
                let action = format!("health_status: {}", health.status);
                self.events
                    .record(&Event::container(&self.cfg, &action, &[]));
            }
        }
    }

    fn write(&self, health: &Health) {
        if let Err(e) = layout::write_json(&health_path(&self.paths), health) {
            eprintln!("husk monitor: recording the health: {e}");
        }
    }

    /// Runs the check once.
    fn once(&self) -> HealthResult {
        let start = crate::time::now();
        let (exit_code, output) = match self.exec() {
            Ok(done) => done,
            Err(why) => (-1, why),
        };
        HealthResult {
            start,
            end: crate::time::now(),
            exit_code,
            output,
        }
    }

    /// The check's exit code and output, or why it did not finish.
    fn exec(&self) -> Result<(i32, String), String> {
        let opts = ExecOptions {
            argv: self.check.argv.clone(),
            ..ExecOptions::default()
        };
        let req = opts.request(&self.cfg).map_err(|e| e.to_string())?;
        let failed = |e: husk_sandbox::AgentError| crate::error_chain(&e);
        let mut conn =
            AgentConnection::connect_exec(&self.vsock, CONNECT_TIMEOUT).map_err(failed)?;
        conn.send(&Message::Exec(req)).map_err(failed)?;
        let deadline = Instant::now() + self.check.timeout;
        let mut output = Vec::new();
        loop {
            let msg = conn
                .next(&Watch::none(), Some(deadline))
                .map_err(|e| match e {
                    husk_sandbox::AgentError::Timeout => format!(
                        "Health check exceeded timeout ({}s)",
                        self.check.timeout.as_secs_f64()
                    ),
                    other => failed(other),
                })?;
            match msg {
                Message::Stdout(b) | Message::Stderr(b) => {
                    let room = MAX_OUTPUT.saturating_sub(output.len());
                    output.extend_from_slice(&b[..b.len().min(room)]);
                }
                Message::Exited { code } => {
                    return Ok((code, String::from_utf8_lossy(&output).into_owned()))
                }
                Message::Signaled { signal } => {
                    return Ok((
                        husk_protocol::signal_exit_code(signal),
                        String::from_utf8_lossy(&output).into_owned(),
                    ))
                }
                Message::Error { detail, .. } => return Err(detail),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(code: i32) -> HealthResult {
        HealthResult {
            start: String::new(),
            end: String::new(),
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn flags_over_the_image_and_dockers_defaults() {
        let image = ImageHealthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval: 5_000_000_000,
            retries: 7,
            ..Default::default()
        };
        let c = HealthFlags::default()
            .resolve(Some(&image))
            .unwrap()
            .unwrap();
        assert_eq!(c.argv, ["true"]);
        assert_eq!(
            (c.interval, c.timeout, c.retries),
            (Duration::from_secs(5), DEFAULT_TIMEOUT, 7)
        );
        let flags = HealthFlags {
            cmd: Some("test -e /ok".into()),
            interval: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let c = flags.resolve(Some(&image)).unwrap().unwrap();
        assert_eq!(c.argv, ["/bin/sh", "-c", "test -e /ok"]);
        assert_eq!(c.interval, Duration::from_secs(1));
        let none = HealthFlags {
            none: true,
            ..Default::default()
        };
        assert_eq!(none.resolve(Some(&image)).unwrap(), None);
        let nothing = ImageHealthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        };
        assert_eq!(
            HealthFlags::default().resolve(Some(&nothing)).unwrap(),
            None
        );
        assert_eq!(HealthFlags::default().resolve(None).unwrap(), None);
    }

    #[test]
    fn status_follows_results_and_retries() {
        let mut h = Health::starting();
        assert!(!h.add(result(1), 2, false), "start period: not counted");
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 0));
        assert!(h.add(result(0), 2, true));
        assert_eq!(h.status, "healthy");
        assert!(!h.add(result(1), 2, true));
        assert!(h.add(result(1), 2, true));
        assert_eq!((h.status.as_str(), h.failing_streak), ("unhealthy", 2));
        for _ in 0..5 {
            h.add(result(0), 2, true);
        }
        assert_eq!(h.log.len(), KEEP);
        assert_eq!(h.status, "healthy");
    }
}
