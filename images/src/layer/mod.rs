//! Layer disks: every layer becomes a read-only EROFS image, cached by its
//! diff_id, that the guest agent stacks with overlayfs.

pub mod check;
pub mod extract;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::compress::decompress;
use crate::digest::{Digest, HashingReader};
use crate::image::{Image, Layer};
use crate::store::{io_ctx, sync_dir, FileLock, Store, StoreError};

pub use check::{check, Checked};
pub use extract::{ExtractError, Mode};

/// Most layer disks one image uses; lower layers beyond this are flattened.
pub const MAX_LAYER_DISKS: usize = 16;

/// Largest unpacked size of one layer (or flattened group).
pub const MAX_UNPACKED: u64 = 64 << 30;

/// Errors building layer disks.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Store access failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The layer tar is unsafe or malformed.
    #[error("layer {layer}")]
    Extract {
        /// Layer blob digest.
        layer: Digest,
        /// What is wrong.
        #[source]
        source: ExtractError,
    },
    /// The uncompressed layer does not match the config's diff_id.
    #[error("layer {layer}: uncompressed content is {actual}, config says {expected}")]
    DiffIdMismatch {
        /// Layer blob digest.
        layer: Digest,
        /// diff_id from the config.
        expected: Digest,
        /// Digest of what was unpacked.
        actual: Digest,
    },
    /// mkfs.erofs failed.
    #[error("mkfs.erofs failed ({status}): {stderr}")]
    Mkfs {
        /// Exit status.
        status: String,
        /// Its error output.
        stderr: String,
    },
    /// Building layer disks needs root (device nodes, trusted xattrs, ownership).
    #[error("building layer disks needs root (whiteouts are device nodes, opaque dirs trusted.* xattrs)")]
    NotRoot,
}

/// A read-only disk holding one layer, or several flattened lowest layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDisk {
    /// Path of the EROFS image.
    pub path: PathBuf,
    /// diff_ids of the layers it holds, bottom to top.
    pub diff_ids: Vec<Digest>,
}

/// OCI ChainID of a list of diff_ids.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    let mut it = diff_ids.iter();
    let mut chain = it.next()?.clone();
    for d in it {
        chain = Digest::of(format!("{chain} {d}").as_bytes());
    }
    Some(chain)
}

/// File names of the disks an image uses (for garbage collection).
pub(crate) fn disk_names(diff_ids: &[Digest]) -> Vec<String> {
    let mut names: Vec<String> = diff_ids
        .iter()
        .map(|d| format!("{}.erofs", d.hex()))
        .collect();
    for n in 2..=diff_ids.len() {
        if let Some(c) = chain_id(&diff_ids[..n]) {
            names.push(format!("flat-{}.erofs", c.hex()));
        }
    }
    names
}

impl Store {
    /// The image's layer disks bottom to top, building missing ones. With
    /// more than [`MAX_LAYER_DISKS`] layers the lowest ones share one disk.
    pub fn layer_disks(&self, image: &Image) -> Result<Vec<LayerDisk>, LayerError> {
        let _use = self.use_lock()?;
        let layers = &image.layers;
        let mut out = Vec::new();
        let split = if layers.len() > MAX_LAYER_DISKS {
            let n = layers.len() - MAX_LAYER_DISKS + 1;
            out.push(self.flat_disk(&layers[..n])?);
            n
        } else {
            0
        };
        for l in &layers[split..] {
            out.push(LayerDisk {
                path: self.layer_disk(l)?,
                diff_ids: vec![l.diff_id.clone()],
            });
        }
        Ok(out)
    }

    /// The disk of one layer (overlayfs whiteout form), built if missing.
    pub fn layer_disk(&self, layer: &Layer) -> Result<PathBuf, LayerError> {
        let name = format!("{}.erofs", layer.diff_id.hex());
        self.build_disk(&name, std::slice::from_ref(layer), Mode::Overlay)
    }

    fn flat_disk(&self, layers: &[Layer]) -> Result<LayerDisk, LayerError> {
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let chain = chain_id(&diff_ids).unwrap_or_else(|| Digest::of(b""));
        let name = format!("flat-{}.erofs", chain.hex());
        let path = self.build_disk(&name, layers, Mode::Apply)?;
        Ok(LayerDisk { path, diff_ids })
    }

    fn build_disk(&self, name: &str, layers: &[Layer], mode: Mode) -> Result<PathBuf, LayerError> {
        let dest = self.layers_dir().join(name);
        if dest.is_file() {
            return Ok(dest);
        }
        if !rustix::process::geteuid().is_root() {
            return Err(LayerError::NotRoot);
        }
        let _lock = FileLock::exclusive(&self.layers_dir().join(format!("{name}.lock")))
            .map_err(io_ctx("locking a layer disk"))?;
        if dest.is_file() {
            return Ok(dest); // another process built it meanwhile
        }
        let staging = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(self.staging_dir())
            .map_err(io_ctx("creating a staging directory"))?;
        let root = staging.path().join("root");
        fs::create_dir(&root).map_err(io_ctx("creating a staging directory"))?;
        for layer in layers {
            self.unpack(layer, &root, mode)?;
        }
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(self.layers_dir())
            .map_err(io_ctx("creating a temporary disk file"))?;
        mkfs_erofs(tmp.path(), &root)?;
        tmp.as_file()
            .sync_all()
            .map_err(io_ctx("fsync layer disk"))?;
        tmp.persist(&dest).map_err(|e| StoreError::Io {
            context: format!("storing {}", dest.display()),
            source: e.error,
        })?;
        sync_dir(&self.layers_dir())?;
        drop(staging);
        Ok(dest)
    }

    /// Extracts one layer blob into `root`, verifying its diff_id.
    fn unpack(&self, layer: &Layer, root: &Path, mode: Mode) -> Result<(), LayerError> {
        let blob = self.open_blob(&layer.digest)?;
        let (_, plain) = decompress(io::BufReader::new(blob))
            .map_err(io_ctx(format!("reading layer {}", layer.digest)))?;
        let mut hashing = HashingReader::new(plain);
        let report =
            extract::extract(&mut hashing, root, mode, MAX_UNPACKED).map_err(|source| {
                LayerError::Extract {
                    layer: layer.digest.clone(),
                    source,
                }
            })?;
        let (actual, _) = hashing
            .finish()
            .map_err(io_ctx(format!("reading layer {}", layer.digest)))?;
        if actual != layer.diff_id {
            return Err(LayerError::DiffIdMismatch {
                layer: layer.digest.clone(),
                expected: layer.diff_id.clone(),
                actual,
            });
        }
        for w in report.warnings {
            log::warn!("layer {}: {w}", layer.digest.short());
        }
        Ok(())
    }
}

/// Runs `mkfs.erofs` (uncompressed, mtimes kept) on `dir`, writing `out`.
pub fn mkfs_erofs(out: &Path, dir: &Path) -> Result<(), LayerError> {
    let res = Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg("--preserve-mtime")
        .arg(out)
        .arg(dir)
        .output()
        .map_err(io_ctx("running mkfs.erofs (is erofs-utils installed?)"))?;
    if !res.status.success() {
        return Err(LayerError::Mkfs {
            status: res.status.to_string(),
            stderr: String::from_utf8_lossy(&res.stderr).trim().to_string(),
        });
    }
    Ok(())
}
