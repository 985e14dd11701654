//! Runtime assets: the guest kernel, the agent binary and the EROFS agent
//! disk built from it (cached by content).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Why an asset is not available.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// None of the places searched has it.
    #[error("no {what} found (tried {tried})")]
    NotFound {
        /// What was looked for.
        what: &'static str,
        /// The paths tried, comma-separated.
        tried: String,
    },
    /// The kernel is not usable.
    #[error("kernel {path} {why}")]
    BadKernel {
        /// The kernel.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `$HUSK_AGENT` names a missing file.
    #[error("agent {0} (from $HUSK_AGENT) does not exist")]
    NoAgent(PathBuf),
    /// A file operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `mkfs.erofs` failed.
    #[error("mkfs.erofs failed ({status}): {stderr}")]
    Mkfs {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The last line of its stderr.
        stderr: String,
    },
}

type Result<T> = std::result::Result<T, AssetError>;

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> AssetError {
    let context = context.into();
    move |source| AssetError::Io { context, source }
}

/// Bumped whenever the agent disk's layout changes, so cached disks with
/// the old layout are not reused.
const AGENT_DISK_LAYOUT: &str = "husk agent disk v1";

/// Empty directories on the agent disk (mount points for the agent).
const AGENT_DISK_DIRS: &[&str] = &["proc", "sys", "dev", "run", "mnt", "mnt/root", "tmp"];

/// The directory of system-wide husk assets.
const SYSTEM_LIB: &str = "/usr/local/lib/husk";

/// `<dir of the husk executable>/../lib/husk`, if it can be determined.
fn exe_lib_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.join("lib/husk"))
}

/// Picks the first existing candidate; the error names them all.
fn pick(what: &'static str, candidates: Vec<PathBuf>) -> Result<PathBuf> {
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(AssetError::NotFound {
        what,
        tried: tried.join(", "),
    })
}

/// The guest kernel: `flag` > `$HUSK_KERNEL` > `<exe>/../lib/husk/vmlinux` >
/// `/usr/local/lib/husk/vmlinux`. An explicit path must exist and be an
/// ELF file.
pub fn kernel(flag: Option<&Path>) -> Result<PathBuf> {
    let explicit = flag
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("HUSK_KERNEL").map(PathBuf::from));
    let path = match explicit {
        Some(p) => p,
        None => {
            let mut candidates: Vec<PathBuf> = exe_lib_dir()
                .map(|d| d.join("vmlinux"))
                .into_iter()
                .collect();
            candidates.push(Path::new(SYSTEM_LIB).join("vmlinux"));
            pick("guest kernel", candidates)?
        }
    };
    check_elf(&path)?;
    Ok(path)
}

/// Fails unless `path` is a readable file starting with the ELF magic.
fn check_elf(path: &Path) -> Result<()> {
    let mut magic = [0u8; 4];
    let bad = |why| AssetError::BadKernel {
        path: path.to_path_buf(),
        why,
    };
    let mut file = fs::File::open(path).map_err(io_ctx(format!("kernel {}", path.display())))?;
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(bad("is not a regular file"));
    }
    let n = file.read(&mut magic).unwrap_or(0);
    if n < 4 || magic != *b"\x7fELF" {
        return Err(bad(
            "is not an ELF file (an uncompressed vmlinux is required)",
        ));
    }
    Ok(())
}

/// The agent binary: `$HUSK_AGENT` > `<exe>/../lib/husk/husk-agent` >
/// `/usr/local/lib/husk/husk-agent`.
pub fn agent() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("HUSK_AGENT") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(AssetError::NoAgent(p));
        }
        return Ok(p);
    }
    let mut candidates: Vec<PathBuf> = exe_lib_dir()
        .map(|d| d.join("husk-agent"))
        .into_iter()
        .collect();
    candidates.push(Path::new(SYSTEM_LIB).join("husk-agent"));
    pick("guest agent", candidates)
}

/// The jailed VMM binary (`husk-vmm`, see [`crate::jail`]): `$HUSK_VMM` >
/// `<exe>/../lib/husk/husk-vmm` > next to the current executable (or one
/// directory up, for test binaries in `target/*/deps`) >
/// `/usr/local/lib/husk/husk-vmm`.
pub fn vmm() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("HUSK_VMM") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(AssetError::NotFound {
                what: "VMM binary ($HUSK_VMM)",
                tried: p.display().to_string(),
            });
        }
        return Ok(p);
    }
    let mut candidates: Vec<PathBuf> = exe_lib_dir()
        .map(|d| d.join("husk-vmm"))
        .into_iter()
        .collect();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join("husk-vmm"));
        if let Some(up) = dir.parent() {
            candidates.push(up.join("husk-vmm"));
        }
    }
    candidates.push(Path::new(SYSTEM_LIB).join("husk-vmm"));
    pick("VMM binary (husk-vmm)", candidates)
}

/// The file server of shared directories (see [`crate::virtiofs`]):
/// `$HUSK_VIRTIOFSD` > QEMU's `/usr/lib/qemu/virtiofsd` (Debian's
/// `qemu-system-common`) > `/usr/libexec/virtiofsd`.
pub fn virtiofsd() -> Result<PathBuf> {
    let candidates = match std::env::var_os("HUSK_VIRTIOFSD") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![
            PathBuf::from("/usr/lib/qemu/virtiofsd"),
            PathBuf::from("/usr/libexec/virtiofsd"),
        ],
    };
    pick(
        "virtiofsd for shared directories (Debian: qemu-system-common; or set $HUSK_VIRTIOFSD)",
        candidates,
    )
}

/// The cache root: `$HUSK_CACHE` or `/var/cache/husk`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("HUSK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/husk"))
}

/// Returns the EROFS agent disk for `agent`, building it on first use as
/// `<cache>/agent-<sha256>.erofs`. Safe against concurrent husk processes:
/// each builds under a unique temporary name and renames into place.
pub fn agent_disk(agent: &Path, cache: &Path) -> Result<PathBuf> {
    let bytes = fs::read(agent).map_err(io_ctx(format!("reading agent {}", agent.display())))?;
    let mut hash = Sha256::new();
    hash.update(AGENT_DISK_LAYOUT.as_bytes());
    hash.update(&bytes);
    let digest = hex::encode(hash.finalize());
    let disk = cache.join(format!("agent-{digest}.erofs"));
    if disk.is_file() {
        return Ok(disk);
    }
    fs::create_dir_all(cache).map_err(io_ctx(format!("creating {}", cache.display())))?;
    let staging = tempfile::Builder::new()
        .prefix(".agent-staging-")
        .tempdir_in(cache)
        .map_err(io_ctx(format!(
            "creating a staging directory in {}",
            cache.display()
        )))?;
    stage_agent(staging.path(), &bytes)?;
    let tmp = tempfile::Builder::new()
        .prefix(".agent-")
        .suffix(".erofs.tmp")
        .tempfile_in(cache)
        .map_err(io_ctx("creating the agent disk"))?
        .into_temp_path();
    mkfs_erofs(&tmp, staging.path())?;
    tmp.persist(&disk)
        .map_err(|e| io_ctx(format!("installing {}", disk.display()))(e.error))?;
    Ok(disk)
}

fn stage_agent(dir: &Path, agent: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("husk-agent");
    fs::write(&bin, agent).map_err(io_ctx("staging the agent"))?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))
        .map_err(io_ctx("staging the agent"))?;
    for sub in AGENT_DISK_DIRS {
        fs::create_dir(dir.join(sub)).map_err(io_ctx("staging the agent disk"))?;
    }
    Ok(())
}

fn mkfs_erofs(image: &Path, dir: &Path) -> Result<()> {
    let out = Command::new("mkfs.erofs")
        .args(["--quiet", "--all-root", "-T0"])
        .arg(image)
        .arg(dir)
        .output()
        .map_err(io_ctx("running mkfs.erofs (install erofs-utils)"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(AssetError::Mkfs {
            status: out.status,
            stderr: stderr.lines().last().unwrap_or("").trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_elf_kernels_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("vmlinux");
        fs::write(&bogus, b"MZ not an elf").unwrap();
        let err = kernel(Some(&bogus)).unwrap_err().to_string();
        assert!(err.contains("not an ELF"), "{err}");
        let err = kernel(Some(&dir.path().join("nope"))).unwrap_err();
        let AssetError::Io { source, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(source.kind(), io::ErrorKind::NotFound);
        let err = kernel(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn agent_disk_is_built_once_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent-bin");
        fs::write(&agent, b"\x7fELF fake agent").unwrap();
        let cache = dir.path().join("cache");
        let disk = agent_disk(&agent, &cache).unwrap();
        let magic = fs::read(&disk).unwrap();
        // EROFS superblock magic at offset 1024.
        assert_eq!(&magic[1024..1028], &0xE0F5_E1E2u32.to_le_bytes());
        let modified = fs::metadata(&disk).unwrap().modified().unwrap();
        assert_eq!(agent_disk(&agent, &cache).unwrap(), disk);
        assert_eq!(fs::metadata(&disk).unwrap().modified().unwrap(), modified);
        let names: Vec<_> = fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "no staging or temp files left: {names:?}");
    }
}
