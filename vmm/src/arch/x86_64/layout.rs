//! Guest physical memory layout.
//!
//! ```text
//! 0x0000_0500  GDT                 0x0000_0520  IDT
//! 0x0000_7000  zero page (boot_params)
//! 0x0000_8ff0  boot stack (grows down)
//! 0x0000_9000  PML4, 0xa000 PDPT, 0xb000 PD (identity map of the first GiB)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  MP table (last KiB of base memory; reserved in the e820 map)
//! 0x0010_0000  high memory; the kernel loads at its ELF physical address
//! 0xc000_0000  32-bit MMIO hole up to 4 GiB (virtio-mmio, IOAPIC, LAPIC)
//! 0x1_0000_0000 memory above the hole, when the guest has more than 3 GiB
//! ```

/// Global descriptor table.
pub const GDT_START: u64 = 0x500;
/// Interrupt descriptor table (empty).
pub const IDT_START: u64 = 0x520;
/// The Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page map level 4 of the boot page tables.
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table of the boot page tables.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory (2 MiB pages) of the boot page tables.
pub const PDE_START: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Maximum command line length the x86 kernel accepts, NUL included.
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the MP table (the last KiB below 640 KiB, scanned by Linux).
pub const MPTABLE_START: u64 = 0x9fc00;
/// End of base memory.
pub const BASE_MEMORY_END: u64 = 0xa0000;
/// Start of high memory; kernels must load at or above it.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO hole (4 GiB).
pub const MMIO_HOLE_END: u64 = 1 << 32;
/// First virtio-mmio device window.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of (and distance between) virtio-mmio device windows.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// IOAPIC MMIO base.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC MMIO base.
pub const LAPIC_START: u64 = 0xfee0_0000;
/// KVM's TSS (3 pages), inside the MMIO hole.
pub const KVM_TSS_START: u64 = 0xfffb_d000;
/// KVM's identity-map page (real-mode emulation), just below the TSS.
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;
/// GSI of the serial port (COM1).
pub const SERIAL_IRQ: u32 = 4;
/// First GSI handed to virtio-mmio devices.
pub const VIRTIO_FIRST_IRQ: u32 = 5;
/// Number of IOAPIC pins KVM emulates.
pub const IOAPIC_PINS: u32 = 24;
