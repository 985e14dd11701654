//! Import and export: `docker save` tarballs (legacy `manifest.json`) and
//! OCI image layouts (directory or tar).

mod load;
mod save;

pub use load::{load, LoadedImage};
pub use save::save;

use crate::store::StoreError;

/// Errors importing or exporting archives.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Store access failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the input or writing the output failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The archive is neither an OCI layout nor a docker-save tarball.
    #[error("not an image archive: no index.json or manifest.json found")]
    NotAnArchive,
    /// The file is not a (possibly compressed) tar archive.
    #[error("not a tar archive (or OCI layout)")]
    NotATar,
    /// The archive refers to a file it does not contain.
    #[error("archive refers to missing file {0:?}")]
    MissingFile(String),
    /// A path in the archive's JSON escapes the archive.
    #[error("unsafe path {0:?} in archive")]
    UnsafePath(String),
    /// The archive has something we cannot use.
    #[error("{0}")]
    Unsupported(String),
    /// A layer's content does not match its diff_id.
    #[error("layer {path:?}: uncompressed content is {actual}, config says {expected}")]
    DiffIdMismatch {
        /// Path of the layer in the archive.
        path: String,
        /// From the config.
        expected: crate::digest::Digest,
        /// Computed.
        actual: crate::digest::Digest,
    },
    /// A JSON document in the archive is invalid.
    #[error("invalid {what} in archive")]
    Json {
        /// Which document.
        what: String,
        /// Parser error.
        #[source]
        source: serde_json::Error,
    },
}

pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let context = context.into();
    move |source| ArchiveError::Io { context, source }
}
