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
    pub fn remove(&self, name: &str, force: bool) -> Result<Vec<RemoveEvent>, StoreError> {
        let by_tag = name
            .parse::<Reference>()
            .ok()
            .filter(|r| r.digest.is_none())
            .map(|r| r.to_string());
        self.update_state(|s| {
            let mut events = Vec::new();
            let manifest = match by_tag.as_ref().and_then(|t| s.tags.get(t).cloned()) {
                Some(d) => {
                    let t = by_tag.clone().unwrap_or_default();
                    s.tags.remove(&t);
                    events.push(RemoveEvent::Untagged(familiar(&t)));
                    d
                }
                None => {
                    let d = lookup_in(s, name)?;
                    let tags = s.tags_of(&d);
                    if tags.len() > 1 && !force {
                        return Err(StoreError::Invalid {
                            what: "request".into(),
                            message: format!(
                                "conflict: unable to delete {name} (must be forced) - image is referenced in multiple repositories"
                            ),
                        });
                    }
                    for t in tags {
                        s.tags.remove(&t);
                        events.push(RemoveEvent::Untagged(familiar(&t)));
                    }
                    d
                }
            };
            if s.tags_of(&manifest).is_empty() {
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
