//! The Intel MultiProcessor Specification 1.4 table that lets a kernel
//! without ACPI find the vCPUs (LAPIC IDs 0..n), the IOAPIC and the ISA
//! interrupt routing (ISA IRQ i -> IOAPIC pin i, matching KVM's default
//! GSI routing).

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{BASE_MEMORY_END, IOAPIC_PINS, IOAPIC_START, LAPIC_START, MPTABLE_START};

/// Largest number of vCPUs the table (and the VMM) supports.
pub const MAX_CPUS: u8 = 32;

const MPF_SIZE: usize = 16;
const MPC_HEADER_SIZE: usize = 44;
#[cfg(test)]
const MPC_CPU_SIZE: usize = 20;
#[cfg(test)]
const MPC_SMALL_ENTRY_SIZE: usize = 8;

const MP_PROCESSOR: u8 = 0;
const MP_BUS: u8 = 1;
const MP_IOAPIC: u8 = 2;
const MP_INTSRC: u8 = 3;
const MP_LINTSRC: u8 = 4;

const MP_IRQ_INT: u8 = 0;
const MP_IRQ_NMI: u8 = 1;
const MP_IRQ_EXTINT: u8 = 3;

const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
/// Family 6 stepping 0, and the FPU + APIC feature flags.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

/// Errors from building or writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    /// The vCPU count is 0 or above [`MAX_CPUS`].
    #[error("the MP table supports 1..={MAX_CPUS} vCPUs, not {0}")]
    BadCpuCount(u8),
    /// Guest memory does not cover the table's location.
    #[error("cannot write the MP table into guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// The IOAPIC's ID: right after the last LAPIC ID.
pub fn ioapic_id(cpus: u8) -> u8 {
    cpus + 1
}

fn entries(cpus: u8) -> (Vec<u8>, u16) {
    let mut t = Vec::new();
    let mut count = 0u16;
    for id in 0..cpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BOOTPROCESSOR } else { 0 };
        t.extend_from_slice(&[MP_PROCESSOR, id, APIC_VERSION, flags]);
        t.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        t.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        t.extend_from_slice(&[0; 8]);
        count += 1;
    }
    t.extend_from_slice(&[MP_BUS, 0]);
    t.extend_from_slice(b"ISA   ");
    count += 1;
    let ioapic = ioapic_id(cpus);
    t.extend_from_slice(&[MP_IOAPIC, ioapic, IOAPIC_VERSION, 1]);
    t.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    count += 1;
    for pin in 0..IOAPIC_PINS as u8 {
        // irqtype, irqflag (conforming) u16, source bus, source irq, dest apic, dest pin
        t.extend_from_slice(&[MP_INTSRC, MP_IRQ_INT, 0, 0, 0, pin, ioapic, pin]);
        count += 1;
    }
    // LINT0 of the BSP is ExtINT (the PIC), LINT1 of every LAPIC is NMI.
    t.extend_from_slice(&[MP_LINTSRC, MP_IRQ_EXTINT, 0, 0, 0, 0, 0, 0]);
    t.extend_from_slice(&[MP_LINTSRC, MP_IRQ_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;
    (t, count)
}

/// The floating pointer structure followed by the configuration table, as
/// they must appear at `base`.
pub fn build(cpus: u8, base: u64) -> Result<Vec<u8>, MpTableError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(MpTableError::BadCpuCount(cpus));
    }
    let table_addr = base + MPF_SIZE as u64;
    let mut mpf = [0u8; MPF_SIZE];
    mpf[..4].copy_from_slice(b"_MP_");
    mpf[4..8].copy_from_slice(&(table_addr as u32).to_le_bytes());
    mpf[8] = 1; // length in 16-byte units
    mpf[9] = 4; // specification revision 1.4
    mpf[10] = checksum(&mpf);

    let (body, count) = entries(cpus);
    let length = (MPC_HEADER_SIZE + body.len()) as u16;
    let mut hdr = [0u8; MPC_HEADER_SIZE];
    hdr[..4].copy_from_slice(b"PCMP");
    hdr[4..6].copy_from_slice(&length.to_le_bytes());
    hdr[6] = 4;
    hdr[8..16].copy_from_slice(b"HUSK    ");
    hdr[16..28].copy_from_slice(b"MICROVM     ");
    hdr[34..36].copy_from_slice(&count.to_le_bytes());
    hdr[36..40].copy_from_slice(&(LAPIC_START as u32).to_le_bytes());
    let mut table = Vec::with_capacity(length as usize);
    table.extend_from_slice(&hdr);
    table.extend_from_slice(&body);
    table[7] = checksum(&table);

    let mut out = mpf.to_vec();
    out.extend_from_slice(&table);
    Ok(out)
}

/// Writes the MP table for `cpus` vCPUs at [`MPTABLE_START`].
pub fn setup_mptable(mem: &GuestMemoryMmap, cpus: u8) -> Result<(), MpTableError> {
    let bytes = build(cpus, MPTABLE_START)?;
    debug_assert!(MPTABLE_START + bytes.len() as u64 <= BASE_MEMORY_END);
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(MpTableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_layout() {
        for cpus in [1u8, 2, 32] {
            let b = build(cpus, MPTABLE_START).unwrap();
            assert_eq!(&b[..4], b"_MP_");
            assert_eq!(sum(&b[..16]), 0, "floating pointer checksum");
            let ptr = u32::from_le_bytes(b[4..8].try_into().unwrap());
            assert_eq!(u64::from(ptr), MPTABLE_START + 16);
            let t = &b[16..];
            assert_eq!(&t[..4], b"PCMP");
            let len = u16::from_le_bytes([t[4], t[5]]) as usize;
            assert_eq!(len, t.len());
            assert_eq!(sum(t), 0, "table checksum");
            let count = u16::from_le_bytes([t[34], t[35]]) as usize;
            assert_eq!(count, cpus as usize + 1 + 1 + IOAPIC_PINS as usize + 2);
            assert_eq!(
                len,
                MPC_HEADER_SIZE
                    + cpus as usize * MPC_CPU_SIZE
                    + (count - cpus as usize) * MPC_SMALL_ENTRY_SIZE
            );
            assert!(MPTABLE_START + b.len() as u64 <= BASE_MEMORY_END);
        }
    }

    #[test]
    fn cpu_entries() {
        let b = build(3, MPTABLE_START).unwrap();
        let cpus = &b[16 + MPC_HEADER_SIZE..];
        for id in 0..3usize {
            let e = &cpus[id * MPC_CPU_SIZE..];
            assert_eq!(e[0], MP_PROCESSOR);
            assert_eq!(e[1] as usize, id);
            let bsp = e[3] & CPU_BOOTPROCESSOR != 0;
            assert_eq!(bsp, id == 0);
            assert!(e[3] & CPU_ENABLED != 0);
        }
        let ioapic = &cpus[3 * MPC_CPU_SIZE + 8..];
        assert_eq!(ioapic[0], MP_IOAPIC);
        assert_eq!(ioapic[1], ioapic_id(3));
        assert_eq!(
            u32::from_le_bytes(ioapic[4..8].try_into().unwrap()),
            0xfec0_0000
        );
    }

    #[test]
    fn bad_counts() {
        assert!(build(0, MPTABLE_START).is_err());
        assert!(build(33, MPTABLE_START).is_err());
    }
}
