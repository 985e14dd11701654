//! An image as the rest of husk sees it: manifest, config, layers, and the
//! runtime settings a container is started with.

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::{ImageRecord, StoreError};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Settings from the image config that a container starts with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    /// `Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `Env` as `KEY=value`.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `ExposedPorts` keys such as `80/tcp`.
    pub exposed_ports: Vec<String>,
    /// `Volumes` paths.
    pub volumes: Vec<String>,
    /// `StopSignal`.
    pub stop_signal: Option<String>,
    /// `Labels` (a container's own labels win over them).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// One layer of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Digest of the blob as stored/transferred (possibly compressed).
    pub digest: Digest,
    /// Blob size in bytes.
    pub size: u64,
    /// Media type from the manifest.
    pub media_type: String,
    /// Digest of the uncompressed tar (from the config's rootfs.diff_ids).
    pub diff_id: Digest,
}

/// An image in the store.
#[derive(Clone, Debug)]
pub struct Image {
    /// Manifest digest.
    pub manifest_digest: Digest,
    /// Manifest as stored.
    pub manifest: ImageManifest,
    /// Config digest: the image ID.
    pub id: Digest,
    /// Parsed config.
    pub config: ImageConfiguration,
    /// Store bookkeeping.
    pub record: ImageRecord,
    /// Tags (full form) pointing at this image.
    pub tags: Vec<String>,
    /// Layers bottom to top.
    pub layers: Vec<Layer>,
}

impl Image {
    /// The layers' diff_ids, bottom to top.
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    /// Sum of the layer blob sizes.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// Familiar `name:tag` forms of the tags.
    pub fn familiar_tags(&self) -> Vec<String> {
        self.tags
            .iter()
            .filter_map(|t| t.parse::<Reference>().ok())
            .filter_map(|r| r.familiar_tagged())
            .collect()
    }

    /// The container runtime settings.
    pub fn runtime_config(&self) -> RuntimeConfig {
        let Some(c) = self.config.config() else {
            return RuntimeConfig::default();
        };
        RuntimeConfig {
            entrypoint: c.entrypoint().clone(),
            cmd: c.cmd().clone(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
            user: c.user().clone().filter(|u| !u.is_empty()),
            exposed_ports: c.exposed_ports().clone().unwrap_or_default(),
            volumes: c.volumes().clone().unwrap_or_default(),
            stop_signal: c.stop_signal().clone(),
            labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
        }
    }
}

fn invalid(what: &str, message: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        what: what.to_string(),
        message: message.into(),
    }
}

/// Parses and validates a manifest document.
pub fn parse_manifest(bytes: &[u8]) -> Result<ImageManifest, StoreError> {
    let m: ImageManifest = serde_json::from_slice(bytes).map_err(|source| StoreError::Json {
        what: "image manifest".into(),
        source,
    })?;
    if m.schema_version() != 2 {
        return Err(invalid("image manifest", "schemaVersion is not 2"));
    }
    descriptor_digest(m.config())?;
    for l in m.layers() {
        descriptor_digest(l)?;
    }
    Ok(m)
}

/// Parses an image config document.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Json {
        what: "image config".into(),
        source,
    })
}

/// A descriptor's digest as our (sha256-only) type.
pub fn descriptor_digest(d: &Descriptor) -> Result<Digest, StoreError> {
    Digest::from_oci(d.digest()).map_err(|e| invalid("descriptor", e.to_string()))
}

/// The most layers an image may have (Docker's overlay2 stops at 125; a
/// container's layers become at most a few disks, but each is downloaded
/// and converted on its own).
pub const MAX_IMAGE_LAYERS: usize = 127;

/// Pairs manifest layers with config diff_ids.
pub(crate) fn layers_of(
    manifest: &ImageManifest,
    config: &ImageConfiguration,
) -> Result<Vec<Layer>, StoreError> {
    if manifest.layers().len() > MAX_IMAGE_LAYERS {
        return Err(invalid(
            "image",
            format!(
                "{} layers, more than the {MAX_IMAGE_LAYERS} husk accepts",
                manifest.layers().len()
            ),
        ));
    }
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(invalid(
            "image",
            format!(
                "manifest has {} layers but config has {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            ),
        ));
    }
    manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(l, d)| {
            Ok(Layer {
                digest: descriptor_digest(l)?,
                size: l.size(),
                media_type: l.media_type().to_string(),
                diff_id: d
                    .parse()
                    .map_err(|e: crate::digest::DigestError| invalid("diff_id", e.to_string()))?,
            })
        })
        .collect()
}

/// Picks the linux/amd64 entry of an index (the first entry if none carries
/// a platform); `None` if the index has no usable manifest.
pub fn pick_platform(index: &oci_spec::image::ImageIndex) -> Option<&Descriptor> {
    use oci_spec::image::{Arch, Os};
    let ms = index.manifests();
    if ms.iter().all(|m| m.platform().is_none()) {
        return ms.first();
    }
    ms.iter().find(|m| {
        m.platform()
            .as_ref()
            .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
    })
}

/// Whether a media type names an index / manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest and a config with `n` (empty, made-up) layers.
    fn image_with_layers(n: usize) -> (ImageManifest, ImageConfiguration) {
        let digest = |i: usize| format!("sha256:{i:064x}");
        let layers: Vec<_> = (0..n)
            .map(|i| {
                serde_json::json!({"mediaType": OCI_LAYER_TAR, "digest": digest(i), "size": 1024})
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest(n + 1), "size": 2},
            "layers": layers,
        });
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": (0..n).map(digest).collect::<Vec<_>>()},
        });
        (
            parse_manifest(manifest.to_string().as_bytes()).unwrap(),
            parse_config(config.to_string().as_bytes()).unwrap(),
        )
    }

    #[test]
    fn images_with_too_many_layers_are_refused() {
        let (m, c) = image_with_layers(MAX_IMAGE_LAYERS);
        assert_eq!(layers_of(&m, &c).unwrap().len(), MAX_IMAGE_LAYERS);
        let (m, c) = image_with_layers(MAX_IMAGE_LAYERS + 1);
        let err = layers_of(&m, &c).unwrap_err().to_string();
        assert!(err.contains("128 layers, more than the 127"), "{err}");
    }
}
