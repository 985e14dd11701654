//! Read-only layer disks made from directories: containerd's committed
//! snapshots (converted once and cached) and one-off root directories.
//!
//! A committed snapshot never changes, so its disk is cached under a key of
//! the directory's identity: sha256 of its canonical path, device, inode
//! and change time. A second container from the same image finds every
//! disk made already and converts nothing. A directory replaced by a new
//! one (new inode or ctime) gets a new disk. Beside each disk,
//! `<key>.src` names its directory, so [`LayerCache::prune`] can drop the
//! disks of snapshots that are gone (an image removed from containerd).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use images::layer::{mkfs_erofs, LayerError};
use images::store::FileLock;
use sha2::{Digest, Sha256};

/// Why a directory could not be made into a disk.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A filesystem operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `mkfs.erofs` failed.
    #[error("converting {dir} to a layer disk")]
    Mkfs {
        /// The directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: LayerError,
    },
    /// Only root can read every file, owner and trusted.* xattr (overlay's
    /// opaque directories) of a snapshot.
    #[error("converting {0} to a layer disk needs root")]
    NotRoot(PathBuf),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CacheError {
    let context = context.into();
    move |source| CacheError::Io { context, source }
}

/// A disk for a directory, and whether it was made just now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDisk {
    /// The EROFS image.
    pub path: PathBuf,
    /// Made by this call (false: found in the cache).
    pub converted: bool,
}

/// The cache of snapshot disks (`<dir>/<key>.erofs`).
#[derive(Clone, Debug)]
pub struct LayerCache {
    dir: PathBuf,
}

impl LayerCache {
    /// The cache in `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> LayerCache {
        LayerCache { dir: dir.into() }
    }

    /// husk's cache for snapshot disks: `$HUSK_CACHE/snapshot-layers`
    /// (`/var/cache/husk/snapshot-layers`).
    pub fn default_dir() -> PathBuf {
        husk_sandbox::assets::cache_dir().join("snapshot-layers")
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache key of directory `dir`: sha256 of its canonical path,
    /// device, inode and change time.
    pub fn key(dir: &Path) -> Result<String, CacheError> {
        let canonical =
            fs::canonicalize(dir).map_err(io_err(format!("resolving {}", dir.display())))?;
        let meta =
            fs::metadata(&canonical).map_err(io_err(format!("reading {}", dir.display())))?;
        let mut h = Sha256::new();
        h.update(b"husk snapshot layer 1\0");
        h.update(canonical.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        for n in [
            meta.dev(),
            meta.ino(),
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
        ] {
            h.update(n.to_le_bytes());
        }
        Ok(hex::encode(h.finalize()))
    }

    /// The disk of immutable directory `dir`, converted unless cached.
    /// Concurrent callers convert it once (a lock per key); a conversion
    /// killed half way leaves only a temporary file.
    pub fn disk(&self, dir: &Path) -> Result<LayerDisk, CacheError> {
        let key = Self::key(dir)?;
        let dest = self.dir.join(format!("{key}.erofs"));
        if dest.is_file() {
            return Ok(LayerDisk {
                path: dest,
                converted: false,
            });
        }
        fs::create_dir_all(&self.dir)
            .map_err(io_err(format!("creating {}", self.dir.display())))?;
        let _lock = FileLock::exclusive(&self.dir.join(format!("{key}.lock")))
            .map_err(io_err("locking a snapshot layer disk"))?;
        if dest.is_file() {
            return Ok(LayerDisk {
                path: dest,
                converted: false,
            });
        }
        let canonical =
            fs::canonicalize(dir).map_err(io_err(format!("resolving {}", dir.display())))?;
        fs::write(
            self.dir.join(format!("{key}.src")),
            canonical.as_os_str().as_encoded_bytes(),
        )
        .map_err(io_err("recording a snapshot layer's source"))?;
        convert(dir, &dest)?;
        Ok(LayerDisk {
            path: dest,
            converted: true,
        })
    }

    /// Removes the disks whose directory is gone or changed (its key is
    /// no longer theirs), with their side files; disks being made are left
    /// alone. Returns how many were removed. A VM using a removed disk
    /// keeps it open; the next container converts the new directory.
    pub fn prune(&self) -> Result<usize, CacheError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(format!("listing {}", self.dir.display()))(e)),
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(key) = name.strip_suffix(".src") else {
                continue;
            };
            let Ok(source) = fs::read(e.path()) else {
                continue;
            };
            let source = PathBuf::from(String::from_utf8_lossy(&source).into_owned());
            if Self::key(&source).is_ok_and(|k| k == key) {
                continue;
            }
            let lock = self.dir.join(format!("{key}.lock"));
            let Ok(Some(_held)) = FileLock::try_exclusive(&lock) else {
                continue;
            };
            for ext in ["erofs", "src", "lock"] {
                let _ = fs::remove_file(self.dir.join(format!("{key}.{ext}")));
            }
            removed += 1;
        }
        Ok(removed)
    }
}

/// Converts directory `dir` into the EROFS image `out` (through a
/// temporary file beside it, renamed into place).
pub fn convert(dir: &Path, out: &Path) -> Result<(), CacheError> {
    if !rustix::process::geteuid().is_root() {
        return Err(CacheError::NotRoot(dir.to_path_buf()));
    }
    let parent = out.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .suffix(".erofs")
        .tempfile_in(parent)
        .map_err(io_err(format!(
            "creating a temporary file in {}",
            parent.display()
        )))?;
    mkfs_erofs(tmp.path(), dir).map_err(|source| CacheError::Mkfs {
        dir: dir.to_path_buf(),
        source,
    })?;
    tmp.as_file()
        .sync_all()
        .map_err(io_err(format!("writing the disk of {}", dir.display())))?;
    tmp.persist(out)
        .map_err(|e| io_err(format!("storing {}", out.display()))(e.error))?;
    Ok(())
}
