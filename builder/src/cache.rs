//! The build cache: a step's result (an image, possibly not in the image
//! list) keyed by its parent image, its instruction as recorded in the
//! history (`created_by`, which for COPY/ADD names the content hash of the
//! sources) and anything else that changes the result.
//!
//! One small file per key under the cache directory, holding the result's
//! manifest digest; entries whose image is gone (pruned) are misses.

use std::io;
use std::path::{Path, PathBuf};

use images::{Digest, Image, Store};
use sha2::{Digest as _, Sha256};

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// The key of a step.
pub fn key(parent: Option<&Digest>, created_by: &str, extra: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"husk build cache v1\0");
    match parent {
        Some(p) => h.update(p.to_string().as_bytes()),
        None => h.update(b"scratch"),
    }
    h.update(b"\0");
    h.update(created_by.as_bytes());
    h.update(b"\0");
    h.update(extra.as_bytes());
    hex::encode(h.finalize())
}

impl Cache {
    /// Opens (creating) the cache in `dir`.
    pub fn open(dir: &Path) -> io::Result<Cache> {
        std::fs::create_dir_all(dir)?;
        Ok(Cache {
            dir: dir.to_path_buf(),
        })
    }

    /// The cached result of `key`, if it is still complete in the store.
    pub fn get(&self, store: &Store, key: &str) -> Option<Image> {
        let text = std::fs::read_to_string(self.dir.join(key)).ok()?;
        let digest: Digest = text.trim().parse().ok()?;
        store.unrecorded_image(&digest).ok()
    }

    /// Records `image` as the result of `key`.
    pub fn put(&self, key: &str, image: &Image) -> io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        io::Write::write_all(&mut tmp, image.manifest_digest.to_string().as_bytes())?;
        tmp.persist(self.dir.join(key)).map_err(|e| e.error)?;
        Ok(())
    }
}
