//! Boot a microVM with the agent and run one command in it.
//!
//! The VM runs on its own thread ([`vmm::Vm::run`] blocks); the main thread
//! speaks the agent protocol ([`host`]) and watches SIGINT/SIGTERM
//! ([`signals`]). Every path stops the VM and removes the per-run directory
//! (sockets, default console log) — except that on a VM/agent failure the
//! console log is kept and named in the error.

mod host;
mod rundir;
pub mod signals;

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use husk_protocol::{NetworkSpec, RunRequest, AGENT_PORT};

use host::{Ending, Watch};
use husk_runtime::vmthread::{VmResult, VmThread};
use rundir::RunDir;
pub use signals::Signals;

/// The serial of the agent disk; user disks are `disk0`, `disk1`, ...
pub const AGENT_SERIAL: &str = "husk-agent";

/// The guest's vsock context id.
const GUEST_CID: u64 = 3;

/// How long the guest may take to power off after the agent finished its
/// teardown (disks synced and unmounted) before husk stops the VM itself.
const POWEROFF_GRACE: Duration = Duration::from_secs(5);

/// A user disk.
#[derive(Debug, Clone)]
pub struct Disk {
    /// Image file (or block device).
    pub path: PathBuf,
    /// Attach read-only.
    pub read_only: bool,
}

/// Everything needed to run one command in a fresh microVM.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Guest kernel (vmlinux).
    pub kernel: PathBuf,
    /// The EROFS agent disk (see [`crate::assets::agent_disk`]).
    pub agent_disk: PathBuf,
    /// User disks, attached as `disk0`, `disk1`, ... after the agent disk.
    pub disks: Vec<Disk>,
    /// vCPUs.
    pub cpus: u8,
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// Where the console goes; `None`: a file in the run directory, kept
    /// only on failure.
    pub console: Option<PathBuf>,
    /// How long the guest may take to reach the agent.
    pub boot_timeout: Duration,
    /// The command to run.
    pub request: RunRequest,
    /// The VM's network interface and its guest configuration, if any.
    pub net: Option<(vmm::NetConfig, NetworkSpec)>,
}

/// The kernel command line added to the VMM's own.
const CMDLINE: &str = "root=/dev/vda ro rootfstype=erofs init=/husk-agent quiet panic=-1";

/// Boots the VM, runs the command, and returns husk's exit code: the
/// command's, 128+signal, or 125/126/127 for agent-reported failures.
/// `signals` must be installed before anything that needs cleaning up.
pub fn run(launch: &Launch, signals: &Signals) -> Result<i32> {
    if let Some(sig) = signals.received() {
        return Ok(128 + sig);
    }
    let rundir = RunDir::create()?;
    let console = launch
        .console
        .clone()
        .unwrap_or_else(|| rundir.path().join("console.log"));
    let vsock = rundir.path().join("vsock.sock");
    let agent_sock = PathBuf::from(format!("{}_{AGENT_PORT}", vsock.display()));
    let listener = UnixListener::bind(&agent_sock)
        .with_context(|| format!("listening on {}", agent_sock.display()))?;
    listener.set_nonblocking(true)?;
    let vm = vmm::Vm::new(vm_config(launch, &console, &vsock)).context("creating the VM")?;
    let mut vm = VmThread::start(vm).context("starting the VM thread")?;
    let watch = Watch {
        signals,
        vm_done: vm.done_fd(),
    };
    let network = launch.net.as_ref().map(|(_, spec)| spec);
    let ending = host::drive(
        &listener,
        &watch,
        &launch.request,
        network,
        launch.boot_timeout,
    );
    drop(listener);
    match ending {
        Ending::Exit(code) => finish(&mut vm, signals, code),
        Ending::Interrupted(sig) => {
            vm.stop();
            Ok(128 + sig)
        }
        Ending::Failed(err) => {
            let err = explain(err, vm.stop());
            let kept = match &launch.console {
                Some(path) => path.clone(),
                None => rundir.keep(&console),
            };
            Err(anyhow!("{err:#} (console log: {})", kept.display()))
        }
    }
}

fn vm_config(launch: &Launch, console: &std::path::Path, vsock: &std::path::Path) -> vmm::VmConfig {
    let mut disks = vec![vmm::DiskConfig {
        path: launch.agent_disk.clone(),
        read_only: true,
        serial: AGENT_SERIAL.to_string(),
    }];
    disks.extend(
        launch
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| vmm::DiskConfig {
                path: d.path.clone(),
                read_only: d.read_only,
                serial: format!("disk{i}"),
            }),
    );
    vmm::VmConfig {
        kernel: launch.kernel.clone(),
        initrd: None,
        cmdline_extra: CMDLINE.to_string(),
        vcpus: launch.cpus,
        mem_mib: launch.mem_mib,
        disks,
        vsock: Some(vmm::VsockConfig {
            guest_cid: GUEST_CID,
            uds_path: vsock.to_path_buf(),
        }),
        net: launch.net.as_ref().map(|(config, _)| config.clone()),
        console: vmm::ConsoleOutput::File(console.to_path_buf()),
    }
}

/// The command finished and the agent tore down: give the guest a moment
/// to power off by itself, then make sure the VM is gone.
fn finish(vm: &mut VmThread, signals: &Signals, code: i32) -> Result<i32> {
    let deadline = Instant::now() + POWEROFF_GRACE;
    let mut code = code;
    while !vm.wait_done(Some(signals), deadline) && Instant::now() < deadline {
        if let Some(sig) = signals.received() {
            code = 128 + sig;
            break;
        }
    }
    let reason = vm.stop();
    if std::env::var_os("HUSK_DEBUG").is_some() {
        eprintln!("husk: debug: VM ended: {reason:?}");
    }
    Ok(code)
}

/// Adds what the VM thread reported to a failure.
fn explain(err: anyhow::Error, vm_result: Option<&VmResult>) -> anyhow::Error {
    match vm_result {
        Some(Err(vm_err)) => {
            err.context(format!("VM failed: {}", husk_runtime::error_chain(vm_err)))
        }
        Some(Ok(vmm::ExitReason::Reboot)) => err.context("the guest rebooted (kernel panic?)"),
        _ => err,
    }
}
