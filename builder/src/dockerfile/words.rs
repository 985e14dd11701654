//! Words of instruction arguments: splitting on unquoted whitespace, and
//! Docker's variable substitution (`$x`, `${x}`, `${x:-w}`, `${x:+w}`,
//! `${x:?msg}` and their colon-less forms) with quote and escape removal.
//!
//! All input is untrusted: every path returns an error instead of panicking.

/// Most nested `${...}` a word may have (bounds the recursion).
const MAX_DEPTH: usize = 16;

/// Splits `s` on whitespace outside quotes. Quotes and escapes are kept
/// (removed later by [`expand`]).
pub fn split_words(s: &str, escape: char) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == escape && q == '"' {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else if c == q {
                    quote = None;
                }
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                in_word = true;
                cur.push(c);
                if c == escape {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else if c == '\'' || c == '"' {
                    quote = Some(c);
                }
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated quote ({q}) in {s:?}"));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Expands variables in `word` (looked up with `lookup`; unset ones are
/// empty) and removes quotes and escapes.
pub fn expand(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let chars: Vec<char> = word.chars().collect();
    let mut p = Expander {
        chars: &chars,
        pos: 0,
        escape,
        lookup,
    };
    let out = p.word(None, 0)?;
    Ok(out)
}

struct Expander<'a> {
    chars: &'a [char],
    pos: usize,
    escape: char,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Expander<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    /// Processes until the end, or until an unquoted `stop` (consumed).
    fn word(&mut self, stop: Option<char>, depth: usize) -> Result<String, String> {
        let mut out = String::new();
        loop {
            let Some(c) = self.next() else {
                return match stop {
                    Some(s) => Err(format!("missing '{s}' in substitution")),
                    None => Ok(out),
                };
            };
            if Some(c) == stop {
                return Ok(out);
            }
            match c {
                '\'' => self.single_quoted(&mut out)?,
                '"' => self.double_quoted(&mut out, depth)?,
                '$' => out.push_str(&self.dollar(depth)?),
                c if c == self.escape => {
                    if let Some(n) = self.next() {
                        out.push(n);
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn single_quoted(&mut self, out: &mut String) -> Result<(), String> {
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => return Ok(()),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self, out: &mut String, depth: usize) -> Result<(), String> {
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => return Ok(()),
                Some('$') => out.push_str(&self.dollar(depth)?),
                Some(c) if c == self.escape => match self.peek() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.pos += 1;
                        out.push(n);
                    }
                    _ => out.push(c),
                },
                Some(c) => out.push(c),
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        name
    }

    /// After a `$`.
    fn dollar(&mut self, depth: usize) -> Result<String, String> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                self.braced(depth)
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                let name = self.name();
                Ok((self.lookup)(&name).unwrap_or_default())
            }
            _ => Ok("$".into()),
        }
    }

    /// After `${`.
    fn braced(&mut self, depth: usize) -> Result<String, String> {
        if depth >= MAX_DEPTH {
            return Err("substitutions nested too deeply".into());
        }
        let name = self.name();
        if name.is_empty() {
            return Err(format!(
                "bad substitution: missing name after '${{' in {:?}",
                self.text()
            ));
        }
        let value = (self.lookup)(&name);
        let colon = self.peek() == Some(':');
        if colon {
            self.pos += 1;
        }
        let op = self.next();
        match op {
            Some('}') if !colon => Ok(value.unwrap_or_default()),
            Some(m @ ('-' | '+' | '?')) => {
                let word = self.word(Some('}'), depth + 1)?;
                // With a colon, an empty value counts as unset.
                let set = match &value {
                    Some(v) => !(colon && v.is_empty()),
                    None => false,
                };
                match (m, set) {
                    ('-', true) | ('?', true) => Ok(value.unwrap_or_default()),
                    ('-', false) => Ok(word),
                    ('+', true) => Ok(word),
                    ('+', false) => Ok(String::new()),
                    _ => {
                        let why = if word.is_empty() {
                            "is not set".to_string()
                        } else {
                            word
                        };
                        Err(format!("{name}: {why}"))
                    }
                }
            }
            None => Err(format!("missing '}}' in substitution in {:?}", self.text())),
            Some(c) => Err(format!(
                "unsupported modifier ({c}) in substitution {:?}",
                self.text()
            )),
        }
    }

    fn text(&self) -> String {
        let s: String = self.chars.iter().collect();
        s.chars().take(200).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("apple".into()),
            "E" => Some(String::new()),
            "P" => Some("/usr/bin".into()),
            _ => None,
        }
    }

    fn x(w: &str) -> String {
        expand(w, '\\', &env).unwrap()
    }

    #[test]
    fn substitutions() {
        assert_eq!(x("$A"), "apple");
        assert_eq!(x("${A}s"), "apples");
        assert_eq!(x("$As"), "");
        assert_eq!(x("x$NOPE-y"), "x-y");
        assert_eq!(x("${NOPE:-dflt}"), "dflt");
        assert_eq!(x("${E:-dflt}"), "dflt");
        assert_eq!(x("${E-dflt}"), "");
        assert_eq!(x("${NOPE-dflt}"), "dflt");
        assert_eq!(x("${A:+alt}"), "alt");
        assert_eq!(x("${E:+alt}"), "");
        assert_eq!(x("${E+alt}"), "alt");
        assert_eq!(x("${NOPE:-${A}}"), "apple");
        assert_eq!(x("${NOPE:-a}b}"), "ab}");
        assert_eq!(x("$P:/bin"), "/usr/bin:/bin");
        assert_eq!(x("a$"), "a$");
        assert_eq!(x("$ x"), "$ x");
        assert_eq!(x("${A:?must}"), "apple");
        assert_eq!(
            expand("${NOPE:?must be set}", '\\', &env).unwrap_err(),
            "NOPE: must be set"
        );
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(x("'$A'"), "$A");
        assert_eq!(x("\"$A pie\""), "apple pie");
        assert_eq!(x("\\$A"), "$A");
        assert_eq!(x("\"\\$A\""), "$A");
        assert_eq!(x("\"a\\b\""), "a\\b");
        assert_eq!(x("a\\ b"), "a b");
        assert_eq!(x("\"q\\\"\""), "q\"");
        assert_eq!(expand("`$A", '`', &env).unwrap(), "$A");
        assert_eq!(expand("c:\\dir", '`', &env).unwrap(), "c:\\dir");
    }

    #[test]
    fn bad_substitutions_are_errors() {
        for bad in [
            "${A", "${", "${}", "${A:x}", "${A/x/y}", "'open", "\"open", "${A:-${B",
        ] {
            assert!(expand(bad, '\\', &env).is_err(), "{bad}");
        }
        let deep = "${A:-".repeat(100) + &"}".repeat(100);
        assert!(expand(&deep, '\\', &env).is_err());
    }

    #[test]
    fn splitting_keeps_quotes() {
        assert_eq!(
            split_words("a 'b c'  \"d \\\" e\" f\\ g", '\\').unwrap(),
            ["a", "'b c'", "\"d \\\" e\"", "f\\ g"]
        );
        assert_eq!(split_words("  ", '\\').unwrap(), Vec::<String>::new());
        assert!(split_words("a 'b", '\\').is_err());
    }
}
