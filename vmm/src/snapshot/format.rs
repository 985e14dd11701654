//! The snapshot state file: a fixed header (magic, format version, body
//! length, SHA-256 of the body) followed by the postcard-encoded
//! [`VmState`]. Every way a file can be wrong is a typed [`FormatError`].

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::state::VmState;

/// The first bytes of every husk snapshot state file.
pub const MAGIC: [u8; 8] = *b"HUSKSNAP";
/// The format this build writes and the only one it reads. Bump it on any
/// change to [`VmState`] or to the header.
pub const FORMAT_VERSION: u32 = 2;
/// Header length: magic, version (u32 LE), body length (u64 LE), SHA-256.
pub const HEADER_LEN: usize = 8 + 4 + 8 + 32;
/// Largest body accepted (a few vCPUs take a few tens of KiB).
pub const MAX_BODY_LEN: u64 = 16 << 20;

/// Errors reading or writing a snapshot state file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file cannot be read or written.
    #[error("snapshot state file: I/O error")]
    Io(#[source] std::io::Error),
    /// The file does not start with the husk snapshot magic.
    #[error("not a husk snapshot (bad magic)")]
    BadMagic,
    /// The file was written by a husk with another snapshot format.
    #[error("snapshot format version {found} is not supported (this husk reads version {FORMAT_VERSION})")]
    Version { found: u32 },
    /// The file is shorter than its header says.
    #[error("snapshot is truncated: {found} bytes, {expected} expected")]
    Truncated { expected: u64, found: u64 },
    /// The file is longer than its header says, or the body is too large.
    #[error("snapshot body has a bad length ({0} bytes)")]
    BadLength(u64),
    /// The body does not match its checksum.
    #[error("snapshot checksum mismatch (damaged file)")]
    Checksum,
    /// The body passed the checksum but cannot be decoded.
    #[error("snapshot body cannot be decoded")]
    Decode(#[source] postcard::Error),
    /// The state cannot be encoded.
    #[error("cannot encode the VM state")]
    Encode(#[source] postcard::Error),
}

/// Encodes `state` as a complete state file.
pub fn encode(state: &VmState) -> Result<Vec<u8>, FormatError> {
    let body = postcard::to_stdvec(state).map_err(FormatError::Encode)?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&body));
    out.extend_from_slice(&body);
    Ok(out)
}

/// Validates and decodes a complete state file.
pub fn decode(bytes: &[u8]) -> Result<VmState, FormatError> {
    let found = bytes.len() as u64;
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        // A short file that is a prefix of the magic is a truncated snapshot.
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            let expected = HEADER_LEN as u64;
            return Err(FormatError::Truncated { expected, found });
        }
        return Err(FormatError::BadMagic);
    }
    if bytes.len() < HEADER_LEN {
        let expected = HEADER_LEN as u64;
        return Err(FormatError::Truncated { expected, found });
    }
    let (header, body) = bytes.split_at(HEADER_LEN);
    let version = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
    if version != FORMAT_VERSION {
        return Err(FormatError::Version { found: version });
    }
    let len = u64::from_le_bytes(header[12..20].try_into().unwrap_or_default());
    if len > MAX_BODY_LEN {
        return Err(FormatError::BadLength(len));
    }
    if (body.len() as u64) < len {
        let expected = HEADER_LEN as u64 + len;
        return Err(FormatError::Truncated { expected, found });
    }
    if body.len() as u64 != len {
        return Err(FormatError::BadLength(body.len() as u64));
    }
    if Sha256::digest(body).as_slice() != &header[20..52] {
        return Err(FormatError::Checksum);
    }
    postcard::from_bytes(body).map_err(FormatError::Decode)
}

/// Writes `state` to `path` atomically (temporary file, fsync, rename).
pub fn write_file(path: &Path, state: &VmState) -> Result<(), FormatError> {
    let tmp = path.with_extension("tmp");
    let f = std::fs::File::create(&tmp).map_err(FormatError::Io)?;
    write_to(f, state)?;
    std::fs::rename(&tmp, path).map_err(FormatError::Io)
}

/// Writes `state` to `file` (empty, opened for writing) and syncs it.
pub fn write_to(mut file: std::fs::File, state: &VmState) -> Result<(), FormatError> {
    let bytes = encode(state)?;
    file.write_all(&bytes).map_err(FormatError::Io)?;
    file.sync_all().map_err(FormatError::Io)
}

/// Reads and validates the state file at `path`.
pub fn read_file(path: &Path) -> Result<VmState, FormatError> {
    let bytes = std::fs::read(path).map_err(FormatError::Io)?;
    decode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::state::{I8042State, LegacyState, SerialState};

    fn sample() -> VmState {
        VmState {
            mem_mib: 128,
            vcpus: Vec::new(),
            kvm: None,
            legacy: LegacyState {
                serial: SerialState {
                    line_control: 3,
                    in_buffer: vec![1, 2, 3],
                    ..SerialState::default()
                },
                i8042: I8042State {
                    ctr: 0x47,
                    output: vec![0x55],
                    pending_ctr_write: true,
                },
            },
            virtio: Vec::new(),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(&bytes[..8], b"HUSKSNAP");
        let back = decode(&bytes).unwrap();
        assert_eq!(back.mem_mib, 128);
        assert_eq!(back.legacy.serial.in_buffer, [1, 2, 3]);
        assert_eq!(encode(&back).unwrap(), bytes);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.state");
        write_file(&path, &sample()).unwrap();
        assert_eq!(encode(&read_file(&path).unwrap()).unwrap(), bytes);
    }

    #[test]
    fn wrong_magic() {
        let mut bytes = encode(&sample()).unwrap();
        bytes[0] = b'X';
        assert!(matches!(decode(&bytes), Err(FormatError::BadMagic)));
        assert!(matches!(decode(b"\x7fELF...."), Err(FormatError::BadMagic)));
    }

    #[test]
    fn other_versions() {
        for v in [0, FORMAT_VERSION + 1] {
            let mut bytes = encode(&sample()).unwrap();
            bytes[8..12].copy_from_slice(&v.to_le_bytes());
            let err = decode(&bytes).unwrap_err();
            assert!(matches!(err, FormatError::Version { found } if found == v));
            assert!(err.to_string().contains(&format!("version {v} ")), "{err}");
        }
    }

    #[test]
    fn bad_checksum() {
        let mut bytes = encode(&sample()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(decode(&bytes), Err(FormatError::Checksum)));
    }

    #[test]
    fn truncated_anywhere() {
        let bytes = encode(&sample()).unwrap();
        for cut in 0..bytes.len() {
            let err = decode(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, FormatError::Truncated { .. }),
                "cut at {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn trailing_bytes_and_huge_lengths() {
        let mut bytes = encode(&sample()).unwrap();
        bytes.push(0);
        assert!(matches!(decode(&bytes), Err(FormatError::BadLength(_))));
        let mut bytes = encode(&sample()).unwrap();
        bytes[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode(&bytes), Err(FormatError::BadLength(_))));
    }

    #[test]
    fn undecodable_body_with_valid_checksum() {
        let body = [0xffu8; 4];
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&4u64.to_le_bytes());
        bytes.extend_from_slice(&Sha256::digest(body));
        bytes.extend_from_slice(&body);
        assert!(matches!(decode(&bytes), Err(FormatError::Decode(_))));
    }
}
