//! Extended attributes of a path (not following symlinks).

use std::io;
use std::path::Path;

use rustix::io::Errno;

/// Largest attribute list or value read.
const MAX: usize = 64 << 10;

/// All attributes of `path` as (name, value), in the order listed.
pub fn list(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; MAX];
    let n = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; MAX];
        let len = match rustix::fs::lgetxattr(path, name, &mut value[..]) {
            Ok(len) => len,
            Err(Errno::NODATA) => continue, // removed meanwhile
            Err(e) => return Err(e.into()),
        };
        value.truncate(len);
        out.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    Ok(out)
}
