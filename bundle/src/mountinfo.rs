//! `/proc/self/mountinfo`: which filesystem is mounted where (to find the
//! layers of an overlay mounted as a bundle's root).

use std::path::{Path, PathBuf};

/// Why mountinfo could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MountinfoError {
    /// Reading it failed.
    #[error("reading /proc/self/mountinfo")]
    Read(#[source] std::io::Error),
}

/// One mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The filesystem type (`overlay`, `ext4`...).
    pub fstype: String,
    /// The source (device, `overlay`...).
    pub source: String,
    /// The superblock options, split at commas and unescaped
    /// (`lowerdir=/a:/b`, `upperdir=/u`...).
    pub options: Vec<String>,
}

impl MountEntry {
    /// The value of superblock option `key` (`lowerdir` → `/a:/b`).
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find_map(|o| o.strip_prefix(key)?.strip_prefix('='))
    }
}

/// The mounts of this process's mount namespace.
pub fn read() -> Result<Vec<MountEntry>, MountinfoError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(MountinfoError::Read)?;
    Ok(parse(&text))
}

/// The mount visible at `dir` (the last one mounted there), if any.
pub fn mount_at<'a>(entries: &'a [MountEntry], dir: &Path) -> Option<&'a MountEntry> {
    entries.iter().rev().find(|e| e.mount_point == dir)
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// `36 35 98:0 /root /mnt rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mount_point = left.split(' ').nth(4)?;
    let mut right = right.splitn(3, ' ');
    let fstype = right.next()?;
    let source = right.next()?;
    let options = right.next().unwrap_or("");
    Some(MountEntry {
        mount_point: PathBuf::from(unescape(mount_point)),
        fstype: unescape(fstype),
        source: unescape(source),
        options: options.split(',').map(unescape).collect(),
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\054` for a
/// comma in options...).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match octal {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_lines_parse_with_escapes() {
        let text = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
99 22 0:50 / /run/b\\040x/rootfs rw,relatime - overlay overlay rw,lowerdir=/l/2:/l/1,upperdir=/u\\054v,workdir=/w\n\
garbage\n\
100 22 0:51 / /run/b\\040x/rootfs rw - tmpfs tmpfs rw\n";
        let e = parse(text);
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].mount_point, Path::new("/run/b x/rootfs"));
        assert_eq!(e[1].fstype, "overlay");
        assert_eq!(e[1].option("lowerdir"), Some("/l/2:/l/1"));
        assert_eq!(e[1].option("upperdir"), Some("/u,v"));
        assert_eq!(e[1].option("lower"), None);
        // The later mount shadows the overlay.
        let top = mount_at(&e, Path::new("/run/b x/rootfs")).unwrap();
        assert_eq!(top.fstype, "tmpfs");
        assert!(mount_at(&e, Path::new("/nowhere")).is_none());
        assert_eq!(unescape("\\9\\"), "\\9\\");
    }
}
