//! `dsmctl` requests and the daemon's answers.

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// A request from `dsmctl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtlRequest {
    /// Everything `dsmctl status` shows.
    Status,
    /// Every page of one segment (`dsmctl pages`), by name or id.
    Pages {
        /// `/name`, `name` or the id in hex.
        segment: String,
    },
    /// Counters and fault latencies (`dsmctl stats`).
    Stats,
    /// The synchronization objects this node is home to (`dsmctl locks`).
    Locks,
    /// Every segment of the cluster, from the directory (`dsmctl segments`).
    Segments,
    /// Removes a segment's name as `shm_unlink` would, with the asking process's permissions
    /// (`dsmctl rm`).
    Remove {
        /// `/name` or `name`.
        name: String,
    },
}

/// The daemon's answer to a [`CtlRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtlReply {
    /// Answer to [`CtlRequest::Status`].
    Status(Status),
    /// Answer to [`CtlRequest::Pages`].
    Pages(Pages),
    /// Answer to [`CtlRequest::Stats`].
    Stats(Box<Stats>),
    /// Answer to [`CtlRequest::Locks`].
    Locks(Vec<LockStatus>),
    /// Answer to [`CtlRequest::Segments`].
    Segments(Vec<ClusterSegment>),
    /// Answer to [`CtlRequest::Remove`]: the name is gone cluster-wide.
    Removed,
    /// The request failed.
    Error(String),
}

/// One synchronization object with state at its home (this node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockStatus {
    /// Which object: `/segment+0xoffset`, `lock N`, `barrier 0x…`, `heap of /segment`.
    pub object: String,
    /// `mutex`, `condition`, `barrier`, `rwlock`, `semaphore` or `heap`.
    pub kind: String,
    /// Who holds it: `node N session S thread T`.
    pub holders: Vec<String>,
    /// Threads queued on it.
    pub waiters: u64,
    /// What else there is to know (a robust mutex's state, a semaphore's value, arrivals).
    pub detail: String,
}

/// A node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This node.
    pub node: NodeId,
    /// `dsmd` version.
    pub version: String,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// Address peers connect to.
    pub listen: String,
    /// Unix socket clients connect to.
    pub socket: String,
    /// Configured peers.
    pub peers: Vec<PeerStatus>,
    /// Segments this node knows.
    pub segments: Vec<SegmentStatus>,
    /// Attached client processes.
    pub processes: Vec<ProcessStatus>,
    /// This daemon's incarnation (a new one each start).
    pub incarnation: u64,
    /// The cluster's members as this node's copy of the Raft log has them.
    pub members: Vec<MemberStatus>,
    /// The Raft leader as far as this node knows.
    pub leader: Option<NodeId>,
    /// The Raft term.
    pub term: u64,
    /// The last log index applied here.
    pub applied: u64,
}

/// One member of the cluster, as committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Its node id.
    pub node: NodeId,
    /// Its address (as configured here; empty for this node if it does not listen).
    pub addr: String,
    /// The incarnation that joined last.
    pub incarnation: u64,
    /// `alive` or `dead` (as agreed), and whether this node's link to it is up.
    pub state: String,
    /// Whether this node's link to it is up (always true for this node).
    pub linked: bool,
}

/// One configured peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its node id.
    pub node: NodeId,
    /// Its address.
    pub addr: String,
    /// Whether a connection is up.
    pub connected: bool,
    /// For how long, if up (ms).
    pub up_for_ms: Option<u64>,
    /// Messages sent to it.
    pub messages_out: u64,
    /// Messages received from it.
    pub messages_in: u64,
    /// Bytes sent to it.
    pub bytes_out: u64,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// Why it is not linked, when it is not and the reason is known (a different cluster key,
    /// another cluster, refused, unreachable); empty otherwise.
    pub problem: String,
}

/// The pages of one segment on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pages {
    /// The segment's name.
    pub segment: String,
    /// Its id.
    pub id: u64,
    /// One entry per page.
    pub pages: Vec<PageInfo>,
}

/// One page on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageInfo {
    /// Page index.
    pub page: u32,
    /// This node's access.
    pub access: crate::Access,
    /// The most a local process may hold.
    pub local: crate::Access,
    /// Whether this node owns it.
    pub owner: bool,
    /// The owner, as far as this node knows (itself if `owner`).
    pub probable_owner: u32,
    /// Owner only: nodes with read copies.
    pub copyset: Vec<u32>,
    /// Whether a transfer, invalidation or revocation is under way.
    pub busy: bool,
    /// Written here since its last replication (the next release sends it to the replicas).
    pub dirty: bool,
    /// Owner: the version of its last replication from here (counted in its ownership epoch).
    pub replicated: Option<u32>,
    /// Owner: that replication is still under way.
    pub replicating: bool,
    /// A replica this node keeps for the page's owner: its epoch and version (the newest
    /// survives the owner's death: docs/protocol.md, "Replicas at release points").
    pub replica: Option<(u16, u32)>,
}

/// Counters and fault latencies of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// This node.
    pub node: NodeId,
    /// Manager algorithm.
    pub manager: String,
    /// Read faults granted without a peer.
    pub local_reads: u64,
    /// Write faults granted without a peer.
    pub local_writes: u64,
    /// Read faults that needed a peer.
    pub remote_reads: u64,
    /// Write faults that needed a peer.
    pub remote_writes: u64,
    /// Write faults on a page held read-only.
    pub upgrades: u64,
    /// Faults that failed.
    pub failed: u64,
    /// Of those, faults on a page no copy of which survived a node's death (SIGBUS).
    pub lost: u64,
    /// Pages looked for among the live nodes (the owner this node knew of died).
    pub located: u64,
    /// Pages whose owner died taken over from a surviving copy (as decided here).
    pub adopted: u64,
    /// Replicas sent at release points (a page to one replica node).
    pub replicas_sent: u64,
    /// Replicas this node holds of pages owned elsewhere.
    pub replicas_held: u64,
    /// Pages taken over here from a replica (their owner died with no copy elsewhere).
    pub from_replica: u64,
    /// Pages asked for ahead of a sequential reader (read-ahead).
    pub prefetched: u64,
    /// Pages read ahead, since lost by this node, that a local process had opened.
    pub prefetch_opened: u64,
    /// Pages read ahead, since lost by this node, that no local process opened: fetched for
    /// nothing. (A page the fault handler opened in a run with others counts as opened.)
    pub prefetch_wasted: u64,
    /// Pages read ahead that this node holds and no local process has opened yet.
    pub prefetch_unopened: u64,
    /// Requests passed on to another node.
    pub forwarded: u64,
    /// Invalidations sent.
    pub invalidations_sent: u64,
    /// Pages sent to peers.
    pub pages_sent: u64,
    /// Pages received from peers.
    pub pages_received: u64,
    /// Coherence messages sent.
    pub messages_sent: u64,
    /// Local revocations.
    pub revocations: u64,
    /// Lock, condition, barrier and allocation requests of local processes.
    pub sync_requests: u64,
    /// Lock-service operations this node applied as an object's home.
    pub sync_served: u64,
    /// Lock-service messages sent to peers.
    pub sync_messages: u64,
    /// Synchronization objects this node is home to that hold state now.
    pub sync_objects: u64,
    /// Mutexes homed here delegated to this node's processes (locked without a request while
    /// only they use them), since the start.
    pub sync_delegations: u64,
    /// Of those, taken back (another thread asked, a process ended, or idle for a second).
    pub sync_recalls: u64,
    /// Latency of faults served without a peer (µs), over the most recent ones.
    pub local_latency_us: Percentiles,
    /// Latency of faults that needed a peer (µs), over the most recent ones.
    pub remote_latency_us: Percentiles,
    /// A remote fault's stages on this node, µs: its request read → this node's request sent
    /// to a peer; → the peer's grant received (the network both ways and the peers' work);
    /// → the answer sent to the process.
    pub remote_stages_us: [Percentiles; 3],
    /// Every fault served without a peer since the daemon started, as a cumulative histogram.
    pub local_histogram: Histogram,
    /// Every fault that needed a peer since the daemon started.
    pub remote_histogram: Histogram,
    /// The pages processes of this node faulted on most (faults that reached the daemon),
    /// most first, at most ten; counted since the daemon started (or since the count was
    /// last cleared, at 65,536 pages).
    pub hot_pages: Vec<HotPage>,
}

/// A page processes fault on often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotPage {
    /// Its segment's name (`/name`, or the id in hex once unlinked).
    pub segment: String,
    /// The page's index.
    pub page: u32,
    /// Faults on it that reached the daemon.
    pub faults: u64,
}

/// A cumulative latency histogram since the daemon started (Prometheus' shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Upper bounds of the buckets, µs ([`Histogram::BOUNDS_US`]).
    pub bounds_us: Vec<u64>,
    /// Per bound, how many samples were at most it (cumulative).
    pub cumulative: Vec<u64>,
    /// Samples.
    pub count: u64,
    /// Their sum, µs.
    pub sum_us: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    /// The buckets' upper bounds, µs: from a local hit to a fault timeout.
    pub const BOUNDS_US: [u64; 16] = [
        5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
        5_000_000, 10_000_000,
    ];

    /// An empty histogram with the standard buckets (as [`Default`]).
    pub fn new() -> Histogram {
        Histogram {
            bounds_us: Self::BOUNDS_US.to_vec(),
            cumulative: vec![0; Self::BOUNDS_US.len()],
            count: 0,
            sum_us: 0,
        }
    }

    /// Adds one sample.
    pub fn record(&mut self, us: u64) {
        for (bound, n) in self.bounds_us.iter().zip(self.cumulative.iter_mut()) {
            if us <= *bound {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }
}

/// One segment of the cluster, as the directory has it (`dsmctl segments`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSegment {
    /// Its name (with the leading `/`), or `None` once unlinked (still mapped somewhere).
    pub name: Option<String>,
    /// `posix` (`shm_open`), `sysv` (a SysV key or IPC_PRIVATE) or `semaphore` (a named one).
    pub kind: String,
    /// Cluster-wide id.
    pub id: u64,
    /// Size in bytes.
    pub size: u64,
    /// Owner and group ids.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Nodes where a process opened or maps it.
    pub attached: Vec<NodeId>,
    /// Pages this node holds of it (resident in its memfd), if it holds it at all.
    pub pages_here: Option<u64>,
}

/// Percentiles of a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

/// One segment, as this node holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentStatus {
    /// Its name, or `None` once unlinked (still mapped somewhere).
    pub name: Option<String>,
    /// Cluster-wide id.
    pub id: u64,
    /// Size in bytes.
    pub size: u64,
    /// Base virtual address.
    pub base: u64,
    /// Permission bits it was created with.
    pub mode: u32,
    /// Pages in the segment.
    pub pages: u64,
    /// Pages this node holds a valid copy of.
    pub resident: u64,
    /// Pages this node holds read-only.
    pub readable: u64,
    /// Pages this node holds writable.
    pub writable: u64,
    /// Local processes that map it.
    pub mappings: u64,
}

/// One attached client process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// Process id.
    pub pid: u32,
    /// Session id the daemon gave it.
    pub session: u64,
    /// Names (or ids) of the segments it maps.
    pub segments: Vec<String>,
    /// Faults it has asked the daemon to serve.
    pub faults: u64,
}
