//! The caller's side of a jailed VM: [`VmProcess`] starts `husk-vmm`,
//! hands it the VM and its descriptors, and owns everything the jail
//! leaves on the host (uid lease, cgroup, root directory), removed when
//! the VM ends however the VMM process ended.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use images::store::FileLock;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use super::cgroup::{Cgroup, Limits};
use super::proto::{
    self, FromVmm, JailSpec, Launch, NetBackendSpec, NetSpec, ToVmm, VmEnd, VmSpec,
};
use super::uid::{self, UidLease, UidRange};
use super::{
    io_ctx, jail_base, make_private_dir, JailError, JailInfo, MEMORY_OVERHEAD_MIB, PIDS_OVERHEAD,
};
use crate::contract::{self, AGENT_PORT};
use crate::signals::Signals;
use crate::vmthread::{PauseError, VmFailure, VmResult, STOP_TIMEOUT};
use crate::wait::poll_readable;

/// How long the VMM process may take to build the VM and enter its jail.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(120);

/// The agent socket's path inside the jail: the VMM connects guest
/// connections to host port P to `/v.sock_P`.
const JAIL_VSOCK: &str = "/v.sock";

/// What the VM is, for [`VmProcess::spawn`].
pub(crate) struct VmRequest<'a> {
    /// Boot or restore (vsock and console are replaced here).
    pub spec: VmSpec,
    /// The network interface.
    pub net: Option<&'a vmm::NetConfig>,
    /// The host's vsock socket.
    pub vsock: &'a Path,
    /// The console log.
    pub console: &'a Path,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory.
    pub memory_mib: u32,
}

/// What the jail holds on the host, released on drop (after the VMM
/// process is gone).
struct Resources {
    cgroup: Cgroup,
    root: PathBuf,
    lease: UidLease,
}

impl Drop for Resources {
    fn drop(&mut self) {
        self.cgroup.remove();
        let _ = std::fs::remove_dir(&self.root);
    }
}

/// A VM running in a jailed `husk-vmm` process.
pub struct VmProcess {
    child: Child,
    control: OwnedFd,
    /// Readable once the process has exited.
    pidfd: OwnedFd,
    console: Option<JoinHandle<()>>,
    info: JailInfo,
    result: Option<VmResult>,
    // `husk pause`: the end report read while waiting for an answer.
    ended: Option<VmEnd>,
    // Dropped last.
    _resources: Resources,
}

impl VmProcess {
    /// Starts the VM of `req` in a new jail and waits until it runs.
    pub(crate) fn spawn(req: VmRequest<'_>) -> Result<VmProcess, JailError> {
        let bin = crate::assets::vmm()?;
        let base = jail_base();
        let lease = uid::allocate(UidRange::configured()?, &base.join("uids"))?;
        let uid = lease.uid();
        let limits = Limits {
            memory: (u64::from(req.memory_mib) + MEMORY_OVERHEAD_MIB) << 20,
            pids: u64::from(req.vcpus) + PIDS_OVERHEAD,
            // The vCPUs plus the device thread.
            cpus: u64::from(req.vcpus) + 1,
        };
        let cgroup = Cgroup::create(&format!("husk-vmm-{uid}"), &limits)?;
        let root = base.join(format!("root-{uid}"));
        let resources = Resources {
            cgroup,
            root: root.clone(),
            lease,
        };
        make_private_dir(&root)?;
        sweep(&base, &resources.cgroup);

        let (agent_real, listener) = host_sockets(req.vsock, uid)?;
        let (child, ours, pidfd, console) = start_child(&bin, req.console)?;
        let mut process = VmProcess {
            child,
            control: ours,
            pidfd,
            console,
            info: JailInfo {
                pid: 0,
                uid,
                gid: uid,
                cgroup: resources.cgroup.display().to_string(),
            },
            result: None,
            ended: None,
            _resources: resources,
        };
        let fs_socket = req
            .spec
            .boot_config()
            .and_then(|c| c.fs.as_ref()?.socket.clone());
        let launch = Launch {
            vm: jailed_spec(req.spec),
            net: req.net.map(net_spec),
            jail: JailSpec {
                uid,
                gid: uid,
                root,
                cgroup_procs: process._resources.cgroup.procs_files(),
                cgroup_dirs: process._resources.cgroup.dirs().to_vec(),
                cgroup_leave: process._resources.cgroup.leave_files().to_vec(),
                agent_socket: agent_real,
                agent_target: contract::host_port_socket(Path::new(JAIL_VSOCK), AGENT_PORT),
                nproc: limits.pids,
            },
        };
        let mut fds: Vec<BorrowedFd<'_>> =
            vec![listener.as_fd(), process._resources.lease.lock_fd()];
        if let Some(vmm::NetBackend::Stream(s)) = req.net.map(|n| &n.backend) {
            fds.push(s.as_fd());
        }
        if let Some(s) = &fs_socket {
            fds.push(s.as_fd());
        }
        proto::send(process.control.as_fd(), &launch, &fds)?;
        drop(listener);
        process.wait_running()?;
        Ok(process)
    }

    /// Waits for the VMM's pid and `Running` (or its failure).
    fn wait_running(&mut self) -> Result<(), JailError> {
        let deadline = Instant::now() + LAUNCH_TIMEOUT;
        let mut running = false;
        while !running || self.info.pid == 0 {
            if poll_readable(&[self.control.as_fd()], Some(deadline))
                .map_err(io_ctx("waiting for the VMM"))?
                .is_empty()
            {
                return Err(JailError::Timeout(LAUNCH_TIMEOUT.as_secs()));
            }
            match proto::recv::<FromVmm>(&self.control)? {
                Some((FromVmm::Pid(pid), _)) => self.info.pid = pid,
                Some((FromVmm::Running, _)) => running = true,
                Some((FromVmm::Failed { damaged, message }, _)) => {
                    return Err(JailError::Vm { damaged, message })
                }
                Some((FromVmm::Ended(end), _)) => return Err(JailError::Died(format!("{end:?}"))),
                Some((FromVmm::Answer(_), _)) => {}
                None => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(JailError::Died(status));
                }
            }
        }
        Ok(())
    }

    /// The jail (for `husk inspect`).
    pub fn info(&self) -> &JailInfo {
        &self.info
    }

    /// Readable once the VMM process has exited.
    pub fn done_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// [`VmProcess::done_fd`] as a raw number.
    pub fn done_raw_fd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }

    /// Whether the VMM process has exited.
    pub fn is_done(&self) -> bool {
        self.result.is_some()
            || poll_readable(&[self.done_fd()], Some(Instant::now())).is_ok_and(|r| !r.is_empty())
    }

    /// Asks the VM to stop (returns at once).
    pub fn request_stop(&self) {
        let _ = proto::send(self.control.as_fd(), &ToVmm::Stop, &[]);
    }

    /// Waits until the VMM process exits (true), a signal arrives or the
    /// deadline passes (false).
    pub fn wait_done(&self, signals: Option<&Signals>, deadline: Instant) -> bool {
        crate::wait::until_done(self.done_fd(), signals, deadline)
    }

    /// Stops the VM (if still running), waiting at most [`STOP_TIMEOUT`]
    /// before killing the process, and returns how it ended.
    pub fn stop(&mut self) -> Option<&VmResult> {
        if self.result.is_none() {
            self.request_stop();
            let deadline = Instant::now() + STOP_TIMEOUT;
            while !self.wait_done(None, deadline) {
                if Instant::now() >= deadline {
                    let _ = self.child.kill();
                    break;
                }
            }
            self.result = Some(self.collect());
        }
        self.result.as_ref()
    }

    /// Suspends (`pause`) or resumes the VM: sends `msg` and waits for its
    /// answer.
    pub fn control(&mut self, msg: ToVmm, timeout: Duration) -> Result<(), PauseError> {
        self.request(msg, &[], timeout)
    }

    /// Saves a [`VmSpec::Template`] VM into `files` (made here, empty, for
    /// the jailed process to write): the VM ends with it.
    pub fn save_template(
        &mut self,
        files: &vmm::SnapshotFiles,
        timeout: Duration,
    ) -> Result<(), PauseError> {
        let create = |path: &std::path::Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| PauseError::Ended(format!("creating {}: {e}", path.display())))
        };
        let state = create(&files.state)?;
        let memory = create(&files.memory)?;
        self.request(
            ToVmm::SaveTemplate,
            &[state.as_fd(), memory.as_fd()],
            timeout,
        )
    }

    /// Sends `msg` with `fds` and waits for its answer.
    fn request(
        &mut self,
        msg: ToVmm,
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> Result<(), PauseError> {
        if self.result.is_some() || self.ended.is_some() {
            return Err(PauseError::Ended("the VM has ended".into()));
        }
        let lost = |e: JailError| PauseError::Ended(e.to_string());
        proto::send(self.control.as_fd(), &msg, fds).map_err(lost)?;
        let deadline = Instant::now() + timeout;
        loop {
            let ready = poll_readable(&[self.control.as_fd()], Some(deadline))
                .map_err(|e| PauseError::Ended(e.to_string()))?;
            if ready.is_empty() {
                return Err(PauseError::Timeout(timeout.as_secs()));
            }
            match proto::recv::<FromVmm>(&self.control).map_err(lost)? {
                Some((FromVmm::Answer(None), _)) => return Ok(()),
                Some((FromVmm::Answer(Some(why)), _)) => return Err(PauseError::Ended(why)),
                Some((FromVmm::Ended(end), _)) => {
                    self.ended = Some(end);
                    return Err(PauseError::Ended("the VM has ended".into()));
                }
                Some(_) => {}
                None => return Err(PauseError::Ended("the VMM process has ended".into())),
            }
        }
    }

    /// Reaps the (exited or killed) process and reads its report.
    fn collect(&mut self) -> VmResult {
        let status = self.child.wait();
        let mut end = self.ended.take();
        while poll_readable(&[self.control.as_fd()], Some(Instant::now()))
            .is_ok_and(|r| !r.is_empty())
        {
            match proto::recv::<FromVmm>(&self.control) {
                Ok(Some((FromVmm::Ended(e), _))) => end = Some(e),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if let Some(t) = self.console.take() {
            let _ = t.join();
        }
        match end {
            Some(VmEnd::PowerOff) => Ok(vmm::ExitReason::PowerOff),
            Some(VmEnd::Reboot) => Ok(vmm::ExitReason::Reboot),
            Some(VmEnd::Stopped) => Ok(vmm::ExitReason::Stopped),
            Some(VmEnd::Failed(m)) => Err(VmFailure::Jailed(m)),
            None => Err(VmFailure::Jailed(format!(
                "the VMM process ended without a report ({})",
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string())
            ))),
        }
    }
}

impl Drop for VmProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Hands the agent socket (`<vsock>_1024`, bound by the caller) to the
/// jail's uid and binds the VMM's vsock listener; returns the agent
/// socket's real path (for the bind mount) and the listener.
fn host_sockets(vsock: &Path, uid: u32) -> Result<(PathBuf, UnixListener), JailError> {
    let agent = contract::host_port_socket(vsock, AGENT_PORT);
    let agent_real =
        std::fs::canonicalize(&agent).map_err(io_ctx(format!("resolving {}", agent.display())))?;
    let id = Some(rustix::fs::Uid::from_raw(uid));
    rustix::fs::chown(&agent_real, id, Some(rustix::fs::Gid::from_raw(uid)))
        .map_err(|e| io_ctx(format!("chown {}", agent_real.display()))(e.into()))?;
    let _ = std::fs::remove_file(vsock);
    let listener =
        UnixListener::bind(vsock).map_err(io_ctx(format!("listening on {}", vsock.display())))?;
    Ok((agent_real, listener))
}

/// The started `husk-vmm` process, our end of its control socket, its
/// pidfd and the thread copying its console.
type Started = (Child, OwnedFd, OwnedFd, Option<JoinHandle<()>>);

/// Starts `bin` with a control socket as stdin and a pipe as stdout,
/// whose data a `console` thread writes to `console` (capped, rotated).
fn start_child(bin: &Path, console: &Path) -> Result<Started, JailError> {
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| io_ctx("socketpair")(e.into()))?;
    let (console_r, console_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| io_ctx("pipe")(e.into()))?;
    let console_file = vmm::logging::CappedFile::create(console, vmm::logging::CONSOLE_MAX_BYTES)
        .map_err(io_ctx(format!("creating {}", console.display())))?;
    let mut child = Command::new(bin)
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::from(console_w))
        .spawn()
        .map_err(io_ctx(format!("starting {}", bin.display())))?;
    let thread = std::thread::Builder::new()
        .name("console".into())
        .spawn(move || copy_console(File::from(console_r), console_file))
        .ok();
    match rustix::process::pidfd_open(
        rustix::process::Pid::from_child(&child),
        rustix::process::PidfdFlags::empty(),
    ) {
        Ok(pidfd) => Ok((child, ours, pidfd, thread)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(io_ctx("pidfd_open")(e.into()))
        }
    }
}

/// Removes the root directories and cgroups of jails whose uid is no
/// longer held (their caller was killed before it could clean up),
/// holding that uid's lock meanwhile.
fn sweep(base: &Path, cgroup: &Cgroup) {
    let stale = |name: &str, prefix: &str| {
        let uid = name.strip_prefix(prefix)?.parse::<u32>().ok()?;
        FileLock::try_exclusive(&base.join(format!("uids/{uid}.lock")))
            .ok()
            .flatten()
    };
    for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
        if let Some(_lock) = stale(&e.file_name().to_string_lossy(), "root-") {
            let _ = std::fs::remove_dir(e.path());
        }
    }
    cgroup.sweep_siblings(|name| stale(name, "husk-vmm-"));
}

/// `spec` with the jail's vsock path (the listener is passed) and the
/// console on the process's stdout (the pipe).
fn jailed_spec(spec: VmSpec) -> VmSpec {
    let vsock = |v: Option<vmm::VsockConfig>| {
        v.map(|v| vmm::VsockConfig {
            uds_path: PathBuf::from(JAIL_VSOCK),
            listener: None,
            ..v
        })
    };
    let boot = |mut c: vmm::VmConfig| {
        c.vsock = vsock(c.vsock);
        c.console = vmm::ConsoleOutput::Stdout;
        c.net = None;
        c
    };
    match spec {
        VmSpec::Boot(c) => VmSpec::Boot(boot(c)),
        VmSpec::Template(c) => VmSpec::Template(boot(c)),
        VmSpec::Restore(mut r) => {
            r.vsock = vsock(r.vsock);
            r.console = vmm::ConsoleOutput::Stdout;
            r.net = None;
            VmSpec::Restore(r)
        }
    }
}

fn net_spec(n: &vmm::NetConfig) -> NetSpec {
    NetSpec {
        mac: n.mac,
        mtu: n.mtu,
        backend: match &n.backend {
            vmm::NetBackend::Unix(p) => NetBackendSpec::Unix(p.clone()),
            vmm::NetBackend::Stream(_) => NetBackendSpec::Stream,
            vmm::NetBackend::Tap(t) => NetBackendSpec::Tap(t.clone()),
        },
        egress: n.egress.clone(),
        rate_limit: n.rate_limit,
    }
}

/// Copies the guest console from the VMM's stdout into the console log
/// until the VMM process is gone.
fn copy_console(mut from: File, mut to: vmm::logging::CappedFile) {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    // Keep draining so the VMM never blocks on its console.
                    continue;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}
