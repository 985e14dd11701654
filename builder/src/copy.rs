//! COPY and ADD as a layer tar, written on the host: sources from a
//! [`SourceTree`], destinations resolved against the image's root
//! filesystem (mounted read-only, so symlinks such as `/bin -> usr/bin` are
//! followed as they would be in the container), missing parent directories
//! created, existing ones kept as they are. ADD extracts local tar
//! archives (plain, gzip, zstd).

use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::context::{Source, SourceError, SourceTree};
use crate::rootpath;
use crate::tarball::{now, LayerWriter, Meta};

/// Errors writing a COPY/ADD layer.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A source problem.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Several sources need a directory destination.
    #[error("when using {0} with more than one source file, the destination must be a directory and end with a /")]
    NeedsDirectory(&'static str),
    /// A name that would act as a whiteout.
    #[error("cannot copy {0:?}: names starting with .wh. are reserved for layer whiteouts")]
    Reserved(String),
    /// An archive entry escapes the destination.
    #[error("unsafe path {0:?} in archive")]
    UnsafePath(String),
    /// Reading or writing failed.
    #[error("{path}")]
    Io {
        /// What was read or written.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_at(p: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: p.display().to_string(),
        source,
    }
}

/// What to copy where.
#[derive(Debug)]
pub struct CopyPlan<'a> {
    /// `COPY` or `ADD` (for messages).
    pub what: &'static str,
    /// Where sources come from.
    pub tree: SourceTree<'a>,
    /// Resolved sources.
    pub sources: Vec<Source>,
    /// Absolute destination in the image (workdir applied).
    pub dest: String,
    /// `--chown` as numbers.
    pub owner: Option<(u64, u64)>,
    /// `--chmod`.
    pub chmod: Option<u32>,
    /// ADD: extract local archives.
    pub extract: bool,
}

struct Writer<'a, W: Write> {
    out: &'a mut LayerWriter<W>,
    /// The image's root filesystem.
    rootfs: &'a Path,
    owner: Option<(u64, u64)>,
    chmod: Option<u32>,
    time: u64,
}

/// Writes the layer for `plan` over the image whose root is `rootfs`.
pub fn write_layer<W: Write>(
    plan: &CopyPlan<'_>,
    rootfs: &Path,
    out: &mut LayerWriter<W>,
) -> Result<(), CopyError> {
    let dest_is_dir = plan.dest.ends_with('/');
    if plan.sources.len() > 1 && !dest_is_dir {
        return Err(CopyError::NeedsDirectory(plan.what));
    }
    let mut w = Writer {
        out,
        rootfs,
        owner: plan.owner,
        chmod: plan.chmod,
        time: now(),
    };
    let dest = Path::new(&plan.dest);
    for src in &plan.sources {
        let host = plan.tree.root.join(&src.rel);
        if src.is_dir {
            let target = w.ensure_dir(dest)?;
            for e in plan.tree.walk(&src.rel)? {
                w.entry(
                    &target.join(&e.inside),
                    &plan.tree.root.join(&e.rel),
                    &e.meta,
                )?;
            }
            continue;
        }
        if plan.extract {
            if let Some(reader) = archive_reader(&host)? {
                let target = w.ensure_dir(dest)?;
                w.extract(reader, &target)?;
                continue;
            }
        }
        let into_dir = dest_is_dir || w.is_dir(dest);
        let target = if into_dir {
            w.ensure_dir(dest)?.join(&src.name)
        } else {
            w.place(dest)?
        };
        let meta = fs::metadata(&host).map_err(io_at(&src.rel))?;
        w.entry(&target, &host, &meta)?;
    }
    Ok(())
}

impl<W: Write> Writer<'_, W> {
    /// Whether `path` is a directory in the image (after symlinks).
    fn is_dir(&self, path: &Path) -> bool {
        rootpath::resolve(self.rootfs, path, true).is_ok_and(|r| self.rootfs.join(r).is_dir())
    }

    /// The layer path for `path`: its parent resolved in the image (and
    /// written as directory entries), its own name kept.
    fn place(&mut self, path: &Path) -> Result<PathBuf, CopyError> {
        let name = path.file_name().unwrap_or_default().to_os_string();
        let parent = path.parent().unwrap_or(Path::new("/"));
        let parent = self.ensure_dir(parent)?;
        if name.is_empty() {
            return Ok(parent);
        }
        Ok(parent.join(name))
    }

    /// Resolves directory `path` in the image and writes entries for it and
    /// its ancestors: existing ones with their metadata, missing ones new.
    fn ensure_dir(&mut self, path: &Path) -> Result<PathBuf, CopyError> {
        let rel = rootpath::resolve(self.rootfs, path, true).map_err(io_at(path))?;
        let mut at = PathBuf::new();
        for c in rel.components() {
            at.push(c);
            if self.out.has(&at) {
                continue;
            }
            let meta = match fs::symlink_metadata(self.rootfs.join(&at)) {
                Ok(m) if m.is_dir() => Meta::of(&m),
                _ => {
                    let (uid, gid) = self.owner.unwrap_or((0, 0));
                    Meta {
                        mode: 0o755,
                        uid,
                        gid,
                        mtime: self.time,
                    }
                }
            };
            self.out.dir(&at, &meta, &[]).map_err(io_at(&at))?;
        }
        Ok(rel)
    }

    fn meta(&self, m: &fs::Metadata) -> Meta {
        let mut meta = Meta::of(m);
        let (uid, gid) = self.owner.unwrap_or((0, 0));
        meta.uid = uid;
        meta.gid = gid;
        if let Some(mode) = self.chmod {
            meta.mode = mode;
        }
        meta
    }

    /// Writes one source entry (`host`, lstat `m`) at layer path `target`.
    fn entry(&mut self, target: &Path, host: &Path, m: &fs::Metadata) -> Result<(), CopyError> {
        reserved(target)?;
        let meta = self.meta(m);
        let ft = m.file_type();
        if ft.is_dir() {
            // An existing directory (or symlink to one) takes the source's metadata.
            let at = rootpath::resolve(self.rootfs, target, true).map_err(io_at(target))?;
            self.ensure_dir(at.parent().unwrap_or(Path::new("")))?;
            return self.out.dir(&at, &meta, &[]).map_err(io_at(&at));
        }
        let target = self.place(target)?;
        if ft.is_symlink() {
            let link = fs::read_link(host).map_err(io_at(host))?;
            return self
                .out
                .symlink(&target, &meta, &link)
                .map_err(io_at(&target));
        }
        if ft.is_file() {
            let f = fs::File::open(host).map_err(io_at(host))?;
            return self
                .out
                .file(&target, &meta, &[], m.len(), BufReader::new(f))
                .map_err(io_at(&target));
        }
        if std::os::unix::fs::FileTypeExt::is_fifo(&ft) {
            return self
                .out
                .special(&target, tar::EntryType::Fifo, &meta, (0, 0))
                .map_err(io_at(&target));
        }
        log::warn!(
            "skipping {} (devices and sockets are not copied)",
            host.display()
        );
        Ok(())
    }

    /// Extracts an archive's entries below `dir` (a resolved layer path).
    fn extract(&mut self, reader: Box<dyn Read>, dir: &Path) -> Result<(), CopyError> {
        let mut ar = tar::Archive::new(reader);
        let entries = ar.entries().map_err(io_at(dir))?;
        for e in entries {
            let mut e = e.map_err(io_at(dir))?;
            let raw = e.path().map_err(io_at(dir))?.into_owned();
            let parts = images::layer::extract::sanitize(&raw)
                .map_err(|_| CopyError::UnsafePath(raw.display().to_string()))?;
            if parts.is_empty() {
                continue;
            }
            let inside: PathBuf = parts.iter().collect();
            if reserved(&inside).is_err() {
                log::warn!(
                    "skipping {} in archive (reserved whiteout name)",
                    inside.display()
                );
                continue;
            }
            let h = e.header();
            let mut meta = Meta {
                mode: h.mode().map_err(io_at(&inside))? & 0o7777,
                uid: h.uid().map_err(io_at(&inside))?,
                gid: h.gid().map_err(io_at(&inside))?,
                mtime: h.mtime().unwrap_or(0),
            };
            if let Some((uid, gid)) = self.owner {
                meta.uid = uid;
                meta.gid = gid;
            }
            if let Some(mode) = self.chmod {
                meta.mode = mode;
            }
            let kind = h.entry_type();
            let target = dir.join(&inside);
            use tar::EntryType as T;
            match kind {
                T::Directory => {
                    let at =
                        rootpath::resolve(self.rootfs, &target, true).map_err(io_at(&target))?;
                    self.ensure_dir(at.parent().unwrap_or(Path::new("")))?;
                    self.out.dir(&at, &meta, &[]).map_err(io_at(&at))?;
                }
                T::Regular | T::Continuous => {
                    let at = self.place(&target)?;
                    let size = e.size();
                    self.out
                        .file(&at, &meta, &[], size, &mut e)
                        .map_err(io_at(&at))?;
                }
                T::Symlink => {
                    let link = e
                        .link_name()
                        .map_err(io_at(&inside))?
                        .unwrap_or_default()
                        .into_owned();
                    let at = self.place(&target)?;
                    self.out.symlink(&at, &meta, &link).map_err(io_at(&at))?;
                }
                T::Link => {
                    let link = e
                        .link_name()
                        .map_err(io_at(&inside))?
                        .unwrap_or_default()
                        .into_owned();
                    let lparts = images::layer::extract::sanitize(&link)
                        .map_err(|_| CopyError::UnsafePath(link.display().to_string()))?;
                    let to = dir.join(lparts.iter().collect::<PathBuf>());
                    let at = self.place(&target)?;
                    self.out.hardlink(&at, &meta, &to).map_err(io_at(&at))?;
                }
                T::Fifo | T::Char | T::Block => {
                    let dev = (
                        h.device_major().ok().flatten().unwrap_or(0),
                        h.device_minor().ok().flatten().unwrap_or(0),
                    );
                    let at = self.place(&target)?;
                    self.out
                        .special(&at, kind, &meta, dev)
                        .map_err(io_at(&at))?;
                }
                _ => log::warn!(
                    "skipping {} in archive (tar type {kind:?})",
                    inside.display()
                ),
            }
        }
        Ok(())
    }
}

fn reserved(path: &Path) -> Result<(), CopyError> {
    let name = path.file_name().unwrap_or_default();
    if name.as_encoded_bytes().starts_with(b".wh.") {
        return Err(CopyError::Reserved(name.to_string_lossy().into_owned()));
    }
    Ok(())
}

/// If `path` is a tar archive (plain, gzip or zstd), a reader of the
/// uncompressed tar.
fn archive_reader(path: &Path) -> Result<Option<Box<dyn Read>>, CopyError> {
    let open = || fs::File::open(path).map_err(io_at(path));
    let (_, mut plain) =
        images::compress::decompress(BufReader::new(open()?)).map_err(io_at(path))?;
    let mut head = [0u8; 512];
    let mut got = 0;
    while got < head.len() {
        match plain.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            // Not decompressible after all: a plain file.
            Err(_) => return Ok(None),
        }
    }
    if got < 512 || &head[257..262] != b"ustar" {
        return Ok(None);
    }
    let (_, plain) = images::compress::decompress(BufReader::new(open()?)).map_err(io_at(path))?;
    Ok(Some(plain))
}

/// Whether `name` looks like a URL (ADD from URLs is not supported).
pub fn is_url(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("git@")
}

/// Parses `--chmod` (octal).
pub fn parse_chmod(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("invalid --chmod value {s:?}: must be octal, e.g. 755"))
}
