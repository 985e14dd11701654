//! Safe extraction of a layer tar into a private staging directory.
//!
//! Paths are validated component by component: `..` and absolute paths are
//! rejected, and no symlink is ever followed (every parent is checked with
//! `lstat` to be a real directory inside the staging root; files are created
//! with `O_EXCL|O_NOFOLLOW`). The staging directory is private to this
//! process, so only the archive itself changes the tree while we work.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Errors from extraction.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The tar stream is malformed or truncated.
    #[error("reading layer tar")]
    Tar(#[source] io::Error),
    /// An entry path is absolute or escapes the layer.
    #[error("unsafe path in layer: {0:?}")]
    UnsafePath(String),
    /// An entry's parent is not a directory (e.g. a symlink).
    #[error("path {0:?} in layer goes through a non-directory (symlink?)")]
    NotADirectory(String),
    /// A hard link points outside the layer or at a missing entry.
    #[error("hard link {link:?} -> {target:?} in layer: {reason}")]
    BadHardLink {
        /// Link path.
        link: String,
        /// Target path.
        target: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// The entry data ends before its announced size.
    #[error("layer tar is truncated at {0:?}")]
    Truncated(String),
    /// The layer unpacks to more than the allowed size.
    #[error("layer unpacks to more than {0} bytes")]
    TooLarge(u64),
    /// The layer has more entries than allowed ([`MAX_ENTRIES`]).
    #[error("layer has more than {0} entries")]
    TooManyEntries(u64),
    /// Writing the extracted tree failed.
    #[error("extracting {path:?}")]
    Io {
        /// Entry path.
        path: String,
        /// OS error.
        #[source]
        source: io::Error,
    },
}

/// The most entries (files, directories, links, whiteouts) one layer may
/// have: what extraction remembers grows with them. Real images have up to
/// a few hundred thousand files in all layers together.
pub const MAX_ENTRIES: u64 = 1 << 20;

/// The most warnings a [`Report`] keeps; later ones are only counted.
pub const MAX_WARNINGS: usize = 100;

/// How whiteouts are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Keep the layer separate: `.wh.x` becomes a 0:0 char device `x`,
    /// `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` (overlayfs form).
    Overlay,
    /// Apply the layer onto what is already in the directory (flattening):
    /// whiteouts delete, opaque markers empty the directory's lower content.
    Apply,
}

/// What happened besides the files written.
#[derive(Debug, Default)]
pub struct Report {
    /// Entries skipped or altered, one line each (at most
    /// [`MAX_WARNINGS`], then a line counting the rest).
    pub warnings: Vec<String>,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Warnings left out of `warnings`.
    warnings_dropped: u64,
}

impl Report {
    fn warn(&mut self, line: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(line);
        } else {
            self.warnings_dropped += 1;
        }
    }

    fn finish(mut self) -> Report {
        if self.warnings_dropped > 0 {
            self.warnings
                .push(format!("... and {} more warnings", self.warnings_dropped));
        }
        self
    }
}

struct DirMeta {
    rel: Vec<OsString>,
    mode: u32,
    mtime: i64,
}

/// Extracts the tar stream `input` into `root` (an existing directory):
/// at most `max_bytes` of file content and [`MAX_ENTRIES`] entries.
pub fn extract(
    input: impl Read,
    root: &Path,
    mode: Mode,
    max_bytes: u64,
) -> Result<Report, ExtractError> {
    extract_bounded(input, root, mode, max_bytes, MAX_ENTRIES)
}

fn extract_bounded(
    input: impl Read,
    root: &Path,
    mode: Mode,
    max_bytes: u64,
    max_entries: u64,
) -> Result<Report, ExtractError> {
    let mut ex = Extractor {
        root: root.to_path_buf(),
        mode,
        max_bytes,
        report: Report::default(),
        dirs: Vec::new(),
        touched: HashSet::new(),
    };
    let mut archive = tar::Archive::new(input);
    for (n, entry) in archive.entries().map_err(ExtractError::Tar)?.enumerate() {
        if n as u64 >= max_entries {
            return Err(ExtractError::TooManyEntries(max_entries));
        }
        let mut entry = entry.map_err(ExtractError::Tar)?;
        ex.entry(&mut entry)?;
    }
    ex.finish_dirs()?;
    Ok(ex.report.finish())
}

struct Extractor {
    root: PathBuf,
    mode: Mode,
    max_bytes: u64,
    report: Report,
    dirs: Vec<DirMeta>,
    /// Paths (relative) this layer created or entered (for opaque dirs in Apply mode).
    touched: HashSet<PathBuf>,
}

pub(crate) fn display(rel: &[OsString]) -> String {
    let p: PathBuf = rel.iter().collect();
    p.to_string_lossy().into_owned()
}

/// Splits an entry path into safe components.
pub fn sanitize(path: &Path) -> Result<Vec<OsString>, ExtractError> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ExtractError::UnsafePath(
                    path.to_string_lossy().into_owned(),
                ))
            }
        }
    }
    Ok(out)
}

fn io_at(rel: &[OsString]) -> impl FnOnce(io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Io {
        path: display(rel),
        source,
    }
}

/// A whiteout's target name (after `.wh.`) must be one plain name.
/// A hard link entry: its path, and its target checked to stay inside
/// the layer (as sanitized components). The one reading of link targets
/// for both extraction and [`super::check`].
pub(crate) struct HardLink {
    /// The link's own path, for errors.
    link: String,
    /// The target as the tar names it, for errors.
    raw: PathBuf,
    /// The target's components below the layer root.
    pub(crate) target: Vec<OsString>,
}

impl HardLink {
    /// Reads the target of entry `e` (at `rel`); a target that escapes the
    /// layer is refused.
    pub(crate) fn read<R: Read>(
        e: &mut tar::Entry<'_, R>,
        rel: &[OsString],
    ) -> Result<HardLink, ExtractError> {
        let raw = e
            .link_name()
            .map_err(ExtractError::Tar)?
            .ok_or_else(|| ExtractError::UnsafePath(display(rel)))?
            .into_owned();
        let mut link = HardLink {
            link: display(rel),
            raw,
            target: Vec::new(),
        };
        link.target = sanitize(&link.raw).map_err(|_| link.refuse("target escapes the layer"))?;
        Ok(link)
    }

    /// The error refusing this link for `reason`.
    pub(crate) fn refuse(&self, reason: &'static str) -> ExtractError {
        ExtractError::BadHardLink {
            link: self.link.clone(),
            target: self.raw.to_string_lossy().into_owned(),
            reason,
        }
    }
}

pub(crate) fn check_whiteout(parents: &[OsString], target: &[u8]) -> Result<(), ExtractError> {
    if target.is_empty() || target == b"." || target == b".." || target.contains(&b'/') {
        return Err(ExtractError::UnsafePath(format!(
            "{}/.wh.{}",
            display(parents),
            String::from_utf8_lossy(target)
        )));
    }
    Ok(())
}

/// An entry's owner, which must fit a Linux uid and gid.
pub(crate) fn owner(h: &tar::Header, rel: &[OsString]) -> Result<(u32, u32), ExtractError> {
    // Like Go's archive/tar, an empty numeric field reads as 0.
    let num = |f: &[u8], v: std::io::Result<u64>| {
        if f.iter().all(|b| *b == 0 || *b == b' ') {
            Ok(0)
        } else {
            v.map_err(ExtractError::Tar)
        }
    };
    let uid = num(&h.as_old().uid, h.uid())?;
    let gid = num(&h.as_old().gid, h.gid())?;
    match (u32::try_from(uid), u32::try_from(gid)) {
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => Err(ExtractError::UnsafePath(format!(
            "{} (owner out of range)",
            display(rel)
        ))),
    }
}

/// `lsetxattr` without following symlinks.
pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::lsetxattr(
        path,
        name,
        value,
        rustix::fs::XattrFlags::empty(),
    )?)
}

fn set_mtime(path: &Path, mtime: i64) -> io::Result<()> {
    let ts = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    Ok(rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// Makes a special file of `kind` (device 0:0).
fn mknod(path: &Path, kind: rustix::fs::FileType, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        kind,
        rustix::fs::Mode::from_raw_mode(mode),
        rustix::fs::makedev(0, 0),
    )?)
}

/// Removes whatever is at `path` (not following symlinks).
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Extractor {
    /// Walks `parents` from the root: each must be a real directory; missing
    /// ones are created (0755) when `create`.
    fn parent_dir(&mut self, parents: &[OsString], create: bool) -> Result<PathBuf, ExtractError> {
        let mut p = self.root.clone();
        let mut rel = PathBuf::new();
        for c in parents {
            p.push(c);
            rel.push(c);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(ExtractError::NotADirectory(display(parents))),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&p).map_err(io_at(parents))?;
                    fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                        .map_err(io_at(parents))?;
                }
                Err(e) => return Err(io_at(parents)(e)),
            }
            self.touched.insert(rel.clone());
        }
        Ok(p)
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<(), ExtractError> {
        let path = e.path().map_err(ExtractError::Tar)?.into_owned();
        let rel = sanitize(&path)?;
        let kind = e.header().entry_type();
        let Some((name, parents)) = rel.split_last() else {
            // The layer root itself ("./").
            if kind.is_dir() {
                let mode = e.header().mode().map_err(ExtractError::Tar)?;
                let mtime = e.header().mtime().unwrap_or(0) as i64;
                self.owner_and_xattrs(e, &self.root.clone(), &rel)?;
                self.dirs.push(DirMeta { rel, mode, mtime });
            }
            return Ok(());
        };
        let name_bytes = name.as_bytes();
        if let Some(target) = name_bytes.strip_prefix(b".wh.") {
            return self.whiteout(parents, target);
        }
        let parent = self.parent_dir(parents, true)?;
        let dest = parent.join(name);
        self.touched.insert(rel.iter().collect());
        use tar::EntryType as T;
        match kind {
            T::Directory => self.directory(e, &dest, rel),
            T::Regular | T::Continuous | T::GNUSparse => self.regular(e, &dest, &rel),
            T::Symlink => self.symlink(e, &dest, &rel),
            T::Link => self.hard_link(e, &dest, &rel),
            T::Fifo => {
                remove_any(&dest).map_err(io_at(&rel))?;
                mknod(&dest, rustix::fs::FileType::Fifo, 0o600).map_err(io_at(&rel))?;
                self.metadata(e, &dest, &rel, true)
            }
            T::Char | T::Block => {
                self.report
                    .warnings
                    .push(format!("skipped device node {}", display(&rel)));
                Ok(())
            }
            other => {
                self.report
                    .warnings
                    .push(format!("skipped {} (tar type {other:?})", display(&rel)));
                Ok(())
            }
        }
    }

    fn whiteout(&mut self, parents: &[OsString], target: &[u8]) -> Result<(), ExtractError> {
        let parent = self.parent_dir(parents, true)?;
        if target == b".wh..opq" {
            return match self.mode {
                Mode::Overlay => {
                    set_xattr(&parent, "trusted.overlay.opaque", b"y").map_err(io_at(parents))
                }
                Mode::Apply => self.clear_lower(&parent, parents),
            };
        }
        if target.starts_with(b".wh.") {
            // Other AUFS metadata (.wh..wh.plnk, ...): meaningless here.
            return Ok(());
        }
        check_whiteout(parents, target)?;
        let dest = parent.join(OsStr::from_bytes(target));
        let mut rel = parents.to_vec();
        rel.push(OsStr::from_bytes(target).to_os_string());
        remove_any(&dest).map_err(io_at(&rel))?;
        if self.mode == Mode::Overlay {
            mknod(&dest, rustix::fs::FileType::CharacterDevice, 0).map_err(io_at(&rel))?;
        }
        Ok(())
    }

    /// Apply mode: an opaque directory hides everything lower layers put in it.
    fn clear_lower(&mut self, dir: &Path, rel: &[OsString]) -> Result<(), ExtractError> {
        let base: PathBuf = rel.iter().collect();
        for child in fs::read_dir(dir).map_err(io_at(rel))? {
            let child = child.map_err(io_at(rel))?;
            if !self.touched.contains(&base.join(child.file_name())) {
                remove_any(&child.path()).map_err(io_at(rel))?;
            }
        }
        Ok(())
    }

    fn directory<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        dest: &Path,
        rel: Vec<OsString>,
    ) -> Result<(), ExtractError> {
        match fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => {}
            _ => {
                remove_any(dest).map_err(io_at(&rel))?;
                fs::create_dir(dest).map_err(io_at(&rel))?;
            }
        }
        fs::set_permissions(dest, fs::Permissions::from_mode(0o700)).map_err(io_at(&rel))?;
        self.owner_and_xattrs(e, dest, &rel)?;
        let mode = e.header().mode().map_err(ExtractError::Tar)?;
        let mtime = e.header().mtime().unwrap_or(0) as i64;
        self.dirs.push(DirMeta { rel, mode, mtime });
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        dest: &Path,
        rel: &[OsString],
    ) -> Result<(), ExtractError> {
        remove_any(dest).map_err(io_at(rel))?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(dest)
            .map_err(io_at(rel))?;
        let want = e.size();
        let room = self.max_bytes.saturating_sub(self.report.bytes);
        if want > room {
            return Err(ExtractError::TooLarge(self.max_bytes));
        }
        let n = io::copy(e, &mut f).map_err(|err| match err.kind() {
            io::ErrorKind::UnexpectedEof => ExtractError::Truncated(display(rel)),
            _ => ExtractError::Tar(err),
        })?;
        if n != want {
            return Err(ExtractError::Truncated(display(rel)));
        }
        self.report.bytes += n;
        drop(f);
        self.metadata(e, dest, rel, true)
    }

    fn symlink<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        dest: &Path,
        rel: &[OsString],
    ) -> Result<(), ExtractError> {
        let target = e
            .link_name()
            .map_err(ExtractError::Tar)?
            .ok_or_else(|| ExtractError::UnsafePath(display(rel)))?
            .into_owned();
        remove_any(dest).map_err(io_at(rel))?;
        // The target is stored verbatim and never followed here; inside the
        // VM it resolves within the container's root.
        std::os::unix::fs::symlink(&target, dest).map_err(io_at(rel))?;
        self.metadata(e, dest, rel, false)
    }

    fn hard_link<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        dest: &Path,
        rel: &[OsString],
    ) -> Result<(), ExtractError> {
        let link = HardLink::read(e, rel)?;
        let bad = |reason| link.refuse(reason);
        let trel = &link.target;
        let Some((tname, tparents)) = trel.split_last() else {
            return Err(bad("target is the layer root"));
        };
        let tparent = self
            .parent_dir(tparents, false)
            .map_err(|_| bad("target is not in the layer"))?;
        let src = tparent.join(tname);
        match fs::symlink_metadata(&src) {
            Ok(m) if m.is_dir() => return Err(bad("target is a directory")),
            Ok(_) => {}
            Err(_) => return Err(bad("target is not in the layer")),
        }
        if src == dest {
            return Ok(());
        }
        remove_any(dest).map_err(io_at(rel))?;
        // std's hard_link uses linkat(..., 0): a symlink source is linked itself.
        fs::hard_link(&src, dest).map_err(io_at(rel))
    }

    fn owner_and_xattrs<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        dest: &Path,
        rel: &[OsString],
    ) -> Result<(), ExtractError> {
        let (uid, gid) = owner(e.header(), rel)?;
        std::os::unix::fs::lchown(dest, Some(uid), Some(gid)).map_err(io_at(rel))?;
        let mut xattrs = Vec::new();
        if let Some(exts) = e.pax_extensions().map_err(ExtractError::Tar)? {
            for ext in exts {
                let ext = ext.map_err(ExtractError::Tar)?;
                if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        for (name, value) in xattrs {
            if name.starts_with("user.") || name.starts_with("security.") {
                match set_xattr(dest, &name, &value) {
                    Ok(()) => {}
                    Err(e)
                        if e.raw_os_error()
                            == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) =>
                    {
                        self.report.warn(format!(
                            "xattr {name} on {} not supported by the store's filesystem",
                            display(rel)
                        ));
                    }
                    Err(e) => return Err(io_at(rel)(e)),
                }
            } else {
                self.report
                    .warn(format!("dropped xattr {name} on {}", display(rel)));
            }
        }
        Ok(())
    }

    fn metadata<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        dest: &Path,
        rel: &[OsString],
        chmod: bool,
    ) -> Result<(), ExtractError> {
        self.owner_and_xattrs(e, dest, rel)?;
        if chmod {
            // After chown, which clears set-id bits.
            let mode = e.header().mode().map_err(ExtractError::Tar)? & 0o7777;
            fs::set_permissions(dest, fs::Permissions::from_mode(mode)).map_err(io_at(rel))?;
        }
        let mtime = e.header().mtime().unwrap_or(0) as i64;
        set_mtime(dest, mtime).map_err(io_at(rel))
    }

    /// Directory modes and times last (children change mtimes; a 0555 dir
    /// must stay writable while filled). Paths are re-checked for symlinks.
    fn finish_dirs(&mut self) -> Result<(), ExtractError> {
        let dirs = std::mem::take(&mut self.dirs);
        for d in dirs.iter().rev() {
            let Some((_, parents)) = d.rel.split_last() else {
                fs::set_permissions(&self.root, fs::Permissions::from_mode(d.mode & 0o7777))
                    .map_err(io_at(&d.rel))?;
                set_mtime(&self.root, d.mtime).map_err(io_at(&d.rel))?;
                continue;
            };
            let Ok(parent) = self.parent_dir(parents, false) else {
                continue; // removed by a later entry
            };
            let p = parent.join(&d.rel[d.rel.len() - 1]);
            match fs::symlink_metadata(&p) {
                Ok(m)
                    if m.is_dir()
                        && rustix::fs::FileType::from_raw_mode(m.mode())
                            == rustix::fs::FileType::Directory =>
                {
                    fs::set_permissions(&p, fs::Permissions::from_mode(d.mode & 0o7777))
                        .map_err(io_at(&d.rel))?;
                    set_mtime(&p, d.mtime).map_err(io_at(&d.rel))?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of `n` empty regular files.
    fn files(n: usize) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..n {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, format!("f{i}"), io::empty()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn the_entry_count_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ok = extract_bounded(&files(3)[..], dir.path(), Mode::Overlay, 1 << 20, 3);
        assert!(ok.is_ok(), "{ok:?}");
        let dir = tempfile::tempdir().unwrap();
        let err =
            extract_bounded(&files(4)[..], dir.path(), Mode::Overlay, 1 << 20, 3).unwrap_err();
        assert!(matches!(err, ExtractError::TooManyEntries(3)), "{err:?}");
        assert_eq!(err.to_string(), "layer has more than 3 entries");
    }

    #[test]
    fn warnings_are_bounded_and_the_rest_counted() {
        let mut r = Report::default();
        for i in 0..MAX_WARNINGS + 5 {
            r.warn(format!("w{i}"));
        }
        let r = r.finish();
        assert_eq!(r.warnings.len(), MAX_WARNINGS + 1);
        assert_eq!(r.warnings.last().unwrap(), "... and 5 more warnings");
    }
}
