//! Containers on KVM microVMs: the lifecycle library behind `husk run`,
//! `husk ps`, `husk exec`... and, next, a containerd shim and an OCI runtime
//! CLI.
//!
//! A container is described by a [`ContainerPlan`] (from an image and
//! flags with [`Runtime::plan`], or from an OCI bundle with the
//! `husk-bundle` crate) and created from it by [`Runtime::create_from`].
//! It lives in `<root>/containers/<id>/` (see [`layout`]): its
//! configuration (`config.json`, written once at creation), its
//! state (`state.json`, replaced atomically), its writable disk, its logs and
//! the Unix sockets of its VM. [`Runtime::create`] prepares all that without
//! a VM; [`Runtime::start`] launches a detached **monitor** process (see
//! [`monitor`]) that owns the VM for the container's whole run, records the
//! state, writes the logs and serves attach clients. Everything else
//! ([`Runtime::kill`], [`Runtime::stop`], [`Runtime::exec`]...) talks to the
//! guest agent directly over the VM's vsock socket, or to the monitor.
//!
//! Nothing here trusts the monitor to be alive: a monitor killed at any
//! point (and its VM with it, since the VMM runs inside it) is detected by
//! its lock file, reported as an exit, and cleaned up by [`Runtime::delete`].

pub mod attach;
pub mod binds;
pub mod config;
pub mod copy;
pub mod exec;
pub mod id;
pub mod layout;
mod lifecycle;
pub mod logs;
mod maintenance;
mod manage;
pub mod monitor;
pub mod options;
pub mod plan;
pub mod ports;
pub mod relay;
pub mod run_flags;
pub mod security;
pub mod state;
pub mod stats;
mod store;
pub mod time;
pub mod volume;

// Day-2 operations (issue #14): the event log.
pub mod events;
pub mod health;
mod pause;
pub mod restart;

/// Signals as a pollable fd and Docker's signal names (from the sandbox
/// layer).
pub use husk_sandbox::signals;
/// Connections to the guest over the VMM's vsock socket (from the sandbox
/// layer).
pub use husk_sandbox::vsock;

use std::io;
use std::path::{Path, PathBuf};

pub use config::{BindMount, ContainerConfig, ContainerFile, Mount, ProcessConfig, Signal};
pub use exec::ExecOptions;
pub use id::ContainerId;
pub use layout::Layout;
pub use lifecycle::{MonitorCommand, StdioWiring};
pub use manage::Pruned;
pub use options::{CreateOptions, VolumeRequest};
pub use plan::{ContainerPlan, VmBoot};
pub use security::{CapFlag, SecurityFlags};
pub use state::{State, Status};
pub use store::{Container, DeleteOptions};
pub use volume::{Volume, VolumeError};

/// Errors of the lifecycle operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container has this name or ID (prefix).
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// An ID prefix matches several containers.
    #[error("container ID prefix {0} is ambiguous")]
    Ambiguous(String),
    /// The name is taken.
    #[error("the container name \"/{name}\" is already in use by container {id}; remove or rename that container")]
    NameInUse {
        /// The name.
        name: String,
        /// The container that has it.
        id: String,
    },
    /// The name has characters Docker does not allow.
    #[error("invalid container name \"{0}\": only [a-zA-Z0-9][a-zA-Z0-9_.-]+ are allowed")]
    InvalidName(String),
    /// Neither the image nor the command line gives a command.
    #[error("no command specified")]
    NoCommand,
    /// A flag value is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The image store refused.
    #[error(transparent)]
    Image(#[from] images::StoreError),
    /// The image's layer disks could not be prepared.
    #[error(transparent)]
    Layer(#[from] images::LayerError),
    /// A volume operation failed.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// The container runs and the operation needs it stopped.
    #[error("cannot {action} running container {id}: stop the container first, or force it")]
    Running {
        /// What was attempted.
        action: &'static str,
        /// Short ID.
        id: String,
    },
    /// The container does not run and the operation needs it running.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The container is already running.
    #[error("container {0} is already running")]
    AlreadyRunning(String),
    /// The monitor could not be started or failed before the container ran.
    #[error("starting the container monitor: {0}")]
    Monitor(String),
    /// The container's process could not be started in the guest.
    #[error("{detail}")]
    Exec {
        /// Docker's exit code for the failure (125, 126, 127).
        code: i32,
        /// What the agent (or the monitor) reported.
        detail: String,
    },
    /// The container's network could not be set up.
    #[error(transparent)]
    Network(#[from] husk_net::NetError),
    /// Talking to the guest agent failed.
    #[error("talking to the container's agent: {0}")]
    Agent(String),
    /// A maintenance VM (for `cp`, `diff`, `export` or `commit` on a
    /// stopped container) failed.
    #[error("{0}")]
    Vm(String),
    /// A stored document is corrupt.
    #[error("{path}: invalid JSON")]
    Json {
        /// The file.
        path: PathBuf,
        /// Parser error.
        #[source]
        source: serde_json::Error,
    },
    /// A filesystem or process operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Waiting for something took longer than allowed.
    #[error("timed out {0}")]
    Timeout(String),
}

/// Shorthand for [`Error::Io`] with context.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

pub use husk_sandbox::explain::error_chain;

/// The lifecycle operations on one store root.
#[derive(Clone, Debug)]
pub struct Runtime {
    layout: Layout,
    monitor: MonitorCommand,
}

impl Runtime {
    /// Opens (creating the directories if needed) the container store
    /// under `root` (the same root as the image store). Monitors are
    /// started with [`MonitorCommand::current_exe`].
    pub fn open(root: &Path) -> Result<Runtime, Error> {
        let root =
            std::path::absolute(root).map_err(io_err(format!("resolving {}", root.display())))?;
        let layout = Layout::new(&root);
        layout.create_dirs()?;
        Ok(Runtime {
            layout,
            monitor: MonitorCommand::current_exe(),
        })
    }

    /// Uses `monitor` to start monitors (e.g. a shim's own binary).
    pub fn with_monitor(mut self, monitor: MonitorCommand) -> Runtime {
        self.monitor = monitor;
        self
    }

    /// The store layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The image store under the same root.
    pub fn image_store(&self) -> Result<images::Store, Error> {
        Ok(images::Store::open(self.layout.root())?)
    }

    /// The event log under the same root.
    pub fn events(&self) -> events::EventLog {
        events::EventLog::new(&self.layout)
    }

    /// Records container event `action` (with `extra` attributes).
    pub(crate) fn container_event(
        &self,
        cfg: &ContainerConfig,
        action: &str,
        extra: &[(&str, String)],
    ) {
        self.events()
            .record(&events::Event::container(cfg, action, extra));
    }
}
