//! `husk push`: blobs (skipping those the registry has), then the manifest.

use super::client::Client;
use super::{Options, Progress, RegistryError};
use crate::digest::Digest;
use crate::image::Image;
use crate::reference::Reference;
use crate::store::Store;

/// Pushes `image` as `reference`; returns the manifest digest.
pub fn push(
    store: &Store,
    image: &Image,
    reference: &Reference,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<Digest, RegistryError> {
    let _use = store.use_lock()?;
    let client = Client::new(reference, opts, true)?;
    progress.status(&format!(
        "The push refers to repository [{}]",
        reference.familiar_name()
    ));
    let mut blobs: Vec<(Digest, u64)> = image
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.size))
        .collect();
    let config_size = std::fs::metadata(store.blob_path(&image.id)).map_or(0, |m| m.len());
    blobs.push((image.id.clone(), config_size));
    for (d, size) in &blobs {
        progress.start(d.short(), *size);
    }
    for (d, size) in &blobs {
        let done = push_blob(store, &client, d)?;
        progress.advance(d.short(), *size);
        progress.done(
            d.short(),
            if done {
                "Pushed"
            } else {
                "Layer already exists"
            },
        );
    }
    let tag = reference
        .tag
        .clone()
        .unwrap_or_else(|| image.manifest_digest.to_string());
    let url = client.url(&format!("manifests/{tag}"));
    let bytes = store.read_blob(&image.manifest_digest)?;
    let mut resp = client.put(&url, &image.record.media_type, &bytes[..])?;
    if resp.status() != 201 {
        return Err(client.status_error(format!("pushing manifest {tag}"), &mut resp));
    }
    progress.status(&format!(
        "{tag}: digest: {} size: {}",
        image.manifest_digest,
        bytes.len()
    ));
    let rd = reference.with_digest(&image.manifest_digest);
    store.update_state(|s| {
        if let Some(rec) = s.images.get_mut(&image.manifest_digest) {
            rec.repo_digests.insert(rd.to_string());
        }
        Ok(())
    })?;
    Ok(image.manifest_digest.clone())
}

/// Uploads one blob unless present; returns whether it was uploaded.
fn push_blob(store: &Store, client: &Client, d: &Digest) -> Result<bool, RegistryError> {
    let url = client.url(&format!("blobs/{d}"));
    let head = client.get("HEAD", &url, &[])?;
    if head.status() == 200 {
        return Ok(false);
    }
    let mut resp = client.post(&client.url("blobs/uploads/"))?;
    if resp.status() != 202 {
        return Err(client.status_error(format!("starting upload of {d}"), &mut resp));
    }
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| RegistryError::Content("upload answer without Location".into()))?;
    let mut put_url = client.absolute(location);
    put_url.push(if put_url.contains('?') { '&' } else { '?' });
    put_url.push_str(&format!("digest=sha256%3A{}", d.hex()));
    let file = store.open_blob(d)?;
    let mut resp = client.put(&put_url, "application/octet-stream", file)?;
    if resp.status() != 201 {
        return Err(client.status_error(format!("uploading {d}"), &mut resp));
    }
    Ok(true)
}
