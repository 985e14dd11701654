//! Errors as runc reports them: one line on stderr, and the same message
//! appended to the `--log` file — a JSON line
//! `{"level":"error","msg":...,"time":...}` with `--log-format json`,
//! which conmon and containerd's runc shim read to explain a failure.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::cli::LogFormat;

/// Where errors go besides stderr.
#[derive(Clone, Debug)]
pub struct ErrorLog {
    path: Option<PathBuf>,
    format: LogFormat,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    level: &'a str,
    msg: &'a str,
    time: &'a str,
}

impl ErrorLog {
    /// Errors to `path` (if any) in `format`.
    pub fn new(path: Option<PathBuf>, format: LogFormat) -> ErrorLog {
        ErrorLog { path, format }
    }

    /// Reports `msg` (one line): stderr, then the log file. A log file
    /// that cannot be written is not another error.
    pub fn error(&self, msg: &str) {
        let msg = one_line(msg);
        eprintln!("husk-oci: {msg}");
        let Some(path) = &self.path else { return };
        let line = format_line(self.format, &msg, &husk_runtime::time::now());
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            eprintln!("husk-oci: writing the log {}: {e}", path.display());
        }
    }
}

/// `msg` with line breaks turned into spaces.
fn one_line(msg: &str) -> String {
    msg.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The log line for an error `msg` at `time` (RFC 3339).
pub fn format_line(format: LogFormat, msg: &str, time: &str) -> String {
    match format {
        LogFormat::Json => {
            let line = JsonLine {
                level: "error",
                msg,
                time,
            };
            // Serialising three strings cannot fail.
            let mut out = serde_json::to_string(&line).unwrap_or_default();
            out.push('\n');
            out
        }
        LogFormat::Text => {
            // logfmt, as runc's text logs: quoted with Go's escapes.
            let quoted = serde_json::to_string(msg).unwrap_or_default();
            format!("time=\"{time}\" level=error msg={quoted}\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_as_conmon_and_containerd_read_them() {
        let line = format_line(
            LogFormat::Json,
            "container \"x\" does not exist",
            "2026-01-02T03:04:05.000000006Z",
        );
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "container \"x\" does not exist");
        assert_eq!(v["time"], "2026-01-02T03:04:05.000000006Z");
    }

    #[test]
    fn text_lines_and_files() {
        let line = format_line(LogFormat::Text, "bad \"thing\"", "T");
        assert_eq!(line, "time=\"T\" level=error msg=\"bad \\\"thing\\\"\"\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let log = ErrorLog::new(Some(path.clone()), LogFormat::Json);
        log.error("first\nsecond");
        log.error("third");
        let text = std::fs::read_to_string(&path).unwrap();
        let msgs: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["msg"].to_string())
            .collect();
        assert_eq!(msgs, ["\"first second\"", "\"third\""]);
    }
}
