//! `husk cp`, `husk export`, `husk diff` and `husk commit`'s layer: tar
//! streams and changes through the container's agent (protocol 9) — its
//! running VM's, or a maintenance VM's for a stopped container (see
//! `maintenance.rs`) — with Docker's path rules. The guest's tars are hostile input: before anything is
//! unpacked on the host, every entry must lie below the one name asked
//! for, whiteout names are refused, and the images' layer check runs;
//! the unpacking itself is the images' hardened extraction (no absolute
//! paths, no `..`, no links out of the destination, size-bounded).

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use husk_protocol::{ArchiveRequest, Change, ErrorCode, PathInfo, PathRequest};
use husk_sandbox::AgentError;
use images::layer::extract::{self, Mode};

use crate::maintenance::AgentLink;
use crate::{Error, Runtime};

/// Most bytes of a tar from or to a container.
pub const MAX_COPY_BYTES: u64 = 32 << 30;

/// One side of `husk cp` on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPath {
    /// `-`: a tar on stdin or stdout.
    Stream,
    /// A path on the host.
    Path(PathBuf),
}

/// `husk cp` flags.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyOptions {
    /// `-a`: keep owners (into the container; otherwise root owns what
    /// is copied in).
    pub archive: bool,
    /// `-L`: follow a symlink at the source path.
    pub follow_link: bool,
}

/// A source path in Docker's forms: `dir/.` copies a directory's
/// contents; trailing slashes are dropped.
struct Source<'a> {
    path: &'a str,
    contents: bool,
}

impl<'a> Source<'a> {
    fn parse(path: &'a str) -> Source<'a> {
        let contents = path == "." || path.ends_with("/.");
        let trimmed = path.strip_suffix('.').filter(|_| contents).unwrap_or(path);
        let trimmed = trimmed.trim_end_matches('/');
        Source {
            path: if trimmed.is_empty() && path.starts_with('/') {
                "/"
            } else if trimmed.is_empty() {
                "."
            } else {
                trimmed
            },
            contents,
        }
    }

    /// The name the copy's top entry gets by default.
    fn base_name(&self) -> String {
        Path::new(self.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

fn agent_err(e: AgentError) -> Error {
    match e {
        AgentError::Refused { detail, .. } => Error::Agent(detail),
        other => Error::Agent(crate::error_chain(&other)),
    }
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> Error {
    move |e| Error::Invalid(format!("{what}: {e}"))
}

/// What is at `path` in the container `link` reaches; `None` when nothing.
fn stat(link: &AgentLink<'_>, path: &str, follow_link: bool) -> Result<Option<PathInfo>, Error> {
    let req = PathRequest {
        path: path.to_string(),
        follow_link,
    };
    match link.connect()?.stat_path(req) {
        Ok(i) => Ok(Some(i)),
        Err(AgentError::Refused {
            code: ErrorCode::NotFound,
            ..
        }) => Ok(None),
        Err(e) => Err(agent_err(e)),
    }
}

impl Runtime {
    /// What is at `path` in container `name`; `None` when nothing. A
    /// stopped container is asked through a maintenance VM (as for every
    /// operation here: see `maintenance.rs`).
    pub fn stat_path(
        &self,
        name: &str,
        path: &str,
        follow_link: bool,
    ) -> Result<Option<PathInfo>, Error> {
        self.with_agent(name, |link| stat(link, path, follow_link))
    }

    /// `husk export`: the container's whole root (mounts left out) as a
    /// tar written to `out`; returns its size.
    pub fn export(&self, name: &str, out: &mut dyn Write) -> Result<u64, Error> {
        let req = ArchiveRequest {
            source: PathRequest {
                path: "/".into(),
                follow_link: false,
            },
            name: String::new(),
            skip_mounts: true,
        };
        self.with_agent(name, |link| {
            link.connect()?
                .archive_get(req, out, MAX_COPY_BYTES)
                .map_err(agent_err)
        })
    }

    /// `husk commit`: the container's changes as a layer tar, checked as
    /// hostile input (the images' layer rules), in an unnamed temporary
    /// file positioned at its start.
    pub fn changes_layer(&self, name: &str) -> Result<File, Error> {
        let mut tar = tempfile::tempfile().map_err(io_err("making a temporary file".into()))?;
        self.with_agent(name, |link| {
            link.connect()?
                .export_changes(&mut tar, MAX_COPY_BYTES)
                .map_err(agent_err)
        })?;
        tar.seek(SeekFrom::Start(0))
            .map_err(io_err("rewinding the tar".into()))?;
        images::layer::check(&mut tar, MAX_COPY_BYTES).map_err(|e| {
            Error::Invalid(format!(
                "refusing the container's changes: {}",
                crate::error_chain(&e)
            ))
        })?;
        tar.seek(SeekFrom::Start(0))
            .map_err(io_err("rewinding the tar".into()))?;
        Ok(tar)
    }

    /// `husk diff`: the container's changes to its image.
    pub fn diff(&self, name: &str) -> Result<Vec<Change>, Error> {
        self.with_agent(name, |link| link.connect()?.diff().map_err(agent_err))
    }

    /// `husk cp NAME:SRC DEST`.
    pub fn copy_from(
        &self,
        name: &str,
        src: &str,
        dest: &HostPath,
        opts: CopyOptions,
    ) -> Result<(), Error> {
        let source = Source::parse(src);
        if !source.path.starts_with('/') {
            return Err(Error::Invalid(format!(
                "{src}: the path in the container must be absolute"
            )));
        }
        let ask = |top: String| ArchiveRequest {
            source: PathRequest {
                path: source.path.to_string(),
                follow_link: opts.follow_link,
            },
            name: top,
            skip_mounts: false,
        };
        let fetched = self.with_agent(name, |link| {
            let info = stat(link, source.path, opts.follow_link)?.ok_or_else(|| {
                Error::Invalid(format!("Could not find the file {src} in container {name}"))
            })?;
            let dest = match dest {
                HostPath::Stream => {
                    let mut out = io::stdout().lock();
                    let req = ask(source.base_name());
                    link.connect()?
                        .archive_get(req, &mut out, MAX_COPY_BYTES)
                        .map_err(agent_err)?;
                    out.flush().map_err(io_err("writing stdout".into()))?;
                    return Ok(None);
                }
                HostPath::Path(p) => p,
            };
            let (dir, top) = host_target(dest, &source, info.dir)?;
            let mut tar = tempfile::tempfile().map_err(io_err("making a temporary file".into()))?;
            link.connect()?
                .archive_get(ask(top.clone()), &mut tar, MAX_COPY_BYTES)
                .map_err(agent_err)?;
            Ok(Some((tar, dir, top)))
        })?;
        match fetched {
            Some((tar, dir, top)) => unpack_guest_tar(tar, &dir, &top),
            None => Ok(()),
        }
    }

    /// `husk cp SRC NAME:DEST`.
    pub fn copy_into(
        &self,
        name: &str,
        src: &HostPath,
        dest: &str,
        opts: CopyOptions,
    ) -> Result<(), Error> {
        if !dest.starts_with('/') {
            return Err(Error::Invalid(format!(
                "{dest}: the path in the container must be absolute"
            )));
        }
        let put = |link: &AgentLink<'_>, dir: &str, tar: &mut dyn Read| {
            let req = PathRequest {
                path: dir.to_string(),
                follow_link: true,
            };
            link.connect()?.archive_put(req, tar).map_err(agent_err)
        };
        let src = match src {
            HostPath::Stream => {
                return self.with_agent(name, |link| {
                    if !stat(link, dest, true)?.is_some_and(|t| t.dir) {
                        return Err(Error::Invalid(format!(
                            "destination {name}:{dest} must be a directory"
                        )));
                    }
                    put(link, dest, &mut io::stdin().lock()).map(drop)
                });
            }
            HostPath::Path(p) => p.to_string_lossy().into_owned(),
        };
        let source = Source::parse(&src);
        let local = if opts.follow_link {
            fs::canonicalize(source.path)
        } else {
            fs::symlink_metadata(source.path).map(|_| PathBuf::from(source.path))
        }
        .map_err(io_err(src.clone()))?;
        let src_dir = fs::metadata(&local).is_ok_and(|m| m.is_dir())
            && (opts.follow_link || !fs::symlink_metadata(&local).is_ok_and(|m| m.is_symlink()));
        self.with_agent(name, |link| {
            let (dir, top) = match stat(link, dest, true)? {
                Some(t) if t.dir => {
                    let top = if source.contents && src_dir {
                        String::new()
                    } else {
                        source.base_name()
                    };
                    (dest.to_string(), top)
                }
                Some(_) if src_dir => {
                    return Err(Error::Invalid(format!(
                        "cannot copy directory {src} onto file {name}:{dest}"
                    )))
                }
                None if dest.ends_with('/') => {
                    return Err(Error::Invalid(format!("no such directory: {name}:{dest}")))
                }
                _ => {
                    let d = Path::new(dest);
                    let parent = d
                        .parent()
                        .map_or("/".into(), |p| p.to_string_lossy().into_owned());
                    let top = d
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if !stat(link, &parent, true)?.is_some_and(|p| p.dir) {
                        return Err(Error::Invalid(format!(
                            "no such directory: {name}:{parent}"
                        )));
                    }
                    (parent, top)
                }
            };
            let owner = (!opts.archive).then_some((0, 0));
            let mut tar = tempfile::tempfile().map_err(io_err("making a temporary file".into()))?;
            {
                let mut w = husk_layertar::tarball::LayerWriter::new(&mut tar);
                husk_layertar::upper::write_tree(&local, Path::new(&top), &[], owner, &mut w)
                    .map_err(|e| {
                        Error::Invalid(format!("reading {src}: {}", crate::error_chain(&e)))
                    })?;
                w.finish()
                    .map_err(io_err(format!("writing the tar of {src}")))?;
            }
            tar.seek(SeekFrom::Start(0))
                .map_err(io_err("rewinding the tar".into()))?;
            put(link, &dir, &mut tar)?;
            Ok(())
        })
    }
}

/// Where a copy out of the container lands on the host, Docker's way: into
/// an existing directory `dest` (as the source's name, or its contents for
/// `dir/.`), else as `dest` itself in its existing parent directory.
/// Returns the directory to unpack into and the tar's top name ("" for
/// contents).
fn host_target(
    dest: &Path,
    source: &Source<'_>,
    src_dir: bool,
) -> Result<(PathBuf, String), Error> {
    let shown = dest.display();
    match fs::metadata(dest) {
        Ok(m) if m.is_dir() => {
            let top = if source.contents && src_dir {
                String::new()
            } else {
                source.base_name()
            };
            Ok((dest.to_path_buf(), top))
        }
        Ok(_) if src_dir => Err(Error::Invalid(format!(
            "cannot copy a directory onto file {shown}"
        ))),
        Err(_) if dest.to_string_lossy().ends_with('/') => {
            Err(Error::Invalid(format!("no such directory: {shown}")))
        }
        _ => {
            let top = dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| Error::Invalid(format!("invalid destination {shown}")))?;
            let parent = match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !parent.is_dir() {
                return Err(Error::Invalid(format!(
                    "no such directory: {}",
                    parent.display()
                )));
            }
            Ok((parent, top))
        }
    }
}

/// Checks the guest's tar in `tar` and unpacks it into `dir`: every entry
/// must be `top` or below it (anything with an empty `top`), no entry may
/// be named like a whiteout, and the layer rules must hold.
fn unpack_guest_tar(mut tar: File, dir: &Path, top: &str) -> Result<(), Error> {
    let hostile =
        |what: String| Error::Invalid(format!("refusing the container's archive: {what}"));
    tar.seek(SeekFrom::Start(0))
        .map_err(io_err("rewinding the tar".into()))?;
    {
        let mut ar = tar::Archive::new(&mut tar);
        for entry in ar.entries().map_err(|e| hostile(e.to_string()))? {
            let entry = entry.map_err(|e| hostile(e.to_string()))?;
            let path = entry
                .path()
                .map_err(|e| hostile(e.to_string()))?
                .into_owned();
            let under_top = top.is_empty() || path.starts_with(top);
            let whiteout = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".wh."));
            if !under_top || whiteout {
                return Err(hostile(format!("unexpected entry {}", path.display())));
            }
        }
    }
    tar.seek(SeekFrom::Start(0))
        .map_err(io_err("rewinding the tar".into()))?;
    images::layer::check(&mut tar, MAX_COPY_BYTES).map_err(|e| hostile(crate::error_chain(&e)))?;
    tar.seek(SeekFrom::Start(0))
        .map_err(io_err("rewinding the tar".into()))?;
    extract::extract(&mut tar, dir, Mode::Apply, MAX_COPY_BYTES)
        .map_err(|e| hostile(crate::error_chain(&e)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        {
            let mut b = tar::Builder::new(&mut f);
            for (path, kind, link) in entries {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(*kind);
                h.set_mode(0o644);
                h.set_size(0);
                if kind.is_symlink() {
                    b.append_link(&mut h, path, link).unwrap();
                } else {
                    b.append_data(&mut h, path, io::empty()).unwrap();
                }
            }
            b.finish().unwrap();
        }
        f
    }

    #[test]
    fn source_forms_follow_docker() {
        let s = Source::parse("/etc/.");
        assert!(s.contents);
        assert_eq!(s.path, "/etc");
        let s = Source::parse("/etc/");
        assert!(!s.contents);
        assert_eq!(s.base_name(), "etc");
        assert_eq!(Source::parse("/").path, "/");
        assert_eq!(Source::parse("/a/.hidden").path, "/a/.hidden");
        assert!(!Source::parse("/a/.hidden").contents);
    }

    #[test]
    fn destinations_follow_docker() {
        let d = tempfile::tempdir().unwrap();
        let file = Source::parse("/x/f");
        let (dir, top) = host_target(d.path(), &file, false).unwrap();
        assert_eq!((dir.as_path(), top.as_str()), (d.path(), "f"));
        let new = d.path().join("g");
        let (dir, top) = host_target(&new, &file, false).unwrap();
        assert_eq!((dir.as_path(), top.as_str()), (d.path(), "g"));
        let contents = Source::parse("/x/.");
        let (_, top) = host_target(d.path(), &contents, true).unwrap();
        assert_eq!(top, "");
        fs::write(d.path().join("file"), "x").unwrap();
        assert!(host_target(&d.path().join("file"), &contents, true).is_err());
        let slash = PathBuf::from(format!("{}/missing/", d.path().display()));
        assert!(host_target(&slash, &file, false).is_err());
        assert!(host_target(&d.path().join("no/such"), &file, false).is_err());
    }

    #[test]
    fn hostile_guest_tars_are_refused() {
        use tar::EntryType::{Regular, Symlink};
        for bad in [
            tar_of(&[("other", Regular, "")]),
            tar_of(&[("t/.wh.x", Regular, "")]),
            tar_of(&[("t", Symlink, "/etc"), ("t/passwd", Regular, "")]),
            tar_of(&[("t", Regular, ""), ("t/x", Regular, "")]),
        ] {
            let d = tempfile::tempdir().unwrap();
            assert!(unpack_guest_tar(bad, d.path(), "t").is_err());
            assert!(!d.path().join("etc").exists());
        }
        let d = tempfile::tempdir().unwrap();
        let good = tar_of(&[("t", tar::EntryType::Directory, ""), ("t/a", Regular, "")]);
        unpack_guest_tar(good, d.path(), "t").unwrap();
        assert!(d.path().join("t/a").is_file());
    }
}
