//! Named volumes: sparse ext4 disk images under `<root>/volumes/<name>/`,
//! attached to the VM over virtio-blk and mounted by the agent. A volume
//! is a block device, so one running VM at a time may use it: the monitor
//! holds the volume's lock while its VM runs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::id;
use crate::layout;

/// Size of a new volume (sparse: only what is written takes space).
pub const DEFAULT_VOLUME_SIZE: u64 = 8 << 30;

/// Errors of volume operations.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// No volume has this name.
    #[error("No such volume: {0}")]
    NoSuchVolume(String),
    /// Containers reference the volume.
    #[error("volume {name} is in use by container(s) {}", containers.join(", "))]
    InUse {
        /// The volume.
        name: String,
        /// Short IDs of the containers using it.
        containers: Vec<String>,
    },
    /// Another running container has the volume's disk.
    #[error("volume {0} is attached to another running container; husk volumes are disks, usable by one running container at a time")]
    Busy(String),
    /// The name has characters that are not allowed.
    #[error("invalid volume name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-]+ are allowed")]
    InvalidName(String),
    /// Making the filesystem failed.
    #[error("mkfs.ext4 failed: {0}")]
    Mkfs(String),
    /// A filesystem operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Stored metadata is unreadable.
    #[error("volume {0}: unreadable metadata")]
    Meta(String),
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> VolumeError {
    let context = context.into();
    move |source| VolumeError::Io { context, source }
}

/// A volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Name.
    pub name: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Created for one container (image VOLUME or `-v /path`).
    pub anonymous: bool,
    /// Disk size in bytes.
    pub size: u64,
    /// The disk image (not stored: derived from the store path).
    #[serde(skip)]
    pub disk: PathBuf,
}

/// The volumes of a store root.
#[derive(Clone, Debug)]
pub struct Volumes {
    dir: PathBuf,
}

impl Volumes {
    /// Volumes in `dir` (`<root>/volumes`).
    pub fn new(dir: PathBuf) -> Volumes {
        Volumes { dir }
    }

    fn vol_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The lock held by the monitor whose VM has the volume.
    pub fn lock_path(&self, name: &str) -> PathBuf {
        self.vol_dir(name).join("lock")
    }

    /// Creates volume `name` (a random one when `None`); an existing volume
    /// of that name is returned as is (like `docker volume create`).
    pub fn create(
        &self,
        name: Option<&str>,
        size: u64,
        anonymous: bool,
    ) -> Result<Volume, VolumeError> {
        let name = match name {
            Some(n) if !id::valid_name(n) => return Err(VolumeError::InvalidName(n.to_string())),
            Some(n) => n.to_string(),
            None => id::hex(&id::random_bytes::<32>()),
        };
        if let Ok(v) = self.get(&name) {
            return Ok(v);
        }
        fs::create_dir_all(&self.dir)
            .map_err(io_ctx(format!("creating {}", self.dir.display())))?;
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&self.dir)
            .map_err(io_ctx("creating a volume directory"))?;
        make_ext4(&tmp.path().join("volume.ext4"), size)?;
        let vol = Volume {
            name: name.clone(),
            created: crate::time::now(),
            anonymous,
            size,
            disk: PathBuf::new(),
        };
        let meta = serde_json::to_vec_pretty(&vol).map_err(|_| VolumeError::Meta(name.clone()))?;
        fs::write(tmp.path().join("meta.json"), meta).map_err(io_ctx("writing volume metadata"))?;
        match fs::rename(tmp.path(), self.vol_dir(&name)) {
            Ok(()) => {
                let _ = tmp.keep();
                layout::sync_dir(&self.dir);
            }
            // Created concurrently by someone else: theirs wins.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists
                ) => {}
            Err(e) => return Err(io_ctx(format!("creating volume {name}"))(e)),
        }
        self.get(&name)
    }

    /// The volume called `name`.
    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        if !id::valid_name(name) {
            return Err(VolumeError::NoSuchVolume(name.to_string()));
        }
        let dir = self.vol_dir(name);
        let data = match fs::read(dir.join("meta.json")) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(VolumeError::NoSuchVolume(name.to_string()))
            }
            Err(e) => return Err(io_ctx(format!("reading volume {name}"))(e)),
        };
        let mut v: Volume =
            serde_json::from_slice(&data).map_err(|_| VolumeError::Meta(name.to_string()))?;
        v.disk = dir.join("volume.ext4");
        Ok(v)
    }

    /// All volumes, by name.
    pub fn list(&self) -> Result<Vec<Volume>, VolumeError> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_ctx("listing volumes")(e)),
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                self.clean_stale(&e.path());
                continue;
            }
            if let Ok(v) = self.get(&name) {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes a leftover temporary directory of a creation that died
    /// (tempdirs of live creations are younger than a minute).
    fn clean_stale(&self, path: &Path) {
        let old = fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 600);
        if old {
            let _ = fs::remove_dir_all(path);
        }
    }

    /// Removes volume `name`; the caller has checked that no container
    /// uses it. Fails if a VM has its disk right now.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        self.get(name)?;
        let dir = self.vol_dir(name);
        let Some(_lock) = layout::try_lock(&self.lock_path(name))
            .map_err(|_| VolumeError::Busy(name.to_string()))?
        else {
            return Err(VolumeError::Busy(name.to_string()));
        };
        let doomed = self
            .dir
            .join(format!(".rm-{name}-{}", id::hex(&id::random_bytes::<4>())));
        fs::rename(&dir, &doomed).map_err(io_ctx(format!("removing volume {name}")))?;
        fs::remove_dir_all(&doomed).map_err(io_ctx(format!("removing volume {name}")))
    }

    /// Takes the lock that gives one VM the volume's disk.
    pub fn claim(&self, name: &str) -> Result<layout::FileLock, VolumeError> {
        match layout::try_lock(&self.lock_path(name)) {
            Ok(Some(l)) => Ok(l),
            _ => Err(VolumeError::Busy(name.to_string())),
        }
    }
}

/// Creates a sparse ext4 image of `size` bytes at `path` (see
/// [`husk_sandbox::ext4::make_sparse_ext4`]).
pub fn make_ext4(path: &Path, size: u64) -> Result<(), VolumeError> {
    husk_sandbox::ext4::make_sparse_ext4(path, size).map_err(|e| match e {
        husk_sandbox::ext4::Ext4Error::Mkfs(why) => VolumeError::Mkfs(why),
        husk_sandbox::ext4::Ext4Error::File { path, source } => VolumeError::Io {
            context: format!("creating {}", path.display()),
            source,
        },
        husk_sandbox::ext4::Ext4Error::Spawn(source) => VolumeError::Io {
            context: "running mkfs.ext4 (install e2fsprogs)".into(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_claim_remove() {
        let dir = tempfile::tempdir().unwrap();
        let vols = Volumes::new(dir.path().join("volumes"));
        let v = vols.create(Some("data"), 64 << 20, false).unwrap();
        assert_eq!(v.name, "data");
        let sb = fs::read(&v.disk).unwrap();
        assert_eq!(&sb[1024 + 0x38..1024 + 0x3a], &0xEF53u16.to_le_bytes());
        let meta = fs::metadata(&v.disk).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 < 16 << 20,
            "sparse: {} blocks",
            meta.blocks()
        );
        // Idempotent.
        assert_eq!(
            vols.create(Some("data"), 1, false).unwrap().created,
            v.created
        );
        let anon = vols.create(None, 64 << 20, true).unwrap();
        assert_eq!(anon.name.len(), 64);
        let names: Vec<String> = vols.list().unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"data".to_string()));
        let claim = vols.claim("data").unwrap();
        assert!(matches!(vols.claim("data"), Err(VolumeError::Busy(_))));
        assert!(matches!(vols.remove("data"), Err(VolumeError::Busy(_))));
        drop(claim);
        vols.remove("data").unwrap();
        assert!(matches!(
            vols.get("data"),
            Err(VolumeError::NoSuchVolume(_))
        ));
        assert!(matches!(
            vols.create(Some("bad name"), 1, false),
            Err(VolumeError::InvalidName(_))
        ));
        assert_eq!(vols.list().unwrap().len(), 1);
    }
}
