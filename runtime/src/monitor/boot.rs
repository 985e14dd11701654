//! The container's VM: its configuration (disk order and serials per the
//! shared decisions), the container spec for the agent, and how an early
//! end of the VM is explained.

use std::path::Path;

use husk_protocol::{ContainerSpec, ExecRequest, RootFs, VolumeMount};

use crate::config::ContainerConfig;
use crate::layout::ContainerPaths;
use crate::logs;
use crate::vmthread::VmResult;

/// The serial of the agent disk.
pub const AGENT_SERIAL: &str = "husk-agent";
/// The serial of the writable disk.
pub const RW_SERIAL: &str = "rw";
/// The guest's vsock context id.
pub const GUEST_CID: u64 = 3;
/// Kernel command line added to the VMM's own (`panic=-1`: a panic
/// reboots at once, which the monitor reports).
pub const CMDLINE: &str = "root=/dev/vda ro rootfstype=erofs init=/husk-agent quiet panic=-1";
/// Exit code of a container whose VM or agent failed.
pub const FAILED_CODE: i32 = 255;

/// Serial of layer disk `i`.
pub fn layer_serial(i: usize) -> String {
    format!("layer{i}")
}

/// Serial of volume disk `i`.
pub fn volume_serial(i: usize) -> String {
    format!("vol{i}")
}

/// The VM for `cfg`: agent disk, layers, writable disk, volumes, vsock.
pub fn vm_config(
    cfg: &ContainerConfig,
    paths: &ContainerPaths,
    volume_disks: &[std::path::PathBuf],
    vsock: &Path,
) -> vmm::VmConfig {
    let disk = |path: &Path, read_only: bool, serial: String| vmm::DiskConfig {
        path: path.to_path_buf(),
        read_only,
        serial,
    };
    let mut disks = vec![disk(&cfg.agent_disk, true, AGENT_SERIAL.into())];
    for (i, l) in cfg.layers.iter().enumerate() {
        disks.push(disk(l, true, layer_serial(i)));
    }
    disks.push(disk(&paths.rw_disk(), false, RW_SERIAL.into()));
    for (i, (m, path)) in cfg.mounts.iter().zip(volume_disks).enumerate() {
        disks.push(disk(path, m.read_only, volume_serial(i)));
    }
    vmm::VmConfig {
        kernel: cfg.kernel.clone(),
        initrd: None,
        cmdline_extra: CMDLINE.to_string(),
        vcpus: cfg.cpus,
        mem_mib: cfg.memory_mib,
        disks,
        vsock: Some(vmm::VsockConfig {
            guest_cid: GUEST_CID,
            uds_path: vsock.to_path_buf(),
        }),
        net: None,
        console: vmm::ConsoleOutput::File(paths.console()),
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
        root: RootFs::Layers {
            layers: (0..cfg.layers.len()).map(layer_serial).collect(),
            writable: RW_SERIAL.into(),
        },
        volumes: cfg
            .mounts
            .iter()
            .enumerate()
            .map(|(i, m)| VolumeMount {
                serial: volume_serial(i),
                fs_type: "ext4".into(),
                target: m.target.clone(),
                read_only: m.read_only,
            })
            .collect(),
        hostname: cfg.hostname.clone(),
        hosts: cfg.hosts.iter().chain(&net.hosts).cloned().collect(),
        resolv_conf: net.resolv_conf.clone().or_else(|| cfg.resolv_conf.clone()),
        network: net.spec.clone(),
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
    }
}

/// The panic line in the console log, if the guest kernel panicked.
pub fn kernel_panic(console: &Path) -> Option<String> {
    let text = logs::tail_text(console, 256 << 10);
    text.lines().find(|l| l.contains("Kernel panic")).map(|l| {
        let l = l.trim();
        // Drop the "[    1.234567] " timestamp.
        let l = match l.split_once("] ") {
            Some((ts, rest)) if ts.starts_with('[') => rest,
            _ => l,
        };
        l.chars().take(300).collect()
    })
}

/// Why the VM ended before the container's process did.
pub fn early_end(result: Option<&VmResult>, console: &Path, fallback: &str) -> String {
    if let Some(line) = kernel_panic(console) {
        return format!("guest kernel panic: {line}");
    }
    match result {
        Some(Err(e)) => format!("the VM failed: {}", crate::error_chain(e)),
        Some(Ok(vmm::ExitReason::Reboot)) => "the guest rebooted unexpectedly".into(),
        Some(Ok(vmm::ExitReason::PowerOff)) => {
            "the guest powered off before the container's process ended".into()
        }
        _ => fallback.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_are_found_in_the_console() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("console.log");
        std::fs::write(&c, "[    0.1] booting\n[    2.5] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009\n").unwrap();
        assert_eq!(
            kernel_panic(&c).unwrap(),
            "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009"
        );
        let why = early_end(Some(&Ok(vmm::ExitReason::Reboot)), &c, "x");
        assert!(why.starts_with("guest kernel panic: Kernel panic"), "{why}");
        std::fs::write(&c, "fine\n").unwrap();
        assert_eq!(
            early_end(Some(&Ok(vmm::ExitReason::Reboot)), &c, "x"),
            "the guest rebooted unexpectedly"
        );
        assert_eq!(early_end(None, &c, "fallback"), "fallback");
    }
}
