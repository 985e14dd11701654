//! `husk logs`: the container's json-lines log, optionally followed.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use husk_runtime::logs::{LogEntry, LogReader};
use husk_runtime::State;

use super::RootArgs;

/// `husk logs` flags.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow the output until the container stops.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Show timestamps.
    #[arg(short = 't', long)]
    timestamps: bool,
    /// Number of lines to show from the end ("all" for everything).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    #[command(flatten)]
    root: RootArgs,
    /// The container.
    container: String,
}

/// `husk logs`.
pub fn logs(a: LogsArgs) -> Result<i32> {
    let rt = super::runtime(&a.root)?;
    let c = rt.container(&a.container)?;
    let tail: Option<usize> = match a.tail.as_str() {
        "all" => None,
        n => Some(
            n.parse()
                .with_context(|| format!("invalid --tail value {n:?}"))?,
        ),
    };
    let mut reader = match LogReader::open(&c.paths.log()) {
        Ok(r) => Some(r),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context("reading the log"),
    };
    if let Some(r) = &mut reader {
        let entries = r.read_new()?;
        let skip = tail.map_or(0, |n| entries.len().saturating_sub(n));
        print(&entries[skip..], a.timestamps);
    }
    if !a.follow {
        return Ok(0);
    }
    loop {
        let running = State::load(&c.paths)
            .map(|s| s.is_running())
            .unwrap_or(false);
        if reader.is_none() {
            reader = LogReader::open(&c.paths.log()).ok();
        }
        if let Some(r) = &mut reader {
            print(&r.read_new()?, a.timestamps);
        }
        if !running {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print(entries: &[LogEntry], timestamps: bool) {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for e in entries {
        let w: &mut dyn Write = if e.stream == "stderr" {
            &mut err
        } else {
            &mut out
        };
        let _ = if timestamps {
            write!(w, "{} {}", e.time, e.log)
        } else {
            write!(w, "{}", e.log)
        };
    }
    let _ = out.flush();
    let _ = err.flush();
}
