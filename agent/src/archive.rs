//! `husk cp` and `husk export` (protocol 9): tars of the container's
//! root to the host (`ArchiveGet`, written by the shared tree walker
//! [`husk_layertar::upper::write_tree`] and sent in bounded chunks like a
//! build layer) and tars from the host unpacked into it (`ArchivePut`).
//! Paths are resolved inside the container's root the way a process in it
//! sees them ([`resolve_in_root`]), so symlinks cannot lead out of it.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::event::{PollFd, PollFlags};

use husk_protocol::{
    ArchiveRequest, ErrorCode, FrameDecoder, Message, PathInfo, PathRequest, MAX_CHUNK,
};

use crate::boot::ConnError;
use crate::spec::resolve_in_root;

/// Where `req` is in the agent's view of the container's `root`: every
/// component resolved inside the root, the last one only when it is
/// followed (`-L`) or the root itself.
pub fn locate(root: &Path, req: &PathRequest) -> Result<PathBuf, (ErrorCode, String)> {
    let bad = |d: String| (ErrorCode::BadRequest, d);
    if !req.path.starts_with('/') || req.path.contains('\0') {
        return Err(bad(format!("{:?} is not an absolute path", req.path)));
    }
    let trimmed = req.path.trim_end_matches('/');
    let (parent, name) = match trimmed.rsplit_once('/') {
        Some((p, n)) if !req.follow_link && !n.is_empty() && n != "." && n != ".." => (p, n),
        _ => return resolve_in_root(root, &req.path).map_err(|e| bad(e.0)),
    };
    let parent = if parent.is_empty() { "/" } else { parent };
    Ok(resolve_in_root(root, parent)
        .map_err(|e| bad(e.0))?
        .join(name))
}

/// What is at `req` (`StatPath`).
pub fn stat(root: &Path, req: &PathRequest) -> Message {
    let path = match locate(root, req) {
        Ok(p) => p,
        Err((code, detail)) => return Message::Error { code, detail },
    };
    match fs::symlink_metadata(&path) {
        Ok(m) => Message::PathInfo(PathInfo {
            dir: m.is_dir(),
            mode: m.mode(),
            size: m.len(),
        }),
        Err(e) => Message::Error {
            code: ErrorCode::NotFound,
            detail: format!("{}: {e}", req.path),
        },
    }
}

/// Sends the tar of `req` (`ArchiveGet`): chunks and `LayerEnd`, or an
/// `Error`. Only a failing connection is an error here.
pub fn send<C: Write>(conn: &mut C, root: &Path, req: &ArchiveRequest) -> Result<(), ConnError> {
    let source = match locate(root, &req.source) {
        Ok(p) => p,
        Err((code, detail)) => {
            return Ok(husk_protocol::write_message(
                conn,
                &Message::Error { code, detail },
            )?)
        }
    };
    if let Err(e) = fs::symlink_metadata(&source) {
        let detail = format!("{}: {e}", req.source.path);
        let msg = Message::Error {
            code: ErrorCode::NotFound,
            detail,
        };
        return Ok(husk_protocol::write_message(conn, &msg)?);
    }
    let pruned = pruned(root, &source, req.skip_mounts);
    let name = PathBuf::from(&req.name);
    crate::export::send_tar(conn, "archive", |w| {
        husk_layertar::upper::write_tree(&source, &name, &pruned, None, w)
            .map(|_| ())
            .map_err(|e| crate::chain(&e))
    })
}

/// The directories below `source` whose contents a tar leaves out,
/// relative to it: the root's /proc, /sys and /dev always, and with
/// `all_mounts` every mount point (volumes, tmpfs mounts).
fn pruned(root: &Path, source: &Path, all_mounts: bool) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ["proc", "sys", "dev"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    if all_mounts {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        dirs.extend(
            mountinfo
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .map(|p| PathBuf::from(unescape(p))),
        );
    }
    dirs.iter()
        .filter_map(|d| d.strip_prefix(source).ok())
        .filter(|rel| !rel.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .collect()
}

/// A mountinfo path with its octal escapes (`\040` for a space) undone.
fn unescape(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The tar the host sends after `ArchivePut`: the `LayerChunk`s up to
/// `LayerEnd`, read from messages already decoded, then from the
/// connection.
pub struct Incoming<'a, C: Read + AsFd> {
    conn: &'a mut C,
    decoder: &'a mut FrameDecoder,
    pending: VecDeque<Message>,
    chunk: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl<'a, C: Read + AsFd> Incoming<'a, C> {
    /// The stream that starts with `pending`.
    pub fn new(conn: &'a mut C, decoder: &'a mut FrameDecoder, pending: Vec<Message>) -> Self {
        Incoming {
            conn,
            decoder,
            pending: pending.into(),
            chunk: Vec::new(),
            pos: 0,
            ended: false,
        }
    }

    fn next_message(&mut self) -> io::Result<Message> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Ok(m);
            }
            if let Some(m) = self.decoder.next_message().map_err(io::Error::other)? {
                return Ok(m);
            }
            let mut buf = vec![0u8; MAX_CHUNK];
            match self.conn.read(&mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut fds = [PollFd::new(self.conn, PollFlags::IN)];
                    rustix::event::poll(&mut fds, None).map_err(io::Error::from)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads what is left of the stream up to `LayerEnd`.
    pub fn drain(&mut self) -> io::Result<()> {
        let mut sink = [0u8; 8192];
        while self.read(&mut sink)? > 0 {}
        Ok(())
    }
}

impl<C: Read + AsFd> Read for Incoming<'_, C> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.next_message()? {
                Message::LayerChunk(b) => {
                    self.chunk = b;
                    self.pos = 0;
                }
                Message::LayerEnd { .. } => self.ended = true,
                other => {
                    return Err(io::Error::other(format!(
                        "expected the archive, got {}",
                        crate::boot::variant(&other)
                    )))
                }
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Unpacks the tar of `input` into the directory at `req` of the root
/// (`ArchivePut`): owners, modes and times as the tar says; entries that
/// would land outside the directory (`..`, through a symlink) are
/// refused by the unpacker. Answers `Ok` or an `Error`.
pub fn receive<C: Read + AsFd>(
    root: &Path,
    req: &PathRequest,
    input: &mut Incoming<'_, C>,
) -> Message {
    let result = locate(root, req).and_then(|dir| {
        if !dir.is_dir() {
            return Err((
                ErrorCode::NotFound,
                format!("{}: not a directory", req.path),
            ));
        }
        let mut ar = tar::Archive::new(&mut *input);
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.set_preserve_mtime(true);
        ar.set_overwrite(true);
        ar.unpack(&dir).map_err(|e| {
            (
                ErrorCode::Internal,
                format!("unpacking into {}: {e}", req.path),
            )
        })
    });
    // The rest of the stream must be read either way: the connection
    // stays in step.
    let drained = input.drain();
    match (result, drained) {
        (Ok(()), Ok(())) => Message::Ok,
        (Err((code, detail)), _) => Message::Error { code, detail },
        (Ok(()), Err(e)) => Message::Error {
            code: ErrorCode::BadRequest,
            detail: format!("reading the archive: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_root_and_links_are_kept_unless_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("d")).unwrap();
        std::os::unix::fs::symlink("/d", root.join("l")).unwrap();
        std::os::unix::fs::symlink("/", root.join("up")).unwrap();
        let req = |path: &str, follow_link| PathRequest {
            path: path.into(),
            follow_link,
        };
        assert_eq!(locate(root, &req("/l", false)).unwrap(), root.join("l"));
        assert_eq!(locate(root, &req("/l", true)).unwrap(), root.join("d"));
        assert_eq!(locate(root, &req("/up/d", false)).unwrap(), root.join("d"));
        assert_eq!(locate(root, &req("/", false)).unwrap(), root.to_path_buf());
        assert!(locate(root, &req("rel", false)).is_err());
        assert!(matches!(
            stat(root, &req("/l", true)),
            Message::PathInfo(PathInfo { dir: true, .. })
        ));
        assert!(matches!(
            stat(root, &req("/missing", false)),
            Message::Error {
                code: ErrorCode::NotFound,
                ..
            }
        ));
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
