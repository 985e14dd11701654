//! Bind mounts (`-v /host:/path`, `--mount type=bind`, an OCI bundle's
//! directory binds): checked and resolved once, at create, into the
//! [`BindMount`]s the monitor shares with the VM over virtio-fs.

use std::path::Path;

use husk_sandbox::ShareKind;

use crate::config::BindMount;
use crate::options::VolumeRequest;
use crate::Error;

/// Docker's prefix of a bind mount's configuration errors.
const INVALID: &str = "invalid mount config for type \"bind\"";

/// The bind requests among `requests`, resolved: an absolute source that
/// exists (made as a directory when the request says so, as `-v` does),
/// symlinks resolved, a directory or a regular file.
pub fn resolve(requests: &[VolumeRequest]) -> Result<Vec<BindMount>, Error> {
    let mut binds = Vec::new();
    for r in requests {
        if let VolumeRequest::Bind {
            source,
            target,
            read_only,
            create_missing,
        } = r
        {
            binds.push(resolve_one(source, target, *read_only, *create_missing)?);
        }
    }
    Ok(binds)
}

fn resolve_one(
    source: &str,
    target: &str,
    read_only: bool,
    create_missing: bool,
) -> Result<BindMount, Error> {
    let invalid = |why: String| Error::Invalid(format!("{INVALID}: {why}"));
    if source.is_empty() {
        return Err(invalid("field Source must not be empty".into()));
    }
    let path = Path::new(source);
    if !path.is_absolute() {
        return Err(invalid(format!(
            "invalid mount path: '{source}' mount path must be absolute"
        )));
    }
    if std::fs::symlink_metadata(path).is_err() {
        if !create_missing {
            return Err(invalid(format!(
                "bind source path does not exist: {source}"
            )));
        }
        std::fs::create_dir_all(path).map_err(|e| {
            Error::Invalid(format!(
                "error while creating mount source path '{source}': {e}"
            ))
        })?;
    }
    let resolved = path
        .canonicalize()
        .map_err(|e| invalid(format!("bind source path {source}: {e}")))?;
    let meta = std::fs::metadata(&resolved)
        .map_err(|e| invalid(format!("bind source path {source}: {e}")))?;
    let kind = if meta.is_dir() {
        ShareKind::Directory
    } else if meta.is_file() {
        ShareKind::File
    } else {
        return Err(invalid(format!(
            "bind source path {source} is neither a directory nor a regular file"
        )));
    };
    Ok(BindMount {
        source: resolved,
        kind,
        target: target.to_string(),
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(source: &Path, create_missing: bool) -> VolumeRequest {
        VolumeRequest::Bind {
            source: source.display().to_string(),
            target: "/in".into(),
            read_only: true,
            create_missing,
        }
    }

    #[test]
    fn sources_are_resolved_and_checked_like_docker() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.yml");
        std::fs::write(&file, "x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let binds = resolve(&[bind(dir.path(), false), bind(&link, false)]).unwrap();
        assert_eq!(binds[0].kind, ShareKind::Directory);
        assert_eq!(binds[1].kind, ShareKind::File);
        assert_eq!(binds[1].source, file.canonicalize().unwrap());
        assert!(binds[1].read_only);

        let missing = dir.path().join("missing");
        let e = resolve(&[bind(&missing, false)]).unwrap_err().to_string();
        assert!(e.contains("bind source path does not exist"), "{e}");
        assert!(!missing.exists());
        let made = resolve(&[bind(&missing, true)]).unwrap();
        assert!(missing.is_dir() && made[0].kind == ShareKind::Directory);

        let e = resolve(&[bind(Path::new("rel/x"), false)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be absolute"), "{e}");
        let e = resolve(&[bind(Path::new("/dev/null"), false)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither a directory nor a regular file"), "{e}");
    }
}
