//! What a container is made from, fully resolved: a [`ContainerPlan`].
//!
//! There are two ways to get one, and one way to create a container from
//! it ([`Runtime::create_from`]):
//! - from an image and the CLI's flags ([`Runtime::plan`], which
//!   [`Runtime::create`] uses), with Docker's precedence rules;
//! - from an OCI bundle (the `husk-bundle` crate: a containerd shim or an
//!   OCI runtime CLI), where the bundle's `config.json` says everything.

use std::collections::BTreeMap;
use std::path::PathBuf;

use husk_net::{NetworkMode, PortMapping};
use husk_protocol::{MAX_FILES, MAX_FILES_BYTES, MAX_FILE_BYTES};

use crate::config::{ContainerFile, ProcessConfig, Signal};
use crate::id::ContainerId;
use crate::options::{self, CreateOptions, VolumeRequest};
use crate::{Error, Runtime};

/// How the container's VM boots: the runtime assets and the start mode.
#[derive(Clone, Debug)]
pub struct VmBoot {
    /// The guest kernel.
    pub kernel: PathBuf,
    /// The agent disk.
    pub agent_disk: PathBuf,
    /// Seconds the guest may take to boot.
    pub boot_timeout: u64,
    /// Warm start (restore from a template) or cold boot.
    pub start: husk_sandbox::StartMode,
}

/// A container, resolved: everything [`Runtime::create_from`] records.
#[derive(Clone, Debug)]
pub struct ContainerPlan {
    /// The container's ID (chosen before planning: the default hostname
    /// is its short form).
    pub id: ContainerId,
    /// Its name; a free random one when `None`.
    pub name: Option<String>,
    /// The image as the user named it (or what the root came from).
    pub image: String,
    /// The image ID (`sha256:...`), or empty when the root is not an image
    /// of the store.
    pub image_id: String,
    /// Read-only EROFS layer disks, bottom first.
    pub layers: Vec<PathBuf>,
    /// The init process.
    pub process: ProcessConfig,
    /// The hostname.
    pub hostname: String,
    /// /etc/resolv.conf content; `None` keeps the image's.
    pub resolv_conf: Option<String>,
    /// Files copied into the root after it is assembled.
    pub files: Vec<ContainerFile>,
    /// tmpfs filesystems mounted in the root.
    pub tmpfs: Vec<husk_protocol::TmpfsMount>,
    /// Kernel parameters set in the guest (its kernel is the container's).
    pub sysctls: Vec<husk_protocol::Sysctl>,
    /// vCPUs.
    pub cpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Volumes to attach, anonymous ones made by `create_from`.
    pub volumes: Vec<VolumeRequest>,
    /// Signal `stop` sends first.
    pub stop_signal: Signal,
    /// Seconds `stop` waits before SIGKILL.
    pub stop_timeout: u64,
    /// Remove the container when it exits.
    pub auto_remove: bool,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// The network.
    pub network: NetworkMode,
    /// `--add-host` entries.
    pub extra_hosts: Vec<husk_net::ExtraHost>,
    /// How the VM boots.
    pub boot: VmBoot,
    /// The security flags as given (for `inspect`); the process carries
    /// their effect.
    pub security_flags: crate::security::SecurityFlags,
    /// How `log.json` is rotated.
    pub log_config: crate::logs::LogConfig,
    /// Annotations (an OCI bundle's).
    pub annotations: BTreeMap<String, String>,
    /// Disk and network rate limits.
    pub io_limits: crate::config::IoLimits,
    // Day-2 operations (issue #14).
    /// The restart policy.
    pub restart_policy: crate::restart::RestartPolicy,
    /// The health check.
    pub health: Option<crate::health::HealthConfig>,
    // Labels and run flags (see [`crate::run_flags`]).
    /// Labels: the image's, overridden by the container's.
    pub labels: BTreeMap<String, String>,
    /// `--dns*`, `--read-only`, `--init`, `--shm-size` (whose /dev/shm is
    /// already among `tmpfs`).
    pub run_flags: crate::run_flags::RunFlags,
}

impl ContainerPlan {
    /// A plan with husk's defaults around `process` and `layers`: a new ID
    /// (whose short form is the hostname), the default vCPUs and memory,
    /// no volumes, files or ports, SIGTERM and the default stop timeout,
    /// user networking, the host's resolv.conf (see
    /// [`options::host_resolv_conf`]).
    pub fn new(process: ProcessConfig, layers: Vec<PathBuf>, boot: VmBoot) -> ContainerPlan {
        let id = ContainerId::generate();
        ContainerPlan {
            hostname: id.short().to_string(),
            id,
            name: None,
            image: String::new(),
            image_id: String::new(),
            layers,
            process,
            resolv_conf: Some(options::host_resolv_conf()),
            files: Vec::new(),
            tmpfs: Vec::new(),
            sysctls: Vec::new(),
            cpus: options::DEFAULT_CPUS,
            memory_mib: options::DEFAULT_MEMORY_MIB,
            volumes: Vec::new(),
            stop_signal: Signal::TERM,
            stop_timeout: options::DEFAULT_STOP_TIMEOUT,
            auto_remove: false,
            ports: Vec::new(),
            network: NetworkMode::default(),
            extra_hosts: Vec::new(),
            boot,
            security_flags: Default::default(),
            log_config: Default::default(),
            annotations: BTreeMap::new(),
            io_limits: Default::default(),
            restart_policy: Default::default(),
            health: None,
            labels: BTreeMap::new(),
            run_flags: Default::default(),
        }
    }

    /// Checks what the store cannot fix later: name, layers, sizes, files.
    pub fn check(&self) -> Result<(), Error> {
        if self.auto_remove && !self.restart_policy.is_none() {
            return Err(Error::Invalid(
                "Conflicting options: --restart and --rm".into(),
            ));
        }
        if let Some(n) = &self.name {
            if !crate::id::valid_name(n.trim_start_matches('/')) {
                return Err(Error::InvalidName(n.clone()));
            }
        }
        if self.layers.is_empty() {
            return Err(Error::Invalid(
                "the container has no root filesystem".into(),
            ));
        }
        if self.process.argv.is_empty() {
            return Err(Error::NoCommand);
        }
        if self.cpus == 0 {
            return Err(Error::Invalid("a container needs at least one vCPU".into()));
        }
        if self.memory_mib < options::MIN_MEMORY_MIB {
            return Err(Error::Invalid(format!(
                "{} MiB of memory is below the minimum of {} MiB",
                self.memory_mib,
                options::MIN_MEMORY_MIB
            )));
        }
        for t in &self.tmpfs {
            options::check_mount_target(&t.target)
                .map_err(|why| Error::Invalid(format!("invalid tmpfs mount point: {why}")))?;
        }
        husk_net::check_extra_hosts(&self.network, &self.extra_hosts)?;
        check_sysctls(&self.sysctls)?;
        check_files(&self.files)
    }
}

/// The agent's rules for kernel parameters, checked on the host.
fn check_sysctls(sysctls: &[husk_protocol::Sysctl]) -> Result<(), Error> {
    if sysctls.len() > husk_protocol::MAX_SYSCTLS {
        return Err(Error::Invalid(format!(
            "at most {} sysctls can be set in a container",
            husk_protocol::MAX_SYSCTLS
        )));
    }
    for s in sysctls {
        if !husk_protocol::Sysctl::valid_key(&s.key) {
            return Err(Error::Invalid(format!("invalid sysctl name {:?}", s.key)));
        }
        if !husk_protocol::Sysctl::valid_value(&s.value) {
            return Err(Error::Invalid(format!(
                "invalid value for sysctl {}",
                s.key
            )));
        }
    }
    Ok(())
}

/// The agent's limits on copied files, checked on the host so that create
/// fails with a clear message instead of the VM.
fn check_files(files: &[ContainerFile]) -> Result<(), Error> {
    if files.len() > MAX_FILES {
        return Err(Error::Invalid(format!(
            "at most {MAX_FILES} files can be copied into a container"
        )));
    }
    let mut total = 0;
    for f in files {
        options::check_mount_target(&f.path)
            .map_err(|why| Error::Invalid(format!("invalid file path: {why}")))?;
        if f.content.len() > MAX_FILE_BYTES {
            return Err(Error::Invalid(format!(
                "{}: files copied into a container are limited to {MAX_FILE_BYTES} bytes",
                f.path
            )));
        }
        total += f.content.len();
    }
    if total > MAX_FILES_BYTES {
        return Err(Error::Invalid(format!(
            "files copied into a container are limited to {MAX_FILES_BYTES} bytes together"
        )));
    }
    Ok(())
}

impl Runtime {
    /// The plan for `opts`: resolves the image and its layer disks and
    /// merges the image's config with the options (Docker's precedence).
    pub fn plan(&self, opts: &CreateOptions) -> Result<ContainerPlan, Error> {
        let store = self.image_store()?;
        let image = store.resolve(&opts.image)?;
        let rc = image.runtime_config();
        let layers: Vec<_> = store
            .layer_disks(&image)?
            .into_iter()
            .map(|d| d.path)
            .collect();
        let id = ContainerId::generate();
        let hostname = opts
            .hostname
            .clone()
            .unwrap_or_else(|| id.short().to_string());
        let process = options::process(&rc, opts, &hostname)?;
        let stop_signal = match (opts.stop_signal, &rc.stop_signal) {
            (Some(s), _) => s,
            (None, Some(name)) => name.parse().map_err(|_| {
                Error::Invalid(format!("invalid stop signal {name:?} in the image"))
            })?,
            (None, None) => Signal::TERM,
        };
        let volumes = crate::store::volume_requests(&opts.volumes, &rc.volumes)?;
        let ports = crate::ports::published(
            &opts.ports,
            opts.publish_all,
            &rc.exposed_ports,
            &opts.network,
        )?;
        let boot = VmBoot {
            kernel: opts.kernel.clone(),
            agent_disk: opts.agent_disk.clone(),
            boot_timeout: opts.boot_timeout,
            start: opts.start,
        };
        Ok(ContainerPlan {
            id,
            name: opts.name.clone(),
            image: opts.image.clone(),
            image_id: image.id.to_string(),
            hostname,
            cpus: opts.cpus.unwrap_or(options::DEFAULT_CPUS),
            memory_mib: opts.memory_mib.unwrap_or(options::DEFAULT_MEMORY_MIB),
            volumes,
            stop_signal,
            stop_timeout: opts.stop_timeout.unwrap_or(options::DEFAULT_STOP_TIMEOUT),
            auto_remove: opts.auto_remove,
            ports,
            network: opts.network.clone(),
            extra_hosts: opts.extra_hosts.clone(),
            security_flags: opts.security_flags.clone(),
            log_config: opts.log_config,
            io_limits: opts.io_limits,
            restart_policy: opts.restart_policy,
            health: opts
                .health
                .resolve(image_healthcheck(&store, &image).as_ref())
                .map_err(Error::Invalid)?,
            labels: crate::run_flags::merge_labels(&rc.labels, &opts.labels),
            tmpfs: opts
                .tmpfs
                .iter()
                .cloned()
                .chain(opts.run_flags.tmpfs())
                .collect(),
            run_flags: opts.run_flags.clone(),
            ..ContainerPlan::new(process, layers, boot)
        })
    }
}

/// The image's `HEALTHCHECK` (Docker's config field, which the OCI config
/// type does not keep: read from the config blob).
fn image_healthcheck(
    store: &images::Store,
    image: &images::Image,
) -> Option<crate::health::ImageHealthcheck> {
    let raw = store.read_blob(&image.id).ok()?;
    let doc: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    serde_json::from_value(doc.get("config")?.get("Healthcheck")?.clone()).ok()
}
