//! `husk ps`: Docker's columns, `-a`, `-q`, `--no-trunc`, `--filter` and
//! a small `--format` (Go-template field substitution).

use anyhow::Result;
use clap::Args;
use husk_runtime::time::secs_since;
use husk_runtime::{Container, Status};

use super::format::ellipsis;
use super::RootArgs;
use crate::cmd::filters::Filters;
use crate::cmd::image::output::human_age;

/// `husk ps` flags.
#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default: running only).
    #[arg(short = 'a', long)]
    all: bool,
    /// Only show container IDs.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Do not truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Filter: status=, name=, id=, label=KEY[=VALUE], ancestor=IMAGE,
    /// exited=CODE, volume=NAME|PATH (same key: any; different keys and
    /// labels: all).
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
    /// Go-template-like format: {{.ID}} {{.Names}} {{.Image}}
    /// {{.Command}} {{.CreatedAt}} {{.RunningFor}} {{.Status}}
    /// {{.State}} {{.Ports}}; a `table ` prefix prints a header.
    #[arg(long)]
    format: Option<String>,
    #[command(flatten)]
    root: RootArgs,
}

/// `husk ps`.
pub fn ps(a: PsArgs) -> Result<i32> {
    let rt = super::runtime(&a.root)?;
    let filters = parse_filters(&a.filters)?;
    let ancestors = ancestor_ids(&rt, &filters);
    let shown: Vec<Container> = rt
        .list()?
        .into_iter()
        .filter(|c| a.all || c.state.is_running() || filters.has("status"))
        .filter(|c| matches(c, &filters, &ancestors))
        .collect();
    let rows: Vec<Row> = shown.iter().map(|c| Row::of(c, !a.no_trunc)).collect();
    if a.quiet {
        for r in &rows {
            println!("{}", r.id);
        }
        return Ok(0);
    }
    let format = a
        .format
        .clone()
        .unwrap_or_else(|| DEFAULT_FORMAT.to_string());
    super::format::print_rows(&format, &rows, header, |r, f| r.field(f).map(String::from));
    Ok(0)
}

const DEFAULT_FORMAT: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

/// One container's fields, formatted.
struct Row {
    id: String,
    image: String,
    command: String,
    created_at: String,
    running_for: String,
    status: String,
    state: String,
    ports: String,
    names: String,
}

impl Row {
    fn of(c: &Container, trunc: bool) -> Row {
        let mut command = c.config.command_line();
        if trunc {
            command = ellipsis(&command, 20);
        }
        Row {
            id: if trunc {
                c.id.short().to_string()
            } else {
                c.id.to_string()
            },
            image: c.config.image.clone(),
            command: go_quote(&command),
            created_at: c.config.created.clone(),
            running_for: human_age(secs_since(&c.config.created)),
            status: status_text(c),
            state: c.state.status_word().to_string(),
            ports: if c.state.status.can_exec() {
                let p: Vec<String> = c.state.ports.iter().map(|p| p.ps_form()).collect();
                p.join(", ")
            } else {
                String::new()
            },
            names: c.config.name.clone(),
        }
    }

    fn field(&self, name: &str) -> Option<&str> {
        Some(match name {
            "ID" => &self.id,
            "Image" => &self.image,
            "Command" => &self.command,
            "CreatedAt" => &self.created_at,
            "RunningFor" => &self.running_for,
            "Status" => &self.status,
            "State" => &self.state,
            "Ports" => &self.ports,
            "Names" => &self.names,
            _ => return None,
        })
    }
}

fn header(name: &str) -> &str {
    match name {
        "ID" => "CONTAINER ID",
        "Image" => "IMAGE",
        "Command" => "COMMAND",
        "CreatedAt" => "CREATED AT",
        "RunningFor" => "CREATED",
        "Status" => "STATUS",
        "State" => "STATE",
        "Ports" => "PORTS",
        "Names" => "NAMES",
        other => other,
    }
}

/// Docker's STATUS column.
fn status_text(c: &Container) -> String {
    let s = &c.state;
    let since = |t: &Option<String>| {
        let age = human_age(t.as_deref().map_or(0, secs_since));
        age.strip_suffix(" ago").unwrap_or(&age).to_string()
    };
    match s.status {
        Status::Created => "Created".into(),
        Status::Running if s.restarting => format!(
            "Restarting ({}) {} ago",
            s.exit_code.unwrap_or(0),
            since(&s.finished_at)
        ),
        Status::Running if s.paused => format!("Up {} (Paused)", since(&s.started_at)),
        Status::Running => match husk_runtime::health::Health::read(&c.paths) {
            Some(h) if c.config.health.is_some() && h.status == "starting" => {
                format!("Up {} (health: starting)", since(&s.started_at))
            }
            Some(h) if c.config.health.is_some() => {
                format!("Up {} ({})", since(&s.started_at), h.status)
            }
            _ => format!("Up {}", since(&s.started_at)),
        },
        Status::Exited => format!(
            "Exited ({}) {} ago",
            s.exit_code.unwrap_or(0),
            since(&s.finished_at)
        ),
    }
}

/// The keys `ps --filter` takes.
const PS_FILTERS: &[&str] = &[
    "status", "name", "id", "label", "label!", "ancestor", "exited", "volume",
];

/// Docker's container states (husk has no removing or dead ones:
/// filtering on them finds nothing; paused and restarting are
/// `State::status_word`'s).
const STATES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

/// Parses `ps` filters, with Docker's errors for bad keys and values.
pub(super) fn parse_filters(raw: &[String]) -> Result<Filters> {
    let f = Filters::parse(raw, PS_FILTERS)?;
    f.check("status", |v| STATES.contains(&v))?;
    f.check("exited", |v| v.parse::<i32>().is_ok())?;
    Ok(f)
}

/// Whether a container passes the filters: `name` matches a substring,
/// `id` a prefix, `ancestor` the image as named or its ID (`images` are
/// the IDs the `ancestor` values resolve to in the store).
fn matches(c: &Container, f: &Filters, ancestors: &[String]) -> bool {
    let short_image = c.config.image_id.trim_start_matches("sha256:");
    f.any("status", |v| c.state.status_word() == v)
        && f.any("name", |v| {
            c.config.name.contains(v.trim_start_matches('/'))
        })
        && f.any("id", |v| c.id.as_str().starts_with(v))
        && f.labels_match(&c.config.labels)
        && f.any("exited", |v| {
            c.state.status == Status::Exited && v.parse().ok() == c.state.exit_code
        })
        && f.any("volume", |v| {
            c.config.mounts.iter().any(|m| m.name == v || m.target == v)
        })
        && (f.values("ancestor").is_empty()
            || f.values("ancestor").iter().any(|v| {
                c.config.image == *v
                    || (!v.is_empty() && short_image.starts_with(v.trim_start_matches("sha256:")))
            })
            || ancestors.contains(&c.config.image_id))
}

/// The image IDs the `ancestor` filters name (those the store knows).
fn ancestor_ids(rt: &husk_runtime::Runtime, f: &Filters) -> Vec<String> {
    let Ok(store) = rt.image_store() else {
        return Vec::new();
    };
    f.values("ancestor")
        .iter()
        .filter_map(|v| store.resolve(v).ok())
        .map(|img| img.id.to_string())
        .collect()
}

/// Go's `strconv.Quote`.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_quotes_and_truncation() {
        assert_eq!(
            ellipsis("sh -c 'while true; do sleep 1; done'", 20),
            "sh -c 'while true; …"
        );
        assert_eq!(go_quote("echo \"hi\"\n"), "\"echo \\\"hi\\\"\\n\"");
        assert!(parse_filters(&["status=running".into(), "name=web".into()]).is_ok());
        assert!(parse_filters(&["label=x".into(), "exited=0".into()]).is_ok());
        for (bad, want) in [
            ("status=bogus", "invalid filter 'status=bogus'"),
            ("exited=x", "invalid filter 'exited=x'"),
            ("nope=1", "invalid filter 'nope'"),
        ] {
            let err = parse_filters(&[bad.into()]).unwrap_err().to_string();
            assert!(err.ends_with(want), "{err}");
        }
        assert!(parse_filters(&["novalue".into()]).is_err());
    }
}
