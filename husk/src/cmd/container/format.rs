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
    let mut out = String::new();
    let mut rest = format;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = rest[start + 2..start + len].trim();
        let field = match inner.split_whitespace().collect::<Vec<_>>()[..] {
            ["json", "."] => "json",
            _ => inner.strip_prefix('.').unwrap_or(inner),
        };
        out.push_str(&value(field).unwrap_or_else(|| "<no value>".into()));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
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
