//! What the prune commands share: Docker's confirmation prompt, the
//! `until=` filter, and the "Deleted ...:" / "Total reclaimed space:"
//! report.

use std::io::{BufRead, Write};

use anyhow::{bail, Result};
use husk_runtime::Pruned;

use super::image::output::human_size;

/// Prints Docker's `WARNING! ...` prompt and reads the answer from stdin
/// (a terminal or not, as Docker does); only `y` or `yes` confirms.
pub fn confirm(warning: &str) -> Result<bool> {
    let mut out = std::io::stdout().lock();
    write!(
        out,
        "WARNING! {warning}\nAre you sure you want to continue? [y/N] "
    )?;
    out.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answered_yes(&answer))
}

fn answered_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Prints `Deleted TITLE:` and the names (nothing when none), and
/// returns the bytes they took.
pub fn report(title: &str, pruned: &[Pruned]) -> u64 {
    if !pruned.is_empty() {
        println!("Deleted {title}:");
        for p in pruned {
            println!("{}", p.name);
        }
        println!();
    }
    pruned.iter().map(|p| p.bytes).sum()
}

/// Docker's last line.
pub fn print_total(bytes: u64) {
    println!("Total reclaimed space: {}", human_size(bytes));
}

/// An `until=` value as the age (seconds) a container must have reached
/// to be pruned: a Go duration (`24h`, `1h30m`, `90s`), a Unix time in
/// seconds, or an RFC 3339 time.
pub fn until_age(v: &str) -> Result<u64> {
    if let Some(secs) = go_duration(v) {
        return Ok(secs);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Ok(t) = v.parse::<u64>() {
        return Ok(now.saturating_sub(t));
    }
    if let Some(t) = husk_runtime::time::parse_secs(v) {
        return Ok(u64::try_from(now as i64 - t).unwrap_or(0));
    }
    bail!("Error response from daemon: invalid filter 'until={v}'")
}

/// Seconds of a Go duration made of `h`, `m` and `s` parts.
fn go_duration(v: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut num = String::new();
    let mut parts = 0;
    for c in v.chars() {
        match c {
            '0'..='9' => num.push(c),
            'h' | 'm' | 's' => {
                let n: u64 = num.parse().ok()?;
                let unit = match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                total = total.checked_add(n.checked_mul(unit)?)?;
                num.clear();
                parts += 1;
            }
            _ => return None,
        }
    }
    (num.is_empty() && parts > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_durations() {
        for yes in ["y\n", "YES\n", " yes "] {
            assert!(answered_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n\n", "yep\n"] {
            assert!(!answered_yes(no), "{no:?}");
        }
        assert_eq!(until_age("24h").unwrap(), 86_400);
        assert_eq!(until_age("1h30m10s").unwrap(), 5_410);
        assert!(until_age("0").unwrap() > 1_000_000_000);
        assert!(until_age("2000-01-01T00:00:00Z").unwrap() > 700_000_000);
        for bad in ["", "h", "10x", "yesterday"] {
            assert!(until_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn report_lists_and_sums() {
        let p = [
            Pruned {
                name: "a".into(),
                bytes: 10,
            },
            Pruned {
                name: "b".into(),
                bytes: 5,
            },
        ];
        assert_eq!(report("Containers", &p), 15);
        assert_eq!(report("Containers", &[]), 0);
    }
}
