//! Detection of the kind of KVM this host offers, and the guest kernel
//! command-line flags each kind needs (see shared/KVM-HOSTS.md).

use std::path::Path;

/// How `/dev/kvm` is implemented on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// Hardware-assisted KVM (Intel VMX or AMD SVM): no quirks needed.
    HardwareAssisted,
    /// PVM-based KVM (`kvm_pvm`, no VMX/SVM): the guest kernel must avoid
    /// instructions the PVM emulator lacks.
    Pvm,
}

/// Guest kernel flags that keep a Linux 6.1 guest alive on a PVM host.
/// `clearcpuid` takes feature bit numbers, which Linux 6.1 accepts even
/// without `CONFIG_X86_FEATURE_NAMES`: 141 = CX16 (4*32+13),
/// 151 = POPCNT (4*32+23), 308 = SMAP (9*32+20); and, for speed only,
/// 297 = ERMS (9*32+9) and 580 = FSRM (18*32+4), so that the kernel's
/// memcpy/memset avoid `rep movsb`/`rep stosb`, which PVM emulates slowly.
/// `husk.no_int3_selftest` is read by husk's guest kernel patch that skips
/// the boot-time int3 self-test
/// (guest-kernel/patches/0001-skip-int3-selftest.patch).
/// `percpu_alloc=page` avoids zeroing a 2 MiB per-CPU chunk at boot
/// (measured: ~0.8 s less per boot on PVM).
const PVM_QUIRKS: &[&str] = &[
    "noxsave",
    "clearcpuid=141,151,308,297,580",
    "mitigations=off",
    "husk.no_int3_selftest",
    "percpu_alloc=page",
];

impl HostKind {
    /// Detects the host kind from `/sys/module/kvm_pvm` and `/proc/cpuinfo`.
    pub fn detect() -> HostKind {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok();
        Self::classify(
            Path::new("/sys/module/kvm_pvm").exists(),
            cpuinfo.as_deref(),
        )
    }

    /// Classifies a host: PVM when the `kvm_pvm` module is loaded or when the
    /// CPU flags lack both `vmx` and `svm`. An unreadable cpuinfo counts as
    /// hardware-assisted (no quirks).
    pub fn classify(kvm_pvm_loaded: bool, cpuinfo: Option<&str>) -> HostKind {
        if kvm_pvm_loaded {
            return HostKind::Pvm;
        }
        let Some(cpuinfo) = cpuinfo else {
            return HostKind::HardwareAssisted;
        };
        let flags = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, f)| f);
        match flags {
            Some(f) if f.split_whitespace().any(|x| x == "vmx" || x == "svm") => {
                HostKind::HardwareAssisted
            }
            Some(_) => HostKind::Pvm,
            None => HostKind::HardwareAssisted,
        }
    }

    /// The kernel command-line flags this host kind requires.
    pub fn kernel_quirks(self) -> &'static [&'static str] {
        match self {
            HostKind::HardwareAssisted => &[],
            HostKind::Pvm => PVM_QUIRKS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMX: &str = "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse2\nbugs\t: x\n";
    const SVM: &str = "processor\t: 0\nflags\t\t: fpu svm sse2\n";
    const NONE: &str = "processor\t: 0\nflags\t\t: fpu sse2 hypervisor\n";

    #[test]
    fn classify_hosts() {
        assert_eq!(HostKind::classify(true, Some(VMX)), HostKind::Pvm);
        assert_eq!(
            HostKind::classify(false, Some(VMX)),
            HostKind::HardwareAssisted
        );
        assert_eq!(
            HostKind::classify(false, Some(SVM)),
            HostKind::HardwareAssisted
        );
        assert_eq!(HostKind::classify(false, Some(NONE)), HostKind::Pvm);
        assert_eq!(HostKind::classify(false, None), HostKind::HardwareAssisted);
        assert_eq!(
            HostKind::classify(false, Some("")),
            HostKind::HardwareAssisted
        );
    }

    #[test]
    fn quirks_only_on_pvm() {
        assert!(HostKind::HardwareAssisted.kernel_quirks().is_empty());
        let q = HostKind::Pvm.kernel_quirks();
        assert!(q.contains(&"noxsave"));
        assert!(q.contains(&"mitigations=off"));
        assert!(q.contains(&"clearcpuid=141,151,308,297,580"));
        assert!(q.contains(&"husk.no_int3_selftest"));
        // Linux parses only one clearcpuid= option: keep a single one.
        assert_eq!(q.iter().filter(|f| f.starts_with("clearcpuid=")).count(), 1);
    }
}
