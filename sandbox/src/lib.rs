//! One sandbox layer: everything needed to run a VM with the husk agent
//! and drive it, used by containers (the runtime's monitor), `husk build`
//! RUN steps and `husk vm run` alike.
//!
//! - [`assets`]: finding the guest kernel and the agent, and the cached
//!   EROFS agent disk.
//! - [`contract`]: what host and guest agree on (disk serials, kernel
//!   command line, vsock ports, guest CID).
//! - [`Sandbox::boot`] starts a VM from a [`SandboxConfig`] and hands back
//!   an [`AgentConnection`]: create the container, start processes, read
//!   their output and end, wait for the teardown; [`AgentConnection::connect_exec`]
//!   opens further sessions on the exec port.
//! - [`jail`]: the VM in its own jailed `husk-vmm` process (unprivileged
//!   uid, namespaces, cgroup); [`vmthread`]: the VM on a thread of this
//!   process (templates, non-root callers); [`RunningVm`] is either.
//! - [`signals`] and [`wait`]: signals as an fd, and the one readiness
//!   waiter over them and the VM's "done" fd.
//! - [`oneshot`]: one command in a fresh VM to completion (`husk vm run`,
//!   build steps).
//! - [`virtiofs`]: host directories and files shared with the VM (one
//!   virtiofsd per VM).
//! - [`ext4`] makes the writable disks, [`explain`] says why a VM ended
//!   early.

pub mod agent;
pub mod assets;
pub mod contract;
pub mod explain;
pub mod ext4;
pub mod jail;
pub mod oneshot;
pub mod queries;
pub mod rundir;
mod running;
mod sandbox;
pub mod signals;
pub mod template;
pub mod virtiofs;
pub mod vmthread;
pub mod vsock;
pub mod wait;
mod warm;

pub use agent::{AgentConnection, AgentError, Event};
pub use contract::DiskRole;
pub use jail::JailInfo;
pub use rundir::RunDir;
pub use running::RunningVm;
pub use sandbox::{seccomp_mode, Disk, Sandbox, SandboxConfig, SandboxError};
pub use signals::Signals;
pub use template::{StartMode, TemplateStore};
pub use virtiofs::{Share, ShareKind};
pub use vmthread::{PauseError, VmFailure, VmResult, VmThread};
pub use wait::{Wake, Watch};
