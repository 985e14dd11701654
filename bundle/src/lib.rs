//! OCI bundles for husk: a bundle's `config.json` and root filesystem (or
//! containerd's snapshotter mounts) become a [`ContainerPlan`] that
//! [`husk_runtime::Runtime::create_from`] creates — the same path as
//! `husk create` from an image, with the same monitor, VM and agent.
//!
//! ```text
//! let bundle = Bundle::load(dir)?;                       // parse config.json
//! let shape = bundle.translate()?;                       // or a clear error
//! let layers = rootfs::from_dir(&bundle.root_dir(), &dirs)?;   // or from_mounts
//! let plan = shape.into_plan(layers.disks, boot);        // + name, stdin...
//! let id = runtime.create_from(plan)?;
//! ```
//!
//! What is honoured and how is described per section: [`process`],
//! [`linux`] (resources, namespaces), [`mounts`], [`rootfs`]. Everything
//! else that a bundle can ask for and husk cannot honour fails
//! [`Bundle::translate`] with one line naming it; nothing is silently
//! dropped. Top level: `hostname` is the VM's hostname (the container's
//! short ID when absent); `root.readonly`, `hooks` and `domainname` fail;
//! `annotations` are kept with the container (an OCI runtime reports them
//! in its state) and have no other effect.

pub mod cache;
pub mod linux;
pub mod mountinfo;
pub mod mounts;
pub mod process;
pub mod rootfs;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use husk_runtime::{ContainerFile, ContainerPlan, ProcessConfig, VmBoot};
use oci_spec::runtime::Spec;

pub use cache::LayerCache;
pub use linux::VmShape;
pub use rootfs::{DiskDirs, Layers, RootfsMount};

/// Largest config.json read.
pub const MAX_CONFIG: u64 = 4 << 20;

/// Why a bundle cannot become a container.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// config.json could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// config.json is larger than [`MAX_CONFIG`].
    #[error("{0} is larger than {MAX_CONFIG} bytes")]
    TooLarge(PathBuf),
    /// config.json is not a valid OCI runtime spec.
    #[error("{path}: invalid OCI runtime config")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The spec's version is not 1.x.
    #[error("unsupported ociVersion {0:?} (1.x expected)")]
    Version(String),
    /// There is no `process`.
    #[error("config.json has no process")]
    NoProcess,
    /// The hostname is not valid.
    #[error("invalid hostname {0:?}: at most 64 of [A-Za-z0-9.-_]")]
    Hostname(String),
    /// A top-level field that cannot be honoured.
    #[error("{0} is not supported by husk")]
    Unsupported(&'static str),
    /// `process` cannot be honoured.
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    /// `linux` cannot be honoured.
    #[error(transparent)]
    Linux(#[from] linux::LinuxError),
    /// A mount cannot be honoured.
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
}

/// An OCI bundle: its directory and parsed `config.json`.
#[derive(Clone, Debug)]
pub struct Bundle {
    dir: PathBuf,
    spec: Spec,
}

/// What a bundle asks for, translated (see [`Bundle::translate`]).
#[derive(Clone, Debug)]
pub struct Translation {
    /// The init process (`stdin` false: set it when input is forwarded).
    pub process: ProcessConfig,
    /// Its initial terminal size, if the spec gives one.
    pub console_size: Option<(u16, u16)>,
    /// The hostname, if the spec sets one.
    pub hostname: Option<String>,
    /// Files copied into the root (the file bind mounts).
    pub files: Vec<ContainerFile>,
    /// tmpfs mounts.
    pub tmpfs: Vec<husk_protocol::TmpfsMount>,
    /// Directory bind mounts (shared over virtio-fs), as
    /// [`husk_runtime::VolumeRequest::Bind`]s.
    pub binds: Vec<husk_runtime::VolumeRequest>,
    /// vCPUs, memory and network of the VM.
    pub vm: VmShape,
    /// The spec's annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Bundle {
    /// Reads and parses `<dir>/config.json`.
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        let path = dir.join("config.json");
        let read = |source| BundleError::Read {
            path: path.clone(),
            source,
        };
        let mut text = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_CONFIG + 1).read_to_end(&mut text))
            .map_err(read)?;
        if text.len() as u64 > MAX_CONFIG {
            return Err(BundleError::TooLarge(path));
        }
        let spec: Spec = serde_json::from_slice(&text).map_err(|source| BundleError::Parse {
            path: path.clone(),
            source,
        })?;
        Ok(Bundle::from_spec(dir, spec))
    }

    /// A bundle of an already parsed spec.
    pub fn from_spec(dir: &Path, spec: Spec) -> Bundle {
        Bundle {
            dir: dir.to_path_buf(),
            spec,
        }
    }

    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed config.json.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The root filesystem directory: `root.path`, relative to the bundle
    /// directory unless absolute (`rootfs` when absent).
    pub fn root_dir(&self) -> PathBuf {
        let root = self
            .spec
            .root()
            .as_ref()
            .map_or_else(|| PathBuf::from("rootfs"), |r| r.path().clone());
        self.dir.join(root)
    }

    /// Checks everything the bundle asks for and translates what husk
    /// honours; the first thing it cannot honour is the error.
    pub fn translate(&self) -> Result<Translation, BundleError> {
        let spec = &self.spec;
        if !spec.version().starts_with("1.") {
            return Err(BundleError::Version(spec.version().clone()));
        }
        if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
            return Err(BundleError::Unsupported("a read-only root (root.readonly)"));
        }
        if spec.hooks().as_ref().is_some_and(has_hooks) {
            return Err(BundleError::Unsupported("hooks"));
        }
        if spec.domainname().as_ref().is_some_and(|d| !d.is_empty()) {
            return Err(BundleError::Unsupported("domainname"));
        }
        let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
        if let Some(h) = &hostname {
            let ok = h.len() <= 64
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if !ok {
                return Err(BundleError::Hostname(h.clone()));
            }
        }
        let p = spec.process().as_ref().ok_or(BundleError::NoProcess)?;
        let process = process::translate(p)?;
        let vm = linux::translate(spec.linux().as_ref())?;
        let guest = mounts::translate(spec.mounts().as_deref().unwrap_or_default(), &self.dir)?;
        Ok(Translation {
            process,
            console_size: process::console_size(p),
            hostname,
            files: guest.files,
            tmpfs: guest.tmpfs,
            binds: guest.binds,
            vm,
            annotations: spec
                .annotations()
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }
}

fn has_hooks(h: &oci_spec::runtime::Hooks) -> bool {
    let some = |v: &Option<Vec<_>>| v.as_ref().is_some_and(|v: &Vec<_>| !v.is_empty());
    #[allow(deprecated)]
    let prestart = some(h.prestart());
    prestart
        || some(h.create_runtime())
        || some(h.create_container())
        || some(h.start_container())
        || some(h.poststart())
        || some(h.poststop())
}

impl Translation {
    /// The container plan: this translation on `layers` (bottom first),
    /// booted with `boot`, with husk's defaults for the rest (a new ID,
    /// no name, no volumes or ports). Set `name`, `process.stdin` and
    /// `image` on the result as the caller knows them.
    pub fn into_plan(self, layers: Vec<PathBuf>, boot: VmBoot) -> ContainerPlan {
        let mut plan = ContainerPlan::new(self.process, layers, boot);
        if let Some(h) = self.hostname {
            plan.hostname = h;
        }
        plan.files = self.files;
        plan.tmpfs = self.tmpfs;
        plan.volumes = self.binds;
        if let Some(c) = self.vm.cpus {
            plan.cpus = c;
        }
        if let Some(m) = self.vm.memory_mib {
            plan.memory_mib = m;
        }
        plan.network = self.vm.network;
        plan.sysctls = self.vm.sysctls;
        plan.annotations = self.annotations;
        plan
    }
}

#[cfg(test)]
mod tests;
