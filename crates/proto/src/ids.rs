//! Identifiers and small domain values shared by every crate.

use core::fmt;
use serde::{Deserialize, Serialize};

/// Size of a page, the unit of coherence.
pub const PAGE_SIZE: usize = 4096;

/// One host, one `dsmd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u32);

/// A distributed segment, unique in the cluster for its whole life (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentId(pub u64);

impl SegmentId {
    /// Bits of the id below the creating node's id.
    pub const SERIAL_BITS: u32 = 40;

    /// The id of the `serial`th segment created on behalf of `creator`.
    pub fn new(creator: NodeId, serial: u64) -> SegmentId {
        SegmentId(
            (u64::from(creator.0) << Self::SERIAL_BITS) | (serial & ((1 << Self::SERIAL_BITS) - 1)),
        )
    }

    /// The node that created the segment: the first owner of every one of its pages.
    pub fn creator(self) -> NodeId {
        NodeId((self.0 >> Self::SERIAL_BITS) as u32)
    }
}

/// One attached client process, as its node's daemon knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

/// What may be done with a page: by a node (its copy) or by a process (its mapping).
///
/// Ordered: `None < Read < Write`, so "enough access" is a comparison.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Access {
    /// No valid copy: any access faults.
    #[default]
    None,
    /// A valid read-only copy; other nodes may hold one too.
    Read,
    /// The only valid copy in the cluster, writable.
    Write,
}

impl Access {
    /// Access needed to satisfy a fault of this kind.
    pub fn for_fault(write: bool) -> Access {
        if write {
            Access::Write
        } else {
            Access::Read
        }
    }

    /// Short lower-case name, as `dsmctl` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::None => "none",
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "segment {:#x}", self.0)
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
