//! Physical lines to logical lines: parser directives at the top (`escape`,
//! `syntax`), comments, blank lines and line continuations.

/// One instruction's text, with the number of the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logical {
    /// 1-based line number of the first physical line.
    pub line: usize,
    /// The instruction text, continuations joined, trimmed.
    pub text: String,
}

/// A Dockerfile split into logical lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines {
    /// The escape character (`\` unless the `escape` directive says `` ` ``).
    pub escape: char,
    /// The instructions' texts in order.
    pub lines: Vec<Logical>,
}

/// A `# name=value` parser directive, if `line` is one.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix('#')?;
    let (name, value) = rest.split_once('=')?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    Some((name.to_ascii_lowercase(), value.trim().to_string()))
}

/// Splits `src` into logical lines. Errors carry the line number.
pub fn logical_lines(src: &str) -> Result<Lines, (usize, String)> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let physical: Vec<&str> = src
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut escape = '\\';
    let mut seen = Vec::new();
    let mut start = 0;
    for (i, line) in physical.iter().enumerate() {
        let Some((name, value)) = directive(line) else {
            break;
        };
        if seen.contains(&name) {
            return Err((
                i + 1,
                format!("only one {name} parser directive can be used"),
            ));
        }
        if name == "escape" {
            escape = match value.as_str() {
                "\\" => '\\',
                "`" => '`',
                _ => {
                    return Err((
                        i + 1,
                        format!("invalid escape directive {value:?}: must be ` or \\"),
                    ))
                }
            };
        }
        seen.push(name);
        start = i + 1;
    }
    let mut lines = Vec::new();
    let mut pending: Option<Logical> = None;
    for (i, line) in physical.iter().enumerate().skip(start) {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            // Comments and blank lines neither start nor end an instruction.
            continue;
        }
        let body = line.trim_end();
        let (body, continues) = match body.strip_suffix(escape) {
            Some(b) => (b, true),
            None => (body, false),
        };
        let cur = pending.get_or_insert_with(|| Logical {
            line: i + 1,
            text: String::new(),
        });
        cur.text.push_str(body);
        if !continues {
            if let Some(mut done) = pending.take() {
                done.text = done.text.trim().to_string();
                lines.push(done);
            }
        }
    }
    if let Some(mut done) = pending.take() {
        done.text = done.text.trim().to_string();
        if !done.text.is_empty() {
            lines.push(done);
        }
    }
    Ok(Lines { escape, lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(src: &str) -> Vec<(usize, String)> {
        logical_lines(src)
            .unwrap()
            .lines
            .into_iter()
            .map(|l| (l.line, l.text))
            .collect()
    }

    #[test]
    fn continuations_comments_and_blank_lines() {
        let src = "# comment\nFROM a\n\nRUN echo a \\\n  # inner comment\n\n  && echo b\r\n  # trailing\nCMD x\\";
        assert_eq!(
            texts(src),
            [
                (2, "FROM a".to_string()),
                (4, "RUN echo a   && echo b".to_string()),
                (9, "CMD x".to_string()),
            ]
        );
    }

    #[test]
    fn directives() {
        let l = logical_lines("# escape=`\n# syntax=x\nFROM a\nRUN dir c:\\ `\n x").unwrap();
        assert_eq!(l.escape, '`');
        assert_eq!(l.lines[1].text, "RUN dir c:\\  x");
        // Only at the very top.
        let l = logical_lines("FROM a\n# escape=`\n").unwrap();
        assert_eq!(l.escape, '\\');
        let l = logical_lines("\n# escape=`\nFROM a").unwrap();
        assert_eq!(l.escape, '\\');
        assert_eq!(logical_lines("# escape=x\n").unwrap_err().0, 1);
        assert_eq!(logical_lines("#escape=`\n#escape=`").unwrap_err().0, 2);
    }
}
