//! One virtio-blk request: parse a descriptor chain (16-byte header,
//! data, status byte) and execute it against a [`DiskBackend`]. Pure: no
//! epoll, no queue bookkeeping; unit-tested with mock queues.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::{DescriptorChain, Reader, Writer};

use crate::devices::virtio::GuestMemory;

/// Bytes per sector, the unit of request offsets and of the capacity.
pub const SECTOR_SIZE: u64 = 512;
/// Length of the serial returned by GET_ID.
pub const SERIAL_LEN: usize = VIRTIO_BLK_ID_BYTES as usize;
const HEADER_LEN: usize = 16;
/// Data moves between the disk and guest memory through a bounce buffer of
/// at most this size, whatever the request length.
const CHUNK: usize = 128 * 1024;

/// Positional I/O on the image behind a block device.
pub trait DiskBackend: Send {
    /// Fills `buf` from the image at byte `offset`.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// Writes all of `buf` to the image at byte `offset`.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()>;
    /// Makes written data durable.
    fn flush(&mut self) -> std::io::Result<()>;
}

impl DiskBackend for File {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.read_exact_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.write_all_at(buf, offset)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
}

/// What a request may do to the disk.
pub struct DiskInfo<'a> {
    /// Image size in bytes, a multiple of [`SECTOR_SIZE`].
    pub capacity: u64,
    /// Writes and flushes fail with IOERR.
    pub read_only: bool,
    /// GET_ID answer, NUL-padded.
    pub serial: &'a [u8; SERIAL_LEN],
}

/// Executes the request in `chain` and writes its status byte. Returns the
/// used length (bytes written into the chain). A chain without a writable
/// status byte, or outside guest memory, is dropped with length 0.
pub fn process_chain(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    disk: &mut dyn DiskBackend,
    info: &DiskInfo,
    buf: &mut Vec<u8>,
) -> u32 {
    let Ok(mut reader) = chain.clone().reader(mem) else {
        log::debug!("virtio-blk: request chain outside guest memory");
        return 0;
    };
    let Ok(mut writer) = chain.writer(mem) else {
        log::debug!("virtio-blk: request chain outside guest memory");
        return 0;
    };
    let writable = writer.available_bytes();
    if writable == 0 {
        log::debug!("virtio-blk: request without a status byte dropped");
        return 0;
    }
    let Ok(mut status_writer) = writer.split_at(writable - 1) else {
        return 0;
    };
    let (status, written) = match read_header(&mut reader) {
        Some((kind, sector)) => execute(kind, sector, &mut reader, &mut writer, disk, info, buf),
        None => {
            log::debug!("virtio-blk: request header shorter than {HEADER_LEN} bytes");
            (VIRTIO_BLK_S_IOERR, 0)
        }
    };
    if status_writer.write_all(&[status as u8]).is_err() {
        return 0;
    }
    // `written` is at most the chain's writable length, itself below 2^32.
    u32::try_from(written + 1).unwrap_or(u32::MAX)
}

/// What the request in `chain` costs a rate limiter: (data bytes, 1)
/// for a read or a write, (0, 0) for anything else (flush, GET_ID, and
/// malformed chains, which fail without touching the disk).
pub fn request_cost(mem: &GuestMemory, chain: &DescriptorChain<&GuestMemory>) -> (u64, u64) {
    let Ok(mut reader) = chain.clone().reader(mem) else {
        return (0, 0);
    };
    let Some((kind, _)) = read_header(&mut reader) else {
        return (0, 0);
    };
    let bytes = match kind {
        // The last writable byte is the status.
        VIRTIO_BLK_T_IN => match chain.clone().writer(mem) {
            Ok(writer) => writer.available_bytes().saturating_sub(1),
            Err(_) => return (0, 0),
        },
        VIRTIO_BLK_T_OUT => reader.available_bytes(),
        _ => return (0, 0),
    };
    (u64::try_from(bytes).unwrap_or(u64::MAX), 1)
}

fn read_header(reader: &mut Reader) -> Option<(u32, u64)> {
    let mut hdr = [0u8; HEADER_LEN];
    reader.read_exact(&mut hdr).ok()?;
    let kind = u32::from_le_bytes(hdr[0..4].try_into().ok()?);
    let sector = u64::from_le_bytes(hdr[8..16].try_into().ok()?);
    Some((kind, sector))
}

/// Runs one parsed request; returns (status, bytes written to the guest).
fn execute(
    kind: u32,
    sector: u64,
    reader: &mut Reader,
    writer: &mut Writer,
    disk: &mut dyn DiskBackend,
    info: &DiskInfo,
    buf: &mut Vec<u8>,
) -> (u32, usize) {
    match kind {
        VIRTIO_BLK_T_IN => {
            let len = writer.available_bytes();
            match byte_range(sector, len, info.capacity) {
                Some(offset) => read_to_guest(offset, len, writer, disk, buf),
                None => (VIRTIO_BLK_S_IOERR, 0),
            }
        }
        VIRTIO_BLK_T_OUT => {
            let len = reader.available_bytes();
            match byte_range(sector, len, info.capacity) {
                Some(_) if info.read_only => (VIRTIO_BLK_S_IOERR, 0),
                Some(offset) => (write_from_guest(offset, len, reader, disk, buf), 0),
                None => (VIRTIO_BLK_S_IOERR, 0),
            }
        }
        VIRTIO_BLK_T_FLUSH if info.read_only => (VIRTIO_BLK_S_IOERR, 0),
        VIRTIO_BLK_T_FLUSH => match disk.flush() {
            Ok(()) => (VIRTIO_BLK_S_OK, 0),
            Err(e) => {
                crate::log_limited!(log::Level::Warn, "virtio-blk: flush: {e}");
                (VIRTIO_BLK_S_IOERR, 0)
            }
        },
        VIRTIO_BLK_T_GET_ID => {
            let n = writer.available_bytes().min(SERIAL_LEN);
            match writer.write_all(&info.serial[..n]) {
                Ok(()) => (VIRTIO_BLK_S_OK, n),
                Err(_) => (VIRTIO_BLK_S_IOERR, 0),
            }
        }
        _ => (VIRTIO_BLK_S_UNSUPP, 0),
    }
}

/// The byte offset of `sector` if `len` bytes from there fit in the disk and
/// `len` is a whole number of sectors.
fn byte_range(sector: u64, len: usize, capacity: u64) -> Option<u64> {
    let len = u64::try_from(len).ok()?;
    if len % SECTOR_SIZE != 0 {
        return None;
    }
    let offset = sector.checked_mul(SECTOR_SIZE)?;
    let end = offset.checked_add(len)?;
    (end <= capacity).then_some(offset)
}

fn chunk_buf(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    let n = len.min(CHUNK);
    if buf.len() < n {
        buf.resize(n, 0);
    }
    &mut buf[..n]
}

fn read_to_guest(
    offset: u64,
    len: usize,
    writer: &mut Writer,
    disk: &mut dyn DiskBackend,
    buf: &mut Vec<u8>,
) -> (u32, usize) {
    let mut done = 0usize;
    while done < len {
        let chunk = chunk_buf(buf, len - done);
        if let Err(e) = disk.read_at(chunk, offset + done as u64) {
            crate::log_limited!(
                log::Level::Warn,
                "virtio-blk: read at {}: {e}",
                offset + done as u64
            );
            return (VIRTIO_BLK_S_IOERR, done);
        }
        if writer.write_all(chunk).is_err() {
            return (VIRTIO_BLK_S_IOERR, done);
        }
        done += chunk.len();
    }
    (VIRTIO_BLK_S_OK, done)
}

fn write_from_guest(
    offset: u64,
    len: usize,
    reader: &mut Reader,
    disk: &mut dyn DiskBackend,
    buf: &mut Vec<u8>,
) -> u32 {
    let mut done = 0usize;
    while done < len {
        let chunk = chunk_buf(buf, len - done);
        if reader.read_exact(chunk).is_err() {
            return VIRTIO_BLK_S_IOERR;
        }
        if let Err(e) = disk.write_at(chunk, offset + done as u64) {
            crate::log_limited!(
                log::Level::Warn,
                "virtio-blk: write at {}: {e}",
                offset + done as u64
            );
            return VIRTIO_BLK_S_IOERR;
        }
        done += chunk.len();
    }
    VIRTIO_BLK_S_OK
}
