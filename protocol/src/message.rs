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
    /// Host -> agent, on the boot connection after `Hello`: assemble the
    /// container's root filesystem and environment. The agent answers
    /// [`Message::Ok`] or [`Message::Error`].
    CreateContainer(ContainerSpec),
    /// Agent -> host: the request succeeded (`CreateContainer`, `KillInit`,
    /// `Seed`).
    Ok,
    /// Host -> agent: start a process inside the container. On the boot
    /// connection (after `CreateContainer`) this is the container's init
    /// process: when it exits the container is over, and the agent tears
    /// down and powers off. On any other connection (to [`EXEC_PORT`]) it
    /// is an exec'd process.
    ///
    /// [`EXEC_PORT`]: crate::EXEC_PORT
    Exec(ExecRequest),
    /// Agent -> host: the process of this connection started (guest pid).
    Started {
        /// The process id inside the guest.
        pid: u32,
    },
    /// Host -> agent: the terminal of this connection's process changed size.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Host -> agent, on a connection to [`EXEC_PORT`]: deliver a signal to
    /// the container's init process. Answered with `Ok` or `Error`.
    ///
    /// [`EXEC_PORT`]: crate::EXEC_PORT
    KillInit {
        /// The signal number (1-64).
        signal: i32,
    },
    /// Host -> agent, on the boot connection right after `Hello`, on every
    /// start (cold boot and restore from a snapshot alike): fresh entropy
    /// and the wall-clock time, which is what makes VMs restored from one
    /// snapshot differ. The agent adds `entropy` to the kernel's random
    /// pool, credited (between [`SEED_MIN_ENTROPY`] and
    /// [`SEED_MAX_ENTROPY`] bytes, otherwise `Error{BadRequest}`), sets
    /// the clock and answers [`Message::Ok`].
    ///
    /// [`SEED_MIN_ENTROPY`]: crate::SEED_MIN_ENTROPY
    /// [`SEED_MAX_ENTROPY`]: crate::SEED_MAX_ENTROPY
    Seed {
        /// Random bytes from the host's `getrandom`.
        entropy: Vec<u8>,
        /// The host's wall-clock time, nanoseconds since the Unix epoch.
        unix_time_ns: u64,
    },
    /// Agent -> host, on the boot connection while the init process runs
    /// (and right before its exit status): the guest kernel's OOM killer
    /// killed processes of the container. Sent when the agent notices new
    /// kills (when it reaps a process killed by SIGKILL, and at the end).
    OomKilled {
        /// Processes killed by the OOM killer since the container started.
        count: u64,
    },
    /// Host -> agent, on the boot connection after `CreateContainer` and
    /// before the init's `Exec` (`husk build`'s RUN steps), for an image
    /// root on a writable disk: once the init process has ended and every
    /// container process is dead, the agent turns the container's changes
    /// (the overlayfs upper directory) into an OCI layer tar and sends it
    /// right after the exit status, as [`Message::LayerChunk`] frames ended
    /// by [`Message::LayerEnd`] (or [`Message::Error`] if the conversion
    /// failed), before it unmounts the disks. Answered [`Message::Ok`], or
    /// `Error{BadRequest}` when the root is not such a stack or the init
    /// already started. The host treats the tar as hostile input.
    ExportLayer,
    /// Agent -> host, after the init's exit status when
    /// [`Message::ExportLayer`] was asked: the next bytes of the layer tar
    /// (at most [`MAX_CHUNK`](crate::MAX_CHUNK)).
    LayerChunk(Vec<u8>),
    /// Agent -> host: the layer tar of [`Message::ExportLayer`] is complete.
    LayerEnd {
        /// Its size in bytes (the sum of the chunks).
        bytes: u64,
    },
    // `husk pause` / `husk unpause` (issue #14).
    /// Client -> monitor, on its attach socket after `Hello` (instead of
    /// attaching): suspend the VM's vCPUs. Answered `Ok` or `Error`.
    Pause,
    /// Client -> monitor: resume a paused VM. Answered `Ok` or `Error`.
    Resume,
    // --- protocol 9: stats, top, cp, diff, export (issue #14) ---
    /// Host -> agent, on a connection to [`EXEC_PORT`](crate::EXEC_PORT):
    /// the guest's memory and process figures (`husk stats`). Answered
    /// [`Message::StatsReply`].
    Stats,
    /// Agent -> host: the answer to [`Message::Stats`]. Guest input.
    StatsReply(GuestStats),
    /// Host -> agent, on a connection to [`EXEC_PORT`](crate::EXEC_PORT):
    /// the guest's processes (`husk top`), read from the guest's /proc.
    /// Answered [`Message::TopReply`].
    Top,
    /// Agent -> host: the answer to [`Message::Top`] (at most
    /// [`MAX_TOP_PROCESSES`](crate::MAX_TOP_PROCESSES)). Guest input.
    TopReply(Vec<GuestProcess>),
    /// Host -> agent, on a connection to [`EXEC_PORT`](crate::EXEC_PORT):
    /// what is at a path of the container's root (`husk cp`'s check of
    /// its source and destination). Answered [`Message::PathInfo`] or
    /// `Error{NotFound}`.
    StatPath(PathRequest),
    /// Agent -> host: the answer to [`Message::StatPath`]. Guest input.
    PathInfo(PathInfo),
    /// Host -> agent, on a connection to [`EXEC_PORT`](crate::EXEC_PORT):
    /// a tar of the path (`husk cp` out of the container; `/` is `husk
    /// export`), streamed as [`Message::LayerChunk`] frames ended by
    /// [`Message::LayerEnd`] (or `Error`). The host treats the tar as
    /// hostile input.
    ArchiveGet(ArchiveRequest),
    /// Host -> agent, on a connection to [`EXEC_PORT`](crate::EXEC_PORT):
    /// unpack the tar that follows (as [`Message::LayerChunk`] frames
    /// ended by [`Message::LayerEnd`]) into the directory at `path` of the
    /// container's root (`husk cp` into the container). Answered
    /// [`Message::Ok`] or `Error`.
    ArchivePut(PathRequest),
    /// Host -> agent, on a connection to [`EXEC_PORT`](crate::EXEC_PORT):
    /// the container's changes to its image (`husk diff`), from the
    /// overlayfs upper directory. Answered by [`Message::Changes`] frames
    /// (at most [`MAX_CHANGES_PER_FRAME`](crate::MAX_CHANGES_PER_FRAME)
    /// each) ended by [`Message::Ok`], or `Error`.
    Diff,
    /// Agent -> host: the next changes of [`Message::Diff`]. Guest input.
    Changes(Vec<Change>),
    /// Host -> agent, on a connection to [`EXEC_PORT`](crate::EXEC_PORT):
    /// the running container's changes (the overlayfs upper directory) as
    /// an OCI layer tar (`husk commit`), streamed like
    /// [`Message::ExportLayer`]'s: [`Message::LayerChunk`] frames ended by
    /// [`Message::LayerEnd`] (or `Error`). The container keeps running.
    ExportChanges,
}

/// The guest's own figures for `husk stats` (see [`Message::Stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStats {
    /// `MemTotal` of the guest's /proc/meminfo, bytes.
    pub mem_total: u64,
    /// `MemAvailable` of the guest's /proc/meminfo, bytes.
    pub mem_available: u64,
    /// Processes in the guest besides the agent and kernel threads.
    pub pids: u64,
    /// Bytes received by the guest's network interfaces (loopback left out).
    pub net_rx: u64,
    /// Bytes sent by the guest's network interfaces (loopback left out).
    pub net_tx: u64,
    /// Bytes read from the guest's virtio disks (/proc/diskstats).
    pub block_read: u64,
    /// Bytes written to the guest's virtio disks (/proc/diskstats).
    pub block_written: u64,
}

/// One guest process for `husk top` (see [`Message::Top`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestProcess {
    /// Its pid in the guest.
    pub pid: u32,
    /// Its parent's pid.
    pub ppid: u32,
    /// Its real uid.
    pub uid: u32,
    /// Its start time, seconds since the Unix epoch.
    pub start_time: u64,
    /// Its CPU time (user + system), milliseconds.
    pub cpu_ms: u64,
    /// Its controlling terminal (`pts/0`), or `?`.
    pub tty: String,
    /// Its command line (the command name in brackets when empty); at most
    /// [`MAX_TOP_CMD`](crate::MAX_TOP_CMD) bytes.
    pub cmd: String,
}

/// A path of the container's root (see [`Message::StatPath`] and
/// [`Message::ArchivePut`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRequest {
    /// The absolute path, resolved within the container's root (symlinks
    /// cannot lead out of it).
    pub path: String,
    /// Follow a symlink at the path itself (`husk cp -L`).
    pub follow_link: bool,
}

/// What is at a path (see [`Message::StatPath`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathInfo {
    /// A directory.
    pub dir: bool,
    /// Permission bits and file type (`st_mode`).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
}

/// A tar to make of a path (see [`Message::ArchiveGet`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRequest {
    /// The path and whether a symlink there is followed.
    pub source: PathRequest,
    /// The name of the path's own entry in the tar; its contents go
    /// below it. Empty: the path's contents at the top (a directory's
    /// `/.` form, and `export`).
    pub name: String,
    /// Leave out what is mounted below the path (the API filesystems,
    /// volumes, tmpfs mounts), as `export` does; the mount points stay,
    /// empty. /proc, /sys and /dev are left out in any case.
    pub skip_mounts: bool,
}

/// One change of the container to its image (see [`Message::Diff`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// What happened to it.
    pub kind: ChangeKind,
    /// Its absolute path in the container.
    pub path: String,
}

/// The kinds of [`Change`], as `docker diff` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// `A`: added.
    Added,
    /// `C`: changed.
    Changed,
    /// `D`: deleted.
    Deleted,
}

impl ChangeKind {
    /// Docker's letter.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// A container's root filesystem and environment (see
/// [`Message::CreateContainer`]). Disks are named by virtio-blk serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The container's root filesystem.
    pub root: RootFs,
    /// Volumes to mount inside the root filesystem.
    pub volumes: Vec<VolumeMount>,
    /// Host directories and files shared with the VM over virtio-fs (tag
    /// [`SHARE_TAG`](crate::SHARE_TAG)), bound into the root after the
    /// volumes, in order.
    pub shares: Vec<ShareMount>,
    /// The container's hostname (also written to /etc/hostname when the
    /// root is [`RootFs::Layers`]).
    pub hostname: String,
    /// Extra /etc/hosts lines (`ADDRESS NAME...`) after the loopback ones.
    pub hosts: Vec<String>,
    /// The full content of /etc/resolv.conf; `None` leaves the image's.
    pub resolv_conf: Option<String>,
    /// The network interface to configure; `None`: loopback only.
    pub network: Option<NetworkSpec>,
    /// Files written into an image root ([`RootFs::Layers`]) after it is
    /// assembled, after /etc/hostname, /etc/hosts and /etc/resolv.conf (so
    /// they win over those): the OCI bundle's file bind mounts, copied.
    /// At most [`MAX_FILES`] files, [`MAX_FILE_BYTES`] each and
    /// [`MAX_FILES_BYTES`] together (the whole spec travels in one frame).
    ///
    /// [`MAX_FILES`]: crate::MAX_FILES
    /// [`MAX_FILE_BYTES`]: crate::MAX_FILE_BYTES
    /// [`MAX_FILES_BYTES`]: crate::MAX_FILES_BYTES
    pub files: Vec<FileSpec>,
    /// tmpfs filesystems mounted in the root (after the volumes, before
    /// the files), e.g. an OCI bundle's `/run`.
    pub tmpfs: Vec<TmpfsMount>,
    /// Kernel parameters the agent sets (`/proc/sys`) once the network is
    /// configured: the guest kernel is the container's own. At most
    /// [`MAX_SYSCTLS`](crate::MAX_SYSCTLS).
    pub sysctls: Vec<Sysctl>,
    /// Remount an image root ([`RootFs::Layers`]) read-only once it is
    /// assembled (`--read-only`): volumes and tmpfs mounts, mounts of
    /// their own, stay as they are.
    pub read_only_root: bool,
}

/// One kernel parameter (see [`ContainerSpec::sysctls`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sysctl {
    /// Its dotted name (`net.ipv4.ping_group_range`): letters, digits,
    /// `_` and `-` between dots.
    pub key: String,
    /// The value written.
    pub value: String,
}

impl Sysctl {
    /// Whether `key` is a dotted parameter name: at most 256 bytes, two
    /// or more non-empty parts of ASCII letters, digits, `_` and `-`.
    pub fn valid_key(key: &str) -> bool {
        let parts: Vec<&str> = key.split('.').collect();
        key.len() <= 256
            && parts.len() >= 2
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            })
    }

    /// Whether `value` can be written: at most
    /// [`MAX_SYSCTL_VALUE`](crate::MAX_SYSCTL_VALUE) bytes, no NUL.
    pub fn valid_value(value: &str) -> bool {
        value.len() <= crate::MAX_SYSCTL_VALUE && !value.contains('\0')
    }

    /// The file under `/proc/sys` of a valid key (`net/ipv4/...`).
    pub fn proc_path(&self) -> String {
        self.key.replace('.', "/")
    }
}

/// A tmpfs mounted into the container (see [`ContainerSpec::tmpfs`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsMount {
    /// Absolute path inside the container (created if missing).
    pub target: String,
    /// tmpfs's `size=` value (`65536k`, `64m`, `50%`...); `None`: the
    /// kernel's default (half the guest's memory).
    pub size: Option<String>,
    /// Permission bits of its root (`mode=`), e.g. `0o1777`.
    pub mode: Option<u32>,
    /// Mount flags.
    pub read_only: bool,
    /// `nosuid`.
    pub nosuid: bool,
    /// `nodev`.
    pub nodev: bool,
    /// `noexec`.
    pub noexec: bool,
}

/// A regular file the agent writes into the container's root (see
/// [`ContainerSpec::files`]); owned by root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    /// Absolute path inside the container, resolved within the root
    /// (symlinks cannot lead out of it); missing parents are created.
    pub path: String,
    /// The file's content.
    pub content: Vec<u8>,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
}

/// Where a container's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootFs {
    /// An image: read-only EROFS layer disks, bottom layer first, stacked
    /// with overlayfs (whiteouts are 0:0 character devices, opaque
    /// directories carry `trusted.overlay.opaque=y`) under the upper and
    /// work directories of the writable ext4 disk, so changes survive a
    /// stop and start. The agent writes /etc/hostname, /etc/hosts and
    /// /etc/resolv.conf into it.
    Layers {
        /// Layer disk serials, bottom first.
        layers: Vec<String>,
        /// The writable disk's serial.
        writable: String,
    },
    /// One plain disk mounted as the root as it is (`husk vm run`); the
    /// agent changes no file in it.
    Disk(RootDisk),
}

/// The container's one network interface (virtio-net, `eth0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// The interface's MAC address, `aa:bb:cc:dd:ee:ff` (to find it).
    pub mac: String,
    /// IPv4 address with prefix length, e.g. `10.0.2.15/24`.
    pub ipv4: String,
    /// IPv4 default gateway.
    pub gateway4: String,
    /// Optional IPv6 address with prefix length.
    pub ipv6: Option<String>,
    /// Optional IPv6 default gateway.
    pub gateway6: Option<String>,
    /// MTU of the interface.
    pub mtu: u32,
}

/// A volume disk mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// The disk's virtio-blk serial.
    pub serial: String,
    /// The filesystem type (`ext4`).
    pub fs_type: String,
    /// The absolute path inside the container (created if missing).
    pub target: String,
    /// Mount read-only.
    pub read_only: bool,
}

/// A host directory or file shared over virtio-fs, bound into the
/// container (see [`ContainerSpec::shares`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareMount {
    /// Its path inside the virtio-fs export, relative: `"0"` (a shared
    /// directory) or `"1/app.yml"` (a shared file).
    pub source: String,
    /// The absolute path inside the container (created if missing, as a
    /// directory or an empty file like the source).
    pub target: String,
    /// Bind it read-only (the host serves it read-only as well).
    pub read_only: bool,
}

/// A process to start inside the container (see [`Message::Exec`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The command and its arguments; `argv[0]` is looked up in `PATH`
    /// (from `env`) when it contains no `/`.
    pub argv: Vec<String>,
    /// The environment, as `KEY=VALUE` strings (the host has already merged
    /// image, `--env-file` and `-e` values).
    pub env: Vec<String>,
    /// The working directory; created (owned by the user) if missing.
    pub cwd: String,
    /// The user as Docker spells it: `""` (root), `name`, `uid`,
    /// `name:group`, `uid:gid`...; resolved by the agent against the
    /// container's /etc/passwd and /etc/group, supplementary groups
    /// included.
    pub user: String,
    /// Run on a new pseudo-terminal (stdout and stderr both arrive as
    /// `Stdout`); `Resize` applies to it.
    pub tty: bool,
    /// Whether the host will send `Stdin`; otherwise stdin is /dev/null.
    pub stdin: bool,
    /// The initial terminal size when `tty` is set.
    pub size: Option<(u16, u16)>,
    /// Supplementary groups, capabilities, resource limits and
    /// `no_new_privs` of the process (Docker's `--group-add`, `--cap-*`,
    /// `--ulimit`, `--security-opt no-new-privileges`; OCI `process`).
    pub security: ProcessSecurity,
}

/// What the agent applies to a process after it has switched to the
/// process's user and before it executes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSecurity {
    /// Group IDs added to the user's supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Resource limits set on the process; those not listed keep the
    /// agent's defaults.
    pub rlimits: Vec<Rlimit>,
    /// The process's capability sets; `None`: Docker's default set
    /// ([`Capabilities::docker_default`]) for a root process, none for
    /// another user (as Docker does: that set stays its bounding set
    /// only). Bits past the guest kernel's last capability are ignored.
    pub capabilities: Option<Capabilities>,
    /// Set `no_new_privs`, so set-user-ID programs and file capabilities
    /// grant nothing.
    pub no_new_privileges: bool,
    /// The file mode creation mask (0..=0o777); `None`: the agent's
    /// (0o022).
    pub umask: Option<u32>,
}

/// One resource limit (`setrlimit(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// Which resource.
    pub resource: RlimitResource,
    /// The soft limit (`u64::MAX`: unlimited).
    pub soft: u64,
    /// The hard limit (`u64::MAX`: unlimited).
    pub hard: u64,
}

/// The resources of `setrlimit(2)`, by their Linux names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RlimitResource {
    /// `RLIMIT_AS`.
    RlimitAs,
    /// `RLIMIT_CORE`.
    RlimitCore,
    /// `RLIMIT_CPU`.
    RlimitCpu,
    /// `RLIMIT_DATA`.
    RlimitData,
    /// `RLIMIT_FSIZE`.
    RlimitFsize,
    /// `RLIMIT_LOCKS`.
    RlimitLocks,
    /// `RLIMIT_MEMLOCK`.
    RlimitMemlock,
    /// `RLIMIT_MSGQUEUE`.
    RlimitMsgqueue,
    /// `RLIMIT_NICE`.
    RlimitNice,
    /// `RLIMIT_NOFILE`.
    RlimitNofile,
    /// `RLIMIT_NPROC`.
    RlimitNproc,
    /// `RLIMIT_RSS`.
    RlimitRss,
    /// `RLIMIT_RTPRIO`.
    RlimitRtprio,
    /// `RLIMIT_RTTIME`.
    RlimitRttime,
    /// `RLIMIT_SIGPENDING`.
    RlimitSigpending,
    /// `RLIMIT_STACK`.
    RlimitStack,
}

/// A process's capability sets, as bit masks (bit N = capability N of
/// `linux/capability.h`, e.g. bit 0 `CAP_CHOWN`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// The bounding set.
    pub bounding: u64,
    /// The effective set.
    pub effective: u64,
    /// The permitted set.
    pub permitted: u64,
    /// The inheritable set.
    pub inheritable: u64,
    /// The ambient set.
    pub ambient: u64,
}

/// A block device mounted as a container's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootDisk {
    /// The virtio-blk serial that identifies the disk (e.g. `disk0`).
    pub serial: String,
    /// The filesystem type passed to mount(2) (e.g. `ext4`).
    pub fs_type: String,
    /// Mount read-only.
    pub read_only: bool,
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
    /// The user or group named in the request does not exist.
    NoSuchUser,
    /// The request needs a container, and none was created.
    NoContainer,
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
            | ErrorCode::Internal
            | ErrorCode::NoSuchUser
            | ErrorCode::NoContainer => 125,
        }
    }
}

/// The exit code Docker (and a shell) reports for a process killed by
/// `signal`: 128 + the signal number. The number comes from the guest, so
/// anything outside the valid signals 1-64 maps to 255 instead of an
/// arithmetic overflow or a nonsense code.
pub fn signal_exit_code(signal: i32) -> i32 {
    if (1..=64).contains(&signal) {
        128 + signal
    } else {
        255
    }
}

#[cfg(test)]
mod signal_exit_code_tests {
    use super::signal_exit_code;

    #[test]
    fn valid_signals_add_128_and_hostile_ones_give_255() {
        assert_eq!(signal_exit_code(9), 137);
        assert_eq!(signal_exit_code(15), 143);
        assert_eq!(signal_exit_code(64), 192);
        assert_eq!(signal_exit_code(0), 255);
        assert_eq!(signal_exit_code(-1), 255);
        assert_eq!(signal_exit_code(65), 255);
        assert_eq!(signal_exit_code(i32::MAX), 255);
    }
}
