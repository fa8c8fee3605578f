//! Requests a client process sends on a thread's request channel, and the daemon's replies.
//!
//! A channel is strictly request/reply: one reply per request, in order, so no ids are needed.
//! An [`Reply::Opened`] reply carries the segment's memfd as `SCM_RIGHTS` ancillary data on the
//! first byte of its frame.

use serde::{Deserialize, Serialize};

use crate::sync::{SyncKey, SyncOp, SyncResult};
use crate::{Access, NodeId, SegmentId};

/// How `shm_open` was asked to open a segment (the part of its `oflag` and `mode` dsm keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFlags {
    /// `O_CREAT`.
    pub create: bool,
    /// `O_EXCL`.
    pub exclusive: bool,
    /// `O_TRUNC`.
    pub truncate: bool,
    /// Permission bits for a new segment (the process's umask already applied).
    pub mode: u32,
    /// Opened for writing (`O_RDWR`); else read-only.
    pub write: bool,
}

/// A request from a client process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// `shm_open`: find or create the segment `name`.
    Open {
        /// The name as the program passed it (leading `/` included).
        name: &'a str,
        /// How.
        flags: OpenFlags,
    },
    /// `ftruncate` on a segment's descriptor.
    Resize {
        /// The segment.
        segment: SegmentId,
        /// New size in bytes.
        size: u64,
    },
    /// `mmap` of part of a segment: the process will map `[offset, offset + len)`. Repeating it
    /// for a segment the process maps already is harmless.
    Map {
        /// The segment.
        segment: SegmentId,
        /// Offset in the segment, page-aligned.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The segment's state table (one byte per page: the most a process of this node may hold,
    /// as an [`Access`]), so faults on pages the node already holds need no request. The memfd
    /// travels with the reply.
    Table {
        /// The segment.
        segment: SegmentId,
    },
    /// The segment's lock table ([`crate::fastlock`]): mutexes homed on this node that only
    /// its processes use are locked there without a request. Answered with [`Reply::Table`]
    /// and the table's memfd, for a process that may write the segment, on the segment's home
    /// (elsewhere `NotFound`: the process asks the daemon for every lock, as before).
    Locks {
        /// The segment.
        segment: SegmentId,
    },
    /// The process no longer maps any part of the segment.
    Unmap {
        /// The segment.
        segment: SegmentId,
    },
    /// `shm_unlink`.
    Unlink {
        /// The name as the program passed it.
        name: &'a str,
    },
    /// A page fault: the process needs `page` of `segment` readable (or writable).
    Fault {
        /// The segment.
        segment: SegmentId,
        /// Page index in the segment.
        page: u32,
        /// Whether the faulting access was a write.
        write: bool,
    },
    /// An operation on a synchronization object (see [`crate::sync`]). Answered with
    /// [`Reply::Synced`] only if [`SyncOp::answered`].
    Sync {
        /// The object.
        key: SyncKey,
        /// What.
        op: SyncOp,
        /// The process waits for an answer even if `op` is not answered (a release point
        /// with replication on: it returns once the release completed).
        wait: bool,
    },
    /// This node's id and the cluster's size.
    Info,
    /// This node's counters (for programs that report their own cost).
    Counters,
    /// A descriptor this process did not get from `shm_open` (received over `SCM_RIGHTS`, or
    /// inherited across `exec`) refers to a memfd with this device and inode: which segment is
    /// it? Answered with [`Reply::Opened`] (no descriptor travels: the process has it), and the
    /// process then holds the segment as if it had opened it; `NotFound` if it is none of ours.
    Identify {
        /// `st_dev` of the descriptor.
        dev: u64,
        /// `st_ino` of the descriptor.
        ino: u64,
    },
    /// Open the segment with this id (SysV `shmat`): answered as `Open`, memfd included.
    OpenId {
        /// The segment.
        segment: SegmentId,
        /// For writing (not `SHM_RDONLY`).
        write: bool,
    },
    /// Remove the segment's name by id (SysV `IPC_RMID`); the memory goes with the last holder.
    UnlinkId {
        /// The segment.
        segment: SegmentId,
    },
    /// `msync` of DSM memory: a release point (`--replicas`): what this node wrote goes to its
    /// replica nodes. With `wait` (`MS_SYNC`) answered `Done` once it is there; without
    /// (`MS_ASYNC`) not answered.
    Release {
        /// Wait for the replicas.
        wait: bool,
    },
    /// `fchmod`/`fchown` on a segment's descriptor (`None`: unchanged); answered `Done`.
    Chmod {
        /// The segment.
        segment: SegmentId,
        /// New permission bits.
        mode: Option<u32>,
        /// New owner.
        uid: Option<u32>,
        /// New group.
        gid: Option<u32>,
    },
}

impl Request<'_> {
    /// The segment the request touches by id, and whether it would write it: the daemon lets a
    /// process do that only to segments it opened (for writing, if it writes).
    pub fn touches(&self) -> Option<(SegmentId, bool)> {
        use crate::sync::SyncKey;
        match *self {
            Request::Resize { segment, .. } => Some((segment, true)),
            Request::Map { segment, .. } | Request::Table { segment } => Some((segment, false)),
            Request::Locks { segment } => Some((segment, true)),
            Request::Fault { segment, write, .. } => Some((segment, write)),
            Request::Sync {
                key: SyncKey::Object { segment, .. } | SyncKey::Heap(segment),
                ..
            } => Some((segment, false)),
            _ => None,
        }
    }
}

/// The daemon's reply to a [`Request`]. Holds no heap data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// `Open` succeeded; the memfd travels with this frame.
    Opened {
        /// The segment.
        segment: SegmentId,
        /// Its current size.
        size: u64,
        /// The virtual address it is mapped at in every process.
        base: u64,
    },
    /// `Resize` succeeded.
    Resized {
        /// The segment's new size.
        size: u64,
        /// Its base address (unchanged unless no process had mapped it).
        base: u64,
    },
    /// `Map` succeeded: map at `base + offset`.
    Mapped {
        /// The segment's base address.
        base: u64,
    },
    /// `Table` succeeded; the table's memfd travels with this frame.
    Table {
        /// Bytes in the table (one per page of the segment's address span).
        len: u64,
    },
    /// `Unmap` or `Unlink` succeeded.
    Done,
    /// `Fault` succeeded: the process may now access the page this much.
    Granted {
        /// Access granted (at least what the fault needed).
        access: Access,
        /// Revocations the daemon had sent before this grant. If the process has applied a
        /// revocation numbered higher, the grant may be stale: fault again.
        seq: u64,
    },
    /// The outcome of a `Sync` request.
    Synced(SyncResult),
    /// The answer to `Info`.
    Info {
        /// This node.
        node: NodeId,
        /// Nodes in the cluster (configured members, this one included).
        nodes: u32,
    },
    /// The answer to `Counters`.
    Counters(NodeCounters),
    /// The request failed.
    Failed(ShmError),
}

/// A node's running totals, as `dsm_counters()` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCounters {
    /// Page faults the daemon served (faults served from the state table are not counted).
    pub faults: u64,
    /// Messages sent to peers (coherence, directory and lock service).
    pub messages_sent: u64,
    /// Messages received from peers.
    pub messages_received: u64,
    /// Lock, condition, barrier and allocation requests of local processes.
    pub sync_requests: u64,
}

/// Why a client request failed; the shim turns it into an errno (or SIGBUS for a fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShmError {
    /// No segment of that name (`ENOENT`).
    NotFound,
    /// `O_CREAT|O_EXCL` and the name exists (`EEXIST`).
    AlreadyExists,
    /// A malformed name, size, offset or length (`EINVAL`).
    InvalidArgument,
    /// The name is longer than the daemon accepts (`ENAMETOOLONG`).
    NameTooLong,
    /// The size exceeds what the segment's address span or the daemon allows (`EFBIG`).
    TooLarge,
    /// The daemon could not allocate memory or address space (`ENOMEM`).
    NoMemory,
    /// The segment was removed (unlinked and unmapped everywhere): its memory is gone.
    Gone,
    /// The fault is beyond the segment's end (SIGBUS, as for a file mapping).
    OutOfRange,
    /// The page did not arrive in time: a peer is down or unreachable (SIGBUS for a fault).
    TimedOut,
    /// The daemon failed for a reason of its own; its log says which (`EIO`).
    Internal,
    /// The caller's user and groups may not do this to the segment, as tmpfs would refuse
    /// (`EACCES`).
    PermissionDenied,
    /// No copy of the page survives: the node that held the only one died (SIGBUS for a
    /// fault, `EIO` for a system call).
    Lost,
}

impl ShmError {
    /// A short explanation for a person.
    pub fn describe(self) -> &'static str {
        match self {
            ShmError::NotFound => "no such segment",
            ShmError::AlreadyExists => "segment already exists",
            ShmError::InvalidArgument => "invalid argument",
            ShmError::NameTooLong => "name too long",
            ShmError::TooLarge => "size exceeds the segment's address span",
            ShmError::NoMemory => "daemon out of memory or address space",
            ShmError::Gone => "segment was removed",
            ShmError::OutOfRange => "access beyond the end of the segment",
            ShmError::TimedOut => "the page did not arrive in time (a peer down or unreachable)",
            ShmError::Internal => "internal daemon error (see the dsmd log)",
            ShmError::PermissionDenied => "permission denied by the segment's owner and mode",
            ShmError::Lost => "no copy of the page survives (the node that held it died)",
        }
    }
}

/// What the daemon tells a process on its session connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Push {
    /// Lower your access to pages `page..page + count` to at most `access`, then answer
    /// [`PushAck::Revoked`].
    Revoke {
        /// The segment.
        segment: SegmentId,
        /// The first page's index in it.
        page: u32,
        /// Pages in the run (at least 1).
        count: u32,
        /// The most the process may keep.
        access: Access,
        /// This revocation's number (increasing).
        seq: u64,
    },
    /// Releases wait for replicas from now on (`on`: another node joined a node that was
    /// alone), or no longer need to. Not answered.
    Replicating {
        /// Whether they do.
        on: bool,
    },
}

/// A process's answer on its session connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushAck {
    /// The revocation numbered `seq` is applied.
    Revoked {
        /// Its number.
        seq: u64,
    },
}

/// Largest segment name, in bytes (as `NAME_MAX` for `/dev/shm` files).
pub const MAX_NAME_LEN: usize = 255;
