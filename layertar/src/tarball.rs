//! Writing layer tars: entries with explicit metadata, whiteouts, opaque
//! directory markers, xattrs as PAX `SCHILY.xattr.*` records.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Owner, permissions and time of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time (Unix seconds).
    pub mtime: u64,
}

impl Meta {
    /// From a host file's metadata.
    pub fn of(m: &std::fs::Metadata) -> Meta {
        use std::os::unix::fs::MetadataExt;
        Meta {
            mode: m.mode() & 0o7777,
            uid: u64::from(m.uid()),
            gid: u64::from(m.gid()),
            mtime: m.mtime().max(0) as u64,
        }
    }
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A layer tar being written.
pub struct LayerWriter<W: Write> {
    builder: tar::Builder<W>,
    emitted: HashSet<PathBuf>,
}

fn header(kind: tar::EntryType, meta: &Meta, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode);
    h.set_uid(meta.uid);
    h.set_gid(meta.gid);
    h.set_mtime(meta.mtime);
    h.set_size(size);
    h
}

impl<W: Write> LayerWriter<W> {
    /// Starts a tar on `w`.
    pub fn new(w: W) -> Self {
        let mut builder = tar::Builder::new(w);
        builder.mode(tar::HeaderMode::Complete);
        LayerWriter {
            builder,
            emitted: HashSet::new(),
        }
    }

    /// Whether `path` already has an entry.
    pub fn has(&self, path: &Path) -> bool {
        self.emitted.contains(path)
    }

    fn xattrs(&mut self, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let records: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
            .collect();
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
    }

    /// A directory.
    pub fn dir(
        &mut self,
        path: &Path,
        meta: &Meta,
        xattrs: &[(String, Vec<u8>)],
    ) -> io::Result<()> {
        self.xattrs(xattrs)?;
        let mut h = header(tar::EntryType::Directory, meta, 0);
        self.builder.append_data(&mut h, path, io::empty())?;
        self.emitted.insert(path.to_path_buf());
        Ok(())
    }

    /// A regular file of `size` bytes read from `data`.
    pub fn file(
        &mut self,
        path: &Path,
        meta: &Meta,
        xattrs: &[(String, Vec<u8>)],
        size: u64,
        data: impl Read,
    ) -> io::Result<()> {
        self.xattrs(xattrs)?;
        let mut h = header(tar::EntryType::Regular, meta, size);
        // A file that shrank meanwhile must not leave a short entry.
        let mut exact = data.take(size).chain(io::repeat(0).take(size));
        let mut limited = (&mut exact).take(size);
        self.builder.append_data(&mut h, path, &mut limited)?;
        self.emitted.insert(path.to_path_buf());
        Ok(())
    }

    /// A symbolic link.
    pub fn symlink(&mut self, path: &Path, meta: &Meta, target: &Path) -> io::Result<()> {
        let mut h = header(tar::EntryType::Symlink, meta, 0);
        self.builder.append_link(&mut h, path, target)?;
        self.emitted.insert(path.to_path_buf());
        Ok(())
    }

    /// A hard link to an entry written before.
    pub fn hardlink(&mut self, path: &Path, meta: &Meta, target: &Path) -> io::Result<()> {
        let mut h = header(tar::EntryType::Link, meta, 0);
        self.builder.append_link(&mut h, path, target)?;
        self.emitted.insert(path.to_path_buf());
        Ok(())
    }

    /// A FIFO or device node.
    pub fn special(
        &mut self,
        path: &Path,
        kind: tar::EntryType,
        meta: &Meta,
        dev: (u32, u32),
    ) -> io::Result<()> {
        let mut h = header(kind, meta, 0);
        h.set_device_major(dev.0)?;
        h.set_device_minor(dev.1)?;
        self.builder.append_data(&mut h, path, io::empty())?;
        self.emitted.insert(path.to_path_buf());
        Ok(())
    }

    /// Deletes `path` (of lower layers): a `.wh.<name>` entry.
    pub fn whiteout(&mut self, path: &Path) -> io::Result<()> {
        let name = path.file_name().unwrap_or_default();
        let mut wh = std::ffi::OsString::from(".wh.");
        wh.push(name);
        let p = path.with_file_name(wh);
        let meta = Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let mut h = header(tar::EntryType::Regular, &meta, 0);
        self.builder.append_data(&mut h, &p, io::empty())
    }

    /// Hides everything lower layers have in directory `dir`.
    pub fn opaque(&mut self, dir: &Path) -> io::Result<()> {
        let meta = Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let mut h = header(tar::EntryType::Regular, &meta, 0);
        self.builder
            .append_data(&mut h, dir.join(".wh..wh..opq"), io::empty())
    }

    /// Ends the archive and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}
