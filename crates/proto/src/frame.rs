//! Length-prefixed framing: a little-endian `u32` payload length, then the postcard payload.
//!
//! The same framing serves Unix sockets (clients, `dsmctl`) and TCP (peers). The length is
//! checked against the connection's limit before a byte of the payload is buffered, so a peer
//! cannot make us allocate more than the limit.

use core::fmt;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Largest frame a client or `dsmctl` may send to a daemon.
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// Largest frame between daemons (a Raft snapshot carrying the segment directory is the
/// largest; Raft appends are cut at 1 MiB).
pub const MAX_PEER_FRAME: usize = 16 * 1024 * 1024;

/// Largest frame a daemon sends to `dsmctl` (a status of many segments and pages).
pub const MAX_CTL_REPLY_FRAME: usize = 64 * 1024 * 1024;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more than this connection accepts.
    TooLarge {
        /// Announced payload length.
        len: usize,
        /// Limit of the connection.
        max: usize,
    },
    /// The payload is not a valid message of the expected type.
    Malformed(postcard::Error),
    /// The payload holds a valid message followed by bytes that belong to none.
    TrailingBytes(usize),
    /// The caller's buffer cannot hold the encoded frame.
    BufferTooSmall,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max}")
            }
            FrameError::Malformed(e) => write!(f, "malformed frame: {e}"),
            FrameError::TrailingBytes(n) => write!(f, "malformed frame: {n} trailing bytes"),
            FrameError::BufferTooSmall => f.write_str("frame does not fit the buffer"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Encodes `msg` as one frame into `buf`, returning the frame's length. Never allocates.
pub fn encode_into<T: Serialize>(msg: &T, buf: &mut [u8]) -> Result<usize, FrameError> {
    if buf.len() < HEADER_LEN {
        return Err(FrameError::BufferTooSmall);
    }
    let (header, body) = buf.split_at_mut(HEADER_LEN);
    let n = postcard::to_slice(msg, body)
        .map_err(|e| match e {
            postcard::Error::SerializeBufferFull => FrameError::BufferTooSmall,
            other => FrameError::Malformed(other),
        })?
        .len();
    header.copy_from_slice(&(n as u32).to_le_bytes());
    Ok(HEADER_LEN + n)
}

/// Encodes `msg` as one frame into a new vector.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_allocvec(msg).map_err(FrameError::Malformed)?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes one payload (without its length prefix), rejecting trailing bytes.
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, FrameError> {
    let (msg, rest) = postcard::take_from_bytes(payload).map_err(FrameError::Malformed)?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes(rest.len()));
    }
    Ok(msg)
}

/// Decodes one payload into an owned message.
pub fn decode_owned<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    decode(payload)
}

/// Reads the length prefix at the start of `bytes`, if all four bytes are there, checking it
/// against `max`.
pub fn peek_len(bytes: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(Some(len))
}

/// Reassembles frames from a byte stream that arrives in arbitrary pieces.
#[derive(Debug)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
    max: usize,
}

impl FrameBuffer {
    /// A buffer that refuses frames whose payload exceeds `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameBuffer {
            buf: Vec::new(),
            start: 0,
            max,
        }
    }

    /// Appends bytes received from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Appends bytes that `fill` writes at the end of the buffer itself (it may only append):
    /// a decrypting reader puts plaintext here without a buffer of its own and a copy.
    pub fn append_with<T>(&mut self, fill: impl FnOnce(&mut Vec<u8>) -> T) -> T {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        fill(&mut self.buf)
    }

    /// Takes the next complete frame's payload, if one has arrived.
    ///
    /// An error means the stream is unusable from here on: the caller closes the connection.
    /// The next complete frame's payload, left in the buffer.
    pub fn peek(&self) -> Result<Option<&[u8]>, FrameError> {
        let pending = &self.buf[self.start..];
        let Some(len) = peek_len(pending, self.max)? else {
            return Ok(None);
        };
        Ok(pending.get(HEADER_LEN..HEADER_LEN + len))
    }

    /// Takes the next complete frame's payload.
    pub fn pop(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let pending = &self.buf[self.start..];
        let Some(len) = peek_len(pending, self.max)? else {
            return Ok(None);
        };
        if pending.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = pending[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.start += HEADER_LEN + len;
        if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(payload))
    }

    /// Hands `len` raw bytes that follow the last frame (a page after a grant) to `take`, if
    /// they have all arrived; returns whether they had.
    pub fn take_raw(&mut self, len: usize, take: impl FnOnce(&[u8])) -> bool {
        let pending = &self.buf[self.start..];
        if pending.len() < len {
            return false;
        }
        take(&pending[..len]);
        self.start += len;
        true
    }

    /// Bytes received but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Reply, Request};
    use crate::SegmentId;

    #[test]
    fn round_trip_in_pieces() {
        let req = Request::Fault {
            segment: SegmentId(7),
            page: 3,
            write: true,
        };
        let mut frame = encode(&req).unwrap();
        frame.extend(encode(&Request::Unlink { name: "/x" }).unwrap());
        let mut fb = FrameBuffer::new(MAX_CLIENT_FRAME);
        for b in &frame {
            fb.push(&[*b]);
        }
        let first = fb.pop().unwrap().unwrap();
        assert_eq!(decode::<Request<'_>>(&first).unwrap(), req);
        let second = fb.pop().unwrap().unwrap();
        assert_eq!(
            decode::<Request<'_>>(&second).unwrap(),
            Request::Unlink { name: "/x" }
        );
        assert_eq!(fb.pop().unwrap(), None);
        assert_eq!(fb.pending(), 0);
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut fb = FrameBuffer::new(16);
        fb.push(&1000u32.to_le_bytes());
        assert_eq!(fb.pop(), Err(FrameError::TooLarge { len: 1000, max: 16 }));
    }

    #[test]
    fn encode_into_is_exact_and_checks_space() {
        let mut buf = [0u8; 64];
        let reply = Reply::Granted {
            access: crate::Access::Write,
            seq: 300,
        };
        let n = encode_into(&reply, &mut buf).unwrap();
        assert_eq!(&buf[..n], &encode(&reply).unwrap()[..]);
        let mut tiny = [0u8; 5];
        assert_eq!(
            encode_into(
                &Request::Unlink {
                    name: "/a-long-name"
                },
                &mut tiny
            ),
            Err(FrameError::BufferTooSmall)
        );
    }

    #[test]
    fn garbage_never_panics() {
        // Every byte string up to length 3, and a deterministic spray of longer ones.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..64usize {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                let _ = decode::<Request<'_>>(&bytes);
                let _ = decode::<Reply>(&bytes);
                let _ = decode::<crate::hello::Hello>(&bytes);
                let _ = decode::<crate::ctl::CtlRequest>(&bytes);
                let _ = decode::<crate::ctl::CtlReply>(&bytes);
                let _ = decode::<crate::peer::PeerFrame>(&bytes);
                let _ = decode::<crate::client::PushAck>(&bytes);
            }
        }
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut body = postcard::to_allocvec(&Request::Unlink { name: "/x" }).unwrap();
        body.push(0);
        assert_eq!(
            decode::<Request<'_>>(&body),
            Err(FrameError::TrailingBytes(1))
        );
    }
}
