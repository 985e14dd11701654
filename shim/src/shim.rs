//! The shim's process life (containerd-shim's [`Shim`] trait): `start`
//! launches the long-lived shim server, `delete` cleans up after a shim
//! that died, and the server serves the task service until `Shutdown`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{api, Config, DeleteResponse, ExitSignal, Flags, Shim, StartOpts};
use husk_runtime::{DeleteOptions, Runtime};

use crate::errors::ShimError;
use crate::service::Service;

/// Where each containerd namespace's container store lives (one husk
/// runtime root per namespace): `$HUSK_CONTAINERD_ROOT/<namespace>`,
/// by default under /run/husk/containerd (like containerd's own task
/// state, it does not outlive a reboot).
pub const DEFAULT_ROOT: &str = "/run/husk/containerd";

/// The file in a task's bundle directory that names its husk container.
pub const ID_FILE: &str = "husk-container-id";

/// The husk runtime root of containerd namespace `ns`.
pub fn runtime_root(ns: &str) -> Result<PathBuf, ShimError> {
    let valid = !ns.is_empty()
        && ns != "."
        && ns != ".."
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid {
        return Err(ShimError::Invalid(format!("invalid namespace {ns:?}")));
    }
    let base = std::env::var_os("HUSK_CONTAINERD_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
    Ok(base.join(ns))
}

/// The husk runtime of namespace `ns`.
pub fn open_runtime(ns: &str) -> Result<Runtime, ShimError> {
    let root = runtime_root(ns)?;
    Ok(Runtime::open(&root)?)
}

/// The shim.
pub struct HuskShim {
    namespace: String,
    id: String,
    bundle: String,
    exit: Arc<ExitSignal>,
}

impl Shim for HuskShim {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        HuskShim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            bundle: args.bundle.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    /// One shim (and server socket) per container. The address is also
    /// written to `address` in the bundle (the working directory): the
    /// server removes its socket by it when it shuts down, containerd
    /// reconnects by it after a restart, and `delete` finds it there.
    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let grouping = opts.id.clone();
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    /// After a shim died: kills the container's monitor (and with it the
    /// VM) and removes the container, so nothing is left behind.
    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = if self.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&self.bundle)
        };
        if let Err(e) = remove_container(&self.namespace, &self.id, &bundle) {
            log::warn!("cleaning up container {}: {e}", self.id);
        }
        remove_socket(&bundle);
        let mut resp = api::DeleteResponse::new();
        // What containerd reports for a task whose shim died: killed.
        resp.exit_status = 128 + 9;
        resp.exited_at = Some(crate::service::timestamp(std::time::SystemTime::now())).into();
        Ok(resp)
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Service {
        Service::new(&self.namespace, publisher, self.exit.clone())
    }
}

/// Removes the socket of a shim that died (named in the bundle's
/// `address` file), if it is still there.
fn remove_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = address.trim();
    let path = Path::new(path.strip_prefix("unix://").unwrap_or(path));
    let is_socket = std::fs::symlink_metadata(path)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
    if is_socket {
        let _ = std::fs::remove_file(path);
    }
}

/// Force-removes the husk container of task `id` (named in its bundle, or
/// by the task ID); a container already gone is fine.
fn remove_container(ns: &str, id: &str, bundle: &Path) -> Result<(), ShimError> {
    let rt = open_runtime(ns)?;
    let name = std::fs::read_to_string(bundle.join(ID_FILE))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| id.to_string());
    let opts = DeleteOptions {
        force: true,
        volumes: true,
    };
    match rt.delete(&name, opts) {
        Ok(_) | Err(husk_runtime::Error::NoSuchContainer(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
