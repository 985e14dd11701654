//! New images from a base image plus a layer or a config change (for
//! `husk build` and commits).

use std::io::Read;

use oci_spec::image::{DescriptorBuilder, ImageManifestBuilder, MediaType};
use serde_json::{json, Value};

use crate::digest::Digest;
use crate::image::{Image, RuntimeConfig, OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST};
use crate::reference::Reference;
use crate::store::{Store, StoreError};

/// Largest layer tar accepted by [`Store::commit_layer`].
const MAX_LAYER: u64 = 64 << 30;

fn invalid(message: String) -> StoreError {
    StoreError::Invalid {
        what: "new image".into(),
        message,
    }
}

fn runtime_json(r: &RuntimeConfig) -> Value {
    let mut c = json!({});
    let set = |c: &mut Value, k: &str, v: Value| {
        if !v.is_null() {
            c[k] = v;
        }
    };
    set(&mut c, "Entrypoint", json!(r.entrypoint));
    set(&mut c, "Cmd", json!(r.cmd));
    if !r.env.is_empty() {
        c["Env"] = json!(r.env);
    }
    set(&mut c, "WorkingDir", json!(r.working_dir));
    set(&mut c, "User", json!(r.user));
    set(&mut c, "StopSignal", json!(r.stop_signal));
    let as_set = |v: &[String]| Value::Object(v.iter().map(|k| (k.clone(), json!({}))).collect());
    if !r.exposed_ports.is_empty() {
        c["ExposedPorts"] = as_set(&r.exposed_ports);
    }
    if !r.volumes.is_empty() {
        c["Volumes"] = as_set(&r.volumes);
    }
    if !r.labels.is_empty() {
        c["Labels"] = json!(r.labels);
    }
    c
}

/// A new image on top of `base` (see [`Store::commit`]).
#[derive(Clone, Copy, Debug)]
pub struct NewImage<'a> {
    /// The image it is built on; `None`: from scratch.
    pub base: Option<&'a Image>,
    /// The image config's whole `config` object (Env, Cmd, Labels, ...).
    pub config: &'a Value,
    /// The history entry's `created_by`.
    pub created_by: &'a str,
    /// The image's `author`, if it changes.
    pub author: Option<&'a str>,
    /// The history entry's `comment` (`husk commit -m`).
    pub comment: Option<&'a str>,
}

impl Store {
    /// Stores `layer_tar` (an uncompressed tar) as a new top layer over
    /// `base` (or as the first layer), with `runtime` as the container config,
    /// and tags the resulting image.
    pub fn commit_layer(
        &self,
        base: Option<&Image>,
        mut layer_tar: impl Read,
        runtime: &RuntimeConfig,
        created_by: &str,
        tags: &[Reference],
    ) -> Result<Image, StoreError> {
        let config = runtime_json(runtime);
        let new = NewImage {
            base,
            config: &config,
            created_by,
            author: None,
            comment: None,
        };
        let image = self.commit(&new, Some(&mut layer_tar))?;
        self.add_image(&image.manifest_digest, OCI_MANIFEST, tags, None)
    }

    /// Stores a new image: `new.base` plus `layer_tar` as a new top layer
    /// (an uncompressed tar), or plus nothing (a config-only step, recorded
    /// in the history as an `empty_layer`). The image is *not* added to the
    /// store's image list: [`Store::add_image`] does that (with tags);
    /// until then it is only reachable through [`Store::unrecorded_image`],
    /// and `prune` deletes its blobs unless a recorded image uses them.
    pub fn commit(
        &self,
        new: &NewImage<'_>,
        layer_tar: Option<&mut dyn Read>,
    ) -> Result<Image, StoreError> {
        let _use = self.use_lock()?;
        let layer = match layer_tar {
            Some(r) => Some(self.write_blob(r, None, None, MAX_LAYER)?),
            None => None,
        };
        let mut config: Value = match new.base {
            Some(b) => serde_json::from_slice(&self.read_blob(&b.id)?).map_err(|source| {
                StoreError::Json {
                    what: "base image config".into(),
                    source,
                }
            })?,
            None => json!({
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []},
            }),
        };
        if !config.is_object() {
            return Err(invalid("base config is not an object".into()));
        }
        let now = crate::time::format_rfc3339(crate::store::now() as i64);
        config["created"] = json!(now);
        config["config"] = new.config.clone();
        if let Some(a) = new.author {
            config["author"] = json!(a);
        }
        let diff_ids = config["rootfs"]["diff_ids"]
            .as_array_mut()
            .ok_or_else(|| invalid("base config has no rootfs.diff_ids".into()))?;
        if let Some((diff_id, _)) = &layer {
            diff_ids.push(json!(diff_id.to_string()));
        }
        if !config["history"].is_array() {
            config["history"] = json!([]);
        }
        let mut entry = json!({"created": now, "created_by": new.created_by});
        if let Some(a) = new.author {
            entry["author"] = json!(a);
        }
        if let Some(c) = new.comment {
            entry["comment"] = json!(c);
        }
        if layer.is_none() {
            entry["empty_layer"] = json!(true);
        }
        if let Some(h) = config["history"].as_array_mut() {
            h.push(entry);
        }
        let config_bytes = serde_json::to_vec(&config).map_err(|source| StoreError::Json {
            what: "new image config".into(),
            source,
        })?;
        let config_digest = self.put_blob_bytes(&config_bytes)?;
        let desc = |mt: &str, d: &Digest, size: u64| {
            DescriptorBuilder::default()
                .media_type(MediaType::from(mt))
                .digest(d.to_oci())
                .size(size)
                .build()
                .map_err(|e| invalid(e.to_string()))
        };
        let mut layers = Vec::new();
        for l in new.base.map(|b| b.layers.as_slice()).unwrap_or_default() {
            layers.push(desc(&l.media_type, &l.digest, l.size)?);
        }
        if let Some((diff_id, size)) = &layer {
            layers.push(desc(OCI_LAYER_TAR, diff_id, *size)?);
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(desc(OCI_CONFIG, &config_digest, config_bytes.len() as u64)?)
            .layers(layers)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let bytes = serde_json::to_vec(&manifest).map_err(|source| StoreError::Json {
            what: "new manifest".into(),
            source,
        })?;
        let md = self.put_blob_bytes(&bytes)?;
        self.unrecorded_image(&md)
    }

    /// Loads an image from its manifest blob, whether or not it is in the
    /// store's image list (e.g. an intermediate `husk build` step). Fails if
    /// any of its blobs is missing.
    pub fn unrecorded_image(&self, manifest_digest: &Digest) -> Result<Image, StoreError> {
        let manifest = crate::image::parse_manifest(&self.read_blob(manifest_digest)?)?;
        let config_digest = crate::image::descriptor_digest(manifest.config())?;
        let config = crate::image::parse_config(&self.read_blob(&config_digest)?)?;
        let layers = crate::image::layers_of(&manifest, &config)?;
        if let Some(l) = layers.iter().find(|l| !self.has_blob(&l.digest)) {
            return Err(StoreError::BlobMissing(l.digest.clone()));
        }
        let state = self.state()?;
        let (record, tags) = match state.images.get(manifest_digest) {
            Some(r) => (r.clone(), state.tags_of(manifest_digest)),
            None => (
                crate::store::ImageRecord {
                    config: config_digest.clone(),
                    media_type: OCI_MANIFEST.to_string(),
                    added: crate::store::now(),
                    repo_digests: Default::default(),
                },
                Vec::new(),
            ),
        };
        Ok(Image {
            manifest_digest: manifest_digest.clone(),
            manifest,
            id: config_digest,
            config,
            record,
            tags,
            layers,
        })
    }
}
