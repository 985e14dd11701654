//! Direct 64-bit Linux boot: loading the vmlinux ELF and the initramfs, and
//! filling the zero page (`boot_params`) with the e820 map and command line.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, E820_MAX_ENTRIES_ZEROPAGE};
use linux_loader::loader::{Elf, KernelLoader};
use vm_memory::{
    Address, ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap,
    GuestMemoryRegion,
};

use super::layout::{
    BASE_MEMORY_END, CMDLINE_MAX_SIZE, CMDLINE_START, HIGH_MEMORY_START, MPTABLE_START,
    ZERO_PAGE_START,
};

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 62;

/// Errors from loading the kernel and initramfs and writing boot data.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file does not exist.
    #[error("kernel image {0}: file not found")]
    KernelNotFound(PathBuf),
    /// The kernel file cannot be opened or read.
    #[error("kernel image {0}: cannot read")]
    KernelRead(PathBuf, #[source] std::io::Error),
    /// The kernel file does not start with the ELF magic.
    #[error("kernel image {0}: not an ELF file (an uncompressed vmlinux is required)")]
    NotElf(PathBuf),
    /// The kernel is an ELF file for another machine or word size.
    #[error("kernel image {0}: not an x86_64 ELF file")]
    WrongArch(PathBuf),
    /// linux-loader rejected the kernel (bad program headers, does not fit...).
    #[error("kernel image {0}: cannot load into guest memory")]
    KernelLoad(PathBuf, #[source] linux_loader::loader::Error),
    /// The initramfs cannot be opened or read.
    #[error("initramfs {0}: cannot read")]
    InitrdRead(PathBuf, #[source] std::io::Error),
    /// The initramfs does not fit between the kernel and the end of low memory.
    #[error("initramfs {0} ({1} bytes) does not fit in guest memory")]
    InitrdTooBig(PathBuf, u64),
    /// Writing boot data into guest memory failed.
    #[error("cannot write {0} into guest memory")]
    GuestWrite(&'static str, #[source] vm_memory::GuestMemoryError),
    /// The command line does not fit its buffer.
    #[error("kernel command line too long")]
    CmdlineTooLong,
}

/// Where the kernel was loaded.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// The 64-bit entry point (physical).
    pub entry: u64,
    /// First byte after the loaded image.
    pub end: u64,
}

/// Where the initramfs was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedInitrd {
    /// Guest physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u32,
}

/// Opens `path` and checks that it is a 64-bit little-endian x86_64 ELF.
pub fn open_kernel(path: &Path) -> Result<File, BootError> {
    let mut file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BootError::KernelNotFound(path.to_path_buf()),
        _ => BootError::KernelRead(path.to_path_buf(), e),
    })?;
    let mut ident = [0u8; 20];
    let mut got = 0;
    while got < ident.len() {
        match file.read(&mut ident[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BootError::KernelRead(path.to_path_buf(), e)),
        }
    }
    check_elf_ident(&ident[..got]).map_err(|f| f(path.to_path_buf()))?;
    Ok(file)
}

/// Validates the first 20 bytes of an ELF file (ident + type + machine).
fn check_elf_ident(ident: &[u8]) -> Result<(), fn(PathBuf) -> BootError> {
    if ident.len() < 20 || &ident[..4] != ELF_MAGIC {
        return Err(BootError::NotElf);
    }
    let machine = u16::from_le_bytes([ident[18], ident[19]]);
    if ident[4] != ELFCLASS64 || ident[5] != ELFDATA2LSB || machine != EM_X86_64 {
        return Err(BootError::WrongArch);
    }
    Ok(())
}

/// Loads the vmlinux at `path` at its physical addresses.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let mut file = open_kernel(path)?;
    let res = Elf::load(mem, None, &mut file, Some(GuestAddress(HIGH_MEMORY_START)))
        .map_err(|e| BootError::KernelLoad(path.to_path_buf(), e))?;
    Ok(LoadedKernel {
        entry: res.kernel_load.raw_value(),
        end: res.kernel_end,
    })
}

/// Loads the initramfs page-aligned at the top of low memory, above the kernel.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
    low_mem_end: u64,
) -> Result<LoadedInitrd, BootError> {
    let err = |e| BootError::InitrdRead(path.to_path_buf(), e);
    let mut file = File::open(path).map_err(err)?;
    let size = file.metadata().map_err(err)?.len();
    let addr = initrd_address(size, kernel_end, low_mem_end)
        .ok_or_else(|| BootError::InitrdTooBig(path.to_path_buf(), size))?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| BootError::GuestWrite("the initramfs", e))?;
    Ok(LoadedInitrd {
        addr,
        size: size as u32,
    })
}

/// Page-aligned address for an initramfs of `size` bytes at the top of low
/// memory, or None if it would overlap the kernel (or exceed 4 GiB).
pub fn initrd_address(size: u64, kernel_end: u64, low_mem_end: u64) -> Option<u64> {
    if size == 0 || size > u64::from(u32::MAX) {
        return None;
    }
    let addr = low_mem_end.checked_sub(size)? & !0xfff;
    let kernel_end = kernel_end.checked_add(0xfff)? & !0xfff;
    (addr >= kernel_end).then_some(addr)
}

/// The e820 map for the RAM ranges `(start, len)` of the guest: base memory
/// up to the MP table, the MP table reserved, then high memory.
pub fn e820_map(ram: &[(u64, u64)]) -> Vec<boot_e820_entry> {
    let entry = |addr, size, r#type| boot_e820_entry { addr, size, r#type };
    let mut map = Vec::new();
    for &(start, len) in ram {
        if start == 0 {
            map.push(entry(0, MPTABLE_START, E820_RAM));
            map.push(entry(
                MPTABLE_START,
                BASE_MEMORY_END - MPTABLE_START,
                E820_RESERVED,
            ));
            if len > HIGH_MEMORY_START {
                map.push(entry(HIGH_MEMORY_START, len - HIGH_MEMORY_START, E820_RAM));
            }
        } else {
            map.push(entry(start, len, E820_RAM));
        }
    }
    map
}

/// `boot_params` as plain bytes for guest memory.
#[repr(transparent)]
#[derive(Clone, Copy, Default)]
struct ZeroPage(boot_params);

// SAFETY: boot_params is a packed C struct of integers and arrays of integers:
// every bit pattern is valid and it has no padding.
unsafe impl ByteValued for ZeroPage {}

/// Writes the command line and the zero page.
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    cmdline: &str,
    initrd: Option<LoadedInitrd>,
) -> Result<(), BootError> {
    if cmdline.len() >= CMDLINE_MAX_SIZE || cmdline.as_bytes().contains(&0) {
        return Err(BootError::CmdlineTooLong);
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(|e| BootError::GuestWrite("the command line", e))?;

    let ram: Vec<(u64, u64)> = mem
        .iter()
        .map(|r| (r.start_addr().raw_value(), r.len()))
        .collect();
    let zp = zero_page(cmdline.len() as u32, initrd, &e820_map(&ram));
    mem.write_obj(zp, GuestAddress(ZERO_PAGE_START))
        .map_err(|e| BootError::GuestWrite("the zero page", e))
}

fn zero_page(cmdline_len: u32, initrd: Option<LoadedInitrd>, e820: &[boot_e820_entry]) -> ZeroPage {
    let mut p = ZeroPage::default();
    let hdr = &mut p.0.hdr;
    hdr.type_of_loader = 0xff;
    hdr.boot_flag = 0xaa55;
    hdr.header = 0x5372_6448; // "HdrS"
    hdr.kernel_alignment = 0x0100_0000;
    hdr.cmd_line_ptr = CMDLINE_START as u32;
    hdr.cmdline_size = cmdline_len;
    if let Some(i) = initrd {
        hdr.ramdisk_image = i.addr as u32;
        hdr.ramdisk_size = i.size;
    }
    let n = e820.len().min(E820_MAX_ENTRIES_ZEROPAGE);
    p.0.e820_table[..n].copy_from_slice(&e820[..n]);
    p.0.e820_entries = n as u8;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_small_guest() {
        let m = e820_map(&[(0, 256 << 20)]);
        let got: Vec<(u64, u64, u32)> = m.iter().map(|e| (e.addr, e.size, e.r#type)).collect();
        assert_eq!(
            got,
            vec![
                (0, 0x9fc00, E820_RAM),
                (0x9fc00, 0x400, E820_RESERVED),
                (0x10_0000, (256 << 20) - 0x10_0000, E820_RAM),
            ]
        );
    }

    #[test]
    fn e820_with_high_memory() {
        let m = e820_map(&[(0, 0xc000_0000), (1 << 32, 1 << 30)]);
        assert_eq!(m.len(), 4);
        assert_eq!(
            (m[3].addr, m[3].size, m[3].r#type),
            (1 << 32, 1 << 30, E820_RAM)
        );
    }

    #[test]
    fn initrd_goes_high_and_never_over_the_kernel() {
        assert_eq!(
            initrd_address(0x1800, 0x200_0000, 0x400_0000),
            Some(0x3ffe000)
        );
        assert_eq!(initrd_address(0x300_0000, 0x200_0000, 0x400_0000), None);
        assert_eq!(initrd_address(0, 0x200_0000, 0x400_0000), None);
        assert_eq!(initrd_address(0x500_0000, 0, 0x400_0000), None);
    }

    #[test]
    fn zero_page_fields() {
        let e = e820_map(&[(0, 64 << 20)]);
        let zp = zero_page(
            42,
            Some(LoadedInitrd {
                addr: 0x300_0000,
                size: 1234,
            }),
            &e,
        );
        let bytes = zp.as_slice();
        assert_eq!(bytes.len(), 4096);
        // Offsets from Documentation/x86/zero-page.rst and boot.rst.
        assert_eq!(bytes[0x1e8], 3, "e820_entries");
        assert_eq!(u16::from_le_bytes([bytes[0x1fe], bytes[0x1ff]]), 0xaa55);
        assert_eq!(&bytes[0x202..0x206], b"HdrS");
        assert_eq!(bytes[0x210], 0xff, "type_of_loader");
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        assert_eq!(u32_at(0x218), 0x300_0000, "ramdisk_image");
        assert_eq!(u32_at(0x21c), 1234, "ramdisk_size");
        assert_eq!(u32_at(0x228), CMDLINE_START as u32, "cmd_line_ptr");
        assert_eq!(u32_at(0x238), 42, "cmdline_size");
        assert_eq!(
            u32_at(0x2d0 + 20 + 16),
            E820_RESERVED,
            "second e820 entry type"
        );
    }

    #[test]
    fn elf_ident_checks() {
        let mut id = [0u8; 20];
        id[..4].copy_from_slice(ELF_MAGIC);
        id[4] = ELFCLASS64;
        id[5] = ELFDATA2LSB;
        id[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        assert!(check_elf_ident(&id).is_ok());
        let p = PathBuf::from("/k");
        let msg = |r: Result<(), fn(PathBuf) -> BootError>| r.unwrap_err()(p.clone()).to_string();
        assert_eq!(
            msg(check_elf_ident(b"MZ\x90\x00")),
            "kernel image /k: not an ELF file (an uncompressed vmlinux is required)"
        );
        id[18] = 183; // aarch64
        assert_eq!(
            msg(check_elf_ident(&id)),
            "kernel image /k: not an x86_64 ELF file"
        );
    }

    #[test]
    fn missing_and_non_elf_kernels() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(
            open_kernel(&missing),
            Err(BootError::KernelNotFound(_))
        ));
        let text = dir.path().join("text");
        std::fs::write(&text, b"hello").unwrap();
        assert!(matches!(open_kernel(&text), Err(BootError::NotElf(_))));
    }
}
