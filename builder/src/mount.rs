//! Host mounts the build needs (root only): COPY/ADD's read-only view of an
//! image, its layer disks stacked with overlayfs. Those EROFS disks are
//! made by the host from checked layer tars; nothing a guest wrote is ever
//! mounted here (a RUN step's changes leave its VM as a tar stream). Every
//! mount is undone when its guard drops, whatever happened in between.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors mounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A filesystem operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `mount` failed.
    #[error("mounting {target}: {stderr}")]
    Mount {
        /// The mount point.
        target: String,
        /// mount's error output.
        stderr: String,
    },
    /// The image's layer disks could not be built.
    #[error(transparent)]
    Layers(#[from] images::LayerError),
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> MountError {
    let context = context.into();
    move |source| MountError::Io { context, source }
}

/// Mount points, unmounted in reverse order on drop.
#[derive(Debug, Default)]
pub struct Mounts {
    points: Vec<PathBuf>,
}

impl Mounts {
    /// Runs `mount <args> <target>` (creating `target`) and remembers it.
    pub fn mount(&mut self, args: &[&OsStr], target: &Path) -> Result<(), MountError> {
        std::fs::create_dir_all(target)
            .map_err(io_ctx(format!("creating {}", target.display())))?;
        let out = Command::new("mount")
            .args(args)
            .arg(target)
            .output()
            .map_err(io_ctx("running mount"))?;
        if !out.status.success() {
            return Err(MountError::Mount {
                target: target.display().to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        self.points.push(target.to_path_buf());
        Ok(())
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        while let Some(p) = self.points.pop() {
            let ok = Command::new("umount")
                .arg(&p)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                log::warn!("umount {} failed; detaching it lazily", p.display());
                let _ = Command::new("umount").arg("-l").arg(&p).status();
            }
        }
    }
}

/// An image's root filesystem mounted read-only on the host.
#[derive(Debug)]
pub struct RootfsView {
    // Field order matters: unmount before the directory goes.
    _mounts: Mounts,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl RootfsView {
    /// The merged root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Mounts `image` (no layers: an empty directory) under a new directory
    /// in `work`.
    pub fn mount(
        store: &images::Store,
        image: Option<&images::Image>,
        work: &Path,
    ) -> Result<RootfsView, MountError> {
        let dir = tempfile::Builder::new()
            .prefix("rootfs-")
            .tempdir_in(work)
            .map_err(io_ctx("creating a mount directory"))?;
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).map_err(io_ctx("creating a mount directory"))?;
        let mut mounts = Mounts::default();
        let disks = match image {
            Some(i) if !i.layers.is_empty() => store.layer_disks(i)?,
            _ => Vec::new(),
        };
        if disks.is_empty() {
            return Ok(RootfsView {
                _mounts: mounts,
                root: empty,
                _dir: dir,
            });
        }
        let mut lowers = Vec::new();
        for (i, d) in disks.iter().enumerate() {
            let at = dir.path().join(format!("l{i}"));
            mounts.mount(
                &[
                    OsStr::new("-t"),
                    OsStr::new("erofs"),
                    OsStr::new("-o"),
                    OsStr::new("loop,ro"),
                    d.path.as_os_str(),
                ],
                &at,
            )?;
            lowers.push(at.display().to_string());
        }
        lowers.reverse();
        // An empty bottom layer: overlayfs needs two lower layers without an upper.
        lowers.push(empty.display().to_string());
        let root = dir.path().join("root");
        let opts = format!("ro,lowerdir={}", lowers.join(":"));
        mounts.mount(
            &[
                OsStr::new("-t"),
                OsStr::new("overlay"),
                OsStr::new("overlay"),
                OsStr::new("-o"),
                OsStr::new(&opts),
            ],
            &root,
        )?;
        Ok(RootfsView {
            _mounts: mounts,
            root,
            _dir: dir,
        })
    }
}
