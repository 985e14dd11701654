//! Model-specific registers set on every vCPU before boot.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

/// Errors from MSR setup.
#[derive(Debug, thiserror::Error)]
pub enum MsrError {
    /// Building the KVM MSR list failed.
    #[error("cannot build the MSR list")]
    Build,
    /// KVM_SET_MSRS failed outright.
    #[error("cannot set the boot MSRs")]
    Set(#[source] kvm_ioctls::Error),
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;

const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default memory type write-back.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

/// The `(index, value)` pairs set on every vCPU.
pub fn boot_msrs() -> Vec<(u32, u64)> {
    vec![
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
}

/// Sets the boot MSRs. KVM stops at the first MSR it rejects; the rest is
/// logged and skipped (some KVM flavours lack a few of them), not fatal.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), MsrError> {
    let mut list = boot_msrs();
    while !list.is_empty() {
        let entries: Vec<kvm_msr_entry> = list
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries).map_err(|_| MsrError::Build)?;
        let set = vcpu.set_msrs(&msrs).map_err(MsrError::Set)?;
        if set >= list.len() {
            break;
        }
        log::warn!("KVM rejected MSR {:#x}; skipping it", list[set].0);
        list.drain(..=set);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_list_is_unique_and_sane() {
        let l = boot_msrs();
        let mut idx: Vec<u32> = l.iter().map(|m| m.0).collect();
        idx.sort();
        idx.dedup();
        assert_eq!(idx.len(), l.len());
        assert!(l.contains(&(MSR_MTRR_DEF_TYPE, 0x806)));
        assert!(l.contains(&(MSR_IA32_MISC_ENABLE, 1)));
    }
}
