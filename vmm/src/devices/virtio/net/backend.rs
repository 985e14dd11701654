//! Host side of the network device: where guest frames go and host frames
//! come from. Two kinds, both non-blocking and driven by the VMM's event
//! loop:
//! - [`StreamBackend`]: a connected Unix stream socket carrying frames the
//!   way QEMU's `-netdev stream` does (each frame prefixed by its length as
//!   a 4-byte big-endian integer); passt speaks this.
//! - [`TapBackend`]: a TAP device (`/dev/net/tun`, `IFF_TAP | IFF_NO_PI`):
//!   one read or write per frame.
//!
//! Frames are plain Ethernet frames without a virtio-net header: checksums
//! are completed by the device before a frame reaches a backend.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// The largest Ethernet frame either way: a 64 KiB IP packet plus an
/// Ethernet header with one VLAN tag.
pub const MAX_FRAME_LEN: usize = 65_535 + 14 + 4;
/// The smallest frame worth passing on: an Ethernet header.
pub const MIN_FRAME_LEN: usize = 14;
/// A stream backend stops accepting frames while this many bytes wait to
/// be written (the guest's tx queue then waits for the socket).
const OUT_LIMIT: usize = 512 * 1024;
/// Size of the stream backend's input buffer (several maximal frames).
const IN_BUF: usize = 4 * (MAX_FRAME_LEN + 4);

/// A source and sink of Ethernet frames on the host.
pub trait Backend: Send {
    /// The file descriptor to watch for readiness.
    fn fd(&self) -> RawFd;
    /// Takes `frame` for sending. `Ok(false)`: the backend is full and the
    /// frame was not taken; retry once [`Backend::flush`] made room.
    fn send(&mut self, frame: &[u8]) -> io::Result<bool>;
    /// Writes buffered output, as much as the fd takes now.
    fn flush(&mut self) -> io::Result<()>;
    /// Whether buffered output waits for the fd to become writable.
    fn wants_write(&self) -> bool;
    /// Reads the next frame into `frame`: `Ok(false)` if none is available
    /// now. An error (including end of file) means the backend is gone.
    fn recv(&mut self, frame: &mut Vec<u8>) -> io::Result<bool>;
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Frames over a stream socket, each prefixed by a big-endian `u32` length.
pub struct StreamBackend {
    stream: Arc<UnixStream>,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    in_start: usize,
    in_end: usize,
}

impl StreamBackend {
    /// Wraps a connected stream socket (made non-blocking here).
    pub fn new(stream: Arc<UnixStream>) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream,
            out: Vec::new(),
            out_pos: 0,
            inbuf: vec![0; IN_BUF],
            in_start: 0,
            in_end: 0,
        })
    }

    fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// A complete frame at the start of the input buffer, if any.
    fn take_buffered(&mut self, frame: &mut Vec<u8>) -> io::Result<bool> {
        let avail = &self.inbuf[self.in_start..self.in_end];
        let Some(len_bytes) = avail.get(..4) else {
            return Ok(false);
        };
        let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        let len = len as usize;
        if len > MAX_FRAME_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("backend sent a {len}-byte frame"),
            ));
        }
        let Some(data) = avail.get(4..4 + len) else {
            return Ok(false);
        };
        frame.clear();
        frame.extend_from_slice(data);
        self.in_start += 4 + len;
        if self.in_start == self.in_end {
            self.in_start = 0;
            self.in_end = 0;
        }
        Ok(true)
    }
}

impl Backend for StreamBackend {
    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        if self.pending_out() >= OUT_LIMIT {
            self.flush()?;
            if self.pending_out() >= OUT_LIMIT {
                return Ok(false);
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        let len = u32::try_from(frame.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(frame);
        self.flush()?;
        Ok(true)
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match (&*self.stream).write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > OUT_LIMIT {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    fn wants_write(&self) -> bool {
        self.pending_out() > 0
    }

    fn recv(&mut self, frame: &mut Vec<u8>) -> io::Result<bool> {
        loop {
            if self.take_buffered(frame)? {
                return Ok(true);
            }
            if self.in_end == self.inbuf.len() {
                // Only a partial frame is buffered: move it to the front.
                self.inbuf.copy_within(self.in_start..self.in_end, 0);
                self.in_end -= self.in_start;
                self.in_start = 0;
            }
            match (&*self.stream).read(&mut self.inbuf[self.in_end..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.in_end += n,
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }
}

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` with the flags member of its union.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Frames to and from a TAP device.
pub struct TapBackend {
    file: File,
    pending: Option<Vec<u8>>,
}

impl TapBackend {
    /// Opens (or creates, as root) the TAP device `name` in multi-frame,
    /// no-packet-info mode, non-blocking.
    pub fn open(name: &str) -> io::Result<Self> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', '\0', ' ']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid interface name {name:?}"),
            ));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` has its
        // layout (40 bytes) and lives across the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self::from_file(file))
    }

    /// Wraps an already configured, non-blocking TAP file descriptor.
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self::from_file(File::from(fd))
    }

    fn from_file(file: File) -> Self {
        Self {
            file,
            pending: None,
        }
    }
}

impl Backend for TapBackend {
    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        self.flush()?;
        if self.pending.is_some() {
            return Ok(false);
        }
        match self.file.write(frame) {
            Ok(_) => Ok(true),
            Err(e) if would_block(&e) => {
                self.pending = Some(frame.to_vec());
                Ok(true)
            }
            // The interface may be down (EIO): the frame is lost, as on a wire.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(true),
            Err(e) => Err(e),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(frame) = &self.pending {
            match self.file.write(frame) {
                Ok(_) => self.pending = None,
                Err(e) if would_block(&e) => {}
                Err(e) if e.raw_os_error() == Some(libc::EIO) => self.pending = None,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn wants_write(&self) -> bool {
        self.pending.is_some()
    }

    fn recv(&mut self, frame: &mut Vec<u8>) -> io::Result<bool> {
        frame.resize(MAX_FRAME_LEN, 0);
        match self.file.read(frame) {
            Ok(n) => {
                frame.truncate(n);
                Ok(true)
            }
            Err(e) if would_block(&e) => {
                frame.clear();
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}
