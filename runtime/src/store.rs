//! The container store: create, look up, list and delete containers.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use crate::config::{ContainerConfig, Mount, Signal};
use crate::id::{self, ContainerId};
use crate::layout::{self, ContainerPaths};
use crate::options::{self, CreateOptions, VolumeRequest};
use crate::plan::ContainerPlan;
use crate::state::State;
use crate::volume::{self, Volumes};
use crate::{io_err, Error, Runtime};

/// Size of a container's writable disk (sparse).
pub const RW_DISK_SIZE: u64 = 8 << 30;

/// Most volumes per container (virtio devices are limited).
pub const MAX_VOLUMES: usize = 8;

/// A container: its ID, files, configuration and (checked) state.
#[derive(Clone, Debug)]
pub struct Container {
    /// Full ID.
    pub id: ContainerId,
    /// Its files.
    pub paths: ContainerPaths,
    /// Its configuration.
    pub config: ContainerConfig,
    /// Its state, corrected for a dead monitor.
    pub state: State,
}

/// How `delete` treats a running container and volumes.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeleteOptions {
    /// Kill a running container first.
    pub force: bool,
    /// Also remove its anonymous volumes.
    pub volumes: bool,
}

impl Runtime {
    /// The volumes of this store.
    pub fn volumes(&self) -> Volumes {
        Volumes::new(self.layout.volumes())
    }

    /// Loads container `id` (full ID).
    fn load(&self, id: &ContainerId) -> Result<Container, Error> {
        let paths = self.layout.container(id.as_str());
        let config: ContainerConfig = layout::read_json(&paths.config())?;
        let state = State::load(&paths)?;
        Ok(Container {
            id: id.clone(),
            paths,
            config,
            state,
        })
    }

    /// The container with this full ID, name, or unique ID prefix.
    pub fn container(&self, name: &str) -> Result<Container, Error> {
        if let Some(id) = ContainerId::parse(name) {
            if self.layout.container(id.as_str()).config().is_file() {
                return self.load(&id);
            }
        }
        let all = self.list()?;
        if let Some(c) = all
            .iter()
            .find(|c| c.config.name == name.trim_start_matches('/'))
        {
            return Ok(c.clone());
        }
        let lower = name.to_ascii_lowercase();
        let mut matches = all
            .into_iter()
            .filter(|c| !lower.is_empty() && c.id.as_str().starts_with(&lower));
        match (matches.next(), matches.next()) {
            (Some(c), None) => Ok(c),
            (Some(_), Some(_)) => Err(Error::Ambiguous(name.to_string())),
            _ => Err(Error::NoSuchContainer(name.to_string())),
        }
    }

    /// Every container, newest first. Half-created or half-removed
    /// directories left by killed processes are cleaned up on the way.
    pub fn list(&self) -> Result<Vec<Container>, Error> {
        let dir = self.layout.containers();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(format!("listing {}", dir.display())))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") || name.starts_with(".rm-") {
                clean_leftover(&entry.path(), name.starts_with(".rm-"));
                continue;
            }
            let Some(id) = ContainerId::parse(&name) else {
                continue;
            };
            match self.load(&id) {
                Ok(c) => out.push(c),
                // Removed meanwhile.
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("skipping container {name}: {e}"),
            }
        }
        out.sort_by(|a, b| b.config.created.cmp(&a.config.created));
        Ok(out)
    }

    /// The images containers were created from (running or not), for
    /// `rmi` and `image prune` to keep. Containers made without an image
    /// (from an OCI bundle) use none.
    pub fn image_users(&self) -> Result<Vec<images::store::ImageUser>, Error> {
        Ok(self
            .list()?
            .into_iter()
            .filter_map(|c| {
                let image_id = c.config.image_id.parse().ok()?;
                Some(images::store::ImageUser {
                    image_id,
                    container_id: c.id.to_string(),
                    running: c.state.is_running(),
                })
            })
            .collect())
    }

    /// Creates a container from an image (no VM yet): plans it
    /// ([`Runtime::plan`]: the image, its layer disks, the merged process
    /// settings) and creates it from the plan ([`Runtime::create_from`]).
    pub fn create(&self, opts: CreateOptions) -> Result<ContainerId, Error> {
        if let Some(n) = &opts.name {
            if !id::valid_name(n.trim_start_matches('/')) {
                return Err(Error::InvalidName(n.clone()));
            }
        }
        let plan = self.plan(&opts)?;
        self.create_from(plan)
    }

    /// Creates the container `plan` describes (no VM yet): makes the
    /// writable disk and the volumes, and records `config.json` and a
    /// `created` state. Nothing is left behind when it fails.
    pub fn create_from(&self, plan: ContainerPlan) -> Result<ContainerId, Error> {
        plan.check()?;
        let id = plan.id.clone();
        let binds = crate::binds::resolve(&plan.volumes)?;
        let tmp = self.layout.containers().join(format!(".tmp-{id}"));
        fs::create_dir(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        let paths = ContainerPaths { dir: tmp.clone() };
        let mut anonymous = Vec::new();
        let created = (|| {
            let _busy = layout::lock(&paths.lock())?;
            volume::make_ext4(&paths.rw_disk(), RW_DISK_SIZE)?;
            let mounts = self.attach_volumes(&plan.volumes, &mut anonymous)?;
            let config = ContainerConfig {
                id: id.to_string(),
                name: String::new(),
                created: crate::time::now(),
                image: plan.image,
                image_id: plan.image_id,
                layers: plan.layers,
                process: plan.process,
                hostname: plan.hostname,
                hosts: Vec::new(),
                resolv_conf: plan.resolv_conf,
                files: plan.files,
                tmpfs: plan.tmpfs,
                sysctls: plan.sysctls,
                cpus: plan.cpus,
                memory_mib: plan.memory_mib,
                mounts,
                binds,
                stop_signal: plan.stop_signal,
                stop_timeout: plan.stop_timeout,
                auto_remove: plan.auto_remove,
                ports: plan.ports,
                network: plan.network,
                extra_hosts: plan.extra_hosts,
                kernel: plan.boot.kernel,
                agent_disk: plan.boot.agent_disk,
                boot_timeout: plan.boot.boot_timeout,
                start: plan.boot.start,
                security_flags: plan.security_flags,
                log_config: plan.log_config,
                annotations: plan.annotations,
                io_limits: plan.io_limits,
                restart_policy: plan.restart_policy,
                health: plan.health,
                labels: plan.labels,
                run_flags: plan.run_flags,
            };
            State::created().write(&paths)?;
            self.publish(&id, config, plan.name.as_deref(), &tmp)
        })();
        if let Err(e) = created {
            for name in anonymous {
                let _ = self.volumes().remove(&name);
            }
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if let Ok(c) = self.container(id.as_str()) {
            self.container_event(&c.config, "create", &[]);
        }
        Ok(id)
    }

    /// Creates the volumes the container mounts, in disk order; the names
    /// of the anonymous ones made are pushed to `anonymous`.
    fn attach_volumes(
        &self,
        requests: &[VolumeRequest],
        anonymous: &mut Vec<String>,
    ) -> Result<Vec<Mount>, Error> {
        let vols = self.volumes();
        let mut mounts = Vec::new();
        for r in requests {
            let m = match r {
                VolumeRequest::Named {
                    name,
                    target,
                    read_only,
                } => {
                    vols.create(Some(name), volume::DEFAULT_VOLUME_SIZE, false)?;
                    Mount {
                        name: name.clone(),
                        target: target.clone(),
                        read_only: *read_only,
                        anonymous: false,
                    }
                }
                VolumeRequest::Anonymous { target } => {
                    let name = vols.create(None, volume::DEFAULT_VOLUME_SIZE, true)?.name;
                    anonymous.push(name.clone());
                    Mount {
                        name,
                        target: target.clone(),
                        read_only: false,
                        anonymous: true,
                    }
                }
                VolumeRequest::Bind { .. } => continue,
            };
            mounts.push(m);
        }
        Ok(mounts)
    }

    /// Names the container (the given name, or a free random one) and
    /// moves it into place, under the names lock.
    fn publish(
        &self,
        id: &ContainerId,
        mut config: ContainerConfig,
        name: Option<&str>,
        tmp: &Path,
    ) -> Result<(), Error> {
        let _names = layout::lock(&self.layout.names_lock())?;
        let taken: Vec<(String, String)> = self
            .list()?
            .into_iter()
            .map(|c| (c.config.name, c.config.id))
            .collect();
        let owner = |n: &str| {
            taken
                .iter()
                .find(|(name, _)| name == n)
                .map(|(_, id)| id.clone())
        };
        config.name = match name {
            Some(n) => {
                let n = n.trim_start_matches('/');
                if let Some(other) = owner(n) {
                    return Err(Error::NameInUse {
                        name: n.to_string(),
                        id: other,
                    });
                }
                n.to_string()
            }
            None => (0..100)
                .map(|_| id::random_name())
                .find(|n| owner(n).is_none())
                .unwrap_or_else(|| format!("husk_{}", id.short())),
        };
        let tmp_paths = ContainerPaths {
            dir: tmp.to_path_buf(),
        };
        layout::write_json(&tmp_paths.config(), &config)?;
        let dest = self.layout.container(id.as_str()).dir;
        fs::rename(tmp, &dest).map_err(io_err(format!("creating {}", dest.display())))?;
        layout::sync_dir(&self.layout.containers());
        Ok(())
    }

    /// Removes container `name`: refuses a running one unless forced (then
    /// its monitor, and with it the VM, is killed first).
    pub fn delete(&self, name: &str, opts: DeleteOptions) -> Result<ContainerId, Error> {
        let c = self.container(name)?;
        let _busy = layout::lock(&c.paths.lock())?;
        let state = State::load(&c.paths)?;
        if !state.status.can_remove() && !opts.force {
            return Err(Error::Running {
                action: "remove",
                id: c.id.short().to_string(),
            });
        }
        // Running (forced), or exited with the VM still tearing down: the
        // disks are about to go, so the VM may as well go now.
        if crate::state::monitor_alive(&c.paths) {
            self.kill_monitor(&c.paths, Signal::KILL, Duration::from_secs(15))?;
        }
        self.remove_files(&c.id, &c.config, opts.volumes)?;
        Ok(c.id)
    }

    /// Deletes the container's directory (and anonymous volumes), making
    /// its name free at once.
    pub(crate) fn remove_files(
        &self,
        id: &ContainerId,
        config: &ContainerConfig,
        volumes: bool,
    ) -> Result<(), Error> {
        let dir = self.layout.container(id.as_str()).dir;
        let doomed = self.layout.containers().join(format!(".rm-{id}"));
        {
            let _names = layout::lock(&self.layout.names_lock())?;
            match fs::rename(&dir, &doomed) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_err(format!("removing {}", dir.display()))(e)),
            }
        }
        self.container_event(config, "destroy", &[]);
        // A concurrent listing may be sweeping the same directory.
        if let Err(e) = fs::remove_dir_all(&doomed) {
            if doomed.exists() && fs::remove_dir_all(&doomed).is_err() && doomed.exists() {
                return Err(io_err(format!("removing {}", doomed.display()))(e));
            }
        }
        if volumes {
            for m in config.mounts.iter().filter(|m| m.anonymous) {
                if let Err(e) = self.volumes().remove(&m.name) {
                    log::warn!("keeping anonymous volume {}: {e}", m.name);
                }
            }
        }
        Ok(())
    }

    /// Short IDs of the containers that mount volume `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|c| c.config.mounts.iter().any(|m| m.name == name))
            .map(|c| c.id.short().to_string())
            .collect())
    }

    /// Removes volume `name` unless a container uses it.
    pub fn volume_remove(&self, name: &str) -> Result<(), Error> {
        let users = self.volume_users(name)?;
        if !users.is_empty() {
            return Err(volume::VolumeError::InUse {
                name: name.to_string(),
                containers: users,
            }
            .into());
        }
        Ok(self.volumes().remove(name)?)
    }
}

/// The `-v` requests plus anonymous volumes for the image's VOLUME paths
/// that no request covers.
pub(crate) fn volume_requests(
    flags: &[VolumeRequest],
    image_volumes: &[String],
) -> Result<Vec<VolumeRequest>, Error> {
    let mut out: Vec<VolumeRequest> = Vec::new();
    for r in flags {
        options::check_mount_target(r.target())
            .map_err(|why| Error::Invalid(format!("invalid mount point: {why}")))?;
        if out.iter().any(|o| o.target() == r.target()) {
            return Err(Error::Invalid(format!(
                "duplicate mount point: {}",
                r.target()
            )));
        }
        out.push(r.clone());
    }
    for path in image_volumes {
        let target = if path.starts_with('/') {
            path.clone()
        } else {
            format!("/{path}")
        };
        let target = target.trim_end_matches('/').to_string();
        if !target.is_empty() && !out.iter().any(|o| o.target() == target) {
            out.push(VolumeRequest::Anonymous { target });
        }
    }
    if out.len() > MAX_VOLUMES {
        return Err(Error::Invalid(format!(
            "at most {MAX_VOLUMES} volumes per container"
        )));
    }
    Ok(out)
}

/// Removes a `.tmp-` directory whose creator died, or a `.rm-` directory
/// whose remover died.
fn clean_leftover(path: &Path, removing: bool) {
    if removing {
        let _ = fs::remove_dir_all(path);
        return;
    }
    let old = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > Duration::from_secs(60));
    let lock = ContainerPaths {
        dir: path.to_path_buf(),
    }
    .lock();
    if old && matches!(layout::try_lock(&lock), Ok(Some(_))) {
        let _ = fs::remove_dir_all(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_volumes_become_anonymous_unless_covered() {
        let named = |name: &str, target: &str| VolumeRequest::Named {
            name: name.into(),
            target: target.into(),
            read_only: false,
        };
        let anonymous = |target: &str| VolumeRequest::Anonymous {
            target: target.into(),
        };
        let flags = vec![named("data", "/data")];
        let r = volume_requests(&flags, &["/data".into(), "/cache/".into()]).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[1],
            VolumeRequest::Anonymous {
                target: "/cache".into()
            }
        );
        let bind = VolumeRequest::Bind {
            source: "/h".into(),
            target: "/c".into(),
            read_only: false,
            create_missing: true,
        };
        let r = volume_requests(std::slice::from_ref(&bind), &["/c".into()]).unwrap();
        assert_eq!(r, vec![bind], "a bind covers the image's VOLUME");
        let dup = vec![named("aa", "/x"), anonymous("/x")];
        assert!(volume_requests(&dup, &[]).is_err());
        let unclean = volume_requests(&[anonymous("/a/../b")], &[]).unwrap_err();
        assert!(
            unclean.to_string().contains("not a clean path"),
            "{unclean}"
        );
    }
}
