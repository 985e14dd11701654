//! `mounts` of config.json: which are honoured, and how.
//!
//! - The standard mounts (`proc` at /proc, `sysfs` at /sys, `tmpfs` or
//!   `devtmpfs` at /dev, `devpts` at /dev/pts, `tmpfs`/`shm` (or a bind of
//!   the pod's shm directory) at /dev/shm, `mqueue` at /dev/mqueue,
//!   `cgroup`/`cgroup2` at /sys/fs/cgroup) are accepted: the agent sets up
//!   the guest's own /proc, /sys and /dev in every container.
//! - A bind mount whose source is a regular file (/etc/hosts,
//!   /etc/resolv.conf, /etc/hostname, a secret...) is **copied** into the
//!   root when the container is created ([`ContainerFile`]): changes on
//!   either side later are not seen by the other, and `ro` is not
//!   enforced on the copy.
//! - Everything else fails create with one line naming the mount:
//!   directory bind mounts (they need a filesystem shared with the VM,
//!   virtio-fs, which husk does not have yet), other filesystems, sockets
//!   and device nodes.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use husk_protocol::MAX_FILE_BYTES;
use husk_runtime::ContainerFile;
use oci_spec::runtime::Mount;

/// Why a mount cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A directory bind mount.
    #[error("bind mount of directory {host} at {destination}: directory bind mounts need a filesystem shared with the VM (virtio-fs), which husk does not have yet")]
    DirectoryBind {
        /// Host path.
        host: String,
        /// Container path.
        destination: String,
    },
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

/// The files to copy for `mounts`; `bundle` resolves relative sources.
pub fn translate(mounts: &[Mount], bundle: &Path) -> Result<Vec<ContainerFile>, MountError> {
    let mut files: Vec<ContainerFile> = Vec::new();
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
        if !bind {
            return Err(MountError::Unsupported { kind, destination });
        }
        husk_runtime::options::check_mount_target(&destination).map_err(|why| {
            MountError::Destination {
                destination: destination.clone(),
                why,
            }
        })?;
        let source = m.source().clone().unwrap_or_default();
        let file = copy(&bundle.join(&source), &destination)?;
        // A later mount at the same place wins, as it would be on top.
        files.retain(|f| f.path != file.path);
        files.push(file);
    }
    Ok(files)
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
    if meta.is_dir() {
        return Err(MountError::DirectoryBind {
            host: src,
            destination: destination.into(),
        });
    }
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
