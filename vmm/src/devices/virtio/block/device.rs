//! The virtio-blk device: features offered, config space and the
//! processing of its single request queue.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;

use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use super::request::{self, DiskBackend, DiskInfo, SECTOR_SIZE, SERIAL_LEN};
use crate::devices::virtio::{read_config_bytes, ChainDone, VirtioCommon, VirtioDevice};
use crate::rate_limiter::{RateLimitConfig, RateLimitError, RateLimiter};

/// Virtio device ID of block devices.
pub const BLOCK_DEVICE_ID: u32 = 2;
const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 1] = [QUEUE_SIZE];
const REQUEST_QUEUE: usize = 0;
/// capacity (u64), size_max (u32), seg_max (u32), geometry (u32), blk_size (u32).
const CONFIG_LEN: usize = 24;

/// What [`Block::new`] opens.
#[derive(Debug, Clone)]
pub struct BlockConfig {
    /// Disk image (a regular file or a block device); `None` is an empty
    /// slot: capacity 0, reads and writes fail, GET_ID answers the serial.
    pub path: Option<PathBuf>,
    /// The guest cannot write, whatever the file's permissions.
    pub read_only: bool,
    /// GET_ID answer (`/sys/block/vdX/serial` in the guest), at most 20 bytes.
    pub serial: String,
    /// Limits on the bytes and requests of reads and writes (default:
    /// none).
    pub rate_limit: RateLimitConfig,
}

/// Opens the backing `config` names (or none, for an empty slot) and
/// returns it with its size in bytes.
pub(super) fn open_backing(
    config: &BlockConfig,
) -> Result<(Box<dyn DiskBackend>, u64), BlockError> {
    let Some(path) = &config.path else {
        return Ok((Box::new(EmptySlot), 0));
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(!config.read_only)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => BlockError::NotFound(path.clone()),
            _ => BlockError::Open {
                path: path.clone(),
                source,
            },
        })?;
    let size = file
        .seek(SeekFrom::End(0))
        .map_err(|source| BlockError::Size {
            path: path.clone(),
            source,
        })?;
    Ok((Box::new(file), size))
}

/// The backing of an empty slot: capacity 0, so every read and write is
/// refused before it gets here; flushing has nothing to do.
struct EmptySlot;

impl DiskBackend for EmptySlot {
    fn read_at(&mut self, _buf: &mut [u8], _offset: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn write_at(&mut self, _buf: &[u8], _offset: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Errors from [`Block::new`].
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image file does not exist.
    #[error("disk image {0} does not exist")]
    NotFound(PathBuf),
    /// The image could not be opened.
    #[error("cannot open disk image {path}")]
    Open {
        /// Image path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The image size could not be read.
    #[error("cannot read the size of disk image {path}")]
    Size {
        /// Image path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The serial does not fit in the 20 bytes of GET_ID.
    #[error("disk serial {0:?} is longer than 20 bytes")]
    Serial(String),
    /// Creating the activation eventfd failed.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// Setting up the rate limiter failed.
    #[error("disk rate limiter")]
    RateLimiter(#[source] RateLimitError),
}

/// A virtio-blk device backed by an image file.
pub struct Block {
    disk: Box<dyn DiskBackend>,
    capacity: u64,
    read_only: bool,
    serial: [u8; SERIAL_LEN],
    config: [u8; CONFIG_LEN],
    pub(super) common: VirtioCommon,
    buf: Vec<u8>,
    /// Reads and writes wait here when the configured limits are reached.
    pub(super) limiter: RateLimiter,
}

impl Block {
    /// Opens the image read-write, or read-only when `config.read_only`.
    pub fn new(config: BlockConfig) -> Result<Self, BlockError> {
        if config.serial.len() > SERIAL_LEN {
            return Err(BlockError::Serial(config.serial));
        }
        let (disk, size) = open_backing(&config)?;
        Self::with_backend(disk, size, config)
    }

    pub(super) fn with_backend(
        disk: Box<dyn DiskBackend>,
        size: u64,
        config: BlockConfig,
    ) -> Result<Self, BlockError> {
        let capacity = size - size % SECTOR_SIZE;
        let mut serial = [0u8; SERIAL_LEN];
        serial[..config.serial.len()].copy_from_slice(config.serial.as_bytes());
        let mut cfg = [0u8; CONFIG_LEN];
        cfg[0..8].copy_from_slice(&(capacity / SECTOR_SIZE).to_le_bytes());
        cfg[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
        let mut features = (1u64 << VIRTIO_F_VERSION_1)
            | (1u64 << VIRTIO_RING_F_EVENT_IDX)
            | (1u64 << VIRTIO_BLK_F_SEG_MAX);
        features |= if config.read_only {
            1u64 << VIRTIO_BLK_F_RO
        } else {
            1u64 << VIRTIO_BLK_F_FLUSH
        };
        let common = VirtioCommon::new("virtio-blk", BLOCK_DEVICE_ID, &QUEUE_SIZES, features)
            .map_err(BlockError::EventFd)?;
        let limiter = RateLimiter::new(&config.rate_limit).map_err(BlockError::RateLimiter)?;
        Ok(Self {
            disk,
            capacity,
            read_only: config.read_only,
            serial,
            config: cfg,
            common,
            buf: Vec::new(),
            limiter,
        })
    }

    /// Disk size in bytes (a multiple of 512).
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity
    }

    /// The GET_ID serial.
    pub fn serial(&self) -> String {
        let end = self
            .serial
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(SERIAL_LEN);
        String::from_utf8_lossy(&self.serial[..end]).into_owned()
    }

    /// Whether the device refuses writes.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity / SECTOR_SIZE
    }

    /// Whether the guest driver is running the device.
    pub fn is_active(&self) -> bool {
        self.common.is_activated()
    }

    /// Processes every available request, or those the rate limiter lets
    /// through (the others stay in the queue until its timer fires);
    /// true if the guest must be interrupted.
    pub(super) fn process_queue(&mut self) -> bool {
        if self.limiter.is_blocked() {
            return false;
        }
        let Some(active) = self.common.activated_mut() else {
            return false;
        };
        let info = DiskInfo {
            capacity: self.capacity,
            read_only: self.read_only,
            serial: &self.serial,
        };
        let (disk, buf, limiter) = (&mut self.disk, &mut self.buf, &mut self.limiter);
        let used = active.drain(REQUEST_QUEUE, |mem, chain| {
            if limiter.is_limited() {
                let (bytes, ops) = request::request_cost(mem, &chain);
                if !limiter.try_consume(bytes, ops) {
                    return ChainDone::Unused;
                }
            }
            ChainDone::Used(request::process_chain(
                mem,
                chain,
                disk.as_mut(),
                &info,
                buf,
            ))
        });
        used && active.needs_interrupt(REQUEST_QUEUE)
    }

    /// The rate limiter's timer fired: go on with the waiting requests.
    pub(super) fn handle_rate_limit_timer(&mut self) {
        self.limiter.timer_fired();
        self.handle_queue_event();
    }

    /// Processes the queue and raises the interrupt when needed.
    pub(super) fn handle_queue_event(&mut self) {
        if self.process_queue() {
            if let Some(active) = self.common.activated() {
                active.signal_used(self.common.name());
            }
        }
    }
}

impl VirtioDevice for Block {
    fn common(&self) -> &VirtioCommon {
        &self.common
    }

    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
}

#[cfg(test)]
impl Block {
    pub(super) fn test_activate(
        &mut self,
        mem: crate::devices::virtio::GuestMemory,
        queue: virtio_queue::Queue,
    ) {
        let (ctx, _evts) = crate::devices::virtio::test_utils::activate_context(&mem, vec![queue]);
        self.activate(ctx).expect("activate");
    }
}
