//! One uid (and the gid of the same number) per running VM, from a
//! configured range, held by an flock on `<jail base>/uids/<uid>.lock` for
//! the VM's life: free again as soon as its holder is gone, however it
//! ended. The uids need no passwd entry.

use std::path::Path;

use images::store::FileLock;

use super::{io_ctx, make_private_dir, JailError, DEFAULT_UID_BASE, DEFAULT_UID_COUNT, UIDS_ENV};

/// A range of uids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UidRange {
    /// First uid.
    pub base: u32,
    /// How many.
    pub count: u32,
}

impl UidRange {
    /// `$HUSK_JAIL_UIDS` (`BASE:COUNT`) or the default range.
    pub fn configured() -> Result<UidRange, JailError> {
        match std::env::var(UIDS_ENV) {
            Ok(v) => UidRange::parse(&v),
            Err(_) => Ok(UidRange {
                base: DEFAULT_UID_BASE,
                count: DEFAULT_UID_COUNT,
            }),
        }
    }

    /// Parses `BASE:COUNT`; the base is not root and the range fits u32.
    pub fn parse(s: &str) -> Result<UidRange, JailError> {
        let bad = || JailError::UidRange(s.to_string());
        let (base, count) = s.split_once(':').ok_or_else(bad)?;
        let base: u32 = base.trim().parse().map_err(|_| bad())?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        if base == 0 || count == 0 || u64::from(base) + u64::from(count) > u64::from(u32::MAX) {
            return Err(bad());
        }
        Ok(UidRange { base, count })
    }
}

/// A uid held for one VM (released on drop).
pub struct UidLease {
    uid: u32,
    _lock: FileLock,
}

impl UidLease {
    /// The uid (and gid).
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The lock's file: whoever holds a copy keeps the uid taken.
    pub fn lock_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self._lock.as_fd()
    }
}

/// Takes the first free uid of `range`, starting from a point derived
/// from this process's id (so concurrent starters rarely contend), with
/// its lock under `dir`.
pub fn allocate(range: UidRange, dir: &Path) -> Result<UidLease, JailError> {
    make_private_dir(dir)?;
    let start = std::process::id().wrapping_mul(2_654_435_761) % range.count;
    for i in 0..range.count {
        let uid = range.base + (start + i) % range.count;
        let path = dir.join(format!("{uid}.lock"));
        let lock = FileLock::try_exclusive(&path)
            .map_err(io_ctx(format!("locking {}", path.display())))?;
        if let Some(lock) = lock {
            return Ok(UidLease { uid, _lock: lock });
        }
    }
    Err(JailError::NoUid {
        base: range.base,
        end: u64::from(range.base) + u64::from(range.count),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_bad_ones_are_refused() {
        assert_eq!(
            UidRange::parse("1000:10").unwrap(),
            UidRange {
                base: 1000,
                count: 10
            }
        );
        for bad in ["", "1000", "0:10", "10:0", "x:1", "4294967000:1000"] {
            assert!(UidRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn held_uids_are_not_given_twice() {
        let dir = tempfile::tempdir().unwrap();
        let range = UidRange {
            base: 5000,
            count: 2,
        };
        let a = allocate(range, dir.path()).unwrap();
        let b = allocate(range, dir.path()).unwrap();
        assert_ne!(a.uid(), b.uid());
        assert!(matches!(
            allocate(range, dir.path()),
            Err(JailError::NoUid { .. })
        ));
        let freed = a.uid();
        drop(a);
        assert_eq!(allocate(range, dir.path()).unwrap().uid(), freed);
    }
}
