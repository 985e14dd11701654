//! Image records on top of blobs: add, resolve, list, tag, remove.

use std::collections::BTreeSet;

use super::state::now;
use super::{ImageRecord, State, Store, StoreError};
use crate::digest::Digest;
use crate::image::{layers_of, parse_config, parse_manifest, Image};
use crate::reference::Reference;

/// What `remove` did, in Docker's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoveEvent {
    /// A tag was removed (familiar form).
    Untagged(String),
    /// The image record was removed (image ID).
    Deleted(Digest),
}

/// A container created from an image: `remove` and `prune` keep the
/// images containers use, running or stopped (as Docker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageUser {
    /// The image ID (config digest) the container was created from.
    pub image_id: Digest,
    /// The container's full ID.
    pub container_id: String,
    /// Whether the container is running.
    pub running: bool,
}

impl ImageUser {
    /// The first of `users` created from image `id`.
    pub fn find<'a>(users: &'a [ImageUser], id: &Digest) -> Option<&'a ImageUser> {
        users.iter().find(|u| u.image_id == *id)
    }

    fn short_id(&self) -> &str {
        self.container_id.get(..12).unwrap_or(&self.container_id)
    }
}

impl Store {
    /// Loads an image by manifest digest.
    pub fn image(&self, manifest_digest: &Digest) -> Result<Image, StoreError> {
        let state = self.state()?;
        let record = state
            .images
            .get(manifest_digest)
            .cloned()
            .ok_or_else(|| StoreError::NoSuchImage(manifest_digest.to_string()))?;
        let tags = state.tags_of(manifest_digest);
        self.image_from(manifest_digest, record, tags)
    }

    fn image_from(
        &self,
        manifest_digest: &Digest,
        record: ImageRecord,
        tags: Vec<String>,
    ) -> Result<Image, StoreError> {
        let manifest = parse_manifest(&self.read_blob(manifest_digest)?)?;
        let config = parse_config(&self.read_blob(&record.config)?)?;
        let layers = layers_of(&manifest, &config)?;
        Ok(Image {
            manifest_digest: manifest_digest.clone(),
            manifest,
            id: record.config.clone(),
            config,
            record,
            tags,
            layers,
        })
    }

    /// Registers a manifest already stored as a blob (its config and layers
    /// must be stored too), then points `tags` at it.
    pub fn add_image(
        &self,
        manifest_digest: &Digest,
        media_type: &str,
        tags: &[Reference],
        repo_digest: Option<&Reference>,
    ) -> Result<Image, StoreError> {
        let manifest = parse_manifest(&self.read_blob(manifest_digest)?)?;
        let config_digest = crate::image::descriptor_digest(manifest.config())?;
        let config = parse_config(&self.read_blob(&config_digest)?)?;
        for l in layers_of(&manifest, &config)? {
            if !self.has_blob(&l.digest) {
                return Err(StoreError::BlobMissing(l.digest));
            }
        }
        self.update_state(|state| {
            let rec = state
                .images
                .entry(manifest_digest.clone())
                .or_insert_with(|| ImageRecord {
                    config: config_digest.clone(),
                    media_type: media_type.to_string(),
                    added: now(),
                    repo_digests: BTreeSet::new(),
                });
            if let Some(r) = repo_digest {
                rec.repo_digests
                    .insert(format!("{}@{manifest_digest}", r.name()));
            }
            for t in tags {
                state.tags.insert(
                    t.with_tag(t.tag.as_deref().unwrap_or("latest")).to_string(),
                    manifest_digest.clone(),
                );
            }
            Ok(())
        })?;
        self.image(manifest_digest)
    }

    /// Finds the manifest digest `name` refers to: a tag, `name@digest`, a
    /// manifest digest, or an image ID (prefix).
    pub fn lookup(&self, name: &str) -> Result<Digest, StoreError> {
        lookup_in(&self.state()?, name)
    }

    /// Resolves a user-given reference to an image.
    pub fn resolve(&self, name: &str) -> Result<Image, StoreError> {
        let d = self.lookup(name)?;
        self.image(&d)
    }

    /// All images (each once), newest first.
    pub fn list(&self) -> Result<Vec<Image>, StoreError> {
        let state = self.state()?;
        let mut out = Vec::new();
        for (d, rec) in &state.images {
            out.push(self.image_from(d, rec.clone(), state.tags_of(d))?);
        }
        out.sort_by_key(|i| std::cmp::Reverse(i.record.added));
        Ok(out)
    }

    /// Points `target` (a tag) at the image `source` names.
    pub fn tag(&self, source: &str, target: &Reference) -> Result<(), StoreError> {
        let d = self.lookup(source)?;
        let tag = target.tag.clone().unwrap_or_else(|| "latest".into());
        self.update_state(|s| {
            if !s.images.contains_key(&d) {
                return Err(StoreError::NoSuchImage(source.to_string()));
            }
            s.tags.insert(target.with_tag(&tag).to_string(), d.clone());
            Ok(())
        })
    }

    /// Removes a tag, or an image by ID (all its tags with `force`, as Docker).
    /// The image record goes when no tag is left; blobs stay until `prune`.
    ///
    /// An image one of `users` was created from is kept: removing its last
    /// tag, or the image by ID, is a conflict without `force`; with `force`
    /// the tags go and the (now dangling) record stays while it is used.
    pub fn remove(
        &self,
        name: &str,
        force: bool,
        users: &[ImageUser],
    ) -> Result<Vec<RemoveEvent>, StoreError> {
        let by_tag = name
            .parse::<Reference>()
            .ok()
            .filter(|r| r.digest.is_none())
            .map(|r| r.to_string());
        self.update_state(|s| {
            let mut events = Vec::new();
            let manifest = match by_tag.as_ref().and_then(|t| s.tags.get(t).cloned()) {
                Some(d) => {
                    let id = s.images.get(&d).map(|r| r.config.clone());
                    let user = id.as_ref().and_then(|id| ImageUser::find(users, id));
                    if let (Some(id), Some(user), false) = (&id, user, force) {
                        if tags_of_id(s, id).len() == 1 {
                            return Err(StoreError::Conflict(format!(
                                "unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                                user.short_id(),
                                id.short()
                            )));
                        }
                    }
                    let t = by_tag.clone().unwrap_or_default();
                    s.tags.remove(&t);
                    events.push(RemoveEvent::Untagged(familiar(&t)));
                    d
                }
                None => {
                    let d = lookup_in(s, name)?;
                    let id = s.images[&d].config.clone();
                    let tags = s.tags_of(&d);
                    if !force {
                        if let Some(user) = ImageUser::find(users, &id) {
                            let (how, which) = if user.running {
                                ("cannot be forced", "running")
                            } else {
                                ("must be forced", "stopped")
                            };
                            return Err(StoreError::Conflict(format!(
                                "unable to delete {} ({how}) - image is being used by {which} container {}",
                                id.short(),
                                user.short_id()
                            )));
                        }
                        if tags.len() > 1 {
                            return Err(StoreError::Conflict(format!(
                                "unable to delete {name} (must be forced) - image is referenced in multiple repositories"
                            )));
                        }
                    }
                    for t in tags {
                        s.tags.remove(&t);
                        events.push(RemoveEvent::Untagged(familiar(&t)));
                    }
                    d
                }
            };
            let id = s.images.get(&manifest).map(|r| r.config.clone());
            let used = id.is_some_and(|id| ImageUser::find(users, &id).is_some());
            if s.tags_of(&manifest).is_empty() && !used {
                if let Some(rec) = s.images.remove(&manifest) {
                    for rd in &rec.repo_digests {
                        events.push(RemoveEvent::Untagged(familiar(rd)));
                    }
                    if !s.images.values().any(|r| r.config == rec.config) {
                        events.push(RemoveEvent::Deleted(rec.config));
                    }
                }
            }
            Ok(events)
        })
    }
}

/// Tags of every manifest whose config is image `id`.
fn tags_of_id(state: &State, id: &Digest) -> Vec<String> {
    state
        .images
        .iter()
        .filter(|(_, rec)| rec.config == *id)
        .flat_map(|(m, _)| state.tags_of(m))
        .collect()
}

fn lookup_in(state: &State, name: &str) -> Result<Digest, StoreError> {
    if let Ok(r) = name.parse::<Reference>() {
        if let Some(d) = &r.digest {
            if state.images.contains_key(d) {
                return Ok(d.clone());
            }
            let full = r.to_string();
            if let Some((m, _)) = state
                .images
                .iter()
                .find(|(_, rec)| rec.repo_digests.contains(&full))
            {
                return Ok(m.clone());
            }
        } else if let Some(d) = state.tags.get(&r.to_string()) {
            return Ok(d.clone());
        }
    }
    if Reference::looks_like_id(name) {
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        let matches: BTreeSet<&Digest> = state
            .images
            .iter()
            .filter(|(m, rec)| rec.config.hex().starts_with(hex) || m.hex() == hex)
            .map(|(m, _)| m)
            .collect();
        // Several manifests may share one config (same image ID).
        let ids: BTreeSet<&Digest> = matches.iter().map(|m| &state.images[*m].config).collect();
        if ids.len() > 1 {
            return Err(StoreError::Ambiguous(name.to_string()));
        }
        if let Some(m) = matches.first() {
            return Ok((*m).clone());
        }
    }
    Err(StoreError::NoSuchImage(name.to_string()))
}

fn familiar(full: &str) -> String {
    if let Some((name, digest)) = full.split_once('@') {
        let n = format!("{name}:x")
            .parse::<Reference>()
            .map(|r| r.familiar_name())
            .unwrap_or_else(|_| name.to_string());
        return format!("{n}@{digest}");
    }
    full.parse::<Reference>()
        .ok()
        .and_then(|r| r.familiar_tagged())
        .unwrap_or_else(|| full.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store holding one single-layer image tagged `bb:1`; returns its ID.
    fn store_with_image(dir: &std::path::Path) -> (Store, Digest) {
        let store = Store::open(dir).unwrap();
        let layer = store.put_blob_bytes(b"layer").unwrap();
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}},"config":{{}}}}"#,
            Digest::of(b"diff")
        );
        let config_digest = store.put_blob_bytes(config.as_bytes()).unwrap();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}]}}"#,
            config.len()
        );
        let m = store.put_blob_bytes(manifest.as_bytes()).unwrap();
        let tag: Reference = "bb:1".parse().unwrap();
        let img = store
            .add_image(
                &m,
                "application/vnd.oci.image.manifest.v1+json",
                &[tag],
                None,
            )
            .unwrap();
        assert_eq!(img.id, config_digest);
        (store, config_digest)
    }

    #[test]
    fn images_containers_use_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = store_with_image(dir.path());
        let users = [ImageUser {
            image_id: id.clone(),
            container_id: "c".repeat(64),
            running: false,
        }];
        let err = store.remove("bb:1", false, &users).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "conflict: unable to remove repository reference \"bb:1\" (must force) - container cccccccccccc is using its referenced image {}",
                id.short()
            )
        );
        let err = store.remove(id.short(), false, &users).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "conflict: unable to delete {} (must be forced) - image is being used by stopped container cccccccccccc",
                id.short()
            )
        );
        let running = [ImageUser {
            running: true,
            ..users[0].clone()
        }];
        let err = store.remove(id.short(), false, &running).unwrap_err();
        assert!(err
            .to_string()
            .contains("(cannot be forced) - image is being used by running container"));
        // Forced: untagged, but the image and its blobs stay while used.
        assert_eq!(
            store.remove("bb:1", true, &users).unwrap(),
            [RemoveEvent::Untagged("bb:1".into())]
        );
        let left = store.list().unwrap();
        assert_eq!(left.len(), 1);
        assert!(left[0].tags.is_empty());
        let r = store.prune(&users).unwrap();
        assert!(r.images.is_empty() && r.blobs.is_empty(), "{r:?}");
        assert_eq!(store.list_blobs().unwrap().len(), 3);
        // Unused, the dangling image goes with its blobs.
        let r = store.prune(&[]).unwrap();
        assert_eq!(r.images, [id]);
        assert!(store.list_blobs().unwrap().is_empty());
    }

    #[test]
    fn unused_images_are_removed_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = store_with_image(dir.path());
        let other = [ImageUser {
            image_id: Digest::of(b"another image"),
            container_id: "d".repeat(64),
            running: true,
        }];
        assert_eq!(
            store.remove("bb:1", false, &other).unwrap(),
            [
                RemoveEvent::Untagged("bb:1".into()),
                RemoveEvent::Deleted(id)
            ]
        );
        assert!(store.list().unwrap().is_empty());
    }
}
