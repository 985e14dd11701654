//! virtio-vsock packets: the 44-byte little-endian header, parsing and
//! validation of guest (tx) packets, and writing host (rx) packets into
//! guest buffers. Pure functions; every guest value is checked.

use std::io::{Read, Write};

use virtio_queue::{Reader, Writer};

/// Size of the packet header.
pub const HDR_SIZE: usize = 44;
/// CID of the host.
pub const HOST_CID: u64 = 2;
/// Largest payload accepted from or sent to the guest.
pub const MAX_PKT_DATA: u32 = 64 * 1024;

/// The only socket type supported.
pub const TYPE_STREAM: u16 = 1;

/// Connection request.
pub const OP_REQUEST: u16 = 1;
/// Connection accepted.
pub const OP_RESPONSE: u16 = 2;
/// Connection reset.
pub const OP_RST: u16 = 3;
/// Half or full shutdown (flags below).
pub const OP_SHUTDOWN: u16 = 4;
/// Data.
pub const OP_RW: u16 = 5;
/// The sender's receive credit changed.
pub const OP_CREDIT_UPDATE: u16 = 6;
/// The sender asks for a credit update.
pub const OP_CREDIT_REQUEST: u16 = 7;

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// A vsock packet header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub type_: u16,
    /// Operation.
    pub op: u16,
    /// Operation flags.
    pub flags: u32,
    /// Sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer.
    pub fwd_cnt: u32,
}

impl Header {
    /// Decodes a header.
    pub fn from_bytes(b: &[u8; HDR_SIZE]) -> Self {
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let u32_at = |o: usize| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[o..o + 4]);
            u32::from_le_bytes(a)
        };
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The RST answering a packet with this header (ports and CIDs swapped).
    pub fn rst_reply(&self) -> Self {
        Self {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            type_: TYPE_STREAM,
            op: OP_RST,
            ..Self::default()
        }
    }
}

/// Why a guest packet was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    /// The chain holds fewer than 44 readable bytes.
    #[error("header truncated to {0} bytes")]
    Truncated(usize),
    /// `len` exceeds the payload limit.
    #[error("payload length {0} above the limit")]
    TooLong(u32),
    /// `len` exceeds the bytes present in the chain.
    #[error("payload length {len} but only {avail} bytes in the buffer")]
    LenMismatch {
        /// Declared length.
        len: u32,
        /// Bytes present.
        avail: usize,
    },
    /// The source CID is not the guest's.
    #[error("source CID {0} is not the guest's")]
    SrcCid(u64),
    /// The destination is not the host.
    #[error("destination CID {0} is not the host")]
    DstCid(u64),
    /// Not a stream packet.
    #[error("socket type {0} not supported")]
    Type(u16),
    /// Unknown operation.
    #[error("unknown operation {0}")]
    Op(u16),
}

impl PacketError {
    /// Whether the sender should get an RST (the header was readable and
    /// correctly addressed, but unusable).
    pub fn wants_rst(&self) -> bool {
        matches!(self, PacketError::Type(_) | PacketError::Op(_))
    }
}

/// A validated guest packet.
#[derive(Debug)]
pub struct TxPacket {
    /// Its header.
    pub hdr: Header,
    /// Its payload (`hdr.len` bytes; empty unless `op == OP_RW`).
    pub data: Vec<u8>,
}

/// Parses and validates one guest packet. On error, the header is returned
/// too when it could be read, so that the caller can answer with an RST.
pub fn parse_tx(
    reader: &mut Reader,
    guest_cid: u64,
) -> Result<TxPacket, (PacketError, Option<Header>)> {
    let mut raw = [0u8; HDR_SIZE];
    let avail = reader.available_bytes();
    if avail < HDR_SIZE || reader.read_exact(&mut raw).is_err() {
        return Err((PacketError::Truncated(avail.min(HDR_SIZE)), None));
    }
    let hdr = Header::from_bytes(&raw);
    validate(&hdr, guest_cid, reader.available_bytes()).map_err(|e| (e, Some(hdr)))?;
    let mut data = Vec::new();
    if hdr.op == OP_RW && hdr.len > 0 {
        data.resize(hdr.len as usize, 0);
        reader
            .read_exact(&mut data)
            .map_err(|_| (PacketError::Truncated(HDR_SIZE), Some(hdr)))?;
    }
    Ok(TxPacket { hdr, data })
}

/// Checks a guest header; `payload_avail` is the number of bytes after it.
pub fn validate(hdr: &Header, guest_cid: u64, payload_avail: usize) -> Result<(), PacketError> {
    if hdr.src_cid != guest_cid {
        return Err(PacketError::SrcCid(hdr.src_cid));
    }
    if hdr.dst_cid != HOST_CID {
        return Err(PacketError::DstCid(hdr.dst_cid));
    }
    if hdr.len > MAX_PKT_DATA {
        return Err(PacketError::TooLong(hdr.len));
    }
    if hdr.len as usize > payload_avail {
        return Err(PacketError::LenMismatch {
            len: hdr.len,
            avail: payload_avail,
        });
    }
    if hdr.type_ != TYPE_STREAM {
        return Err(PacketError::Type(hdr.type_));
    }
    if !(OP_REQUEST..=OP_CREDIT_REQUEST).contains(&hdr.op) {
        return Err(PacketError::Op(hdr.op));
    }
    Ok(())
}

/// Writes a header and `data` into an rx buffer; returns the bytes written,
/// or None if the buffer is too small.
pub fn write_rx(writer: &mut Writer, hdr: &Header, data: &[u8]) -> Option<u32> {
    if writer.available_bytes() < HDR_SIZE + data.len() {
        return None;
    }
    writer.write_all(&hdr.to_bytes()).ok()?;
    writer.write_all(data).ok()?;
    u32::try_from(HDR_SIZE + data.len()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{guest_memory, write_mem, Driver};
    use virtio_queue::QueueOwnedT;

    const CID: u64 = 3;

    fn hdr(op: u16, len: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port: 1000,
            dst_port: 1024,
            len,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 0,
        }
    }

    /// Puts `bytes` in guest memory as one (or two, split at `split`)
    /// readable descriptors and parses them.
    fn parse(
        bytes: &[u8],
        split: Option<usize>,
    ) -> Result<TxPacket, (PacketError, Option<Header>)> {
        let mem = guest_memory(0x10_0000);
        let mut drv = Driver::new(&mem, 0, 16);
        write_mem(&mem, 0x8000, bytes);
        let len = bytes.len() as u32;
        match split {
            None => drv.push(&[(0x8000, len, false)]),
            Some(s) => drv.push(&[
                (0x8000, s as u32, false),
                (0x8000 + s as u64, len - s as u32, false),
            ]),
        };
        let mut q = drv.queue();
        let chain = q.iter(&mem).unwrap().next().unwrap();
        let mut reader = chain.reader(&mem).unwrap();
        parse_tx(&mut reader, CID)
    }

    #[test]
    fn header_round_trip() {
        let h = Header {
            flags: 3,
            fwd_cnt: 0xdead_beef,
            ..hdr(OP_SHUTDOWN, 0)
        };
        assert_eq!(Header::from_bytes(&h.to_bytes()), h);
        let b = h.to_bytes();
        assert_eq!(b[0], 3, "little-endian src_cid first");
        assert_eq!(&b[30..32], &OP_SHUTDOWN.to_le_bytes());
    }

    #[test]
    fn parses_rw_packet_in_one_or_two_descriptors() {
        let mut bytes = hdr(OP_RW, 5).to_bytes().to_vec();
        bytes.extend_from_slice(b"hello");
        for split in [None, Some(HDR_SIZE), Some(10), Some(46)] {
            let p = parse(&bytes, split).unwrap();
            assert_eq!(p.hdr.op, OP_RW);
            assert_eq!(p.data, b"hello");
        }
    }

    #[test]
    fn truncated_header() {
        let bytes = hdr(OP_RW, 0).to_bytes();
        let err = parse(&bytes[..30], None).unwrap_err();
        assert_eq!(err, (PacketError::Truncated(30), None));
    }

    #[test]
    fn len_larger_than_buffer_or_limit() {
        let mut bytes = hdr(OP_RW, 100).to_bytes().to_vec();
        bytes.extend_from_slice(&[0; 10]);
        assert!(matches!(
            parse(&bytes, None).unwrap_err().0,
            PacketError::LenMismatch {
                len: 100,
                avail: 10
            }
        ));
        let bytes = hdr(OP_RW, u32::MAX).to_bytes();
        assert_eq!(
            parse(&bytes, None).unwrap_err().0,
            PacketError::TooLong(u32::MAX)
        );
    }

    #[test]
    fn wrong_cids_are_dropped_without_rst() {
        let mut h = hdr(OP_REQUEST, 0);
        h.src_cid = 7;
        let (e, _) = parse(&h.to_bytes(), None).unwrap_err();
        assert_eq!(e, PacketError::SrcCid(7));
        assert!(!e.wants_rst());
        let mut h = hdr(OP_REQUEST, 0);
        h.dst_cid = 3;
        assert_eq!(
            parse(&h.to_bytes(), None).unwrap_err().0,
            PacketError::DstCid(3)
        );
    }

    #[test]
    fn unknown_op_and_type_want_rst() {
        let (e, h) = parse(&hdr(99, 0).to_bytes(), None).unwrap_err();
        assert_eq!(e, PacketError::Op(99));
        assert!(e.wants_rst());
        let rst = h.unwrap().rst_reply();
        assert_eq!((rst.src_cid, rst.dst_cid, rst.op), (HOST_CID, CID, OP_RST));
        assert_eq!((rst.src_port, rst.dst_port), (1024, 1000));
        let mut h = hdr(OP_REQUEST, 0);
        h.type_ = 2;
        let (e, _) = parse(&h.to_bytes(), None).unwrap_err();
        assert_eq!(e, PacketError::Type(2));
        assert!(e.wants_rst());
        assert_eq!(
            parse(&hdr(0, 0).to_bytes(), None).unwrap_err().0,
            PacketError::Op(0)
        );
    }

    #[test]
    fn control_packet_payload_is_ignored() {
        let mut bytes = hdr(OP_CREDIT_UPDATE, 4).to_bytes().to_vec();
        bytes.extend_from_slice(b"junk");
        let p = parse(&bytes, None).unwrap();
        assert!(p.data.is_empty());
    }
}
