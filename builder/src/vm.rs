//! RUN in a microVM: the image's layer disks plus a fresh writable ext4
//! disk, booted through the sandbox layer; the agent's container path
//! (`CreateContainer` + `Exec` on the boot connection), the command's
//! output streamed to the build's output. The agent then turns the
//! changes (the overlayfs upper directory on the writable disk) into a
//! layer tar inside the VM and streams it out (`ExportLayer`); the host
//! never mounts the disk the guest wrote.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use husk_protocol::{ContainerSpec, ExecRequest};
use husk_sandbox::oneshot::{Completion, Exit, LayerSink, OneShot, OneShotError, Stream};
use husk_sandbox::{contract, Disk, RunDir, Sandbox, SandboxConfig, SandboxError, Signals};

/// How long the agent may take to tear down and power off after the
/// command ended.
const TEARDOWN: Duration = Duration::from_secs(60);

/// How long the guest may take to power off after the agent's teardown.
const POWEROFF: Duration = Duration::from_secs(30);

/// How long the agent may take to send a RUN step's layer tar.
const LAYER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Size of a RUN step's (sparse) writable disk.
pub const DISK_SIZE: u64 = 8 << 30;

/// The default of [`VmSettings::max_layer_bytes`]: what one layer may
/// unpack to anyway.
pub const MAX_LAYER_BYTES: u64 = images::layer::MAX_UNPACKED;

/// How RUN steps' VMs are made.
#[derive(Debug, Clone)]
pub struct VmSettings {
    /// The guest kernel and the EROFS agent disk, or why they are not
    /// available (only an error once a RUN step needs them).
    pub assets: Result<(PathBuf, PathBuf), String>,
    /// vCPUs.
    pub cpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// How long the guest may take to reach the agent.
    pub boot_timeout: Duration,
    /// Outbound network (passt) for RUN steps.
    pub network: bool,
    /// Restore RUN steps' VMs from a template or boot them.
    pub start: husk_sandbox::StartMode,
    /// The largest layer tar accepted from a RUN step's VM (bytes of the
    /// stream; file content is bounded by the same number).
    pub max_layer_bytes: u64,
}

/// Errors running a step in a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A host-side operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The layer disks could not be prepared.
    #[error(transparent)]
    Layers(#[from] images::LayerError),
    /// The network could not be set up.
    #[error("RUN network (use --network none to build without)")]
    Network(#[from] husk_net::NetError),
    /// The writable disk could not be made.
    #[error(transparent)]
    Disk(#[from] husk_sandbox::ext4::Ext4Error),
    /// The VM's socket directory could not be made.
    #[error(transparent)]
    RunDir(#[from] husk_sandbox::rundir::RunDirError),
    /// The VM or the agent failed (with the console log kept).
    #[error("{why} (console log: {console})")]
    Failed {
        /// What happened.
        why: String,
        /// The console log.
        console: String,
    },
    /// The agent refused the command.
    #[error("{detail}")]
    Refused {
        /// Docker's exit code for the failure.
        code: i32,
        /// The agent's message.
        detail: String,
    },
    /// The guest kernel or agent is missing.
    #[error("RUN needs the guest kernel and agent: {0}")]
    Assets(String),
    /// husk was interrupted by a signal.
    #[error("interrupted by signal {0}")]
    Interrupted(i32),
    /// The step's layer tar did not come out of the VM whole, or broke
    /// the host's limits.
    #[error("receiving the RUN step's changes from the VM")]
    Layer(#[source] husk_sandbox::AgentError),
}

/// Creates a sparse ext4 disk of [`DISK_SIZE`] at `path`.
pub fn make_disk(path: &Path) -> Result<(), VmError> {
    Ok(husk_sandbox::ext4::make_sparse_ext4(path, DISK_SIZE)?)
}

/// One RUN step's VM inputs.
pub struct RunStep<'a> {
    /// The image's layer disks, bottom first.
    pub layers: &'a [PathBuf],
    /// The writable disk (made by [`make_disk`]).
    pub disk: &'a Path,
    /// Where the console log goes.
    pub console: &'a Path,
    /// The process.
    pub request: ExecRequest,
    /// The container's hostname.
    pub hostname: String,
    /// Receives the layer tar of the step's changes (guest input: the
    /// caller checks it before storing it).
    pub layer: &'a mut dyn Write,
}

/// Boots a VM for `step`, runs its command with output to `out`, receives
/// its changes as a layer tar into `step.layer` (whatever the exit code:
/// the caller keeps it only for 0), waits for the agent's teardown and
/// returns the command's exit code (128+N when killed by signal N).
pub fn run(
    settings: &VmSettings,
    step: RunStep<'_>,
    out: &mut dyn Write,
    signals: &Signals,
) -> Result<i32, VmError> {
    if let Some(sig) = signals.received() {
        return Err(VmError::Interrupted(sig));
    }
    let (kernel, agent_disk) = settings.assets.clone().map_err(VmError::Assets)?;
    let sockets = RunDir::create("build-")?;
    let net = match settings.network {
        true => Some(husk_net::Network::start(
            husk_net::NetworkOptions::default(),
        )?),
        false => None,
    };
    let disks = Disk::image_disks(step.layers, step.disk);
    let config = SandboxConfig {
        kernel,
        agent_disk,
        disks,
        vcpus: settings.cpus,
        memory_mib: settings.memory_mib,
        net: net.as_ref().and_then(|n| n.net_config()),
        disk_rate_limit: Default::default(),
        console: step.console.to_path_buf(),
        vsock: sockets.path().join("v.sock"),
        start: settings.start,
        shares: Vec::new(),
    };
    let spec = ContainerSpec {
        root: contract::image_root(step.layers.len()),
        shares: Vec::new(),
        volumes: Vec::new(),
        hosts: net
            .as_ref()
            .map(|n| n.hosts(&step.hostname))
            .unwrap_or_default(),
        hostname: step.hostname.clone(),
        resolv_conf: net.as_ref().and_then(|n| n.resolv_conf()),
        network: net.as_ref().and_then(|n| n.spec()),
        files: Vec::new(),
        tmpfs: Vec::new(),
        sysctls: Vec::new(),
        read_only_root: false,
    };
    let failed = |why: String| VmError::Failed {
        why,
        console: step.console.display().to_string(),
    };
    let mut sandbox = Sandbox::start(&config, Some(signals)).map_err(|e| match e {
        SandboxError::Vm(e) => failed(format!(
            "creating the VM: {}",
            husk_sandbox::explain::error_chain(&e)
        )),
        other => failed(husk_sandbox::explain::error_chain(&other)),
    })?;
    let job = OneShot {
        spec,
        request: step.request,
        boot_timeout: settings.boot_timeout,
        teardown_timeout: TEARDOWN,
        poweroff_timeout: POWEROFF,
    };
    // The build output going away must not stop the step.
    let mut relay = |_: Stream, b: &[u8]| {
        let _ = out.write_all(b).and_then(|()| out.flush());
    };
    let sink = LayerSink {
        to: step.layer,
        max_bytes: settings.max_layer_bytes,
        timeout: LAYER_TIMEOUT,
    };
    let done = sandbox
        .run_exporting_layer(signals, job, &mut relay, sink)
        .map_err(|e| match e {
            OneShotError::Interrupted(sig) => VmError::Interrupted(sig),
            OneShotError::NotCreated(detail) => failed(format!(
                "the agent could not create the build container: {detail}"
            )),
            OneShotError::Failed(why) => failed(why),
            OneShotError::Layer(e) => VmError::Layer(e),
        })?;
    match done {
        (
            Completion {
                exit: Exit::Refused { code, detail },
                ..
            },
            _,
        ) => Err(VmError::Refused { code, detail }),
        // The layer arrived whole, and the guest ended normally.
        (
            Completion {
                exit: Exit::Code(code),
                powered_off: true,
            },
            Some(_),
        ) => Ok(code),
        _ => Err(failed(
            sandbox.explain_end("the guest did not power off after the command"),
        )),
    }
}
