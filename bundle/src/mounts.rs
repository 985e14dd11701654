//! `mounts` of config.json: which are honoured, and how.
//!
//! - The standard mounts (`proc` at /proc, `sysfs` at /sys, `tmpfs` or
//!   `devtmpfs` at /dev, `devpts` at /dev/pts, `tmpfs`/`shm` (or a bind of
//!   the pod's shm directory) at /dev/shm, `mqueue` at /dev/mqueue,
//!   `cgroup`/`cgroup2` at /sys/fs/cgroup) are accepted: the agent sets up
//!   the guest's own /proc, /sys and /dev in every container.
//! - Other `tmpfs` mounts (containerd's default /run, a `--tmpfs`) are
//!   mounted by the agent in the guest, with their `size=`, `mode=`, `ro`,
//!   `nosuid`, `nodev`, `noexec` options (atime options are accepted and
//!   have no effect; any other option fails).
//! - A bind mount whose source is a regular file (/etc/hosts,
//!   /etc/resolv.conf, /etc/hostname, a secret...) is **copied** into the
//!   root when the container is created ([`ContainerFile`]): changes on
//!   either side later are not seen by the other, and `ro` is not
//!   enforced on the copy.
//! - A bind mount whose source is a directory (a Kubernetes volume:
//!   configMap, secret, emptyDir, hostPath...) is shared with the VM over
//!   virtio-fs and bound at its destination (`ro` honoured, by the host's
//!   server and in the guest): changes on either side are seen by the other.
//! - Everything else fails create with one line naming the mount: other
//!   filesystems, sockets and device nodes.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use husk_protocol::{TmpfsMount, MAX_FILE_BYTES};
use husk_runtime::{ContainerFile, VolumeRequest};
use oci_spec::runtime::Mount;

/// Why a mount cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A bind mount of something that is neither a file nor a directory.
    #[error("bind mount of {host} at {destination}: only regular files can be copied into the VM")]
    SourceKind {
        /// Host path.
        host: String,
        /// Container path.
        destination: String,
    },
    /// A file too large to copy.
    #[error("bind mount of {host} at {destination}: files copied into the VM are limited to {MAX_FILE_BYTES} bytes")]
    TooLarge {
        /// Host path.
        host: String,
        /// Container path.
        destination: String,
    },
    /// Another mount.
    #[error("mount of type {kind} at {destination} is not supported by husk (only the standard /proc, /sys, /dev mounts and file bind mounts are)")]
    Unsupported {
        /// Its type.
        kind: String,
        /// Container path.
        destination: String,
    },
    /// A tmpfs option husk does not know.
    #[error("tmpfs mount at {destination}: unsupported option {option:?}")]
    TmpfsOption {
        /// Container path.
        destination: String,
        /// The option.
        option: String,
    },
    /// The destination is not an absolute, clean path.
    #[error("mount destination {destination:?}: {why}")]
    Destination {
        /// Container path.
        destination: String,
        /// What is wrong.
        why: String,
    },
    /// Reading a bind mount's source failed.
    #[error("bind mount of {host} at {destination}")]
    Read {
        /// Host path.
        host: String,
        /// Container path.
        destination: String,
        /// The OS error.
        #[source]
        error: std::io::Error,
    },
}

/// The standard mounts: destination and the types accepted there.
const STANDARD: [(&str, &[&str]); 7] = [
    ("/proc", &["proc"]),
    ("/sys", &["sysfs"]),
    ("/dev", &["tmpfs", "devtmpfs"]),
    ("/dev/pts", &["devpts"]),
    ("/dev/shm", &["tmpfs", "shm", "bind"]),
    ("/dev/mqueue", &["mqueue"]),
    ("/sys/fs/cgroup", &["cgroup", "cgroup2"]),
];

/// The tmpfs mount options honoured besides `mode=` and `size=` (the
/// atime ones are accepted without effect).
pub const TMPFS_FLAGS: [&str; 15] = [
    "ro",
    "rw",
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "noexec",
    "exec",
    "strictatime",
    "relatime",
    "norelatime",
    "noatime",
    "atime",
    "nodiratime",
    "diratime",
];

/// What the mounts become in the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestMounts {
    /// Files copied into the root.
    pub files: Vec<ContainerFile>,
    /// tmpfs mounts.
    pub tmpfs: Vec<TmpfsMount>,
    /// Directory bind mounts ([`VolumeRequest::Bind`]).
    pub binds: Vec<VolumeRequest>,
}

/// The guest's side of `mounts`; `bundle` resolves relative sources.
pub fn translate(mounts: &[Mount], bundle: &Path) -> Result<GuestMounts, MountError> {
    let mut out = GuestMounts::default();
    for m in mounts {
        let destination = m.destination().to_string_lossy().into_owned();
        let options = m.options().as_deref().unwrap_or_default();
        let bind = m.typ().as_deref() == Some("bind")
            || options.iter().any(|o| o == "bind" || o == "rbind");
        let kind = if bind {
            "bind".to_string()
        } else {
            m.typ().clone().unwrap_or_else(|| "none".into())
        };
        let clean = destination.trim_end_matches('/');
        let standard = STANDARD
            .iter()
            .any(|(d, kinds)| *d == clean && kinds.contains(&kind.as_str()));
        if standard {
            continue;
        }
        if !bind && kind != "tmpfs" {
            return Err(MountError::Unsupported { kind, destination });
        }
        husk_runtime::options::check_mount_target(&destination).map_err(|why| {
            MountError::Destination {
                destination: destination.clone(),
                why,
            }
        })?;
        if !bind {
            let t = tmpfs(&destination, options)?;
            out.tmpfs.retain(|o| o.target != t.target);
            out.tmpfs.push(t);
            continue;
        }
        let source = bundle.join(m.source().clone().unwrap_or_default());
        if std::fs::metadata(&source).is_ok_and(|meta| meta.is_dir()) {
            out.binds.retain(|b| b.target() != destination);
            out.binds.push(VolumeRequest::Bind {
                source: source.display().to_string(),
                target: destination,
                read_only: options.iter().any(|o| o == "ro"),
                create_missing: false,
            });
            continue;
        }
        let file = copy(&source, &destination)?;
        // A later mount at the same place wins, as it would be on top.
        out.files.retain(|f| f.path != file.path);
        out.files.push(file);
    }
    Ok(out)
}

/// A tmpfs at `destination` with mount `options`.
fn tmpfs(destination: &str, options: &[String]) -> Result<TmpfsMount, MountError> {
    let mut t = TmpfsMount {
        target: destination.trim_end_matches('/').to_string(),
        size: None,
        mode: None,
        read_only: false,
        nosuid: false,
        nodev: false,
        noexec: false,
    };
    let bad = |o: &str| MountError::TmpfsOption {
        destination: destination.to_string(),
        option: o.to_string(),
    };
    for o in options {
        match o.as_str() {
            "ro" => t.read_only = true,
            "rw" => t.read_only = false,
            "nosuid" => t.nosuid = true,
            "suid" => t.nosuid = false,
            "nodev" => t.nodev = true,
            "dev" => t.nodev = false,
            "noexec" => t.noexec = true,
            "exec" => t.noexec = false,
            "strictatime" | "relatime" | "norelatime" | "noatime" | "atime" | "nodiratime"
            | "diratime" => {}
            other => {
                if let Some(mode) = other.strip_prefix("mode=") {
                    let mode = u32::from_str_radix(mode, 8).map_err(|_| bad(other))?;
                    if mode > 0o7777 {
                        return Err(bad(other));
                    }
                    t.mode = Some(mode);
                } else if let Some(size) = other.strip_prefix("size=") {
                    let digits = size.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', '%']);
                    let ok = !digits.is_empty()
                        && digits.len() + 1 >= size.len()
                        && digits.len() <= 20
                        && digits.bytes().all(|b| b.is_ascii_digit());
                    if !ok {
                        return Err(bad(other));
                    }
                    t.size = Some(size.to_string());
                } else {
                    return Err(bad(other));
                }
            }
        }
    }
    Ok(t)
}

/// The copy of bind mount source `source` for `destination`.
fn copy(source: &PathBuf, destination: &str) -> Result<ContainerFile, MountError> {
    let src = source.display().to_string();
    let read_err = |error| MountError::Read {
        host: src.clone(),
        destination: destination.to_string(),
        error,
    };
    let meta = std::fs::metadata(source).map_err(read_err)?;
    if !meta.is_file() {
        return Err(MountError::SourceKind {
            host: src,
            destination: destination.into(),
        });
    }
    let mut content = Vec::new();
    std::fs::File::open(source)
        .and_then(|f| f.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut content))
        .map_err(read_err)?;
    if content.len() > MAX_FILE_BYTES {
        return Err(MountError::TooLarge {
            host: src,
            destination: destination.into(),
        });
    }
    Ok(ContainerFile {
        path: destination.trim_end_matches('/').to_string(),
        content,
        mode: meta.permissions().mode() & 0o7777,
    })
}
