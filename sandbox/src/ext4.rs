//! Sparse ext4 disks: the writable disks of containers and build steps,
//! and volumes.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a disk could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    /// Creating or sizing the file failed.
    #[error("creating {path}")]
    File {
        /// The disk.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `mkfs.ext4` could not be run.
    #[error("running mkfs.ext4 (install e2fsprogs)")]
    Spawn(#[source] std::io::Error),
    /// `mkfs.ext4` failed.
    #[error("mkfs.ext4 failed: {0}")]
    Mkfs(String),
}

/// Creates a sparse ext4 image of `size` bytes at `path` (fast: mke2fs
/// discards the file instead of writing zeroes, and the inode tables are
/// marked initialised so the guest kernel does not zero them either). On
/// failure no file is left at `path`.
///
/// Without `metadata_csum`: the guest computes those CRC32C checksums in
/// software over every inode, group descriptor and journal block it
/// touches, which was an eighth of all guest kernel work of a warm `husk run`
/// on PVM hosts, where that work is emulated (docs/BENCHMARKS.md). The
/// journal stays (with its own, cheaper, checks off too), so a VM killed
/// mid-write leaves a disk that mounts consistently.
pub fn make_sparse_ext4(path: &Path, size: u64) -> Result<(), Ext4Error> {
    let file_err = |source| Ext4Error::File {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(path).map_err(file_err)?;
    file.set_len(size).map_err(|e| {
        let _ = std::fs::remove_file(path);
        file_err(e)
    })?;
    drop(file);
    let out = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-J",
            "size=4",
            "-O",
            "^metadata_csum",
            "-E",
        ])
        .arg("lazy_itable_init=0,lazy_journal_init=0")
        .arg(path)
        .output();
    let failure = match out {
        Ok(out) if out.status.success() => return Ok(()),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Ext4Error::Mkfs(format!(
                "{} {}",
                out.status,
                stderr.lines().last().unwrap_or("").trim()
            ))
        }
        Err(e) => Ext4Error::Spawn(e),
    };
    let _ = std::fs::remove_file(path);
    Err(failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sparse_ext4_has_a_superblock_and_few_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.ext4");
        make_sparse_ext4(&disk, 1 << 30).unwrap();
        let meta = std::fs::metadata(&disk).unwrap();
        assert_eq!(meta.len(), 1 << 30);
        assert!(
            meta.blocks() * 512 < 64 << 20,
            "not sparse: {}",
            meta.blocks()
        );
        let mut sb = [0u8; 1024];
        let mut f = std::fs::File::open(&disk).unwrap();
        f.seek(SeekFrom::Start(1024)).unwrap();
        f.read_exact(&mut sb).unwrap();
        assert_eq!(sb[0x38..0x3a], 0xEF53u16.to_le_bytes());
        let compat = u32::from_le_bytes(sb[0x5c..0x60].try_into().unwrap());
        let ro_compat = u32::from_le_bytes(sb[0x64..0x68].try_into().unwrap());
        assert_ne!(compat & 0x4, 0, "has a journal");
        assert_eq!(ro_compat & 0x400, 0, "metadata_csum is off");
    }

    #[test]
    fn a_failed_mkfs_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("tiny.ext4");
        let err = make_sparse_ext4(&disk, 4096).unwrap_err();
        assert!(matches!(err, Ext4Error::Mkfs(_)), "{err}");
        assert!(!disk.exists());
        let err = make_sparse_ext4(&dir.path().join("no/such/dir"), 1 << 20).unwrap_err();
        assert!(matches!(err, Ext4Error::File { .. }), "{err}");
    }
}
