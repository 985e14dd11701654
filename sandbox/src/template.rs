//! Warm-start templates: snapshots of a VM booted to its parked agent,
//! cached under `<cache>/templates/<key>/` and restored instead of booting.
//!
//! A template's key is a hash of everything that decides its content
//! ([`TemplateInputs`]: kernel and agent disk contents, vCPUs, memory,
//! the device layout, the host's quirks, the snapshot format). A template
//! directory holds `state` and `memory` (the snapshot), `console.log` (its
//! boot) and `inputs.json`, written last: a directory without it, or whose
//! inputs differ, is not a template. Templates are built in a staging
//! directory and renamed into place under a per-key lock, so concurrent
//! callers build one template and the others wait for it; a build killed
//! half way leaves only a staging directory, removed by the next build.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use images::store::FileLock;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped when what a template holds, or how it is laid out, changes.
const TEMPLATE_FORMAT: &str = "husk template v1";

/// Disk slot counts templates are made with (besides the agent disk): a
/// VM with `n` disks uses the smallest bucket of at least `n`.
pub const SLOT_BUCKETS: [usize; 3] = [4, 8, 16];

/// The file that marks a complete template.
const INPUTS_FILE: &str = "inputs.json";

/// How a sandbox's VM starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartMode {
    /// Restored from a template (built on first need); a failed restore
    /// falls back to a cold boot with a warning.
    #[default]
    Warm,
    /// Booted from the kernel.
    Cold,
}

impl StartMode {
    /// `Cold` when `$HUSK_COLD` is set to anything but empty or `0`,
    /// else `Warm`.
    pub fn from_env() -> StartMode {
        match std::env::var("HUSK_COLD") {
            Ok(v) if !v.is_empty() && v != "0" => StartMode::Cold,
            _ => StartMode::Warm,
        }
    }

    /// `Cold` if `cold` (a `--cold` flag), else [`StartMode::from_env`].
    pub fn choose(cold: bool) -> StartMode {
        if cold {
            StartMode::Cold
        } else {
            StartMode::from_env()
        }
    }
}

/// The slot bucket for a VM with `disks` disks besides the agent disk;
/// `None` if no template has that many slots.
pub fn slot_bucket(disks: usize) -> Option<usize> {
    SLOT_BUCKETS.iter().copied().find(|&b| b >= disks)
}

/// Errors finding, building or listing templates.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A file operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No template has this key (or key prefix).
    #[error("no template {0}")]
    NotFound(String),
    /// `inputs.json` could not be written.
    #[error("encoding the template's inputs")]
    Encode(#[source] serde_json::Error),
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> TemplateError {
    let context = context.into();
    move |source| TemplateError::Io { context, source }
}

/// Everything that decides a template's content; its hash is the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateInputs {
    /// This husk's template format and the VMM's snapshot format version.
    pub format: String,
    /// The kernel (for listings; its content decides via `kernel_sha256`).
    pub kernel: PathBuf,
    /// SHA-256 of the kernel file.
    pub kernel_sha256: String,
    /// The agent disk (its file name is the hash of its content).
    pub agent_disk: PathBuf,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Disk slots besides the agent disk.
    pub slots: usize,
    /// The network interface's MTU, if the VM has one.
    pub net_mtu: Option<u16>,
    /// The host's KVM kind (it decides the guest kernel's quirks).
    pub host: String,
    /// The guest kernel command line the sandbox adds.
    pub cmdline: String,
}

impl TemplateInputs {
    /// The inputs' key: the first 16 hex digits of the SHA-256 of their
    /// JSON form.
    pub fn key(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&json))[..16].to_string()
    }

    /// The format string of this husk.
    pub fn current_format() -> String {
        format!(
            "{TEMPLATE_FORMAT}; vmm snapshot v{}",
            vmm::snapshot::FORMAT_VERSION
        )
    }
}

/// Bytes `path` takes on disk: the blocks allocated to it and, for a
/// directory, to everything below it (symlinks not followed; sparse files
/// counted as stored, so an 8 GiB sparse disk counts what it holds).
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    let below: u64 = fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| disk_usage(&e.path())).sum())
        .unwrap_or(0);
    own + below
}

/// A complete template on disk.
#[derive(Clone, Debug)]
pub struct Template {
    /// Its directory.
    pub dir: PathBuf,
    /// Its key (the directory's name).
    pub key: String,
    /// What it was made from.
    pub inputs: TemplateInputs,
}

impl Template {
    /// The snapshot files to restore.
    pub fn files(&self) -> vmm::SnapshotFiles {
        vmm::SnapshotFiles {
            state: self.dir.join("state"),
            memory: self.dir.join("memory"),
        }
    }

    /// Bytes the template takes on disk (sparse memory counted as stored).
    pub fn disk_usage(&self) -> u64 {
        disk_usage(&self.dir)
    }

    /// When it was made.
    pub fn created(&self) -> Option<SystemTime> {
        fs::metadata(self.dir.join(INPUTS_FILE))
            .and_then(|m| m.modified())
            .ok()
    }
}

/// The template cache directory.
#[derive(Clone, Debug)]
pub struct TemplateStore {
    root: PathBuf,
}

impl TemplateStore {
    /// The store at `root`.
    pub fn new(root: impl Into<PathBuf>) -> TemplateStore {
        TemplateStore { root: root.into() }
    }

    /// `<cache>/templates` (see [`crate::assets::cache_dir`]).
    pub fn default_store() -> TemplateStore {
        TemplateStore::new(crate::assets::cache_dir().join("templates"))
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The complete template for `inputs`, if there is one.
    pub fn find(&self, inputs: &TemplateInputs) -> Option<Template> {
        let key = inputs.key();
        let template = self.load(&key)?;
        (template.inputs == *inputs).then_some(template)
    }

    fn load(&self, key: &str) -> Option<Template> {
        let dir = self.root.join(key);
        let json = fs::read(dir.join(INPUTS_FILE)).ok()?;
        let inputs: TemplateInputs = serde_json::from_slice(&json).ok()?;
        Some(Template {
            dir,
            key: key.to_string(),
            inputs,
        })
    }

    /// The template for `inputs`: found, or built by `build` into a
    /// staging directory (it writes `state`, `memory` and whatever else it
    /// likes) and published atomically. Concurrent callers for one key
    /// build it once: the others wait on the key's lock and find it.
    pub fn ensure<E>(
        &self,
        inputs: &TemplateInputs,
        build: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<Template, E>
    where
        E: From<TemplateError>,
    {
        if let Some(t) = self.find(inputs) {
            return Ok(t);
        }
        let key = inputs.key();
        let _lock = self.lock(&key)?;
        if let Some(t) = self.find(inputs) {
            return Ok(t);
        }
        self.remove_leftovers(&key)?;
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{key}.staging-"))
            .tempdir_in(&self.root)
            .map_err(io_ctx(format!(
                "creating a staging directory in {}",
                self.root.display()
            )))?;
        build(staging.path())?;
        let json = serde_json::to_vec_pretty(inputs).map_err(TemplateError::Encode)?;
        let marker = staging.path().join(INPUTS_FILE);
        fs::write(&marker, json).map_err(io_ctx(format!("writing {}", marker.display())))?;
        sync_tree(staging.path())?;
        let dir = self.root.join(&key);
        fs::rename(staging.path(), &dir)
            .map_err(io_ctx(format!("publishing the template {}", dir.display())))?;
        // The staging directory is now the template: nothing to clean up.
        let _ = staging.keep();
        sync_dir(&self.root)?;
        Ok(Template {
            dir,
            key,
            inputs: inputs.clone(),
        })
    }

    /// Removes the template for `inputs` (found damaged), under its lock,
    /// unless another process replaced it meanwhile with one that differs
    /// from `damaged`.
    pub fn discard(&self, damaged: &Template) -> Result<(), TemplateError> {
        let _lock = self.lock(&damaged.key)?;
        let still_same = fs::metadata(damaged.dir.join(INPUTS_FILE))
            .and_then(|m| m.modified())
            .ok()
            == damaged.created();
        if still_same {
            remove_dir(&damaged.dir)?;
        }
        Ok(())
    }

    /// Every complete template, oldest first.
    pub fn list(&self) -> Result<Vec<Template>, TemplateError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_ctx(format!("reading {}", self.root.display()))(e)),
        };
        let mut templates: Vec<Template> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.') && !name.ends_with(".lock"))
            .filter_map(|name| self.load(&name))
            .collect();
        templates.sort_by_key(|t| t.created());
        Ok(templates)
    }

    /// Removes the template whose key is `key` or starts with it (it must
    /// be unambiguous).
    pub fn remove(&self, key: &str) -> Result<Template, TemplateError> {
        let mut matches: Vec<Template> = (self.list()?.into_iter())
            .filter(|t| !key.is_empty() && t.key.starts_with(key))
            .collect();
        if matches.len() != 1 {
            return Err(TemplateError::NotFound(key.to_string()));
        }
        let template = matches.remove(0);
        let _lock = self.lock(&template.key)?;
        remove_dir(&template.dir)?;
        Ok(template)
    }

    /// Removes every template and leftover; returns the removed templates,
    /// each with the disk space it took.
    pub fn prune(&self) -> Result<Vec<(Template, u64)>, TemplateError> {
        let templates = self.list()?;
        let mut removed = Vec::with_capacity(templates.len());
        for t in templates {
            let _lock = self.lock(&t.key)?;
            let bytes = t.disk_usage();
            remove_dir(&t.dir)?;
            self.remove_leftovers(&t.key)?;
            removed.push((t, bytes));
        }
        Ok(removed)
    }

    fn lock(&self, key: &str) -> Result<FileLock, TemplateError> {
        fs::create_dir_all(&self.root)
            .map_err(io_ctx(format!("creating {}", self.root.display())))?;
        let path = self.root.join(format!("{key}.lock"));
        FileLock::exclusive(&path).map_err(io_ctx(format!("locking {}", path.display())))
    }

    /// Under `key`'s lock: an incomplete directory for `key` and staging
    /// directories of builds that died.
    fn remove_leftovers(&self, key: &str) -> Result<(), TemplateError> {
        let dir = self.root.join(key);
        if dir.exists() && self.load(key).is_none() {
            remove_dir(&dir)?;
        }
        let prefix = format!(".{key}.staging-");
        let entries =
            fs::read_dir(&self.root).map_err(io_ctx(format!("reading {}", self.root.display())))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                remove_dir(&entry.path())?;
            }
        }
        Ok(())
    }
}

fn remove_dir(dir: &Path) -> Result<(), TemplateError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_ctx(format!("removing {}", dir.display()))(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), TemplateError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_ctx(format!("fsync {}", dir.display())))
}

/// Flushes every file in `dir` and `dir` itself.
fn sync_tree(dir: &Path) -> Result<(), TemplateError> {
    let entries = fs::read_dir(dir).map_err(io_ctx(format!("reading {}", dir.display())))?;
    for entry in entries.flatten() {
        let path = entry.path();
        fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io_ctx(format!("fsync {}", path.display())))?;
    }
    sync_dir(dir)
}

/// SHA-256 of the kernel at `path`, remembered in the store by the file's
/// identity (device, inode, size, modification time) so a restore does not
/// hash the kernel each time.
pub fn kernel_digest(store: &TemplateStore, path: &Path) -> Result<String, TemplateError> {
    let meta = fs::metadata(path).map_err(io_ctx(format!("kernel {}", path.display())))?;
    let identity = format!(
        "{}:{}:{}:{}.{}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let memo_dir = store.root.join(".kernels");
    let memo = memo_dir.join(hex::encode(Sha256::digest(identity.as_bytes())));
    if let Ok(digest) = fs::read_to_string(&memo) {
        if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(digest);
        }
    }
    let mut file = fs::File::open(path).map_err(io_ctx(format!("kernel {}", path.display())))?;
    let mut hash = Sha256::new();
    io::copy(&mut file, &mut hash).map_err(io_ctx(format!("reading {}", path.display())))?;
    let digest = hex::encode(hash.finalize());
    // A memo is an optimisation: failing to write it changes nothing.
    if fs::create_dir_all(&memo_dir).is_ok() {
        let tmp = memo.with_extension("tmp");
        if fs::write(&tmp, &digest).is_ok() {
            let _ = fs::rename(&tmp, &memo);
        }
    }
    Ok(digest)
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
