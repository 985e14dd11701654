//! Output helpers for image commands: Docker-style sizes, ages, tables and
//! pull/push progress (bars on a terminal, plain lines otherwise).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use images::registry::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Docker's human size: decimal units, 3 significant digits ("4.26MB").
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", UNITS[i])
}

/// Docker's "2 weeks ago" wording for an age in seconds.
pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    let text = if s < 1 {
        "Less than a second".to_string()
    } else if s == 1 {
        "1 second".to_string()
    } else if s < 60 {
        format!("{s} seconds")
    } else if m == 1 {
        "About a minute".to_string()
    } else if m < 60 {
        format!("{m} minutes")
    } else if h == 1 {
        "About an hour".to_string()
    } else if h < 48 {
        format!("{h} hours")
    } else if d < 14 {
        format!("{d} days")
    } else if d < 60 {
        format!("{} weeks", d / 7)
    } else if d < 365 * 2 {
        format!("{} months", d / 30)
    } else {
        format!("{} years", d / 365)
    };
    format!("{text} ago")
}

/// Prints rows as a table like Docker's (columns padded by at least 3 spaces).
pub fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                // Docker's tabwriter: padding 3, minimum cell width 10.
                line.push_str(&format!("{cell:<w$}", w = (widths[i] + 3).max(10)));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// Progress shown on stdout.
pub struct Printer {
    bars: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
    /// Whether any layer was transferred (for "Downloaded newer image").
    pub transferred: Mutex<bool>,
    quiet: bool,
}

impl Printer {
    /// Bars when stdout is a terminal, plain lines otherwise, nothing when `quiet`.
    pub fn new(quiet: bool) -> Printer {
        let bars = (!quiet && std::io::stdout().is_terminal())
            .then(|| (MultiProgress::new(), Mutex::new(HashMap::new())));
        Printer {
            bars,
            transferred: Mutex::new(false),
            quiet,
        }
    }

    fn line(&self, s: &str) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some((mp, _)) => {
                let _ = mp.println(s);
            }
            None => println!("{s}"),
        }
    }
}

impl Progress for Printer {
    fn status(&self, line: &str) {
        self.line(line);
    }

    fn start(&self, id: &str, total: u64) {
        match &self.bars {
            Some((mp, bars)) => {
                let style = ProgressStyle::with_template(
                    "{prefix}: {msg:<12} [{bar:30}] {bytes}/{total_bytes}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                let pb = mp.add(ProgressBar::new(total));
                pb.set_style(style);
                pb.set_prefix(id.to_string());
                pb.set_message("Waiting");
                if let Ok(mut b) = bars.lock() {
                    b.insert(id.to_string(), pb);
                }
            }
            None => self.line(&format!("{id}: Waiting")),
        }
    }

    fn advance(&self, id: &str, done: u64) {
        if let Ok(mut t) = self.transferred.lock() {
            *t = true;
        }
        if let Some((_, bars)) = &self.bars {
            if let Some(pb) = bars.lock().ok().and_then(|b| b.get(id).cloned()) {
                pb.set_message("Transferring");
                pb.set_position(done);
            }
        }
    }

    fn done(&self, id: &str, message: &str) {
        match &self.bars {
            Some((_, bars)) => {
                if let Some(pb) = bars.lock().ok().and_then(|b| b.get(id).cloned()) {
                    pb.set_style(
                        ProgressStyle::with_template("{prefix}: {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    pb.finish_with_message(message.to_string());
                }
            }
            None => self.line(&format!("{id}: {message}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages() {
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(12_300_000), "12.3MB");
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_age(90), "About a minute ago");
        assert_eq!(human_age(3 * 86_400), "3 days ago");
        assert_eq!(human_age(20 * 86_400), "2 weeks ago");
    }
}
