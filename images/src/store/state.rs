//! `state.json`: the images in the store (by manifest digest) and their tags.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{io_ctx, read_limited, write_atomic, FileLock, Store, StoreError};
use crate::digest::Digest;

/// One image: a manifest in the store.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// Config blob digest (the image ID).
    pub config: Digest,
    /// Media type of the manifest blob.
    pub media_type: String,
    /// When the image was added to this store (Unix seconds).
    pub added: u64,
    /// `name@digest` references it was pulled or pushed by.
    #[serde(default)]
    pub repo_digests: BTreeSet<String>,
}

/// Everything the store knows besides blobs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Images by manifest digest.
    #[serde(default)]
    pub images: BTreeMap<Digest, ImageRecord>,
    /// Full `registry/repository:tag` → manifest digest.
    #[serde(default)]
    pub tags: BTreeMap<String, Digest>,
}

impl State {
    /// Tags (full form) pointing at a manifest.
    pub fn tags_of(&self, manifest: &Digest) -> Vec<String> {
        self.tags
            .iter()
            .filter(|(_, d)| *d == manifest)
            .map(|(t, _)| t.clone())
            .collect()
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    fn state_path(&self) -> std::path::PathBuf {
        self.dir().join("state.json")
    }

    /// Reads the current state (consistent: the file is replaced atomically).
    pub fn state(&self) -> Result<State, StoreError> {
        let path = self.state_path();
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(io_ctx("reading the store state")(e)),
        };
        let data = read_limited(file, 256 << 20, "the store state")?;
        serde_json::from_slice(&data).map_err(|source| StoreError::Json {
            what: format!("store state {}", path.display()),
            source,
        })
    }

    /// Read-modify-writes the state under an exclusive lock.
    pub fn update_state<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _lock = FileLock::exclusive(&self.dir().join("state.lock"))
            .map_err(io_ctx("locking the store state"))?;
        let mut state = self.state()?;
        let out = f(&mut state)?;
        let data = serde_json::to_vec_pretty(&state).map_err(|source| StoreError::Json {
            what: "store state".into(),
            source,
        })?;
        write_atomic(&self.state_path(), &data)?;
        Ok(out)
    }
}
