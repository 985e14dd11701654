//! Warm start: [`Sandbox::start`] restores the VM from a template (see
//! [`crate::template`]) instead of booting it, and boots cold when it
//! cannot.
//!
//! A template is a VM with this sandbox's kernel, agent disk, vCPUs,
//! memory and device layout (the agent disk, [`SandboxConfig::disks`]
//! rounded up to a [`SLOT_BUCKETS`](crate::template::SLOT_BUCKETS) count
//! of empty disk slots, vsock, and a network interface if the sandbox has
//! one) booted until its agent has connected to the host, then paused and
//! saved. A restore gives each slot the container's disk (the guest sees
//! the new capacity through a config-change interrupt), vsock the
//! container's socket (the guest's connections are reset and the agent
//! reconnects) and the interface its backend; the agent's reconnection is
//! then seeded ([`AgentConnection::seed`](crate::AgentConnection::seed))
//! like a cold boot's, so clones differ in entropy and clock.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::contract::{CMDLINE, GUEST_CID};
use crate::explain;
use crate::jail;
use crate::rundir::RunDir;
use crate::running::RunningVm;
use crate::sandbox::{AgentListener, Sandbox, SandboxConfig, SandboxError};
use crate::signals::Signals;
use crate::template::{
    kernel_digest, slot_bucket, StartMode, Template, TemplateError, TemplateInputs, TemplateStore,
};

/// How long a template's boot may take, unless `$HUSK_BOOT_TIMEOUT` says.
const TEMPLATE_BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// How long pausing a template VM may take.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The MAC address of a template's interface (each restored VM's agent
/// sets its own).
const TEMPLATE_MAC: [u8; 6] = [0x02, 0x68, 0x75, 0x73, 0x6b, 0x00];

impl Sandbox {
    /// Starts the VM `config` describes: restored from its template when
    /// [`SandboxConfig::start`] is [`StartMode::Warm`] and the layout fits
    /// a template (the template is built first if there is none), booted
    /// from the kernel otherwise or when the restore fails (with a
    /// one-line warning on stderr). `signals` interrupt a template build.
    pub fn start(
        config: &SandboxConfig,
        signals: Option<&Signals>,
    ) -> Result<Sandbox, SandboxError> {
        if config.start == StartMode::Warm {
            match Sandbox::restore(config, signals) {
                Ok(Some(sandbox)) => return Ok(sandbox),
                Ok(None) => {}
                Err(SandboxError::Interrupted(sig)) => return Err(SandboxError::Interrupted(sig)),
                Err(e) => eprintln!(
                    "husk: warning: warm start failed, booting cold: {}",
                    explain::error_chain(&e)
                ),
            }
        }
        Sandbox::boot_cold(config)
    }

    /// Builds the template [`Sandbox::start`] would restore `config`'s VM
    /// from, if it is missing; nothing for a cold start or a layout no
    /// template fits. Lets a caller pay for a first template (one cold
    /// boot) before it promises anyone a quick start.
    pub fn prepare(config: &SandboxConfig, signals: Option<&Signals>) -> Result<(), SandboxError> {
        if config.start != StartMode::Warm {
            return Ok(());
        }
        let store = TemplateStore::default_store();
        if let Some(inputs) = template_inputs(config, &store)? {
            store.ensure(&inputs, |staging| {
                build_template(config, &inputs, staging, signals)
            })?;
        }
        Ok(())
    }

    /// Like [`Sandbox::start`] without signals.
    pub fn boot(config: &SandboxConfig) -> Result<Sandbox, SandboxError> {
        Sandbox::start(config, None)
    }

    /// Restores `config`'s VM from its template; `None` if no template
    /// fits its layout.
    fn restore(
        config: &SandboxConfig,
        signals: Option<&Signals>,
    ) -> Result<Option<Sandbox>, SandboxError> {
        let store = TemplateStore::default_store();
        let Some(inputs) = template_inputs(config, &store)? else {
            return Ok(None);
        };
        let build = |staging: &Path| build_template(config, &inputs, staging, signals);
        let template = store.ensure(&inputs, build)?;
        let listener = AgentListener::bind(&config.vsock)?;
        let vm = match restore_vm(config, &template) {
            Ok(vm) => vm,
            Err(e) if e.is_damaged_template() => {
                eprintln!(
                    "husk: warning: template {} is damaged ({}); rebuilding it",
                    template.key,
                    explain::error_chain(&e)
                );
                store.discard(&template)?;
                let build = |staging: &Path| build_template(config, &inputs, staging, signals);
                let template = store.ensure(&inputs, build)?;
                restore_vm(config, &template)?
            }
            Err(e) => return Err(e),
        };
        let mut sandbox = Sandbox::running(vm, listener, config);
        sandbox.template = Some(template.key);
        Ok(Some(sandbox))
    }
}

/// The template inputs of `config`; `None` if it has more disks than any
/// template has slots.
fn template_inputs(
    config: &SandboxConfig,
    store: &TemplateStore,
) -> Result<Option<TemplateInputs>, TemplateError> {
    let Some(slots) = slot_bucket(config.disks.len()) else {
        return Ok(None);
    };
    if !config.shares.is_empty() {
        // A template has no virtio-fs device (its vhost-user backend's
        // state is not in a snapshot): a VM with shares boots cold.
        return Ok(None);
    }
    Ok(Some(TemplateInputs {
        format: TemplateInputs::current_format(),
        kernel: config.kernel.clone(),
        kernel_sha256: kernel_digest(store, &config.kernel)?,
        agent_disk: config.agent_disk.clone(),
        vcpus: config.vcpus,
        memory_mib: config.memory_mib,
        slots,
        net_mtu: config.net.as_ref().map(|n| n.mtu),
        host: format!("{:?}", vmm::HostKind::detect()),
        cmdline: CMDLINE.to_string(),
    }))
}

/// What the VMM restores: the template's files with `config`'s own
/// backends in the template's slots.
fn restore_config(config: &SandboxConfig, template: &Template) -> vmm::RestoreConfig {
    vmm::RestoreConfig {
        files: template.files(),
        console: vmm::ConsoleOutput::File(config.console.clone()),
        disks: config.vm_disks(template.inputs.slots),
        vsock: Some(vmm::VsockConfig {
            guest_cid: GUEST_CID,
            uds_path: config.vsock.clone(),
            listener: None,
            streams: vmm::VsockStreams::AgentFrames,
        }),
        net: config.net.clone(),
        seccomp: crate::sandbox::seccomp_mode(),
    }
}

/// Restores `config`'s VM from `template`: jailed when VMs are, else on
/// a thread.
fn restore_vm(config: &SandboxConfig, template: &Template) -> Result<RunningVm, SandboxError> {
    let restore = restore_config(config, template);
    if jail::enabled() {
        Sandbox::jailed(config, jail::proto::VmSpec::Restore(restore))
    } else {
        Sandbox::threaded(vmm::Vm::restore(restore)?)
    }
}

/// Whether a restore failed because of the template's files (rebuild it)
/// rather than the host.
pub(crate) fn is_damaged(e: &vmm::SnapshotError) -> bool {
    use vmm::SnapshotError as E;
    matches!(
        e,
        E::Format(_)
            | E::MemoryFile(_)
            | E::VcpuCount(_)
            | E::MissingKvmState
            | E::Layout { .. }
            | E::Device(_)
    )
}

/// Boots the template VM for `inputs` from `config`'s kernel and agent
/// disk with empty slots, waits for its agent, pauses it and saves it into
/// `staging`.
fn build_template(
    config: &SandboxConfig,
    inputs: &TemplateInputs,
    staging: &Path,
    signals: Option<&Signals>,
) -> Result<(), SandboxError> {
    let rundir = RunDir::create("template-")?;
    // The interface's peer: nothing is sent before a container configures
    // it; the socket only has to exist while the template boots.
    let (net_peer, net_end) = match inputs.net_mtu {
        Some(_) => {
            let (a, b) = UnixStream::pair().map_err(SandboxError::Thread)?;
            (Some(a), Some(b))
        }
        None => (None, None),
    };
    let template_config = SandboxConfig {
        kernel: config.kernel.clone(),
        agent_disk: config.agent_disk.clone(),
        disks: Vec::new(),
        vcpus: config.vcpus,
        memory_mib: config.memory_mib,
        net: inputs
            .net_mtu
            .zip(net_end)
            .map(|(mtu, end)| vmm::NetConfig {
                mac: TEMPLATE_MAC,
                mtu,
                backend: vmm::NetBackend::Stream(Arc::new(end)),
                egress: vmm::EgressPolicy::default(),
                rate_limit: Default::default(),
            }),
        // Limits are the restoring container's, never the template's.
        disk_rate_limit: Default::default(),
        console: staging.join("console.log"),
        vsock: rundir.path().join("v.sock"),
        start: StartMode::Cold,
        shares: Vec::new(),
    };
    let mut vm_config = template_config.vm_config();
    vm_config.disks = template_config.vm_disks(inputs.slots);
    let listener = AgentListener::bind(&template_config.vsock)?;
    // Jailed like every VM (its process saves the snapshot into files
    // made here), or on a thread of this process when VMs are not jailed.
    let vm = if jail::enabled() {
        Sandbox::jailed(&template_config, jail::proto::VmSpec::Template(vm_config))?
    } else {
        Sandbox::threaded(vmm::Vm::new(vm_config)?)?
    };
    let mut sandbox = Sandbox::running(vm, listener, &template_config);
    sandbox.seed = false;
    let agent = sandbox.accept_agent(signals, template_boot_timeout())?;
    let files = vmm::SnapshotFiles {
        state: staging.join("state"),
        memory: staging.join("memory"),
    };
    sandbox.save_template(&files, PAUSE_TIMEOUT)?;
    drop(agent);
    drop(net_peer);
    Ok(())
}

fn template_boot_timeout() -> Duration {
    std::env::var("HUSK_BOOT_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(TEMPLATE_BOOT_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Disk, DiskRole};

    /// A warm start restores the template's devices with the container's
    /// own rate limits (the template was built without any).
    #[test]
    fn restore_takes_the_rate_limits_from_the_container_not_the_template() {
        let disk_limit = vmm::RateLimitConfig {
            bandwidth: vmm::BucketConfig::per_second(1 << 20),
            ops: vmm::BucketConfig::per_second(100),
        };
        let net_limit = vmm::NetRateLimit {
            rx: disk_limit,
            tx: disk_limit,
        };
        let (_peer, end) = UnixStream::pair().unwrap();
        let config = SandboxConfig {
            kernel: "/k".into(),
            agent_disk: "/agent".into(),
            disks: vec![Disk {
                path: "/rw".into(),
                role: DiskRole::Writable,
                read_only: false,
            }],
            vcpus: 1,
            memory_mib: 256,
            net: Some(vmm::NetConfig {
                mac: [0x52, 0x54, 0, 0, 0, 1],
                mtu: 65520,
                backend: vmm::NetBackend::Stream(Arc::new(end)),
                rate_limit: net_limit,
                egress: vmm::EgressPolicy::default(),
            }),
            disk_rate_limit: disk_limit,
            console: "/c".into(),
            vsock: "/v".into(),
            start: StartMode::Warm,
            shares: Vec::new(),
        };
        let template = Template {
            dir: "/t".into(),
            key: "t".into(),
            inputs: TemplateInputs {
                format: TemplateInputs::current_format(),
                kernel: "/k".into(),
                kernel_sha256: String::new(),
                agent_disk: "/agent".into(),
                vcpus: 1,
                memory_mib: 256,
                slots: 2,
                net_mtu: Some(65520),
                host: String::new(),
                cmdline: String::new(),
            },
        };
        let restore = restore_config(&config, &template);
        let limits: Vec<_> = restore.disks.iter().map(|d| d.rate_limit).collect();
        // The agent disk is husk's own; the empty slot has no backing.
        assert_eq!(
            limits,
            vec![
                vmm::RateLimitConfig::default(),
                disk_limit,
                vmm::RateLimitConfig::default()
            ]
        );
        assert_eq!(restore.net.unwrap().rate_limit, net_limit);
    }
}
