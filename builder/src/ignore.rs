//! `.dockerignore`: which context files COPY and ADD may not see.
//!
//! One pattern per line (`#` comments, blank lines skipped), cleaned like a
//! path, leading `/` dropped; `!` makes an exception. A path is excluded when
//! the last pattern matching it (or one of its parent directories) is not an
//! exception.

use crate::pattern::{Pattern, PatternError};

/// The compiled rules of a `.dockerignore` file.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    pattern: Pattern,
    /// Number of path components the pattern has.
    depth: usize,
    exception: bool,
}

/// Lexically cleans a relative path: `.` and empty components dropped,
/// `..` resolved (never above the start), leading `/` removed.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

impl Ignore {
    /// Parses the content of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Ignore, PatternError> {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let cleaned = clean(pat);
            if cleaned.is_empty() {
                continue;
            }
            rules.push(Rule {
                depth: cleaned.split('/').count(),
                pattern: Pattern::new(&cleaned)?,
                exception,
            });
        }
        Ok(Ignore { rules })
    }

    /// Whether there are exception rules (then excluded directories must
    /// still be walked).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }

    /// Whether `rel` (a cleaned context-relative path) is excluded.
    pub fn excluded(&self, rel: &str) -> bool {
        if rel.is_empty() {
            return false;
        }
        let parts: Vec<&str> = rel.split('/').collect();
        let mut excluded = false;
        for r in &self.rules {
            let mut matched = r.pattern.matches(rel);
            if !matched && r.depth < parts.len() {
                matched = r.pattern.matches(&parts[..r.depth].join("/"));
            }
            if matched {
                excluded = !r.exception;
            }
        }
        excluded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_exceptions() {
        let ig = Ignore::parse(
            "# comment\n\n*.log\n/build\n!build/keep.txt\nsecret/\n**/*.tmp\n!important.log\n",
        )
        .unwrap();
        assert!(ig.excluded("a.log"));
        assert!(!ig.excluded("important.log"));
        assert!(!ig.excluded("d/a.log"), "single * does not cross /");
        assert!(ig.excluded("build"));
        assert!(ig.excluded("build/x/y"));
        assert!(!ig.excluded("build/keep.txt"));
        assert!(ig.excluded("secret/key"));
        assert!(ig.excluded("deep/er/x.tmp"));
        assert!(!ig.excluded("src/main.rs"));
        assert!(!ig.excluded(""));
        assert!(ig.has_exceptions());
        assert!(Ignore::parse("[").is_err());
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean("/a/./b//c/"), "a/b/c");
        assert_eq!(clean("../../a/../b"), "b");
        assert_eq!(clean("."), "");
    }
}
