//! The guest memory file: the RAM regions one after the other, in guest
//! address order; all-zero 64 KiB blocks are left as holes (sparse file).
//! A restore maps it privately (copy-on-write), so every VM restored from
//! one file shares its pages until it writes them.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;

use vm_memory::io::WriteVolatile;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MemoryRegionAddress,
};

use crate::memory::{ram_ranges, MAX_MEM_MIB, MIN_MEM_MIB};

/// Errors writing or mapping a guest memory file.
#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    /// Reading or writing the file failed.
    #[error("guest memory file: I/O error")]
    Io(#[source] std::io::Error),
    /// The file's size does not match the snapshot's memory size.
    #[error("guest memory file has {found} bytes, the snapshot needs {expected}")]
    Size { expected: u64, found: u64 },
    /// The snapshot's memory size is out of range.
    #[error("snapshot memory size {0} MiB is not supported")]
    BadMemSize(u32),
    /// Guest memory cannot be read.
    #[error("cannot read guest memory")]
    Guest(#[source] vm_memory::GuestMemoryError),
    /// The private mapping failed.
    #[error("cannot map the guest memory file")]
    Map(#[source] vm_memory::mmap::MmapRegionError),
    /// The regions do not form a valid guest memory.
    #[error("cannot build guest memory from the file")]
    Regions(#[source] vm_memory::GuestRegionCollectionError),
}

const BLOCK: usize = 64 << 10;

/// Writes every region of `mem` to `path` (created or truncated).
pub fn write_memory_file(path: &Path, mem: &GuestMemoryMmap) -> Result<(), MemoryFileError> {
    write_memory_to(File::create(path).map_err(MemoryFileError::Io)?, mem)
}

/// Writes every region of `mem` to `file` (empty, opened for writing; zero
/// blocks are left as holes) and syncs it.
pub fn write_memory_to(mut file: File, mem: &GuestMemoryMmap) -> Result<(), MemoryFileError> {
    let mut total = 0u64;
    let mut zero = vec![0u8; BLOCK];
    for region in mem.iter() {
        let len = region.len() as usize;
        let mut off = 0usize;
        while off < len {
            let n = BLOCK.min(len - off);
            let slice = region
                .get_slice(MemoryRegionAddress(off as u64), n)
                .map_err(MemoryFileError::Guest)?;
            slice.copy_to(&mut zero[..n]);
            if zero[..n].iter().all(|&b| b == 0) {
                file.seek(SeekFrom::Current(n as i64))
                    .map_err(MemoryFileError::Io)?;
            } else {
                file.write_all_volatile(&slice)
                    .map_err(|e| MemoryFileError::Io(std::io::Error::other(e)))?;
            }
            off += n;
        }
        total += len as u64;
    }
    file.set_len(total).map_err(MemoryFileError::Io)?;
    file.sync_all().map_err(MemoryFileError::Io)
}

/// Maps the memory file at `path` privately as the RAM of a `mem_mib` MiB
/// guest.
pub fn map_memory_file(path: &Path, mem_mib: u32) -> Result<GuestMemoryMmap, MemoryFileError> {
    if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&mem_mib) {
        return Err(MemoryFileError::BadMemSize(mem_mib));
    }
    let file = File::open(path).map_err(MemoryFileError::Io)?;
    let found = file.metadata().map_err(MemoryFileError::Io)?.len();
    let expected = u64::from(mem_mib) << 20;
    if found != expected {
        return Err(MemoryFileError::Size { expected, found });
    }
    let mut regions = Vec::new();
    let mut offset = 0u64;
    for (start, len) in ram_ranges(mem_mib) {
        let file = file.try_clone().map_err(MemoryFileError::Io)?;
        let mapping = MmapRegionBuilder::new(len)
            .with_file_offset(FileOffset::new(file, offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(MemoryFileError::Map)?;
        // `new` fails only if the region wraps the address space, which
        // ram_ranges never produces.
        let region = GuestRegionMmap::new(mapping, GuestAddress(start.0))
            .ok_or(MemoryFileError::BadMemSize(mem_mib))?;
        regions.push(region);
        offset += len as u64;
    }
    GuestMemoryMmap::from_regions(regions).map_err(MemoryFileError::Regions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn round_trip_is_private() {
        let mem = crate::memory::create_guest_memory(64).unwrap();
        mem.write_obj(0xdead_beef_u64, GuestAddress(0x1234_5678 & 0x3ff_fff8))
            .unwrap();
        mem.write_obj(7u8, GuestAddress((64 << 20) - 1)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mem");
        write_memory_file(&path, &mem).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 << 20);
        let a = map_memory_file(&path, 64).unwrap();
        let b = map_memory_file(&path, 64).unwrap();
        let addr = GuestAddress(0x1234_5678 & 0x3ff_fff8);
        assert_eq!(a.read_obj::<u64>(addr).unwrap(), 0xdead_beef);
        assert_eq!(a.read_obj::<u8>(GuestAddress((64 << 20) - 1)).unwrap(), 7);
        a.write_obj(1u64, addr).unwrap();
        assert_eq!(
            b.read_obj::<u64>(addr).unwrap(),
            0xdead_beef,
            "copy-on-write"
        );
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk[addr.0 as usize], 0xef);
    }

    #[test]
    fn wrong_sizes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mem");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        assert!(matches!(
            map_memory_file(&path, 64),
            Err(MemoryFileError::Size { found: 4096, .. })
        ));
        assert!(matches!(
            map_memory_file(&path, 1),
            Err(MemoryFileError::BadMemSize(1))
        ));
    }
}
