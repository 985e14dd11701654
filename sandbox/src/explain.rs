//! Why a VM ended before the work in it did: a kernel panic found in the
//! console log, the VMM's own error, an unexpected reboot or power-off.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::vmthread::VmResult;

/// How much of the console log's end is searched for a panic.
const CONSOLE_TAIL: u64 = 256 << 10;

/// The panic line in the console log (without its timestamp), if the
/// guest kernel panicked.
pub fn kernel_panic(console: &Path) -> Option<String> {
    let text = tail_text(console, CONSOLE_TAIL);
    text.lines().find(|l| l.contains("Kernel panic")).map(|l| {
        let l = l.trim();
        // Drop the "[    1.234567] " timestamp.
        let l = match l.split_once("] ") {
            Some((ts, rest)) if ts.starts_with('[') => rest,
            _ => l,
        };
        l.chars().take(300).collect()
    })
}

/// Why the VM ended early: a kernel panic in `console`, else what the VM
/// thread returned (`result`), else `fallback`.
pub fn early_end(result: Option<&VmResult>, console: &Path, fallback: &str) -> String {
    if let Some(line) = kernel_panic(console) {
        return format!("guest kernel panic: {line}");
    }
    match result {
        Some(Err(e)) => format!("the VM failed: {}", error_chain(e)),
        Some(Ok(vmm::ExitReason::Reboot)) => "the guest rebooted unexpectedly".into(),
        Some(Ok(vmm::ExitReason::PowerOff)) => {
            "the guest powered off before the container's process ended".into()
        }
        _ => fallback.to_string(),
    }
}

pub use vmm::logging::error_chain;

/// The last `max` bytes of the file at `path` as text ("" if unreadable).
pub fn tail_text(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.take(max).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_are_found_in_the_console() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("console.log");
        std::fs::write(&c, "[    0.1] booting\n[    2.5] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009\n").unwrap();
        assert_eq!(
            kernel_panic(&c).unwrap(),
            "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009"
        );
        let why = early_end(Some(&Ok(vmm::ExitReason::Reboot)), &c, "x");
        assert!(why.starts_with("guest kernel panic: Kernel panic"), "{why}");
        std::fs::write(&c, "fine\n").unwrap();
        assert_eq!(
            early_end(Some(&Ok(vmm::ExitReason::Reboot)), &c, "x"),
            "the guest rebooted unexpectedly"
        );
        assert_eq!(
            early_end(Some(&Ok(vmm::ExitReason::PowerOff)), &c, "x"),
            "the guest powered off before the container's process ended"
        );
        assert_eq!(early_end(None, &c, "fallback"), "fallback");
        assert_eq!(
            early_end(None, &dir.path().join("missing"), "fallback"),
            "fallback"
        );
    }

    #[test]
    fn only_the_tail_of_a_long_console_is_searched() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("console.log");
        let mut text = String::from("[ 0.1] Kernel panic - old\n");
        text.push_str(&"x".repeat(CONSOLE_TAIL as usize));
        std::fs::write(&c, text).unwrap();
        assert_eq!(kernel_panic(&c), None);
    }
}
