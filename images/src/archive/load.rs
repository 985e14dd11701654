//! `husk load`: import a docker-save tarball or an OCI layout (dir or tar).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{DescriptorBuilder, ImageIndex, ImageManifestBuilder, MediaType};
use serde::Deserialize;

use super::{io_ctx, ArchiveError};
use crate::compress::{decompress, Compression};
use crate::digest::{Digest, HashingReader};
use crate::image::{self, is_index, pick_platform, Image};
use crate::reference::Reference;
use crate::store::{read_limited, Store, MAX_JSON};

/// Largest single file accepted from an archive.
const MAX_FILE: u64 = 64 << 30;

/// An image that was loaded, with the tags given to it.
#[derive(Debug)]
pub struct LoadedImage {
    /// The image.
    pub image: Image,
    /// Tags from the archive.
    pub tags: Vec<Reference>,
}

/// One entry of a docker-save `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Where archive files come from.
enum Source {
    /// A directory on disk.
    Dir(PathBuf),
    /// A tarball already copied into the store: path → blob digest.
    Tar {
        files: HashMap<String, Digest>,
        links: HashMap<String, String>,
    },
}

/// Normalises an archive-relative path ("./a/../b" → "b"); rejects escapes.
fn normalize(base: &str, p: &str) -> Result<String, ArchiveError> {
    let mut parts: Vec<String> = if p.starts_with('/') {
        return Err(ArchiveError::UnsafePath(p.to_string()));
    } else {
        base.split('/')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(ArchiveError::UnsafePath(p.to_string()));
                }
            }
            _ => return Err(ArchiveError::UnsafePath(p.to_string())),
        }
    }
    Ok(parts.join("/"))
}

/// The digest a `blobs/sha256/<hex>` path promises.
fn digest_from_path(p: &str) -> Option<Digest> {
    p.strip_prefix("blobs/sha256/")
        .and_then(|h| Digest::from_hex(h).ok())
}

impl Source {
    fn open_tar(store: &Store, path: &Path) -> Result<Source, ArchiveError> {
        let f = File::open(path).map_err(io_ctx(format!("opening {}", path.display())))?;
        let (_, plain) = decompress(f).map_err(io_ctx(format!("reading {}", path.display())))?;
        let mut ar = tar::Archive::new(plain);
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        // The tar parser's messages quote the header's bytes (for a text
        // file: its content), so a malformed header is reported in one line.
        let bad_tar = |e: io::Error, entries: usize| match e.kind() {
            io::ErrorKind::Other | io::ErrorKind::InvalidData if entries == 0 => {
                ArchiveError::NotATar
            }
            io::ErrorKind::Other | io::ErrorKind::InvalidData => {
                ArchiveError::Unsupported(format!("corrupt tar archive after {entries} entries"))
            }
            _ => ArchiveError::Io {
                context: format!("reading tar {}", path.display()),
                source: e,
            },
        };
        for (entries, entry) in ar.entries().map_err(|e| bad_tar(e, 0))?.enumerate() {
            let mut e = entry.map_err(|e| bad_tar(e, entries))?;
            let name = normalize(
                "",
                &e.path().map_err(|e| bad_tar(e, entries))?.to_string_lossy(),
            )?;
            match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let expected = digest_from_path(&name);
                    let size = e.size();
                    let (d, _) = store
                        .write_blob(&mut e, expected.as_ref(), Some(size), MAX_FILE)
                        .map_err(|err| match err {
                            crate::store::StoreError::Io { source, .. }
                                if source.kind() == io::ErrorKind::UnexpectedEof =>
                            {
                                ArchiveError::Unsupported(format!("archive is truncated at {name}"))
                            }
                            other => other.into(),
                        })?;
                    files.insert(name, d);
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = e
                        .link_name()
                        .map_err(|e| bad_tar(e, entries))?
                        .map(|t| t.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let base = if e.header().entry_type() == tar::EntryType::Symlink {
                        name.rsplit_once('/').map_or("", |(d, _)| d).to_string()
                    } else {
                        String::new()
                    };
                    links.insert(name, normalize(&base, &target)?);
                }
                _ => {}
            }
        }
        Ok(Source::Tar { files, links })
    }

    /// Imports (or finds) the file at archive path `p` as a blob.
    fn blob(&self, store: &Store, p: &str) -> Result<Digest, ArchiveError> {
        let p = normalize("", p)?;
        match self {
            Source::Dir(dir) => {
                let path = dir.join(&p);
                let f = File::open(&path).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => ArchiveError::MissingFile(p.clone()),
                    _ => ArchiveError::Io {
                        context: format!("opening {}", path.display()),
                        source: e,
                    },
                })?;
                let expected = digest_from_path(&p);
                if let Some(d) = &expected {
                    if store.has_blob(d) {
                        return Ok(d.clone());
                    }
                }
                Ok(store.write_blob(f, expected.as_ref(), None, MAX_FILE)?.0)
            }
            Source::Tar { files, links } => {
                let mut cur = p.clone();
                for _ in 0..16 {
                    if let Some(d) = files.get(&cur) {
                        return Ok(d.clone());
                    }
                    match links.get(&cur) {
                        Some(next) => cur = next.clone(),
                        None => break,
                    }
                }
                Err(ArchiveError::MissingFile(p))
            }
        }
    }

    fn exists(&self, p: &str) -> bool {
        match self {
            Source::Dir(dir) => dir.join(p).is_file(),
            Source::Tar { files, .. } => files.contains_key(p),
        }
    }

    fn json(&self, store: &Store, p: &str) -> Result<Vec<u8>, ArchiveError> {
        match self {
            Source::Dir(dir) => {
                let f = File::open(dir.join(p)).map_err(io_ctx(format!("opening {p}")))?;
                Ok(read_limited(f, MAX_JSON, p)?)
            }
            Source::Tar { .. } => Ok(store.read_blob(&self.blob(store, p)?)?),
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(data: &[u8], what: &str) -> Result<T, ArchiveError> {
    serde_json::from_slice(data).map_err(|source| ArchiveError::Json {
        what: what.to_string(),
        source,
    })
}

/// Loads every image in the archive at `path` into `store`.
pub fn load(store: &Store, path: &Path) -> Result<Vec<LoadedImage>, ArchiveError> {
    let _use = store.use_lock()?;
    let src = if path.is_dir() {
        Source::Dir(path.to_path_buf())
    } else {
        Source::open_tar(store, path)?
    };
    let docker: Vec<DockerEntry> = if src.exists("manifest.json") {
        parse_json(&src.json(store, "manifest.json")?, "manifest.json")?
    } else {
        Vec::new()
    };
    // Tags by config digest, from manifest.json.
    let mut docker_tags: HashMap<Digest, Vec<String>> = HashMap::new();
    for e in &docker {
        let d = src.blob(store, &e.config)?;
        docker_tags
            .entry(d)
            .or_default()
            .extend(e.repo_tags.clone().unwrap_or_default());
    }
    let mut out = Vec::new();
    if src.exists("index.json") {
        let index: ImageIndex = parse_json(&src.json(store, "index.json")?, "index.json")?;
        for desc in index.manifests() {
            let mut names = Vec::new();
            if let Some(a) = desc.annotations() {
                names.extend(a.get("io.containerd.image.name").cloned());
                if names.is_empty() {
                    names.extend(a.get("org.opencontainers.image.ref.name").cloned());
                }
            }
            let d = image::descriptor_digest(desc)?;
            let (manifest_digest, media_type) =
                resolve_index(store, &src, &d, desc.media_type().as_ref(), 0)?;
            out.push(finish(
                store,
                &src,
                &manifest_digest,
                &media_type,
                names,
                &docker_tags,
            )?);
        }
    } else if !docker.is_empty() {
        for e in &docker {
            let (md, mt) = synthesize_manifest(store, &src, e)?;
            out.push(finish(store, &src, &md, &mt, Vec::new(), &docker_tags)?);
        }
    } else {
        return Err(ArchiveError::NotAnArchive);
    }
    Ok(out)
}

/// Follows nested indexes down to the linux/amd64 manifest.
fn resolve_index(
    store: &Store,
    src: &Source,
    digest: &Digest,
    media_type: &str,
    depth: u32,
) -> Result<(Digest, String), ArchiveError> {
    let d = ensure(store, src, digest)?;
    if !is_index(media_type) {
        return Ok((d, media_type.to_string()));
    }
    if depth > 4 {
        return Err(ArchiveError::Unsupported(
            "image indexes nested too deep".into(),
        ));
    }
    let index: ImageIndex = parse_json(&store.read_blob(&d)?, "image index")?;
    let m = pick_platform(&index)
        .ok_or_else(|| ArchiveError::Unsupported("no linux/amd64 image in index".into()))?;
    resolve_index(
        store,
        src,
        &image::descriptor_digest(m)?,
        m.media_type().as_ref(),
        depth + 1,
    )
}

/// Makes sure blob `d` is in the store, importing `blobs/sha256/<hex>`.
fn ensure(store: &Store, src: &Source, d: &Digest) -> Result<Digest, ArchiveError> {
    if !store.has_blob(d) {
        src.blob(store, &format!("blobs/sha256/{}", d.hex()))?;
    }
    Ok(d.clone())
}

/// Imports config and layers of a stored manifest, checks diff_ids, registers.
fn finish(
    store: &Store,
    src: &Source,
    manifest_digest: &Digest,
    media_type: &str,
    mut names: Vec<String>,
    docker_tags: &HashMap<Digest, Vec<String>>,
) -> Result<LoadedImage, ArchiveError> {
    let manifest = image::parse_manifest(&store.read_blob(manifest_digest)?)?;
    let config_digest = image::descriptor_digest(manifest.config())?;
    ensure(store, src, &config_digest)?;
    let config = image::parse_config(&store.read_blob(&config_digest)?)?;
    let layers = image::layers_of(&manifest, &config)?;
    for l in &layers {
        let p = format!("blobs/sha256/{}", l.digest.hex());
        ensure(store, src, &l.digest)?;
        verify_diff_id(store, &l.digest, &l.diff_id, &p)?;
    }
    names.extend(docker_tags.get(&config_digest).cloned().unwrap_or_default());
    let mut tags: Vec<Reference> = Vec::new();
    for n in names.iter().filter(|n| n.contains(':') || n.contains('/')) {
        if let Ok(r) = n.parse::<Reference>() {
            if !tags.contains(&r) {
                tags.push(r);
            }
        }
    }
    let media_type = if media_type.is_empty() {
        image::OCI_MANIFEST
    } else {
        media_type
    };
    let image = store.add_image(manifest_digest, media_type, &tags, None)?;
    Ok(LoadedImage { image, tags })
}

/// Checks that a layer blob unpacks to its diff_id.
pub(crate) fn verify_diff_id(
    store: &Store,
    blob: &Digest,
    diff_id: &Digest,
    path: &str,
) -> Result<(), ArchiveError> {
    let f = store.open_blob(blob)?;
    let (c, plain) =
        decompress(io::BufReader::new(f)).map_err(io_ctx(format!("reading {path}")))?;
    let actual = if c == Compression::None {
        blob.clone()
    } else {
        HashingReader::new(plain)
            .finish()
            .map_err(io_ctx(format!("decompressing {path}")))?
            .0
    };
    if actual != *diff_id {
        return Err(ArchiveError::DiffIdMismatch {
            path: path.to_string(),
            expected: diff_id.clone(),
            actual,
        });
    }
    Ok(())
}

/// Builds an OCI manifest for a legacy docker-save entry and stores it.
fn synthesize_manifest(
    store: &Store,
    src: &Source,
    e: &DockerEntry,
) -> Result<(Digest, String), ArchiveError> {
    let config_digest = src.blob(store, &e.config)?;
    let config_size = std::fs::metadata(store.blob_path(&config_digest))
        .map_err(io_ctx("reading config"))?
        .len();
    let desc = |mt: &str, d: &Digest, size: u64| {
        DescriptorBuilder::default()
            .media_type(MediaType::from(mt))
            .digest(d.to_oci())
            .size(size)
            .build()
            .map_err(|e| ArchiveError::Unsupported(e.to_string()))
    };
    let mut layers = Vec::new();
    for p in &e.layers {
        let d = src.blob(store, p)?;
        let mut head = [0u8; 4];
        let mut f = store.open_blob(&d)?;
        let n = f.read(&mut head).map_err(io_ctx("reading layer"))?;
        let size = f.metadata().map_err(io_ctx("reading layer"))?.len();
        layers.push(desc(
            Compression::detect(&head[..n]).oci_media_type(),
            &d,
            size,
        )?);
    }
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(desc(image::OCI_CONFIG, &config_digest, config_size)?)
        .layers(layers)
        .build()
        .map_err(|e| ArchiveError::Unsupported(e.to_string()))?;
    let bytes = serde_json::to_vec(&manifest).map_err(|source| ArchiveError::Json {
        what: "manifest".into(),
        source,
    })?;
    Ok((
        store.put_blob_bytes(&bytes)?,
        image::OCI_MANIFEST.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_file_is_not_a_tar_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let text = dir.path().join("passwd");
        let line = "root:x:0:0:root:/root:/bin/bash\n";
        std::fs::write(&text, line.repeat(40)).unwrap();
        let err = load(&store, &text).unwrap_err();
        assert!(matches!(err, ArchiveError::NotATar), "{err:?}");
        assert_eq!(err.to_string(), "not a tar archive (or OCI layout)");
    }
}
