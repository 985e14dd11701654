//! OCI containers in the husk container store: IDs, the store names they
//! map to, lookups, and the OCI state of a husk container.
//!
//! Every OCI container is a husk container of the runtime store at
//! `--root` (`Runtime::open`), named after its OCI ID when the ID is a
//! valid husk name, else `oci-` and a hash of the ID (runc allows `+` and
//! one-character IDs, husk names do not). The bundle directory is the
//! container's `image`, the bundle's annotations its annotations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use husk_runtime::{Container, Runtime, State, Status};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cli::OCI_VERSION_MAX;

/// Longest container ID accepted.
pub const MAX_ID: usize = 1024;

/// Errors about containers as OCI runtimes word them (conmon and podman
/// look for "does not exist").
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// No container has this ID.
    #[error("container \"{0}\" does not exist")]
    NotExist(String),
    /// The ID is taken.
    #[error("container with id \"{0}\" already exists")]
    Exists(String),
    /// The ID has characters runc does not allow.
    #[error("invalid container ID {0:?}: only [A-Za-z0-9_+.-] are allowed (not \".\" or \"..\", at most {MAX_ID})")]
    InvalidId(String),
    /// The container is not in a state that allows the operation.
    #[error("container \"{id}\" is {status}: cannot {action}")]
    State {
        /// The ID.
        id: String,
        /// Its status.
        status: OciStatus,
        /// What was attempted.
        action: &'static str,
    },
    /// The container store failed.
    #[error(transparent)]
    Runtime(#[from] husk_runtime::Error),
}

/// Checks an OCI container ID with runc's rules.
pub fn check_id(id: &str) -> Result<(), OciError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(OciError::InvalidId(id.to_string()))
    }
}

/// The husk container name of OCI ID `id` (checked with [`check_id`]).
pub fn store_name(id: &str) -> String {
    if husk_runtime::id::valid_name(id) {
        return id.to_string();
    }
    let digest = hex::encode(Sha256::digest(id.as_bytes()));
    format!("oci-{}", &digest[..40])
}

/// The OCI status of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OciStatus {
    /// Created; the process waits for `start`.
    Created,
    /// The process runs (or has just ended and its VM is going away: the
    /// container's host process still lives).
    Running,
    /// Over: the container's host process has exited.
    Stopped,
}

impl std::fmt::Display for OciStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OciStatus::Created => "created",
            OciStatus::Running => "running",
            OciStatus::Stopped => "stopped",
        })
    }
}

/// The OCI status of a husk container in `state` whose monitor is (or is
/// not) `monitor_alive`. A container is stopped exactly when its monitor
/// — the host process whose pid `create` reported — has exited.
pub fn status(state: &State, monitor_alive: bool) -> OciStatus {
    match (state.status, monitor_alive) {
        (Status::Running, true) if state.pid.is_none() => OciStatus::Created,
        (Status::Running | Status::Exited, true) => OciStatus::Running,
        (Status::Created, _) => OciStatus::Created,
        (Status::Running | Status::Exited, false) => OciStatus::Stopped,
    }
}

/// The OCI state document (`state` prints it), with runc's extras
/// `created` and `owner`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    /// The spec version.
    pub oci_version: String,
    /// The container ID.
    pub id: String,
    /// Its status.
    pub status: OciStatus,
    /// The host process that lives as long as the container (0 once
    /// stopped).
    pub pid: i32,
    /// The bundle directory.
    pub bundle: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Owner (runc's field; always empty).
    pub owner: String,
    /// The bundle's annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI container: its ID, the husk container and its OCI status.
pub struct OciContainer {
    /// The OCI ID.
    pub id: String,
    /// The husk container.
    pub husk: Container,
    /// Its OCI status.
    pub status: OciStatus,
}

impl OciContainer {
    /// The pid of the container's host process while it lives.
    pub fn pid(&self) -> Option<i32> {
        match self.status {
            OciStatus::Stopped => None,
            _ => self.husk.state.monitor.map(|m| m.pid),
        }
    }

    /// The OCI state document.
    pub fn state(&self) -> OciState {
        let cfg = &self.husk.config;
        OciState {
            oci_version: OCI_VERSION_MAX.to_string(),
            id: self.id.clone(),
            status: self.status,
            pid: self.pid().unwrap_or(0),
            bundle: cfg.image.clone(),
            created: cfg.created.clone(),
            owner: String::new(),
            annotations: cfg.annotations.clone(),
        }
    }

    /// Fails with [`OciError::State`] unless the status is one of `ok`.
    pub fn require(&self, ok: &[OciStatus], action: &'static str) -> Result<(), OciError> {
        if ok.contains(&self.status) {
            Ok(())
        } else {
            Err(OciError::State {
                id: self.id.clone(),
                status: self.status,
                action,
            })
        }
    }
}

/// The container store at `--root`.
pub struct Oci {
    /// The husk runtime on it.
    pub rt: Runtime,
    root: PathBuf,
}

impl Oci {
    /// Opens (creating it if needed) the store at `root`; monitors are
    /// this binary (`husk-oci container-monitor`).
    pub fn open(root: &Path) -> Result<Oci, OciError> {
        let rt = Runtime::open(root)?;
        let root = rt.layout().root().to_path_buf();
        Ok(Oci { rt, root })
    }

    /// The container with OCI ID `id`.
    pub fn find(&self, id: &str) -> Result<OciContainer, OciError> {
        check_id(id)?;
        let name = store_name(id);
        let husk = match self.rt.container(&name) {
            // Only the exact name: not an ID prefix that happens to match.
            Ok(c) if c.config.name == name => c,
            Ok(_) | Err(husk_runtime::Error::NoSuchContainer(_)) => {
                return Err(OciError::NotExist(id.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let alive = husk_runtime::state::monitor_alive(&husk.paths);
        // The state is re-read after the liveness check, so a monitor
        // that just exited is seen with the exit it recorded.
        let state = State::load(&husk.paths)?;
        let status = status(&state, alive);
        Ok(OciContainer {
            id: id.to_string(),
            husk: Container { state, ..husk },
            status,
        })
    }

    /// Whether a container has OCI ID `id`.
    pub fn exists(&self, id: &str) -> Result<bool, OciError> {
        match self.find(id) {
            Ok(_) => Ok(true),
            Err(OciError::NotExist(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Where the layer disks made for container `id`'s root directory
    /// live (removed with the container).
    pub fn layers_dir(&self, id: &str) -> PathBuf {
        self.root.join("oci-layers").join(store_name(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_runtime::state::MonitorProcess;

    #[test]
    fn ids_and_store_names() {
        for ok in ["t2", "a", "abc+def", "x.y-z_1", &"f".repeat(64)] {
            check_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(MAX_ID + 1)] {
            let e = check_id(bad).unwrap_err();
            assert!(e.to_string().starts_with("invalid container ID"), "{e}");
        }
        assert_eq!(store_name("t2"), "t2");
        let hex64 = "0123456789abcdef".repeat(4);
        assert_eq!(store_name(&hex64), hex64);
        for odd in ["t", "a+b", "-x", "_y"] {
            let name = store_name(odd);
            assert!(name.starts_with("oci-") && name.len() == 44, "{name}");
            assert!(husk_runtime::id::valid_name(&name), "{name}");
        }
        assert_ne!(store_name("a+b"), store_name("a+c"));
    }

    fn state(status: Status, pid: Option<u32>) -> State {
        State {
            status,
            pid,
            monitor: Some(MonitorProcess {
                pid: 4242,
                start_time: 1,
            }),
            ..State::created()
        }
    }

    #[test]
    fn statuses_follow_the_monitor() {
        use OciStatus::*;
        let cases = [
            (state(Status::Created, None), false, Created),
            (state(Status::Running, None), true, Created),
            (state(Status::Running, Some(7)), true, Running),
            (state(Status::Exited, None), true, Running),
            (state(Status::Exited, None), false, Stopped),
            (state(Status::Running, Some(7)), false, Stopped),
        ];
        for (s, alive, want) in cases {
            assert_eq!(status(&s, alive), want, "{s:?} alive={alive}");
        }
    }

    #[test]
    fn state_json_has_the_oci_fields() {
        let cfg: husk_runtime::ContainerConfig = serde_json::from_value(serde_json::json!({
            "id": "0".repeat(64), "name": "t2", "created": "2026-01-01T00:00:00.000000000Z",
            "image": "/b", "image_id": "", "layers": [], "hostname": "h", "cpus": 1,
            "memory_mib": 256, "stop_signal": 15, "stop_timeout": 10, "auto_remove": false,
            "kernel": "/k", "agent_disk": "/a", "boot_timeout": 90,
            "process": {"argv": ["sh"], "env": [], "cwd": "/", "user": "", "tty": false,
                        "stdin": false},
            "annotations": {"io.example": "1"},
        }))
        .unwrap();
        let husk = Container {
            id: husk_runtime::ContainerId::parse(&"0".repeat(64)).unwrap(),
            paths: husk_runtime::layout::ContainerPaths { dir: "/x".into() },
            config: cfg,
            state: state(Status::Running, Some(7)),
        };
        let mut c = OciContainer {
            id: "t2".into(),
            husk,
            status: OciStatus::Running,
        };
        let v = serde_json::to_value(c.state()).unwrap();
        assert_eq!(v["ociVersion"], OCI_VERSION_MAX);
        assert_eq!(v["id"], "t2");
        assert_eq!(v["status"], "running");
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["bundle"], "/b");
        assert_eq!(v["created"], "2026-01-01T00:00:00.000000000Z");
        assert_eq!(v["annotations"]["io.example"], "1");
        c.status = OciStatus::Stopped;
        let v = serde_json::to_value(c.state()).unwrap();
        assert_eq!(
            (v["status"].as_str(), v["pid"].as_i64()),
            (Some("stopped"), Some(0))
        );
        assert!(c.require(&[OciStatus::Created], "start").is_err());
        let e = c.require(&[OciStatus::Running], "exec").unwrap_err();
        assert_eq!(e.to_string(), "container \"t2\" is stopped: cannot exec");
    }
}
