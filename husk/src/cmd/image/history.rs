//! `husk history`: an image's steps, Docker's columns.

use anyhow::Result;
use clap::Args;
use images::history::{history as entries, HistoryEntry};
use serde_json::json;

use super::output::{human_age, human_size};
use super::RootArgs;
use crate::cmd::container::format::{ellipsis, print_rows};

const DEFAULT_FORMAT: &str =
    "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}";

/// `husk history` flags.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Do not truncate the output.
    #[arg(long)]
    no_trunc: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Print sizes and dates in human readable format.
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    human: bool,
    /// Go-template-like format: {{.ID}} {{.CreatedBy}} ..., `table ...`, {{json .}}.
    #[arg(long)]
    format: Option<String>,
    /// The image.
    image: String,
}

struct Row {
    id: String,
    since: String,
    at: String,
    by: String,
    size: String,
    comment: String,
}

impl Row {
    fn field(&self, f: &str) -> Option<String> {
        Some(match f {
            "ID" => self.id.clone(),
            "CreatedSince" => self.since.clone(),
            "CreatedAt" => self.at.clone(),
            "CreatedBy" => self.by.clone(),
            "Size" => self.size.clone(),
            "Comment" => self.comment.clone(),
            "json" => json!({
                "Comment": self.comment, "CreatedAt": self.at, "CreatedBy": self.by,
                "CreatedSince": self.since, "ID": self.id, "Size": self.size,
            })
            .to_string(),
            _ => return None,
        })
    }
}

fn header(f: &str) -> &str {
    match f {
        "ID" => "IMAGE",
        "CreatedSince" => "CREATED",
        "CreatedAt" => "CREATED AT",
        "CreatedBy" => "CREATED BY",
        "Size" => "SIZE",
        "Comment" => "COMMENT",
        other => other,
    }
}

fn row(e: &HistoryEntry, id: &images::Digest, a: &HistoryArgs, now: i64) -> Row {
    let id = if !e.top {
        "<missing>".to_string()
    } else if a.no_trunc {
        id.to_string()
    } else {
        id.hex()[..12].to_string()
    };
    let by = e.created_by.replace('\t', " ");
    Row {
        id,
        since: match (e.created, a.human) {
            (Some(t), true) => human_age(now - t),
            (Some(t), false) => images::time::format_rfc3339(t),
            (None, _) => "N/A".into(),
        },
        at: e
            .created
            .map_or_else(|| "N/A".into(), images::time::format_rfc3339),
        by: if a.no_trunc { by } else { ellipsis(&by, 45) },
        size: if a.human {
            human_size(e.size)
        } else {
            e.size.to_string()
        },
        comment: e.comment.clone(),
    }
}

/// `husk history`.
pub fn history(a: HistoryArgs) -> Result<i32> {
    let store = a.root.store()?;
    let image = store.resolve(&a.image)?;
    let now = husk_runtime::time::now_nanos().div_euclid(1_000_000_000) as i64;
    let rows: Vec<Row> = entries(&image)
        .iter()
        .map(|e| row(e, &image.id, &a, now))
        .collect();
    if a.quiet {
        for r in &rows {
            println!("{}", r.id);
        }
        return Ok(0);
    }
    let format = a.format.clone().unwrap_or_else(|| DEFAULT_FORMAT.into());
    print_rows(&format, &rows, header, Row::field);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_by_is_truncated_as_docker_does() {
        let long = "/bin/sh -c apt-get update && apt-get install -y something-long";
        let t = ellipsis(long, 45);
        assert_eq!(t.chars().count(), 45);
        assert!(t.ends_with('…'));
        assert_eq!(ellipsis("short", 45), "short");
    }
}
