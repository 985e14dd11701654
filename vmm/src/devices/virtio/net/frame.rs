//! Pure processing of virtio-net descriptor chains: reading a frame the
//! guest transmits (header checks, checksum completion) and writing a frame
//! into the guest's receive buffers (mergeable or not). No epoll, no
//! backend; unit-tested with mock queues.

use std::io::{Read, Write};

use virtio_bindings::virtio_net::{VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE};
use virtio_queue::{DescriptorChain, Queue, QueueT};

use super::backend::{MAX_FRAME_LEN, MIN_FRAME_LEN};
use crate::devices::virtio::GuestMemory;

/// Length of `struct virtio_net_hdr_mrg_rxbuf`, the header of every frame
/// with VIRTIO_F_VERSION_1.
pub const HDR_LEN: usize = 12;

/// Why a transmitted chain carried no usable frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The chain is not in guest memory.
    #[error("chain outside guest memory")]
    Memory,
    /// Header plus frame shorter than a header and an Ethernet header.
    #[error("{0}-byte chain is too short")]
    Short(usize),
    /// The frame is larger than any Ethernet frame.
    #[error("{0}-byte frame is too large")]
    Oversized(usize),
    /// Segmentation was requested, which the device never offered.
    #[error("GSO type {0} requested but not offered")]
    Gso(u8),
    /// The checksum position lies outside the frame.
    #[error("checksum at {start}+{offset} outside a {len}-byte frame")]
    Checksum {
        /// csum_start.
        start: usize,
        /// csum_offset.
        offset: usize,
        /// Frame length.
        len: usize,
    },
}

/// Reads the frame of one tx chain into `frame` (header removed, checksum
/// completed when the guest asked for it).
pub fn read_tx_frame(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    frame: &mut Vec<u8>,
) -> Result<(), TxError> {
    let mut reader = chain.reader(mem).map_err(|_| TxError::Memory)?;
    let total = reader.available_bytes();
    if total < HDR_LEN + MIN_FRAME_LEN {
        return Err(TxError::Short(total));
    }
    let len = total - HDR_LEN;
    if len > MAX_FRAME_LEN {
        return Err(TxError::Oversized(len));
    }
    let mut hdr = [0u8; HDR_LEN];
    reader.read_exact(&mut hdr).map_err(|_| TxError::Memory)?;
    if u32::from(hdr[1]) != VIRTIO_NET_HDR_GSO_NONE {
        return Err(TxError::Gso(hdr[1]));
    }
    frame.clear();
    frame.resize(len, 0);
    reader.read_exact(frame).map_err(|_| TxError::Memory)?;
    if u32::from(hdr[0]) & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
        let start = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]));
        let offset = usize::from(u16::from_le_bytes([hdr[8], hdr[9]]));
        complete_checksum(frame, start, offset)?;
    }
    Ok(())
}

/// Stores the Internet checksum of `frame[start..]` (which already holds the
/// pseudo-header sum in the checksum field) at `start + offset`.
pub fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), TxError> {
    let len = frame.len();
    let bad = TxError::Checksum { start, offset, len };
    let at = start.checked_add(offset).ok_or(bad.clone())?;
    if start >= len || at.checked_add(2).is_none_or(|end| end > len) {
        return Err(bad);
    }
    let sum = !fold(ones_sum(&frame[start..]));
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// The 32-bit ones' complement sum of big-endian 16-bit words (odd length:
/// padded with a zero byte).
pub fn ones_sum(data: &[u8]) -> u32 {
    let mut sum: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff_ffff {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
}

/// Folds a 32-bit sum to 16 bits.
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// What became of a frame offered to the rx queue.
#[derive(Debug, PartialEq, Eq)]
pub enum RxOutcome {
    /// Written into this many buffers.
    Delivered(u16),
    /// Not enough buffers are available now; nothing was consumed.
    NoBuffers,
    /// The frame cannot be delivered (too large for the buffers, or the
    /// guest's chains are invalid); `consumed` buffers were returned empty.
    Dropped {
        /// Buffers handed back with length 0.
        consumed: u16,
    },
}

/// Writes `frame` with a header (`flags`, and `num_buffers` when
/// `mergeable`) into the next available rx buffers. Without `mergeable`
/// the frame must fit one buffer.
pub fn deliver_rx(
    mem: &GuestMemory,
    queue: &mut Queue,
    frame: &[u8],
    mergeable: bool,
    flags: u8,
) -> RxOutcome {
    let need = HDR_LEN + frame.len();
    let start = queue.next_avail();
    let max_chains = if mergeable { queue.size().max(1) } else { 1 };
    let mut chains = Vec::new();
    let mut capacity = 0usize;
    while capacity < need {
        if chains.len() >= usize::from(max_chains) {
            // Even every buffer the ring can hold is not enough: keep the
            // buffers, drop the frame.
            queue.set_next_avail(start);
            return RxOutcome::Dropped { consumed: 0 };
        }
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            queue.set_next_avail(start);
            return RxOutcome::NoBuffers;
        };
        let head = chain.head_index();
        let room = match chain.clone().writer(mem) {
            Ok(w) if chains.is_empty() && w.available_bytes() < HDR_LEN => None,
            Ok(w) => Some(w.available_bytes()),
            Err(_) => None,
        };
        let Some(room) = room else {
            // A chain the device cannot write: hand it and everything
            // collected so far back empty, and drop the frame.
            let mut heads: Vec<u16> = chains.iter().map(|c: &Chain| c.head_index()).collect();
            heads.push(head);
            return drop_chains(mem, queue, &heads);
        };
        capacity = capacity.saturating_add(room);
        chains.push(chain);
    }
    let heads: Vec<u16> = chains.iter().map(|c| c.head_index()).collect();
    let num_buffers = if mergeable { chains.len() as u16 } else { 1 };
    match write_chains(mem, chains, frame, num_buffers, flags) {
        Some(lens) => {
            for (head, len) in heads.iter().zip(lens) {
                if let Err(e) = queue.add_used(mem, *head, len) {
                    log::debug!("virtio-net: add_used: {e}");
                }
            }
            RxOutcome::Delivered(num_buffers)
        }
        None => drop_chains(mem, queue, &heads),
    }
}

type Chain<'a> = DescriptorChain<&'a GuestMemory>;

fn drop_chains(mem: &GuestMemory, queue: &mut Queue, heads: &[u16]) -> RxOutcome {
    for &head in heads {
        if let Err(e) = queue.add_used(mem, head, 0) {
            log::debug!("virtio-net: add_used: {e}");
        }
    }
    RxOutcome::Dropped {
        consumed: heads.len() as u16,
    }
}

/// Writes the header and the frame across `chains`; returns the length
/// written into each, or `None` if they turned out too small or invalid.
fn write_chains(
    mem: &GuestMemory,
    chains: Vec<Chain>,
    frame: &[u8],
    num_buffers: u16,
    flags: u8,
) -> Option<Vec<u32>> {
    let mut hdr = [0u8; HDR_LEN];
    hdr[0] = flags;
    hdr[10..12].copy_from_slice(&num_buffers.to_le_bytes());
    let mut parts: [&[u8]; 2] = [&hdr, frame];
    let mut lens = Vec::with_capacity(chains.len());
    for chain in chains {
        let mut writer = chain.writer(mem).ok()?;
        let mut written = 0usize;
        for part in parts.iter_mut() {
            let n = writer.available_bytes().min(part.len());
            writer.write_all(&part[..n]).ok()?;
            *part = &part[n..];
            written += n;
        }
        lens.push(u32::try_from(written).ok()?);
    }
    parts.iter().all(|p| p.is_empty()).then_some(lens)
}
