//! Store housekeeping: `rename`, `container prune`, `volume prune`, and
//! what `system df` counts.

use husk_sandbox::template::disk_usage;

use crate::id::{self, ContainerId};
use crate::layout;
use crate::store::{Container, DeleteOptions};
use crate::{Error, Runtime};

/// A container removed by [`Runtime::prune_containers`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pruned {
    /// Full ID (or volume name).
    pub name: String,
    /// Bytes its files took on disk.
    pub bytes: u64,
}

impl Runtime {
    /// Renames container `name` to `new` (Docker's `rename`): refused
    /// when `new` is invalid, the same as the current name, or taken
    /// ([`Error::NameInUse`]).
    pub fn rename(&self, name: &str, new: &str) -> Result<ContainerId, Error> {
        let new = new.trim_start_matches('/');
        if !id::valid_name(new) {
            return Err(Error::InvalidName(new.to_string()));
        }
        let _names = layout::lock(&self.layout.names_lock())?;
        let c = self.container(name)?;
        if c.config.name == new {
            return Err(Error::Invalid(
                "Renaming a container with the same name as its current name".into(),
            ));
        }
        if let Some(other) = self.list()?.into_iter().find(|o| o.config.name == new) {
            return Err(Error::NameInUse {
                name: new.to_string(),
                id: other.id.to_string(),
            });
        }
        let _busy = layout::lock(&c.paths.lock())?;
        let mut config = c.config;
        config.name = new.to_string();
        layout::write_json(&c.paths.config(), &config)?;
        Ok(c.id)
    }

    /// Removes every container that is not running and that `keep`
    /// does not keep; returns them with the space their files took.
    /// Containers another command removes meanwhile are skipped.
    pub fn prune_containers(
        &self,
        keep: impl Fn(&Container) -> bool,
    ) -> Result<Vec<Pruned>, Error> {
        let mut out = Vec::new();
        for c in self.list()? {
            if !c.state.status.can_remove() || keep(&c) {
                continue;
            }
            let bytes = disk_usage(&c.paths.dir);
            match self.delete(c.id.as_str(), DeleteOptions::default()) {
                Ok(id) => out.push(Pruned {
                    name: id.to_string(),
                    bytes,
                }),
                Err(Error::NoSuchContainer(_) | Error::Running { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Removes the volumes no container mounts: anonymous ones only, or
    /// named ones too with `all` (Docker's `volume prune -a`).
    pub fn prune_volumes(&self, all: bool) -> Result<Vec<Pruned>, Error> {
        let used: Vec<String> = self
            .list()?
            .into_iter()
            .flat_map(|c| c.config.mounts.into_iter().map(|m| m.name))
            .collect();
        let vols = self.volumes();
        let mut out = Vec::new();
        for v in vols.list()? {
            if used.contains(&v.name) || !(all || v.anonymous) {
                continue;
            }
            let bytes = v.disk.parent().map_or(0, disk_usage);
            match self.volume_remove(&v.name) {
                Ok(()) => out.push(Pruned {
                    name: v.name,
                    bytes,
                }),
                // Taken by a container created meanwhile, or in use.
                Err(Error::Volume(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Bytes a container's own files take (writable disk, logs, state).
    pub fn container_disk_usage(&self, c: &Container) -> u64 {
        disk_usage(&c.paths.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ContainerConfig;
    use crate::state::{State, Status};

    fn runtime() -> (tempfile::TempDir, Runtime) {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::open(dir.path()).unwrap();
        (dir, rt)
    }

    /// A container written straight into the store (no image needed).
    fn add(rt: &Runtime, name: &str, status: Status) -> ContainerId {
        let id = ContainerId::generate();
        let paths = rt.layout.container(id.as_str());
        std::fs::create_dir_all(&paths.dir).unwrap();
        let config: ContainerConfig = serde_json::from_value(serde_json::json!({
            "id": id.as_str(), "name": name, "created": crate::time::now(), "image": "i",
            "image_id": "", "layers": [], "hostname": "h", "cpus": 1, "memory_mib": 256,
            "stop_signal": 15, "stop_timeout": 10, "auto_remove": false,
            "kernel": "/k", "agent_disk": "/a", "boot_timeout": 90,
            "process": {
                "argv": ["sh"], "env": [], "cwd": "/", "user": "", "tty": false, "stdin": false
            },
        }))
        .unwrap();
        layout::write_json(&paths.config(), &config).unwrap();
        std::fs::write(paths.dir.join("data"), vec![1u8; 64 << 10]).unwrap();
        let mut state = State::created();
        state.status = status;
        state.write(&paths).unwrap();
        id
    }

    #[test]
    fn rename_checks_names_like_docker() {
        let (_d, rt) = runtime();
        let a = add(&rt, "alpha", Status::Exited);
        add(&rt, "beta", Status::Exited);
        assert_eq!(rt.rename("alpha", "gamma").unwrap(), a);
        assert_eq!(rt.container("gamma").unwrap().id, a);
        assert!(matches!(
            rt.container("alpha"),
            Err(Error::NoSuchContainer(_))
        ));
        match rt.rename("gamma", "beta") {
            Err(Error::NameInUse { name, .. }) => assert_eq!(name, "beta"),
            other => panic!("{other:?}"),
        }
        assert!(rt.rename("gamma", "gamma").is_err());
        assert!(matches!(
            rt.rename("gamma", "bad name"),
            Err(Error::InvalidName(_))
        ));
        assert!(matches!(
            rt.rename("nope", "delta"),
            Err(Error::NoSuchContainer(_))
        ));
    }

    #[test]
    fn prune_removes_what_is_not_kept_and_counts_its_space() {
        let (_d, rt) = runtime();
        let exited = add(&rt, "done", Status::Exited);
        let kept = add(&rt, "kept", Status::Created);
        let pruned = rt.prune_containers(|c| c.config.name == "kept").unwrap();
        assert_eq!(pruned.len(), 1);
        assert_eq!(pruned[0].name, exited.as_str());
        assert!(pruned[0].bytes >= 64 << 10, "{}", pruned[0].bytes);
        let left: Vec<_> = rt.list().unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(left, vec![kept]);
        assert!(rt.prune_volumes(true).unwrap().is_empty());
    }
}
