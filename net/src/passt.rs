//! passt, the user-mode backend: one process per container, connected to
//! the VMM's virtio-net device through one end of a socket pair (`passt
//! -F FD`, which also makes it quit when the VMM closes its end).
//!
//! Addresses (fixed, as with QEMU's user networking): the guest is
//! [`GUEST_IP`]/24 with gateway [`GATEWAY_IP`]; TCP connections and UDP
//! traffic to the gateway reach the host's loopback (passt's default
//! gateway mapping); DNS queries to [`DNS_IP`] go to the host's first
//! resolver (`--dns-forward`).
//!
//! The guest does not reach the host by default: the VMM's virtio-net
//! device drops what the guest sends to the gateway ([`egress_policy`])
//! unless the container opted in (`--add-host NAME:host-gateway`). passt's
//! `--no-map-gw` is not the way: it would turn traffic to the gateway into
//! connections to that private address on the host's network.

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ports::{port_is_bound, PortMapping, Proto};

/// The guest's address.
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The guest's prefix length.
pub const PREFIX_LEN: u8 = 24;
/// The gateway; connections to it reach the host's loopback.
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The DNS address the guest uses; passt forwards it to the host's resolver.
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// passt's MTU: 64 KiB frames, no segmentation on the way.
pub const MTU: u16 = 65520;
/// Host-local destinations no guest frame may carry: passt would connect
/// to them on the host (`0.0.0.0` reaches the host's loopback too).
const HOST_LOCAL: [(Ipv4Addr, u8); 2] = [
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(0, 0, 0, 0), 8),
];
/// How long passt may take to bind the published ports.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long passt may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors starting passt.
#[derive(Debug, thiserror::Error)]
pub enum PasstError {
    /// The passt binary is missing.
    #[error("passt not found: apt-get install passt")]
    NotFound,
    /// passt could not be started.
    #[error("cannot start passt ({0})")]
    Spawn(PathBuf, #[source] std::io::Error),
    /// A socket pair or log file could not be created.
    #[error("cannot set up passt's socket")]
    Io(#[source] std::io::Error),
    /// passt exited during startup.
    #[error("passt exited during startup: {0}")]
    Exited(String),
    /// passt did not bind a published port in time.
    #[error("passt did not bind host port {0}/{1} (is it in use?)")]
    NotBound(u16, Proto),
}

/// A running passt process.
pub struct Passt {
    child: Option<Child>,
    /// The VMM's end of the socket pair.
    stream: Arc<UnixStream>,
    log: std::fs::File,
}

/// What the guest may not send to passt: always host-local addresses
/// (127.0.0.0/8, 0.0.0.0/8), and [`GATEWAY_IP`], which passt maps to the
/// host's loopback, unless `host_access`. [`DNS_IP`] stays reachable.
pub fn egress_policy(host_access: bool) -> vmm::EgressPolicy {
    let mut blocked: Vec<vmm::Ipv4Net> = HOST_LOCAL
        .iter()
        .filter_map(|&(addr, len)| vmm::Ipv4Net::new(addr, len))
        .collect();
    if !host_access {
        blocked.insert(0, vmm::Ipv4Net::host(GATEWAY_IP));
    }
    vmm::EgressPolicy { blocked }
}

/// Finds `passt` in `PATH` (or /usr/bin, /usr/sbin).
pub fn find_passt() -> Result<PathBuf, PasstError> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join("passt"))
        .find(|p| p.is_file())
        .ok_or(PasstError::NotFound)
}

/// passt's command line, after `-F FD`.
pub fn passt_args(ports: &[PortMapping]) -> Vec<OsString> {
    let mut args: Vec<String> = vec![
        "-f".into(),
        "-q".into(),
        "-4".into(),
        "-a".into(),
        GUEST_IP.to_string(),
        "-n".into(),
        PREFIX_LEN.to_string(),
        "-g".into(),
        GATEWAY_IP.to_string(),
        "-m".into(),
        MTU.to_string(),
        "--dns-forward".into(),
        DNS_IP.to_string(),
    ];
    for proto in [Proto::Tcp, Proto::Udp] {
        let flag = match proto {
            Proto::Tcp => "-t",
            Proto::Udp => "-u",
        };
        let mut any = false;
        for p in ports.iter().filter(|p| p.proto == proto) {
            let addr = p.host_ip.map(|ip| format!("{ip}/")).unwrap_or_default();
            args.push(flag.into());
            args.push(format!("{addr}{}:{}", p.host_port, p.container_port));
            any = true;
        }
        if !any {
            // Explicit, so passt forwards nothing of its own accord.
            args.push(flag.into());
            args.push("none".into());
        }
    }
    args.into_iter().map(OsString::from).collect()
}

impl Passt {
    /// Starts passt with `ports` (host ports already resolved) and waits
    /// until it listens on all of them.
    pub fn start(binary: &Path, ports: &[PortMapping]) -> Result<Self, PasstError> {
        let (ours, theirs) = UnixStream::pair().map_err(PasstError::Io)?;
        let log = tempfile::tempfile().map_err(PasstError::Io)?;
        let theirs: OwnedFd = theirs.into();
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(binary);
        cmd.arg("-F")
            .arg(fd.to_string())
            .args(passt_args(ports))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.try_clone().map_err(PasstError::Io)?);
        // passt exits when the other end closes (`-F` implies one-off
        // mode), so it cannot outlive the husk process holding that end.
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls fcntl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                // Keep passt's end of the pair open across exec.
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PasstError::NotFound,
            _ => PasstError::Spawn(binary.to_path_buf(), e),
        })?;
        drop(theirs);
        let mut passt = Passt {
            child: Some(child),
            stream: Arc::new(ours),
            log,
        };
        if let Err(e) = passt.wait_ready(ports) {
            passt.stop();
            return Err(e);
        }
        Ok(passt)
    }

    /// The VMM's end of the connection to passt.
    pub fn stream(&self) -> Arc<UnixStream> {
        self.stream.clone()
    }

    /// passt's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn wait_ready(&mut self, ports: &[PortMapping]) -> Result<(), PasstError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending: Vec<&PortMapping> = ports.iter().collect();
        loop {
            pending.retain(|p| !port_is_bound(p.host_port, p.proto));
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    let log = self.log_text();
                    let why = if log.is_empty() {
                        status.to_string()
                    } else {
                        log
                    };
                    return Err(PasstError::Exited(why));
                }
            }
            let Some(first) = pending.first() else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(PasstError::NotBound(first.host_port, first.proto));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// passt's error output so far, minus syslog noise, on one line.
    fn log_text(&mut self) -> String {
        let mut text = String::new();
        if self.log.seek(SeekFrom::Start(0)).is_ok() {
            let _ = (&self.log).take(64 * 1024).read_to_string(&mut text);
        }
        text.lines()
            .map(str::trim)
            .filter(|l| {
                !l.is_empty()
                    && !l.starts_with("Failed to send")
                    && !l.starts_with("Don't run as root")
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Stops passt (SIGTERM, then SIGKILL after a grace period) and reaps
    /// it. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // The pid is our unreaped child, so it cannot have been reused.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        );
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
impl Passt {
    /// Detaches the process, so dropping `self` only closes the socket.
    pub(crate) fn take_child_for_test(&mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        self.stop();
    }
}
