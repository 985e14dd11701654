//! Path patterns as Docker matches them: Go's `filepath.Match` (`*`, `?`,
//! `[a-z]`, `[^x]`, `\` escapes; wildcards do not cross `/`) plus `**`,
//! which matches any number of directories.
//!
//! Matching is a dynamic program over pattern tokens and name bytes, so
//! hostile patterns cannot make it exponential.

/// A pattern that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern {0:?}")]
pub struct PatternError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**` not followed by `/`: anything, `/` included.
    Any,
    /// `**/`: nothing, or anything ending in `/`.
    AnyDirs,
    /// `[...]`
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
}

/// Whether `s` has wildcard characters.
pub fn has_wildcards(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl Pattern {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Result<Pattern, PatternError> {
        let err = || PatternError(pattern.chars().take(200).collect());
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    while chars.get(i) == Some(&'*') {
                        i += 1;
                    }
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                        tokens.push(Token::AnyDirs);
                    } else {
                        tokens.push(Token::Any);
                    }
                }
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::One),
                '\\' => {
                    let n = *chars.get(i).ok_or_else(err)?;
                    i += 1;
                    tokens.push(Token::Char(n));
                }
                '[' => {
                    let negated = matches!(chars.get(i), Some('^') | Some('!'));
                    if negated {
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let mut lo = *chars.get(i).ok_or_else(err)?;
                        i += 1;
                        if lo == ']' && !first {
                            break;
                        }
                        first = false;
                        if lo == '\\' {
                            lo = *chars.get(i).ok_or_else(err)?;
                            i += 1;
                        }
                        let mut hi = lo;
                        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']')
                        {
                            hi = chars[i + 1];
                            i += 2;
                            if hi == '\\' {
                                hi = *chars.get(i).ok_or_else(err)?;
                                i += 1;
                            }
                            if hi < lo {
                                return Err(err());
                            }
                        }
                        ranges.push((lo, hi));
                    }
                    tokens.push(Token::Class { negated, ranges });
                }
                c => tokens.push(Token::Char(c)),
            }
        }
        Ok(Pattern { tokens })
    }

    /// Whether the whole of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let n = name.len();
        // next[j]: tokens after the current one match name[j..].
        let mut next = vec![false; n + 1];
        next[n] = true;
        let mut cur = vec![false; n + 1];
        for t in self.tokens.iter().rev() {
            // `tail` for AnyDirs: some k > j with name[k-1] == '/' and next[k].
            let mut tail = false;
            for j in (0..=n).rev() {
                let c = name.get(j).copied();
                let step = |ok: bool| ok && j < n && next[j + 1];
                cur[j] = match t {
                    Token::Char(x) => step(c == Some(*x)),
                    Token::One => step(c.is_some_and(|c| c != '/')),
                    Token::Class { negated, ranges } => step(c.is_some_and(|c| {
                        c != '/'
                            && (ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated)
                    })),
                    Token::Star => next[j] || (j < n && c != Some('/') && cur[j + 1]),
                    Token::Any => next[j] || (j < n && cur[j + 1]),
                    Token::AnyDirs => {
                        if j < n && c == Some('/') && next[j + 1] {
                            tail = true;
                        }
                        next[j] || tail
                    }
                };
            }
            std::mem::swap(&mut next, &mut cur);
        }
        next[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, name: &str) -> bool {
        Pattern::new(p).unwrap().matches(name)
    }

    #[test]
    fn go_match_semantics() {
        assert!(m("*.txt", "a.txt"));
        assert!(!m("*.txt", "d/a.txt"));
        assert!(m("d/*.txt", "d/a.txt"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "a/c"));
        assert!(m("[a-c]x", "bx"));
        assert!(!m("[^a-c]x", "bx"));
        assert!(m("[!a-c]x", "dx"));
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "a"));
        assert!(m("[]]", "]"));
        assert!(m("*", ""));
        assert!(!m("a", "ab"));
        for bad in ["[", "[a", "\\", "[z-a]", "[a-\\"] {
            assert!(Pattern::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn double_star() {
        assert!(m("**/*.go", "a.go"));
        assert!(m("**/*.go", "x/y/a.go"));
        assert!(!m("**/*.go", "x/y/a.got"));
        assert!(m("a/**", "a/b/c"));
        assert!(m("a/**/z", "a/z"));
        assert!(m("a/**/z", "a/b/c/z"));
        assert!(!m("a/**/z", "a/bz"));
        assert!(m("**", "any/thing"));
    }

    #[test]
    fn hostile_patterns_are_fast() {
        let p = Pattern::new(&"*a".repeat(200)).unwrap();
        let name = "a".repeat(199) + "b";
        assert!(!p.matches(&name));
    }
}
