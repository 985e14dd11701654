//! Garbage collection: blobs and layer disks no image references.

use std::collections::HashSet;
use std::fs;

use super::{io_ctx, ImageUser, Store, StoreError};
use crate::digest::Digest;

/// What `prune` removed.
#[derive(Debug, Default)]
pub struct PruneReport {
    /// Dangling images removed (no tag, no repository digest), by image ID.
    pub images: Vec<Digest>,
    /// Blobs deleted.
    pub blobs: Vec<Digest>,
    /// Layer disk files deleted.
    pub disks: Vec<String>,
    /// Bytes freed.
    pub bytes: u64,
}

impl Store {
    /// Removes dangling images (as `docker image prune`) except those
    /// `users` were created from, then deletes blobs and layer disks no
    /// image needs, and leftover temp files.
    /// Waits for other husk processes using the store to finish.
    pub fn prune(&self, users: &[ImageUser]) -> Result<PruneReport, StoreError> {
        let _gc = self.gc_lock()?;
        let dangling_ids = self.update_state(|s| {
            let dangling: Vec<Digest> = s
                .images
                .iter()
                .filter(|(m, rec)| {
                    rec.repo_digests.is_empty()
                        && s.tags_of(m).is_empty()
                        && ImageUser::find(users, &rec.config).is_none()
                })
                .map(|(m, _)| m.clone())
                .collect();
            Ok(dangling
                .iter()
                .filter_map(|m| s.images.remove(m))
                .map(|rec| rec.config)
                .collect())
        })?;
        let mut report = PruneReport {
            images: dangling_ids,
            ..PruneReport::default()
        };
        let mut keep_blobs = HashSet::new();
        let mut keep_disks = HashSet::new();
        let state = self.state()?;
        for (m, rec) in &state.images {
            keep_blobs.insert(m.clone());
            keep_blobs.insert(rec.config.clone());
            let img = self.image(m)?;
            for l in &img.layers {
                keep_blobs.insert(l.digest.clone());
            }
            keep_disks.extend(crate::layer::disk_names(&img.diff_ids()));
        }
        for b in self.list_blobs()? {
            if !keep_blobs.contains(&b) {
                let p = self.blob_path(&b);
                report.bytes += fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                fs::remove_file(&p).map_err(io_ctx(format!("removing blob {b}")))?;
                report.blobs.push(b);
            }
        }
        for e in fs::read_dir(self.layers_dir()).map_err(io_ctx("listing layer disks"))? {
            let e = e.map_err(io_ctx("listing layer disks"))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let stale_tmp = name.starts_with(".tmp-") || name.ends_with(".lock");
            if stale_tmp || (name.ends_with(".erofs") && !keep_disks.contains(&name)) {
                report.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(e.path()).map_err(io_ctx(format!("removing {name}")))?;
                if !stale_tmp {
                    report.disks.push(name);
                }
            }
        }
        // No other process holds the use lock, so temp and staging are stale.
        for dir in [self.tmp_dir(), self.staging_dir()] {
            for e in fs::read_dir(&dir).map_err(io_ctx("listing temp files"))? {
                let e = e.map_err(io_ctx("listing temp files"))?;
                let p = e.path();
                let r = if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                r.map_err(io_ctx(format!("removing {}", p.display())))?;
            }
        }
        Ok(report)
    }
}
