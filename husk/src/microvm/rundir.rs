//! The per-run directory: the vsock sockets and the default console log.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where run directories go when `/run/husk` cannot be used.
fn fallback_base() -> PathBuf {
    std::env::temp_dir().join("husk")
}

/// A private directory for one VM, removed on drop unless kept.
pub struct RunDir {
    dir: tempfile::TempDir,
}

impl RunDir {
    /// Creates `/run/husk/vm-XXXXXX` (or the same under the temp dir).
    /// `$HUSK_RUN_DIR` replaces `/run/husk` (and disables the fallback).
    pub fn create() -> Result<Self> {
        if let Some(base) = std::env::var_os("HUSK_RUN_DIR") {
            return Self::create_in(Path::new(&base));
        }
        Self::create_in(Path::new("/run/husk")).or_else(|_| Self::create_in(&fallback_base()))
    }

    fn create_in(base: &Path) -> Result<Self> {
        fs::create_dir_all(base)
            .and_then(|()| tempfile::Builder::new().prefix("vm-").tempdir_in(base))
            .map(|dir| Self { dir })
            .with_context(|| format!("creating a run directory in {}", base.display()))
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
