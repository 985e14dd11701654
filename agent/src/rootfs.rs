//! Assembling a container's root filesystem in the guest (`CreateContainer`):
//! EROFS layers + a writable disk stacked with overlayfs, or one plain disk
//! as it is (`husk vm run`); the API filesystems, volumes, shares, /etc files (image
//! roots only), hostname, network and kernel parameters (sysctls).
//!
//! Only used when the agent runs as PID 1 in the VM. The spec has been
//! validated ([`crate::spec::check_container`]) before this runs.

use std::io;
use std::path::{Path, PathBuf};

use husk_protocol::{ContainerSpec, FileSpec, RootFs, Sysctl, TmpfsMount};
use rustix::fs::{FileType, Mode, CWD};
use rustix::mount::MountFlags;

use crate::container::ContainerRoot;
use crate::guest::{mount_data, Disks};
use crate::spec::resolve_in_root;
use crate::system::SysError;

/// Where layer N is mounted.
const LAYERS_DIR: &str = "/run/husk/layers";
/// Where the writable disk is mounted (holds upper/ and work/).
const RW_DIR: &str = "/run/husk/rw";
/// The writable disk's mount options: no read-ahead of every block group's
/// allocation bitmap at mount (a fresh disk allocates from the first
/// groups; reading the rest cost ~7% of a warm `husk run`'s guest kernel
/// work on PVM hosts, docs/BENCHMARKS.md).
const RW_OPTIONS: &str = "no_prefetch_block_bitmaps";
/// The container's root (the overlay).
const ROOT_DIR: &str = "/run/husk/root";
/// The container's /dev, built once at boot ([`prepare`]) and bound into
/// the root per container.
const DEV_DIR: &str = "/run/husk/dev";

const NOSUID: MountFlags = MountFlags::NOSUID;
const LOCKED: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC);

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SysError {
    let what = what.into();
    move |source| SysError::Setup { what, source }
}

pub(crate) fn mkdir_p(path: &Path) -> Result<(), SysError> {
    std::fs::create_dir_all(path).map_err(io_err(format!("creating {}", path.display())))
}

/// Mounts, and when `teardown` says so records the mount point in
/// `mounts` (unmounted in reverse at teardown).
fn mount_at(
    what: &str,
    target: &Path,
    fstype: &str,
    flags: MountFlags,
    data: Option<&str>,
    teardown: Teardown<'_>,
) -> Result<(), SysError> {
    mount_data(what, &target.to_string_lossy(), fstype, flags, data)?;
    if let Teardown::Unmount(mounts) = teardown {
        mounts.push(target.to_path_buf());
    }
    Ok(())
}

/// Whether a mount is undone at teardown.
///
/// Only mounts that hold data written in the guest are: a writable disk
/// (the writable ext4 disk, a writable root disk, a writable volume) and a
/// root stacked on one (the overlay, which keeps its upper disk busy).
/// Unmounting leaves such a disk clean for its next use. Read-only disks
/// (EROFS layers), memory filesystems and the API filesystems are left
/// to the power-off: unmounting them saves nothing and costs seconds on
/// hosts where guest kernel code is emulated (docs/BENCHMARKS.md). The
/// mounts inside the root go with it: the root is detached as a tree
/// ([`crate::guest::unmount`] falls back to a lazy unmount when busy).
enum Teardown<'a> {
    /// Record the mount point here.
    Unmount(&'a mut Vec<PathBuf>),
    /// Leave it mounted until the power-off.
    Keep,
}

/// [`Teardown::Unmount`] when `writable`, else [`Teardown::Keep`].
fn unmount_if(writable: bool, mounts: &mut Vec<PathBuf>) -> Teardown<'_> {
    if writable {
        Teardown::Unmount(mounts)
    } else {
        Teardown::Keep
    }
}

/// Whether missing mount points may be created in the root.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MountPoints {
    /// An image root (the overlay's upper layer takes the new directories).
    Create,
    /// A plain disk root: the agent writes nothing into it, so a mount
    /// point it lacks is skipped (and on a read-only disk it could not be
    /// made anyway).
    Existing,
}

/// Work done once at boot, before any container: builds the container's
/// /dev (see [`mount_api`]).
pub fn prepare() -> Result<(), SysError> {
    let dev = Path::new(DEV_DIR);
    mkdir_p(dev)?;
    mount_dev(dev)
}

/// Assembles the container described by `spec`; records the mount points
/// to undo at teardown in `mounts`, in mount order (see [`Teardown`]).
pub fn create(spec: &ContainerSpec, mounts: &mut Vec<PathBuf>) -> Result<ContainerRoot, SysError> {
    let root = Path::new(ROOT_DIR);
    mkdir_p(root)?;
    let mut disks = Disks::new();
    let points = match &spec.root {
        RootFs::Layers { layers, writable } => {
            mount_layers(&mut disks, layers, writable, root, mounts)?;
            MountPoints::Create
        }
        RootFs::Disk(disk) => {
            let dev = disks.find(&disk.serial)?;
            let flags = if disk.read_only {
                MountFlags::RDONLY
            } else {
                MountFlags::empty()
            };
            let dev = dev.to_string_lossy();
            let teardown = unmount_if(!disk.read_only, mounts);
            mount_at(&dev, root, &disk.fs_type, flags, None, teardown)?;
            MountPoints::Existing
        }
    };
    mount_api(root, points)?;
    for vol in &spec.volumes {
        let dev = disks.find(&vol.serial)?;
        let target = in_root(root, &vol.target)?;
        if points == MountPoints::Create {
            mkdir_p(&target)?;
        }
        let flags = if vol.read_only {
            MountFlags::RDONLY
        } else {
            MountFlags::empty()
        };
        let teardown = unmount_if(!vol.read_only, mounts);
        mount_at(
            &dev.to_string_lossy(),
            &target,
            &vol.fs_type,
            flags,
            None,
            teardown,
        )?;
    }
    crate::shares::mount(root, &spec.shares)?;
    for t in &spec.tmpfs {
        mount_tmpfs(root, t, points)?;
    }
    set_hostname(&spec.hostname)?;
    if points == MountPoints::Create {
        write_etc(root, spec)?;
        write_files(root, &spec.files)?;
        if spec.read_only_root {
            remount_read_only(root)?;
        }
    }
    crate::net::configure(spec.network.as_ref()).map_err(|e| SysError::Network(e.to_string()))?;
    set_sysctls(&spec.sysctls)?;
    let upper = match &spec.root {
        RootFs::Layers { writable, .. } if !writable.is_empty() => {
            Some(Path::new(RW_DIR).join("upper"))
        }
        _ => None,
    };
    Ok(ContainerRoot {
        root: root.to_path_buf(),
        ptmx: root.join("dev/pts/ptmx"),
        isolated: true,
        upper,
    })
}

/// The directories the image's layers are mounted on (`diff` compares
/// the upper directory with them).
pub fn layer_dirs() -> Vec<PathBuf> {
    std::fs::read_dir(LAYERS_DIR)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default()
}

/// The image's EROFS layers stacked with overlayfs on `root`, under the
/// writable disk's (or a tmpfs's) upper and work directories.
fn mount_layers(
    disks: &mut Disks,
    layers: &[String],
    writable: &str,
    root: &Path,
    mounts: &mut Vec<PathBuf>,
) -> Result<(), SysError> {
    let mut lowers = Vec::new();
    for (i, serial) in layers.iter().enumerate() {
        let dev = disks.find(serial)?;
        let dir = PathBuf::from(format!("{LAYERS_DIR}/{i}"));
        mkdir_p(&dir)?;
        let dev = dev.to_string_lossy();
        mount_at(
            &dev,
            &dir,
            "erofs",
            MountFlags::RDONLY,
            None,
            Teardown::Keep,
        )?;
        lowers.push(dir.to_string_lossy().into_owned());
    }
    let rw = Path::new(RW_DIR);
    mkdir_p(rw)?;
    if writable.is_empty() {
        mount_at(
            "tmpfs",
            rw,
            "tmpfs",
            MountFlags::NODEV,
            Some("mode=755"),
            Teardown::Keep,
        )?;
    } else {
        let dev = disks.find(writable)?;
        mount_at(
            &dev.to_string_lossy(),
            rw,
            "ext4",
            MountFlags::empty(),
            Some(RW_OPTIONS),
            Teardown::Unmount(mounts),
        )?;
    }
    for sub in ["upper", "work"] {
        mkdir_p(&rw.join(sub))?;
    }
    lowers.reverse();
    let options = format!(
        "lowerdir={},upperdir={RW_DIR}/upper,workdir={RW_DIR}/work",
        lowers.join(":")
    );
    let teardown = unmount_if(!writable.is_empty(), mounts);
    mount_at(
        "overlay",
        root,
        "overlay",
        MountFlags::empty(),
        Some(&options),
        teardown,
    )
}

fn in_root(root: &Path, path: &str) -> Result<PathBuf, SysError> {
    resolve_in_root(root, path).map_err(|e| SysError::Invalid(e.0))
}

/// The mount point `path` in `root`, created when `points` allows;
/// `None` when it is missing and may not be created.
fn mount_point(root: &Path, path: &str, points: MountPoints) -> Result<Option<PathBuf>, SysError> {
    let dir = in_root(root, path)?;
    match points {
        MountPoints::Create => mkdir_p(&dir).map(|()| Some(dir)),
        MountPoints::Existing => Ok(dir.is_dir().then_some(dir)),
    }
}

/// /proc, /sys (read-only), a minimal /dev with its own devpts and shm
/// (each where it has a mount point, see [`MountPoints`]). The /dev was
/// built at boot ([`prepare`]: one VM serves one container) and is bound
/// here with its submounts, one mount(2) instead of some twenty calls.
fn mount_api(root: &Path, points: MountPoints) -> Result<(), SysError> {
    if let Some(proc_dir) = mount_point(root, "/proc", points)? {
        mount_at("proc", &proc_dir, "proc", LOCKED, None, Teardown::Keep)?;
    }
    if let Some(sys_dir) = mount_point(root, "/sys", points)? {
        let flags = LOCKED | MountFlags::RDONLY;
        mount_at("sysfs", &sys_dir, "sysfs", flags, None, Teardown::Keep)?;
    }
    if let Some(dev) = mount_point(root, "/dev", points)? {
        let flags = MountFlags::BIND | MountFlags::REC;
        mount_at(DEV_DIR, &dev, "", flags, None, Teardown::Keep)?;
    }
    Ok(())
}

/// A tmpfs /dev with the usual nodes and links, devpts and shm.
fn mount_dev(dev: &Path) -> Result<(), SysError> {
    let opts = Some("mode=755,size=65536k");
    mount_at("tmpfs", dev, "tmpfs", NOSUID, opts, Teardown::Keep)?;
    for (name, major, minor, mode) in [
        ("null", 1, 3, 0o666),
        ("zero", 1, 5, 0o666),
        ("full", 1, 7, 0o666),
        ("random", 1, 8, 0o666),
        ("urandom", 1, 9, 0o666),
        ("tty", 5, 0, 0o666),
        ("console", 5, 1, 0o620),
    ] {
        mknod(&dev.join(name), major, minor, mode)?;
    }
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let link = dev.join(name);
        std::os::unix::fs::symlink(target, &link)
            .map_err(io_err(format!("creating {}", link.display())))?;
    }
    let pts = dev.join("pts");
    mkdir_p(&pts)?;
    let opts = Some("newinstance,ptmxmode=0666,mode=0620,gid=5");
    mount_at(
        "devpts",
        &pts,
        "devpts",
        NOSUID | MountFlags::NOEXEC,
        opts,
        Teardown::Keep,
    )?;
    let shm = dev.join("shm");
    mkdir_p(&shm)?;
    let opts = Some("mode=1777,size=65536k");
    mount_at("shm", &shm, "tmpfs", LOCKED, opts, Teardown::Keep)
}

fn mknod(path: &Path, major: u32, minor: u32, mode: u32) -> Result<(), SysError> {
    let mode = Mode::from_raw_mode(mode);
    let dev = rustix::fs::makedev(major, minor);
    rustix::fs::mknodat(CWD, path, FileType::CharacterDevice, mode, dev)
        // The umask must not narrow the node's mode.
        .and_then(|()| rustix::fs::chmod(path, mode))
        .map_err(|e| io_err(format!("creating {}", path.display()))(e.into()))
}

/// A tmpfs at `t.target` in the root (where it has a mount point).
fn mount_tmpfs(root: &Path, t: &TmpfsMount, points: MountPoints) -> Result<(), SysError> {
    let Some(dir) = mount_point(root, &t.target, points)? else {
        return Ok(());
    };
    let mut flags = MountFlags::empty();
    for (on, flag) in [
        (t.read_only, MountFlags::RDONLY),
        (t.nosuid, MountFlags::NOSUID),
        (t.nodev, MountFlags::NODEV),
        (t.noexec, MountFlags::NOEXEC),
    ] {
        if on {
            flags |= flag;
        }
    }
    let mut data = Vec::new();
    if let Some(mode) = t.mode {
        data.push(format!("mode={mode:o}"));
    }
    if let Some(size) = &t.size {
        data.push(format!("size={size}"));
    }
    let data = data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    mount_at("tmpfs", &dir, "tmpfs", flags, data, Teardown::Keep)
}

/// Makes the root mount itself read-only (`--read-only`); the mounts
/// inside it (API filesystems, volumes, tmpfs) keep their own flags.
fn remount_read_only(root: &Path) -> Result<(), SysError> {
    rustix::mount::mount_remount(root, MountFlags::BIND | MountFlags::RDONLY, "").map_err(|e| {
        SysError::Mount {
            what: "the read-only root".into(),
            target: root.display().to_string(),
            source: e.into(),
        }
    })
}

/// The kernel's (UTS) hostname, when one is given.
fn set_hostname(name: &str) -> Result<(), SysError> {
    if name.is_empty() {
        return Ok(());
    }
    rustix::system::sethostname(name.as_bytes())
        .map_err(|e| io_err("setting the hostname")(e.into()))
}

/// Writes each kernel parameter under /proc/sys (names checked by
/// `spec::check_container`): the guest kernel is the container's own.
fn set_sysctls(sysctls: &[Sysctl]) -> Result<(), SysError> {
    for s in sysctls {
        let path = Path::new("/proc/sys").join(s.proc_path());
        std::fs::write(&path, &s.value).map_err(io_err(format!("setting sysctl {}", s.key)))?;
    }
    Ok(())
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf (image roots only).
fn write_etc(root: &Path, spec: &ContainerSpec) -> Result<(), SysError> {
    let etc = in_root(root, "/etc")?;
    mkdir_p(&etc)?;
    if !spec.hostname.is_empty() {
        replace_file(&etc.join("hostname"), format!("{}\n", spec.hostname))?;
    }
    replace_file(&etc.join("hosts"), hosts_file(spec))?;
    if let Some(conf) = &spec.resolv_conf {
        replace_file(&etc.join("resolv.conf"), conf)?;
    }
    Ok(())
}

/// The content of /etc/hosts: loopback names, the container's own name,
/// then the host's extra lines.
pub fn hosts_file(spec: &ContainerSpec) -> String {
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if !spec.hostname.is_empty() {
        let addr = spec
            .network
            .as_ref()
            .and_then(|n| n.ipv4.split('/').next().map(String::from))
            .unwrap_or_else(|| "127.0.1.1".into());
        hosts.push_str(&format!("{addr}\t{}\n", spec.hostname));
    }
    for line in &spec.hosts {
        hosts.push_str(line);
        hosts.push('\n');
    }
    hosts
}

/// The spec's files (the bundle's file bind mounts, copied), each written
/// afresh at its path resolved in the root, with its mode, owned by root.
fn write_files(root: &Path, files: &[FileSpec]) -> Result<(), SysError> {
    use std::os::unix::fs::PermissionsExt;
    for f in files {
        let path = in_root(root, &f.path)?;
        if let Some(parent) = path.parent() {
            mkdir_p(parent)?;
        }
        replace_file(&path, &f.content)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
            .map_err(io_err(format!("chmod {}", path.display())))?;
    }
    Ok(())
}

/// Writes `path` afresh (a symlink there is replaced, never followed).
fn replace_file(path: &Path, content: impl AsRef<[u8]>) -> Result<(), SysError> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        let _ = std::fs::remove_file(path);
    }
    std::fs::write(path, content).map_err(io_err(format!("writing {}", path.display())))
}
