//! Shared host directories and files (virtio-fs): the export is mounted
//! once per VM and each share bound at its target inside the container's
//! root, read-only when asked (the host serves those read-only too).
//!
//! Only used when the agent runs as PID 1 in the VM. The spec has been
//! validated ([`crate::spec::check_shares`]) before this runs.

use std::fs::OpenOptions;
use std::path::Path;

use husk_protocol::{ShareMount, SHARE_TAG};
use rustix::mount::MountFlags;

use crate::guest::mount_data;
use crate::rootfs::{io_err, mkdir_p};
use crate::spec::resolve_in_root;
use crate::system::SysError;

/// Where the virtio-fs export is mounted (outside the container's root).
const SHARES_DIR: &str = "/run/husk/shares";

/// Mounts the export and binds every share into `root`. Missing targets
/// are made like their source: a directory, or an empty file.
pub fn mount(root: &Path, shares: &[ShareMount]) -> Result<(), SysError> {
    if shares.is_empty() {
        return Ok(());
    }
    let export = Path::new(SHARES_DIR);
    mkdir_p(export)?;
    mount_data(SHARE_TAG, SHARES_DIR, "virtiofs", MountFlags::NODEV, None)?;
    for share in shares {
        bind(root, export, share)?;
    }
    Ok(())
}

/// Binds one share at its target (and remounts the bind read-only).
fn bind(root: &Path, export: &Path, share: &ShareMount) -> Result<(), SysError> {
    let source = export.join(&share.source);
    let meta = std::fs::symlink_metadata(&source)
        .map_err(io_err(format!("reading {}", source.display())))?;
    let target = resolve_in_root(root, &share.target).map_err(|e| SysError::Invalid(e.0))?;
    make_target(&target, meta.is_dir())?;
    let src = source.to_string_lossy();
    let dst = target.to_string_lossy();
    mount_data(&src, &dst, "", MountFlags::BIND, None)?;
    if share.read_only {
        let flags = MountFlags::BIND | MountFlags::RDONLY | MountFlags::NODEV;
        rustix::mount::mount_remount(&target, flags, "").map_err(|e| SysError::Mount {
            what: format!("{src} (read-only)"),
            target: dst.to_string(),
            source: e.into(),
        })?;
    }
    Ok(())
}

/// A directory, or an empty file, at `target` unless something is there.
fn make_target(target: &Path, dir: bool) -> Result<(), SysError> {
    if std::fs::symlink_metadata(target).is_ok() {
        return Ok(());
    }
    if dir {
        return mkdir_p(target);
    }
    if let Some(parent) = target.parent() {
        mkdir_p(parent)?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(target)
        .map(drop)
        .map_err(io_err(format!("creating {}", target.display())))
}
