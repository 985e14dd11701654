//! `config.json`: everything a container is created with. Written once by
//! [`crate::Runtime::create`]; the monitor boots every run from it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A container's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Full ID.
    pub id: String,
    /// Name (without Docker's leading `/`).
    pub name: String,
    /// Creation time (RFC 3339, nanoseconds).
    pub created: String,
    /// The image as the user named it.
    pub image: String,
    /// The image ID (`sha256:...`).
    pub image_id: String,
    /// The image's layer disks, bottom first (read-only EROFS).
    pub layers: Vec<PathBuf>,
    /// The init process.
    pub process: ProcessSpec,
    /// The container's hostname.
    pub hostname: String,
    /// Extra /etc/hosts lines.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// /etc/resolv.conf content; `None` keeps the image's.
    #[serde(default)]
    pub resolv_conf: Option<String>,
    /// vCPUs of the VM.
    pub cpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Volumes, in disk order (`vol0`, `vol1`, ...).
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Signal `stop` sends first (number).
    pub stop_signal: i32,
    /// Seconds `stop` waits before SIGKILL.
    pub stop_timeout: u64,
    /// Remove the container when it exits (`--rm`).
    pub auto_remove: bool,
    /// Published ports: the `-p` values, then (`-P`) the image's exposed
    /// ports; each is a [`husk_net::parse_port_spec`] specification.
    #[serde(default)]
    pub ports: Vec<String>,
    /// `--network` ([`husk_net::NetworkMode`] syntax); empty: the default
    /// (passt).
    #[serde(default)]
    pub network: String,
    /// The guest kernel.
    pub kernel: PathBuf,
    /// The agent disk.
    pub agent_disk: PathBuf,
    /// Seconds the guest may take to boot and reach the agent.
    pub boot_timeout: u64,
}

/// The container's init process (also the defaults of `exec`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Entrypoint + command.
    pub argv: Vec<String>,
    /// `KEY=VALUE` environment.
    pub env: Vec<String>,
    /// Working directory (created if missing).
    pub cwd: String,
    /// User as Docker spells it (`""` = root).
    pub user: String,
    /// Allocate a pseudo-terminal.
    pub tty: bool,
    /// Keep stdin open (`-i`).
    pub stdin: bool,
}

/// A volume attached to the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Volume name.
    pub name: String,
    /// Path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// Created for this container (an image `VOLUME` or `-v /path`).
    pub anonymous: bool,
}

impl ContainerConfig {
    /// `"/bin/sh -c 'x'"`-style command line (arguments joined by spaces).
    pub fn command_line(&self) -> String {
        self.process.argv.join(" ")
    }
}
