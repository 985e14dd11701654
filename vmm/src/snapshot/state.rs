//! What a snapshot holds, and reading it from / writing it into KVM.
//!
//! Order matters on both sides (learned from Firecracker and
//! cloud-hypervisor, and from the KVM API documentation):
//! - save: KVM_GET_MP_STATE first (it may deliver pending LAPIC events and
//!   so change other state), KVM_GET_VCPU_EVENTS last;
//! - restore: CPUID first (it decides which MSRs and XSAVE features are
//!   valid); SREGS before REGS (mode first); SREGS before LAPIC (SREGS
//!   carries the APIC base); LAPIC before MSRS (the TSC deadline MSR is
//!   only taken in TSC-deadline LVT mode); REGS before VCPU_EVENTS
//!   (KVM_SET_REGS drops pending exceptions, which the events bring back).

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
    CpuId, Msrs, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

use crate::devices::virtio::persist::VirtioDeviceState;

/// Errors reading state from KVM or writing it back.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A KVM ioctl failed (its name says which).
    #[error("{0} failed")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// KVM lacks a capability snapshots need.
    #[error("KVM lacks {0}, which snapshots need")]
    Capability(&'static str),
    /// A KVM list (CPUID, MSRs) cannot be built from the saved entries.
    #[error("cannot build the KVM {0} list from the snapshot")]
    List(&'static str),
    /// KVM refused to restore an MSR the snapshot holds.
    #[error("KVM refused to restore MSR {0:#x}")]
    MsrRejected(u32),
}

/// Everything a snapshot holds but guest memory (which is its own file).
#[derive(Debug, Serialize, Deserialize)]
pub struct VmState {
    /// Guest memory size; the RAM layout follows from it
    /// ([`crate::memory::ram_ranges`]).
    pub mem_mib: u32,
    /// One entry per vCPU, in id order.
    pub vcpus: Vec<VcpuState>,
    /// The in-kernel devices (absent only in unit tests of the format).
    pub kvm: Option<KvmVmState>,
    /// The serial port and the i8042.
    pub legacy: LegacyState,
    /// The virtio devices, in slot order.
    pub virtio: Vec<VirtioDeviceState>,
}

/// The state of one vCPU.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    /// The CPUID the vCPU was given.
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// Runnable, halted, waiting for INIT/SIPI...
    pub mp_state: kvm_mp_state,
    /// General registers.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers, EFER, APIC base.
    pub sregs: kvm_sregs,
    /// FPU, SSE and extended (XSAVE) state, 4 KiB.
    pub xsave: kvm_xsave,
    /// Extended control registers (XCR0), if KVM has KVM_CAP_XCRS.
    pub xcrs: Option<kvm_xcrs>,
    /// Debug registers.
    pub debug_regs: kvm_debugregs,
    /// The local APIC's registers.
    pub lapic: kvm_lapic_state,
    /// Every MSR of KVM_GET_MSR_INDEX_LIST that KVM lets us read and set.
    pub msrs: Vec<kvm_msr_entry>,
    /// Pending exceptions, interrupts, NMIs and SMIs.
    pub events: kvm_vcpu_events,
}

/// The in-kernel interrupt controllers, timer and clock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KvmVmState {
    /// The master 8259 PIC.
    pub pic_master: kvm_irqchip,
    /// The slave 8259 PIC.
    pub pic_slave: kvm_irqchip,
    /// The IOAPIC.
    pub ioapic: kvm_irqchip,
    /// The 8254 PIT.
    pub pit: kvm_pit_state2,
    /// The kvmclock value.
    pub clock: kvm_clock_data,
}

/// The legacy port devices.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LegacyState {
    /// COM1.
    pub serial: SerialState,
    /// The keyboard controller.
    pub i8042: I8042State,
}

/// vm-superio's serial state, with serde (field for field of
/// `vm_superio::serial::SerialState`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct SerialState {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

impl Default for SerialState {
    fn default() -> Self {
        vm_superio::serial::SerialState::default().into()
    }
}

impl From<vm_superio::serial::SerialState> for SerialState {
    fn from(s: vm_superio::serial::SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialState> for vm_superio::serial::SerialState {
    fn from(s: &SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

/// The i8042's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct I8042State {
    /// The controller configuration byte.
    pub ctr: u8,
    /// Bytes waiting for the guest on the data port (at most 16 are kept).
    pub output: Vec<u8>,
    /// The next data-port write is the configuration byte.
    pub pending_ctr_write: bool,
}

fn kvm_err(name: &'static str) -> impl Fn(kvm_ioctls::Error) -> StateError {
    move |e| StateError::Kvm(name, e)
}

/// The MSRs KVM reports as saveable (KVM_GET_MSR_INDEX_LIST).
pub fn msr_index_list(kvm: &Kvm) -> Result<Vec<u32>, StateError> {
    let list = kvm
        .get_msr_index_list()
        .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?;
    Ok(list.as_slice().to_vec())
}

/// Checks the capabilities snapshots rely on.
pub fn check_capabilities(kvm: &Kvm) -> Result<(), StateError> {
    let caps = [
        (Cap::Xsave, "KVM_CAP_XSAVE"),
        (Cap::VcpuEvents, "KVM_CAP_VCPU_EVENTS"),
        (Cap::MpState, "KVM_CAP_MP_STATE"),
        (Cap::AdjustClock, "KVM_CAP_ADJUST_CLOCK"),
        (Cap::Debugregs, "KVM_CAP_DEBUGREGS"),
    ];
    for (cap, name) in caps {
        if !kvm.check_extension(cap) {
            return Err(StateError::Capability(name));
        }
    }
    Ok(())
}

/// Runs `op` (KVM_GET_MSRS or KVM_SET_MSRS) over `entries`: KVM stops at
/// the first MSR it refuses; that one is dropped and the rest retried.
/// Returns the entries processed (with the values KVM filled in) and the
/// indices refused.
fn msr_pass(
    mut entries: Vec<kvm_msr_entry>,
    op: impl Fn(&mut Msrs) -> Result<usize, kvm_ioctls::Error>,
    name: &'static str,
) -> Result<(Vec<kvm_msr_entry>, Vec<u32>), StateError> {
    const CHUNK: usize = 64;
    let mut done = Vec::with_capacity(entries.len());
    let mut refused = Vec::new();
    while !entries.is_empty() {
        let n = entries.len().min(CHUNK);
        let mut msrs = Msrs::from_entries(&entries[..n]).map_err(|_| StateError::List("MSR"))?;
        let ok = op(&mut msrs).map_err(kvm_err(name))?.min(n);
        done.extend_from_slice(&msrs.as_slice()[..ok]);
        if ok < n {
            refused.push(entries[ok].index);
            entries.drain(..=ok);
        } else {
            entries.drain(..n);
        }
    }
    Ok((done, refused))
}

/// Reads the MSRs in `indices` and keeps those KVM also accepts back. The
/// vCPU must be out of KVM_RUN; writing back the values just read leaves
/// it unchanged.
fn save_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, StateError> {
    let wanted = indices
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    let (read, unreadable) = msr_pass(wanted, |m| fd.get_msrs(m), "KVM_GET_MSRS")?;
    let (settable, unsettable) = msr_pass(read, |m| fd.set_msrs(m), "KVM_SET_MSRS")?;
    if !unreadable.is_empty() || !unsettable.is_empty() {
        log::debug!(
            "snapshot skips MSRs KVM cannot read {unreadable:x?} or set back {unsettable:x?}"
        );
    }
    Ok(settable)
}

/// Reads the state of a vCPU that is not in KVM_RUN.
pub fn save_vcpu(fd: &VcpuFd, msr_indices: &[u32], xcrs: bool) -> Result<VcpuState, StateError> {
    let mp_state = fd.get_mp_state().map_err(kvm_err("KVM_GET_MP_STATE"))?;
    let regs = fd.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
    let sregs = fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    let xsave = fd.get_xsave().map_err(kvm_err("KVM_GET_XSAVE"))?;
    let xcrs = match xcrs {
        true => Some(fd.get_xcrs().map_err(kvm_err("KVM_GET_XCRS"))?),
        false => None,
    };
    let debug_regs = fd.get_debug_regs().map_err(kvm_err("KVM_GET_DEBUGREGS"))?;
    let lapic = fd.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
    let msrs = save_msrs(fd, msr_indices)?;
    let cpuid = fd
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_CPUID2"))?
        .as_slice()
        .to_vec();
    let events = fd
        .get_vcpu_events()
        .map_err(kvm_err("KVM_GET_VCPU_EVENTS"))?;
    Ok(VcpuState {
        cpuid,
        mp_state,
        regs,
        sregs,
        xsave,
        xcrs,
        debug_regs,
        lapic,
        msrs,
        events,
    })
}

/// Writes `state` into a freshly created vCPU (order: see the module docs).
pub fn restore_vcpu(fd: &VcpuFd, state: &VcpuState) -> Result<(), StateError> {
    let cpuid = CpuId::from_entries(&state.cpuid).map_err(|_| StateError::List("CPUID"))?;
    fd.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
    fd.set_mp_state(state.mp_state)
        .map_err(kvm_err("KVM_SET_MP_STATE"))?;
    fd.set_sregs(&state.sregs)
        .map_err(kvm_err("KVM_SET_SREGS"))?;
    fd.set_regs(&state.regs).map_err(kvm_err("KVM_SET_REGS"))?;
    // SAFETY: the VM never enables XSAVE2-sized state (no AMX permission
    // is requested), so KVM reads exactly the 4 KiB of `kvm_xsave`.
    unsafe { fd.set_xsave(&state.xsave) }.map_err(kvm_err("KVM_SET_XSAVE"))?;
    if let Some(xcrs) = &state.xcrs {
        fd.set_xcrs(xcrs).map_err(kvm_err("KVM_SET_XCRS"))?;
    }
    fd.set_debug_regs(&state.debug_regs)
        .map_err(kvm_err("KVM_SET_DEBUGREGS"))?;
    fd.set_lapic(&state.lapic)
        .map_err(kvm_err("KVM_SET_LAPIC"))?;
    let (_, refused) = msr_pass(state.msrs.clone(), |m| fd.set_msrs(m), "KVM_SET_MSRS")?;
    if let Some(&index) = refused.first() {
        return Err(StateError::MsrRejected(index));
    }
    fd.set_vcpu_events(&state.events)
        .map_err(kvm_err("KVM_SET_VCPU_EVENTS"))
}

fn get_chip(vm: &VmFd, chip_id: u32) -> Result<kvm_irqchip, StateError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)
        .map_err(kvm_err("KVM_GET_IRQCHIP"))?;
    Ok(chip)
}

/// Reads the in-kernel devices' state (all vCPUs must be out of KVM_RUN).
pub fn save_vm(vm: &VmFd) -> Result<KvmVmState, StateError> {
    let mut clock = vm.get_clock().map_err(kvm_err("KVM_GET_CLOCK"))?;
    // Restore sets the clock to exactly this value: no realtime or TSC
    // adjustment (the flags KVM_SET_CLOCK would act on).
    clock.flags = 0;
    Ok(KvmVmState {
        pic_master: get_chip(vm, KVM_IRQCHIP_PIC_MASTER)?,
        pic_slave: get_chip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
        ioapic: get_chip(vm, KVM_IRQCHIP_IOAPIC)?,
        pit: vm.get_pit2().map_err(kvm_err("KVM_GET_PIT2"))?,
        clock,
    })
}

/// Writes the in-kernel devices' state into a VM made by
/// [`crate::setup::create_vm`].
pub fn restore_vm(vm: &VmFd, state: &KvmVmState) -> Result<(), StateError> {
    vm.set_pit2(&state.pit).map_err(kvm_err("KVM_SET_PIT2"))?;
    vm.set_clock(&state.clock)
        .map_err(kvm_err("KVM_SET_CLOCK"))?;
    for chip in [&state.pic_master, &state.pic_slave, &state.ioapic] {
        vm.set_irqchip(chip).map_err(kvm_err("KVM_SET_IRQCHIP"))?;
    }
    Ok(())
}
