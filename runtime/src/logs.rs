//! Container logs in Docker's json-file format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2024-...Z"}`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

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

/// Appends output to a log file.
pub struct LogWriter {
    file: File,
}

impl LogWriter {
    /// Opens `path` for appending (created if missing).
    pub fn open(path: &Path) -> io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LogWriter { file })
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
            serde_json::to_writer(&mut out, &entry).map_err(io::Error::other)?;
            out.push(b'\n');
        }
        self.file.write_all(&out)
    }
}

/// Reads entries from a log file as they are appended.
pub struct LogReader {
    file: BufReader<File>,
    partial: Vec<u8>,
}

impl LogReader {
    /// Opens `path` from its start.
    pub fn open(path: &Path) -> io::Result<LogReader> {
        Ok(LogReader {
            file: BufReader::new(File::open(path)?),
            partial: Vec::new(),
        })
    }

    /// The complete entries appended since the last call (a line still
    /// being written is kept for later; unparsable lines are skipped).
    pub fn read_new(&mut self) -> io::Result<Vec<LogEntry>> {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self.file.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            self.partial.extend_from_slice(&line);
            if !self.partial.ends_with(b"\n") {
                break;
            }
            let whole = std::mem::take(&mut self.partial);
            if let Ok(e) = serde_json::from_slice::<LogEntry>(&whole) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Skips to the end of the file (for `--tail 0` and followers that
    /// only want new lines).
    pub fn seek_end(&mut self) -> io::Result<()> {
        self.file.seek(SeekFrom::End(0))?;
        self.partial.clear();
        Ok(())
    }
}

/// Reads all entries of a log file (missing file: none).
pub fn read_all(path: &Path) -> io::Result<Vec<LogEntry>> {
    match LogReader::open(path) {
        Ok(mut r) => r.read_new(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_partial_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        let mut w = LogWriter::open(&p).unwrap();
        w.write("stdout", b"a\nb\npart").unwrap();
        w.write("stderr", b"\xffe\n").unwrap();
        let mut r = LogReader::open(&p).unwrap();
        let e = r.read_new().unwrap();
        let logs: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.stream.as_str(), e.log.as_str()))
            .collect();
        assert_eq!(
            logs,
            [
                ("stdout", "a\n"),
                ("stdout", "b\n"),
                ("stdout", "part"),
                ("stderr", "\u{fffd}e\n")
            ]
        );
        assert!(crate::time::parse_secs(&e[0].time).is_some());
        // A line being written is not returned until complete.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(br#"{"log":"x\n","stream":"stdout","#).unwrap();
        assert!(r.read_new().unwrap().is_empty());
        f.write_all(b"\"time\":\"2024-01-01T00:00:00Z\"}\n")
            .unwrap();
        assert_eq!(r.read_new().unwrap()[0].log, "x\n");
        assert_eq!(read_all(&p).unwrap().len(), 5);
        assert!(read_all(&dir.path().join("none")).unwrap().is_empty());
        assert!(husk_sandbox::explain::tail_text(&p, 10).ends_with("Z\"}\n"));
    }
}
