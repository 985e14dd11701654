//! Docker's `--mount` flag: `type=bind|volume|tmpfs,source=..,target=..,
//! readonly,...` into the library's typed requests.

use anyhow::{anyhow, bail, Result};
use husk_protocol::TmpfsMount;
use husk_runtime::options::check_mount_target;
use husk_runtime::run_flags;
use husk_runtime::VolumeRequest;

/// One `--mount`.
#[derive(Debug, PartialEq, Eq)]
pub enum MountFlag {
    /// `type=bind` or `type=volume`.
    Volume(VolumeRequest),
    /// `type=tmpfs`.
    Tmpfs(TmpfsMount),
}

/// Parses one `--mount` value (Docker's keys and their aliases; the
/// type defaults to `volume`).
pub fn parse_mount(spec: &str) -> Result<MountFlag> {
    let flag_err = |why: String| anyhow!("invalid argument \"{spec}\" for \"--mount\" flag: {why}");
    let mut kind = "volume".to_string();
    let (mut source, mut target) = (None::<String>, None::<String>);
    let mut read_only = false;
    let (mut size, mut mode) = (None, None);
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        match (key.as_str(), value) {
            ("type", Some(v)) => kind = v.to_string(),
            ("source" | "src", Some(v)) => source = Some(v.to_string()),
            ("target" | "destination" | "dst", Some(v)) => target = Some(v.to_string()),
            ("readonly" | "ro", None) => read_only = true,
            ("readonly" | "ro", Some(v)) => {
                read_only = match v {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(flag_err(format!("invalid value for {key}: {v}"))),
                }
            }
            ("bind-propagation" | "consistency", Some(_)) => {}
            ("tmpfs-size", Some(v)) => {
                let bad = || flag_err(format!("invalid value for tmpfs-size: {v}"));
                size = Some(run_flags::tmpfs_size(v).ok_or_else(bad)?);
            }
            ("tmpfs-mode", Some(v)) => {
                let bad = || flag_err(format!("invalid value for tmpfs-mode: {v}"));
                mode = Some(run_flags::tmpfs_mode(v).ok_or_else(bad)?);
            }
            (_, None) => {
                return Err(flag_err(format!(
                    "invalid field '{field}' must be a key=value pair"
                )))
            }
            (_, Some(_)) => return Err(flag_err(format!("unexpected key '{key}' in '{field}'"))),
        }
    }
    let invalid = |why: &str| anyhow!("invalid mount config for type \"{kind}\": {why}");
    let Some(target) = target.filter(|t| !t.is_empty()) else {
        return Err(invalid("field Target must not be empty"));
    };
    check_mount_target(&target).map_err(|why| invalid(&format!("invalid mount path: {why}")))?;
    match kind.as_str() {
        "bind" => {
            let Some(source) = source.filter(|s| !s.is_empty()) else {
                return Err(invalid("field Source must not be empty"));
            };
            let source = match source.starts_with('.') {
                true => crate::cmd::flags::absolute(&source)?,
                false => source,
            };
            Ok(MountFlag::Volume(VolumeRequest::Bind {
                source,
                target,
                read_only,
                create_missing: false,
            }))
        }
        "volume" => Ok(MountFlag::Volume(match source {
            None => VolumeRequest::Anonymous { target },
            Some(name) => {
                if !husk_runtime::id::valid_name(&name) {
                    bail!("invalid mount config for type \"volume\": invalid volume name {name:?}: names are [a-zA-Z0-9][a-zA-Z0-9_.-]+");
                }
                VolumeRequest::Named {
                    name,
                    target,
                    read_only,
                }
            }
        })),
        "tmpfs" => {
            if source.is_some() {
                return Err(invalid("field Source must not be specified"));
            }
            Ok(MountFlag::Tmpfs(TmpfsMount {
                size,
                mode,
                read_only,
                ..run_flags::docker_tmpfs(&target)
            }))
        }
        other => bail!("invalid mount config for type \"{other}\": mount type unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_mount_syntax() {
        assert_eq!(
            parse_mount("type=bind,src=/data,dst=/data,readonly").unwrap(),
            MountFlag::Volume(VolumeRequest::Bind {
                source: "/data".into(),
                target: "/data".into(),
                read_only: true,
                create_missing: false,
            })
        );
        assert_eq!(
            parse_mount("source=cache,target=/c").unwrap(),
            MountFlag::Volume(VolumeRequest::Named {
                name: "cache".into(),
                target: "/c".into(),
                read_only: false,
            })
        );
        match parse_mount("type=tmpfs,destination=/scratch,tmpfs-size=1m,tmpfs-mode=1777").unwrap()
        {
            MountFlag::Tmpfs(t) => {
                assert_eq!(t.target, "/scratch");
                assert_eq!(t.size.as_deref(), Some("1024k"));
                assert_eq!(t.mode, Some(0o1777));
            }
            other => panic!("{other:?}"),
        }
        for (bad, why) in [
            ("type=bind,dst=/x", "field Source must not be empty"),
            ("type=bind,src=/x", "field Target must not be empty"),
            ("type=nfs,dst=/x", "mount type unknown"),
            ("type=bind,src=/x,dst=/x,foo=1", "unexpected key 'foo'"),
            ("type=bind,src=/x,dst=/x,bogus", "must be a key=value pair"),
            ("type=bind,src=/x,dst=rel", "invalid mount path"),
            ("type=tmpfs,src=/x,dst=/y", "Source must not be specified"),
            (
                "type=bind,src=/x,dst=/y,readonly=maybe",
                "invalid value for readonly",
            ),
        ] {
            let e = parse_mount(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
