//! VM snapshots: save a paused VM to two files and build a new VM from
//! them.
//!
//! - The **state file** ([`mod@format`]): a header (magic `HUSKSNAP`, format
//!   version, body length, SHA-256 of the body) and the postcard-encoded
//!   [`VmState`]: every vCPU (CPUID, registers, special registers, XSAVE,
//!   XCRs, debug registers, LAPIC, MSRs, MP state, pending events), the
//!   in-kernel PIC, IOAPIC, PIT and kvmclock, the serial port and i8042,
//!   and every virtio device ([`mod@virtio`]): its transport registers and
//!   queues, features, and its own state (no backend: disks, sockets and
//!   network backends are given anew to each restore).
//!   A file of another format version, a foreign or damaged file is refused
//!   with a typed [`FormatError`].
//! - The **memory file** ([`mod@memory`]): guest RAM, written after the state is
//!   captured; a restore maps it copy-on-write, so VMs restored from one
//!   file share its pages until they write them.
//!
//! Usage: [`StopHandle::pause`](crate::StopHandle::pause) makes
//! [`Vm::run_until_paused`] return [`ExitReason::Paused`](crate::ExitReason)
//! with the VM intact; [`Vm::save_snapshot`] writes the files; then
//! [`Vm::restore`] builds a new VM, which [`Vm::run`] resumes.
//!
//! Warm start: a template VM booted with its disk slots (some empty),
//! vsock and net is saved once; each restore brings its own backends
//! ([`RestoreConfig::disks`], [`RestoreConfig::vsock`],
//! [`RestoreConfig::net`]). A disk whose capacity differs from the saved
//! one raises a configuration-change interrupt; the vsock device starts
//! with no connection and posts a TRANSPORT_RESET event, after which the
//! guest reconnects.

pub mod format;
pub mod memory;
pub mod state;
pub mod virtio;

use std::path::PathBuf;
use std::sync::Arc;

use kvm_ioctls::Cap;

pub use format::{FormatError, FORMAT_VERSION, MAGIC};
pub use memory::MemoryFileError;
pub use state::{I8042State, KvmVmState, LegacyState, SerialState, StateError, VcpuState, VmState};

use crate::arch::x86_64::mptable::MAX_CPUS;
use crate::bus::Bus;
use crate::config::{ConsoleOutput, DiskConfig, NetConfig, VsockConfig};
use crate::devices::virtio::persist::PersistError;
use crate::exit::ExitSignal;
use crate::memory::MemoryError;
use crate::seccomp::{Filters, SeccompError, SeccompMode};
use crate::setup::{self, SetupError};
use crate::vcpu::{Vcpu, VcpuError};
use crate::vm::Vm;

/// Errors saving or restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The state file is missing, foreign, of another version or damaged.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The memory file cannot be written or mapped.
    #[error(transparent)]
    MemoryFile(#[from] MemoryFileError),
    /// KVM refused to give or take some state.
    #[error(transparent)]
    State(#[from] StateError),
    /// Creating the new VM failed.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// Registering the restored memory failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Creating a vCPU failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The restore's backends do not match the snapshot's devices.
    #[error("the snapshot's virtio devices ({saved}) do not match the restore's ({given})")]
    Layout {
        /// The snapshot's devices.
        saved: String,
        /// The backends the restore brings.
        given: String,
    },
    /// A virtio device's saved state is invalid.
    #[error(transparent)]
    Device(#[from] PersistError),
    /// The VM is running or has ended: only a VM that is paused (or not yet
    /// started) can be saved.
    #[error("the VM is not paused")]
    NotPaused,
    /// The snapshot's vCPU count is out of range.
    #[error("snapshot has {0} vCPUs; 1..={MAX_CPUS} are supported")]
    VcpuCount(usize),
    /// The snapshot has no in-kernel device state.
    #[error("snapshot lacks the interrupt controller and timer state")]
    MissingKvmState,
    /// Creating the exit eventfd failed.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// The threads' seccomp filters cannot be built.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// The VM has a virtio-fs device, whose vhost-user backend keeps
    /// state (open files, ring positions) that is not the VMM's to save.
    #[error("a VM with a virtio-fs device cannot be snapshotted (its vhost-user backend's state is not the VMM's)")]
    VirtioFs,
}

/// Where a snapshot goes (or comes from).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SnapshotFiles {
    /// The state file (replaced atomically).
    pub state: PathBuf,
    /// The guest memory file.
    pub memory: PathBuf,
}

/// A VM to restore from a snapshot. Serialisable except for the network
/// interface (see [`crate::VmConfig`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RestoreConfig {
    /// The snapshot's files.
    pub files: SnapshotFiles,
    /// Where the restored VM's serial console goes.
    pub console: ConsoleOutput,
    /// One backend per saved disk slot, in order (same count as the
    /// snapshot): a file, or `path: None` for an empty slot. The serial is
    /// what GET_ID answers from now on; `read_only` is enforced by the
    /// device even if the slot was writable in the snapshot.
    pub disks: Vec<DiskConfig>,
    /// The vsock device's new socket path (and CID): present iff the
    /// snapshot has a vsock device.
    pub vsock: Option<VsockConfig>,
    /// The network interface's new backend and MAC: present iff the
    /// snapshot has a network device.
    #[serde(skip)]
    pub net: Option<NetConfig>,
    /// The seccomp filters of the restored VM's threads.
    pub seccomp: SeccompMode,
}

impl Vm {
    /// Captures the state of this paused (or not yet started) VM, then
    /// writes the state file and the memory file.
    pub fn save_snapshot(&self, files: &SnapshotFiles) -> Result<(), SnapshotError> {
        let state = self.capture()?;
        format::write_file(&files.state, &state)?;
        memory::write_memory_file(&files.memory, &self.memory)?;
        Ok(())
    }

    /// Like [`Vm::save_snapshot`], into files already open for writing
    /// (a jailed VMM cannot open paths: its caller passes them).
    pub fn save_snapshot_to(
        &self,
        state: std::fs::File,
        memory: std::fs::File,
    ) -> Result<(), SnapshotError> {
        let vm_state = self.capture()?;
        format::write_to(state, &vm_state)?;
        memory::write_memory_to(memory, &self.memory)?;
        Ok(())
    }

    /// Reads the whole VM state. Its vCPUs are owned by `self`, hence not
    /// in KVM_RUN.
    pub fn capture(&self) -> Result<VmState, SnapshotError> {
        if self.vcpus.is_empty() {
            return Err(SnapshotError::NotPaused);
        }
        virtio::check_saveable(&self.devices)?;
        state::check_capabilities(&self.kvm)?;
        let msrs = state::msr_index_list(&self.kvm)?;
        let xcrs = self.kvm.check_extension(Cap::Xcrs);
        let vcpus = self
            .vcpus
            .iter()
            .map(|v| state::save_vcpu(v.fd(), &msrs, xcrs))
            .collect::<Result<Vec<_>, _>>()?;
        let kvm = state::save_vm(&self.vm)?;
        let legacy = LegacyState {
            serial: self
                .legacy
                .serial
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .state(),
            i8042: self
                .legacy
                .i8042
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .state(),
        };
        Ok(VmState {
            mem_mib: self.mem_mib,
            vcpus,
            kvm: Some(kvm),
            legacy,
            virtio: virtio::save_devices(&self.devices)?,
        })
    }

    /// Builds a VM from a snapshot, ready to [`run`](Vm::run) from where
    /// the saved VM was paused.
    pub fn restore(config: RestoreConfig) -> Result<Vm, SnapshotError> {
        let state = format::read_file(&config.files.state)?;
        let count = state.vcpus.len();
        if count == 0 || count > usize::from(MAX_CPUS) {
            return Err(SnapshotError::VcpuCount(count));
        }
        let kvm_state = state.kvm.as_ref().ok_or(SnapshotError::MissingKvmState)?;
        let seccomp = Arc::new(Filters::new(config.seccomp)?);
        let mem = memory::map_memory_file(&config.files.memory, state.mem_mib)?;
        let kvm = setup::open_kvm()?;
        state::check_capabilities(&kvm)?;
        let vm = setup::create_vm(&kvm)?;
        crate::memory::register_memory(&vm, &mem)?;

        let exit = Arc::new(ExitSignal::new().map_err(SnapshotError::EventFd)?);
        let mut pio = Bus::new();
        let legacy =
            setup::attach_legacy(&vm, &mut pio, &config.console, &exit, Some(&state.legacy))?;

        let mut vcpus = Vec::with_capacity(count);
        for (id, saved) in state.vcpus.iter().enumerate() {
            // `count` is at most MAX_CPUS, so ids fit a u8.
            let vcpu = Vcpu::create(&vm, id as u8)?;
            state::restore_vcpu(vcpu.fd(), saved)?;
            vcpus.push(vcpu);
        }
        state::restore_vm(&vm, kvm_state)?;
        let mut mmio = Bus::new();
        let devices = virtio::restore_devices(&vm, &mut mmio, &mem, &state.virtio, &config)?;

        Ok(Vm {
            vcpus,
            pio: Arc::new(pio),
            mmio: Arc::new(mmio),
            legacy,
            devices,
            event_manager: None,
            exit,
            mem_mib: state.mem_mib,
            seccomp,
            vm,
            kvm,
            memory: mem,
        })
    }
}
