//! OCI distribution client: pull (parallel, resumable layer downloads) and
//! push, with anonymous bearer tokens, basic auth, HTTPS or plain HTTP.

mod auth;
mod client;
mod credentials;
mod pull;
mod push;

pub use client::{is_loopback, Client, Options};
pub use credentials::{server_address, CredentialStore, Credentials, CredentialsError};
pub use pull::pull;
pub use push::push;

use crate::store::StoreError;

/// Errors talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The connection or HTTP exchange failed.
    #[error("{method} {url}")]
    Http {
        /// Request method.
        method: &'static str,
        /// Request URL.
        url: String,
        /// Transport error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The registry answered with an unexpected status.
    #[error("{what}: {message}")]
    Status {
        /// What was being done.
        what: String,
        /// Status and the registry's error message.
        message: String,
    },
    /// Authentication failed.
    #[error("authentication with {0}")]
    Auth(String),
    /// Store access failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A document from the registry is invalid.
    #[error("invalid {what} from registry")]
    Json {
        /// Which document.
        what: String,
        /// Parser error.
        #[source]
        source: serde_json::Error,
    },
    /// Something we cannot handle.
    #[error("{0}")]
    Unsupported(String),
    /// A downloaded blob or manifest is wrong.
    #[error("{0}")]
    Content(String),
}

/// Receives pull/push progress. Implementations print it.
pub trait Progress: Sync {
    /// A status line (e.g. "latest: Pulling from library/busybox").
    fn status(&self, line: &str);
    /// A layer transfer starts (`id` = short digest; `total` bytes).
    fn start(&self, id: &str, total: u64);
    /// Bytes transferred so far for `id`.
    fn advance(&self, id: &str, done: u64);
    /// The layer is finished, with a final word ("Pull complete", ...).
    fn done(&self, id: &str, message: &str);
}

/// A [`Progress`] that prints nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn status(&self, _: &str) {}
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: &str, _: u64) {}
    fn done(&self, _: &str, _: &str) {}
}
