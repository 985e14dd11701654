//! [`Message::ExportLayer`]: a finished build container's changes (the
//! overlayfs upper directory) as an OCI layer tar, written by the shared
//! conversion ([`husk_layertar::upper`]) and streamed to the host on the
//! boot connection in frames of at most [`MAX_CHUNK`] bytes. Nothing the
//! guest wrote is ever mounted on the host: this stream is all it gets,
//! and it checks it as hostile input.

use std::io::{self, Write};
use std::path::Path;

use husk_layertar::tarball::LayerWriter;
use husk_layertar::upper;
use husk_protocol::{write_message, ErrorCode, Message, WriteError, MAX_CHUNK};

use crate::boot::ConnError;

/// A writer that sends what it is given as [`Message::LayerChunk`] frames.
pub struct Chunks<'a, C: Write> {
    conn: &'a mut C,
    buf: Vec<u8>,
    /// Bytes sent so far.
    sent: u64,
    /// The connection failed (the host is gone): the export stops.
    failed: Option<WriteError>,
}

impl<C: Write> Chunks<'_, C> {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Message::LayerChunk(std::mem::take(&mut self.buf));
        if let Err(e) = write_message(self.conn, &chunk) {
            self.failed = Some(e);
            return Err(io::Error::other("the host connection failed"));
        }
        self.buf.reserve(MAX_CHUNK);
        Ok(())
    }
}

impl<C: Write> Write for Chunks<'_, C> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() >= MAX_CHUNK {
            self.send_buf()?;
        }
        let n = data.len().min(MAX_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.sent += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

/// Streams the layer tar of `upper` to the host: chunks, then
/// `LayerEnd{bytes}`; or, if the conversion fails, an `Error` after the
/// chunks sent so far (the host discards them). Only a failing connection
/// is an error here.
pub fn send_layer<C: Write>(conn: &mut C, upper: &Path) -> Result<(), ConnError> {
    send_tar(conn, "layer tar", |w| {
        upper::write_layer(upper, w)
            .map(|_| ())
            .map_err(|e| crate::chain(&e))
    })
}

/// Streams the tar that `write` produces to the host as `send_layer`
/// does (`ArchiveGet` uses it too); `what` names it in errors.
pub fn send_tar<C: Write>(
    conn: &mut C,
    what: &str,
    write: impl FnOnce(&mut LayerWriter<&mut Chunks<'_, C>>) -> Result<(), String>,
) -> Result<(), ConnError> {
    let mut chunks = Chunks {
        conn,
        buf: Vec::with_capacity(MAX_CHUNK),
        sent: 0,
        failed: None,
    };
    let converted = {
        let mut w = LayerWriter::new(&mut chunks);
        match write(&mut w) {
            Ok(()) => w
                .finish()
                .map(|_| ())
                .map_err(|e| format!("ending the {what}: {e}")),
            Err(e) => Err(e),
        }
    };
    let converted = converted.and_then(|()| {
        chunks
            .flush()
            .map_err(|e| format!("sending the {what}: {e}"))
    });
    if let Some(e) = chunks.failed.take() {
        return Err(ConnError::Write(e));
    }
    let end = match converted {
        Ok(()) => Message::LayerEnd { bytes: chunks.sent },
        Err(detail) => Message::Error {
            code: ErrorCode::Internal,
            detail: format!("writing the {what}: {detail}"),
        },
    };
    Ok(write_message(chunks.conn, &end)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_protocol::FrameDecoder;

    /// The frames `send_layer` wrote for `upper`.
    fn frames(upper: &Path) -> Vec<Message> {
        let mut out = Vec::new();
        send_layer(&mut out, upper).unwrap();
        let mut d = FrameDecoder::new();
        d.push(&out);
        let mut msgs = Vec::new();
        while let Some(m) = d.next_message().unwrap() {
            msgs.push(m);
        }
        msgs
    }

    #[test]
    fn the_tar_goes_out_in_bounded_chunks_and_ends_with_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; 3 * MAX_CHUNK + 5];
        std::fs::write(dir.path().join("big"), &big).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let msgs = frames(dir.path());
        let (last, chunks) = msgs.split_last().unwrap();
        let mut tar = Vec::new();
        for m in chunks {
            match m {
                Message::LayerChunk(b) => {
                    assert!(!b.is_empty() && b.len() <= MAX_CHUNK, "{}", b.len());
                    tar.extend(b);
                }
                other => panic!("expected a chunk, got {other:?}"),
            }
        }
        assert_eq!(
            last,
            &Message::LayerEnd {
                bytes: tar.len() as u64
            }
        );
        let mut ar = tar::Archive::new(&tar[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["big", "d"]);
    }

    #[test]
    fn a_failed_conversion_ends_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let msgs = frames(&dir.path().join("missing"));
        match msgs.last() {
            Some(Message::Error { code, detail }) => {
                assert_eq!(*code, ErrorCode::Internal);
                assert!(detail.contains("writing the layer tar"), "{detail}");
            }
            other => panic!("expected an Error, got {other:?}"),
        }
    }
}
