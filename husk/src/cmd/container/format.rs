//! Docker's `--format` for listings (`ps`, `stats`, `history`): a small
//! Go-template field substitution, `table` with a header and aligned
//! columns, and `{{json .}}` for a row as one JSON object.

use crate::cmd::image::output::print_table;

/// Renders `format` for each row; `table ` prints a header (each field's
/// `header`) and aligns the tab-separated columns. `field(row, name)` is
/// a row's field, and `field(row, "json")` the row as a JSON object for
/// `{{json .}}`.
pub fn print_rows<R>(
    format: &str,
    rows: &[R],
    header: fn(&str) -> &str,
    field: impl Fn(&R, &str) -> Option<String>,
) {
    let format = format.replace("\\t", "\t").replace("\\n", "\n");
    if let Some(body) = format
        .strip_prefix("table ")
        .or_else(|| format.strip_prefix("table"))
    {
        let mut table = vec![render(body, &|f| Some(header(f).to_string()))
            .split('\t')
            .map(String::from)
            .collect::<Vec<_>>()];
        for r in rows {
            table.push(
                render(body, &|f| field(r, f))
                    .split('\t')
                    .map(String::from)
                    .collect(),
            );
        }
        print_table(&table);
    } else {
        for r in rows {
            println!("{}", render(&format, &|f| field(r, f)));
        }
    }
}

/// Replaces each `{{.Field}}` (spaces allowed inside the braces) by
/// `value(Field)`, and `{{json .}}` by `value("json")`; unknown fields
/// render as `<no value>`.
pub fn render(format: &str, value: &dyn Fn(&str) -> Option<String>) -> String {
    expand(format, &|inner| {
        let field = match inner.split_whitespace().collect::<Vec<_>>()[..] {
            ["json", "."] => "json",
            _ => inner.strip_prefix('.').unwrap_or(inner),
        };
        value(field).unwrap_or_else(|| "<no value>".into())
    })
}

/// The one scanner of Go-template-like formats: replaces each `{{ ... }}`
/// by `action` of what is inside the braces (trimmed); an unclosed `{{`
/// stays as it is.
pub fn expand(format: &str, action: &dyn Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = format;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        out.push_str(&action(rest[start + 2..start + len].trim()));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// Docker's truncation: `max` characters, the last one an ellipsis.
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_json_are_substituted() {
        let v = |f: &str| match f {
            "ID" => Some("abc".to_string()),
            "json" => Some("{\"ID\":\"abc\"}".to_string()),
            _ => None,
        };
        assert_eq!(render("{{.ID}}:{{ .ID }} {{.X}}", &v), "abc:abc <no value>");
        assert_eq!(render("{{json .}}", &v), "{\"ID\":\"abc\"}");
        assert_eq!(render("{{ json . }}", &v), "{\"ID\":\"abc\"}");
        assert_eq!(render("no braces", &v), "no braces");
        assert_eq!(render("{{.ID", &v), "{{.ID");
    }
}
