//! `Seed`: the entropy and wall-clock time the host sends on every start.
//! A VM restored from a snapshot resumes with the snapshot's random pool
//! and clock, identical in every clone; the host's seed makes each one its
//! own. The bytes are added to the kernel's pool *credited*
//! (`RNDADDENTROPY`), so the guest's `getrandom` is ready at once, and
//! `CLOCK_REALTIME` is set to the host's time.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use husk_protocol::{SEED_MAX_ENTROPY, SEED_MIN_ENTROPY};
use rustix::time::{ClockId, Timespec};

use crate::system::SysError;

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])` (not in the libc crate).
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;

/// Nanoseconds per second.
const NANOS: u64 = 1_000_000_000;

/// Checks a seed's entropy length: [`SEED_MIN_ENTROPY`] to
/// [`SEED_MAX_ENTROPY`] bytes.
pub fn check(entropy: &[u8]) -> Result<(), String> {
    if (SEED_MIN_ENTROPY..=SEED_MAX_ENTROPY).contains(&entropy.len()) {
        Ok(())
    } else {
        Err(format!(
            "Seed carries {} bytes of entropy (expected {SEED_MIN_ENTROPY} to {SEED_MAX_ENTROPY})",
            entropy.len()
        ))
    }
}

/// The argument of `RNDADDENTROPY`, a `struct rand_pool_info`: the credit
/// in bits (`int`), the buffer's size in bytes (`int`), then the bytes.
/// `entropy` has passed [`check`], so both counts fit an `int`.
pub fn pool_info(entropy: &[u8]) -> Vec<u8> {
    let bytes = i32::try_from(entropy.len()).unwrap_or(0);
    let bits = bytes.saturating_mul(8);
    let mut info = Vec::with_capacity(8 + entropy.len());
    info.extend_from_slice(&bits.to_ne_bytes());
    info.extend_from_slice(&bytes.to_ne_bytes());
    info.extend_from_slice(entropy);
    info
}

/// `unix_time_ns` as a `timespec`.
pub fn timespec(unix_time_ns: u64) -> Timespec {
    Timespec {
        // u64::MAX / 1e9 is about 1.8e10: it fits an i64.
        tv_sec: i64::try_from(unix_time_ns / NANOS).unwrap_or(i64::MAX),
        // Below 1e9: it fits.
        tv_nsec: i64::try_from(unix_time_ns % NANOS).unwrap_or(0),
    }
}

/// Adds `entropy` (checked) to the kernel's pool, credited, and sets the
/// wall clock (needs CAP_SYS_ADMIN and CAP_SYS_TIME: PID 1 in the guest).
pub fn apply(entropy: &[u8], unix_time_ns: u64) -> Result<(), SysError> {
    check(entropy).map_err(SysError::Invalid)?;
    let err = |what: &'static str| move |source: io::Error| SysError::Seed { what, source };
    let urandom = File::options()
        .write(true)
        .open("/dev/urandom")
        .map_err(err("opening /dev/urandom"))?;
    let info = pool_info(entropy);
    // SAFETY: RNDADDENTROPY reads a `struct rand_pool_info`: two ints, then
    // `buf_size` bytes; `info` is exactly that (8 + entropy.len() bytes,
    // buf_size = entropy.len()), the kernel copies it from user memory
    // (no alignment needed) and `info` outlives the call.
    let rc = unsafe { libc::ioctl(urandom.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) };
    if rc < 0 {
        return Err(err("adding entropy (RNDADDENTROPY)")(
            io::Error::last_os_error(),
        ));
    }
    rustix::time::clock_settime(ClockId::Realtime, timespec(unix_time_ns))
        .map_err(|e| err("setting the clock")(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_lengths_are_bounded() {
        assert!(check(&[0; 16]).is_ok());
        assert!(check(&[0; 64]).is_ok());
        assert!(check(&[0; 512]).is_ok());
        for n in [0, 1, 15, 513, 100_000] {
            let e = check(&vec![0; n]).unwrap_err();
            assert!(e.contains(&format!("{n} bytes")), "{e}");
        }
    }

    #[test]
    fn pool_info_is_a_rand_pool_info() {
        let entropy: Vec<u8> = (1..=20).collect();
        let info = pool_info(&entropy);
        assert_eq!(info.len(), 28);
        assert_eq!(i32::from_ne_bytes(info[0..4].try_into().unwrap()), 160);
        assert_eq!(i32::from_ne_bytes(info[4..8].try_into().unwrap()), 20);
        assert_eq!(&info[8..], &entropy[..]);
    }

    #[test]
    fn times_split_into_seconds_and_nanoseconds() {
        let t = timespec(1_700_000_000_123_456_789);
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 123_456_789));
        let t = timespec(u64::MAX);
        assert_eq!((t.tv_sec, t.tv_nsec), (18_446_744_073, 709_551_615));
        assert_eq!(timespec(0).tv_sec, 0);
    }
}
