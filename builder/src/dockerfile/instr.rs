//! One logical line to an [`Instruction`].

use super::words::split_words;
use super::{Command, CopyArgs, Healthcheck, Instruction};

/// Most arguments one instruction may have (bounds work on hostile input).
const MAX_ARGS: usize = 4096;

/// Parses one instruction line (keyword and arguments).
pub fn parse_line(text: &str, escape: char) -> Result<Instruction, String> {
    let (keyword, rest) = match text.split_once(char::is_whitespace) {
        Some((k, r)) => (k, r.trim()),
        None => (text, ""),
    };
    let upper = keyword.to_ascii_uppercase();
    let (flags, rest) = take_flags(rest);
    let allowed: &[&str] = match upper.as_str() {
        "FROM" => &["platform"],
        "RUN" => &["network"],
        "COPY" => &["from", "chown", "chmod", "link"],
        "ADD" => &["chown", "chmod", "link"],
        "HEALTHCHECK" => &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
        _ => &[],
    };
    if let Some((name, _)) = flags.iter().find(|(n, _)| !allowed.contains(&n.as_str())) {
        if is_known(&upper) {
            return Err(format!("unknown flag: --{name} (for {upper})"));
        }
    }
    let flag = |name: &str| -> Option<String> {
        flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone().unwrap_or_default())
    };
    let need_args = |what: &str| -> Result<(), String> {
        if rest.is_empty() {
            Err(format!("{what} requires at least one argument"))
        } else {
            Ok(())
        }
    };
    Ok(match upper.as_str() {
        "FROM" => {
            need_args("FROM")?;
            from(rest, escape, flag("platform"))?
        }
        "RUN" => {
            need_args("RUN")?;
            Instruction::Run {
                cmd: command(rest),
                network: flag("network"),
            }
        }
        "COPY" | "ADD" => {
            let args = copy_args(rest, escape, &upper)?;
            let args = CopyArgs {
                from: flag("from"),
                chown: flag("chown"),
                chmod: flag("chmod"),
                ..args
            };
            if upper == "COPY" {
                Instruction::Copy(args)
            } else {
                Instruction::Add(args)
            }
        }
        "WORKDIR" => {
            need_args("WORKDIR")?;
            let w = words(rest, escape)?;
            if w.len() != 1 {
                return Err("WORKDIR requires exactly one argument".into());
            }
            Instruction::Workdir(w[0].clone())
        }
        "ENV" => {
            need_args("ENV")?;
            Instruction::Env(pairs(rest, escape, "ENV")?)
        }
        "LABEL" => {
            need_args("LABEL")?;
            Instruction::Label(pairs(rest, escape, "LABEL")?)
        }
        "ARG" => {
            need_args("ARG")?;
            Instruction::Arg(arg_decls(rest, escape)?)
        }
        "CMD" => Instruction::Cmd(command(rest)),
        "ENTRYPOINT" => Instruction::Entrypoint(command(rest)),
        "EXPOSE" => {
            need_args("EXPOSE")?;
            Instruction::Expose(words(rest, escape)?)
        }
        "USER" => {
            need_args("USER")?;
            let w = words(rest, escape)?;
            if w.len() != 1 {
                return Err("USER requires exactly one argument".into());
            }
            Instruction::User(w[0].clone())
        }
        "VOLUME" => {
            need_args("VOLUME")?;
            let v = match json_array(rest)? {
                Some(v) => v,
                None => words(rest, escape)?,
            };
            if v.iter().any(|p| p.trim().is_empty()) {
                return Err("VOLUME specified can not be an empty string".into());
            }
            Instruction::Volume(v)
        }
        "SHELL" => {
            match json_array(rest)? {
                Some(v) if !v.is_empty() => Instruction::Shell(v),
                _ => return Err(
                    "SHELL requires the arguments to be in JSON form, e.g. [\"/bin/sh\", \"-c\"]"
                        .into(),
                ),
            }
        }
        "STOPSIGNAL" => {
            need_args("STOPSIGNAL")?;
            let w = words(rest, escape)?;
            if w.len() != 1 {
                return Err("STOPSIGNAL requires exactly one argument".into());
            }
            Instruction::StopSignal(w[0].clone())
        }
        "HEALTHCHECK" => Instruction::Healthcheck(healthcheck(rest, &flag)?),
        "MAINTAINER" => {
            need_args("MAINTAINER")?;
            Instruction::Maintainer(rest.to_string())
        }
        "ONBUILD" => {
            need_args("ONBUILD")?;
            let inner = rest
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            if matches!(inner.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                return Err(format!("{inner} isn't allowed as an ONBUILD trigger"));
            }
            parse_line(rest, escape)?;
            Instruction::Onbuild(rest.to_string())
        }
        _ => return Err(format!("unknown instruction: {}", printable(keyword))),
    })
}

fn is_known(upper: &str) -> bool {
    matches!(
        upper,
        "FROM"
            | "RUN"
            | "COPY"
            | "ADD"
            | "WORKDIR"
            | "ENV"
            | "LABEL"
            | "ARG"
            | "CMD"
            | "ENTRYPOINT"
            | "EXPOSE"
            | "USER"
            | "VOLUME"
            | "SHELL"
            | "STOPSIGNAL"
            | "HEALTHCHECK"
            | "MAINTAINER"
            | "ONBUILD"
    )
}

/// At most 64 printable characters of `s`, for messages.
fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Leading `--name[=value]` words.
fn take_flags(mut rest: &str) -> (Vec<(String, Option<String>)>, &str) {
    let mut flags = Vec::new();
    while let Some(after) = rest.strip_prefix("--") {
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let token = &after[..end];
        if token.is_empty() {
            break; // a lone "--" is an argument
        }
        let (name, value) = match token.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), Some(v.to_string())),
            None => (token.to_ascii_lowercase(), None),
        };
        flags.push((name, value));
        rest = after[end..].trim_start();
    }
    (flags, rest)
}

/// A JSON array of strings; `None` if `s` is not one (shell form).
fn json_array(s: &str) -> Result<Option<Vec<String>>, String> {
    if !s.starts_with('[') {
        return Ok(None);
    }
    match serde_json::from_str::<Vec<String>>(s) {
        Ok(v) if v.len() > MAX_ARGS => Err(format!("more than {MAX_ARGS} arguments")),
        Ok(v) => Ok(Some(v)),
        Err(_) => Ok(None),
    }
}

fn command(rest: &str) -> Command {
    match json_array(rest) {
        Ok(Some(v)) => Command::Exec(v),
        _ => Command::Shell(rest.to_string()),
    }
}

fn words(rest: &str, escape: char) -> Result<Vec<String>, String> {
    let w = split_words(rest, escape)?;
    if w.len() > MAX_ARGS {
        return Err(format!("more than {MAX_ARGS} arguments"));
    }
    Ok(w)
}

fn from(rest: &str, escape: char, platform: Option<String>) -> Result<Instruction, String> {
    let w = words(rest, escape)?;
    let name = match w.as_slice() {
        [_] => None,
        [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            let n = name.to_ascii_lowercase();
            let valid = n.starts_with(|c: char| c.is_ascii_lowercase())
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
            if !valid || n.len() > 128 {
                return Err(format!(
                    "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                    printable(name)
                ));
            }
            Some(n)
        }
        _ => {
            return Err(
                "FROM requires either one or three arguments: FROM <image> [AS <name>]".into(),
            )
        }
    };
    Ok(Instruction::From {
        image: w[0].clone(),
        name,
        platform,
    })
}

fn copy_args(rest: &str, escape: char, what: &str) -> Result<CopyArgs, String> {
    let mut all = match json_array(rest)? {
        Some(v) => v,
        None => words(rest, escape)?,
    };
    if all.len() < 2 {
        return Err(format!(
            "{what} requires at least two arguments, but got {}",
            all.len()
        ));
    }
    let dest = all.pop().unwrap_or_default();
    Ok(CopyArgs {
        sources: all,
        dest,
        from: None,
        chown: None,
        chmod: None,
    })
}

/// `k=v ...` pairs, or the legacy `k v` (one pair, the rest of the line).
fn pairs(rest: &str, escape: char, what: &str) -> Result<Vec<(String, String)>, String> {
    let w = words(rest, escape)?;
    let first_has_eq = w.first().is_some_and(|f| f.contains('='));
    if !first_has_eq {
        let (key, value) = match rest.split_once(char::is_whitespace) {
            Some((k, v)) => (k, v.trim()),
            None => return Err(format!("{what} must have two arguments")),
        };
        return Ok(vec![(key.to_string(), value.to_string())]);
    }
    let mut out = Vec::new();
    for word in w {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "{what} names can only be followed by '=': {:?} has none",
                printable(&word)
            ));
        };
        if k.is_empty() {
            return Err(format!("{what} names can not be blank"));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn arg_decls(rest: &str, escape: char) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    for word in words(rest, escape)? {
        let (name, default) = match word.split_once('=') {
            Some((n, d)) => (n.to_string(), Some(d.to_string())),
            None => (word.clone(), None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid ARG name {:?}", printable(&name)));
        }
        out.push((name, default));
    }
    Ok(out)
}

fn healthcheck(rest: &str, flag: &dyn Fn(&str) -> Option<String>) -> Result<Healthcheck, String> {
    let (kind, args) = match rest.split_once(char::is_whitespace) {
        Some((k, a)) => (k.to_ascii_uppercase(), a.trim()),
        None => (rest.to_ascii_uppercase(), ""),
    };
    match kind.as_str() {
        "NONE" if args.is_empty() => Ok(Healthcheck::None),
        "NONE" => Err("HEALTHCHECK NONE takes no arguments".into()),
        "CMD" if !args.is_empty() => {
            let duration = |name: &str| -> Result<u64, String> {
                flag(name).map_or(Ok(0), |v| {
                    parse_duration(&v).map_err(|e| format!("--{name}: {e}"))
                })
            };
            let retries = match flag("retries") {
                Some(v) => v
                    .parse::<u64>()
                    .map_err(|_| format!("--retries: invalid number {:?}", printable(&v)))?,
                None => 0,
            };
            Ok(Healthcheck::Check {
                cmd: command(args),
                interval: duration("interval")?,
                timeout: duration("timeout")?,
                start_period: duration("start-period")?,
                start_interval: duration("start-interval")?,
                retries,
            })
        }
        _ => Err("HEALTHCHECK requires CMD <command> or NONE".into()),
    }
}

/// A Go-style duration (`30s`, `1m30s`, `500ms`, `1h`) in nanoseconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration {:?}", printable(s));
    if s.is_empty() {
        return Err(bad());
    }
    if s == "0" {
        return Ok(0);
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale: f64 = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = number * scale;
        if !part.is_finite() || part > 1e18 {
            return Err(bad());
        }
        total = total.checked_add(part as u64).ok_or_else(bad)?;
    }
    Ok(total)
}
