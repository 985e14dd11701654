//! `husk pull`: manifest (index → linux/amd64), config, parallel resumable
//! layer downloads, conversion to layer disks.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use super::client::Client;
use super::{Options, Progress, RegistryError};
use crate::digest::{Digest, HashingWriter};
use crate::image::{self, is_index, pick_platform, Image, Layer};
use crate::reference::Reference;
use crate::store::{read_limited, FileLock, Store, StoreError, MAX_JSON};

/// Parallel layer downloads.
const WORKERS: usize = 3;
/// Attempts per blob (later ones resume where the previous stopped).
const ATTEMPTS: u32 = 3;

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Fetches a manifest or index; returns (bytes, digest, media type).
fn fetch_manifest(
    client: &Client,
    reference: &str,
    expected: Option<&Digest>,
) -> Result<(Vec<u8>, Digest, String), RegistryError> {
    let url = client.url(&format!("manifests/{reference}"));
    let mut resp = client.get("GET", &url, &[("Accept", ACCEPT)])?;
    if resp.status() != 200 {
        let what = format!("manifest for {reference}");
        return Err(client.status_error(what, &mut resp));
    }
    let header_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_string());
    let body = read_limited(resp.body_mut().as_reader(), MAX_JSON, "manifest")?;
    let digest = Digest::of(&body);
    if let Some(e) = expected {
        if *e != digest {
            return Err(RegistryError::Content(format!(
                "manifest digest mismatch: expected {e}, got {digest}"
            )));
        }
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|source| RegistryError::Json {
            what: "manifest".into(),
            source,
        })?;
    let media_type = v["mediaType"]
        .as_str()
        .map(String::from)
        .or(header_type)
        .unwrap_or_else(|| image::OCI_MANIFEST.to_string());
    Ok((body, digest, media_type))
}

/// Pulls `reference` into `store`. With `convert` (needs root), each layer is
/// turned into its EROFS disk as soon as it is downloaded.
pub fn pull(
    store: &Store,
    reference: &Reference,
    opts: &Options,
    convert: bool,
    progress: &dyn Progress,
) -> Result<Image, RegistryError> {
    let _use = store.use_lock()?;
    let client = Client::new(reference, opts, false)?;
    let tag_or_digest = match (&reference.digest, &reference.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".into(),
    };
    progress.status(&format!(
        "{tag_or_digest}: Pulling from {}",
        reference.familiar_name()
    ));
    let (mut body, top_digest, mut media_type) =
        fetch_manifest(&client, &tag_or_digest, reference.digest.as_ref())?;
    let mut digest = top_digest.clone();
    if is_index(&media_type) {
        let index: oci_spec::image::ImageIndex =
            serde_json::from_slice(&body).map_err(|source| RegistryError::Json {
                what: "image index".into(),
                source,
            })?;
        let m = pick_platform(&index).ok_or_else(|| {
            RegistryError::Unsupported(format!("no linux/amd64 image for {reference}"))
        })?;
        let d = image::descriptor_digest(m)?;
        (body, digest, media_type) = fetch_manifest(&client, &d.to_string(), Some(&d))?;
        if is_index(&media_type) {
            return Err(RegistryError::Unsupported("nested image index".into()));
        }
    }
    let manifest = image::parse_manifest(&body)?;
    store.put_blob_bytes(&body)?;
    let config_desc = manifest.config();
    let config_digest = image::descriptor_digest(config_desc)?;
    if !store.has_blob(&config_digest) {
        fetch_blob(
            store,
            &client,
            &config_digest,
            config_desc.size().min(MAX_JSON),
            &|_| {},
        )?;
    }
    let config = image::parse_config(&store.read_blob(&config_digest)?)?;
    let layers = image::layers_of(&manifest, &config)?;
    let convert = convert && layers.len() <= crate::layer::MAX_LAYER_DISKS;
    download_all(store, &client, &layers, convert, progress)?;
    progress.status(&format!("Digest: {top_digest}"));
    let tags: Vec<Reference> = reference
        .tag
        .iter()
        .map(|t| reference.with_tag(t))
        .collect();
    let repo_digest = reference.with_digest(&top_digest);
    let mut image = store.add_image(&digest, &media_type, &tags, Some(&repo_digest))?;
    image.tags = store.state()?.tags_of(&digest);
    Ok(image)
}

fn download_all(
    store: &Store,
    client: &Client,
    layers: &[Layer],
    convert: bool,
    progress: &dyn Progress,
) -> Result<(), RegistryError> {
    let queue = Mutex::new(layers.iter().collect::<VecDeque<_>>());
    let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
    for l in layers {
        progress.start(l.digest.short(), l.size);
    }
    std::thread::scope(|s| {
        for _ in 0..WORKERS.min(layers.len()) {
            s.spawn(|| loop {
                if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                    return;
                }
                let Some(layer) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                    return;
                };
                if let Err(e) = one_layer(store, client, layer, convert, progress) {
                    progress.done(layer.digest.short(), "Failed");
                    if let Ok(mut fe) = first_error.lock() {
                        fe.get_or_insert(e);
                    }
                }
            });
        }
    });
    match first_error.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

fn one_layer(
    store: &Store,
    client: &Client,
    layer: &Layer,
    convert: bool,
    progress: &dyn Progress,
) -> Result<(), RegistryError> {
    let id = layer.digest.short();
    let existed = store.has_blob(&layer.digest);
    if !existed {
        fetch_blob(store, client, &layer.digest, layer.size, &|n| {
            progress.advance(id, n)
        })?;
    }
    if convert {
        store.layer_disk(layer).map_err(|e| match e {
            crate::layer::LayerError::Store(s) => RegistryError::Store(s),
            other => RegistryError::Content(error_chain(&other)),
        })?;
    }
    progress.done(
        id,
        if existed {
            "Already exists"
        } else {
            "Pull complete"
        },
    );
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Downloads blob `digest` (`size` bytes) into the store, resuming a partial
/// download left by an earlier attempt or process. Returns once stored.
fn fetch_blob(
    store: &Store,
    client: &Client,
    digest: &Digest,
    size: u64,
    advance: &dyn Fn(u64),
) -> Result<(), RegistryError> {
    let partial = store.tmp_dir().join(format!("{}.partial", digest.hex()));
    let _lock = FileLock::exclusive(
        &store
            .tmp_dir()
            .join(format!("{}.partial.lock", digest.hex())),
    )
    .map_err(|e| StoreError::Io {
        context: "locking a download".into(),
        source: e,
    })?;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        if store.has_blob(digest) {
            return Ok(()); // another process finished it
        }
        match attempt(store, client, digest, size, &partial, advance) {
            Ok(()) => return Ok(()),
            Err(e @ (RegistryError::Http { .. } | RegistryError::Store(StoreError::Io { .. }))) => {
                last = Some(e); // transient: retry, resuming
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| RegistryError::Content(format!("download of {digest} failed"))))
}

fn io_err(context: &str) -> impl FnOnce(io::Error) -> RegistryError + '_ {
    move |source| {
        RegistryError::Store(StoreError::Io {
            context: context.to_string(),
            source,
        })
    }
}

fn attempt(
    store: &Store,
    client: &Client,
    digest: &Digest,
    size: u64,
    partial: &std::path::Path,
    advance: &dyn Fn(u64),
) -> Result<(), RegistryError> {
    let mut file: File = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(partial)
        .map_err(io_err("opening a partial download"))?;
    let mut have = file
        .metadata()
        .map_err(io_err("reading a partial download"))?
        .len();
    if have > size {
        file.set_len(0)
            .map_err(io_err("truncating a partial download"))?;
        have = 0;
    }
    let url = client.url(&format!("blobs/{digest}"));
    let range = format!("bytes={have}-");
    let headers: Vec<(&str, &str)> = if have > 0 && have < size {
        vec![("Range", range.as_str())]
    } else {
        vec![]
    };
    let mut resp = client.get("GET", &url, &headers)?;
    match resp.status().as_u16() {
        206 if have > 0 => {}
        200 => {
            file.set_len(0)
                .map_err(io_err("truncating a partial download"))?;
            have = 0;
        }
        _ => {
            let what = format!("blob {digest}");
            return Err(client.status_error(what, &mut resp));
        }
    }
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("reading a partial download"))?;
    let mut w = HashingWriter::resume(io::BufWriter::new(&file), &mut (&file).take(have))
        .map_err(io_err("reading a partial download"))?;
    let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                w.flush().map_err(io_err("writing a download"))?;
                return Err(io_err("downloading")(e));
            }
        };
        if w.count() + n as u64 > size {
            drop(w);
            let _ = std::fs::remove_file(partial);
            return Err(RegistryError::Content(format!(
                "blob {digest} is larger than the {size} bytes announced"
            )));
        }
        w.write_all(&buf[..n])
            .map_err(io_err("writing a download"))?;
        advance(w.count());
    }
    let (mut bw, actual, count) = w.finish();
    bw.flush().map_err(io_err("writing a download"))?;
    drop(bw);
    if count < size {
        // Keep the partial file: the next attempt resumes from here.
        return Err(io_err("downloading")(io::ErrorKind::UnexpectedEof.into()));
    }
    if actual != *digest {
        let _ = std::fs::remove_file(partial);
        return Err(RegistryError::Content(format!(
            "blob {digest}: received {count} bytes hashing to {actual} (expected {size} bytes)"
        )));
    }
    store.adopt_file(&file, partial, digest)?;
    Ok(())
}
