//! The guest's privileged system calls: mounts, vsock, teardown, power off.
//! Only used when the agent runs as PID 1 in the VM.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::system::SysError;

/// How long to keep retrying the vsock connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for a disk with the requested serial to appear.
const DISK_TIMEOUT: Duration = Duration::from_secs(5);

fn cstr(s: &str) -> CString {
    // Only called with our own constants and sysfs names, which hold no NUL.
    CString::new(s).unwrap_or_default()
}

/// mount(2) with no data.
fn mount(what: &str, target: &str, fstype: &str, flags: libc::c_ulong) -> Result<(), SysError> {
    mount_data(what, target, fstype, flags, None)
}

/// mount(2) with optional filesystem options (`data`).
pub fn mount_data(
    what: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), SysError> {
    let (src, dst, ty) = (cstr(what), cstr(target), cstr(fstype));
    let data = data.map(cstr);
    let data_ptr = data
        .as_ref()
        .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
    // SAFETY: valid NUL-terminated strings; data is null or a C string.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), ty.as_ptr(), flags, data_ptr) };
    if rc == 0 {
        return Ok(());
    }
    Err(SysError::Mount {
        what: what.to_string(),
        target: target.to_string(),
        source: io::Error::last_os_error(),
    })
}

fn ok_if_busy(r: Result<(), SysError>) -> Result<(), SysError> {
    match r {
        Err(SysError::Mount { ref source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
            Ok(())
        }
        other => other,
    }
}

/// Mounts the agent's own proc, sys, dev, run and tmp, then makes sure fds
/// 0-2 are open (the kernel opens /dev/console for init only if it exists
/// on the root, and ours has an empty /dev).
pub fn mount_early() -> Result<(), SysError> {
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    ok_if_busy(mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID))?;
    ensure_stdio();
    ok_if_busy(mount("proc", "/proc", "proc", nosuid))?;
    ok_if_busy(mount("sysfs", "/sys", "sysfs", nosuid))?;
    ok_if_busy(mount(
        "tmpfs",
        "/run",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
    ))?;
    ok_if_busy(mount(
        "tmpfs",
        "/tmp",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
    ))?;
    Ok(())
}

/// Opens the console (or /dev/null) on any of fds 0-2 that is closed, so
/// later fds never land there.
pub fn ensure_stdio() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only queries the fd.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        for path in [c"/dev/console", c"/dev/null"] {
            // SAFETY: valid C string; the returned fd is checked.
            let got = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
            if got == fd {
                break;
            }
            if got >= 0 {
                // SAFETY: got is a valid fd we just opened.
                unsafe {
                    libc::dup2(got, fd);
                    libc::close(got);
                }
                break;
            }
        }
    }
}

/// Connects to the host (CID 2) on `port`, retrying while the host side is
/// not ready.
pub fn connect_host(port: u32) -> Result<File, SysError> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match vsock_connect(libc::VMADDR_CID_HOST, port) {
            Ok(f) => return Ok(f),
            Err(e) if Instant::now() >= deadline => {
                return Err(SysError::Connect { port, source: e })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn vsock_connect(cid: u32, port: u32) -> io::Result<File> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new socket owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_vm of `len` bytes.
    let rc = unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_vm).cast(), len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Opens a non-blocking vsock listener on `port` (any local CID).
pub fn vsock_listen(port: u32) -> Result<OwnedFd, SysError> {
    let err = |source| SysError::Listen { port, source };
    let flags = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, flags, 0) };
    if fd < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: fd is a new socket owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    addr.svm_port = port;
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_vm of `len` bytes.
    let rc = unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_vm).cast(), len) };
    // SAFETY: listen on our socket.
    if rc != 0 || unsafe { libc::listen(fd, 16) } != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(sock)
}

/// Finds the virtio-blk disk whose serial is `serial`, e.g. `/dev/vdb`.
pub fn find_disk(serial: &str) -> Result<PathBuf, SysError> {
    let deadline = Instant::now() + DISK_TIMEOUT;
    loop {
        if let Some(dev) = scan_disks(serial) {
            return Ok(dev);
        }
        if Instant::now() >= deadline {
            return Err(SysError::DiskNotFound(serial.to_string()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scan_disks(serial: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/block").ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("vd") {
            continue;
        }
        let Ok(found) = std::fs::read(entry.path().join("serial")) else {
            continue;
        };
        let found = String::from_utf8_lossy(&found);
        if found.trim_matches(|c: char| c.is_whitespace() || c == '\0') == serial {
            return Some(PathBuf::from(format!("/dev/{name}")));
        }
    }
    None
}

/// Unmounts `target`, lazily if it is busy.
pub fn unmount(target: &Path) -> io::Result<()> {
    let path = CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid C string.
    if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    // SAFETY: valid C string.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    Err(io::Error::last_os_error())
}

/// Kills every other process and reaps them (bounded wait).
pub fn kill_all() {
    // SAFETY: kill(-1) from PID 1 signals every other process.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let mut status = 0;
        // SAFETY: valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid < 0 {
            return; // ECHILD: nothing left
        }
        if pid == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Powers the VM off. Never returns.
pub fn power_off() -> ! {
    // SAFETY: sync and reboot have no memory-safety preconditions.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot failed (should not happen for PID 1): idle instead of exiting,
    // which would panic the kernel.
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}
