//! New images from a base image plus a layer (for `husk build` and commits).

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
    c
}

impl Store {
    /// Stores `layer_tar` (an uncompressed tar) as a new top layer over
    /// `base` (or as the first layer), with `runtime` as the container config,
    /// and tags the resulting image.
    pub fn commit_layer(
        &self,
        base: Option<&Image>,
        layer_tar: impl Read,
        runtime: &RuntimeConfig,
        created_by: &str,
        tags: &[Reference],
    ) -> Result<Image, StoreError> {
        let _use = self.use_lock()?;
        let (diff_id, size) = self.write_blob(layer_tar, None, None, MAX_LAYER)?;
        let mut config: Value = match base {
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
        let now = crate::time::format_rfc3339(crate::store::now() as i64);
        config["created"] = json!(now);
        config["config"] = runtime_json(runtime);
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .ok_or_else(|| invalid("base config has no rootfs.diff_ids".into()))?
            .push(json!(diff_id.to_string()));
        if !config["history"].is_array() {
            config["history"] = json!([]);
        }
        if let Some(h) = config["history"].as_array_mut() {
            h.push(json!({"created": now, "created_by": created_by}));
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
        for l in base.map(|b| b.layers.as_slice()).unwrap_or_default() {
            layers.push(desc(&l.media_type, &l.digest, l.size)?);
        }
        layers.push(desc(OCI_LAYER_TAR, &diff_id, size)?);
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
        self.add_image(&md, OCI_MANIFEST, tags, None)
    }
}
