//! The agent-frame gate on guest → host data ([`VsockStreams::AgentFrames`]).
//!
//! With it, the bytes a guest sends on a connection are not forwarded as
//! they come: they are decoded here, in the VMM (the jailed, seccomp-filtered
//! process), frame by frame into husk's agent protocol messages, and what is
//! forwarded to the host socket is each message's canonical re-encoding. A
//! byte sequence that does not decode resets the connection and reaches no
//! host process. So the root side of the host only ever parses frames that
//! this process made from values it decoded: a bug in the decoder that guest
//! bytes can trigger triggers here first, in the jail.
//!
//! A frame is forwarded only once it is complete, so a gated connection
//! advertises credit for one whole frame ([`GATED_BUF_ALLOC`]); guest bytes
//! are credited back only when the frame they belong to has been written
//! out, so what waits here stays within that credit.

use std::collections::VecDeque;

use husk_protocol::{decode, encode, DecodeError, EncodeError, HEADER_LEN, MAX_FRAME};

/// What the guest's side of each vsock connection carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VsockStreams {
    /// Any bytes: forwarded as they come.
    #[default]
    Raw,
    /// husk agent protocol frames: each is decoded and re-encoded by the
    /// VMM before it is forwarded; anything else resets the connection.
    AgentFrames,
}

/// Receive credit a gated connection advertises: one frame of the largest
/// size, header included.
pub const GATED_BUF_ALLOC: u32 = (MAX_FRAME + HEADER_LEN) as u32;

/// Guest bytes kept allocated between frames once a large frame has passed.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Why guest bytes did not pass the gate.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The bytes are not a well-formed frame of a known message.
    #[error("the guest sent an invalid agent protocol frame")]
    Decode(#[from] DecodeError),
    /// The decoded message does not encode again within the frame limit.
    #[error("a guest message cannot be encoded again")]
    Encode(#[from] EncodeError),
}

/// Decodes a connection's guest → host bytes and produces the re-encoded
/// frames.
#[derive(Debug, Default)]
pub struct FrameGate {
    /// Guest bytes received; those before `start` are decoded.
    input: Vec<u8>,
    start: usize,
    /// Per re-encoded frame not yet wholly written to the host: its bytes
    /// still to write, and the guest bytes it stands for.
    frames: VecDeque<(usize, usize)>,
}

impl FrameGate {
    /// Takes `data` from the guest and appends to `out` the re-encoding of
    /// every frame it completes. After an error the stream is out of step:
    /// the connection must be reset.
    pub fn push(&mut self, data: &[u8], out: &mut VecDeque<u8>) -> Result<(), GateError> {
        self.compact();
        self.input.extend_from_slice(data);
        while let Some((msg, used)) = decode(&self.input[self.start..])? {
            self.start += used;
            let frame = encode(&msg)?;
            self.frames.push_back((frame.len(), used));
            out.extend(frame);
        }
        Ok(())
    }

    /// `n` bytes of the output were written to the host socket; returns
    /// how many guest bytes that finishes (the credit to give back).
    pub fn written(&mut self, mut n: usize) -> usize {
        let mut done = 0;
        while n > 0 {
            let Some(front) = self.frames.front_mut() else {
                break;
            };
            let k = n.min(front.0);
            front.0 -= k;
            n -= k;
            if front.0 == 0 {
                done += front.1;
                self.frames.pop_front();
            }
        }
        done
    }

    /// Guest bytes of a frame not yet complete.
    pub fn partial(&self) -> usize {
        self.input.len() - self.start
    }

    /// Drops decoded bytes from the input buffer.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        self.input.drain(..self.start);
        self.start = 0;
        if self.input.is_empty() && self.input.capacity() > KEEP_CAPACITY {
            self.input.shrink_to(KEEP_CAPACITY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_protocol::Message;

    fn frame(msg: &Message) -> Vec<u8> {
        encode(msg).unwrap()
    }

    #[test]
    fn whole_frames_pass_byte_for_byte_in_any_split() {
        let a = frame(&Message::Hello { version: 7 });
        let b = frame(&Message::Stdout(vec![1, 2, 3]));
        let stream = [a.clone(), b.clone()].concat();
        for split in 0..=stream.len() {
            let mut gate = FrameGate::default();
            let mut out = VecDeque::new();
            gate.push(&stream[..split], &mut out).unwrap();
            gate.push(&stream[split..], &mut out).unwrap();
            assert_eq!(
                out.iter().copied().collect::<Vec<_>>(),
                stream,
                "split {split}"
            );
            assert_eq!(gate.partial(), 0);
        }
    }

    #[test]
    fn a_partial_frame_is_held_until_it_completes() {
        let a = frame(&Message::Stdout(vec![9; 100]));
        let mut gate = FrameGate::default();
        let mut out = VecDeque::new();
        gate.push(&a[..50], &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(gate.partial(), 50);
        gate.push(&a[50..], &mut out).unwrap();
        assert_eq!(out.len(), a.len());
    }

    #[test]
    fn malformed_or_oversized_frames_are_refused() {
        let mut gate = FrameGate::default();
        let mut out = VecDeque::new();
        // A length beyond MAX_FRAME is refused as soon as the header is in.
        let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(matches!(
            gate.push(&huge, &mut out),
            Err(GateError::Decode(DecodeError::TooLarge(_)))
        ));
        // An unknown message variant.
        let mut gate = FrameGate::default();
        let bad = [1, 0, 0, 0, 0xff];
        assert!(gate.push(&bad, &mut out).is_err());
        // A valid message followed by junk inside its frame.
        let mut gate = FrameGate::default();
        let mut f = frame(&Message::Hello { version: 1 });
        f.push(0);
        let len = (f.len() - HEADER_LEN) as u32;
        f[..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
        assert!(gate.push(&f, &mut out).is_err());
        assert!(out.is_empty(), "nothing of a bad frame is forwarded");
    }

    #[test]
    fn credit_comes_back_only_for_frames_written_out() {
        let a = frame(&Message::Stdout(vec![1; 10]));
        let b = frame(&Message::Stdout(vec![2; 20]));
        let mut gate = FrameGate::default();
        let mut out = VecDeque::new();
        gate.push(&[a.clone(), b.clone()].concat(), &mut out)
            .unwrap();
        assert_eq!(gate.written(a.len() - 1), 0);
        assert_eq!(gate.written(1), a.len());
        assert_eq!(gate.written(b.len() + 100), b.len());
        assert_eq!(gate.written(5), 0);
    }
}
