//! Authenticated, encrypted peer links: the Noise protocol (`snow`) with the cluster key as a
//! pre-shared key, as a record layer under the frame codec. Sans-IO: bytes in, bytes out.
//!
//! Pattern `Noise_NNpsk0_25519_AESGCM_SHA256`: two handshake messages, each carrying one side's
//! hello (so the node id and incarnation a peer claims are bound to a channel only a holder of
//! the cluster key can complete), then transport records. Without the key the first message
//! does not decrypt, and a recorded handshake replayed cannot be finished (the ephemeral keys).
//! AES-GCM because this x86-64 hardware runs it with AES-NI: the page traffic costs least.
//!
//! On the wire every record is a 2-byte big-endian length and a Noise message (at most 65,535
//! bytes); a plaintext longer than one record is split over several.

use std::fmt;

use snow::{HandshakeState, TransportState};

const PATTERN: &str = "Noise_NNpsk0_25519_AESGCM_SHA256";
/// Largest Noise message.
const MAX_RECORD: usize = 65_535;
/// Authentication tag per message.
const TAG: usize = 16;
/// Ciphertext bytes buffered at most before a complete record: a record is never longer.
const MAX_RAW: usize = 2 + MAX_RECORD;

/// The cluster key as Noise takes it (32 bytes, derived from the key file).
#[derive(Clone)]
pub struct Psk(pub [u8; 32]);

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(..)")
    }
}

/// Why a record or handshake failed.
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn failed(what: &str, e: snow::Error) -> Error {
    Error(format!(
        "{what} ({e}): a different cluster key, or not a dsm daemon"
    ))
}

enum State {
    Handshake(Box<HandshakeState>),
    Transport(Box<TransportState>),
    Broken,
}

/// One link's record layer.
pub struct Records {
    state: State,
    initiator: bool,
    /// Ciphertext received but not yet a whole record.
    raw: Vec<u8>,
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("initiator", &self.initiator)
            .field("transport", &self.is_transport())
            .finish()
    }
}

fn builder(psk: &Psk) -> Result<snow::Builder<'_>, Error> {
    let params = PATTERN
        .parse()
        .map_err(|e| Error(format!("Noise pattern: {e}")))?;
    snow::Builder::new(params)
        .psk(0, &psk.0)
        .map_err(|e| Error(format!("Noise key: {e}")))
}

fn record(message: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(2 + message.len());
    r.extend_from_slice(&(message.len() as u16).to_be_bytes());
    r.extend_from_slice(message);
    r
}

impl Records {
    /// The dialing side: its first record carries `hello`.
    pub fn initiator(psk: &Psk, hello: &[u8]) -> Result<(Records, Vec<u8>), Error> {
        let mut hs = builder(psk)?
            .build_initiator()
            .map_err(|e| Error(format!("Noise: {e}")))?;
        let mut msg = vec![0u8; MAX_RECORD];
        let n = hs
            .write_message(hello, &mut msg)
            .map_err(|e| Error(format!("Noise: {e}")))?;
        let records = Records {
            state: State::Handshake(Box::new(hs)),
            initiator: true,
            raw: Vec::new(),
        };
        Ok((records, record(&msg[..n])))
    }

    /// The accepting side: it learns the dialer's hello from the first record, then answers
    /// with [`Records::reply`].
    pub fn responder(psk: &Psk) -> Result<Records, Error> {
        let hs = builder(psk)?
            .build_responder()
            .map_err(|e| Error(format!("Noise: {e}")))?;
        Ok(Records {
            state: State::Handshake(Box::new(hs)),
            initiator: false,
            raw: Vec::new(),
        })
    }

    /// Whether the handshake is done.
    pub fn is_transport(&self) -> bool {
        matches!(self.state, State::Transport(_))
    }

    /// Takes ciphertext from the socket; appends every payload it completes (handshake
    /// payloads, the hellos, included) to `plain`.
    pub fn open(&mut self, bytes: &[u8], plain: &mut Vec<u8>) -> Result<(), Error> {
        self.raw.extend_from_slice(bytes);
        let mut at = 0;
        let result = loop {
            let rest = &self.raw[at..];
            if rest.len() < 2 {
                break Ok(());
            }
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            if rest.len() < 2 + len {
                break Ok(());
            }
            let message = &rest[2..2 + len];
            let start = plain.len();
            plain.resize(start + len, 0);
            let state = std::mem::replace(&mut self.state, State::Broken);
            let (state, n) = match state {
                State::Transport(mut t) => match t.read_message(message, &mut plain[start..]) {
                    Ok(n) => (State::Transport(t), n),
                    Err(e) => break Err(failed("a record did not decrypt", e)),
                },
                State::Handshake(mut hs) => {
                    if !self.initiator && hs.is_my_turn() {
                        break Err(Error("data before the handshake was answered".into()));
                    }
                    match hs.read_message(message, &mut plain[start..]) {
                        Ok(n) if hs.is_handshake_finished() => match hs.into_transport_mode() {
                            Ok(t) => (State::Transport(Box::new(t)), n),
                            Err(e) => break Err(failed("the handshake", e)),
                        },
                        Ok(n) => (State::Handshake(hs), n),
                        Err(e) => break Err(failed("the handshake did not decrypt", e)),
                    }
                }
                State::Broken => break Err(Error("a broken link".into())),
            };
            self.state = state;
            plain.truncate(start + n);
            at += 2 + len;
        };
        self.raw.drain(..at);
        if result.is_ok() && self.raw.len() > MAX_RAW {
            return Err(Error("a record longer than any can be".into()));
        }
        result
    }

    /// The accepting side's answer, carrying its `hello`; the link is then in transport mode.
    pub fn reply(&mut self, hello: &[u8]) -> Result<Vec<u8>, Error> {
        let State::Handshake(hs) = &mut self.state else {
            return Err(Error("no handshake to answer".into()));
        };
        let mut msg = vec![0u8; MAX_RECORD];
        let n = hs
            .write_message(hello, &mut msg)
            .map_err(|e| Error(format!("Noise: {e}")))?;
        let State::Handshake(hs) = std::mem::replace(&mut self.state, State::Broken) else {
            unreachable!("matched above");
        };
        let t = hs
            .into_transport_mode()
            .map_err(|e| Error(format!("Noise: {e}")))?;
        self.state = State::Transport(Box::new(t));
        Ok(record(&msg[..n]))
    }

    /// Encrypts `plain` into records appended to `out` (transport mode only).
    pub fn seal_into(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let State::Transport(t) = &mut self.state else {
            return Err(Error("sending before the handshake is done".into()));
        };
        for part in plain.chunks(MAX_RECORD - TAG) {
            let at = out.len();
            out.resize(at + 2 + part.len() + TAG, 0);
            let n = t
                .write_message(part, &mut out[at + 2..])
                .map_err(|e| Error(format!("Noise: {e}")))?;
            out[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
            out.truncate(at + 2 + n);
        }
        Ok(())
    }

    /// Encrypts `plain` into records (transport mode only).
    #[cfg(test)]
    pub fn seal(&mut self, plain: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(plain.len() + 2 + TAG);
        self.seal_into(plain, &mut out)?;
        Ok(out)
    }
}

/// The cluster key of a key file's contents: at least 32 bytes (as `dsmctl keygen` writes,
/// 64 hex digits and a newline), hashed to Noise's 32.
pub fn psk_of(contents: &[u8]) -> Result<Psk, String> {
    use sha2::{Digest, Sha256};
    let key = contents.trim_ascii();
    if key.len() < 32 {
        return Err(format!(
            "the key file holds {} bytes; a cluster key is at least 32 (make one with `dsmctl keygen`)",
            key.len()
        ));
    }
    let mut h = Sha256::new();
    h.update(b"dsm cluster key v1\0");
    h.update(key);
    Ok(Psk(h.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(a: &Psk, b: &Psk) -> Result<(Records, Records), Error> {
        let (mut i, first) = Records::initiator(a, b"hello from 1")?;
        let mut r = Records::responder(b)?;
        let mut plain = Vec::new();
        r.open(&first, &mut plain)?;
        assert_eq!(plain, b"hello from 1");
        let second = r.reply(b"hello from 2")?;
        plain.clear();
        i.open(&second, &mut plain)?;
        assert_eq!(plain, b"hello from 2");
        Ok((i, r))
    }

    #[test]
    fn the_same_key_links_and_carries_bytes_both_ways_in_any_split() {
        let k = psk_of(&[7u8; 40]).unwrap();
        let (mut i, mut r) = pair(&k, &k).unwrap();
        assert!(i.is_transport() && r.is_transport());
        let big: Vec<u8> = (0..200_000u32).map(|x| x as u8).collect();
        let sealed = i.seal(&big).unwrap();
        let mut plain = Vec::new();
        // Byte by byte at first, then the rest at once: records are found across reads.
        for b in &sealed[..100] {
            r.open(std::slice::from_ref(b), &mut plain).unwrap();
        }
        r.open(&sealed[100..], &mut plain).unwrap();
        assert_eq!(plain, big);
        let back = r.seal(b"ack").unwrap();
        plain.clear();
        i.open(&back, &mut plain).unwrap();
        assert_eq!(plain, b"ack");
        // Reads of any size: records completed, whole and partial in one read.
        for chunk in [1, 2, 3, 1000, 65_536, 65_539, 70_000, 150_000] {
            let sealed = i.seal(&big).unwrap();
            plain.clear();
            for piece in sealed.chunks(chunk) {
                r.open(piece, &mut plain).unwrap();
            }
            assert_eq!(plain, big, "reads of {chunk} bytes");
        }
    }

    #[test]
    fn another_key_never_links() {
        let a = psk_of(&[1u8; 32]).unwrap();
        let b = psk_of(&[2u8; 32]).unwrap();
        assert!(pair(&a, &b).is_err());
    }

    #[test]
    fn tampered_or_replayed_records_are_refused() {
        let k = psk_of(&[b'k'; 32]).unwrap();
        let (mut i, mut r) = pair(&k, &k).unwrap();
        let mut sealed = i.seal(b"page bytes").unwrap();
        let copy = sealed.clone();
        let mut plain = Vec::new();
        r.open(&sealed, &mut plain).unwrap();
        assert!(r.open(&copy, &mut plain).is_err(), "a replay");
        let (mut i, mut r) = pair(&k, &k).unwrap();
        sealed = i.seal(b"page bytes").unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(r.open(&sealed, &mut plain).is_err(), "a flipped bit");
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(psk_of(b"short\n").is_err());
        assert!(psk_of(&[b'a'; 64]).is_ok());
    }
}
