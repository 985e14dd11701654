//! vCPU creation, configuration and the per-vCPU thread running KVM_RUN.
//!
//! Stopping: whoever ends the VM raises the [`ExitSignal`]; vCPU threads
//! check it before every KVM_RUN, and [`kick`] interrupts a thread that is
//! inside KVM_RUN with a real-time signal whose handler also sets
//! `immediate_exit`, so a signal landing just before KVM_RUN is not lost.

use std::cell::Cell;
use std::ptr;
use std::sync::{Arc, Once};
use std::thread::JoinHandle;

use kvm_bindings::{
    kvm_run, CpuId, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use libc::{c_int, c_void, siginfo_t};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::arch::x86_64::cpuid::{setup_cpuid, CpuidError, CpuidTarget};
use crate::arch::x86_64::msr::{setup_msrs, MsrError};
use crate::arch::x86_64::regs::{setup_lint, setup_regs, RegsError};
use crate::bus::Bus;
use crate::exit::{ExitReason, ExitSignal};
use crate::host::HostKind;
use crate::seccomp::{Filters, SeccompError, ThreadKind};

/// Errors from vCPU setup and from running a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// KVM_CREATE_VCPU failed.
    #[error("cannot create vCPU {0}")]
    Create(u8, #[source] kvm_ioctls::Error),
    /// CPUID setup failed.
    #[error(transparent)]
    Cpuid(#[from] CpuidError),
    /// MSR setup failed.
    #[error(transparent)]
    Msr(#[from] MsrError),
    /// Register or LAPIC setup failed.
    #[error(transparent)]
    Regs(#[from] RegsError),
    /// The kick signal handler cannot be installed.
    #[error("cannot install the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
    /// The vCPU thread cannot be started.
    #[error("cannot start the thread of vCPU {0}")]
    Spawn(u8, #[source] std::io::Error),
    /// KVM_RUN returned an error.
    #[error("KVM_RUN failed on vCPU {0}")]
    Run(u8, #[source] kvm_ioctls::Error),
    /// KVM could not run the guest's code (on PVM hosts: an instruction its
    /// emulator lacks; see docs/HOSTS.md).
    #[error("KVM internal error on vCPU {vcpu}: suberror {suberror}, guest RIP {rip:#x}")]
    Internal { vcpu: u8, suberror: u32, rip: u64 },
    /// KVM failed to enter the guest.
    #[error("vCPU {vcpu} failed to enter the guest: hardware reason {reason:#x}")]
    FailEntry { vcpu: u8, reason: u64 },
    /// The guest reported a crash (KVM_SYSTEM_EVENT_CRASH).
    #[error("guest crashed (reported by vCPU {0})")]
    GuestCrash(u8),
    /// The vCPU thread cannot install its seccomp filter.
    #[error("vCPU {0}: seccomp")]
    Seccomp(u8, #[source] SeccompError),
    /// An exit the VMM does not handle.
    #[error("unexpected exit on vCPU {0}: {1}")]
    UnexpectedExit(u8, String),
}

/// What every vCPU thread of a VM shares.
pub struct Shared {
    /// The port I/O bus.
    pub pio: Arc<Bus>,
    /// The MMIO bus.
    pub mmio: Arc<Bus>,
    /// The VM's exit signal.
    pub exit: Arc<ExitSignal>,
    /// The filters the thread installs as it starts.
    pub seccomp: Arc<Filters>,
}

/// A created and configured vCPU, not yet running.
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
}

/// What a vCPU needs to boot.
pub struct VcpuBootInfo<'a> {
    /// The CPUID KVM supports (filtered per vCPU).
    pub cpuid: &'a CpuId,
    /// Total number of vCPUs.
    pub vcpus: u8,
    /// The kernel's 64-bit entry point.
    pub entry: u64,
    /// The host's KVM flavour (some CPUID bits depend on it).
    pub host: HostKind,
}

impl Vcpu {
    /// Creates vCPU `id` and sets its CPUID, MSRs, registers and LAPIC.
    pub fn new(vm: &VmFd, id: u8, boot: &VcpuBootInfo) -> Result<Self, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(|e| VcpuError::Create(id, e))?;
        let target = CpuidTarget {
            id,
            vcpus: boot.vcpus,
            host: boot.host,
        };
        setup_cpuid(&fd, boot.cpuid, target)?;
        setup_msrs(&fd)?;
        setup_regs(&fd, boot.entry)?;
        setup_lint(&fd)?;
        Ok(Self { id, fd })
    }

    /// Creates vCPU `id` with nothing set (a snapshot restore sets it all).
    pub(crate) fn create(vm: &VmFd, id: u8) -> Result<Self, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(|e| VcpuError::Create(id, e))?;
        Ok(Self { id, fd })
    }

    /// The KVM vCPU (for reading and writing its state while not running).
    pub(crate) fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Starts the thread `vcpu<id>` running this vCPU until `shared.exit`
    /// is raised; the thread hands the vCPU back when it ends.
    pub fn spawn(self, shared: Shared) -> Result<JoinHandle<Vcpu>, VcpuError> {
        let id = self.id;
        std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || self.run(&shared))
            .map_err(|e| VcpuError::Spawn(id, e))
    }

    fn run(mut self, shared: &Shared) -> Vcpu {
        let Shared {
            pio,
            mmio,
            exit,
            seccomp,
        } = shared;
        let run_ptr: *mut kvm_run = self.fd.get_kvm_run();
        let _ = KVM_RUN.try_with(|p| p.set(run_ptr));
        if let Err(e) = seccomp.install(ThreadKind::Vcpu) {
            exit.fail(VcpuError::Seccomp(self.id, e));
        }
        while !exit.is_stopping() {
            exit.park_while_frozen();
            if exit.is_stopping() {
                break;
            }
            match self.run_once(pio, mmio) {
                Ok(None) => {}
                Ok(Some(reason)) => exit.request(reason),
                Err(e) => exit.fail(e),
            }
        }
        let _ = KVM_RUN.try_with(|p| p.set(ptr::null_mut()));
        self.complete_pending_io();
        match self.fd.get_regs() {
            Ok(r) => log::debug!("vcpu{} stopped at RIP {:#x}", self.id, r.rip),
            Err(_) => log::debug!("vcpu{} stopped", self.id),
        }
        self
    }

    /// An I/O or MMIO exit is finished inside KVM on the next KVM_RUN (the
    /// read value lands in the register, RIP moves on). Entering KVM_RUN
    /// with `immediate_exit` set does exactly that and returns at once, so
    /// the state read afterwards (a snapshot) is consistent.
    fn complete_pending_io(&mut self) {
        self.fd.set_kvm_immediate_exit(1);
        match self.fd.run() {
            Err(e) if e.errno() == libc::EINTR => {}
            Err(e) => log::debug!("vcpu{}: completing pending I/O: {e}", self.id),
            Ok(exit) => log::debug!("vcpu{}: unexpected exit {exit:?}", self.id),
        }
        self.fd.set_kvm_immediate_exit(0);
    }

    /// Runs the guest until one exit; returns the VM exit it asks for.
    fn run_once(&mut self, pio: &Bus, mmio: &Bus) -> Result<Option<ExitReason>, VcpuError> {
        let id = self.id;
        let exit = match self.fd.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
                return Ok(None);
            }
            Err(e) => return Err(VcpuError::Run(id, e)),
        };
        match exit {
            VcpuExit::IoIn(port, data) => {
                if !pio.read(u64::from(port), data) {
                    log::debug!("vcpu{id}: read from unhandled port {port:#x}");
                    data.fill(0xff);
                }
            }
            VcpuExit::IoOut(port, data) => {
                if !pio.write(u64::from(port), data) {
                    log::debug!("vcpu{id}: write to unhandled port {port:#x}");
                }
            }
            VcpuExit::MmioRead(addr, data) => {
                if !mmio.read(addr, data) {
                    log::debug!("vcpu{id}: read from unhandled MMIO {addr:#x}");
                    data.fill(0);
                }
            }
            VcpuExit::MmioWrite(addr, data) => {
                if !mmio.write(addr, data) {
                    log::debug!("vcpu{id}: write to unhandled MMIO {addr:#x}");
                }
            }
            VcpuExit::Hlt => {
                log::info!("vcpu{id} halted");
                return Ok(Some(ExitReason::PowerOff));
            }
            VcpuExit::Shutdown => {
                log::info!("vcpu{id}: triple fault (KVM_EXIT_SHUTDOWN), treated as reboot");
                return Ok(Some(ExitReason::Reboot));
            }
            VcpuExit::SystemEvent(kind, _) => return system_event(id, kind),
            VcpuExit::FailEntry(reason, _) => {
                return Err(VcpuError::FailEntry { vcpu: id, reason })
            }
            VcpuExit::InternalError => return Err(self.internal_error()),
            VcpuExit::IrqWindowOpen | VcpuExit::Intr => {}
            other => return Err(VcpuError::UnexpectedExit(id, format!("{other:?}"))),
        }
        Ok(None)
    }

    /// Logs the vCPU state after KVM_EXIT_INTERNAL_ERROR and builds the error.
    fn internal_error(&mut self) -> VcpuError {
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal`
        // is the active member of the union.
        let internal = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal };
        let ndata = (internal.ndata as usize).min(internal.data.len());
        let regs = self.fd.get_regs();
        let sregs = self.fd.get_sregs();
        let rip = regs.as_ref().map(|r| r.rip).unwrap_or(0);
        log::error!(
            "vcpu{}: KVM_EXIT_INTERNAL_ERROR suberror {} data {:x?}",
            self.id,
            internal.suberror,
            &internal.data[..ndata]
        );
        log::error!("vcpu{} regs: {regs:x?}", self.id);
        log::error!("vcpu{} sregs: {sregs:x?}", self.id);
        VcpuError::Internal {
            vcpu: self.id,
            suberror: internal.suberror,
            rip,
        }
    }
}

fn system_event(id: u8, kind: u32) -> Result<Option<ExitReason>, VcpuError> {
    match kind {
        KVM_SYSTEM_EVENT_SHUTDOWN => Ok(Some(ExitReason::PowerOff)),
        KVM_SYSTEM_EVENT_RESET => Ok(Some(ExitReason::Reboot)),
        KVM_SYSTEM_EVENT_CRASH => Err(VcpuError::GuestCrash(id)),
        other => {
            crate::log_limited!(log::Level::Warn, "vcpu{id}: ignoring system event {other}");
            Ok(None)
        }
    }
}

thread_local! {
    /// The kvm_run of the vCPU this thread runs (null on other threads).
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(ptr::null_mut()) };
}

extern "C" fn handle_kick(_: c_int, _: *mut siginfo_t, _: *mut c_void) {
    let _ = KVM_RUN.try_with(|p| {
        let run = p.get();
        if !run.is_null() {
            // SAFETY: the pointer is this thread's live kvm_run mapping (it is
            // cleared before the VcpuFd is dropped); a volatile byte store is
            // async-signal-safe.
            unsafe { ptr::write_volatile(ptr::addr_of_mut!((*run).immediate_exit), 1) };
        }
    });
}

/// The signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> c_int {
    SIGRTMIN() + 1
}

/// Installs the kick signal handler (once per process).
pub fn register_kick_handler() -> Result<(), VcpuError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), handle_kick).map_err(VcpuError::Signal);
    });
    result
}

/// Interrupts KVM_RUN on the thread behind `handle`.
pub fn kick<T>(handle: &JoinHandle<T>) {
    if handle.is_finished() {
        return;
    }
    if let Err(e) = handle.kill(kick_signal()) {
        log::debug!("cannot signal a vCPU thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_events() {
        assert!(matches!(system_event(0, 1), Ok(Some(ExitReason::PowerOff))));
        assert!(matches!(system_event(0, 2), Ok(Some(ExitReason::Reboot))));
        assert!(matches!(system_event(1, 3), Err(VcpuError::GuestCrash(1))));
        assert!(matches!(system_event(0, 99), Ok(None)));
    }

    #[test]
    fn internal_error_message() {
        let e = VcpuError::Internal {
            vcpu: 1,
            suberror: 1,
            rip: 0xffff_ffff_8100_0000,
        };
        assert_eq!(
            e.to_string(),
            "KVM internal error on vCPU 1: suberror 1, guest RIP 0xffffffff81000000"
        );
    }
}
