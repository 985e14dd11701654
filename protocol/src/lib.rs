//! The wire format between the host (husk) and the guest agent.
//!
//! A stream carries frames: a `u32` little-endian payload length followed by
//! a [postcard]-encoded [`Message`]. The length is checked against
//! [`MAX_FRAME`] before anything is allocated, so a hostile peer cannot make
//! the reader allocate more than that.
//!
//! Compatibility: both sides send [`Message::Hello`] first with their
//! [`PROTOCOL_VERSION`]. Enum variants and struct fields are encoded by
//! position, so new variants are only ever appended at the end of an enum,
//! and changing a struct's fields means a new protocol version.
//!
//! Everything the host reads here comes from the guest and is untrusted:
//! [`decode`] and [`FrameDecoder`] return errors on any malformed input and
//! never panic.

mod frame;
mod message;
mod security;

pub use frame::{
    decode, encode, read_message, write_message, DecodeError, EncodeError, FrameDecoder, ReadError,
    WriteError, HEADER_LEN, MAX_FRAME,
};
pub use message::{
    signal_exit_code, Capabilities, ContainerSpec, ErrorCode, ExecRequest, FileSpec, Message,
    NetworkSpec, ProcessSecurity, Rlimit, RlimitResource, RootDisk, RootFs, ShareMount, Sysctl,
    TmpfsMount, VolumeMount,
};
// protocol 9 (issue #14): stats, top, cp, diff, export
pub use message::{
    ArchiveRequest, Change, ChangeKind, GuestProcess, GuestStats, PathInfo, PathRequest,
};
pub use security::{
    capability_mask, capability_names, Capability, SecurityParseError, CAPABILITY_NAMES,
};

/// The protocol version this build speaks; sent in [`Message::Hello`].
pub const PROTOCOL_VERSION: u32 = 10;

/// The virtio-fs tag of the shared directories' export (protocol 10,
/// issue #13): the agent mounts it once and binds
/// [`ShareMount::source`] paths from it.
pub const SHARE_TAG: &str = "husk";

/// Most shares a [`ContainerSpec`] may bind.
pub const MAX_SHARES: usize = 64;

/// Most files a [`ContainerSpec`] may carry in [`ContainerSpec::files`].
pub const MAX_FILES: usize = 32;

/// Largest content of one file in [`ContainerSpec::files`].
pub const MAX_FILE_BYTES: usize = 256 * 1024;

/// Largest content of all files in [`ContainerSpec::files`] together; with
/// the rest of the spec it must fit in one frame ([`MAX_FRAME`]).
pub const MAX_FILES_BYTES: usize = 512 * 1024;

/// Most kernel parameters a [`ContainerSpec`] may carry in
/// [`ContainerSpec::sysctls`].
pub const MAX_SYSCTLS: usize = 64;

/// Longest value of one of [`ContainerSpec::sysctls`].
pub const MAX_SYSCTL_VALUE: usize = 4096;

/// The fewest entropy bytes a [`Message::Seed`] may carry.
pub const SEED_MIN_ENTROPY: usize = 16;

/// The most entropy bytes a [`Message::Seed`] may carry.
pub const SEED_MAX_ENTROPY: usize = 512;

/// The vsock port the agent connects to on the host (CID 2) at boot.
pub const AGENT_PORT: u32 = 1024;

/// The vsock port the agent listens on, once a container exists, for
/// further connections from the host (`Exec`, `KillInit`).
pub const EXEC_PORT: u32 = 1025;

/// The largest chunk of stdio data put into one frame; well below
/// [`MAX_FRAME`] to leave room for the encoding overhead.
pub const MAX_CHUNK: usize = 64 * 1024;

/// Environment variables the VMM may put on the guest kernel command line
/// (the kernel hands such `KEY=value` words to PID 1's environment) to
/// work around a host's limits, e.g. keeping guest processes off AVX on
/// hosts that do not preserve AVX state across guest processes. The agent
/// runs with them and passes them on to every process it starts.
pub const HOST_QUIRK_ENV: [&str; 3] = ["GLIBC_TUNABLES", "OPENSSL_ia32cap", "GODEBUG"];

// --- protocol 9: stats, top, cp, diff, export (issue #14) ---

/// Most processes a [`Message::TopReply`] lists (it travels in one frame).
pub const MAX_TOP_PROCESSES: usize = 1024;

/// Longest command line of a [`GuestProcess`].
pub const MAX_TOP_CMD: usize = 512;

/// Most changes in one [`Message::Changes`] frame.
pub const MAX_CHANGES_PER_FRAME: usize = 128;
