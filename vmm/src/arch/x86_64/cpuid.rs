//! Guest CPUID: KVM's supported CPUID, adjusted per vCPU (APIC IDs,
//! topology with one thread per core and all vCPUs in one package, the
//! hypervisor bit) and with features a guest cannot use cleared.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};

use crate::host::HostKind;

/// Errors from CPUID setup.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// KVM_GET_SUPPORTED_CPUID failed.
    #[error("cannot read the CPUID supported by KVM")]
    GetSupported(#[source] kvm_ioctls::Error),
    /// KVM_SET_CPUID2 failed.
    #[error("cannot set the CPUID of vCPU {0}")]
    Set(u8, #[source] kvm_ioctls::Error),
}

const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// DTES64, MONITOR, DS-CPL, VMX, SMX, EIST, TM2, PDCM: host-only features.
const LEAF1_ECX_CLEAR: u32 =
    (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 15);
/// DS, ACPI (thermal), TM, PBE.
const LEAF1_EDX_CLEAR: u32 = (1 << 21) | (1 << 22) | (1 << 29) | (1 << 31);
const LEAF1_EDX_HTT: u32 = 1 << 28;
const LEAF6_EAX_ARAT: u32 = 1 << 2;
const LEAF6_ECX_EPB: u32 = 1 << 3;
const TOPOLOGY_SMT: u32 = 1;
const TOPOLOGY_CORE: u32 = 2;
/// KVM paravirtual features (leaf 0x4000_0001 EAX) whose hypercalls hang
/// on PVM hosts: with PV_SEND_IPI a 2-vCPU guest hangs in `__send_ipi_mask`
/// while bringing up CPU 1. PV_UNHALT (spinlock kick) and PV_SCHED_YIELD
/// use the same kind of hypercall and are cleared too.
const KVM_FEATURE_PV_UNHALT: u32 = 1 << 7;
const KVM_FEATURE_PV_SEND_IPI: u32 = 1 << 11;
const KVM_FEATURE_PV_SCHED_YIELD: u32 = 1 << 13;
const PVM_CLEARED_KVM_FEATURES: u32 =
    KVM_FEATURE_PV_UNHALT | KVM_FEATURE_PV_SEND_IPI | KVM_FEATURE_PV_SCHED_YIELD;
/// "Auth" of "AuthenticAMD" in leaf 0 EBX.
const AMD_EBX: u32 = 0x6874_7541;

/// The CPUID KVM supports on this host.
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, CpuidError> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(CpuidError::GetSupported)
}

/// What the CPUID of one vCPU depends on.
#[derive(Debug, Clone, Copy)]
pub struct CpuidTarget {
    /// The vCPU's index, also its APIC ID.
    pub id: u8,
    /// Total number of vCPUs.
    pub vcpus: u8,
    /// The host's KVM flavour.
    pub host: HostKind,
}

/// Sets the filtered `supported` CPUID on a vCPU.
pub fn setup_cpuid(vcpu: &VcpuFd, supported: &CpuId, t: CpuidTarget) -> Result<(), CpuidError> {
    let mut cpuid = supported.clone();
    filter(cpuid.as_mut_slice(), t);
    let id = t.id;
    vcpu.set_cpuid2(&cpuid).map_err(|e| CpuidError::Set(id, e))
}

/// Number of APIC ID bits needed for `n` cores.
fn id_bits(n: u8) -> u32 {
    u32::from(n.max(1)).next_power_of_two().trailing_zeros()
}

/// Adjusts `entries` for the vCPU described by `t`.
pub fn filter(entries: &mut [kvm_cpuid_entry2], t: CpuidTarget) {
    let CpuidTarget { id, vcpus, host } = t;
    let amd = entries
        .iter()
        .any(|e| e.function == 0 && e.index == 0 && e.ebx == AMD_EBX);
    let apic = u32::from(id);
    let n = u32::from(vcpus.max(1));
    for e in entries.iter_mut() {
        match e.function {
            0x1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (apic << 24) | (n << 16);
                e.ecx = (e.ecx & !LEAF1_ECX_CLEAR) | LEAF1_ECX_HYPERVISOR;
                e.edx &= !LEAF1_EDX_CLEAR;
                if n > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            0x4 if !amd => {
                let level = (e.eax >> 5) & 0x7;
                e.eax &= !((0x3f << 26) | (0xfff << 14));
                e.eax |= ((n - 1) & 0x3f) << 26;
                if level >= 3 {
                    e.eax |= ((n - 1) & 0xfff) << 14;
                }
            }
            0x6 => {
                e.eax &= LEAF6_EAX_ARAT;
                e.ebx = 0;
                e.ecx &= !LEAF6_ECX_EPB;
                e.edx = 0;
            }
            // No performance monitoring in the guest.
            0xa => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0xb | 0x1f => {
                let (eax, ebx, ecx) = match e.index {
                    0 => (0, 1, (TOPOLOGY_SMT << 8)),
                    1 => (id_bits(vcpus), n, (TOPOLOGY_CORE << 8) | 1),
                    i => (0, 0, i & 0xff),
                };
                e.eax = eax;
                e.ebx = ebx;
                e.ecx = ecx;
                e.edx = apic;
            }
            0x4000_0001 if host == HostKind::Pvm => {
                e.eax &= !PVM_CLEARED_KVM_FEATURES;
            }
            0x8000_0008 if amd => {
                e.ecx = (e.ecx & !0xf0ff) | (n - 1);
            }
            0x8000_001e if amd => {
                e.eax = apic;
                e.ebx = apic & 0xff;
                e.ecx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    fn filter(entries: &mut [kvm_cpuid_entry2], id: u8, vcpus: u8) {
        super::filter(
            entries,
            CpuidTarget {
                id,
                vcpus,
                host: HostKind::HardwareAssisted,
            },
        );
    }

    fn intel() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(0, 0, [0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]),
            entry(
                1,
                0,
                [0x906ea, 0xff08_0800, 0x7ffa_fbff | (1 << 5), 0xbfeb_fbff],
            ),
            entry(4, 0, [0x1c00_4121, 0, 0, 0]),
            entry(4, 3, [0x1c00_4163, 0, 0, 0]),
            entry(6, 0, [0x77, 2, 9, 0]),
            entry(0xa, 0, [0x0760_3004, 0, 0, 0x603]),
            entry(0xb, 0, [1, 2, 0x100, 7]),
            entry(0xb, 1, [4, 8, 0x201, 7]),
            entry(0xb, 2, [0, 0, 2, 7]),
        ]
    }

    #[test]
    fn leaf1_apic_id_and_hypervisor() {
        let mut c = intel();
        filter(&mut c, 3, 4);
        let l1 = c[1];
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert!(l1.ecx & LEAF1_ECX_HYPERVISOR != 0);
        assert_eq!(l1.ecx & (1 << 5), 0, "VMX cleared");
        assert_eq!(l1.ecx & (1 << 3), 0, "MONITOR cleared");
        assert!(l1.edx & LEAF1_EDX_HTT != 0);
    }

    #[test]
    fn single_vcpu_has_no_htt() {
        let mut c = intel();
        filter(&mut c, 0, 1);
        assert_eq!(c[1].edx & LEAF1_EDX_HTT, 0);
        assert_eq!(c[7].eax, 0, "no bits for a single core");
        assert_eq!(c[7].ebx, 1);
    }

    #[test]
    fn topology_leaves() {
        let mut c = intel();
        filter(&mut c, 2, 3);
        let (smt, core, other) = (c[6], c[7], c[8]);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 2));
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 3, 0x201, 2));
        assert_eq!((other.eax, other.ebx, other.ecx, other.edx), (0, 0, 2, 2));
        assert_eq!(c[2].eax >> 26, 2, "cores per package - 1");
        assert_eq!((c[3].eax >> 14) & 0xfff, 2, "L3 shared by all");
        assert_eq!((c[2].eax >> 14) & 0xfff, 0, "L1 private");
        assert_eq!(c[4].eax, LEAF6_EAX_ARAT);
        assert_eq!(c[4].ecx & LEAF6_ECX_EPB, 0);
        assert_eq!((c[5].eax, c[5].edx), (0, 0), "no PMU");
    }

    #[test]
    fn pv_hypercall_features_cleared_only_on_pvm() {
        let kvm_leaf = entry(0x4000_0001, 0, [0x01ff_ffff, 0, 0, 0]);
        let mut hw = vec![kvm_leaf];
        filter(&mut hw, 0, 2);
        assert_eq!(hw[0].eax, 0x01ff_ffff);
        let mut pvm = vec![kvm_leaf];
        let t = CpuidTarget {
            id: 0,
            vcpus: 2,
            host: HostKind::Pvm,
        };
        super::filter(&mut pvm, t);
        assert_eq!(pvm[0].eax & KVM_FEATURE_PV_SEND_IPI, 0);
        assert_eq!(pvm[0].eax & KVM_FEATURE_PV_SCHED_YIELD, 0);
        assert_eq!(pvm[0].eax & KVM_FEATURE_PV_UNHALT, 0);
        assert_eq!(
            pvm[0].eax | PVM_CLEARED_KVM_FEATURES,
            0x01ff_ffff,
            "others kept"
        );
    }

    #[test]
    fn id_bits_values() {
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(3), 2);
        assert_eq!(id_bits(32), 5);
    }
}
