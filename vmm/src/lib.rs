//! husk's virtual machine monitor: one KVM microVM with a serial console,
//! virtio-mmio block, vsock, network and file system (vhost-user) devices,
//! booted directly into a 64-bit Linux kernel.
//!
//! Module map (see docs/ARCHITECTURE.md):
//! - [`vm`]: the public API ([`Vm`], [`VmConfig`], [`StopHandle`]), VM
//!   assembly and the event loop; [`setup`]: its steps (KVM, devices).
//! - [`vcpu`]: vCPU threads, exit dispatch, kicking out of KVM_RUN.
//! - [`arch::x86_64`]: memory layout, direct boot, MP table, CPUID, MSRs,
//!   registers.
//! - [`memory`], [`cmdline`], [`host`] (PVM host detection and quirks),
//!   [`config`], [`exit`], [`rate_limiter`] (token buckets of device I/O).
//! - [`seccomp`]: the per-thread system call filters of vCPU and
//!   event-loop threads.
//! - [`snapshot`]: saving a paused VM to files and restoring it.
//! - [`bus`]: MMIO and port-I/O dispatch from vCPU exits to devices.
//! - [`devices`]: serial port, legacy ports and the virtio devices.

pub mod arch;
pub mod bus;
pub mod cmdline;
pub mod config;
pub mod devices;
pub mod exit;
pub mod host;
pub mod logging;
pub mod memory;
pub mod rate_limiter;
pub mod seccomp;
pub mod setup;
pub mod snapshot;
pub mod vcpu;
pub mod vm;

pub use config::{
    ConsoleOutput, DiskConfig, FsConfig, NetBackend, NetConfig, NetRateLimit, VmConfig, VsockConfig,
};
pub use devices::virtio::net::{EgressPolicy, Ipv4Net};
pub use devices::virtio::vsock::VsockStreams;
pub use exit::ExitReason;
pub use host::HostKind;
pub use rate_limiter::{BucketConfig, RateLimitConfig};
pub use seccomp::SeccompMode;
pub use snapshot::{RestoreConfig, SnapshotError, SnapshotFiles};
pub use vm::{StopHandle, Vm, VmError};
