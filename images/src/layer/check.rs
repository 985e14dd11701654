//! Checking a layer tar before it is stored, without unpacking it: the
//! rules and limits of [`extract`](super::extract) (paths, links, entry
//! count, unpacked size) applied to a stream the host did not make — a
//! `husk build` RUN step's layer, written by the guest. The same rules
//! run again when the layer is unpacked into its disk.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::extract::{
    check_whiteout, display, owner, sanitize, ExtractError, HardLink, MAX_ENTRIES,
};

/// What a checked layer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    /// Entries (whiteouts and opaque markers included).
    pub entries: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

/// Reads the whole layer tar `input` and checks it as extraction would:
/// no absolute or `..` paths, no entry under a non-directory of the layer
/// (a symlink, a file), hard links only to earlier non-directory entries
/// of the layer, plain whiteout names, owners that fit a uid/gid, at most
/// `max_bytes` of file content, [`MAX_ENTRIES`] entries, no truncation.
pub fn check(input: impl Read, max_bytes: u64) -> Result<Checked, ExtractError> {
    check_bounded(input, max_bytes, MAX_ENTRIES)
}

fn check_bounded(
    input: impl Read,
    max_bytes: u64,
    max_entries: u64,
) -> Result<Checked, ExtractError> {
    let mut c = Checker {
        kinds: HashMap::new(),
        done: Checked {
            entries: 0,
            bytes: 0,
        },
        max_bytes,
    };
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(ExtractError::Tar)? {
        if c.done.entries >= max_entries {
            return Err(ExtractError::TooManyEntries(max_entries));
        }
        c.done.entries += 1;
        c.entry(&mut entry.map_err(ExtractError::Tar)?)?;
    }
    Ok(c.done)
}

struct Checker {
    /// Paths of the layer so far → whether each is a directory.
    kinds: HashMap<PathBuf, bool>,
    done: Checked,
    max_bytes: u64,
}

impl Checker {
    /// Every parent of an entry must be a directory as far as the layer
    /// says (an entry under a symlink or file of the layer is refused).
    fn parents(&self, parents: &[OsString]) -> Result<(), ExtractError> {
        let mut p = PathBuf::new();
        for c in parents {
            p.push(c);
            if self.kinds.get(&p) == Some(&false) {
                return Err(ExtractError::NotADirectory(display(parents)));
            }
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<(), ExtractError> {
        let path = e.path().map_err(ExtractError::Tar)?.into_owned();
        let rel = sanitize(&path)?;
        owner(e.header(), &rel)?;
        let Some((name, parents)) = rel.split_last() else {
            return Ok(()); // the layer root itself
        };
        self.parents(parents)?;
        if let Some(target) = name.as_bytes().strip_prefix(b".wh.") {
            if target == b".wh..opq" || target.starts_with(b".wh.") {
                return Ok(());
            }
            check_whiteout(parents, target)?;
            let gone: PathBuf = parents
                .iter()
                .map(|p| p.as_os_str())
                .chain([OsStr::from_bytes(target)])
                .collect();
            self.kinds.remove(&gone);
            return Ok(());
        }
        use tar::EntryType as T;
        let kind = e.header().entry_type();
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => self.content(e, &rel)?,
            T::Symlink if e.link_name().map_err(ExtractError::Tar)?.is_none() => {
                return Err(ExtractError::UnsafePath(display(&rel)));
            }
            T::Link => self.hard_link(e, &rel)?,
            _ => {}
        }
        self.kinds.insert(rel.iter().collect(), kind.is_dir());
        Ok(())
    }

    /// Reads a file's content: within the size limit, not truncated.
    fn content<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        rel: &[OsString],
    ) -> Result<(), ExtractError> {
        let want = e.size();
        if want > self.max_bytes.saturating_sub(self.done.bytes) {
            return Err(ExtractError::TooLarge(self.max_bytes));
        }
        let n = io::copy(e, &mut io::sink()).map_err(|err| match err.kind() {
            io::ErrorKind::UnexpectedEof => ExtractError::Truncated(display(rel)),
            _ => ExtractError::Tar(err),
        })?;
        if n != want {
            return Err(ExtractError::Truncated(display(rel)));
        }
        self.done.bytes += n;
        Ok(())
    }

    fn hard_link<R: Read>(
        &self,
        e: &mut tar::Entry<'_, R>,
        rel: &[OsString],
    ) -> Result<(), ExtractError> {
        let link = HardLink::read(e, rel)?;
        let target: PathBuf = link.target.iter().collect();
        match self.kinds.get(&target) {
            Some(false) => Ok(()),
            Some(true) => Err(link.refuse("target is a directory")),
            None => Err(link.refuse("target is not in the layer")),
        }
    }
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
