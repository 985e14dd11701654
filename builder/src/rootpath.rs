//! Paths inside a root directory (a build context, a mounted image), with
//! symlinks resolved as if the root were `/`: an absolute link target or
//! `..` never leaves the root.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Most symlinks followed while resolving one path (as Linux).
const MAX_LINKS: usize = 40;

/// Resolves `path` (absolute or relative to the root) inside `root`,
/// following symlinks in every component, and the last one too when
/// `follow_last`. Returns the symlink-free path relative to `root`
/// (components that do not exist are kept as they are).
pub fn resolve(root: &Path, path: &Path, follow_last: bool) -> io::Result<PathBuf> {
    let mut todo: Vec<OsString> = components(path);
    todo.reverse(); // a stack: next component on top
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c.as_bytes() == b".." {
            done.pop();
            continue;
        }
        let mut here: PathBuf = root.to_path_buf();
        here.extend(&done);
        here.push(&c);
        let is_last = todo.is_empty();
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() && (!is_last || follow_last) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("too many levels of symbolic links in {}", path.display()),
                    ));
                }
                let target = std::fs::read_link(&here)?;
                if target.is_absolute() {
                    done.clear();
                }
                let mut parts = components(&target);
                parts.reverse();
                todo.extend(parts);
            }
            _ => done.push(c),
        }
    }
    Ok(done.iter().collect())
}

/// Normal and `..` components of `path` (root and `.` dropped).
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        symlink("usr/bin", r.join("bin")).unwrap();
        symlink("/etc/passwd", r.join("abs")).unwrap();
        symlink("../../../../..", r.join("usr/up")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        let res = |p: &str, f: bool| resolve(r, Path::new(p), f).unwrap();
        assert_eq!(res("/bin/sh", true), Path::new("usr/bin/sh"));
        assert_eq!(res("bin", false), Path::new("bin"));
        assert_eq!(res("bin", true), Path::new("usr/bin"));
        assert_eq!(res("/abs", true), Path::new("etc/passwd"));
        assert_eq!(res("/usr/up/x", true), Path::new("x"));
        assert_eq!(res("/../../x/./y", true), Path::new("x/y"));
        assert_eq!(res("/new/dir/f", true), Path::new("new/dir/f"));
        assert!(resolve(r, Path::new("/loop/x"), true).is_err());
    }
}
