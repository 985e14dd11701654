//! A private per-VM directory for its sockets (and, for `husk vm run`,
//! its console log).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The run directory could not be made.
#[derive(Debug, thiserror::Error)]
#[error("creating a run directory in {base}")]
pub struct RunDirError {
    base: PathBuf,
    #[source]
    source: io::Error,
}

/// Where run directories go when `/run/husk` cannot be used.
fn fallback_base() -> PathBuf {
    std::env::temp_dir().join("husk")
}

/// A private directory for one VM, removed on drop unless kept.
pub struct RunDir {
    dir: tempfile::TempDir,
}

impl RunDir {
    /// Creates `/run/husk/<prefix>XXXXXX` (or the same under the temp
    /// dir). `$HUSK_RUN_DIR` replaces `/run/husk` (and disables the
    /// fallback).
    pub fn create(prefix: &str) -> Result<Self, RunDirError> {
        if let Some(base) = std::env::var_os("HUSK_RUN_DIR") {
            return Self::create_in(Path::new(&base), prefix);
        }
        Self::create_in(Path::new("/run/husk"), prefix)
            .or_else(|_| Self::create_in(&fallback_base(), prefix))
    }

    /// Creates `<base>/<prefix>XXXXXX`.
    pub fn create_in(base: &Path, prefix: &str) -> Result<Self, RunDirError> {
        fs::create_dir_all(base)
            .and_then(|()| tempfile::Builder::new().prefix(prefix).tempdir_in(base))
            .map(|dir| Self { dir })
            .map_err(|source| RunDirError {
                base: base.to_path_buf(),
                source,
            })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the directory with only `keep` in it (for post-mortems) and
    /// returns `keep`.
    pub fn keep(self, keep: &Path) -> PathBuf {
        let dir = self.dir.keep();
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.path() != keep {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        keep.to_path_buf()
    }
}
