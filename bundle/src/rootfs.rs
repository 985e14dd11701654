//! The container's root filesystem as read-only layer disks, from
//! containerd's snapshotter mounts or from a root directory.
//!
//! husk never mounts a root on the host: the guest stacks EROFS layer
//! disks with overlayfs, over the container's own writable disk. So:
//! - **containerd's mounts** ([`from_mounts`], `CreateTaskRequest.rootfs`):
//!   an `overlay` mount's `lowerdir`s are committed, immutable snapshots,
//!   each converted once and cached ([`LayerCache`]); its `upperdir` (the
//!   active snapshot, empty for a new container: the container writes to
//!   its writable disk instead) becomes an uncached top layer only if
//!   something put files there. A single `bind` mount (the native
//!   snapshotter, or a snapshot without parents) is converted whole,
//!   uncached. Other mount types fail, naming the type.
//! - **a root directory** ([`from_dir`], `root.path` of config.json): an
//!   overlay mounted there (see /proc/self/mountinfo) is treated like the
//!   mounts above; any other directory is converted whole, uncached.
//!
//! Uncached disks are written to a scratch directory the caller owns and
//! removes with the container (e.g. the containerd bundle directory).

use std::path::{Path, PathBuf};

use crate::cache::{self, CacheError, LayerCache};
use crate::mountinfo::{self, MountinfoError};

/// Why the root filesystem cannot be made into layer disks.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A mount type husk cannot turn into disks.
    #[error("rootfs mount of type {0:?} cannot be turned into layer disks: use containerd's overlayfs or native snapshotter (ctr --snapshotter, or snapshotter = \"overlayfs\" in the runtime's CRI config)")]
    MountType(String),
    /// More than one rootfs mount.
    #[error("{0} rootfs mounts given; husk takes one (an overlay or a bind mount)")]
    Several(usize),
    /// An overlay without lower directories.
    #[error("the overlay rootfs mount has no lowerdir")]
    NoLower,
    /// The root directory is missing.
    #[error("the root filesystem {0} is not a directory")]
    NotADirectory(PathBuf),
    /// Converting a directory failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Reading the mount table failed.
    #[error(transparent)]
    Mountinfo(#[from] MountinfoError),
}

/// One mount as containerd hands it to a shim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootfsMount {
    /// `overlay`, `bind`...
    pub kind: String,
    /// The source path (for `bind`).
    pub source: String,
    /// Options (`lowerdir=...`, `rbind`, `ro`...).
    pub options: Vec<String>,
}

/// Layer disks, bottom first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layers {
    /// The disks, bottom first.
    pub disks: Vec<PathBuf>,
    /// How many were converted now (cached snapshots found: not counted).
    pub converted: usize,
}

/// Where disks go.
#[derive(Clone, Debug)]
pub struct DiskDirs {
    /// Cached disks of immutable snapshots.
    pub cache: LayerCache,
    /// Uncached disks (removed with the container by the caller).
    pub scratch: PathBuf,
}

/// The layers of containerd's rootfs mounts.
pub fn from_mounts(mounts: &[RootfsMount], dirs: &DiskDirs) -> Result<Layers, RootfsError> {
    let [m] = mounts else {
        return Err(RootfsError::Several(mounts.len()));
    };
    match m.kind.as_str() {
        "overlay" => {
            let option = |key: &str| {
                m.options
                    .iter()
                    .find_map(|o| o.strip_prefix(key)?.strip_prefix('='))
            };
            let lowers = option("lowerdir").map(split_lowerdir).unwrap_or_default();
            overlay(&lowers, option("upperdir").map(Path::new), dirs)
        }
        "bind" | "rbind" => whole(Path::new(&m.source), dirs),
        other => Err(RootfsError::MountType(other.to_string())),
    }
}

/// The layers of root directory `dir`.
pub fn from_dir(dir: &Path, dirs: &DiskDirs) -> Result<Layers, RootfsError> {
    let canonical =
        std::fs::canonicalize(dir).map_err(|_| RootfsError::NotADirectory(dir.to_path_buf()))?;
    if !canonical.is_dir() {
        return Err(RootfsError::NotADirectory(dir.to_path_buf()));
    }
    let table = mountinfo::read()?;
    match mountinfo::mount_at(&table, &canonical) {
        Some(e) if e.fstype == "overlay" => {
            let lowers = e.option("lowerdir").map(split_lowerdir).unwrap_or_default();
            overlay(&lowers, e.option("upperdir").map(Path::new), dirs)
        }
        _ => whole(&canonical, dirs),
    }
}

/// `lowerdir=` value → directories, top-most first (overlay's order);
/// `\:` and `\\` are escaped characters.
pub fn split_lowerdir(value: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            ':' => out.push(PathBuf::from(std::mem::take(&mut cur))),
            c => cur.push(c),
        }
    }
    out.push(PathBuf::from(cur));
    out.retain(|p| !p.as_os_str().is_empty());
    out
}

/// Cached disks of `lowers` (top-most first), bottom first, and the
/// upper directory as an uncached top layer when it is not empty.
fn overlay(
    lowers: &[PathBuf],
    upper: Option<&Path>,
    dirs: &DiskDirs,
) -> Result<Layers, RootfsError> {
    if lowers.is_empty() {
        return Err(RootfsError::NoLower);
    }
    let mut layers = Layers::default();
    for dir in lowers.iter().rev() {
        let d = dirs.cache.disk(dir)?;
        layers.converted += usize::from(d.converted);
        layers.disks.push(d.path);
    }
    if let Some(upper) = upper.filter(|u| !is_empty_dir(u)) {
        let top = whole(upper, dirs)?;
        layers.converted += top.converted;
        layers.disks.extend(top.disks);
    }
    Ok(layers)
}

/// `dir` as one uncached disk in the scratch directory.
fn whole(dir: &Path, dirs: &DiskDirs) -> Result<Layers, RootfsError> {
    if !dir.is_dir() {
        return Err(RootfsError::NotADirectory(dir.to_path_buf()));
    }
    std::fs::create_dir_all(&dirs.scratch).map_err(|source| CacheError::Io {
        context: format!("creating {}", dirs.scratch.display()),
        source,
    })?;
    let key = LayerCache::key(dir)?;
    let out = dirs.scratch.join(format!("rootfs-{}.erofs", &key[..16]));
    cache::convert(dir, &out)?;
    Ok(Layers {
        disks: vec![out],
        converted: 1,
    })
}

/// Whether `dir` has no entries (unreadable counts as not empty).
fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}
