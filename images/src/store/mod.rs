//! The on-disk store: content-addressed blobs, image records and tags, locks.
//!
//! Layout under `<root>/image/`: `blobs/sha256/<hex>` (immutable, verified
//! while written), `layers/<hex>.erofs` (layer disks), `state.json` (images and
//! tags), `tmp/` and `staging/` (work files), `*.lock` (flock files).

mod gc;
mod images;
pub mod lock;
mod state;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use gc::PruneReport;
pub use images::{ImageUser, RemoveEvent};
pub use lock::FileLock;
pub(crate) use state::now;
pub use state::{ImageRecord, State};

use crate::digest::{Digest, HashingWriter};

/// Default store root.
pub const DEFAULT_ROOT: &str = "/var/lib/husk";

/// Mode of the store root and its private directories.
pub const PRIVATE_DIR: u32 = 0o700;

/// Largest JSON document (manifest, index, config) read into memory.
pub const MAX_JSON: u64 = 8 << 20;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Content did not hash to the digest it was announced with.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Announced digest.
        expected: Digest,
        /// Digest of the received bytes.
        actual: Digest,
    },
    /// Content size differs from the announced size.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// Blob digest.
        digest: Digest,
        /// Announced size.
        expected: u64,
        /// Received size (or a lower bound when too large).
        actual: u64,
    },
    /// Content exceeds a size limit.
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// What was being read.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// The request conflicts with the store's content (an image in use,
    /// or referenced in several repositories).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A blob is not in the store.
    #[error("blob {0} not found in the store")]
    BlobMissing(Digest),
    /// No image matches the reference.
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// An ID prefix matches more than one image.
    #[error("image ID prefix {0} is ambiguous")]
    Ambiguous(String),
    /// A stored or received JSON document is invalid.
    #[error("invalid {what}")]
    Json {
        /// Which document.
        what: String,
        /// Parser error.
        #[source]
        source: serde_json::Error,
    },
    /// A manifest or config does not follow the OCI spec.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// Which document.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The store's state file is corrupt.
    #[error("reference problem: {0}")]
    Reference(#[from] crate::reference::ReferenceError),
}

/// Shorthand for building [`StoreError::Io`] with context.
pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// An image store rooted at a directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store under `root`.
    ///
    /// The root and `<root>/image` are private to their owner (0700; an
    /// existing root made with looser modes is tightened here), and every
    /// file written below them is 0600: images hold private layers and
    /// ENV secrets, and nothing unprivileged needs to reach them.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let dir = root.join("image");
        for private in [root, dir.as_path()] {
            create_private_dir(private)?;
        }
        for sub in ["blobs/sha256", "layers", "tmp", "staging"] {
            let p = dir.join(sub);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(PRIVATE_DIR)
                .create(&p)
                .map_err(io_ctx(format!("creating {}", p.display())))?;
        }
        for private in ["tmp", "staging"] {
            let p = dir.join(private);
            fs::set_permissions(&p, fs::Permissions::from_mode(PRIVATE_DIR))
                .map_err(io_ctx(format!("chmod {}", p.display())))?;
        }
        Ok(Store { dir })
    }

    /// The store directory (`<root>/image`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a blob (which may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    /// Whether a blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Directory for temporary files (same filesystem as the blobs).
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Directory for layer extraction.
    pub fn staging_dir(&self) -> PathBuf {
        self.dir.join("staging")
    }

    /// Directory of layer disks.
    pub fn layers_dir(&self) -> PathBuf {
        self.dir.join("layers")
    }

    /// Takes the lock that keeps `image prune` away while content is added or used.
    pub fn use_lock(&self) -> Result<FileLock, StoreError> {
        let p = self.dir.join("gc.lock");
        FileLock::shared(&p).map_err(io_ctx("locking the store"))
    }

    /// Takes the exclusive lock for garbage collection.
    pub fn gc_lock(&self) -> Result<FileLock, StoreError> {
        let p = self.dir.join("gc.lock");
        FileLock::exclusive(&p).map_err(io_ctx("locking the store for pruning"))
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        File::open(self.blob_path(digest)).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobMissing(digest.clone())
            } else {
                StoreError::Io {
                    context: format!("opening blob {digest}"),
                    source: e,
                }
            }
        })
    }

    /// Reads a small blob (JSON) into memory.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let f = self.open_blob(digest)?;
        read_limited(f, MAX_JSON, &format!("blob {digest}"))
    }

    /// Writes `data` as a blob and returns its digest.
    pub fn put_blob_bytes(&self, data: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::of(data);
        if !self.has_blob(&d) {
            self.write_blob(data, Some(&d), Some(data.len() as u64), u64::MAX)?;
        }
        Ok(d)
    }

    /// Streams `reader` into the store: temp file, hash, fsync, rename.
    ///
    /// When `expected` is given, a mismatch is an error and nothing is kept;
    /// `expected_size` likewise. More than `limit` bytes is an error.
    pub fn write_blob(
        &self,
        reader: impl Read,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
        limit: u64,
    ) -> Result<(Digest, u64), StoreError> {
        let tmp = tempfile::NamedTempFile::new_in(self.tmp_dir())
            .map_err(io_ctx("creating a temporary blob file"))?;
        let mut w = HashingWriter::new(io::BufWriter::new(tmp));
        let cap = expected_size.unwrap_or(limit).min(limit);
        let copied = io::copy(&mut reader.take(cap.saturating_add(1)), &mut w)
            .map_err(io_ctx("writing blob"))?;
        let (buf, digest, size) = w.finish();
        if copied > cap {
            return Err(match expected_size {
                Some(e) if e <= limit => StoreError::SizeMismatch {
                    digest: expected.cloned().unwrap_or(digest),
                    expected: e,
                    actual: copied,
                },
                _ => StoreError::TooLarge {
                    what: "blob".into(),
                    limit,
                },
            });
        }
        self.commit_temp(buf, digest, size, expected, expected_size)
    }

    /// Verifies a fully written temp file and renames it into place.
    pub(crate) fn commit_temp(
        &self,
        buf: io::BufWriter<tempfile::NamedTempFile>,
        digest: Digest,
        size: u64,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Digest, u64), StoreError> {
        if let Some(e) = expected {
            if *e != digest {
                return Err(StoreError::DigestMismatch {
                    expected: e.clone(),
                    actual: digest,
                });
            }
        }
        if let Some(e) = expected_size {
            if e != size {
                return Err(StoreError::SizeMismatch {
                    digest,
                    expected: e,
                    actual: size,
                });
            }
        }
        let tmp = buf.into_inner().map_err(|e| StoreError::Io {
            context: "writing blob".into(),
            source: e.into_error(),
        })?;
        tmp.as_file().sync_all().map_err(io_ctx("fsync blob"))?;
        let dest = self.blob_path(&digest);
        tmp.persist(&dest).map_err(|e| StoreError::Io {
            context: format!("storing blob {digest}"),
            source: e.error,
        })?;
        sync_dir(dest.parent().unwrap_or(&self.dir))?;
        Ok((digest, size))
    }

    /// Moves a fully written and verified file (in `tmp/`) into place as blob `digest`.
    pub(crate) fn adopt_file(
        &self,
        file: &File,
        path: &Path,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        // A partial download left by an older husk may have been 0644.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_ctx(format!("chmod 0600 blob {digest}")))?;
        file.sync_all().map_err(io_ctx("fsync blob"))?;
        let dest = self.blob_path(digest);
        fs::rename(path, &dest).map_err(io_ctx(format!("storing blob {digest}")))?;
        sync_dir(dest.parent().unwrap_or(&self.dir))
    }

    /// Lists all blobs in the store.
    pub fn list_blobs(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.dir.join("blobs/sha256");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_ctx("listing blobs"))? {
            let e = e.map_err(io_ctx("listing blobs"))?;
            if let Some(d) = e
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push(d);
            }
        }
        Ok(out)
    }
}

/// Creates `dir` (and missing parents) with mode 0700, or tightens an
/// existing `dir` whose group or others have any access to 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .map_err(io_ctx(format!("creating {}", dir.display())))?;
    let mode = fs::metadata(dir)
        .map_err(io_ctx(format!("reading {}", dir.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR)).map_err(io_ctx(
            format!("making {} private (chmod 0700)", dir.display()),
        ))?;
    }
    Ok(())
}

/// fsyncs a directory so a rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_ctx(format!("fsync {}", dir.display())))
}

/// Reads at most `limit` bytes; more is an error.
pub(crate) fn read_limited(r: impl Read, limit: u64, what: &str) -> Result<Vec<u8>, StoreError> {
    let mut buf = Vec::new();
    r.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(io_ctx(format!("reading {what}")))?;
    if buf.len() as u64 > limit {
        return Err(StoreError::TooLarge {
            what: what.to_string(),
            limit,
        });
    }
    Ok(buf)
}

/// Writes `data` to `path` atomically (temp file in the same dir + fsync + rename).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(io_ctx(format!("creating temp file in {}", dir.display())))?;
    tmp.write_all(data)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(io_ctx(format!("writing {}", path.display())))?;
    tmp.persist(path).map_err(|e| StoreError::Io {
        context: format!("renaming into {}", path.display()),
        source: e.error,
    })?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn store_directories_and_files_are_private() {
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("husk");
        let store = Store::open(&root).unwrap();
        assert_eq!(mode(&root), 0o700, "store root");
        for d in ["", "blobs", "blobs/sha256", "layers", "tmp", "staging"] {
            assert_eq!(mode(&store.dir().join(d)), 0o700, "image/{d}");
        }
        let config = br#"{"config":{"Env":["SECRET=1"]}}"#;
        let blob = store.put_blob_bytes(config).unwrap();
        assert_eq!(mode(&store.blob_path(&blob)), 0o600, "blob");
        let (layer, _) = store
            .write_blob(&b"layer"[..], None, None, u64::MAX)
            .unwrap();
        assert_eq!(mode(&store.blob_path(&layer)), 0o600, "streamed blob");
        let state = store.dir().join("state.json");
        write_atomic(&state, b"{}").unwrap();
        assert_eq!(mode(&state), 0o600, "state.json");
        drop(store.gc_lock().unwrap());
        assert_eq!(mode(&store.dir().join("gc.lock")), 0o600, "lock file");
    }

    #[test]
    fn opening_an_older_store_tightens_its_root() {
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("husk");
        fs::create_dir_all(root.join("image")).unwrap();
        for d in [root.clone(), root.join("image")] {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        Store::open(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("image")), 0o700);
    }
}
