//! A private per-VM directory for its sockets (and, for `husk vm run`,
//! its console log).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::process::geteuid;

/// The run directory could not be made.
#[derive(Debug, thiserror::Error)]
#[error("creating a run directory in {base}")]
pub struct RunDirError {
    base: PathBuf,
    #[source]
    source: io::Error,
}

/// Where run directories go when `/run/husk` cannot be used (not root):
/// the user's `$XDG_RUNTIME_DIR/husk`, else `<temp dir>/husk-<uid>`.
fn fallback_base() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("husk"),
        _ => std::env::temp_dir().join(format!("husk-{}", geteuid().as_raw())),
    }
}

/// Makes `base` (mode 0700 where new) and checks that it is a directory
/// (not a symlink) of this user that no one else can write: another local
/// user must not be able to pre-create it and watch or replace the VMs'
/// sockets.
fn private_base(base: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(base)?;
    let meta = fs::symlink_metadata(base)?;
    let me = geteuid().as_raw();
    if !meta.file_type().is_dir() {
        return Err(io::Error::other("it is not a directory"));
    }
    if meta.uid() != me {
        return Err(io::Error::other(format!(
            "it belongs to uid {}, not to uid {me}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(io::Error::other("other users can write to it"));
    }
    Ok(())
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

    /// Creates `<base>/<prefix>XXXXXX`; `base` must be a directory of
    /// this user that others cannot write (made if missing).
    pub fn create_in(base: &Path, prefix: &str) -> Result<Self, RunDirError> {
        private_base(base)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Why `base` was refused (the error's source).
    fn refused(base: &Path) -> String {
        match RunDir::create_in(base, "t-") {
            Ok(d) => panic!(
                "{} accepted as a base: {}",
                base.display(),
                d.path().display()
            ),
            Err(e) => e.source.to_string(),
        }
    }

    #[test]
    fn a_new_base_is_private_and_holds_run_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("a/b");
        let dir = RunDir::create_in(&base, "t-").unwrap();
        assert!(dir.path().starts_with(&base));
        let mode = fs::metadata(&base).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn bases_others_control_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(refused(&open).contains("other users can write"));

        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(refused(&link).contains("not a directory"));

        // A directory of another user: made so as root, else the root dir.
        let foreign = if geteuid().is_root() {
            let d = tmp.path().join("foreign");
            fs::create_dir(&d).unwrap();
            rustix::fs::chown(&d, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
            d
        } else {
            PathBuf::from("/")
        };
        assert!(refused(&foreign).contains("belongs to uid"));
    }
}
