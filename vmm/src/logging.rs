//! Bounded diagnostics: what a guest can make the host write is capped.
//!
//! - [`rotate`] moves a file to `NAME.1` (and `NAME.1` to `NAME.2`, ...),
//!   the rotation of container logs and of the console log.
//! - [`CappedFile`] is a file that rotates once it holds a given number
//!   of bytes, keeping it and one older file: the guest's console log.
//! - [`LogLimiter`] and [`log_limited!`](crate::log_limited) rate-limit a
//!   message a guest can trigger at will (a failing disk request, a bad
//!   queue): a few per interval, then a count of those left out.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The `n`th rotated file of `path` (`NAME.n`); 0 is `path` itself.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Moves `path` to `NAME.1`, each older `NAME.n` to `NAME.(n+1)`, and
/// drops the oldest so that at most `keep` files remain, `path` (now
/// absent) included. Missing older files are skipped.
pub fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    for n in (1..keep.saturating_sub(1)).rev() {
        match std::fs::rename(rotated(path, n), rotated(path, n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    if keep <= 1 {
        return std::fs::remove_file(path);
    }
    std::fs::rename(path, rotated(path, 1))
}

/// Opens log file `path` for writing at its end (`append`) or from
/// empty, creating it private to the user (0600); a symlink at `path` is
/// refused (`ELOOP`), so a log cannot be redirected to another file.
pub fn open_log(path: &Path, append: bool) -> io::Result<File> {
    log_options(append).open(path)
}

/// How [`open_log`] opens a log file.
fn log_options(append: bool) -> OpenOptions {
    let mut options = OpenOptions::new();
    options
        .write(true)
        .append(append)
        .truncate(!append)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW);
    options
}

/// The most bytes the console log holds before it is rotated (so at most
/// twice this is on disk: `console.log` and `console.log.1`).
pub const CONSOLE_MAX_BYTES: u64 = 1 << 20;

/// A file created (truncated) at a path whose content moves to `NAME.1`
/// when it holds `max` bytes, and starts again: at most `2 * max` bytes
/// are on disk however much is written.
///
/// Both files are opened when it is created and rotation copies the full
/// file into `NAME.1` with positioned reads and writes, then truncates
/// both: it needs no open, rename or unlink, so the vCPU threads writing
/// the serial console do it under their seccomp filter.
pub struct CappedFile {
    file: File,
    older: File,
    written: u64,
    max: u64,
}

impl CappedFile {
    /// Creates (or truncates) `path` and `NAME.1`.
    pub fn create(path: &Path, max: u64) -> io::Result<CappedFile> {
        // Read back when it is rotated.
        let file = log_options(false).read(true).open(path)?;
        let older = open_log(&rotated(path, 1), false)?;
        Ok(CappedFile {
            file,
            older,
            written: 0,
            max: max.max(1),
        })
    }

    /// Copies the current file into the older one and empties it.
    fn rotate(&mut self) -> io::Result<()> {
        let mut buf = vec![0u8; 64 << 10];
        let mut at = 0u64;
        while at < self.written {
            let n = self.file.read_at(&mut buf, at)?;
            if n == 0 {
                break;
            }
            self.older.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
        self.older.set_len(at)?;
        self.file.set_len(0)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for CappedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written >= self.max {
            self.rotate()?;
        }
        let room = usize::try_from(self.max - self.written).unwrap_or(usize::MAX);
        let n = self
            .file
            .write_at(&buf[..buf.len().min(room)], self.written)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How many messages of one kind are logged per [`LIMIT_INTERVAL`].
pub const LIMIT_BURST: u32 = 10;
/// The interval of [`LIMIT_BURST`].
pub const LIMIT_INTERVAL: Duration = Duration::from_secs(60);

/// Lets [`LIMIT_BURST`] messages through per [`LIMIT_INTERVAL`] and
/// counts the rest. One per call site (see
/// [`log_limited!`](crate::log_limited)).
pub struct LogLimiter {
    window: Mutex<Window>,
}

struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LogLimiter {
    /// A limiter that has let nothing through yet.
    pub const fn new() -> LogLimiter {
        LogLimiter {
            window: Mutex::new(Window {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a message may be logged now: `Some(n)` with the number of
    /// messages left out since the last one logged, or `None`.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.start
            .is_none_or(|s| now.duration_since(s) >= LIMIT_INTERVAL)
        {
            w.start = Some(now);
            w.logged = 0;
        }
        if w.logged < LIMIT_BURST {
            w.logged += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

/// `log::log!(level, ...)`, rate-limited per call site with a
/// [`LogLimiter`]: for messages a guest can trigger repeatedly.
#[macro_export]
macro_rules! log_limited {
    ($level:expr, $($arg:tt)+) => {{
        static LIMITER: $crate::logging::LogLimiter = $crate::logging::LogLimiter::new();
        match LIMITER.allow() {
            Some(0) => ::log::log!($level, $($arg)+),
            Some(n) => ::log::log!(
                $level,
                "{} ({n} similar messages suppressed)",
                format_args!($($arg)+)
            ),
            None => {}
        }
    }};
}

/// The logger [`log_to_stderr`] installs.
struct StderrLogger {
    prefix: fn() -> String,
    keep: fn() -> bool,
}

impl log::Log for StderrLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, r: &log::Record) {
        if (self.keep)() {
            eprintln!(
                "{} {} {}: {}",
                (self.prefix)(),
                r.level(),
                r.target(),
                r.args()
            );
        }
    }

    fn flush(&self) {}
}

static STDERR_LOGGER: std::sync::OnceLock<StderrLogger> = std::sync::OnceLock::new();

/// Sends log records to stderr, one line each starting with `prefix()`,
/// while `keep()` allows: warnings and errors, or everything with
/// `HUSK_DEBUG` set. The first call in a process wins.
pub fn log_to_stderr(prefix: fn() -> String, keep: fn() -> bool) {
    let logger = STDERR_LOGGER.get_or_init(|| StderrLogger { prefix, keep });
    if log::set_logger(logger).is_ok() {
        let debug = std::env::var_os("HUSK_DEBUG").is_some();
        log::set_max_level(if debug {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Warn
        });
    }
}

/// `err: source: source...` on one line: the one error-chain printer of
/// husk (the sandbox layer and the binaries use it too).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        s.push_str(": ");
        s.push_str(&e.to_string());
        source = e.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_limiter_lets_a_burst_through_per_interval_and_counts_the_rest() {
        let limiter = LogLimiter::new();
        let t0 = Instant::now();
        for _ in 0..LIMIT_BURST {
            assert_eq!(limiter.allow_at(t0), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(limiter.allow_at(t0 + Duration::from_secs(1)), None);
        }
        // The next interval: the count of those left out comes along.
        let t1 = t0 + LIMIT_INTERVAL;
        assert_eq!(limiter.allow_at(t1), Some(5));
        assert_eq!(limiter.allow_at(t1), Some(0));
        // The macro compiles with and without arguments and never panics.
        for i in 0..3 * LIMIT_BURST {
            crate::log_limited!(log::Level::Warn, "message {i}");
            crate::log_limited!(log::Level::Error, "plain");
        }
    }

    #[test]
    fn logs_are_private_and_never_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        open_log(&path, true).unwrap().write_all(b"one\n").unwrap();
        open_log(&path, true).unwrap().write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        open_log(&path, false).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");

        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        for append in [true, false] {
            let err = open_log(&link, append).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
        }
        assert!(CappedFile::create(&link, 10).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }

    #[test]
    fn rotate_keeps_at_most_keep_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        for i in 0..5 {
            std::fs::write(&p, format!("{i}")).unwrap();
            rotate(&p, 3).unwrap();
        }
        let read = |n| std::fs::read_to_string(rotated(&p, n)).ok();
        assert_eq!(
            (read(0), read(1), read(2), read(3)),
            (None, Some("4".into()), Some("3".into()), None)
        );
        std::fs::write(&p, "x").unwrap();
        rotate(&p, 1).unwrap();
        assert!(!p.exists());
        assert_eq!(read(1), Some("4".into()));
    }

    #[test]
    fn a_capped_file_keeps_at_most_twice_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        std::fs::write(rotated(&p, 1), "stale").unwrap();
        let mut f = CappedFile::create(&p, 10).unwrap();
        let old = std::fs::read(rotated(&p, 1)).unwrap();
        assert!(old.is_empty(), "an old run's file is emptied");
        for i in 0..100u8 {
            f.write_all(&[b'a' + i % 26; 3]).unwrap();
        }
        f.flush().unwrap();
        // 300 bytes written: the current file is full, the older one too.
        let cur = std::fs::read(&p).unwrap();
        let old = std::fs::read(rotated(&p, 1)).unwrap();
        assert_eq!((old.len(), cur.len()), (10, 10));
        let mut end = old.clone();
        end.extend(&cur);
        let all: Vec<u8> = (0..100u8).flat_map(|i| [b'a' + i % 26; 3]).collect();
        assert!(all.ends_with(&end), "the newest bytes are kept, in order");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
