//! How the day-2 operations that read or write a container's files (`cp`,
//! `diff`, `export`, `commit`) reach its agent: the running container's VM
//! through its exec port, or, for a container that is `created` or
//! `exited`, a short-lived **maintenance VM** (issue #14: `husk cp` works
//! on stopped containers too).
//!
//! A maintenance VM is the container's own VM (`monitor::boot::sandbox_config`:
//! the same layers, writable disk, volumes and shares) without a network
//! and without ports, booted through the one sandbox path. The agent
//! creates the container (`CreateContainer`), whose init process never
//! starts; the operation's questions go to the exec port as for a running
//! container (the agent answers them from the root it assembled, not from
//! the init's namespace); then the host half-closes the boot connection,
//! and the agent tears the container down (writable disks unmounted),
//! closes the connection and powers off.
//!
//! The container's `lock` (the one `start`, `rm` and `rename` take) is
//! held for the maintenance VM's whole life, so `husk start` waits until
//! it is over instead of booting a second VM on the same disks; the
//! volumes are claimed as a monitor claims them. The container's state is
//! left as it was (still `created` or `exited`) and no event is recorded:
//! the container did not run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use husk_sandbox::{contract, AgentConnection, Sandbox, Signals};

use crate::exec::{connect_agent, CONNECT_TIMEOUT};
use crate::layout::{self, ContainerPaths, ShortPath};
use crate::monitor::boot::{self, GuestNet};
use crate::state::{self, State, Status};
use crate::store::Container;
use crate::{error_chain, Error, Runtime};

/// How long the agent may take to tear a maintenance VM's container down,
/// and then the guest to power off (minutes on nested-KVM hosts).
const TEARDOWN_TIMEOUT: Duration = crate::monitor::TEARDOWN_TIMEOUT;

/// Where an operation's agent connections come from.
pub(crate) enum AgentLink<'a> {
    /// The running container's VM.
    Running {
        /// The container's files.
        paths: &'a ContainerPaths,
        /// Its short ID (for errors).
        short_id: &'a str,
    },
    /// A maintenance VM whose VMM socket is this.
    Maintenance {
        /// The VMM's vsock socket.
        vsock: &'a Path,
    },
}

impl AgentLink<'_> {
    /// A new connection to the agent's exec port (each question is alone
    /// on its connection).
    pub(crate) fn connect(&self) -> Result<AgentConnection, Error> {
        match self {
            AgentLink::Running { paths, short_id } => connect_agent(paths, short_id),
            AgentLink::Maintenance { vsock } => {
                AgentConnection::connect_exec(vsock, CONNECT_TIMEOUT)
                    .map_err(|e| Error::Agent(error_chain(&e)))
            }
        }
    }
}

/// How a container in `state` is reached.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Its running VM.
    Running,
    /// A maintenance VM (created or exited).
    Maintenance,
}

/// How a container in `state` (short ID `id`) is reached, or why it
/// cannot be now.
pub(crate) fn reach(state: &State, id: &str) -> Result<Reach, Error> {
    match state.status {
        Status::Running if state.restarting => Err(Error::Invalid(format!(
            "container {id} is restarting: wait until it runs, or stop it"
        ))),
        Status::Running if state.paused => Err(Error::Invalid(format!(
            "container {id} is paused, unpause the container first"
        ))),
        Status::Running => Ok(Reach::Running),
        Status::Created | Status::Exited => Ok(Reach::Maintenance),
    }
}

impl Runtime {
    /// Runs `op` with a way to reach container `name`'s agent: its running
    /// VM, or a maintenance VM booted for `op` alone (see the module's
    /// description) and ended when `op` returns, whatever it returned.
    pub(crate) fn with_agent<T>(
        &self,
        name: &str,
        op: impl FnOnce(&AgentLink<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let c = self.container(name)?;
        let short = c.id.short().to_string();
        if reach(&c.state, &short)? == Reach::Running {
            return op(&AgentLink::Running {
                paths: &c.paths,
                short_id: &short,
            });
        }
        let busy = layout::lock(&c.paths.lock())?;
        // A start may have won the lock meanwhile: the container runs.
        let now = State::load(&c.paths)?;
        if reach(&now, &short)? == Reach::Running {
            drop(busy);
            return op(&AgentLink::Running {
                paths: &c.paths,
                short_id: &short,
            });
        }
        // The previous run's monitor may still be letting go of the disks.
        crate::lifecycle::wait_until(crate::lifecycle::OLD_MONITOR_WAIT, || {
            !state::monitor_alive(&c.paths)
        })
        .map_err(|_| Error::Timeout("waiting for the previous run's monitor to exit".into()))?;
        let result = self.maintenance(&c, op);
        drop(busy);
        result
    }

    /// Boots `c`'s maintenance VM, runs `op` against it and ends it.
    fn maintenance<T>(
        &self,
        c: &Container,
        op: impl FnOnce(&AgentLink<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let cfg = &c.config;
        let vols = self.volumes();
        let mut claims = Vec::new();
        let mut volume_disks = Vec::new();
        for m in &cfg.mounts {
            claims.push(vols.claim(&m.name)?);
            volume_disks.push(vols.get(&m.name)?.disk);
        }
        // Interrupted, the VM is still ended and its files removed.
        let signals = Signals::install_for(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
            .map_err(crate::io_err("installing signal handlers"))?;
        let vsock = ShortPath::new(&c.paths.dir, ContainerPaths::VSOCK)?;
        let config = boot::sandbox_config(cfg, &c.paths, &volume_disks, vsock.path(), None);
        let failed = |what: &str, e: &dyn std::error::Error| {
            Error::Vm(format!(
                "container {}: {what}: {}",
                c.id.short(),
                error_chain(e)
            ))
        };
        // A VM that failed to start may leave its sockets: none stay.
        let _sockets = RemoveOnDrop(vec![
            vsock.path().to_path_buf(),
            contract::host_port_socket(vsock.path(), contract::AGENT_PORT),
        ]);
        let mut sandbox = Sandbox::start(&config, Some(&signals))
            .map_err(|e| failed("booting its maintenance VM", &e))?;
        let boot_timeout = Duration::from_secs(cfg.boot_timeout);
        let mut agent = match sandbox.accept_agent(Some(&signals), boot_timeout) {
            Ok(a) => a,
            Err(e) => {
                let why = sandbox.explain_end(&error_chain(&e));
                return Err(Error::Vm(format!(
                    "container {}: booting its maintenance VM: {why}",
                    c.id.short()
                )));
            }
        };
        let spec = boot::container_spec(cfg, &GuestNet::default());
        let created = {
            let watch = sandbox.watch(Some(&signals));
            agent.create_container(spec, &watch, Some(Instant::now() + boot_timeout))
        };
        let result = match created {
            Ok(()) => op(&AgentLink::Maintenance {
                vsock: vsock.path(),
            }),
            Err(e) => Err(failed("assembling it in its maintenance VM", &e)),
        };
        let clean =
            sandbox.end_without_init(agent, Some(&signals), TEARDOWN_TIMEOUT, TEARDOWN_TIMEOUT);
        drop(sandbox);
        drop(claims);
        if let Some(sig) = signals.received() {
            return Err(Error::Vm(format!("interrupted by signal {sig}")));
        }
        match result {
            Ok(_) if !clean => Err(Error::Vm(format!(
                "container {}: its maintenance VM did not shut down cleanly (see {}); \
                 what was written may be incomplete",
                c.id.short(),
                c.paths.console().display()
            ))),
            other => other,
        }
    }
}

/// Files removed (if there) when dropped.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_containers_are_reached_directly_stopped_ones_by_a_maintenance_vm() {
        let mut s = State::created();
        assert_eq!(reach(&s, "c").unwrap(), Reach::Maintenance);
        s.status = Status::Exited;
        assert_eq!(reach(&s, "c").unwrap(), Reach::Maintenance);
        s.status = Status::Running;
        assert_eq!(reach(&s, "c").unwrap(), Reach::Running);
        s.paused = true;
        let err = reach(&s, "c").unwrap_err().to_string();
        assert!(err.contains("paused"), "{err}");
        s.paused = false;
        s.restarting = true;
        let err = reach(&s, "c").unwrap_err().to_string();
        assert!(err.contains("restarting"), "{err}");
    }
}
