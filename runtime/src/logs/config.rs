//! The json-file log driver's options (`--log-opt max-size=10m
//! --log-opt max-file=3`), typed, with husk's default cap.

use serde::{Deserialize, Serialize};

/// `max-size` when no `--log-opt` is given: a guest printing bare
/// newlines costs about 70 bytes of JSON per byte it prints, so the
/// log is capped by default (Docker's default is unbounded).
pub const DEFAULT_MAX_SIZE: u64 = 20 << 20;
/// `max-file` when no `--log-opt` is given.
pub const DEFAULT_MAX_FILE: u32 = 5;
/// The most files a log may be rotated over.
pub const MAX_MAX_FILE: u32 = 100;

/// A bad `--log-opt`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogOptError {
    /// Not `KEY=VALUE`.
    #[error("invalid --log-opt {0:?}: KEY=VALUE expected")]
    Syntax(String),
    /// A key the json-file driver does not know.
    #[error("unknown log opt '{0}' for json-file log driver")]
    UnknownKey(String),
    /// `max-size` is not a positive size.
    #[error("invalid --log-opt max-size={0:?}: a positive size expected (e.g. 10m, 512k, 1g)")]
    MaxSize(String),
    /// `max-file` is not a count in range.
    #[error("invalid --log-opt max-file={0:?}: a number from 1 to {MAX_MAX_FILE} expected")]
    MaxFile(String),
    /// `max-file` without `max-size`.
    #[error("invalid --log-opt: max-file can only be used with max-size")]
    MaxFileWithoutMaxSize,
}

/// How `log.json` is rotated: it holds at most `max_size` bytes (one
/// entry larger than that still goes whole into a file of its own); when
/// the next entry would pass that, it becomes `log.json.1` (`.1` becomes
/// `.2`, ...) and at most `max_file` files are kept, as Docker's
/// json-file driver does. With `max_file` 1 the file is emptied instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// Most bytes in one file.
    pub max_size: u64,
    /// Most files, the current one included.
    pub max_file: u32,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            max_size: DEFAULT_MAX_SIZE,
            max_file: DEFAULT_MAX_FILE,
        }
    }
}

impl LogConfig {
    /// Parses `--log-opt` values (`max-size=10m`, `max-file=3`; a later
    /// key wins). None given: the default cap. `max-size` alone keeps
    /// one file, as Docker does.
    pub fn from_opts(opts: &[String]) -> Result<LogConfig, LogOptError> {
        if opts.is_empty() {
            return Ok(LogConfig::default());
        }
        let (mut max_size, mut max_file) = (None, None);
        for opt in opts {
            let (key, value) = opt
                .split_once('=')
                .ok_or_else(|| LogOptError::Syntax(opt.clone()))?;
            match key {
                "max-size" => {
                    let size = crate::options::parse_bytes(value)
                        .filter(|&n| n > 0)
                        .ok_or_else(|| LogOptError::MaxSize(value.to_string()))?;
                    max_size = Some(size);
                }
                "max-file" => {
                    let n = value
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_MAX_FILE).contains(n))
                        .ok_or_else(|| LogOptError::MaxFile(value.to_string()))?;
                    max_file = Some(n);
                }
                other => return Err(LogOptError::UnknownKey(other.to_string())),
            }
        }
        match (max_size, max_file) {
            (Some(max_size), max_file) => Ok(LogConfig {
                max_size,
                max_file: max_file.unwrap_or(1),
            }),
            (None, Some(_)) => Err(LogOptError::MaxFileWithoutMaxSize),
            (None, None) => Ok(LogConfig::default()),
        }
    }

    /// The options as Docker's `inspect` shows them
    /// (`{"max-size": "20m", "max-file": "5"}`).
    pub fn docker_opts(&self) -> [(&'static str, String); 2] {
        [
            ("max-file", self.max_file.to_string()),
            ("max-size", size_text(self.max_size)),
        ]
    }
}

/// `n` bytes in the largest whole unit: `20m`, `512k`, `1g`, `1000`.
fn size_text(n: u64) -> String {
    for (shift, unit) in [(30, 'g'), (20, 'm'), (10, 'k')] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(opts: &[&str]) -> Result<LogConfig, LogOptError> {
        LogConfig::from_opts(&opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn docker_options_and_default() {
        assert_eq!(parse(&[]).unwrap(), LogConfig::default());
        assert_eq!(
            parse(&["max-size=10m", "max-file=3"]).unwrap(),
            LogConfig {
                max_size: 10 << 20,
                max_file: 3
            }
        );
        assert_eq!(
            parse(&["max-size=1.5k"]).map_err(|e| e.to_string()),
            Err("invalid --log-opt max-size=\"1.5k\": a positive size expected (e.g. 10m, 512k, 1g)".into())
        );
        let one = parse(&["max-size=512K"]).unwrap();
        assert_eq!((one.max_size, one.max_file), (512 << 10, 1));
        assert_eq!(parse(&["max-size=2g"]).unwrap().max_size, 2 << 30);
        assert_eq!(parse(&["max-size=100"]).unwrap().max_size, 100);
        assert_eq!(parse(&["max-size=1mb"]).unwrap().max_size, 1 << 20);
        assert_eq!(
            LogConfig::default().docker_opts(),
            [("max-file", "5".into()), ("max-size", "20m".into())]
        );
        assert_eq!(size_text(1000), "1000");
        assert_eq!(size_text(3 << 30), "3g");
        assert_eq!(size_text(1536), "1536");
    }

    #[test]
    fn bad_options_are_one_line_errors() {
        for (opts, want) in [
            (&["max-size"][..], LogOptError::Syntax("max-size".into())),
            (&["max-size=0"], LogOptError::MaxSize("0".into())),
            (&["max-size=10x"], LogOptError::MaxSize("10x".into())),
            (&["max-size=-1"], LogOptError::MaxSize("-1".into())),
            (
                &["max-size=1m", "max-file=0"],
                LogOptError::MaxFile("0".into()),
            ),
            (
                &["max-size=1m", "max-file=101"],
                LogOptError::MaxFile("101".into()),
            ),
            (&["max-file=3"], LogOptError::MaxFileWithoutMaxSize),
            (
                &["compress=true"],
                LogOptError::UnknownKey("compress".into()),
            ),
        ] {
            let err = parse(opts).unwrap_err();
            assert_eq!(err, want);
            assert!(!err.to_string().contains('\n'));
        }
    }
}
