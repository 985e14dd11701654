//! Guest RAM: its layout around the 32-bit MMIO hole, allocation and
//! registration with KVM.
//!
//! RAM is one anonymous private mapping per range, or, for a VM whose
//! memory a vhost-user backend maps too (virtio-fs), a memfd mapped
//! shared, each range at its own offset of the file.

use std::fs::File;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{
    Address, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

use crate::arch::x86_64::layout::{MMIO_HOLE_END, MMIO_HOLE_START};

/// Smallest guest memory size accepted, in MiB.
pub const MIN_MEM_MIB: u32 = 64;
/// Largest guest memory size accepted, in MiB.
pub const MAX_MEM_MIB: u32 = 64 * 1024;

/// Errors from creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The requested size is outside the supported range.
    #[error(
        "guest memory of {0} MiB is not supported (allowed: {MIN_MEM_MIB}..={MAX_MEM_MIB} MiB)"
    )]
    BadSize(u32),
    /// Mapping the guest memory failed.
    #[error("cannot allocate {0} MiB of guest memory")]
    Allocate(u32, #[source] vm_memory::mmap::FromRangesError),
    /// The memfd of shared guest memory cannot be created or sized.
    #[error("cannot create a memfd of {0} MiB for shared guest memory")]
    Memfd(u32, #[source] std::io::Error),
    /// KVM rejected a memory slot.
    #[error("cannot register guest memory slot {0} with KVM")]
    Register(u32, #[source] kvm_ioctls::Error),
}

/// The RAM ranges `(start, length)` of a guest with `mem_mib` MiB: below the
/// MMIO hole first, the rest above 4 GiB.
pub fn ram_ranges(mem_mib: u32) -> Vec<(GuestAddress, usize)> {
    let total = u64::from(mem_mib) << 20;
    let low = total.min(MMIO_HOLE_START);
    let mut ranges = vec![(GuestAddress(0), low as usize)];
    if total > low {
        ranges.push((GuestAddress(MMIO_HOLE_END), (total - low) as usize));
    }
    ranges
}

/// Allocates the guest RAM for `mem_mib` MiB.
pub fn create_guest_memory(mem_mib: u32) -> Result<GuestMemoryMmap, MemoryError> {
    if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&mem_mib) {
        return Err(MemoryError::BadSize(mem_mib));
    }
    GuestMemoryMmap::from_ranges(&ram_ranges(mem_mib))
        .map_err(|e| MemoryError::Allocate(mem_mib, e))
}

/// Allocates the guest RAM for `mem_mib` MiB in a memfd mapped shared, so
/// that another process (a vhost-user backend) can map it too: each
/// region's [`FileOffset`] names the file and where the region starts in it.
pub fn create_shared_guest_memory(mem_mib: u32) -> Result<GuestMemoryMmap, MemoryError> {
    if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&mem_mib) {
        return Err(MemoryError::BadSize(mem_mib));
    }
    let memfd = rustix::fs::memfd_create("husk-guest-ram", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| MemoryError::Memfd(mem_mib, e.into()))?;
    let file = File::from(memfd);
    file.set_len(u64::from(mem_mib) << 20)
        .map_err(|e| MemoryError::Memfd(mem_mib, e))?;
    let mut offset = 0u64;
    let mut ranges = Vec::new();
    for (start, len) in ram_ranges(mem_mib) {
        let file = file
            .try_clone()
            .map_err(|e| MemoryError::Memfd(mem_mib, e))?;
        ranges.push((start, len, Some(FileOffset::new(file, offset))));
        offset += len as u64;
    }
    GuestMemoryMmap::from_ranges_with_files(&ranges).map_err(|e| MemoryError::Allocate(mem_mib, e))
}

/// The end (exclusive) of the RAM region that starts at address 0.
pub fn low_memory_end(mem: &GuestMemoryMmap) -> u64 {
    mem.iter()
        .find(|r| r.start_addr() == GuestAddress(0))
        .map(|r| r.len())
        .unwrap_or(0)
}

/// Registers every region of `mem` as a KVM memory slot.
pub fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let host = region.as_ptr();
        let kvm_region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem` of exactly
        // `memory_size` bytes; the caller keeps `mem` alive as long as the VM.
        unsafe { vm.set_user_memory_region(kvm_region) }
            .map_err(|e| MemoryError::Register(slot, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_low_range() {
        assert_eq!(ram_ranges(256), vec![(GuestAddress(0), 256 << 20)]);
    }

    #[test]
    fn large_guest_is_split_around_the_hole() {
        let r = ram_ranges(4096);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (GuestAddress(0), 0xc000_0000));
        assert_eq!(r[1], (GuestAddress(1 << 32), 1 << 30));
    }

    #[test]
    fn size_limits_are_enforced() {
        assert!(matches!(
            create_guest_memory(1),
            Err(MemoryError::BadSize(1))
        ));
        assert!(create_guest_memory(MAX_MEM_MIB + 1).is_err());
        let mem = create_guest_memory(64).unwrap();
        assert_eq!(low_memory_end(&mem), 64 << 20);
        assert!(create_shared_guest_memory(1).is_err());
    }

    #[test]
    fn shared_memory_is_one_memfd_with_a_region_per_range() {
        use vm_memory::Bytes;
        let mem = create_shared_guest_memory(4096).unwrap();
        let regions: Vec<_> = mem.iter().collect();
        assert_eq!(regions.len(), 2);
        let f0 = regions[0].file_offset().unwrap();
        let f1 = regions[1].file_offset().unwrap();
        assert_eq!((f0.start(), f1.start()), (0, 0xc000_0000));
        assert_eq!(f0.file().metadata().unwrap().len(), 4096 << 20);
        // Both regions are views of the same file.
        mem.write_obj(0xabcd_u32, GuestAddress(1 << 32)).unwrap();
        let mut buf = [0u8; 4];
        std::os::unix::fs::FileExt::read_exact_at(f0.file(), &mut buf, 0xc000_0000).unwrap();
        assert_eq!(u32::from_le_bytes(buf), 0xabcd);
        assert!(create_guest_memory(64)
            .unwrap()
            .iter()
            .all(|r| r.file_offset().is_none()));
    }
}
