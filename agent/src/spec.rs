//! Validation of what the host asks for, and resolving paths inside the
//! container's root without following symlinks out of it.

use std::path::{Component, Path, PathBuf};

use husk_protocol::{
    ContainerSpec, ExecRequest, FileSpec, RootFs, ShareMount, Sysctl, TmpfsMount, MAX_FILES,
    MAX_FILES_BYTES, MAX_FILE_BYTES, MAX_SHARES, MAX_SYSCTLS,
};

/// Most layer disks a container may stack.
pub const MAX_LAYERS: usize = 128;
/// Most volumes a container may mount.
pub const MAX_VOLUMES: usize = 64;
/// Most extra /etc/hosts lines.
pub const MAX_HOSTS: usize = 1024;
/// Longest /etc/hosts line, path or argument list entry count.
const MAX_LINE: usize = 4096;
/// Largest /etc/resolv.conf.
const MAX_RESOLV: usize = 64 * 1024;
/// Filesystems a volume may have.
const VOLUME_FS: [&str; 3] = ["ext4", "ext2", "erofs"];
/// Filesystems a plain root disk may have.
const ROOT_FS: [&str; 3] = VOLUME_FS;
/// Most symlinks followed while resolving one path (like the kernel's 40).
const MAX_SYMLINKS: usize = 40;

/// A request the agent refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Invalid(pub String);

fn bad(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// A virtio-blk serial: 1-20 bytes of `[A-Za-z0-9._-]`.
pub fn check_serial(serial: &str) -> Result<(), Invalid> {
    let ok = (1..=20).contains(&serial.len())
        && serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(bad(format!("invalid disk serial {serial:?}")))
    }
}

/// An absolute path without NUL bytes or `..` components.
pub fn check_abs_path(what: &str, path: &str) -> Result<(), Invalid> {
    let p = Path::new(path);
    if !p.is_absolute() || path.contains('\0') || path.len() > MAX_LINE {
        return Err(bad(format!("{what} {path:?} is not a valid absolute path")));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(bad(format!("{what} {path:?} contains \"..\"")));
    }
    Ok(())
}

fn check_hostname(name: &str) -> Result<(), Invalid> {
    let ok = name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(bad(format!("invalid hostname {name:?}")))
    }
}

/// Checks a `CreateContainer` request before anything is mounted.
pub fn check_container(spec: &ContainerSpec) -> Result<(), Invalid> {
    check_root(&spec.root)?;
    if spec.volumes.len() > MAX_VOLUMES {
        return Err(bad(format!("more than {MAX_VOLUMES} volumes")));
    }
    for vol in &spec.volumes {
        check_serial(&vol.serial)?;
        check_abs_path("volume target", &vol.target)?;
        if Path::new(&vol.target).components().count() < 2 {
            return Err(bad("a volume cannot be mounted on /"));
        }
        if !VOLUME_FS.contains(&vol.fs_type.as_str()) {
            return Err(bad(format!(
                "unsupported volume filesystem {:?}",
                vol.fs_type
            )));
        }
    }
    check_shares(spec)?;
    check_hostname(&spec.hostname)?;
    if spec.hosts.len() > MAX_HOSTS {
        return Err(bad(format!("more than {MAX_HOSTS} hosts lines")));
    }
    if let Some(line) = spec
        .hosts
        .iter()
        .find(|l| l.len() > MAX_LINE || l.contains(['\0', '\n', '\r']))
    {
        return Err(bad(format!("invalid hosts line {line:?}")));
    }
    if let Some(conf) = &spec.resolv_conf {
        if conf.len() > MAX_RESOLV || conf.contains('\0') {
            return Err(bad("invalid resolv.conf content"));
        }
    }
    check_files(&spec.files)?;
    check_tmpfs(&spec.tmpfs)?;
    check_sysctls(&spec.sysctls)
}

/// Kernel parameters: bounded, dotted names, writable values.
fn check_sysctls(sysctls: &[Sysctl]) -> Result<(), Invalid> {
    if sysctls.len() > MAX_SYSCTLS {
        return Err(bad(format!("more than {MAX_SYSCTLS} sysctls")));
    }
    for s in sysctls {
        if !Sysctl::valid_key(&s.key) {
            return Err(bad(format!("invalid sysctl name {:?}", s.key)));
        }
        if !Sysctl::valid_value(&s.value) {
            return Err(bad(format!("invalid value for sysctl {}", s.key)));
        }
    }
    Ok(())
}

/// Shares: bounded, only in an image root, a relative source of one or
/// two plain components inside the export, an absolute target below `/`.
pub fn check_shares(spec: &ContainerSpec) -> Result<(), Invalid> {
    if spec.shares.is_empty() {
        return Ok(());
    }
    if !matches!(spec.root, RootFs::Layers { .. }) {
        return Err(bad("shared directories need an image root"));
    }
    if spec.shares.len() > MAX_SHARES {
        return Err(bad(format!("more than {MAX_SHARES} shares")));
    }
    spec.shares.iter().try_for_each(check_share)
}

fn check_share(share: &ShareMount) -> Result<(), Invalid> {
    let parts: Vec<&str> = share.source.split('/').collect();
    let plain =
        |p: &&str| !p.is_empty() && *p != "." && *p != ".." && !p.contains('\0') && p.len() <= 255;
    if parts.len() > 2 || !parts.iter().all(plain) {
        return Err(bad(format!("invalid share source {:?}", share.source)));
    }
    check_abs_path("share target", &share.target)?;
    if Path::new(&share.target).components().count() < 2 {
        return Err(bad("a share cannot be mounted on /"));
    }
    Ok(())
}

/// Most tmpfs mounts a container may ask for.
pub const MAX_TMPFS: usize = 16;

/// tmpfs mounts: bounded, absolute clean targets below `/`, a `size=`
/// of digits with an optional unit, plain permission bits.
fn check_tmpfs(mounts: &[TmpfsMount]) -> Result<(), Invalid> {
    if mounts.len() > MAX_TMPFS {
        return Err(bad(format!("more than {MAX_TMPFS} tmpfs mounts")));
    }
    for m in mounts {
        check_abs_path("tmpfs target", &m.target)?;
        if Path::new(&m.target).components().count() < 2 {
            return Err(bad("a tmpfs cannot be mounted on /"));
        }
        if let Some(size) = &m.size {
            let digits = size.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', '%']);
            let ok = !digits.is_empty()
                && digits.len() + 1 >= size.len()
                && digits.len() <= 20
                && digits.bytes().all(|b| b.is_ascii_digit());
            if !ok {
                return Err(bad(format!("invalid tmpfs size {size:?}")));
            }
        }
        if m.mode.is_some_and(|mode| mode > 0o7777) {
            return Err(bad(format!("invalid tmpfs mode for {:?}", m.target)));
        }
    }
    Ok(())
}

/// The files to copy into the root: bounded in number and size, absolute
/// clean paths below `/`, plain permission bits.
fn check_files(files: &[FileSpec]) -> Result<(), Invalid> {
    if files.len() > MAX_FILES {
        return Err(bad(format!("more than {MAX_FILES} files")));
    }
    let mut total = 0usize;
    for f in files {
        check_abs_path("file", &f.path)?;
        if Path::new(&f.path).components().count() < 2 {
            return Err(bad(format!("file {:?} names no file", f.path)));
        }
        if f.content.len() > MAX_FILE_BYTES {
            return Err(bad(format!(
                "file {:?} is larger than {MAX_FILE_BYTES} bytes",
                f.path
            )));
        }
        total += f.content.len();
        if f.mode > 0o7777 {
            return Err(bad(format!("file {:?} has mode {:o}", f.path, f.mode)));
        }
    }
    if total > MAX_FILES_BYTES {
        return Err(bad(format!(
            "the files are larger than {MAX_FILES_BYTES} bytes together"
        )));
    }
    Ok(())
}

fn check_root(root: &RootFs) -> Result<(), Invalid> {
    match root {
        RootFs::Layers { layers, writable } => {
            if layers.is_empty() {
                return Err(bad("the container has no layers"));
            }
            if layers.len() > MAX_LAYERS {
                return Err(bad(format!("more than {MAX_LAYERS} layers")));
            }
            for serial in layers {
                check_serial(serial)?;
            }
            if !writable.is_empty() {
                check_serial(writable)?;
            }
        }
        RootFs::Disk(disk) => {
            check_serial(&disk.serial)?;
            if !ROOT_FS.contains(&disk.fs_type.as_str()) {
                return Err(bad(format!(
                    "unsupported root filesystem {:?}",
                    disk.fs_type
                )));
            }
        }
    }
    Ok(())
}

/// Checks an `Exec` request (NUL bytes are caught when converting).
pub fn check_exec(req: &ExecRequest) -> Result<(), Invalid> {
    if req.argv.is_empty() || req.argv[0].is_empty() {
        return Err(bad("empty command"));
    }
    if !req.cwd.is_empty() {
        check_abs_path("working directory", &req.cwd)?;
    }
    if let Some((rows, cols)) = req.size {
        if rows == 0 || cols == 0 {
            return Err(bad("terminal size must be non-zero"));
        }
    }
    if let Some(mask) = req.security.umask.filter(|&m| m > 0o777) {
        return Err(bad(format!("invalid umask {mask:#o}")));
    }
    Ok(())
}

/// Resolves `path` (absolute, checked) inside `root` the way a process
/// chrooted at `root` would see it: symlinks are followed relative to
/// `root`, and `..` never climbs above it. Missing trailing components are
/// kept as they are (the result may not exist yet).
pub fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf, Invalid> {
    let mut pending: Vec<String> = components(path);
    pending.reverse();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = join(root, &resolved).join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(bad(format!("too many symlinks resolving {path:?}")));
                }
                let target = std::fs::read_link(&candidate)
                    .map_err(|e| bad(format!("reading link {}: {e}", candidate.display())))?;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(components(&target).into_iter().rev());
            }
            _ => resolved.push(part),
        }
    }
    Ok(join(root, &resolved))
}

fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(String::from)
        .collect()
}

fn join(root: &Path, parts: &[String]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts);
    p
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
