//! The control protocol between the caller and its `husk-vmm` process: one
//! postcard-encoded message per `SOCK_SEQPACKET` record, descriptors
//! passed with `SCM_RIGHTS` alongside [`Launch`].
//!
//! Caller → VMM: [`Launch`] (with the vsock listener and, for a stream
//! network backend, its socket), then [`ToVmm::Pause`] and
//! [`ToVmm::Resume`] (each answered by [`FromVmm::Answer`]), then
//! [`ToVmm::Stop`] at most once; for a [`VmSpec::Template`],
//! [`ToVmm::SaveTemplate`] (answered, then the VM ends). VMM → caller: [`FromVmm::Pid`] (from the
//! forking parent, any time), then [`FromVmm::Running`] or
//! [`FromVmm::Failed`], then answers, then [`FromVmm::Ended`].
//! The VMM stops its VM when the caller's end closes (the caller died).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::JailError;

/// The largest record (a launch with many disks fits easily).
const MAX_RECORD: usize = 64 << 10;

/// Most descriptors one record carries.
pub const MAX_FDS: usize = 4;

/// What the VMM process builds.
#[derive(Debug, Serialize, Deserialize)]
pub enum VmSpec {
    /// Boot from the kernel.
    Boot(vmm::VmConfig),
    /// Restore a snapshot.
    Restore(vmm::RestoreConfig),
    /// Boot a warm-start template: like [`VmSpec::Boot`], but the main
    /// thread stays without a seccomp filter (it captures the vCPUs' and
    /// the VM's state and writes the snapshot on [`ToVmm::SaveTemplate`]);
    /// the vCPU and device threads are filtered as always.
    Template(vmm::VmConfig),
}

impl VmSpec {
    /// The VM's boot configuration, unless it is a restore.
    pub fn boot_config(&self) -> Option<&vmm::VmConfig> {
        match self {
            VmSpec::Boot(c) | VmSpec::Template(c) => Some(c),
            VmSpec::Restore(_) => None,
        }
    }
}

/// The network interface (its backend may be a passed socket).
#[derive(Debug, Serialize, Deserialize)]
pub struct NetSpec {
    /// MAC address.
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u16,
    /// The backend.
    pub backend: NetBackendSpec,
    /// Guest destinations kept from the backend.
    pub egress: vmm::EgressPolicy,
    /// Limits on the frames each way.
    pub rate_limit: vmm::NetRateLimit,
}

/// [`vmm::NetBackend`] with the stream replaced by a passed descriptor.
#[derive(Debug, Serialize, Deserialize)]
pub enum NetBackendSpec {
    /// Connect to this socket (before the jail is entered).
    Unix(PathBuf),
    /// The third descriptor passed with [`Launch`].
    Stream,
    /// Open this TAP device (before the network namespace is left).
    Tap(String),
}

/// The jail the VMM process builds around itself.
#[derive(Debug, Serialize, Deserialize)]
pub struct JailSpec {
    /// The uid and gid to run as.
    pub uid: u32,
    /// Gid.
    pub gid: u32,
    /// An empty host directory the jail's tmpfs root is mounted on.
    pub root: PathBuf,
    /// The `cgroup.procs` files to join.
    pub cgroup_procs: Vec<PathBuf>,
    /// The cgroup's directories, removed by the waiter at the end.
    pub cgroup_dirs: Vec<PathBuf>,
    /// The `cgroup.procs` files the waiter moves to first.
    pub cgroup_leave: Vec<PathBuf>,
    /// The host's agent socket (`<vsock>_1024`, a real path), bound into
    /// the root as [`JailSpec::agent_target`].
    pub agent_socket: PathBuf,
    /// Where the agent socket is inside the root.
    pub agent_target: PathBuf,
    /// Most tasks of the jail uid (RLIMIT_NPROC).
    pub nproc: u64,
}

/// The first message: the VM and the jail. Its descriptors: the vsock
/// listener, the jail uid's lock (held by the waiter until the jail is
/// gone), then the network stream if [`NetBackendSpec::Stream`], then the
/// virtio-fs socket if the VM has a virtio-fs device.
#[derive(Debug, Serialize, Deserialize)]
pub struct Launch {
    /// The VM (its network is [`Launch::net`]).
    pub vm: VmSpec,
    /// The network interface, if any.
    pub net: Option<NetSpec>,
    /// The jail.
    pub jail: JailSpec,
}

/// Caller → VMM after the launch.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToVmm {
    /// Stop the VM.
    Stop,
    // `husk pause` / `husk unpause`, each answered by [`FromVmm::Answer`].
    /// Suspend the VM's vCPUs (and devices).
    Pause,
    /// Resume a suspended VM.
    Resume,
    /// Pause a [`VmSpec::Template`] VM for good and save it into the two
    /// passed descriptors (the state file, then the memory file: empty,
    /// open for writing); answered by [`FromVmm::Answer`], then the VM
    /// ends.
    SaveTemplate,
}

/// How the VM ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum VmEnd {
    /// The guest powered off.
    PowerOff,
    /// The guest rebooted.
    Reboot,
    /// Stopped on request.
    Stopped,
    /// The VM failed (the VMM's error chain).
    Failed(String),
}

/// VMM → caller.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromVmm {
    /// The VMM's pid as the host sees it.
    Pid(u32),
    /// The VM was built and runs, jailed.
    Running,
    /// The VM could not be built (or the jail could not be entered).
    Failed {
        /// The snapshot's files are at fault.
        damaged: bool,
        /// The error chain.
        message: String,
    },
    /// The VM ended.
    Ended(VmEnd),
    /// The answer to [`ToVmm::Pause`] or [`ToVmm::Resume`]: `None` when
    /// done, else why not.
    Answer(Option<String>),
}

/// Sends `msg` (and `fds`) as one record.
pub fn send<T: Serialize>(
    sock: BorrowedFd<'_>,
    msg: &T,
    fds: &[BorrowedFd<'_>],
) -> Result<(), JailError> {
    let bytes = postcard::to_allocvec(msg).map_err(|e| JailError::Protocol(e.to_string()))?;
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(JailError::Protocol("too many descriptors".into()));
    }
    rustix::net::sendmsg(
        sock,
        &[IoSlice::new(&bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .map_err(|e| super::io_ctx("sending to the VMM control socket")(e.into()))?;
    Ok(())
}

/// Receives one record: `None` at EOF (the peer is gone).
pub fn recv<T: DeserializeOwned>(sock: impl AsFd) -> Result<Option<(T, Vec<OwnedFd>)>, JailError> {
    let mut buf = vec![0u8; MAX_RECORD];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match rustix::net::recvmsg(
            sock.as_fd(),
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r,
        }
    }
    .map_err(|e| super::io_ctx("reading the VMM control socket")(e.into()))?;
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(passed) = msg {
            fds.extend(passed);
        }
    }
    if got.bytes == 0 {
        return Ok(None);
    }
    let msg =
        postcard::from_bytes(&buf[..got.bytes]).map_err(|e| JailError::Protocol(e.to_string()))?;
    Ok(Some((msg, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_messages_and_descriptors() {
        let (a, b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let (r, w) = rustix::pipe::pipe().unwrap();
        send(a.as_fd(), &FromVmm::Pid(42), &[w.as_fd()]).unwrap();
        send(a.as_fd(), &ToVmm::Stop, &[]).unwrap();
        let (msg, fds) = recv::<FromVmm>(&b).unwrap().unwrap();
        assert!(matches!(msg, FromVmm::Pid(42)));
        assert_eq!(fds.len(), 1);
        rustix::io::write(&fds[0], b"x").unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(rustix::io::read(&r, &mut byte).unwrap(), 1);
        assert!(matches!(recv::<ToVmm>(&b).unwrap(), Some((ToVmm::Stop, _))));
        drop(a);
        assert!(recv::<ToVmm>(&b).unwrap().is_none());
    }
}
