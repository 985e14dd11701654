//! The container's VM as the sandbox layer describes it (disks by role),
//! the container spec for the agent and the init process request.

use std::path::{Path, PathBuf};

use husk_protocol::{ContainerSpec, ExecRequest, FileSpec, ShareMount, VolumeMount};
use husk_sandbox::{contract, Disk, DiskRole, SandboxConfig};

use crate::config::ContainerConfig;
use crate::layout::ContainerPaths;

/// Exit code of a container whose VM or agent failed.
pub const FAILED_CODE: i32 = 255;

/// The VM for `cfg`: agent disk, layers, writable disk, volumes, shares, vsock at
/// `vsock`, network backend `net`, with `cfg`'s rate limits (a warm start
/// restores its devices from this config too, not from the template).
pub fn sandbox_config(
    cfg: &ContainerConfig,
    paths: &ContainerPaths,
    volume_disks: &[PathBuf],
    vsock: &Path,
    mut net: Option<vmm::NetConfig>,
) -> SandboxConfig {
    if let Some(net) = &mut net {
        net.rate_limit = cfg.io_limits.net();
    }
    let mut disks = Disk::image_disks(&cfg.layers, &paths.rw_disk());
    for (i, (m, path)) in cfg.mounts.iter().zip(volume_disks).enumerate() {
        disks.push(Disk {
            path: path.clone(),
            role: DiskRole::Volume(i),
            read_only: m.read_only,
        });
    }
    SandboxConfig {
        kernel: cfg.kernel.clone(),
        agent_disk: cfg.agent_disk.clone(),
        disks,
        vcpus: cfg.cpus,
        memory_mib: cfg.memory_mib,
        net,
        disk_rate_limit: cfg.io_limits.disk(),
        console: paths.console(),
        vsock: vsock.to_path_buf(),
        start: cfg.start,
        shares: cfg.binds.iter().map(|b| b.share()).collect(),
    }
}

/// The guest's side of the container's network, for [`container_spec`].
#[derive(Clone, Debug, Default)]
pub struct GuestNet {
    /// The interface; `None`: loopback only.
    pub spec: Option<husk_protocol::NetworkSpec>,
    /// /etc/resolv.conf replacing the configured one, if any.
    pub resolv_conf: Option<String>,
    /// /etc/hosts lines added to the configured ones.
    pub hosts: Vec<String>,
}

impl GuestNet {
    /// What `net` gives a guest named `hostname`.
    pub fn of(net: &husk_net::Network, hostname: &str) -> GuestNet {
        GuestNet {
            spec: net.spec(),
            resolv_conf: net.resolv_conf(),
            hosts: net.hosts(hostname),
        }
    }
}

/// What the agent assembles.
pub fn container_spec(cfg: &ContainerConfig, net: &GuestNet) -> ContainerSpec {
    ContainerSpec {
        root: contract::image_root(cfg.layers.len()),
        volumes: cfg
            .mounts
            .iter()
            .enumerate()
            .map(|(i, m)| VolumeMount {
                serial: DiskRole::Volume(i).serial(),
                fs_type: "ext4".into(),
                target: m.target.clone(),
                read_only: m.read_only,
            })
            .collect(),
        shares: cfg
            .binds
            .iter()
            .enumerate()
            .map(|(i, b)| ShareMount {
                source: b.share().export_path(i),
                target: b.target.clone(),
                read_only: b.read_only,
            })
            .collect(),
        hostname: cfg.hostname.clone(),
        hosts: cfg.hosts.iter().chain(&net.hosts).cloned().collect(),
        resolv_conf: net
            .resolv_conf
            .clone()
            .or_else(|| cfg.resolv_conf.clone())
            .map(|conf| cfg.run_flags.dns.apply(&conf)),
        network: net.spec.clone(),
        files: cfg
            .files
            .iter()
            .map(|f| FileSpec {
                path: f.path.clone(),
                content: f.content.clone(),
                mode: f.mode,
            })
            .collect(),
        tmpfs: cfg.tmpfs.clone(),
        sysctls: cfg.sysctls.clone(),
        read_only_root: cfg.run_flags.read_only,
    }
}

/// The init process request.
pub fn init_request(cfg: &ContainerConfig, size: Option<(u16, u16)>) -> ExecRequest {
    let p = &cfg.process;
    ExecRequest {
        argv: p.argv.clone(),
        env: p.env.clone(),
        cwd: p.cwd.clone(),
        user: p.user.clone(),
        tty: p.tty,
        stdin: p.stdin,
        size: p.tty.then(|| size.unwrap_or((24, 80))),
        security: p.security.clone(),
    }
}
