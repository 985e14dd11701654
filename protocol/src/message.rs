//! The messages exchanged between host and agent.

use serde::{Deserialize, Serialize};

/// One protocol message. New variants go at the end (see the crate docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// First message in each direction: the sender's protocol version.
    Hello {
        /// The sender's [`crate::PROTOCOL_VERSION`].
        version: u32,
    },
    /// Host -> agent: start a process.
    Run(RunRequest),
    /// Agent -> host: bytes the process wrote to stdout.
    Stdout(Vec<u8>),
    /// Agent -> host: bytes the process wrote to stderr.
    Stderr(Vec<u8>),
    /// Host -> agent: bytes for the process's stdin.
    Stdin(Vec<u8>),
    /// Host -> agent: close the process's stdin.
    StdinEof,
    /// Host -> agent: deliver this signal number to the process.
    Signal(i32),
    /// Agent -> host: the process exited with this status.
    Exited {
        /// The exit status (0-255).
        code: i32,
    },
    /// Agent -> host: the process was killed by this signal.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// Either direction: a request failed; for the agent, the process did
    /// not start (or the request was refused).
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// A human-readable description.
        detail: String,
    },
}

/// What to run, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// The command and its arguments; `argv[0]` is looked up in `PATH`
    /// (from `env`) when it contains no `/`.
    pub argv: Vec<String>,
    /// The environment, as `KEY=VALUE` strings.
    pub env: Vec<String>,
    /// The working directory inside the root.
    pub cwd: String,
    /// The root filesystem; `None` runs in the agent's own root.
    pub root: Option<RootDisk>,
    /// Credentials to run as; `None` keeps the agent's (root).
    pub user: Option<User>,
    /// Whether the host will send [`Message::Stdin`]; otherwise stdin is
    /// `/dev/null`.
    pub stdin: bool,
}

/// A block device to mount as the process's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootDisk {
    /// The virtio-blk serial that identifies the disk (e.g. `disk0`).
    pub serial: String,
    /// The filesystem type passed to mount(2) (e.g. `ext4`).
    pub fs_type: String,
    /// Mount read-only.
    pub read_only: bool,
}

/// Numeric credentials for the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// The kinds of failure the agent reports, so the host can map them to
/// exit codes without parsing strings. New codes go at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The command does not exist.
    NotFound,
    /// The command exists but is not an executable format.
    NotExecutable,
    /// The command (or a directory on its path) may not be executed.
    PermissionDenied,
    /// The request is malformed (empty argv, NUL bytes, bad cwd, ...).
    BadRequest,
    /// The root disk was not found or could not be mounted.
    MountFailed,
    /// The peer speaks an incompatible protocol version.
    VersionMismatch,
    /// Anything else that went wrong inside the agent.
    Internal,
}

impl ErrorCode {
    /// The exit code a Docker-compatible CLI reports for this failure:
    /// 127 for a missing command, 126 for one that cannot be executed, 125
    /// for everything else.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::NotFound => 127,
            ErrorCode::NotExecutable | ErrorCode::PermissionDenied => 126,
            ErrorCode::BadRequest
            | ErrorCode::MountFailed
            | ErrorCode::VersionMismatch
            | ErrorCode::Internal => 125,
        }
    }
}
