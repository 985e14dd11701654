//! `exec`: a new process in a running container, straight through the
//! agent's exec port (no monitor involved).

use std::time::Duration;

use husk_protocol::{ExecRequest, Message};
use husk_sandbox::{AgentConnection, AgentError};

use crate::config::ContainerConfig;
use crate::layout::{ContainerPaths, ShortPath};
use crate::relay::{self, ClientIo, Outcome};
use crate::state::State;
use crate::{options, vsock, Error, Runtime};

/// Timeout of each step of connecting to the agent.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// An `exec` request; unset fields default to the container's.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    /// The command.
    pub argv: Vec<String>,
    /// `KEY=VALUE` entries added to the container's environment.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Allocate a pseudo-terminal.
    pub tty: bool,
    /// Forward stdin.
    pub stdin: bool,
    /// Initial terminal size (rows, cols).
    pub size: Option<(u16, u16)>,
    /// `--privileged`: every capability; otherwise the process gets the
    /// container's security settings.
    pub privileged: bool,
    /// Settings of its own instead of the container's (an OCI exec
    /// process spec carries them); `privileged` still applies on top.
    pub security: Option<husk_protocol::ProcessSecurity>,
}

impl ExecOptions {
    /// The request for the agent, with the container's defaults.
    pub fn request(&self, config: &ContainerConfig) -> Result<ExecRequest, Error> {
        if self.argv.is_empty() {
            return Err(Error::NoCommand);
        }
        let mut env = config.process.env.clone();
        for e in &self.env {
            if !e.contains('=') || e.starts_with('=') {
                return Err(Error::Invalid(format!("invalid environment entry {e:?}")));
            }
            options::set_env(&mut env, e.clone());
        }
        if self.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        let mut security = self
            .security
            .clone()
            .unwrap_or_else(|| config.process.security.clone());
        if self.privileged {
            security.capabilities = Some(husk_protocol::Capabilities::all());
        }
        Ok(ExecRequest {
            argv: self.argv.clone(),
            env,
            cwd: self
                .workdir
                .clone()
                .unwrap_or_else(|| config.process.cwd.clone()),
            user: self
                .user
                .clone()
                .unwrap_or_else(|| config.process.user.clone()),
            tty: self.tty,
            stdin: self.stdin,
            size: self.tty.then(|| self.size.unwrap_or((24, 80))),
            security,
        })
    }
}

/// Connects to the agent's exec port of the running container in
/// `paths`, greeted and ready for one request.
pub fn connect_agent(paths: &ContainerPaths, short_id: &str) -> Result<AgentConnection, Error> {
    let state = State::load(paths)?;
    if !state.status.can_exec() {
        return Err(Error::NotRunning(short_id.to_string()));
    }
    if state.paused {
        return Err(Error::Invalid(format!(
            "Container {short_id} is paused, unpause the container before exec"
        )));
    }
    let sock = ShortPath::new(&paths.dir, ContainerPaths::VSOCK)?;
    AgentConnection::connect_exec(sock.path(), CONNECT_TIMEOUT).map_err(|e| match e {
        AgentError::Connect(vsock::ConnectError::Refused { .. }) if state.pid.is_none() => {
            Error::Agent(format!(
                "container {short_id} is still starting; try again when its process runs"
            ))
        }
        other => Error::Agent(crate::error_chain(&other)),
    })
}

impl Runtime {
    /// Starts `opts` in running container `name` and returns the session,
    /// positioned after the `Exec` request (the `Started` or `Error` reply
    /// comes next: [`AgentConnection::started`], or [`relay::relay`]).
    /// Writes to it may block without limit.
    pub fn exec_start(&self, name: &str, opts: &ExecOptions) -> Result<AgentConnection, Error> {
        let c = self.container(name)?;
        let req = opts.request(&c.config)?;
        let mut conn = connect_agent(&c.paths, c.id.short())?;
        let failed = |e: AgentError| Error::Agent(crate::error_chain(&e));
        let cmd = opts.argv.join(" ");
        self.container_event(&c.config, &format!("exec_create: {cmd}"), &[]);
        conn.send(&Message::Exec(req)).map_err(failed)?;
        conn.set_write_timeout(None).map_err(failed)?;
        self.container_event(&c.config, &format!("exec_start: {cmd}"), &[]);
        Ok(conn)
    }

    /// Records the end of an exec session started by
    /// [`Runtime::exec_start`] (`exec_die`, with its exit code if known).
    pub fn exec_died(&self, name: &str, exit_code: Option<i32>) {
        if let Ok(c) = self.container(name) {
            let extra: Vec<(&str, String)> = exit_code
                .map(|code| ("exitCode", code.to_string()))
                .into_iter()
                .collect();
            self.container_event(&c.config, "exec_die", &extra);
        }
    }

    /// Runs `opts` in container `name` with the given local stdio and
    /// returns how it ended.
    pub fn exec(&self, name: &str, opts: &ExecOptions, io: &ClientIo) -> Result<Outcome, Error> {
        let mut conn = self.exec_start(name, opts)?;
        let outcome = relay::relay(&mut conn, io).map_err(|e| Error::Agent(crate::error_chain(&e)));
        self.exec_died(name, outcome.as_ref().ok().and_then(Outcome::exit_code));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_protocol::{Capabilities, ProcessSecurity};

    fn config(security: ProcessSecurity) -> ContainerConfig {
        let mut cfg: ContainerConfig = serde_json::from_value(serde_json::json!({
            "id": "0".repeat(64), "name": "c", "created": "", "image": "i", "image_id": "",
            "layers": [], "hostname": "h", "cpus": 1, "memory_mib": 256,
            "stop_signal": 15, "stop_timeout": 10, "auto_remove": false,
            "kernel": "/k", "agent_disk": "/a", "boot_timeout": 90,
            "process": {
                "argv": ["sh"], "env": ["PATH=/bin"], "cwd": "/", "user": "",
                "tty": false, "stdin": false
            },
        }))
        .unwrap();
        cfg.process.security = security;
        cfg
    }

    #[test]
    fn execs_inherit_the_containers_security_and_privileged_adds_every_capability() {
        let security = ProcessSecurity {
            additional_gids: vec![4321],
            capabilities: Some(Capabilities::from_mask(1 << 10)),
            no_new_privileges: true,
            ..ProcessSecurity::default()
        };
        let cfg = config(security.clone());
        let opts = ExecOptions {
            argv: vec!["id".into()],
            ..ExecOptions::default()
        };
        assert_eq!(opts.request(&cfg).unwrap().security, security);
        let privileged = ExecOptions {
            privileged: true,
            ..opts
        };
        let got = privileged.request(&cfg).unwrap().security;
        assert_eq!(got.capabilities, Some(Capabilities::all()));
        assert_eq!(
            (got.additional_gids, got.no_new_privileges),
            (vec![4321], true)
        );
    }
}
