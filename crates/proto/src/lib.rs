//! The dsm wire protocol.
//!
//! Every message that crosses a process boundary — client (libdsm.so) to daemon, `dsmctl` to
//! daemon, daemon to daemon — is a serde type in this crate, encoded with postcard inside a
//! length-prefixed frame ([`frame`]). Decoding untrusted bytes never panics: a malformed frame is
//! an [`FrameError`] for the caller to log and to close that one connection with.
//!
//! The types that the shim's signal handler encodes and decodes ([`client::Request::Fault`],
//! [`client::Reply`]) hold no heap data, so the handler can use them with stack buffers only.

pub mod client;
pub mod ctl;
pub mod fastlock;
pub mod frame;
pub mod hello;
pub mod ids;
pub mod peer;
pub mod sync;

pub use frame::FrameError;
pub use ids::{Access, NodeId, SegmentId, SessionId, PAGE_SIZE};

/// Version of every protocol in this crate; bumped on any incompatible change.
///
/// Both ends send it in the [`hello::Hello`] and refuse a mismatch with a clear reason.
pub const PROTOCOL_VERSION: u32 = 8;

/// Start of the virtual address window every segment's base address is taken from (32 TiB: far
/// below the mmap area near the top of the 47-bit address space, far above PIE binaries and
/// their heaps). The shim recognizes a system call's buffer in DSM memory by it (`addr >> 45 == 1`).
pub const WINDOW_START: u64 = 0x2000_0000_0000;
/// End of that window (64 TiB).
pub const WINDOW_END: u64 = 0x4000_0000_0000;
/// Segments' base addresses are taken from `WINDOW_START..ALIAS_START` (16 TiB, cluster-wide);
/// `ALIAS_START..WINDOW_END` is each process's own: a segment mapped again in one process (a
/// second `mmap` of the same range) lands there, at a distinct address, as POSIX requires.
pub const ALIAS_START: u64 = 0x3000_0000_0000;

/// First four bytes of every [`hello::Hello`]: a connection from something that is not dsm is
/// refused before anything else is parsed.
pub const MAGIC: u32 = u32::from_le_bytes(*b"DSM\0");
