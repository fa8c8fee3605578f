//! Messages between daemons about pages (the coherence protocol's own vocabulary).
//!
//! A [`PeerMsg::Grant`] carries the page's contents: on the wire, its frame is followed by
//! exactly [`crate::PAGE_SIZE`] raw bytes, read straight from and written straight into the
//! segment's memfd.

use serde::{Deserialize, Serialize};

use crate::{NodeId, SegmentId};

/// One page of one segment, the unit the protocol keeps coherent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PageKey {
    /// The segment.
    pub segment: SegmentId,
    /// Page index in it.
    pub page: u32,
}

/// A set of nodes, by their index in the cluster's sorted member list (at most 64 nodes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NodeSet(pub u64);

impl NodeSet {
    /// The empty set.
    pub const EMPTY: NodeSet = NodeSet(0);

    /// Whether member `index` is in the set.
    pub fn contains(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }

    /// The set with `index` added.
    pub fn with(self, index: usize) -> NodeSet {
        NodeSet(self.0 | (1 << index))
    }

    /// The set without `index`.
    pub fn without(self, index: usize) -> NodeSet {
        NodeSet(self.0 & !(1 << index))
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Member indices, ascending.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |i| self.contains(*i))
    }

    /// Number of members.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }
}

/// A coherence message from one daemon to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeerMsg {
    /// `requester` needs a copy (`write: false`) or ownership (`write: true`) of `key`. Sent to
    /// the probable owner (dynamic manager) or the page's manager, and forwarded from there.
    Request {
        /// The page.
        key: PageKey,
        /// Ownership wanted.
        write: bool,
        /// Who faulted.
        requester: NodeId,
        /// The requester's number for this request (echoed in [`PeerMsg::Unknown`]).
        seq: u32,
        /// The requester daemon's incarnation: a request of a daemon that has restarted since
        /// is not served to the new one.
        incarnation: u64,
        /// Times it was passed on: past the number of nodes it is going round in circles (hints
        /// left by a dead owner), and its requester is told to locate the page.
        hops: u8,
    },
    /// To a requester: its request `seq` ends here, because this node does not know where the
    /// page is (the owner it knew of died): locate the page.
    Unknown {
        /// The page.
        key: PageKey,
        /// The request.
        seq: u32,
    },
    /// Who owns `key`, and who holds a copy? Asked of every live node when the owner this node
    /// knew of died (dynamic manager). Answered with [`PeerMsg::Located`] once the answering
    /// node has heard of `deaths` deaths (so nothing more arrives from the dead); from then on
    /// the answering node is *frozen* for `key` until the sender's [`PeerMsg::Thaw`]: as the
    /// owner it grants nothing and starts no invalidation, and every change of what it answered
    /// is sent again.
    Locate {
        /// The page.
        key: PageKey,
        /// How many node deaths the sender had heard of.
        deaths: u64,
        /// The sender's number for this round of asking (a new one each time it asks again).
        round: u32,
    },
    /// The answer to [`PeerMsg::Locate`], and again whenever it changes while frozen.
    Located {
        /// The page.
        key: PageKey,
        /// The round answered.
        round: u32,
        /// The sender owns it.
        owner: bool,
        /// The sender holds a copy (not being invalidated).
        copy: bool,
        /// The latest ownership epoch the sender knows of.
        epoch: u16,
        /// The node the sender handed ownership to at `epoch`, if it did (that grant may still
        /// be on its way).
        handed: Option<NodeId>,
        /// How many node deaths the sender had heard of.
        deaths: u64,
        /// The replica of the page the sender holds (no copy: the owner's bytes as of one of
        /// its releases), as (ownership epoch, version), if any.
        replica: Option<(u16, u32)>,
    },
    /// The locator's decision: the page's owner died, no live node owns it and no ownership is
    /// on its way, and the receiver's copy (the latest) is the page now. The receiver owns it
    /// from `epoch` on; `copyset` holds every other live node (any may hold a copy).
    Adopt {
        /// The page.
        key: PageKey,
        /// The new ownership epoch (later than any a live node knew of).
        epoch: u16,
        /// The other holders of copies.
        copyset: NodeSet,
        /// Take the replica the receiver said it holds, of this (epoch, version), rather than
        /// its copy (`None`: its copy).
        replica: Option<(u16, u32)>,
    },
    /// The end of a [`PeerMsg::Locate`]: the receiver is no longer frozen for `key` by the
    /// sender; `owner` is where the page is now (`NodeId(0)` if no copy survived).
    Thaw {
        /// The page.
        key: PageKey,
        /// The page's owner.
        owner: NodeId,
    },
    /// Fixed and central managers: the page's owner died and no copy is known to survive.
    Lost {
        /// The page.
        key: PageKey,
    },
    /// The owner's answer to a request: the page's contents follow the frame. For a write, the
    /// sender gave up ownership and `copyset` lists the nodes whose copies the new owner must
    /// invalidate.
    Grant {
        /// The page.
        key: PageKey,
        /// Ownership granted.
        write: bool,
        /// Holders of read copies (for a write grant).
        copyset: NodeSet,
        /// The page's ownership epoch: the sender's for a read grant, the new owner's (one
        /// more) for a write grant. A read grant older than an invalidation already
        /// acknowledged is stale and refused. Compared as serial numbers (wrapping).
        epoch: u16,
        /// How many node deaths the sender had heard of: a copyset bit of a node that died
        /// after that names its earlier daemon, whose copy is gone (not the new one's).
        deaths: u64,
    },
    /// Drop your copy of `key`; `new_owner` is about to write it.
    Invalidate {
        /// The page.
        key: PageKey,
        /// Where the page lives from now on.
        new_owner: NodeId,
        /// The new owner's ownership epoch.
        epoch: u16,
    },
    /// The sender has dropped its copy (and revoked it from its local processes).
    InvalidateAck {
        /// The page.
        key: PageKey,
    },
    /// Fixed and central managers: the requester has its page; the manager may serve the next
    /// request for `key`.
    Confirm {
        /// The page.
        key: PageKey,
    },
    /// The owner's bytes of `key` as of a release (`--replicas`): kept by the receiver, which
    /// has no copy, so that the page survives the owner's death. The page's contents follow
    /// the frame, as after a `Grant`.
    Replica {
        /// The page.
        key: PageKey,
        /// The owner's ownership epoch.
        epoch: u16,
        /// The owner's replication count for the page in that epoch (later is newer).
        version: u32,
    },
    /// The receiver of a [`PeerMsg::Replica`] holds it (or something newer).
    ReplicaAck {
        /// The page.
        key: PageKey,
        /// As in the replica.
        epoch: u16,
        /// As in the replica.
        version: u32,
    },
}

impl PeerMsg {
    /// The page the message is about.
    pub fn key(&self) -> PageKey {
        match *self {
            PeerMsg::Request { key, .. }
            | PeerMsg::Grant { key, .. }
            | PeerMsg::Invalidate { key, .. }
            | PeerMsg::InvalidateAck { key }
            | PeerMsg::Confirm { key }
            | PeerMsg::Unknown { key, .. }
            | PeerMsg::Locate { key, .. }
            | PeerMsg::Located { key, .. }
            | PeerMsg::Adopt { key, .. }
            | PeerMsg::Thaw { key, .. }
            | PeerMsg::Replica { key, .. }
            | PeerMsg::ReplicaAck { key, .. }
            | PeerMsg::Lost { key } => key,
        }
    }
}

/// The first frame each side of a peer connection sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHello {
    /// Always [`crate::MAGIC`].
    pub magic: u32,
    /// The sender's [`crate::PROTOCOL_VERSION`].
    pub version: u32,
    /// The cluster's name: daemons of different clusters refuse each other.
    pub cluster: String,
    /// The sender's node id.
    pub node: NodeId,
    /// The sender's manager algorithm (`dynamic`, `fixed`, `central`): all nodes must agree.
    pub manager: String,
    /// Differs each time the sender's daemon starts: a new one means the old one died, and with
    /// it every process it served.
    pub incarnation: u64,
    /// The sender is a member of a running cluster (a node that is not joins one; a new
    /// cluster starts only when no configured node is in one).
    pub formed: bool,
    /// The receiver's incarnation the sender last talked to (0: none), and how many numbered
    /// messages it received from it: if that is the receiver now, it sends again from the
    /// next one (what a broken connection lost), and nothing twice.
    pub peer_incarnation: u64,
    /// See `peer_incarnation`.
    pub received: u64,
    /// Where the sender's peers reach it (`--advertise`, else `--listen`; an unspecified IP
    /// there means the one this connection comes from), if it listens.
    pub listen: Option<std::net::SocketAddr>,
    /// The members the sender knows and where they listen: a node that joins through it
    /// (`--join`) links to them all.
    pub roster: Vec<(NodeId, std::net::SocketAddr)>,
}

/// A frame between daemons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerFrame {
    /// Introduction, both ways.
    Hello(PeerHello),
    /// The hello was refused; the connection closes.
    Refused {
        /// Why, for the log.
        reason: String,
        /// The refused daemon cannot be right by waiting (another cluster's name or manager,
        /// another version, or its node id taken by a live daemon): it must stop.
        fatal: bool,
    },
    /// A coherence message. A `Grant` is followed by exactly [`crate::PAGE_SIZE`] raw bytes.
    Coherence(PeerMsg),
    /// Membership and the segment directory: a Raft message (raft-rs's protobuf encoding).
    Raft(Vec<u8>),
    /// Nothing else to say for a while: the link and the daemon behind it are alive (a link
    /// silent for longer than a few pings is taken down).
    Ping,
    /// The sender has received this many numbered messages (coherence, lock service, Raft)
    /// from the receiver's daemon: it may forget them.
    Ack(u64),
    /// The lock and barrier service.
    Sync(crate::sync::SyncMsg),
}

/// A segment as the directory knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Cluster-wide id.
    pub id: SegmentId,
    /// Name without the leading `/` (empty once unlinked).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Base address in every process on every node.
    pub base: u64,
    /// Address space reserved from `base`.
    pub span: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner (the creator's user id).
    pub uid: u32,
    /// Group (the creator's group id).
    pub gid: u32,
    /// The incarnation of the creating node's daemon: once it is dead, no node owns the
    /// segment's untouched pages (a restarted creator does not either).
    pub creator_incarnation: u64,
}

/// Who asks, as the asking node's daemon learned it from the process's socket (`SO_PEERCRED`
/// and the process's supplementary groups). Across hosts, user ids are taken to mean the same
/// users, as NFS does without Kerberos.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (at most [`Caller::MAX_GROUPS`]).
    pub groups: Vec<u32>,
}

impl Caller {
    /// Supplementary groups kept at most.
    pub const MAX_GROUPS: usize = 64;

    /// Whether the caller may read (and, if `write`, write) what `mode` allows to owner
    /// `uid`/group `gid`, as the kernel decides for a file; root may do anything.
    pub fn permits(&self, uid: u32, gid: u32, mode: u32, write: bool) -> bool {
        if self.uid == 0 {
            return true;
        }
        let bits = if self.uid == uid {
            mode >> 6
        } else if self.gid == gid || self.groups.contains(&gid) {
            mode >> 3
        } else {
            mode
        } & 7;
        bits & 4 != 0 && (!write || bits & 2 != 0)
    }
}

/// A segment directory operation: an entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirOp {
    /// `shm_open`.
    Open {
        /// The name.
        name: String,
        /// How, as the program asked.
        flags: crate::client::OpenFlags,
        /// Who.
        who: Caller,
    },
    /// `ftruncate` (the segment moves only if no node maps it).
    Resize {
        /// The segment.
        segment: SegmentId,
        /// The new size.
        size: u64,
    },
    /// `shm_unlink`.
    Unlink {
        /// The name.
        name: String,
        /// Who (only the owner or root may remove a name, as in sticky `/dev/shm`).
        who: Caller,
    },
    /// The sending node now maps the segment (its first local mapping).
    Attach {
        /// The segment.
        segment: SegmentId,
    },
    /// The sending node no longer maps the segment (its last local mapping went).
    Detach {
        /// The segment.
        segment: SegmentId,
    },
    /// Open the segment with this id (SysV `shmat` by id), also after its name was removed,
    /// while it lives.
    OpenId {
        /// The segment.
        segment: SegmentId,
        /// Who, and whether for writing.
        who: Caller,
        /// For writing.
        write: bool,
    },
    /// Remove the segment's name by its id (SysV `IPC_RMID`).
    UnlinkId {
        /// The segment.
        segment: SegmentId,
        /// Who.
        who: Caller,
    },
    /// A process of the sending node is about to map the segment, the node's first: from the
    /// answer on the base cannot move, and the answer carries it.
    Map {
        /// The segment.
        segment: SegmentId,
    },
    /// The sending node's last mapping of the segment went (it may still hold it open).
    Unmap {
        /// The segment.
        segment: SegmentId,
    },
    /// `fchmod`/`fchown` of the segment: new mode and/or owner (`None`: unchanged), as the
    /// kernel allows them (the owner changes the mode and, to one of its groups, the group;
    /// root anything).
    Chmod {
        /// The segment.
        segment: SegmentId,
        /// Who.
        who: Caller,
        /// New permission bits.
        mode: Option<u32>,
        /// New owner.
        uid: Option<u32>,
        /// New group.
        gid: Option<u32>,
    },
}

/// What applying a directory operation tells every node (each applies the log itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirMsg {
    /// A segment's size changed.
    Sized {
        /// The segment.
        segment: SegmentId,
        /// Its size.
        size: u64,
    },
    /// A segment is gone (unlinked and mapped nowhere).
    Removed {
        /// The segment.
        segment: SegmentId,
    },
    /// A segment's metadata changed: it grew past its address
    /// span and moved (only while no node maps it), or its owner or mode changed.
    Moved(SegmentMeta),
}
