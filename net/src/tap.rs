//! TAP devices for `--network tap` (root): a persistent TAP device per
//! container, created before the VM starts (so the host's own bridge or
//! CNI setup can attach it), brought up, and deleted with the container.

use std::io;
use std::os::fd::AsRawFd;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// Errors creating or deleting a TAP device.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is not a valid interface name.
    #[error("invalid TAP device name {0:?} (1-15 characters, no '/', ':' or spaces)")]
    Name(String),
    /// Not root / no CAP_NET_ADMIN.
    #[error("--network tap needs root (CAP_NET_ADMIN) to create {0}")]
    Permission(String),
    /// Another failure.
    #[error("TAP device {name}: {op}")]
    Io {
        /// Device name.
        name: String,
        /// The failed step.
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// `struct ifreq` with the flags member of its union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl IfReq {
    fn new(name: &str, flags: libc::c_short) -> Self {
        let mut r = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags,
            _pad: [0; 22],
        };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        r
    }
}

/// Whether `name` can name a network interface.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name.contains(['/', ':', ' ', '\0', '\t', '\n'])
}

fn io_err(name: &str, op: &'static str, source: io::Error) -> TapError {
    if source.kind() == io::ErrorKind::PermissionDenied {
        return TapError::Permission(name.to_string());
    }
    TapError::Io {
        name: name.to_string(),
        op,
        source,
    }
}

/// Attaches to (or creates) the TAP device `name` and sets its persistence.
fn set_persist(name: &str, persist: bool) -> Result<(), TapError> {
    if !valid_name(name) {
        return Err(TapError::Name(name.to_string()));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| io_err(name, "open /dev/net/tun", e))?;
    let mut req = IfReq::new(name, IFF_TAP | IFF_NO_PI);
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is
    // laid out as (40 bytes); it outlives the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(io_err(name, "TUNSETIFF", io::Error::last_os_error()));
    }
    // SAFETY: TUNSETPERSIST takes an integer argument by value.
    if unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            TUNSETPERSIST,
            libc::c_ulong::from(persist),
        )
    } < 0
    {
        return Err(io_err(name, "TUNSETPERSIST", io::Error::last_os_error()));
    }
    Ok(())
}

fn inet_socket() -> io::Result<std::os::fd::OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    Ok(rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// The flags of interface `name` (ENODEV if there is none).
pub fn interface_flags(name: &str) -> io::Result<libc::c_short> {
    if !valid_name(name) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let sock = inet_socket()?;
    let mut req = IfReq::new(name, 0);
    // SAFETY: SIOCGIFFLAGS fills the flags of a `struct ifreq`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(req.flags)
}

/// Sets IFF_UP on interface `name`.
fn set_up(name: &str) -> Result<(), TapError> {
    let sock = inet_socket().map_err(|e| io_err(name, "socket", e))?;
    let flags = interface_flags(name).map_err(|e| io_err(name, "SIOCGIFFLAGS", e))?;
    let req = IfReq::new(name, flags | libc::IFF_UP as libc::c_short);
    // SAFETY: SIOCSIFFLAGS reads a `struct ifreq`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io_err(name, "SIOCSIFFLAGS", io::Error::last_os_error()));
    }
    Ok(())
}

/// A persistent TAP device, deleted on [`Tap::delete`] or drop.
#[derive(Debug)]
pub struct Tap {
    name: String,
    deleted: bool,
}

impl Tap {
    /// Creates the persistent TAP device `name` and brings it up.
    pub fn create(name: &str) -> Result<Self, TapError> {
        set_persist(name, true)?;
        let tap = Tap {
            name: name.to_string(),
            deleted: false,
        };
        set_up(name)?;
        Ok(tap)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the device (once no process holds it open any more).
    pub fn delete(&mut self) -> Result<(), TapError> {
        if self.deleted {
            return Ok(());
        }
        self.deleted = true;
        set_persist(&self.name, false)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Err(e) = self.delete() {
            log::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("husk0"));
        assert!(valid_name("a23456789012345"));
        assert!(!valid_name("a234567890123456"));
        for bad in ["", "a/b", "a b", "a:1", ".."] {
            assert!(!valid_name(bad), "{bad:?}");
            assert!(matches!(Tap::create(bad), Err(TapError::Name(_))));
        }
    }

    /// Runs in a thread of its own inside a new network namespace (needs
    /// root; skipped otherwise), so the host's interfaces are untouched.
    #[test]
    fn create_and_delete_in_a_private_netns() {
        std::thread::spawn(|| {
            // SAFETY: unshare(2) on this thread only; no memory effects.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!("skipped: cannot create a network namespace (not root)");
                return;
            }
            let name = "husktest0";
            let mut tap = Tap::create(name).unwrap();
            let flags = interface_flags(name).unwrap();
            assert!(flags & libc::IFF_UP as libc::c_short != 0, "IFF_UP set");
            tap.delete().unwrap();
            let gone = interface_flags(name).unwrap_err();
            assert_eq!(
                gone.raw_os_error(),
                Some(rustix::io::Errno::NODEV.raw_os_error())
            );
        })
        .join()
        .unwrap();
    }
}
