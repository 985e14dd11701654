//! Logging to the kernel log (shown on the console for errors even with
//! `quiet`), falling back to stderr.

use std::fs::OpenOptions;
use std::io::Write;

/// Kernel log level for errors (`KERN_ERR`).
const ERR: u8 = 3;
/// Kernel log level for informational messages (`KERN_INFO`).
const INFO: u8 = 6;

fn write(level: u8, msg: &str) {
    let line = format!("<{level}>husk-agent: {msg}\n");
    let written = OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if written.is_err() {
        let _ = std::io::stderr().write_all(&line.as_bytes()[3..]);
    }
}

/// Logs an error.
pub fn error(msg: &str) {
    write(ERR, msg);
}

/// Logs an informational message.
pub fn info(msg: &str) {
    write(INFO, msg);
}
