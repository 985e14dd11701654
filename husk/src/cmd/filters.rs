//! Docker's `--filter KEY=VALUE` (`ps`, `images`, the prune commands):
//! values of one key are alternatives (any may match), different keys
//! must all match; `label` filters must all match (Docker's rule).

use std::collections::BTreeMap;

use anyhow::Result;

use super::container::ExitWith;

/// Parsed filters, by key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

/// Docker's error for a filter (`Error response from daemon: invalid
/// filter 'x'`, exit code 1).
pub fn invalid(what: &str) -> anyhow::Error {
    ExitWith {
        code: 1,
        detail: format!("Error response from daemon: invalid filter '{what}'"),
    }
    .into()
}

impl Filters {
    /// Parses `KEY=VALUE` filters whose key is one of `keys`.
    pub fn parse(raw: &[String], keys: &[&str]) -> Result<Filters> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in raw {
            let Some((k, v)) = f.split_once('=') else {
                anyhow::bail!("bad format of filter (expected name=value)");
            };
            let k = k.trim().to_ascii_lowercase();
            if !keys.contains(&k.as_str()) {
                return Err(invalid(&k));
            }
            out.entry(k).or_default().push(v.to_string());
        }
        Ok(Filters(out))
    }

    /// The values given for `key`.
    pub fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    /// Whether `key` was given.
    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// True when `key` is absent or one of its values satisfies `pred`.
    pub fn any(&self, key: &str, pred: impl Fn(&str) -> bool) -> bool {
        let v = self.values(key);
        v.is_empty() || v.iter().any(|v| pred(v))
    }

    /// Whether `labels` satisfy every `label` filter (`KEY` or
    /// `KEY=VALUE`) and none of the `label!` ones (`label!=KEY[=VALUE]`,
    /// which parses as key `label!`).
    pub fn labels_match(&self, labels: &BTreeMap<String, String>) -> bool {
        let matches = |f: &str| match f.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
            None => labels.contains_key(f),
        };
        self.values("label").iter().all(|f| matches(f))
            && !self.values("label!").iter().any(|f| matches(f))
    }

    /// Checks each value of `key` with `valid`; Docker's error names the
    /// first bad one.
    pub fn check(&self, key: &str, valid: impl Fn(&str) -> bool) -> Result<()> {
        match self.values(key).iter().find(|v| !valid(v)) {
            Some(v) => Err(invalid(&format!("{key}={v}"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[&str]) -> Result<Filters> {
        let raw: Vec<String> = raw.iter().map(|s| s.to_string()).collect();
        Filters::parse(&raw, &["label", "label!", "name"])
    }

    #[test]
    fn same_key_ors_labels_and() {
        let f = parse(&["name=web", "name=db", "label=a", "label=b=2"]).unwrap();
        assert!(f.any("name", |v| v == "db"));
        assert!(!f.any("name", |v| v == "cache"));
        assert!(f.any("status", |_| false), "absent key matches");
        let labels: BTreeMap<String, String> =
            [("a".to_string(), "x".to_string()), ("b".into(), "2".into())].into();
        assert!(f.labels_match(&labels));
        let only_a: BTreeMap<String, String> = [("a".to_string(), "x".to_string())].into();
        assert!(!f.labels_match(&only_a));
        let not = parse(&["label!=a"]).unwrap();
        assert!(!not.labels_match(&only_a));
        assert!(not.labels_match(&BTreeMap::new()));
    }

    #[test]
    fn bad_filters_get_dockers_errors() {
        let err = parse(&["bogus=1"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Error response from daemon: invalid filter 'bogus'"
        );
        assert_eq!(err.downcast_ref::<ExitWith>().unwrap().code, 1);
        assert!(parse(&["novalue"]).is_err());
        let f = parse(&["name=a", "name=b"]).unwrap();
        let err = f.check("name", |v| v == "a").unwrap_err().to_string();
        assert!(err.ends_with("invalid filter 'name=b'"), "{err}");
    }
}
