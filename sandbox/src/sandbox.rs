//! One call that starts a VM with the agent from a typed description and
//! hands back the agent's connection.
//!
//! The description ([`SandboxConfig`]) is data: disks by role, vCPUs,
//! memory, an optional network backend, where the console and the vsock
//! socket go. [`Sandbox::boot`] boots a fresh guest from it; the
//! [`AgentConnection`] that [`Sandbox::accept_agent`] or
//! [`Sandbox::try_accept`] return does not depend on how the VM started,
//! so a restore from a snapshot can later take the boot's place here.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agent::{AgentConnection, AgentError};
use crate::contract::{self, DiskRole, AGENT_PORT, AGENT_SERIAL, CMDLINE, GUEST_CID};
use crate::explain;
use crate::jail::{self, JailError, JailInfo, VmProcess};
use crate::rundir::RunDirError;
use crate::running::RunningVm;
use crate::signals::Signals;
use crate::template::{StartMode, TemplateError};
use crate::virtiofs::{FsServer, ShareError};
use crate::vmthread::{PauseError, VmResult, VmThread};
use crate::wait::{Wake, Watch};

/// A disk of the VM besides the agent disk.
#[derive(Clone, Debug)]
pub struct Disk {
    /// Image file (or block device).
    pub path: PathBuf,
    /// What it is to the guest (its serial).
    pub role: DiskRole,
    /// Attach read-only.
    pub read_only: bool,
}

impl Disk {
    /// An image's disks: its read-only layer disks, bottom first, then the
    /// container's writable disk (see [`contract::image_root`]).
    pub fn image_disks(layers: &[PathBuf], writable: &Path) -> Vec<Disk> {
        let mut disks: Vec<Disk> = (layers.iter().enumerate())
            .map(|(i, l)| Disk {
                path: l.clone(),
                role: DiskRole::Layer(i),
                read_only: true,
            })
            .collect();
        disks.push(Disk {
            path: writable.to_path_buf(),
            role: DiskRole::Writable,
            read_only: false,
        });
        disks
    }
}

/// The seccomp mode of every VM's threads: [`vmm::SeccompMode::Enforce`]
/// unless `$HUSK_SECCOMP` asks otherwise, for debugging only: `log`
/// (violations allowed and written to the kernel's audit log) or `off`.
/// An unknown value keeps the filters enforced, with a warning.
pub fn seccomp_mode() -> vmm::SeccompMode {
    match std::env::var("HUSK_SECCOMP").as_deref() {
        Err(_) | Ok("" | "enforce") => vmm::SeccompMode::Enforce,
        Ok("log") => vmm::SeccompMode::Log,
        Ok("off") => vmm::SeccompMode::Disabled,
        Ok(other) => {
            log::warn!("HUSK_SECCOMP={other:?} is not enforce, log or off: enforcing");
            vmm::SeccompMode::Enforce
        }
    }
}

/// Everything a VM with the agent is made of.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Guest kernel (vmlinux).
    pub kernel: PathBuf,
    /// The EROFS agent disk (see [`crate::assets::agent_disk`]).
    pub agent_disk: PathBuf,
    /// The other disks, in the order they are attached.
    pub disks: Vec<Disk>,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// The network interface's backend (and rate limits), if any.
    pub net: Option<vmm::NetConfig>,
    /// Rate limits of each disk in [`Self::disks`] (not the agent disk).
    pub disk_rate_limit: vmm::RateLimitConfig,
    /// Where the guest console goes.
    pub console: PathBuf,
    /// The VMM's vsock socket (short enough for a Unix socket address);
    /// the agent's connection arrives on `<vsock>_1024`.
    pub vsock: PathBuf,
    /// Restore from a template (the default) or boot from the kernel.
    pub start: StartMode,
    /// Host directories and files shared over virtio-fs (a VM with shares
    /// boots cold: a template has no virtio-fs device).
    pub shares: Vec<crate::Share>,
}

impl SandboxConfig {
    /// The VMM's configuration for a cold boot.
    pub fn vm_config(&self) -> vmm::VmConfig {
        let disks = self.vm_disks(self.disks.len());
        vmm::VmConfig {
            kernel: self.kernel.clone(),
            initrd: None,
            cmdline_extra: CMDLINE.to_string(),
            vcpus: self.vcpus,
            mem_mib: self.memory_mib,
            disks,
            vsock: Some(vmm::VsockConfig {
                guest_cid: GUEST_CID,
                uds_path: self.vsock.clone(),
                listener: None,
                streams: vmm::VsockStreams::AgentFrames,
            }),
            net: self.net.clone(),
            fs: None,
            console: vmm::ConsoleOutput::File(self.console.clone()),
            seccomp: seccomp_mode(),
        }
    }

    /// The VM's disks: the agent disk, [`SandboxConfig::disks`], then
    /// empty slots up to `slots` disks besides the agent disk.
    pub(crate) fn vm_disks(&self, slots: usize) -> Vec<vmm::DiskConfig> {
        let mut disks = vec![vmm::DiskConfig {
            path: Some(self.agent_disk.clone()),
            read_only: true,
            serial: AGENT_SERIAL.into(),
            rate_limit: Default::default(),
        }];
        disks.extend(self.disks.iter().map(|d| vmm::DiskConfig {
            path: Some(d.path.clone()),
            read_only: d.read_only,
            serial: d.role.serial(),
            rate_limit: self.disk_rate_limit,
        }));
        disks.extend((self.disks.len()..slots).map(|i| vmm::DiskConfig {
            path: None,
            read_only: false,
            serial: contract::empty_slot_serial(i),
            rate_limit: Default::default(),
        }));
        disks
    }
}

/// The path the share server's socket is handed over at (see
/// [`FsServer::start`]), beside the VM's vsock socket.
fn share_socket(vsock: &Path) -> PathBuf {
    let mut path = vsock.as_os_str().to_owned();
    path.push("_fs");
    PathBuf::from(path)
}

/// Errors starting a VM or reaching its agent.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Listening for the agent failed.
    #[error("listening on {path}")]
    Listen {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The VMM refused the configuration.
    #[error("creating the VM")]
    Vm(#[from] vmm::VmError),
    /// The VM thread could not be started.
    #[error("starting the VM thread")]
    Thread(#[source] io::Error),
    /// Waiting for or accepting the agent's connection failed.
    #[error("accepting the agent's connection")]
    Accept(#[source] io::Error),
    /// The VM ended before the agent connected.
    #[error("the VM stopped before the agent connected")]
    EndedEarly,
    /// The agent's boot connection was already accepted (one per boot).
    #[error("the agent's boot connection was already accepted")]
    AlreadyAccepted,
    /// The agent did not connect in time.
    #[error("the guest did not reach the agent within {0} s")]
    BootTimeout(u64),
    /// A handled signal arrived.
    #[error("interrupted by signal {0}")]
    Interrupted(i32),
    /// The agent's connection failed at once.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// Finding or publishing the warm-start template failed.
    #[error("warm-start template")]
    Template(#[from] TemplateError),
    /// Saving or restoring a snapshot failed.
    #[error("restoring the VM from its template")]
    Snapshot(#[from] vmm::SnapshotError),
    /// The template VM did not pause.
    #[error("pausing the template VM")]
    Pause(#[from] PauseError),
    /// A run directory could not be made.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// The jailed VMM process could not be started.
    #[error("starting the jailed VMM")]
    Jail(#[from] JailError),
    /// The shared directories' server could not be started.
    #[error(transparent)]
    Share(#[from] ShareError),
}

impl SandboxError {
    /// Whether a restore failed because of the template's files (rebuild
    /// it) rather than the host.
    pub(crate) fn is_damaged_template(&self) -> bool {
        match self {
            SandboxError::Snapshot(e) => crate::warm::is_damaged(e),
            SandboxError::Jail(JailError::Vm { damaged, .. }) => *damaged,
            _ => false,
        }
    }
}

/// A running VM whose agent connects (or has connected) to the host.
/// Dropping it stops the VM and removes its sockets.
pub struct Sandbox {
    vm: RunningVm,
    /// The server of the VM's shares (declared after `vm`: it is dropped
    /// after the VM stopped).
    shares: Option<FsServer>,
    /// Where the agent's boot connection arrives; closed (and its socket
    /// file removed) once it is accepted, so that the guest cannot open
    /// more connections to it.
    listener: Option<UnixListener>,
    agent_socket: PathBuf,
    vsock: PathBuf,
    console: PathBuf,
    /// Whether the agent's boot connection gets [`AgentConnection::seed`]
    /// (every sandbox but a template being made).
    pub(crate) seed: bool,
    /// The key of the template the VM was restored from (`None`: booted).
    pub(crate) template: Option<String>,
}

/// The Unix socket the agent's boot connection arrives on.
pub(crate) struct AgentListener {
    listener: UnixListener,
    path: PathBuf,
}

impl AgentListener {
    /// Listens (non-blocking) where the VM with vsock socket `vsock`
    /// forwards the agent's port.
    pub(crate) fn bind(vsock: &Path) -> Result<AgentListener, SandboxError> {
        let path = contract::host_port_socket(vsock, AGENT_PORT);
        let _ = std::fs::remove_file(&path);
        let listen_err = |source| SandboxError::Listen {
            path: path.clone(),
            source,
        };
        let listener = UnixListener::bind(&path).map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        Ok(AgentListener { listener, path })
    }
}

impl Sandbox {
    /// Boots a VM from `config` from the kernel: listens for the agent,
    /// creates the VM and runs it (jailed, see [`crate::jail`], or on its
    /// own thread with the installed signals blocked).
    /// [`Sandbox::start`] restores instead when it can.
    pub fn boot_cold(config: &SandboxConfig) -> Result<Sandbox, SandboxError> {
        let listener = AgentListener::bind(&config.vsock)?;
        let shares = match config.shares.is_empty() {
            true => None,
            false => Some(FsServer::start(
                &config.shares,
                &share_socket(&config.vsock),
            )?),
        };
        let mut vm_config = config.vm_config();
        vm_config.fs = shares.as_ref().map(FsServer::vm_config);
        let vm = if jail::enabled() {
            Sandbox::jailed(config, jail::proto::VmSpec::Boot(vm_config))?
        } else {
            Sandbox::threaded(vmm::Vm::new(vm_config)?)?
        };
        let mut sandbox = Sandbox::running(vm, listener, config);
        sandbox.shares = shares;
        Ok(sandbox)
    }

    /// `vm` on its own thread.
    pub(crate) fn threaded(vm: vmm::Vm) -> Result<RunningVm, SandboxError> {
        Ok(RunningVm::Thread(
            VmThread::start(vm).map_err(SandboxError::Thread)?,
        ))
    }

    /// The VM `spec` describes in a jailed process.
    pub(crate) fn jailed(
        config: &SandboxConfig,
        spec: jail::proto::VmSpec,
    ) -> Result<RunningVm, SandboxError> {
        let process = VmProcess::spawn(jail::VmRequest {
            spec,
            net: config.net.as_ref(),
            vsock: &config.vsock,
            console: &config.console,
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
        })?;
        Ok(RunningVm::Jailed(process))
    }

    /// The sandbox around the running `vm`.
    pub(crate) fn running(
        vm: RunningVm,
        listener: AgentListener,
        config: &SandboxConfig,
    ) -> Sandbox {
        Sandbox {
            vm,
            shares: None,
            listener: Some(listener.listener),
            agent_socket: listener.path,
            vsock: config.vsock.clone(),
            console: config.console.clone(),
            seed: true,
            template: None,
        }
    }

    /// Readable when the agent's boot connection is there (see
    /// [`Sandbox::try_accept`]); `None` once it was accepted.
    pub fn listener_fd(&self) -> Option<BorrowedFd<'_>> {
        self.listener.as_ref().map(AsFd::as_fd)
    }

    /// Accepts the agent's boot connection if it is there (and greets it).
    /// The listener is closed on the first accepted connection: one per
    /// boot. `Ok(None)` if none is there yet or the listener is closed.
    pub fn try_accept(&mut self) -> Result<Option<AgentConnection>, SandboxError> {
        let Some(listener) = &self.listener else {
            return Ok(None);
        };
        match listener.accept() {
            Ok((stream, _)) => {
                self.close_listener();
                let mut conn = AgentConnection::new(stream)?;
                if self.seed {
                    conn.seed()?;
                }
                Ok(Some(conn))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(SandboxError::Accept(e)),
        }
    }

    /// Closes the agent listener and removes its socket file: further guest
    /// connections to the agent port are refused by the VMM.
    fn close_listener(&mut self) {
        self.listener = None;
        let _ = std::fs::remove_file(&self.agent_socket);
    }

    /// Waits until the agent connects (or a signal, the VM's end or
    /// `timeout`) and returns its connection (`Hello` sent).
    pub fn accept_agent(
        &mut self,
        signals: Option<&Signals>,
        timeout: Duration,
    ) -> Result<AgentConnection, SandboxError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(conn) = self.try_accept()? {
                return Ok(conn);
            }
            let Some(listener) = &self.listener else {
                return Err(SandboxError::AlreadyAccepted);
            };
            match self
                .watch(signals)
                .wait(listener.as_fd(), Some(deadline))
                .map_err(SandboxError::Accept)?
            {
                Wake::Ready => {}
                Wake::Signal(sig) => return Err(SandboxError::Interrupted(sig)),
                Wake::VmDone => return Err(SandboxError::EndedEarly),
                Wake::Timeout => return Err(SandboxError::BootTimeout(timeout.as_secs())),
            }
        }
    }

    /// What blocking agent calls should watch: `signals` and this VM.
    pub fn watch<'a>(&'a self, signals: Option<&'a Signals>) -> Watch<'a> {
        Watch {
            signals,
            vm_done: Some(self.vm.done_fd()),
        }
    }

    /// The key of the warm-start template the VM was restored from;
    /// `None` if it was booted from the kernel.
    pub fn template(&self) -> Option<&str> {
        self.template.as_deref()
    }

    /// The running VM (its done fd, stop requests).
    pub fn vm(&self) -> &RunningVm {
        &self.vm
    }

    /// The VMM's jail; `None` when the VM runs unjailed in this process.
    pub fn jail(&self) -> Option<&JailInfo> {
        self.vm.jail()
    }

    /// The VMM's vsock socket (for exec connections).
    pub fn vsock(&self) -> &Path {
        &self.vsock
    }

    /// The console log.
    pub fn console(&self) -> &Path {
        &self.console
    }

    /// Pauses the VM for good and saves it as a template into `files`
    /// (see [`RunningVm::save_template`]).
    pub(crate) fn save_template(
        &mut self,
        files: &vmm::SnapshotFiles,
        timeout: Duration,
    ) -> Result<(), SandboxError> {
        self.vm.save_template(files, timeout)
    }

    /// Suspends the VM (`husk pause`, see [`RunningVm::suspend`]).
    pub fn suspend(&mut self, timeout: Duration) -> Result<(), PauseError> {
        self.vm.suspend(timeout)
    }

    /// Resumes a suspended VM (`husk unpause`).
    pub fn resume(&mut self, timeout: Duration) -> Result<(), PauseError> {
        self.vm.resume(timeout)
    }

    /// Asks the VM to stop (returns at once).
    pub fn request_stop(&self) {
        self.vm.request_stop();
    }

    /// Waits until the guest powers off by itself (true), or `deadline`
    /// or a signal comes first (false: see [`Signals::received`]).
    pub fn wait_power_off(&self, signals: Option<&Signals>, deadline: Instant) -> bool {
        while Instant::now() < deadline {
            if self.vm.wait_done(signals, deadline) {
                return true;
            }
            if signals.is_some_and(|s| s.received().is_some()) {
                return false;
            }
        }
        self.vm.is_done()
    }

    /// Stops the VM if it still runs and returns how it ended (`None` if
    /// its thread did not end in time).
    pub fn stop(&mut self) -> Option<&VmResult> {
        self.vm.stop()
    }

    /// Stops the VM and explains why it ended before the work in it did
    /// (kernel panic, VMM error, reboot...), or `fallback`.
    pub fn explain_end(&mut self, fallback: &str) -> String {
        let console = self.console.clone();
        explain::early_end(self.vm.stop(), &console, fallback)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.vm.stop();
        let _ = std::fs::remove_file(&self.agent_socket);
        let _ = std::fs::remove_file(&self.vsock);
    }
}
