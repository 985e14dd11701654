//! Assembly of the guest kernel command line.

use crate::arch::x86_64::layout::CMDLINE_MAX_SIZE;
use crate::host::HostKind;

/// Flags every husk guest gets: serial console, reboot through the i8042
/// (which the VMM reports as a reboot), no PCI, no modules, a quiet i8042
/// probe and a single 8250 port.
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 pci=off nomodule \
8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

/// A virtio-mmio device window as announced to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioSlot {
    /// Guest physical base address of the register window.
    pub base: u64,
    /// Size of the register window.
    pub size: u64,
    /// GSI (IOAPIC pin) of the device interrupt.
    pub irq: u32,
}

impl VirtioMmioSlot {
    /// The `virtio_mmio.device=` parameter for this slot.
    pub fn kernel_param(&self) -> String {
        let size = if self.size.is_multiple_of(1024) {
            format!("{}K", self.size / 1024)
        } else {
            self.size.to_string()
        };
        format!("virtio_mmio.device={size}@{:#x}:{}", self.base, self.irq)
    }
}

/// Errors from [`build_cmdline`].
#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    /// The assembled command line does not fit the kernel's buffer.
    #[error("kernel command line is {0} bytes long; the limit is {max}", max = CMDLINE_MAX_SIZE - 1)]
    TooLong(usize),
    /// The caller's extra arguments contain a byte the kernel cannot take.
    #[error("kernel command line contains a non-printable character")]
    BadCharacter,
}

/// Builds the command line: [`BASE_CMDLINE`], one `virtio_mmio.device=`
/// per slot, the host's kernel quirks and guest environment
/// ([`HostKind::guest_env`], as `NAME=value` words), then `extra` (so the
/// caller can override, and so that an `extra` with `--` cannot push the
/// environment into init's arguments).
pub fn build_cmdline(
    host: HostKind,
    slots: &[VirtioMmioSlot],
    extra: &str,
) -> Result<String, CmdlineError> {
    if !extra.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(CmdlineError::BadCharacter);
    }
    let mut parts: Vec<String> = vec![BASE_CMDLINE.to_string()];
    parts.extend(slots.iter().map(VirtioMmioSlot::kernel_param));
    parts.extend(host.kernel_quirks().iter().map(|q| q.to_string()));
    parts.extend(
        host.guest_env()
            .into_iter()
            .map(|(name, value)| format!("{name}={value}")),
    );
    let extra = extra.trim();
    if !extra.is_empty() {
        parts.push(extra.to_string());
    }
    let line = parts.join(" ");
    if line.len() >= CMDLINE_MAX_SIZE {
        return Err(CmdlineError::TooLong(line.len()));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots() -> Vec<VirtioMmioSlot> {
        vec![
            VirtioMmioSlot {
                base: 0xd000_0000,
                size: 0x1000,
                irq: 5,
            },
            VirtioMmioSlot {
                base: 0xd000_1000,
                size: 0x1000,
                irq: 6,
            },
        ]
    }

    #[test]
    fn hardware_host_gets_no_quirks() {
        let c = build_cmdline(HostKind::HardwareAssisted, &slots(), "root=/dev/vda ro").unwrap();
        assert_eq!(
            c,
            format!(
                "{BASE_CMDLINE} virtio_mmio.device=4K@0xd0000000:5 \
                 virtio_mmio.device=4K@0xd0001000:6 root=/dev/vda ro"
            )
        );
        assert!(!c.contains("noxsave"));
        for name in ["GLIBC_TUNABLES", "OPENSSL_ia32cap", "GODEBUG"] {
            assert!(!c.contains(name), "{name} on a hardware-assisted host");
        }
    }

    #[test]
    fn pvm_host_gets_quirks_before_extra() {
        let c = build_cmdline(HostKind::Pvm, &[], " quiet ").unwrap();
        let quirks = c.find("noxsave").unwrap();
        assert!(c.contains("clearcpuid=141,151,308"));
        assert!(c.contains("mitigations=off"));
        assert!(quirks < c.find("quiet").unwrap());
        assert!(c.ends_with("quiet"));
    }

    #[test]
    fn pvm_host_gets_the_guest_environment_before_extra() {
        let c = build_cmdline(HostKind::Pvm, &slots(), "init=/husk-agent -- arg").unwrap();
        let words: Vec<&str> = c.split(' ').collect();
        let separator = words.iter().position(|w| *w == "--").unwrap();
        for (name, value) in HostKind::Pvm.guest_env() {
            let word = format!("{name}={value}");
            let at = words.iter().position(|w| *w == word).unwrap_or_else(|| {
                panic!("{word} missing from {c}");
            });
            assert!(
                at < separator,
                "{word} must reach the environment, not argv"
            );
        }
        assert_eq!(HostKind::Pvm.guest_env().len(), 3);
        assert!(c.contains(
            " GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512BW,-AVX512CD,\
             -AVX512DQ,-AVX512VL,-FMA,-AVX_Fast_Unaligned_Load "
        ));
        assert!(c.contains(" OPENSSL_ia32cap=~0x1000000000000000:~0x10020 "));
        assert!(c.contains(" GODEBUG=cpu.avx=off,cpu.avx2=off "));
    }

    #[test]
    fn odd_sizes_are_in_bytes() {
        let s = VirtioMmioSlot {
            base: 0x1000,
            size: 0x200 + 1,
            irq: 9,
        };
        assert_eq!(s.kernel_param(), "virtio_mmio.device=513@0x1000:9");
    }

    #[test]
    fn rejects_bad_input() {
        let long = "x".repeat(CMDLINE_MAX_SIZE);
        assert!(matches!(
            build_cmdline(HostKind::HardwareAssisted, &[], &long),
            Err(CmdlineError::TooLong(_))
        ));
        assert!(matches!(
            build_cmdline(HostKind::HardwareAssisted, &[], "a\nb"),
            Err(CmdlineError::BadCharacter)
        ));
    }
}
