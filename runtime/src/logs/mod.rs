//! Container logs in Docker's json-file format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2024-...Z"}`, in `log.json`
//! rotated over `log.json.1`, `log.json.2`, ... (oldest last) as
//! [`LogConfig`] says.

mod config;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
pub use vmm::logging::rotated;

pub use config::{LogConfig, LogOptError, DEFAULT_MAX_FILE, DEFAULT_MAX_SIZE, MAX_MAX_FILE};

/// One log line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The text, with its newline (a partial line has none).
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When it was received (RFC 3339, nanoseconds).
    pub time: String,
}

/// Appends output to a log file, rotating it.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    config: LogConfig,
}

impl LogWriter {
    /// Opens `path` for appending (created if missing).
    pub fn open(path: &Path, config: LogConfig) -> io::Result<LogWriter> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            config,
        })
    }

    /// Records `bytes` of `stream`, one entry per line. Invalid UTF-8 is
    /// replaced, as Docker does.
    pub fn write(&mut self, stream: &str, bytes: &[u8]) -> io::Result<()> {
        let time = crate::time::now();
        let mut out = Vec::new();
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let entry = LogEntry {
                log: String::from_utf8_lossy(line).into_owned(),
                stream: stream.to_string(),
                time: time.clone(),
            };
            let start = out.len();
            serde_json::to_writer(&mut out, &entry).map_err(io::Error::other)?;
            out.push(b'\n');
            let len = (out.len() - start) as u64;
            if self.size > 0 && self.size + len > self.config.max_size {
                // What came before this entry fills the current file.
                self.append(&out[..start])?;
                out.drain(..start);
                self.rotate()?;
            }
            self.size += len;
        }
        self.append(&out)
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    /// Moves `log.json` to `log.json.1` (and each older file one up,
    /// dropping the oldest), or empties it when only one file is kept.
    fn rotate(&mut self) -> io::Result<()> {
        self.size = 0;
        let keep = self.config.max_file;
        if keep <= 1 {
            return self.file.set_len(0);
        }
        vmm::logging::rotate(&self.path, keep)?;
        self.file = open_append(&self.path)?;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    vmm::logging::open_log(path, true)
}

/// Reads entries from a log as they are appended, across rotations.
pub struct LogReader<T = LogEntry> {
    path: PathBuf,
    file: BufReader<File>,
    /// The (dev, inode) of `file`.
    id: (u64, u64),
    partial: Vec<u8>,
    /// The kind of line read (the event log's lines are events).
    kind: std::marker::PhantomData<T>,
}

impl<T: serde::de::DeserializeOwned> LogReader<T> {
    /// Opens the log at `path` from its start: its oldest rotated file.
    pub fn open(path: &Path) -> io::Result<LogReader<T>> {
        let files = open_all(path)?;
        let oldest = files
            .into_iter()
            .next()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        LogReader::at(path, oldest)
    }

    fn at(path: &Path, file: File) -> io::Result<LogReader<T>> {
        let id = file_id(&file.metadata()?);
        Ok(LogReader {
            path: path.to_path_buf(),
            file: BufReader::new(file),
            id,
            partial: Vec::new(),
            kind: std::marker::PhantomData,
        })
    }

    /// The complete entries appended since the last call (a line still
    /// being written is kept for later; unparsable lines are skipped).
    /// A file rotated away is read to its end, then the next one.
    pub fn read_new(&mut self) -> io::Result<Vec<T>> {
        let mut out = Vec::new();
        // Each round moves to a newer file; bounded by the files kept.
        for _ in 0..=MAX_MAX_FILE + 1 {
            // Checked before reading: a file rotated away gets no more
            // lines, so once read to its end it is done.
            let next = self.successor()?;
            if next.is_none() && self.truncated()? {
                self.file.seek(SeekFrom::Start(0))?;
                self.partial.clear();
            }
            self.read_to_end(&mut out)?;
            let Some(next) = next else {
                break;
            };
            self.id = file_id(&next.metadata()?);
            self.file = BufReader::new(next);
            self.partial.clear();
        }
        Ok(out)
    }

    /// The file after ours, if ours was rotated away: `log.json.(k-1)`
    /// when ours is now `log.json.k` (the oldest kept when ours is gone).
    /// `None` while ours is current (or the log is gone).
    fn successor(&self) -> io::Result<Option<File>> {
        match std::fs::metadata(&self.path) {
            Ok(m) if file_id(&m) == self.id => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        let files = open_all(&self.path)?;
        let ids: Vec<(u64, u64)> = files
            .iter()
            .map(|f| f.metadata().map(|m| file_id(&m)))
            .collect::<io::Result<_>>()?;
        let next = match ids.iter().position(|&id| id == self.id) {
            Some(i) => i + 1,
            None => 0,
        };
        Ok(files.into_iter().nth(next))
    }

    /// Whether the current file was emptied under us (rotation with one
    /// file kept).
    fn truncated(&mut self) -> io::Result<bool> {
        let len = self.file.get_ref().metadata()?.len();
        Ok(len < self.file.stream_position()?)
    }

    fn read_to_end(&mut self, out: &mut Vec<T>) -> io::Result<()> {
        loop {
            let mut line = Vec::new();
            let n = self.file.read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(());
            }
            self.partial.extend_from_slice(&line);
            if !self.partial.ends_with(b"\n") {
                return Ok(());
            }
            let whole = std::mem::take(&mut self.partial);
            if let Ok(e) = serde_json::from_slice::<T>(&whole) {
                out.push(e);
            }
        }
    }
}

fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

/// The files of the log at `path`, oldest first, opened together: if the
/// log rotates while they are opened, they are opened again, so they are
/// one consistent set (no file missed or seen twice).
fn open_all(path: &Path) -> io::Result<Vec<File>> {
    let mut files = Vec::new();
    for _ in 0..10 {
        let current = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let id = file_id(&current.metadata()?);
        files.clear();
        for n in 1..=MAX_MAX_FILE {
            match File::open(rotated(path, n)) {
                Ok(f) => files.push(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            }
        }
        files.reverse();
        files.push(current);
        let unchanged = std::fs::metadata(path).is_ok_and(|m| file_id(&m) == id);
        if unchanged {
            break;
        }
    }
    Ok(files)
}

/// Reads all entries of a log, oldest first, across its rotated files
/// (missing log: none).
pub fn read_all(path: &Path) -> io::Result<Vec<LogEntry>> {
    match LogReader::open(path) {
        Ok(mut r) => r.read_new(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
