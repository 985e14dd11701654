//! Assembling a container's root filesystem in the guest (`CreateContainer`):
//! EROFS layers + a writable disk stacked with overlayfs, the API
//! filesystems, volumes, /etc files, hostname and network.
//!
//! Only used when the agent runs as PID 1 in the VM. The spec has been
//! validated ([`crate::spec::check_container`]) before this runs.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use husk_protocol::ContainerSpec;

use crate::container::ContainerRoot;
use crate::guest::{find_disk, mount_data};
use crate::spec::resolve_in_root;
use crate::system::SysError;

/// Where layer N is mounted.
const LAYERS_DIR: &str = "/run/husk/layers";
/// Where the writable disk is mounted (holds upper/ and work/).
const RW_DIR: &str = "/run/husk/rw";
/// The container's root (the overlay).
const ROOT_DIR: &str = "/run/husk/root";

const NOSUID: libc::c_ulong = libc::MS_NOSUID;
const LOCKED: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SysError {
    let what = what.into();
    move |source| SysError::Setup { what, source }
}

fn mkdir_p(path: &Path) -> Result<(), SysError> {
    std::fs::create_dir_all(path).map_err(io_err(format!("creating {}", path.display())))
}

/// Mounts and records the mount point in `mounts` (unmounted in reverse).
fn mount_at(
    what: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
    mounts: &mut Vec<PathBuf>,
) -> Result<(), SysError> {
    mount_data(what, &target.to_string_lossy(), fstype, flags, data)?;
    mounts.push(target.to_path_buf());
    Ok(())
}

/// Assembles the container described by `spec`; records every mount point
/// in `mounts`, in mount order.
pub fn create(spec: &ContainerSpec, mounts: &mut Vec<PathBuf>) -> Result<ContainerRoot, SysError> {
    let mut lowers = Vec::new();
    for (i, serial) in spec.layers.iter().enumerate() {
        let dev = find_disk(serial)?;
        let dir = PathBuf::from(format!("{LAYERS_DIR}/{i}"));
        mkdir_p(&dir)?;
        let dev = dev.to_string_lossy();
        mount_at(&dev, &dir, "erofs", libc::MS_RDONLY, None, mounts)?;
        lowers.push(dir.to_string_lossy().into_owned());
    }
    let rw = Path::new(RW_DIR);
    mkdir_p(rw)?;
    if spec.writable.is_empty() {
        mount_at(
            "tmpfs",
            rw,
            "tmpfs",
            libc::MS_NODEV,
            Some("mode=755"),
            mounts,
        )?;
    } else {
        let dev = find_disk(&spec.writable)?;
        mount_at(&dev.to_string_lossy(), rw, "ext4", 0, None, mounts)?;
    }
    for sub in ["upper", "work"] {
        mkdir_p(&rw.join(sub))?;
    }
    lowers.reverse();
    let options = format!(
        "lowerdir={},upperdir={RW_DIR}/upper,workdir={RW_DIR}/work",
        lowers.join(":")
    );
    let root = Path::new(ROOT_DIR);
    mkdir_p(root)?;
    mount_at("overlay", root, "overlay", 0, Some(&options), mounts)?;
    mount_api(root, mounts)?;
    for vol in &spec.volumes {
        let dev = find_disk(&vol.serial)?;
        let target = in_root(root, &vol.target)?;
        mkdir_p(&target)?;
        let flags = if vol.read_only { libc::MS_RDONLY } else { 0 };
        mount_at(
            &dev.to_string_lossy(),
            &target,
            &vol.fs_type,
            flags,
            None,
            mounts,
        )?;
    }
    write_etc(root, spec)?;
    crate::net::configure(spec.network.as_ref()).map_err(|e| SysError::Network(e.to_string()))?;
    Ok(ContainerRoot {
        root: root.to_path_buf(),
        ptmx: root.join("dev/pts/ptmx"),
        isolated: true,
    })
}

fn in_root(root: &Path, path: &str) -> Result<PathBuf, SysError> {
    resolve_in_root(root, path).map_err(|e| SysError::Invalid(e.0))
}

/// /proc, /sys (read-only), a minimal /dev with its own devpts and shm.
fn mount_api(root: &Path, mounts: &mut Vec<PathBuf>) -> Result<(), SysError> {
    let proc_dir = in_root(root, "/proc")?;
    mkdir_p(&proc_dir)?;
    mount_at("proc", &proc_dir, "proc", LOCKED, None, mounts)?;
    let sys_dir = in_root(root, "/sys")?;
    mkdir_p(&sys_dir)?;
    mount_at(
        "sysfs",
        &sys_dir,
        "sysfs",
        LOCKED | libc::MS_RDONLY,
        None,
        mounts,
    )?;
    let dev = in_root(root, "/dev")?;
    mkdir_p(&dev)?;
    let opts = Some("mode=755,size=65536k");
    mount_at("tmpfs", &dev, "tmpfs", NOSUID, opts, mounts)?;
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
        NOSUID | libc::MS_NOEXEC,
        opts,
        mounts,
    )?;
    let shm = dev.join("shm");
    mkdir_p(&shm)?;
    let opts = Some("mode=1777,size=65536k");
    mount_at("shm", &shm, "tmpfs", LOCKED, opts, mounts)
}

fn mknod(path: &Path, major: u32, minor: u32, mode: libc::mode_t) -> Result<(), SysError> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| SysError::Invalid(format!("{} contains NUL", path.display())))?;
    // SAFETY: valid C string; mknod/chmod take no other pointers.
    let ok = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | mode,
            libc::makedev(major, minor),
        ) == 0
            && libc::chmod(c.as_ptr(), mode) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(io_err(format!("creating {}", path.display()))(
            io::Error::last_os_error(),
        ))
    }
}

/// /etc/hostname, /etc/hosts, /etc/resolv.conf and the kernel's hostname.
fn write_etc(root: &Path, spec: &ContainerSpec) -> Result<(), SysError> {
    let etc = in_root(root, "/etc")?;
    mkdir_p(&etc)?;
    if !spec.hostname.is_empty() {
        replace_file(&etc.join("hostname"), &format!("{}\n", spec.hostname))?;
        // SAFETY: the pointer and length describe the hostname's bytes.
        let rc = unsafe { libc::sethostname(spec.hostname.as_ptr().cast(), spec.hostname.len()) };
        if rc != 0 {
            return Err(io_err("setting the hostname")(io::Error::last_os_error()));
        }
    }
    replace_file(&etc.join("hosts"), &hosts_file(spec))?;
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

/// Writes `path` afresh (a symlink there is replaced, never followed).
fn replace_file(path: &Path, content: &str) -> Result<(), SysError> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        let _ = std::fs::remove_file(path);
    }
    std::fs::write(path, content).map_err(io_err(format!("writing {}", path.display())))
}
