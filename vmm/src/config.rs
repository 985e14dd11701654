//! What a VM is made of, as the caller describes it, and its validation.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::arch::x86_64::layout::{IOAPIC_PINS, VIRTIO_FIRST_IRQ};
use crate::arch::x86_64::mptable::MAX_CPUS;
use crate::devices::virtio::vsock::VsockStreams;
use crate::memory::{MAX_MEM_MIB, MIN_MEM_MIB};
use crate::rate_limiter::RateLimitConfig;
use crate::seccomp::SeccompMode;

/// A VM to boot. Serialisable (for a VMM in another process) except for
/// the network interface, whose backend may be an open socket.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VmConfig {
    /// Uncompressed x86_64 vmlinux (ELF).
    pub kernel: PathBuf,
    /// Optional initramfs (newc cpio, possibly compressed).
    pub initrd: Option<PathBuf>,
    /// Appended after everything the VMM puts on the kernel command line.
    pub cmdline_extra: String,
    /// Number of vCPUs, 1..=32.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// Disks, in order: they become /dev/vda, /dev/vdb... (virtio-mmio slots in order).
    pub disks: Vec<DiskConfig>,
    /// Optional virtio-vsock device (after the disks).
    pub vsock: Option<VsockConfig>,
    /// Optional virtio-net interface (after the vsock device).
    #[serde(skip)]
    pub net: Option<NetConfig>,
    /// Optional virtio-fs device (after the network interface). Guest RAM
    /// is then a memfd shared with its backend, and the VM cannot be
    /// snapshotted.
    pub fs: Option<FsConfig>,
    /// Where the serial console goes.
    pub console: ConsoleOutput,
    /// The seccomp filters of the VM's threads.
    pub seccomp: SeccompMode,
}

/// A virtio-blk disk.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DiskConfig {
    /// Image file or block device; `None` is an empty slot (capacity 0,
    /// every read and write fails) that a snapshot restore may fill.
    pub path: Option<PathBuf>,
    /// Expose the disk read-only.
    pub read_only: bool,
    /// virtio-blk serial (GET_ID), at most 20 bytes.
    pub serial: String,
    /// Limits on the disk's read and write bytes and requests (default:
    /// none). Taken from the restoring VM's config on a snapshot restore.
    pub rate_limit: RateLimitConfig,
}

/// A virtio-vsock device bridged to Unix sockets (Firecracker's hybrid model).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VsockConfig {
    /// The guest's context ID (3 or more).
    pub guest_cid: u64,
    /// The Unix socket the VMM listens on; guest connections to host port P
    /// go to `<uds_path>_P`.
    pub uds_path: PathBuf,
    /// A listener already bound (by a more privileged process) that
    /// replaces binding `uds_path`; its socket file is then the caller's
    /// (never removed by the VMM). Not serialised: passed as a descriptor.
    #[serde(skip)]
    pub listener: Option<Arc<UnixListener>>,
    /// What the guest sends on its connections: with
    /// [`VsockStreams::AgentFrames`] the VMM decodes every frame and
    /// forwards only their re-encodings. Given anew to every boot and
    /// restore.
    #[serde(default)]
    pub streams: VsockStreams,
}

/// A virtio-fs device whose requests a vhost-user backend (virtiofsd) serves.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FsConfig {
    /// The tag the guest mounts (`mount -t virtiofs TAG /mnt`), 1..=36 bytes.
    pub tag: String,
    /// The vhost-user socket, connected to the backend. Not serialised: passed
    /// as a descriptor (like `VsockConfig::listener`).
    #[serde(skip)]
    pub socket: Option<Arc<UnixStream>>,
}

/// A virtio-net interface.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The interface's MAC address (unicast).
    pub mac: [u8; 6],
    /// The MTU offered to the guest (68..=65535): 65520 suits passt, the
    /// MTU of the host side for a TAP device (usually 1500).
    pub mtu: u16,
    /// Where the interface's frames go.
    pub backend: NetBackend,
    /// Guest destinations the device keeps from the backend. Given anew
    /// to every boot and restore (a snapshot does not keep it).
    pub egress: crate::devices::virtio::net::EgressPolicy,
    /// Limits on the frames each way (default: none). Taken from the
    /// restoring VM's config on a snapshot restore.
    pub rate_limit: NetRateLimit,
}

/// The rate limits of a network interface, one per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetRateLimit {
    /// Frames from the host to the guest.
    pub rx: RateLimitConfig,
    /// Frames from the guest to the host.
    pub tx: RateLimitConfig,
}

/// The host side of a virtio-net interface.
#[derive(Debug, Clone)]
pub enum NetBackend {
    /// Connect to this Unix stream socket and exchange frames prefixed by
    /// a 4-byte big-endian length (QEMU's `-netdev stream`, passt).
    Unix(PathBuf),
    /// An already connected stream socket speaking the same framing (e.g.
    /// one end of a socket pair whose other end was given to `passt -F`).
    Stream(Arc<UnixStream>),
    /// Attach to the TAP device of this name (created if missing, which
    /// needs CAP_NET_ADMIN).
    Tap(String),
}

/// Destination of the guest's serial console.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConsoleOutput {
    /// The VMM process's standard output.
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
    /// Discarded.
    Sink,
}

/// Most virtio devices: one IOAPIC pin each, from [`VIRTIO_FIRST_IRQ`] up.
pub const MAX_VIRTIO_DEVICES: usize = (IOAPIC_PINS - VIRTIO_FIRST_IRQ) as usize;

/// Errors in a [`VmConfig`] found before anything is created.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// vCPU count out of range.
    #[error("{0} vCPUs requested; 1..={MAX_CPUS} are supported")]
    Vcpus(u8),
    /// Memory size out of range.
    #[error("{0} MiB of memory requested; {MIN_MEM_MIB}..={MAX_MEM_MIB} MiB are supported")]
    Memory(u32),
    /// More devices than interrupt lines.
    #[error("{0} virtio devices requested; at most {MAX_VIRTIO_DEVICES} are supported")]
    TooManyDevices(usize),
    /// Reserved or out-of-range vsock CID.
    #[error("vsock guest CID {0} is invalid (must be 3..=4294967294)")]
    GuestCid(u64),
    /// The initramfs is missing.
    #[error("initramfs {0} does not exist")]
    InitrdMissing(PathBuf),
    /// The directory of the vsock socket is missing.
    #[error("vsock socket directory {0} does not exist")]
    VsockDir(PathBuf),
    /// The network MTU is too small.
    #[error("network MTU {0} is invalid (must be 68..=65535)")]
    NetMtu(u16),
    /// The MAC address is not a unicast address.
    #[error("MAC address {0} is not a unicast address")]
    NetMac(String),
    /// The virtio-fs tag is empty, too long or has a NUL.
    #[error("virtio-fs tag {0:?} is invalid (must be 1 to 36 bytes, no NUL)")]
    FsTag(String),
    /// The virtio-fs device has no vhost-user socket.
    #[error("the virtio-fs device {0:?} has no vhost-user socket (FsConfig::socket)")]
    FsSocket(String),
}

impl VmConfig {
    /// Checks sizes, counts and paths that can be checked without KVM.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_CPUS).contains(&self.vcpus) {
            return Err(ConfigError::Vcpus(self.vcpus));
        }
        if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&self.mem_mib) {
            return Err(ConfigError::Memory(self.mem_mib));
        }
        let devices = self.disks.len()
            + usize::from(self.vsock.is_some())
            + usize::from(self.net.is_some())
            + usize::from(self.fs.is_some());
        if devices > MAX_VIRTIO_DEVICES {
            return Err(ConfigError::TooManyDevices(devices));
        }
        if let Some(initrd) = &self.initrd {
            if !initrd.exists() {
                return Err(ConfigError::InitrdMissing(initrd.clone()));
            }
        }
        if let Some(v) = &self.vsock {
            if !(3..u64::from(u32::MAX)).contains(&v.guest_cid) {
                return Err(ConfigError::GuestCid(v.guest_cid));
            }
            let dir = v.uds_path.parent().unwrap_or(Path::new("."));
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if !dir.is_dir() {
                return Err(ConfigError::VsockDir(dir.to_path_buf()));
            }
        }
        if let Some(net) = &self.net {
            if net.mtu < 68 {
                return Err(ConfigError::NetMtu(net.mtu));
            }
            if net.mac[0] & 1 != 0 || net.mac == [0; 6] {
                return Err(ConfigError::NetMac(
                    crate::devices::virtio::net::format_mac(&net.mac),
                ));
            }
        }
        if let Some(fs) = &self.fs {
            if crate::devices::virtio::fs::check_tag(&fs.tag).is_err() {
                return Err(ConfigError::FsTag(fs.tag.clone()));
            }
            if fs.socket.is_none() {
                return Err(ConfigError::FsSocket(fs.tag.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> VmConfig {
        VmConfig {
            kernel: "/k".into(),
            initrd: None,
            cmdline_extra: String::new(),
            vcpus: 1,
            mem_mib: 128,
            disks: vec![],
            vsock: None,
            net: None,
            fs: None,
            console: ConsoleOutput::Sink,
            seccomp: SeccompMode::Enforce,
        }
    }

    #[test]
    fn net_checks() {
        let net = |mac: [u8; 6], mtu| {
            Some(NetConfig {
                mac,
                mtu,
                backend: NetBackend::Tap("t0".into()),
                egress: Default::default(),
                rate_limit: Default::default(),
            })
        };
        let ok = [0x52, 0x54, 0, 1, 2, 3];
        assert!(VmConfig {
            net: net(ok, 1500),
            ..base()
        }
        .validate()
        .is_ok());
        let c = VmConfig {
            net: net(ok, 67),
            ..base()
        };
        assert!(matches!(c.validate(), Err(ConfigError::NetMtu(67))));
        let c = VmConfig {
            net: net([1, 0, 0, 0, 0, 0], 1500),
            ..base()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "MAC address 01:00:00:00:00:00 is not a unicast address"
        );
        assert!(VmConfig {
            net: net([0; 6], 1500),
            ..base()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn limits() {
        assert!(base().validate().is_ok());
        let c = VmConfig { vcpus: 0, ..base() };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "0 vCPUs requested; 1..=32 are supported"
        );
        assert!(VmConfig {
            vcpus: 33,
            ..base()
        }
        .validate()
        .is_err());
        assert!(VmConfig {
            vcpus: 32,
            ..base()
        }
        .validate()
        .is_ok());
        assert!(VmConfig {
            mem_mib: 8,
            ..base()
        }
        .validate()
        .is_err());
        let disk = DiskConfig {
            path: Some("/d".into()),
            read_only: true,
            serial: "s".into(),
            rate_limit: Default::default(),
        };
        let c = VmConfig {
            disks: vec![disk; MAX_VIRTIO_DEVICES + 1],
            ..base()
        };
        assert!(matches!(c.validate(), Err(ConfigError::TooManyDevices(20))));
    }

    #[test]
    fn vsock_and_initrd() {
        let vs = |cid, p: &str| {
            Some(VsockConfig {
                guest_cid: cid,
                uds_path: p.into(),
                listener: None,
                streams: VsockStreams::Raw,
            })
        };
        assert!(VmConfig {
            vsock: vs(2, "/tmp/v.sock"),
            ..base()
        }
        .validate()
        .is_err());
        assert!(VmConfig {
            vsock: vs(3, "/tmp/v.sock"),
            ..base()
        }
        .validate()
        .is_ok());
        assert!(VmConfig {
            vsock: vs(3, "v.sock"),
            ..base()
        }
        .validate()
        .is_ok());
        assert!(matches!(
            VmConfig {
                vsock: vs(3, "/nonexistent/dir/v.sock"),
                ..base()
            }
            .validate(),
            Err(ConfigError::VsockDir(_))
        ));
        let c = VmConfig {
            initrd: Some("/nonexistent/initrd".into()),
            ..base()
        };
        assert!(matches!(c.validate(), Err(ConfigError::InitrdMissing(_))));
    }

    #[test]
    fn fs_checks() {
        let (a, _b) = UnixStream::pair().unwrap();
        let fs = |tag: &str, socket: Option<Arc<UnixStream>>| {
            Some(FsConfig {
                tag: tag.into(),
                socket,
            })
        };
        let sock = Some(Arc::new(a));
        assert!(VmConfig {
            fs: fs("husk", sock.clone()),
            ..base()
        }
        .validate()
        .is_ok());
        let c = VmConfig {
            fs: fs("husk", None),
            ..base()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "the virtio-fs device \"husk\" has no vhost-user socket (FsConfig::socket)"
        );
        for tag in ["", &"t".repeat(37), "a\0b"] {
            let c = VmConfig {
                fs: fs(tag, sock.clone()),
                ..base()
            };
            assert!(
                matches!(c.validate(), Err(ConfigError::FsTag(_))),
                "{tag:?}"
            );
        }
        let disk = DiskConfig {
            path: Some("/d".into()),
            read_only: true,
            serial: "s".into(),
            rate_limit: Default::default(),
        };
        let c = VmConfig {
            disks: vec![disk; MAX_VIRTIO_DEVICES],
            fs: fs("husk", sock.clone()),
            ..base()
        };
        assert!(matches!(c.validate(), Err(ConfigError::TooManyDevices(20))));
        // The socket is not serialised.
        let c = VmConfig {
            fs: fs("husk", sock),
            ..base()
        };
        let json = serde_json::to_string(&c).unwrap();
        let back: VmConfig = serde_json::from_str(&json).unwrap();
        let fs = back.fs.unwrap();
        assert_eq!(fs.tag, "husk");
        assert!(fs.socket.is_none());
    }
}
