//! Where things live under the store root, and the small file primitives
//! the rest builds on (atomic JSON files, flock locks, short socket paths).
//!
//! ```text
//! <root>/containers/.lock                 name allocation (flock)
//! <root>/containers/<id>/config.json      written once at create
//!                        state.json       replaced atomically (temp+fsync+rename)
//!                        lock             serialises start/stop/delete (flock)
//!                        monitor.lock     held by the live monitor (flock)
//!                        rw.ext4          writable disk (sparse ext4)
//!                        log.json         json-lines logs (Docker's json-file)
//!                        console.log      the guest's serial console
//!                        monitor.log      the monitor's own diagnostics
//!                        vsock.sock(_1024) the VM's vsock sockets
//!                        attach.sock      the monitor's attach socket
//! <root>/containers/.tmp-<id>/            a container being created
//! <root>/containers/.rm-<id>/             a container being removed
//! <root>/volumes/<name>/{volume.ext4,meta.json,lock}
//! ```

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub use images::store::FileLock;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{io_err, Error};

/// Largest JSON document read from the store.
const MAX_JSON: u64 = 16 << 20;

/// Paths of a store root.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root`.
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/containers`.
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// `<root>/volumes`.
    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// The lock taken while names are allocated or released.
    pub fn names_lock(&self) -> PathBuf {
        self.containers().join(".lock")
    }

    /// The files of container `id`.
    pub fn container(&self, id: &str) -> ContainerPaths {
        ContainerPaths {
            dir: self.containers().join(id),
        }
    }

    /// Creates the top-level directories (private to root).
    pub fn create_dirs(&self) -> Result<(), Error> {
        for d in [self.root.clone(), self.containers(), self.volumes()] {
            images::store::create_private_dir(&d)?;
        }
        Ok(())
    }
}

/// The files of one container.
#[derive(Clone, Debug)]
pub struct ContainerPaths {
    /// The container directory.
    pub dir: PathBuf,
}

impl ContainerPaths {
    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// `state.json`.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// The lifecycle lock.
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }
    /// Held by the live monitor.
    pub fn monitor_lock(&self) -> PathBuf {
        self.dir.join("monitor.lock")
    }
    /// The writable disk.
    pub fn rw_disk(&self) -> PathBuf {
        self.dir.join("rw.ext4")
    }
    /// The json-lines log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("log.json")
    }
    /// The guest console.
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    /// The monitor's diagnostics (its stderr).
    pub fn monitor_log(&self) -> PathBuf {
        self.dir.join("monitor.log")
    }
    /// Present once the user stopped or killed the container: its restart
    /// policy does not apply until the next `start`.
    pub fn user_stop(&self) -> PathBuf {
        self.dir.join("user-stop")
    }
    /// Name of the VM's vsock socket inside the directory.
    pub const VSOCK: &'static str = "vsock.sock";
    /// Name of the attach socket inside the directory.
    pub const ATTACH: &'static str = "attach.sock";
}

/// A path to a file in a directory that stays short enough for a Unix
/// socket address (108 bytes): the direct path when it fits, else
/// `/proc/self/fd/<dirfd>/<name>` through a descriptor held open here.
#[derive(Debug)]
pub struct ShortPath {
    _dir: Option<OwnedFd>,
    path: PathBuf,
}

/// Longest socket path used directly (leaves room for `_<port>`).
const MAX_SOCKET_PATH: usize = 96;

impl ShortPath {
    /// `dir/name`, shortened if needed.
    pub fn new(dir: &Path, name: &str) -> Result<ShortPath, Error> {
        let direct = dir.join(name);
        if direct.as_os_str().len() <= MAX_SOCKET_PATH {
            return Ok(ShortPath {
                _dir: None,
                path: direct,
            });
        }
        let fd = rustix::fs::open(
            dir,
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| io_err(format!("opening {}", dir.display()))(e.into()))?;
        let path = PathBuf::from(format!("/proc/self/fd/{}/{name}", fd.as_raw_fd()));
        Ok(ShortPath {
            _dir: Some(fd),
            path,
        })
    }

    /// The usable path (valid while `self` lives, in this process only).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads and parses a JSON file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, Error> {
    use std::io::Read;
    let file = File::open(path).map_err(io_err(format!("reading {}", path.display())))?;
    let mut data = Vec::new();
    file.take(MAX_JSON)
        .read_to_end(&mut data)
        .map_err(io_err(format!("reading {}", path.display())))?;
    serde_json::from_slice(&data).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a JSON file atomically: a synced temporary file renamed over
/// `path`, then the directory synced.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let data = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, &data)
}

/// Writes `data` to `path` atomically.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io_err(format!(
            "creating a temporary file in {}",
            dir.display()
        )))?;
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err(format!("writing {}", path.display())))?;
    tmp.persist(path).map_err(|e| Error::Io {
        context: format!("renaming into {}", path.display()),
        source: e.error,
    })?;
    sync_dir(dir);
    Ok(())
}

/// fsyncs a directory (best effort: durability, not correctness).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Locks `path` (created if missing) exclusively, blocking until it is
/// free.
pub fn lock(path: &Path) -> Result<FileLock, Error> {
    FileLock::exclusive(path).map_err(io_err(format!("locking {}", path.display())))
}

/// Locks `path` (created if missing) exclusively if nobody holds it.
pub fn try_lock(path: &Path) -> Result<Option<FileLock>, Error> {
    FileLock::try_exclusive(path).map_err(io_err(format!("locking {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn json_is_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        write_json(&p, &vec![1, 2]).unwrap();
        write_json(&p, &vec![3]).unwrap();
        let v: Vec<i32> = read_json(&p).unwrap();
        assert_eq!(v, [3]);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temporary files left");
        fs::write(&p, b"{").unwrap();
        let err = read_json::<Vec<i32>>(&p).unwrap_err().to_string();
        assert!(err.contains("invalid JSON"), "{err}");
    }

    #[test]
    fn long_socket_paths_are_shortened() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("x".repeat(100));
        fs::create_dir(&long).unwrap();
        let sp = ShortPath::new(&long, "s.sock").unwrap();
        assert!(sp.path().starts_with("/proc/self/fd/"), "{:?}", sp.path());
        let l = std::os::unix::net::UnixListener::bind(sp.path()).unwrap();
        assert!(long.join("s.sock").exists());
        std::os::unix::net::UnixStream::connect(sp.path()).unwrap();
        drop(l);
        let short = ShortPath::new(dir.path(), "s.sock").unwrap();
        assert_eq!(short.path(), dir.path().join("s.sock"));
    }
}
