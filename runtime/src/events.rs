//! The event log behind `husk events`: Docker's events (container create,
//! start, die, stop, kill, destroy, pause, ...; image pull, tag, untag,
//! delete; volume create, destroy), one JSON object a line, appended by
//! whoever causes them — the CLI and the per-container monitor — to
//! `<root>/events.json`. Bounded: once that file holds [`MAX_BYTES`] it
//! becomes `events.json.1` (one old file kept). Writers take
//! `<root>/events.lock` (the store's one lock helper, [`layout::lock`])
//! around the size check, the rotation and one `write` to the file opened
//! with `O_APPEND`, so concurrent writers neither interleave lines nor
//! rotate twice. Readers follow the file with [`crate::logs::LogReader`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ContainerConfig;
use crate::layout::{self, Layout};
use crate::logs::LogReader;

/// The size at which the log is rotated.
pub const MAX_BYTES: u64 = 1 << 20;

/// What an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// A container.
    Container,
    /// An image.
    Image,
    /// A volume.
    Volume,
}

impl EventType {
    /// Docker's name (`container`, `image`, `volume`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Container => "container",
            EventType::Image => "image",
            EventType::Volume => "volume",
        }
    }
}

/// The object of an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Its ID (container ID, image reference or ID, volume name).
    #[serde(rename = "ID")]
    pub id: String,
    /// Docker's attributes (`image`, `name`, `exitCode`, `signal`, ...).
    #[serde(rename = "Attributes", default)]
    pub attributes: BTreeMap<String, String>,
}

/// One event, as Docker's API and `docker events --format '{{json .}}'`
/// show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Docker's legacy `status` (the action), container and image events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Docker's legacy `id` (the actor's), container and image events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Docker's legacy `from` (the image), container events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// What it is about.
    #[serde(rename = "Type")]
    pub kind: EventType,
    /// What happened (`start`, `die`, `health_status: healthy`, ...).
    #[serde(rename = "Action")]
    pub action: String,
    /// About what.
    #[serde(rename = "Actor")]
    pub actor: Actor,
    /// Always `local`.
    pub scope: String,
    /// Unix seconds.
    pub time: i64,
    /// Unix nanoseconds.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

impl Event {
    /// An event now.
    pub fn new(
        kind: EventType,
        action: &str,
        id: &str,
        attributes: BTreeMap<String, String>,
    ) -> Event {
        let nanos = i64::try_from(crate::time::now_nanos()).unwrap_or(i64::MAX);
        let legacy = kind != EventType::Volume;
        Event {
            status: legacy.then(|| action.to_string()),
            id: legacy.then(|| id.to_string()),
            from: attributes
                .get("image")
                .filter(|_| kind == EventType::Container)
                .cloned(),
            kind,
            action: action.to_string(),
            actor: Actor {
                id: id.to_string(),
                attributes,
            },
            scope: "local".into(),
            time: nanos.div_euclid(1_000_000_000),
            time_nano: nanos,
        }
    }

    /// A container's event, with its `image` and `name` (and `extra`).
    pub fn container(cfg: &ContainerConfig, action: &str, extra: &[(&str, String)]) -> Event {
        let mut attrs = BTreeMap::new();
        attrs.insert("image".to_string(), cfg.image.clone());
        attrs.insert("name".to_string(), cfg.name.clone());
        for (k, v) in extra {
            attrs.insert(k.to_string(), v.clone());
        }
        Event::new(EventType::Container, action, &cfg.id, attrs)
    }

    /// Docker's default line: `TIME TYPE ACTION ID (k=v, ...)`.
    pub fn line(&self) -> String {
        let attrs: Vec<String> = self
            .actor
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut line = format!(
            "{} {} {} {}",
            crate::time::format_nanos(i128::from(self.time_nano)),
            self.kind.as_str(),
            self.action,
            self.actor.id
        );
        if !attrs.is_empty() {
            line.push_str(&format!(" ({})", attrs.join(", ")));
        }
        line
    }
}

/// Errors of the event log.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// Reading or writing the log.
    #[error("{context}: {source}")]
    Io {
        /// What was done.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Taking its lock.
    #[error(transparent)]
    Lock(#[from] Box<crate::Error>),
}

/// The event log of a store.
#[derive(Clone, Debug)]
pub struct EventLog {
    path: PathBuf,
    lock: PathBuf,
}

impl EventLog {
    /// The log of the store laid out by `layout`.
    pub fn new(layout: &Layout) -> EventLog {
        EventLog::at(layout.root())
    }

    /// The log in the store directory `root`.
    pub fn at(root: &Path) -> EventLog {
        EventLog {
            path: root.join("events.json"),
            lock: root.join("events.lock"),
        }
    }

    /// The current file (`events.json`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `event` (rotating the log first if it is full).
    pub fn append(&self, event: &Event) -> Result<(), EventsError> {
        let io = |context: &str| {
            let context = format!("{context} {}", self.path.display());
            move |source| EventsError::Io { context, source }
        };
        let mut line =
            serde_json::to_vec(event).map_err(|e| io("encoding an event for")(e.into()))?;
        line.push(b'\n');
        let _locked = layout::lock(&self.lock).map_err(Box::new)?;
        let full = std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= MAX_BYTES);
        if full {
            vmm::logging::rotate(&self.path, 2).map_err(io("rotating"))?;
        }
        let mut file = vmm::logging::open_log(&self.path, true).map_err(io("opening"))?;
        file.write_all(&line).map_err(io("appending to"))
    }

    /// Appends `event`; a failure is only reported on stderr (an event
    /// that cannot be recorded never fails what it records).
    pub fn record(&self, event: &Event) {
        if let Err(e) = self.append(event) {
            eprintln!("husk: warning: recording an event: {e}");
        }
    }

    /// A reader from the oldest event kept (`None` while there is no log).
    pub fn reader(&self) -> std::io::Result<Option<LogReader<Event>>> {
        match LogReader::open(&self.path) {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Which events `husk events` shows: Docker's `--filter` keys `type`,
/// `event`, `container`, `image`, `label`, `volume`. Values of one key
/// are alternatives; different keys must all match.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    by_key: BTreeMap<String, Vec<String>>,
}

impl EventFilter {
    /// Parses `key=value` filters (Docker's names).
    pub fn parse(filters: &[String]) -> Result<EventFilter, String> {
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in filters {
            let Some((k, v)) = f.split_once('=') else {
                return Err(format!("bad format of filter (expected name=value): {f}"));
            };
            let k = k.trim().to_ascii_lowercase();
            if !matches!(
                k.as_str(),
                "type" | "event" | "container" | "image" | "label" | "volume"
            ) {
                return Err(format!("invalid filter '{k}'"));
            }
            by_key.entry(k).or_default().push(v.to_string());
        }
        Ok(EventFilter { by_key })
    }

    /// Whether `e` passes.
    pub fn matches(&self, e: &Event) -> bool {
        self.by_key.iter().all(|(k, values)| {
            values.iter().any(|v| match k.as_str() {
                "type" => e.kind.as_str() == v,
                // `docker events --filter event=health_status` matches
                // `health_status: healthy`.
                "event" => e.action == *v || e.action.split(':').next() == Some(v.as_str()),
                "container" => e.kind == EventType::Container && names(e, v),
                "image" => {
                    (e.kind == EventType::Image && names(e, v))
                        || e.actor.attributes.get("image") == Some(v)
                }
                "volume" => e.kind == EventType::Volume && e.actor.id == *v,
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => e.actor.attributes.get(lk).is_some_and(|x| x == lv),
                    None => e.actor.attributes.contains_key(v.as_str()),
                },
                _ => false,
            })
        })
    }
}

/// Whether `v` names the actor: its ID (or a prefix of it, 12 characters
/// and up as Docker's short IDs) or its `name` attribute.
fn names(e: &Event, v: &str) -> bool {
    e.actor.id == v
        || (!v.is_empty() && e.actor.id.starts_with(v))
        || e.actor.attributes.get("name").is_some_and(|n| n == v)
}

/// Parses Docker's `--since`/`--until` values to Unix nanoseconds: an RFC
/// 3339 timestamp (`2026-12-02T10:00:00Z`, fractions allowed), Unix
/// seconds (`1764669600`, `1764669600.5`), or a duration before `now`
/// (`10m`, `1h30m`, `90s`, `250ms`).
pub fn parse_time(s: &str, now_nanos: i128) -> Option<i128> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(d) = parse_duration(s) {
        return Some(now_nanos - d);
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
        let secs: i128 = secs.parse().ok()?;
        let mut digits = frac.to_string();
        if digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        while digits.len() < 9 {
            digits.push('0');
        }
        let frac: i128 = digits.parse().ok()?;
        return Some(secs * 1_000_000_000 + frac);
    }
    // RFC 3339: the fraction (if any) is parsed here, the rest by the
    // store's parser.
    let (main, frac) = match s.find('.') {
        Some(dot) => {
            let end = s[dot + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(s.len(), |i| dot + 1 + i);
            (format!("{}{}", &s[..dot], &s[end..]), &s[dot + 1..end])
        }
        None => (s.to_string(), ""),
    };
    let secs = crate::time::parse_secs(&main)?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    Some(i128::from(secs) * 1_000_000_000 + digits.parse::<i128>().ok()?)
}

/// Go's `time.ParseDuration` subset: `1h30m`, `10m`, `90s`, `250ms`.
pub fn parse_duration(s: &str) -> Option<i128> {
    let mut total: i128 = 0;
    let mut rest = s;
    if rest.is_empty() || !rest.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: i128 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit: i128 = match &rest[..u_end] {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[u_end..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventType, action: &str, id: &str, attrs: &[(&str, &str)]) -> Event {
        let attrs = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Event::new(kind, action, id, attrs)
    }

    #[test]
    fn times_in_dockers_formats() {
        let now = 1_800_000_000_000_000_000;
        assert_eq!(parse_time("10m", now), Some(now - 600_000_000_000));
        assert_eq!(parse_time("1h30m", now), Some(now - 5_400_000_000_000));
        assert_eq!(
            parse_time("1700000000", now),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_time("1700000000.5", now),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20.123456789Z", now),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now),
            Some(1_700_000_000_000_000_000)
        );
        for bad in ["", "yesterday", "10x", "1.2.3", "m"] {
            assert_eq!(parse_time(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn filters_and_the_default_line() {
        let e = ev(
            EventType::Container,
            "die",
            "abc123",
            &[("image", "busybox"), ("name", "web"), ("exitCode", "1")],
        );
        let f = |s: &[&str]| {
            EventFilter::parse(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>()).unwrap()
        };
        assert!(f(&["container=web", "event=die"]).matches(&e));
        assert!(f(&["container=abc", "type=container"]).matches(&e));
        assert!(f(&["event=start", "event=die"]).matches(&e));
        assert!(!f(&["event=start"]).matches(&e));
        assert!(!f(&["type=image"]).matches(&e));
        assert!(f(&["image=busybox"]).matches(&e));
        assert!(f(&["label=name=web"]).matches(&e));
        let h = ev(
            EventType::Container,
            "health_status: healthy",
            "abc123",
            &[],
        );
        assert!(f(&["event=health_status"]).matches(&h));
        assert!(EventFilter::parse(&["nope=1".into()]).is_err());
        assert!(EventFilter::parse(&["event".into()]).is_err());
        let line = e.line();
        assert!(
            line.ends_with(" container die abc123 (exitCode=1, image=busybox, name=web)"),
            "{line}"
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["Type"], "container");
        assert_eq!(json["Actor"]["Attributes"]["name"], "web");
        assert_eq!(json["status"], "die");
        assert_eq!(json["from"], "busybox");
    }

    #[test]
    fn concurrent_appends_rotate_once_and_keep_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::at(dir.path());
        let big = "x".repeat(1000);
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = log.clone();
                let big = big.clone();
                s.spawn(move || {
                    for i in 0..400 {
                        let e = ev(
                            EventType::Volume,
                            "create",
                            &format!("{t}-{i}"),
                            &[("pad", &big)],
                        );
                        log.append(&e).unwrap();
                    }
                });
            }
        });
        // 1600 lines of ~1.1 KiB: rotated at least once, one old file.
        assert!(vmm::logging::rotated(log.path(), 1).exists());
        assert!(!vmm::logging::rotated(log.path(), 2).exists());
        let current = std::fs::metadata(log.path()).unwrap().len();
        assert!(current < MAX_BYTES + 2000, "{current}");
        let events = log.reader().unwrap().unwrap().read_new().unwrap();
        assert!(!events.is_empty());
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(text
            .lines()
            .all(|l| serde_json::from_str::<Event>(l).is_ok()));
    }
}
