//! A RUN step's changes as a layer tar: the overlayfs upper directory of
//! its writable disk, converted to OCI form. Whiteouts (0:0 character
//! devices) become `.wh.<name>` entries, opaque directories
//! (`trusted.overlay.opaque=y`) get a `.wh..wh..opq` entry; modes, owners,
//! times, symlinks, hard links and xattrs (except overlayfs' own) are kept.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::tarball::{LayerWriter, Meta};
use crate::xattr;

/// Errors converting the upper directory.
#[derive(Debug, thiserror::Error)]
pub enum UpperError {
    /// Reading the upper directory or writing the tar failed.
    #[error("{path}")]
    Io {
        /// The entry.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// overlayfs wrote something a layer tar cannot express.
    #[error("{path}: overlayfs {what} cannot be stored in a layer")]
    Unsupported {
        /// The entry.
        path: String,
        /// The feature (redirect, metacopy).
        what: &'static str,
    },
}

/// Paths the container runtime itself writes (Docker leaves them out of
/// build layers too, and out of `docker diff`): the API mount points and
/// the agent's /etc files.
pub const RUNTIME_PATHS: &[&str] = &[
    "dev",
    "proc",
    "sys",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
];

/// Most directory levels followed.
const MAX_DEPTH: usize = 256;

struct Walk<'a, W: Write> {
    upper: &'a Path,
    /// The tar name of `upper` itself (entries go below it); empty for
    /// the directory's contents at the top.
    name: &'a Path,
    /// An overlayfs upper directory (whiteouts, opaque markers, [`RUNTIME_PATHS`]),
    /// rather than a plain tree ([`write_tree`]).
    overlay: bool,
    /// Directories (relative) whose contents are left out.
    pruned: &'a [PathBuf],
    /// Owner (uid, gid) given to every entry instead of the files' own.
    owner: Option<(u64, u64)>,
    out: &'a mut LayerWriter<W>,
    /// (dev, inode) of files with several links → their first path.
    links: HashMap<(u64, u64), PathBuf>,
    /// Entries written (whiteouts and markers included).
    count: u64,
}

/// Writes the changes in `upper` as a layer tar to `out`; returns how many
/// entries were written.
pub fn write_layer<W: Write>(upper: &Path, out: &mut LayerWriter<W>) -> Result<u64, UpperError> {
    let mut w = Walk {
        upper,
        name: Path::new(""),
        overlay: true,
        pruned: &[],
        owner: None,
        out,
        links: HashMap::new(),
        count: 0,
    };
    w.dir_children(Path::new(""), 0)?;
    Ok(w.count)
}

/// Writes the plain tree at `source` (a directory, file, symlink...; not
/// followed) as a tar to `out` (`husk cp`, `husk export`): its own entry
/// named `name` with what it holds below it, or with an empty `name` a
/// directory's contents at the top. The contents of the directories in
/// `pruned` (relative to `source`) are left out, the directories kept.
/// With `owner`, every entry gets that (uid, gid) instead of its own.
/// Returns how many entries were written.
pub fn write_tree<W: Write>(
    source: &Path,
    name: &Path,
    pruned: &[PathBuf],
    owner: Option<(u64, u64)>,
    out: &mut LayerWriter<W>,
) -> Result<u64, UpperError> {
    let mut w = Walk {
        upper: source,
        name,
        overlay: false,
        pruned,
        owner,
        out,
        links: HashMap::new(),
        count: 0,
    };
    if name.as_os_str().is_empty() {
        w.dir_children(Path::new(""), 0)?;
    } else {
        w.entry(Path::new(""), 0)?;
    }
    Ok(w.count)
}

fn io_at(rel: &Path) -> impl FnOnce(io::Error) -> UpperError + '_ {
    move |source| UpperError::Io {
        path: format!("/{}", rel.display()),
        source,
    }
}

impl<W: Write> Walk<'_, W> {
    fn dir_children(&mut self, rel: &Path, depth: usize) -> Result<(), UpperError> {
        if depth > MAX_DEPTH {
            return Err(io_at(rel)(io::Error::other(
                "directories nested too deeply",
            )));
        }
        let mut names: Vec<_> = fs::read_dir(self.upper.join(rel))
            .map_err(io_at(rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_at(rel))?;
        names.sort();
        for name in names {
            let child = rel.join(&name);
            if self.overlay && RUNTIME_PATHS.iter().any(|s| Path::new(s) == child) {
                continue;
            }
            self.entry(&child, depth)?;
        }
        Ok(())
    }

    fn entry(&mut self, rel: &Path, depth: usize) -> Result<(), UpperError> {
        let path = if rel.as_os_str().is_empty() {
            self.upper.to_path_buf()
        } else {
            self.upper.join(rel)
        };
        // (`join("")` would add a trailing slash.)
        let tar_path = if rel.as_os_str().is_empty() {
            self.name.to_path_buf()
        } else {
            self.name.join(rel)
        };
        let m = fs::symlink_metadata(&path).map_err(io_at(rel))?;
        let mut meta = Meta::of(&m);
        if let Some((uid, gid)) = self.owner {
            (meta.uid, meta.gid) = (uid, gid);
        }
        let ft = m.file_type();
        let mut xattrs = xattr::list(&path).map_err(io_at(rel))?;
        let mut opaque = false;
        for (k, v) in &xattrs {
            match k.as_str() {
                "trusted.overlay.opaque" => opaque = v.as_slice() == b"y",
                "trusted.overlay.redirect" => {
                    return Err(UpperError::Unsupported {
                        path: format!("/{}", rel.display()),
                        what: "redirect_dir",
                    })
                }
                "trusted.overlay.metacopy" => {
                    return Err(UpperError::Unsupported {
                        path: format!("/{}", rel.display()),
                        what: "metacopy",
                    })
                }
                _ => {}
            }
        }
        xattrs.retain(|(k, _)| !k.starts_with("trusted.overlay."));
        self.count += 1;
        let out = &mut self.out;
        if ft.is_dir() {
            out.dir(&tar_path, &meta, &xattrs).map_err(io_at(rel))?;
            if opaque && self.overlay {
                out.opaque(&tar_path).map_err(io_at(rel))?;
                self.count += 1;
            }
            if self.pruned.iter().any(|p| p == rel) {
                return Ok(());
            }
            return self.dir_children(rel, depth + 1);
        }
        if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(io_at(rel))?;
            return out.symlink(&tar_path, &meta, &target).map_err(io_at(rel));
        }
        if self.overlay && ft.is_char_device() && m.rdev() == 0 {
            return out.whiteout(&tar_path).map_err(io_at(rel));
        }
        if ft.is_file() {
            if m.nlink() > 1 {
                let key = (m.dev(), m.ino());
                if let Some(first) = self.links.get(&key) {
                    let first = first.clone();
                    return out
                        .hardlink(&tar_path, &meta, &self.name.join(&first))
                        .map_err(io_at(rel));
                }
                self.links.insert(key, rel.to_path_buf());
            }
            let f = fs::File::open(&path).map_err(io_at(rel))?;
            return out
                .file(&tar_path, &meta, &xattrs, m.len(), io::BufReader::new(f))
                .map_err(io_at(rel));
        }
        let dev = (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev()));
        let kind = if ft.is_char_device() {
            tar::EntryType::Char
        } else if ft.is_block_device() {
            tar::EntryType::Block
        } else if ft.is_fifo() {
            tar::EntryType::Fifo
        } else {
            self.count -= 1; // sockets are not stored
            return Ok(());
        };
        out.special(&tar_path, kind, &meta, dev).map_err(io_at(rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn mknod_whiteout(p: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .unwrap();
    }

    fn set_xattr(p: &Path, k: &str, v: &[u8]) {
        rustix::fs::lsetxattr(p, k, v, rustix::fs::XattrFlags::empty()).unwrap();
    }

    #[test]
    fn upper_dir_to_layer_tar() {
        if !is_root() {
            eprintln!("SKIPPED upper_dir_to_layer_tar: needs root (whiteouts, trusted xattrs)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let up = dir.path();
        fs::create_dir_all(up.join("etc")).unwrap();
        fs::create_dir_all(up.join("opq/sub")).unwrap();
        fs::create_dir_all(up.join("proc")).unwrap();
        fs::write(up.join("etc/hosts"), "skipped").unwrap();
        fs::write(up.join("etc/new"), "new\n").unwrap();
        fs::hard_link(up.join("etc/new"), up.join("etc/new2")).unwrap();
        std::os::unix::fs::symlink("new", up.join("etc/link")).unwrap();
        mknod_whiteout(&up.join("gone"));
        set_xattr(&up.join("opq"), "trusted.overlay.opaque", b"y");
        set_xattr(&up.join("etc/new"), "user.note", b"kept");
        let mut w = LayerWriter::new(Vec::new());
        let n = write_layer(up, &mut w).unwrap();
        let bytes = w.finish().unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            let kind = e.header().entry_type();
            let mut xattr = String::new();
            if let Some(ext) = e.pax_extensions().unwrap() {
                for x in ext {
                    let x = x.unwrap();
                    xattr = format!("{}={}", x.key().unwrap(), x.value().unwrap());
                }
            }
            let mut body = String::new();
            e.read_to_string(&mut body).unwrap();
            seen.push(format!("{p} {kind:?} {body}{xattr}").trim().to_string());
        }
        assert_eq!(
            seen,
            [
                "etc Directory",
                "etc/link Symlink",
                "etc/new Regular new\nSCHILY.xattr.user.note=kept",
                "etc/new2 Link",
                ".wh.gone Regular",
                "opq Directory",
                "opq/.wh..wh..opq Regular",
                "opq/sub Directory",
            ]
        );
        assert_eq!(n, 8);
    }

    fn tar_entries(tar: &[u8]) -> Vec<(String, u64)> {
        let mut ar = tar::Archive::new(tar);
        ar.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let uid = e.header().uid().unwrap();
                (e.path().unwrap().display().to_string(), uid)
            })
            .collect()
    }

    #[test]
    fn plain_trees_are_named_pruned_and_owned_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("proc/self")).unwrap();
        fs::write(src.join("a file"), "x").unwrap();
        fs::write(src.join("proc/self/status"), "x").unwrap();
        std::os::unix::fs::symlink("a file", src.join("link")).unwrap();
        let tree = |source: &Path, name: &str, owner| {
            let mut w = LayerWriter::new(Vec::new());
            write_tree(
                source,
                Path::new(name),
                &[PathBuf::from("proc")],
                owner,
                &mut w,
            )
            .unwrap();
            tar_entries(&w.finish().unwrap())
        };
        let names = |v: Vec<(String, u64)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(
            names(tree(&src, "top", None)),
            ["top", "top/a file", "top/link", "top/proc"]
        );
        assert_eq!(names(tree(&src, "", None)), ["a file", "link", "proc"]);
        let single = tree(&src.join("a file"), "renamed", Some((7, 7)));
        assert_eq!(single, [("renamed".to_string(), 7)]);
    }
}
