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
//! - [`vmthread`], [`signals`] and [`wait`]: the VM on its own thread,
//!   signals as an fd, and the one readiness waiter over both.
//! - [`oneshot`]: one command in a fresh VM to completion (`husk vm run`,
//!   build steps).
//! - [`ext4`] makes the writable disks, [`explain`] says why a VM ended
//!   early.

pub mod agent;
pub mod assets;
pub mod contract;
pub mod explain;
pub mod ext4;
pub mod oneshot;
pub mod rundir;
mod sandbox;
pub mod signals;
pub mod template;
pub mod vmthread;
pub mod vsock;
pub mod wait;
mod warm;

pub use agent::{AgentConnection, AgentError, Event};
pub use contract::DiskRole;
pub use rundir::RunDir;
pub use sandbox::{seccomp_mode, Disk, Sandbox, SandboxConfig, SandboxError};
pub use signals::Signals;
pub use template::{StartMode, TemplateStore};
pub use vmthread::{PauseError, VmResult, VmThread};
pub use wait::{Wake, Watch};
