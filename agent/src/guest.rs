//! The guest's privileged system calls: mounts, vsock, teardown, power off.
//! Only used when the agent runs as PID 1 in the VM.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::mount::{MountFlags, UnmountFlags};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::process::{wait, WaitOptions};
use rustix::system::RebootCommand;

use crate::system::SysError;

/// How long to keep retrying the vsock connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for a disk with the requested serial to appear.
const DISK_TIMEOUT: Duration = Duration::from_secs(5);

/// mount(2) with no data.
fn mount(what: &str, target: &str, fstype: &str, flags: MountFlags) -> Result<(), SysError> {
    mount_data(what, target, fstype, flags, None)
}

/// mount(2) with optional filesystem options (`data`).
pub fn mount_data(
    what: &str,
    target: &str,
    fstype: &str,
    flags: MountFlags,
    data: Option<&str>,
) -> Result<(), SysError> {
    let err = |source: io::Error| SysError::Mount {
        what: what.to_string(),
        target: target.to_string(),
        source,
    };
    let data = data
        .map(CString::new)
        .transpose()
        .map_err(|_| err(io::ErrorKind::InvalidInput.into()))?;
    rustix::mount::mount(what, target, fstype, flags, data.as_deref()).map_err(|e| err(e.into()))
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
    let nosuid = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    ok_if_busy(mount("devtmpfs", "/dev", "devtmpfs", MountFlags::NOSUID))?;
    ensure_stdio();
    ok_if_busy(mount("proc", "/proc", "proc", nosuid))?;
    ok_if_busy(mount("sysfs", "/sys", "sysfs", nosuid))?;
    ok_if_busy(mount(
        "tmpfs",
        "/run",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
    ))?;
    ok_if_busy(mount(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
    ))?;
    Ok(())
}

/// Opens the console (or /dev/null) on any of fds 0-2 that is closed, so
/// later fds never land there. open(2) returns the lowest free fd, so an
/// fd above 2 means 0-2 are all open.
pub fn ensure_stdio() {
    for _ in 0..=2 {
        let opened = ["/dev/console", "/dev/null"].iter().find_map(|path| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(path)
                .ok()
        });
        match opened {
            // Keep it open for good: it is now one of fds 0-2.
            Some(file) if file.as_raw_fd() <= 2 => drop(file.into_raw_fd()),
            _ => return,
        }
    }
}

/// Connects to the host (CID 2) on `port`, retrying while the host side is
/// not ready.
pub fn connect_host(port: u32) -> Result<File, SysError> {
    connect_host_until(port, Instant::now() + CONNECT_TIMEOUT)
}

/// Connects to the host (CID 2) on `port`, retrying every 100 ms until
/// `deadline`.
pub fn connect_host_until(port: u32, deadline: Instant) -> Result<File, SysError> {
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
    let sock = vsock_socket(SocketFlags::CLOEXEC)?;
    let (addr, len) = vsock_addr(cid, port);
    // SAFETY: addr is a valid sockaddr_vm of `len` bytes (rustix has no
    // vsock address type).
    let rc = unsafe { libc::connect(sock.as_raw_fd(), (&raw const addr).cast(), len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(File::from(sock))
}

/// Opens a non-blocking vsock listener on `port` (any local CID).
pub fn vsock_listen(port: u32) -> Result<OwnedFd, SysError> {
    let err = |source| SysError::Listen { port, source };
    let sock = vsock_socket(SocketFlags::CLOEXEC | SocketFlags::NONBLOCK).map_err(err)?;
    let (addr, len) = vsock_addr(libc::VMADDR_CID_ANY, port);
    // SAFETY: addr is a valid sockaddr_vm of `len` bytes (rustix has no
    // vsock address type).
    let rc = unsafe { libc::bind(sock.as_raw_fd(), (&raw const addr).cast(), len) };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    rustix::net::listen(&sock, 16).map_err(|e| err(e.into()))?;
    Ok(sock)
}

fn vsock_socket(flags: SocketFlags) -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::VSOCK,
        SocketType::STREAM,
        flags,
        None,
    )?)
}

fn vsock_addr(cid: u32, port: u32) -> (libc::sockaddr_vm, libc::socklen_t) {
    let addr = libc::sockaddr_vm {
        svm_family: libc::AF_VSOCK as libc::sa_family_t,
        svm_reserved1: 0,
        svm_port: port,
        svm_cid: cid,
        svm_zero: [0; 4],
    };
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    (addr, len)
}

/// The VM's virtio-blk disks by serial, each serial read once: reading
/// `/sys/block/vdX/serial` sends the device a request, which costs a few
/// tens of milliseconds where guest kernel code is emulated, and a
/// container's assembly looks up every layer, writable disk and volume.
#[derive(Debug)]
pub struct Disks {
    /// The `/sys/block` directory.
    sys_block: PathBuf,
    /// Each `vdX` seen so far and its serial.
    serials: Vec<(String, String)>,
}

impl Disks {
    /// The guest's disks (none read yet).
    pub fn new() -> Self {
        Self::at(Path::new("/sys/block"))
    }

    fn at(sys_block: &Path) -> Self {
        Self {
            sys_block: sys_block.to_path_buf(),
            serials: Vec::new(),
        }
    }

    /// Finds the disk whose serial is `serial`, e.g. `/dev/vdb`, once it
    /// has a size: after a restore from a snapshot the disk's capacity
    /// arrives asynchronously (a config-change interrupt), so a disk of
    /// size 0 is waited for like a missing one, within [`DISK_TIMEOUT`].
    pub fn find(&mut self, serial: &str) -> Result<PathBuf, SysError> {
        let deadline = Instant::now() + DISK_TIMEOUT;
        loop {
            let scan = self.scan(serial);
            if let Scan::Ready(name) = scan {
                return Ok(PathBuf::from(format!("/dev/{name}")));
            }
            if Instant::now() >= deadline {
                return Err(match scan {
                    Scan::Empty(_) => SysError::DiskEmpty(serial.to_string()),
                    _ => SysError::DiskNotFound(serial.to_string()),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Looks for `serial` among the disks, reading the serials of disks
    /// not seen before; the size is read each time.
    fn scan(&mut self, serial: &str) -> Scan {
        if !self.serials.iter().any(|(_, s)| s == serial) {
            self.read_new_serials();
        }
        let Some((name, _)) = self.serials.iter().find(|(_, s)| s == serial) else {
            return Scan::Missing;
        };
        let sectors = std::fs::read_to_string(self.sys_block.join(name).join("size"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if sectors > 0 {
            Scan::Ready(name.clone())
        } else {
            Scan::Empty(name.clone())
        }
    }

    /// Records the serial of each `vdX` not recorded yet.
    fn read_new_serials(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.sys_block) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("vd") || self.serials.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let Ok(found) = std::fs::read(entry.path().join("serial")) else {
                continue;
            };
            let found = String::from_utf8_lossy(&found);
            let found = found.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            self.serials.push((name, found.to_string()));
        }
    }
}

/// What a look for a disk found.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// No disk has the serial.
    Missing,
    /// This disk (`vdX`) has the serial but a size of 0 (or none readable).
    Empty(String),
    /// This disk (`vdX`) has the serial and a size.
    Ready(String),
}

/// Unmounts `target`, lazily if it is busy.
pub fn unmount(target: &Path) -> io::Result<()> {
    if rustix::mount::unmount(target, UnmountFlags::empty()).is_ok() {
        return Ok(());
    }
    Ok(rustix::mount::unmount(target, UnmountFlags::DETACH)?)
}

/// Sends SIGKILL to every process but PID 1 (without reaping).
pub fn kill_everyone() {
    // rustix has no call for kill(-1): "every process we may signal".
    // SAFETY: kill takes two integers and touches no memory of ours.
    unsafe { libc::kill(-1, libc::SIGKILL) };
}

/// Kills every other process and reaps them (bounded wait).
pub fn kill_all() {
    kill_everyone();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match wait(WaitOptions::NOHANG) {
            Err(_) => return, // ECHILD: nothing left
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Ok(Some(_)) => {}
        }
    }
}

/// Powers the VM off. Never returns.
pub fn power_off() -> ! {
    rustix::fs::sync();
    let _ = rustix::system::reboot(RebootCommand::PowerOff);
    // reboot failed (should not happen for PID 1): idle instead of exiting,
    // which would panic the kernel.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The kernel's count of OOM kills since boot (`oom_kill` in
/// /proc/vmstat; 0 if it cannot be read).
pub fn oom_kills() -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .ok()
        .and_then(|text| parse_oom_kills(&text))
        .unwrap_or(0)
}

/// The `oom_kill` counter of /proc/vmstat's text.
fn parse_oom_kills(vmstat: &str) -> Option<u64> {
    vmstat
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_counter_is_read_from_vmstat() {
        let text = "nr_free_pages 1\noom_kill_other 5\noom_kill 3\npgfault 9\n";
        assert_eq!(parse_oom_kills(text), Some(3));
        assert_eq!(parse_oom_kills("pgfault 9\n"), None);
        assert_eq!(parse_oom_kills("oom_kill x\n"), None);
    }

    fn disk(sys_block: &Path, name: &str, serial: &str, size: Option<&str>) {
        let dir = sys_block.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("serial"), serial).unwrap();
        if let Some(size) = size {
            std::fs::write(dir.join("size"), size).unwrap();
        }
    }

    #[test]
    fn disks_are_found_by_serial_once_they_have_a_size() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        disk(sys, "vda", "husk-agent", Some("2048\n"));
        disk(sys, "vdb", "rw\0\0", Some("0\n"));
        disk(sys, "vdc", "layer0\n", Some("16384\n"));
        disk(sys, "vdd", "vol0", None);
        disk(sys, "sda", "layer1", Some("8\n"));
        let mut disks = Disks::at(sys);
        assert_eq!(disks.scan("layer0"), Scan::Ready("vdc".into()));
        assert_eq!(disks.scan("rw"), Scan::Empty("vdb".into()));
        assert_eq!(disks.scan("vol0"), Scan::Empty("vdd".into()));
        assert_eq!(disks.scan("layer1"), Scan::Missing, "not virtio-blk");
        assert_eq!(disks.scan("nope"), Scan::Missing);
        assert_eq!(Disks::at(&sys.join("absent")).scan("rw"), Scan::Missing);
        // The capacity update arrives: the same disk is now ready.
        std::fs::write(sys.join("vdb/size"), "16777216\n").unwrap();
        assert_eq!(disks.scan("rw"), Scan::Ready("vdb".into()));
        // A disk that appears later is found; known serials are not reread.
        disk(sys, "vde", "late", Some("8\n"));
        std::fs::write(sys.join("vdc/serial"), "changed").unwrap();
        assert_eq!(disks.scan("late"), Scan::Ready("vde".into()));
        assert_eq!(disks.scan("layer0"), Scan::Ready("vdc".into()));
    }
}
