//! `husk save`: a tarball that is both an OCI layout and a docker-save
//! archive (`index.json` + `manifest.json`, as Docker 25+ writes).

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use super::{io_ctx, ArchiveError};
use crate::digest::Digest;
use crate::image::Image;
use crate::reference::Reference;
use crate::store::Store;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_entry_type(kind);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Writes `images` (each with the tags to record, in full form) to the
/// tarball `out` (written to a temp file and renamed into place).
pub fn save(
    store: &Store,
    images: &[(Image, Vec<Reference>)],
    out: &Path,
) -> Result<(), ArchiveError> {
    let _use = store.use_lock()?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".husk-save-")
        .tempfile_in(dir)
        .map_err(io_ctx(format!("creating a temp file in {}", dir.display())))?;
    let mut b = tar::Builder::new(io::BufWriter::new(tmp));
    let mut written = BTreeSet::new();
    let mut index = Vec::new();
    let mut docker = Vec::new();
    for (img, tags) in images {
        let mut blobs = vec![img.manifest_digest.clone(), img.id.clone()];
        blobs.extend(img.layers.iter().map(|l| l.digest.clone()));
        for d in blobs {
            if written.insert(d.clone()) {
                add_blob(store, &mut b, &d)?;
            }
        }
        let size = std::fs::metadata(store.blob_path(&img.manifest_digest))
            .map_err(io_ctx("reading manifest"))?
            .len();
        let mut entry = |annotations: HashMap<&str, String>| {
            let mut d = json!({
                "mediaType": img.record.media_type,
                "digest": img.manifest_digest.to_string(),
                "size": size,
            });
            if !annotations.is_empty() {
                d["annotations"] = json!(annotations);
            }
            index.push(d);
        };
        if tags.is_empty() {
            entry(HashMap::new());
        }
        for t in tags {
            entry(HashMap::from([
                ("io.containerd.image.name", t.to_string()),
                (
                    "org.opencontainers.image.ref.name",
                    t.tag.clone().unwrap_or_default(),
                ),
            ]));
        }
        docker.push(DockerEntry {
            config: blob_path(&img.id),
            repo_tags: tags.iter().filter_map(|t| t.familiar_tagged()).collect(),
            layers: img.layers.iter().map(|l| blob_path(&l.digest)).collect(),
        });
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": crate::image::OCI_INDEX,
        "manifests": index,
    });
    let json_err = |source| ArchiveError::Json {
        what: "output".into(),
        source,
    };
    add_bytes(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add_bytes(
        &mut b,
        "index.json",
        &serde_json::to_vec(&index).map_err(json_err)?,
    )?;
    add_bytes(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&docker).map_err(json_err)?,
    )?;
    let buf = b.into_inner().map_err(io_ctx("writing the archive"))?;
    let tmp = buf.into_inner().map_err(|e| ArchiveError::Io {
        context: "writing the archive".into(),
        source: e.into_error(),
    })?;
    tmp.as_file()
        .sync_all()
        .map_err(io_ctx("writing the archive"))?;
    tmp.persist(out).map_err(|e| ArchiveError::Io {
        context: format!("writing {}", out.display()),
        source: e.error,
    })?;
    Ok(())
}

fn add_bytes<W: Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
) -> Result<(), ArchiveError> {
    let mut h = header(data.len() as u64, 0o644, tar::EntryType::Regular);
    b.append_data(&mut h, name, data)
        .map_err(io_ctx(format!("writing {name}")))
}

fn add_blob<W: Write>(
    store: &Store,
    b: &mut tar::Builder<W>,
    d: &Digest,
) -> Result<(), ArchiveError> {
    let f = store.open_blob(d)?;
    let size = f.metadata().map_err(io_ctx("reading blob"))?.len();
    let mut h = header(size, 0o644, tar::EntryType::Regular);
    b.append_data(&mut h, blob_path(d), f)
        .map_err(io_ctx(format!("writing blob {d}")))
}
