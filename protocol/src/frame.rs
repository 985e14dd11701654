//! Framing: `u32` little-endian length + postcard payload.

use std::io::{self, Read, Write};

use crate::Message;

/// Bytes in a frame header (the payload length).
pub const HEADER_LEN: usize = 4;

/// The largest payload accepted or produced, in bytes.
pub const MAX_FRAME: usize = 1 << 20;

/// Why bytes could not be decoded into a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The header announces a payload larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(u32),
    /// The payload is not a valid message.
    #[error("malformed message")]
    Malformed(#[source] postcard::Error),
    /// The payload holds a message followed by extra bytes.
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Serialization failed.
    #[error("cannot encode message")]
    Serialize(#[source] postcard::Error),
    /// The encoded message exceeds [`MAX_FRAME`].
    #[error("encoded message of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
}

/// Why a message could not be read from a stream.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading the stream failed.
    #[error("read failed")]
    Io(#[from] io::Error),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The frame was invalid.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Why a message could not be written to a stream.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Writing the stream failed.
    #[error("write failed")]
    Io(#[from] io::Error),
}

/// Encodes `msg` as one complete frame (header + payload).
pub fn encode(msg: &Message) -> Result<Vec<u8>, EncodeError> {
    let frame = postcard::to_extend(msg, vec![0u8; HEADER_LEN]).map_err(EncodeError::Serialize)?;
    let len = frame.len() - HEADER_LEN;
    if len > MAX_FRAME {
        return Err(EncodeError::TooLarge(len));
    }
    let mut frame = frame;
    // `len <= MAX_FRAME` fits in a u32.
    frame[..HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(frame)
}

/// Decodes the first frame in `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame, or the
/// message and the number of bytes it occupied. Never panics, whatever
/// `buf` holds.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, DecodeError> {
    let Some(len) = payload_len(buf)? else {
        return Ok(None);
    };
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    Ok(Some((decode_payload(payload)?, HEADER_LEN + len)))
}

/// Reads the header at the start of `buf`, if complete, and checks it.
fn payload_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut bytes = [0u8; HEADER_LEN];
    bytes.copy_from_slice(header);
    check_len(u32::from_le_bytes(bytes)).map(Some)
}

fn check_len(len: u32) -> Result<usize, DecodeError> {
    let n = usize::try_from(len).map_err(|_| DecodeError::TooLarge(len))?;
    if n > MAX_FRAME {
        return Err(DecodeError::TooLarge(len));
    }
    Ok(n)
}

fn decode_payload(payload: &[u8]) -> Result<Message, DecodeError> {
    let (msg, rest) = postcard::take_from_bytes(payload).map_err(DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(msg)
}

/// Writes `msg` as one frame with a single `write_all`.
pub fn write_message<W: Write + ?Sized>(w: &mut W, msg: &Message) -> Result<(), WriteError> {
    let frame = encode(msg)?;
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Reads one message from a blocking stream.
///
/// Returns `Ok(None)` if the stream ends cleanly before a frame starts.
pub fn read_message<R: Read + ?Sized>(r: &mut R) -> Result<Option<Message>, ReadError> {
    let mut header = [0u8; HEADER_LEN];
    if !read_full(r, &mut header)? {
        return Ok(None);
    }
    let len = check_len(u32::from_le_bytes(header))?;
    let mut payload = vec![0u8; len];
    if !read_full(r, &mut payload)? && len > 0 {
        return Err(ReadError::Truncated);
    }
    Ok(Some(decode_payload(&payload)?))
}

/// Fills `buf`. Returns `false` if the stream ended before the first byte,
/// and [`ReadError::Truncated`] if it ended after it.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> Result<bool, ReadError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(ReadError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Incremental decoder for non-blocking readers: feed it whatever bytes
/// arrive with [`FrameDecoder::push`] and take complete messages out with
/// [`FrameDecoder::next_message`].
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > MAX_FRAME {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the next complete message, `Ok(None)` if more bytes are
    /// needed. An oversize header is reported as soon as it arrives.
    /// After an error the stream is out of sync; drop the connection.
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        match decode(&self.buf[self.start..])? {
            Some((msg, used)) => {
                self.start += used;
                Ok(Some(msg))
            }
            None => Ok(None),
        }
    }

    /// Bytes received but not yet decoded (a partial frame).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
