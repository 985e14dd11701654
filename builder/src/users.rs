//! `--chown=user[:group]` against an image's /etc/passwd and /etc/group.

use std::path::Path;

use crate::rootpath;

/// Largest passwd/group file read.
const MAX_FILE: u64 = 16 << 20;

fn read_etc(root: &Path, file: &str) -> String {
    let Ok(rel) = rootpath::resolve(root, Path::new(file), true) else {
        return String::new();
    };
    let Ok(f) = std::fs::File::open(root.join(rel)) else {
        return String::new();
    };
    let mut s = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::Read::take(f, MAX_FILE), &mut s);
    s
}

/// Finds `name` in a passwd/group style file: its id field (third) and,
/// for passwd, the primary group (fourth).
fn lookup(text: &str, name: &str) -> Option<(u64, Option<u64>)> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 3 && f[0] == name {
            Some((f[2].parse().ok()?, f.get(3).and_then(|g| g.parse().ok())))
        } else {
            None
        }
    })
}

/// Resolves `spec` (`uid`, `name`, `uid:gid`, `name:group`...) in the image
/// at `root`. A user without a group gets the same number as group (as
/// Docker's COPY --chown).
pub fn resolve_chown(root: &Path, spec: &str) -> Result<(u64, u64), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(format!("invalid --chown value {spec:?}"));
    }
    let uid = match user.parse::<u64>() {
        Ok(n) => n,
        Err(_) => {
            lookup(&read_etc(root, "/etc/passwd"), user)
                .ok_or_else(|| {
                    format!("unable to find user {user}: no matching entries in passwd file")
                })?
                .0
        }
    };
    let gid = match group {
        None => uid,
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                lookup(&read_etc(root, "/etc/group"), g)
                    .ok_or_else(|| {
                        format!("unable to find group {g}: no matching entries in group file")
                    })?
                    .0
            }
        },
    };
    if uid > u64::from(u32::MAX) || gid > u64::from(u32::MAX) {
        return Err(format!("invalid --chown value {spec:?}"));
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:app\n").unwrap();
        let r = |s: &str| resolve_chown(d.path(), s);
        assert_eq!(r("app").unwrap(), (1000, 1000));
        assert_eq!(r("app:staff").unwrap(), (1000, 50));
        assert_eq!(r("7:8").unwrap(), (7, 8));
        assert_eq!(r("7").unwrap(), (7, 7));
        assert!(r("nobody")
            .unwrap_err()
            .contains("unable to find user nobody"));
        assert!(r("app:nogroup")
            .unwrap_err()
            .contains("unable to find group nogroup"));
        assert!(r(":1").is_err());
        assert!(r("99999999999").is_err());
    }
}
