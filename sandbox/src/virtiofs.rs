//! Shared host directories and files (virtio-fs, docs/SHARES.md): one
//! `virtiofsd` per VM serves them over vhost-user.
//!
//! The server sees only what is shared. It is started through `husk-vmm
//! virtiofs` ([`stage_main`]), which runs in a mount namespace of its own:
//! it mounts a small tmpfs on [`EXPORT_DIR`], binds each share into it as
//! `<index>` (a directory) or `<index>/file` (a single file), remounts the
//! read-only ones read-only, makes the tmpfs itself read-only and only then
//! executes `virtiofsd` with that tmpfs as its source and its own sandbox
//! (`-o sandbox=namespace`: it `pivot_root`s into the export, so no path it
//! resolves leads out of it). The namespace — and every bind — goes with
//! the process: nothing is mounted in the host's namespace, nothing to
//! clean up after a crash.
//!
//! The vhost-user socket never appears in the jail: the sandbox binds a
//! listener, connects to it, removes the socket file and gives the
//! listener to the server (`--fd=0`, its stdin) and the connected end to
//! the VMM ([`vmm::FsConfig::socket`]).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use rustix::mount::{MountFlags, MountPropagationFlags};
use serde::{Deserialize, Serialize};

/// Where the server's mount namespace mounts the export (an empty
/// directory in the host's namespace).
pub const EXPORT_DIR: &str = "/run/husk/virtiofs";

/// The name of a shared file inside its directory of the export.
const FILE_NAME: &str = "file";

/// The line [`stage_main`] writes once the export is ready.
const READY: &str = "ready";

/// A host directory or file shared with the VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// Absolute host path, symlinks resolved by the caller.
    pub source: PathBuf,
    /// A directory or a regular file.
    pub kind: ShareKind,
    /// Serve it read-only.
    pub read_only: bool,
}

/// What a [`Share`]'s source is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShareKind {
    /// A directory (bound with its submounts when writable).
    Directory,
    /// One regular file.
    File,
}

impl Share {
    /// The share's path inside the export (`ShareMount::source` for the
    /// agent): `"3"` for a directory, `"3/file"` for a file.
    pub fn export_path(&self, index: usize) -> String {
        match self.kind {
            ShareKind::Directory => index.to_string(),
            ShareKind::File => format!("{index}/{FILE_NAME}"),
        }
    }
}

/// Errors serving shares.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// Not root.
    #[error("shared directories need root (virtiofsd serves them with the host's permissions)")]
    NeedsRoot,
    /// Finding virtiofsd or `husk-vmm` failed.
    #[error(transparent)]
    Asset(#[from] crate::assets::AssetError),
    /// A socket or process operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server could not prepare the export.
    #[error("sharing with the VM: {0}")]
    Stage(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ShareError {
    let what = what.into();
    move |source| ShareError::Io { what, source }
}

/// A running virtiofsd serving a VM's shares; killed when dropped.
pub struct FsServer {
    child: Child,
    socket: Arc<UnixStream>,
}

impl FsServer {
    /// Starts the server for `shares`; `socket` is a free path for the
    /// moment of the hand-over (removed before this returns).
    pub fn start(shares: &[Share], socket: &Path) -> Result<FsServer, ShareError> {
        if !rustix::process::geteuid().is_root() {
            return Err(ShareError::NeedsRoot);
        }
        let server = crate::assets::virtiofsd()?;
        let stage = crate::assets::vmm()?;
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)
            .map_err(io_err(format!("listening on {}", socket.display())))?;
        let stream = UnixStream::connect(socket);
        let _ = std::fs::remove_file(socket);
        let stream = stream.map_err(io_err("connecting to the virtiofsd socket"))?;
        let shares_json = serde_json::to_string(shares).expect("shares serialise");
        let mut child = Command::new(stage)
            .arg("virtiofs")
            .arg(&server)
            .arg(shares_json)
            .stdin(OwnedFd::from(listener))
            .stdout(Stdio::piped())
            .spawn()
            .map_err(io_err("starting husk-vmm virtiofs"))?;
        let mut line = String::new();
        let out = child.stdout.take().expect("piped stdout");
        let read = BufReader::new(out).read_line(&mut line);
        let mut server = FsServer {
            child,
            socket: Arc::new(stream),
        };
        read.map_err(io_err("reading virtiofsd's start"))?;
        match line.trim_end() {
            READY => Ok(server),
            "" => {
                let status = server.child.wait().ok();
                Err(ShareError::Stage(format!(
                    "the share server ended ({status:?})"
                )))
            }
            other => Err(ShareError::Stage(
                other.strip_prefix("error: ").unwrap_or(other).to_string(),
            )),
        }
    }

    /// The VMM's side of the vhost-user connection.
    pub fn vm_config(&self) -> vmm::FsConfig {
        vmm::FsConfig {
            tag: husk_protocol::SHARE_TAG.to_string(),
            socket: Some(self.socket.clone()),
        }
    }
}

impl Drop for FsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `husk-vmm virtiofs SERVER SHARES_JSON`: prepares the export in a mount
/// namespace of its own, says `ready` (or `error: ...`) on stdout, then
/// becomes the server with stdin (the listener) as its vhost-user socket.
pub fn stage_main(args: &[OsString]) -> i32 {
    let [server, shares] = args else {
        eprintln!("husk-vmm virtiofs: SERVER SHARES_JSON (run by husk, not by hand)");
        return 2;
    };
    let staged = serde_json::from_str::<Vec<Share>>(&shares.to_string_lossy())
        .map_err(|e| format!("bad share list: {e}"))
        .and_then(|shares| stage(&shares));
    let mut stdout = std::io::stdout();
    if let Err(e) = staged {
        let _ = writeln!(stdout, "error: {e}");
        return 1;
    }
    let _ = writeln!(stdout, "{READY}");
    let _ = stdout.flush();
    match std::fs::File::open("/dev/null") {
        Ok(null) => rustix::stdio::dup2_stdout(&null).ok(),
        Err(_) => None,
    };
    let err = Command::new(server)
        .args(["--fd=0", "-o", &format!("source={EXPORT_DIR}")])
        .args([
            "-o",
            "cache=auto",
            "-o",
            "sandbox=namespace",
            "-o",
            "log_level=err",
        ])
        .arg("--rlimit-nofile=0")
        .exec();
    eprintln!(
        "husk-vmm virtiofs: starting {}: {err}",
        server.to_string_lossy()
    );
    1
}

/// Builds the export (see the module's documentation).
fn stage(shares: &[Share]) -> Result<(), String> {
    let sys = |what: String| move |e: rustix::io::Errno| format!("{what}: {e}");
    // SAFETY: called at the start of husk-vmm's main, before any thread
    // is started, so no other thread observes the new namespace.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .map_err(sys("unshare(CLONE_NEWNS)".into()))?;
    let private = MountPropagationFlags::PRIVATE | MountPropagationFlags::REC;
    rustix::mount::mount_change("/", private).map_err(sys("making mounts private".into()))?;
    let export = Path::new(EXPORT_DIR);
    std::fs::create_dir_all(export).map_err(|e| format!("creating {EXPORT_DIR}: {e}"))?;
    let locked = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    rustix::mount::mount("tmpfs", export, "tmpfs", locked, c"mode=755,size=1m")
        .map_err(sys(format!("mounting a tmpfs on {EXPORT_DIR}")))?;
    for (i, share) in shares.iter().enumerate() {
        bind_share(export, i, share)?;
    }
    rustix::mount::mount_remount(export, locked | MountFlags::RDONLY, "")
        .map_err(sys("making the export read-only".into()))
}

/// Binds `share` at its place in the export.
fn bind_share(export: &Path, index: usize, share: &Share) -> Result<(), String> {
    let source = &share.source;
    let meta = std::fs::metadata(source).map_err(|e| format!("{}: {e}", source.display()))?;
    let is_dir = share.kind == ShareKind::Directory;
    if meta.is_dir() != is_dir || !(meta.is_dir() || meta.is_file()) {
        let want = if is_dir {
            "a directory"
        } else {
            "a regular file"
        };
        return Err(format!("{} is no longer {want}", source.display()));
    }
    let dir = export.join(index.to_string());
    std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let target = Path::new(EXPORT_DIR).join(share.export_path(index));
    if !is_dir {
        std::fs::File::create(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    let what = || format!("binding {}", source.display());
    if is_dir && !share.read_only {
        rustix::mount::mount_bind_recursive(source, &target)
    } else {
        rustix::mount::mount_bind(source, &target)
    }
    .map_err(|e| format!("{}: {e}", what()))?;
    if share.read_only {
        let flags = MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
        rustix::mount::mount_remount(&target, flags, "")
            .map_err(|e| format!("{} read-only: {e}", what()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_paths_name_the_share_and_its_file() {
        let share = |kind| Share {
            source: "/x".into(),
            kind,
            read_only: false,
        };
        assert_eq!(share(ShareKind::Directory).export_path(0), "0");
        assert_eq!(share(ShareKind::File).export_path(12), "12/file");
    }

    #[test]
    fn the_share_list_round_trips_through_its_argument() {
        let shares = vec![Share {
            source: "/a b/c".into(),
            kind: ShareKind::File,
            read_only: true,
        }];
        let json = serde_json::to_string(&shares).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Share>>(&json).unwrap(), shares);
    }
}
