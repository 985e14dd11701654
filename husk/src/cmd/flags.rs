//! Parsers of flag values shared by several commands (`--env-file`, `-e`,
//! `-m`, `--cpus`, `-v`); the library takes the typed results.

use anyhow::{bail, Context, Result};
use husk_runtime::options::{check_mount_target, parse_bytes, MIN_MEMORY_MIB};
use husk_runtime::VolumeRequest;

/// Parses Docker's `-v` syntax: `NAME:/path[:ro|rw]`, `/path`
/// (anonymous), `/host/path:/path[:ro|rw]` or `./rel:/path` (bind; a
/// missing host directory is made at create, as Docker does).
pub fn parse_volume(spec: &str) -> Result<VolumeRequest> {
    let bad = |why: &str| anyhow::anyhow!("invalid volume specification '{spec}': {why}");
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, opts) = match parts.as_slice() {
        [t] => (None, *t, None),
        [s, t] => (Some(*s), *t, None),
        [s, t, o] => (Some(*s), *t, Some(*o)),
        _ => return Err(bad("too many colons")),
    };
    check_mount_target(target).map_err(|e| bad(&e))?;
    let read_only = match opts {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(o) => return Err(bad(&format!("unknown option {o:?} (ro, rw)"))),
    };
    let Some(source) = source else {
        return Ok(VolumeRequest::Anonymous {
            target: target.to_string(),
        });
    };
    if source.starts_with('/') || source.starts_with('.') {
        return Ok(VolumeRequest::Bind {
            source: absolute(source)?,
            target: target.to_string(),
            read_only,
            create_missing: true,
        });
    }
    if !husk_runtime::id::valid_name(source) {
        return Err(bad("volume names are [a-zA-Z0-9][a-zA-Z0-9_.-]+"));
    }
    Ok(VolumeRequest::Named {
        name: source.to_string(),
        target: target.to_string(),
        read_only,
    })
}

/// A host path made absolute against the working directory (Docker's
/// CLI does so for `./x` and `../x`); not resolved further.
pub fn absolute(path: &str) -> Result<String> {
    if path.starts_with('/') {
        return Ok(path.to_string());
    }
    let cwd = std::env::current_dir().context("reading the working directory")?;
    Ok(cwd.join(path).display().to_string())
}

/// `-e` values: `KEY=VALUE` as is; `KEY` alone takes husk's own value
/// (skipped when unset), as Docker does.
pub fn env_flags(flags: &[String]) -> Vec<String> {
    env_flags_from(flags, |k| std::env::var(k).ok())
}

fn env_flags_from(flags: &[String], lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    flags
        .iter()
        .filter_map(|e| match e.split_once('=') {
            Some(_) => Some(e.clone()),
            None => lookup(e).map(|v| format!("{e}={v}")),
        })
        .collect()
}

/// Reads `--env-file` files, in order.
pub fn env_files(files: &[std::path::PathBuf]) -> Result<Vec<String>> {
    let mut env = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading env file {}", file.display()))?;
        env.extend(parse_env_file(&text, |k| std::env::var(k).ok())?);
    }
    Ok(env)
}

/// Parses `--env-file` content: `KEY=VALUE` lines; `KEY` alone takes the
/// value from `lookup` (skipped when unset); blank lines and `#` comments
/// are ignored.
pub fn parse_env_file(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some(("", _)) => bail!("env file line {}: no variable name", n + 1),
            Some(_) => out.push(line.to_string()),
            None => {
                let key = line.trim_end();
                if key.contains(char::is_whitespace) {
                    bail!(
                        "env file line {}: variable {key:?} contains whitespaces",
                        n + 1
                    );
                }
                if let Some(v) = lookup(key) {
                    out.push(format!("{key}={v}"));
                }
            }
        }
    }
    Ok(out)
}

/// Parses Docker's memory sizes (`512m`, `1g`, `268435456`) to MiB.
pub fn parse_memory(s: &str) -> Result<u32> {
    let bad = || anyhow::anyhow!("invalid memory size {s:?} (e.g. 512m, 1g)");
    let bytes = parse_bytes(s).ok_or_else(bad)?;
    let mib = bytes >> 20;
    if mib < u64::from(MIN_MEMORY_MIB) {
        bail!("minimum memory is {MIN_MEMORY_MIB} MiB (a VM needs room for its kernel), got {s}");
    }
    u32::try_from(mib).map_err(|_| bad())
}

/// Parses a rate in bytes per second (`--disk-bps`, `--net-bps`) as
/// Docker writes byte sizes: `1048576`, `512k`, `10m`, `1g`, `10mb`.
/// 0 means unlimited.
pub fn parse_rate(s: &str) -> Result<u64> {
    parse_bytes(s)
        .ok_or_else(|| anyhow::anyhow!("invalid rate {s:?} (bytes per second, e.g. 512k, 10m)"))
}

/// Parses `--cpus` (a decimal number of CPUs) to whole vCPUs, rounding up.
pub fn parse_cpus(s: &str) -> Result<u8> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid --cpus value {s:?}"))?;
    if !(v > 0.0 && v <= 32.0) {
        bail!("--cpus must be in (0, 32], got {s}");
    }
    Ok(v.ceil() as u8)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates() {
        use super::parse_rate;
        assert_eq!(parse_rate("1m").unwrap(), 1 << 20);
        assert_eq!(parse_rate("10mb").unwrap(), 10 << 20);
        assert_eq!(parse_rate("512k").unwrap(), 512 << 10);
        assert_eq!(parse_rate("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_rate("0").unwrap(), 0);
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-1m").is_err());
    }

    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn env_files_and_env_flags() {
        let env = parse_env_file("# c\n\nA=1\nHOME\nNOPE\n  B=x y\n", |k| {
            (k == "HOME").then(|| "/h".to_string())
        })
        .unwrap();
        assert_eq!(env, strings(&["A=1", "HOME=/h", "B=x y"]));
        assert!(parse_env_file("=x\n", |_| None).is_err());
        assert!(parse_env_file("A B\n", |_| None).is_err());
        let flags = strings(&["A=1", "HOME", "NOPE"]);
        let env = env_flags_from(&flags, |k| (k == "HOME").then(|| "/h".to_string()));
        assert_eq!(env, strings(&["A=1", "HOME=/h"]));
    }

    #[test]
    fn volume_flags() {
        assert_eq!(
            parse_volume("data:/data").unwrap(),
            VolumeRequest::Named {
                name: "data".into(),
                target: "/data".into(),
                read_only: false
            }
        );
        assert_eq!(
            parse_volume("data:/d:ro").unwrap(),
            VolumeRequest::Named {
                name: "data".into(),
                target: "/d".into(),
                read_only: true
            }
        );
        assert_eq!(
            parse_volume("/cache").unwrap(),
            VolumeRequest::Anonymous {
                target: "/cache".into()
            }
        );
        assert_eq!(
            parse_volume("/host:/ctr:ro").unwrap(),
            VolumeRequest::Bind {
                source: "/host".into(),
                target: "/ctr".into(),
                read_only: true,
                create_missing: true,
            }
        );
        let cwd = std::env::current_dir().unwrap();
        match parse_volume("./conf.yml:/etc/app.yml").unwrap() {
            VolumeRequest::Bind { source, .. } => {
                assert_eq!(source, cwd.join("./conf.yml").display().to_string())
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "data:rel",
            "a:/b:zz",
            "a:/b:ro:x",
            "x y:/a",
            "/",
            "v:/a/../b",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_and_cpus() {
        assert_eq!(parse_memory("512m").unwrap(), 512);
        assert_eq!(parse_memory("1g").unwrap(), 1024);
        assert_eq!(parse_memory("268435456").unwrap(), 256);
        assert_eq!(parse_memory("128MB").unwrap(), 128);
        assert!(parse_memory("10m").is_err());
        assert!(parse_memory("12q").is_err());
        assert_eq!(parse_cpus("1.5").unwrap(), 2);
        assert_eq!(parse_cpus("1").unwrap(), 1);
        assert!(parse_cpus("0").is_err() && parse_cpus("x").is_err() && parse_cpus("33").is_err());
    }
}
