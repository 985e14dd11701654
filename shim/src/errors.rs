//! Errors of the task service, and the ttrpc status each one is sent as
//! (containerd maps the codes to its own error kinds: not found, failed
//! precondition...). Every message is the error's whole chain, one line.

use containerd_shim::protos::ttrpc::{self, Code};

/// A failed task request.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// No task or exec process with this ID.
    #[error("{0}")]
    NotFound(String),
    /// The request is not valid in the process's state.
    #[error("{0}")]
    Precondition(String),
    /// The ID is taken.
    #[error("{0}")]
    Exists(String),
    /// The bundle or request asks for something husk cannot do.
    #[error("{0}")]
    Invalid(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

impl ShimError {
    /// The ttrpc status code.
    pub fn code(&self) -> Code {
        match self {
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::Precondition(_) => Code::FAILED_PRECONDITION,
            ShimError::Exists(_) => Code::ALREADY_EXISTS,
            ShimError::Invalid(_) => Code::INVALID_ARGUMENT,
            ShimError::Failed(_) => Code::UNKNOWN,
        }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> ttrpc::Error {
        log::warn!("{e}");
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

impl From<husk_runtime::Error> for ShimError {
    fn from(e: husk_runtime::Error) -> ShimError {
        use husk_runtime::Error as E;
        let msg = husk_runtime::error_chain(&e);
        match e {
            E::NoSuchContainer(_) => ShimError::NotFound(msg),
            E::NotRunning(_) | E::Running { .. } => ShimError::Precondition(msg),
            E::AlreadyRunning(_) | E::NameInUse { .. } => ShimError::Exists(msg),
            E::Invalid(_) | E::InvalidName(_) | E::NoCommand => ShimError::Invalid(msg),
            _ => ShimError::Failed(msg),
        }
    }
}

impl From<husk_bundle::BundleError> for ShimError {
    fn from(e: husk_bundle::BundleError) -> ShimError {
        ShimError::Invalid(husk_runtime::error_chain(&e))
    }
}

impl From<husk_bundle::rootfs::RootfsError> for ShimError {
    fn from(e: husk_bundle::rootfs::RootfsError) -> ShimError {
        use husk_bundle::rootfs::RootfsError as R;
        let msg = format!("root filesystem: {}", husk_runtime::error_chain(&e));
        match e {
            R::MountType(_) | R::Several(_) | R::NoLower | R::NotADirectory(_) => {
                ShimError::Invalid(msg)
            }
            R::Cache(_) | R::Mountinfo(_) => ShimError::Failed(msg),
        }
    }
}

/// Shorthand for task results.
pub type Result<T> = std::result::Result<T, ShimError>;
