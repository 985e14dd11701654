//! `config.json`: everything a container is created with. Written once by
//! [`crate::Runtime::create`]; the monitor boots every run from it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use husk_net::{NetworkMode, PortMapping};
use serde::{Deserialize, Serialize};

pub use husk_sandbox::signals::{InvalidSignal, Signal};

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
    pub process: ProcessConfig,
    /// The container's hostname.
    pub hostname: String,
    /// Extra /etc/hosts lines.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// /etc/resolv.conf content; `None` keeps the image's.
    #[serde(default)]
    pub resolv_conf: Option<String>,
    /// Files copied into the root after it is assembled (an OCI bundle's
    /// file bind mounts).
    #[serde(default)]
    pub files: Vec<ContainerFile>,
    /// tmpfs filesystems mounted in the root (an OCI bundle's tmpfs
    /// mounts, e.g. /run).
    #[serde(default)]
    pub tmpfs: Vec<husk_protocol::TmpfsMount>,
    /// Kernel parameters set in the guest (an OCI bundle's
    /// `linux.sysctl`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sysctls: Vec<husk_protocol::Sysctl>,
    /// vCPUs of the VM.
    pub cpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Volumes, in disk order (`vol0`, `vol1`, ...).
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Host directories and files bound into the container (virtio-fs),
    /// in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<BindMount>,
    /// Signal `stop` sends first.
    pub stop_signal: Signal,
    /// Seconds `stop` waits before SIGKILL.
    pub stop_timeout: u64,
    /// Remove the container when it exits (`--rm`).
    pub auto_remove: bool,
    /// Published ports: the `-p` values, then (`-P`) the image's exposed
    /// ports; a host port of 0 is chosen when the network starts.
    #[serde(default, deserialize_with = "stored_ports")]
    pub ports: Vec<PortMapping>,
    /// `--network`.
    #[serde(default)]
    pub network: NetworkMode,
    /// `--add-host` entries, appended to /etc/hosts; a `host-gateway` one
    /// lifts the block on the host (see [`husk_net::passt::egress_policy`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<husk_net::ExtraHost>,
    /// The guest kernel.
    pub kernel: PathBuf,
    /// The agent disk.
    pub agent_disk: PathBuf,
    /// Seconds the guest may take to boot and reach the agent.
    pub boot_timeout: u64,
    /// Warm start (restore from a template) or cold boot.
    #[serde(default)]
    pub start: husk_sandbox::StartMode,
    /// The security flags as given (for `inspect`; what the processes get
    /// is [`ProcessConfig::security`]).
    #[serde(default)]
    pub security_flags: crate::security::SecurityFlags,
    /// How `log.json` is rotated (`--log-opt`; containers created before
    /// it existed get the default cap).
    #[serde(default)]
    pub log_config: crate::logs::LogConfig,
    /// Annotations (an OCI bundle's, reported in the OCI state).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Disk and network rate limits (`--disk-bps`, `--disk-iops`,
    /// `--net-bps`); none by default.
    #[serde(default, skip_serializing_if = "IoLimits::is_unlimited")]
    pub io_limits: IoLimits,
    // Day-2 operations (issue #14).
    /// `--restart` (the monitor restarts the VM as it says).
    #[serde(default)]
    pub restart_policy: crate::restart::RestartPolicy,
    /// The health check (flags over the image's `HEALTHCHECK`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::HealthConfig>,
    // Labels and run flags (see [`crate::run_flags`]).
    /// Labels (`Config.Labels`): the image's, overridden by `-l` and
    /// `--label-file`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `--dns*`, `--read-only`, `--init`, `--shm-size`.
    #[serde(
        default,
        skip_serializing_if = "crate::run_flags::RunFlags::is_default"
    )]
    pub run_flags: crate::run_flags::RunFlags,
}

/// Rate limits on the container VM's devices; 0 is unlimited. Each is a
/// token bucket holding one second's worth, so a guest that was idle may
/// spend up to one second of its rate at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoLimits {
    /// Bytes per second read plus written, on each of the container's
    /// disks (image layers, writable disk, volumes; not husk's agent disk).
    #[serde(default)]
    pub disk_bps: u64,
    /// Read and write requests per second, on each of those disks.
    #[serde(default)]
    pub disk_iops: u64,
    /// Bytes per second each way (guest to host, host to guest) on the
    /// network interface.
    #[serde(default)]
    pub net_bps: u64,
}

impl IoLimits {
    /// Whether nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        *self == Self::default()
    }

    /// What each container disk gets.
    pub fn disk(&self) -> vmm::RateLimitConfig {
        vmm::RateLimitConfig {
            bandwidth: vmm::BucketConfig::per_second(self.disk_bps),
            ops: vmm::BucketConfig::per_second(self.disk_iops),
        }
    }

    /// What the network interface gets, each way.
    pub fn net(&self) -> vmm::NetRateLimit {
        let each_way = vmm::RateLimitConfig {
            bandwidth: vmm::BucketConfig::per_second(self.net_bps),
            ops: vmm::BucketConfig::default(),
        };
        vmm::NetRateLimit {
            rx: each_way,
            tx: each_way,
        }
    }
}

/// The container's init process (also the defaults of `exec`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessConfig {
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
    /// Supplementary groups, capabilities, resource limits and
    /// `no_new_privs` (also the defaults of `exec`).
    #[serde(default)]
    pub security: husk_protocol::ProcessSecurity,
}

/// A regular file copied into the container's root (owned by root).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerFile {
    /// Absolute path inside the container.
    pub path: String,
    /// Content (base64 in `config.json`).
    #[serde(with = "base64_bytes")]
    pub content: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// `Vec<u8>` as a base64 string.
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
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

/// A host directory or file bound into the container (`-v /host:/path`,
/// `--mount type=bind`, an OCI bundle's bind mounts), shared over
/// virtio-fs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// The host path, absolute with symlinks resolved (at create).
    pub source: PathBuf,
    /// A directory or a regular file.
    pub kind: husk_sandbox::ShareKind,
    /// Path inside the container.
    pub target: String,
    /// Bound read-only.
    pub read_only: bool,
}

impl BindMount {
    /// What the sandbox serves for it.
    pub fn share(&self) -> husk_sandbox::Share {
        husk_sandbox::Share {
            source: self.source.clone(),
            kind: self.kind,
            read_only: self.read_only,
        }
    }
}

impl ContainerConfig {
    /// `"/bin/sh -c 'x'"`-style command line (arguments joined by spaces).
    pub fn command_line(&self) -> String {
        self.process.argv.join(" ")
    }
}

/// Reads `ports` as stored now (objects), or as `-p` strings, the form
/// configs had before the mappings were typed.
fn stored_ports<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PortMapping>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Mapping(PortMapping),
        Flag(String),
    }
    let mut out = Vec::new();
    for p in Vec::<Stored>::deserialize(d)? {
        match p {
            Stored::Mapping(m) => out.push(m),
            Stored::Flag(s) => {
                out.extend(husk_net::parse_port_spec(&s).map_err(serde::de::Error::custom)?)
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_read_typed_or_as_flags() {
        #[derive(Deserialize)]
        struct Ports {
            #[serde(deserialize_with = "stored_ports")]
            ports: Vec<PortMapping>,
        }
        let typed = husk_net::parse_port_spec("127.0.0.1:8080:80").unwrap();
        let json = serde_json::json!({ "ports": typed }).to_string();
        let read: Ports = serde_json::from_str(&json).unwrap();
        assert_eq!(read.ports, typed);
        let old: Ports =
            serde_json::from_str(r#"{"ports": ["127.0.0.1:8080:80", "53/udp"]}"#).unwrap();
        assert_eq!(old.ports[0], typed[0]);
        assert_eq!(old.ports[1].container_port, 53);
        assert!(serde_json::from_str::<Ports>(r#"{"ports": ["80:x"]}"#).is_err());
    }

    #[test]
    fn file_content_is_base64() {
        let f = ContainerFile {
            path: "/etc/hosts".into(),
            content: b"127.0.0.1 localhost\n\xff".to_vec(),
            mode: 0o644,
        };
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains("MTI3"), "{json}");
        assert_eq!(serde_json::from_str::<ContainerFile>(&json).unwrap(), f);
        let bad = json.replace("MTI3", "!!!!");
        assert!(serde_json::from_str::<ContainerFile>(&bad).is_err());
    }
}
