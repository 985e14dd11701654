//! Advisory file locks (flock) that serialise husk processes sharing a
//! store: the image store's, and the container store's built on it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

/// A held flock; released when dropped (the file is closed) or when the
/// process dies.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

/// The locked file: a descriptor passed to another process keeps the lock
/// held until that process closes it too (flock locks belong to the open
/// file, not to a process).
impl std::os::fd::AsFd for FileLock {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self._file.as_fd()
    }
}

impl FileLock {
    /// Blocks until an exclusive lock on `path` (created if missing) is held.
    pub fn exclusive(path: &Path) -> io::Result<FileLock> {
        FileLock::acquire(path, FlockOperation::LockExclusive)?
            .ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }

    /// Blocks until a shared lock on `path` (created if missing) is held.
    pub fn shared(path: &Path) -> io::Result<FileLock> {
        FileLock::acquire(path, FlockOperation::LockShared)?
            .ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }

    /// Locks `path` (created if missing) exclusively if nobody holds it.
    pub fn try_exclusive(path: &Path) -> io::Result<Option<FileLock>> {
        FileLock::acquire(path, FlockOperation::NonBlockingLockExclusive)
    }

    /// Whether some process holds an exclusive lock on `path` (false if
    /// the file does not exist).
    pub fn is_held(path: &Path) -> bool {
        let Ok(file) = File::open(path) else {
            return false;
        };
        // A shared lock taken here is released when `file` closes.
        matches!(
            lock_retrying(&file, FlockOperation::NonBlockingLockShared),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK
        )
    }

    fn acquire(path: &Path, op: FlockOperation) -> io::Result<Option<FileLock>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(path)?;
        match lock_retrying(&file, op) {
            Ok(()) => Ok(Some(FileLock { _file: file })),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// flock(2), retried when a signal interrupts it.
fn lock_retrying(file: &File, op: FlockOperation) -> rustix::io::Result<()> {
    loop {
        match flock(file, op) {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_are_seen_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        assert!(!FileLock::is_held(&p));
        let l = FileLock::exclusive(&p).unwrap();
        assert!(FileLock::is_held(&p));
        assert!(FileLock::try_exclusive(&p).unwrap().is_none());
        drop(l);
        assert!(!FileLock::is_held(&p));
        let shared = FileLock::shared(&p).unwrap();
        assert!(!FileLock::is_held(&p), "a shared lock is not exclusive");
        assert!(FileLock::try_exclusive(&p).unwrap().is_none());
        drop(shared);
        assert!(FileLock::try_exclusive(&p).unwrap().is_some());
    }
}
