//! Detection of the kind of KVM this host offers, and what each kind needs
//! on the guest kernel command line: kernel flags, and environment
//! variables for every guest process (see docs/HOSTS.md).

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
    // The guest reads the raw host TSC here (no TSC offset survives a
    // restore), so a TSC clocksource would jump by the template's age on
    // every warm start; kvm-clock is set back exactly by KVM_SET_CLOCK.
    "clocksource=kvm-clock",
];

/// Environment for every guest process on PVM hosts. These hosts do not
/// keep AVX register state across guest processes, so two processes using
/// AVX can corrupt each other's data; libraries that pick AVX code at run
/// time are told not to:
/// - glibc (string functions, math): its `glibc.cpu.hwcaps` tunable masks
///   AVX, AVX2, AVX-512, FMA and the AVX-based memcpy selection;
/// - OpenSSL: `OPENSSL_ia32cap` clears AVX (bit 60 of the first word:
///   CPUID.1:ECX bit 28) and AVX2 and AVX512F (bits 5 and 16 of the
///   second word, CPUID.7:EBX);
/// - Go's runtime and standard library: `GODEBUG` cpu options.
///
/// Programs compiled for AVX, and runtimes without such a knob, stay
/// exposed (docs/HOSTS.md).
const PVM_GUEST_ENV: &[(&str, &str)] = &[
    (
        "GLIBC_TUNABLES",
        "glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512BW,-AVX512CD,-AVX512DQ,-AVX512VL,-FMA,\
-AVX_Fast_Unaligned_Load",
    ),
    ("OPENSSL_ia32cap", "~0x1000000000000000:~0x10020"),
    ("GODEBUG", "cpu.avx=off,cpu.avx2=off"),
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

    /// Environment variables every guest process needs on this host kind,
    /// as (name, value). They go on the kernel command line as `NAME=value`
    /// words, which the kernel hands to PID 1's environment (the agent
    /// passes them on to every process it starts).
    pub fn guest_env(self) -> Vec<(&'static str, String)> {
        match self {
            HostKind::HardwareAssisted => Vec::new(),
            HostKind::Pvm => PVM_GUEST_ENV
                .iter()
                .map(|&(name, value)| (name, value.to_string()))
                .collect(),
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

    #[test]
    fn guest_env_only_on_pvm() {
        assert!(HostKind::HardwareAssisted.guest_env().is_empty());
        let env = HostKind::Pvm.guest_env();
        let names: Vec<&str> = env.iter().map(|(name, _)| *name).collect();
        // The agent forwards exactly the protocol's list to every process.
        assert_eq!(names, husk_protocol::HOST_QUIRK_ENV);
        for (name, value) in &env {
            // The kernel hands `KEY=value` to PID 1 only for a KEY without
            // a dot, and splits the command line at spaces.
            assert!(!name.contains('.') && !name.contains('='), "{name}");
            assert!(!value.is_empty() && !value.contains(' '), "{name}={value}");
            assert!(value.bytes().all(|b| b.is_ascii_graphic()), "{value}");
        }
        let value = |name: &str| env.iter().find(|(n, _)| *n == name).unwrap().1.clone();
        let tunables = value("GLIBC_TUNABLES");
        assert!(tunables.starts_with("glibc.cpu.hwcaps=-AVX,-AVX2,"));
        assert!(tunables.ends_with(",-FMA,-AVX_Fast_Unaligned_Load"));
        assert_eq!(value("OPENSSL_ia32cap"), "~0x1000000000000000:~0x10020");
        assert_eq!(value("GODEBUG"), "cpu.avx=off,cpu.avx2=off");
    }
}
