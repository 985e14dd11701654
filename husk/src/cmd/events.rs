//! `husk events`: the store's event log (see `husk_runtime::events`),
//! filtered, from `--since` to `--until`; without `--until` it follows new
//! events (woken by inotify on the store directory) until SIGINT/SIGTERM.

use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use husk_runtime::events::{parse_time, Event, EventFilter, EventLog};
use husk_runtime::signals::Signals;
use husk_sandbox::wait::poll_readable;
use rustix::fs::inotify;

use super::image::RootArgs;

/// `husk events`.
#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Show events created since this time (RFC 3339, Unix seconds, or a
    /// duration before now such as 10m).
    #[arg(long)]
    since: Option<String>,
    /// Stream events until this time (same forms).
    #[arg(long)]
    until: Option<String>,
    /// Filter output (type=, event=, container=, image=, label=, volume=).
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Go-template-like format: {{.Type}} {{.Action}} {{.Actor.ID}}, {{json .}}
    #[arg(long)]
    format: Option<String>,
    #[command(flatten)]
    root: RootArgs,
}

/// Runs `husk events`.
pub fn events(a: EventsArgs) -> Result<i32> {
    let now = husk_runtime::time::now_nanos();
    let time = |flag: &str, v: &Option<String>| -> Result<Option<i128>> {
        v.as_deref()
            .map(|s| {
                parse_time(s, now).with_context(|| format!("invalid value for --{flag}: {s:?}"))
            })
            .transpose()
    };
    let since = time("since", &a.since)?;
    let until = time("until", &a.until)?;
    let filter = EventFilter::parse(&a.filter).map_err(anyhow::Error::msg)?;
    if let (Some(s), Some(u)) = (since, until) {
        if s > u {
            bail!(
                "`--since` time ({}) cannot be after `--until` time ({})",
                a.since.unwrap_or_default(),
                a.until.unwrap_or_default()
            );
        }
    }
    let format = a
        .format
        .as_deref()
        .map(|f| f.replace("\\t", "\t").replace("\\n", "\n"));
    let log = EventLog::at(&a.root.root);
    let signals = Signals::install_for(&[libc::SIGINT, libc::SIGTERM])
        .context("installing signal handlers")?;
    // Watched before the first read, so nothing appended in between is
    // missed.
    let watch = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
        .context("inotify_init")?;
    std::fs::create_dir_all(&a.root.root)
        .with_context(|| format!("creating {}", a.root.root.display()))?;
    inotify::add_watch(
        &watch,
        &a.root.root,
        inotify::WatchFlags::MODIFY | inotify::WatchFlags::CREATE | inotify::WatchFlags::MOVED_TO,
    )
    .with_context(|| format!("watching {}", a.root.root.display()))?;
    let mut reader = log.reader().context("reading the event log")?;
    // Without --since or --until: only events from now on.
    let mut shown_past = since.is_some() || until.is_some();
    let deadline = until.map(|u| {
        let ahead = u128::try_from(u - now).unwrap_or(0);
        Instant::now() + Duration::from_nanos(u64::try_from(ahead).unwrap_or(u64::MAX / 2))
    });
    let mut out = std::io::stdout().lock();
    loop {
        if reader.is_none() {
            reader = log.reader().context("reading the event log")?;
        }
        if let Some(r) = &mut reader {
            let events = r.read_new().context("reading the event log")?;
            if shown_past {
                for e in events.iter().filter(|e| {
                    let t = i128::from(e.time_nano);
                    since.is_none_or(|s| t >= s)
                        && until.is_none_or(|u| t <= u)
                        && filter.matches(e)
                }) {
                    if writeln!(out, "{}", line(e, format.as_deref()))
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        return Ok(0);
                    }
                }
            }
            shown_past = true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(0);
        }
        let ready = poll_readable(&[signals.as_fd(), watch.as_fd()], deadline)
            .context("waiting for events")?;
        if ready.contains(&0) {
            return Ok(0);
        }
        if ready.contains(&1) {
            drain(&watch);
        }
    }
}

/// One event as printed.
fn line(e: &Event, format: Option<&str>) -> String {
    match format {
        Some(f) => {
            let doc = serde_json::to_value(e).unwrap_or_default();
            super::container::render(f, &doc)
        }
        None => e.line(),
    }
}

/// Reads (and forgets) the inotify events queued.
fn drain(watch: &impl AsFd) {
    let mut buf = [0u8; 4096];
    while matches!(rustix::io::read(watch, &mut buf), Ok(n) if n > 0) {}
}
