//! A node's protocol engine: Li & Hudak's managers for every page of every segment.
//!
//! ```text
//!  page on a node:   idle ──local fault, not enough access──► pending (request out)
//!                     ▲                                          │ Grant
//!                     │◄──────── all acks ◄── invalidating ◄─────┘ (write, copyset ≠ ∅)
//!                     │◄──────── Revoked ◄─── revoking ◄── request to serve / invalidation
//! ```
//!
//! While a page is in transition, local faults and remote requests for it wait in [`Busy`];
//! invalidations never wait (a waiting invalidation could deadlock against its own sender).
//! Local processes lose access (`Output::Revoke`, answered by `Input::Revoked`) before the node
//! does: a page never leaves, or is downgraded, while a local process could still write it.

mod replicas;
pub use replicas::Replication;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};

use dsm_proto::peer::{NodeSet, PageKey, PeerMsg};
use dsm_proto::{Access, NodeId, SegmentId};

use crate::page::{
    later, latest, AfterRevoke, Busy, Freeze, Locating, Managed, PageState, Queued, Report, Waiting,
};

/// The probable owner of a page whose owner this node lost track of (it died): the page must
/// be located before it is asked for.
pub const LOST: NodeId = NodeId(0);

/// Identifies one local fault; chosen by the driver, echoed back in the [`Output`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FaultId(pub u64);

/// Which of Li & Hudak's managers locates a page's owner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ManagerKind {
    /// Dynamic distributed manager: requests follow probable owners; ownership carries the
    /// copyset; forwarding a write request points the forwarder at the requester.
    #[default]
    Dynamic,
    /// Fixed distributed manager: page `p` is managed by member `p mod N`.
    Fixed,
    /// Centralized manager: the lowest node id manages every page.
    Central,
}

impl ManagerKind {
    /// The name `dsmd --manager` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            ManagerKind::Dynamic => "dynamic",
            ManagerKind::Fixed => "fixed",
            ManagerKind::Central => "central",
        }
    }
}

/// A node's fixed facts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    /// This node.
    pub me: NodeId,
    /// The nodes the cluster was formed of (ids 1 to 64): the fixed and central managers'
    /// nodes. Nodes that join later are members too (`Input::PeerUp`), never managers.
    pub members: Vec<NodeId>,
    /// The manager algorithm (the same on every node).
    pub manager: ManagerKind,
    /// How long a node may be silent before it may be declared dead; a local fault still
    /// waiting after twice this long fails (`FaultError::TimedOut`): long enough for a dead
    /// owner's death to be agreed (this long after its link went down, plus an election when
    /// it led) and its page taken over.
    pub fault_timeout_ms: u64,
    /// Most pages to read ahead of a sequential run of read misses (0: no read-ahead).
    pub readahead: u32,
    /// This daemon's incarnation (a new one each start).
    pub incarnation: u64,
    /// Other nodes each page written here is copied to at a release (`Input::Release`); 0:
    /// none.
    pub replicas: u8,
}

/// An event the driver hands to the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A local process faulted on a page (the driver checked it is inside the segment).
    Fault {
        /// Echoed back in the grant or failure.
        id: FaultId,
        /// The page.
        key: PageKey,
        /// Whether the access was a write.
        write: bool,
        /// Pages in the segment (read-ahead stops there).
        pages: u32,
        /// Now, in ms on the driver's clock.
        now_ms: u64,
    },
    /// Local processes gave up access as asked by the last `Output::Revoke` for `key`.
    Revoked {
        /// The page.
        key: PageKey,
    },
    /// Given just before [`Input::Revoked`] for a page whose replica was sent while local
    /// writers could still store to it ([`Node::checking`]): its bytes now differ from those
    /// the replica carried (the driver keeps those until the revocation ends and compares).
    Rewritten {
        /// The page.
        key: PageKey,
    },
    /// A message from a peer (for a `Grant`, the driver stored the page's contents first).
    Peer {
        /// The sender.
        from: NodeId,
        /// The message.
        msg: PeerMsg,
    },
    /// Time passes: local faults waiting too long fail.
    Tick {
        /// Now, in ms.
        now_ms: u64,
    },
    /// A segment is gone everywhere: forget its pages, fail what waits on them.
    SegmentRemoved {
        /// The segment.
        segment: SegmentId,
    },
    /// The cluster agreed (committed) that `node`'s daemon is dead: its copies are gone,
    /// nothing more comes from it, nothing is sent to it.
    PeerDown {
        /// The node.
        node: NodeId,
    },
    /// `node`'s daemon `incarnation` is a member (it joined; a new one after its old one's
    /// `PeerDown` holds no copies).
    PeerUp {
        /// The node.
        node: NodeId,
        /// Its incarnation: requests naming another one of it are not served.
        incarnation: u64,
    },
    /// This daemon joined a running cluster: the node deaths agreed before (their count,
    /// and for each member that died, the count just after its last death).
    History {
        /// Deaths so far.
        deaths: u64,
        /// Members' last deaths.
        died_at: Vec<(NodeId, u64)>,
        /// The log index of this daemon's join: segments with a lower serial predate it.
        joined_at: u64,
        /// Members dead now (not rejoined).
        down: Vec<NodeId>,
    },
    /// The nodes this one cannot reach could form a majority without it (`on: true`), so they
    /// may soon declare it dead and take its pages: write access stops — local writers are
    /// revoked to read, write faults wait — until it can reach them again (`on: false`).
    Fence {
        /// Fenced or not.
        on: bool,
    },
    /// `segment` was created by an incarnation that is dead (this node's own earlier one,
    /// perhaps): no node owns its untouched pages any more.
    Orphaned {
        /// The segment.
        segment: SegmentId,
    },
    /// A release point (a local unlock, post, barrier, exit, or the background flush): every
    /// page written here since its last replication is copied to the replica nodes, then
    /// `Output::Released { id }`.
    Release {
        /// Echoed back.
        id: u64,
    },
}

/// An action the node asks the driver to carry out, in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// Let the faulting process access the page this much.
    Grant {
        /// The fault.
        id: FaultId,
        /// The page.
        key: PageKey,
        /// At least what the fault needs, at most what the node holds.
        access: Access,
        /// Whether the fault had to wait (for a peer, or behind another transfer).
        waited: bool,
    },
    /// The fault cannot be served.
    Fail {
        /// The fault.
        id: FaultId,
        /// Why.
        error: FaultError,
    },
    /// Send to a peer. A `Grant` carries the page: read it from the node's copy now.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        msg: PeerMsg,
    },
    /// Lower every local process's access to the page to at most `to`, then feed
    /// `Input::Revoked`.
    Revoke {
        /// The page.
        key: PageKey,
        /// The most they may keep.
        to: Access,
    },
    /// Keep this node's copy of the page, as it is now, as its replica (it just handed
    /// ownership on): copy the page's bytes to the replica store.
    KeepReplica {
        /// The page.
        key: PageKey,
    },
    /// The page's bytes are its replica's now (this node takes a dead owner's page over from
    /// it): copy the replica store's bytes into the page.
    RestoreReplica {
        /// The page.
        key: PageKey,
    },
    /// Local processes may take this much of the page without asking now (see
    /// [`Node::grantable`]): publish it.
    Opened {
        /// The page.
        key: PageKey,
    },
    /// The release `id` is done: what was written here before it is on the replica nodes.
    Released {
        /// As in `Input::Release`.
        id: u64,
    },
    /// A peer broke the protocol; the message was ignored. For the log.
    Violation {
        /// The peer.
        from: NodeId,
        /// What was wrong.
        what: &'static str,
    },
}

/// Why a fault cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultError {
    /// The segment was removed.
    UnknownSegment,
    /// The page did not arrive in time (a peer down or unreachable).
    TimedOut,
    /// No copy of the page survives: the node that had the only one died.
    Lost,
}

/// Counters for `dsmctl stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Read faults granted without asking a peer.
    pub local_reads: u64,
    /// Write faults granted without asking a peer.
    pub local_writes: u64,
    /// Read faults that needed a peer.
    pub remote_reads: u64,
    /// Write faults that needed a peer (for a page this node had no copy of).
    pub remote_writes: u64,
    /// Write faults on a page this node held read-only.
    pub upgrades: u64,
    /// Requests this node passed on to another node.
    pub forwarded: u64,
    /// Invalidations this node sent.
    pub invalidations_sent: u64,
    /// Pages this node sent.
    pub pages_sent: u64,
    /// Pages this node received.
    pub pages_received: u64,
    /// Messages sent to peers.
    pub messages_sent: u64,
    /// Local revocations asked of the driver.
    pub revocations: u64,
    /// Faults that failed.
    pub failed: u64,
    /// Pages requested ahead of a sequential run of read misses.
    pub prefetched: u64,
    /// Pages looked for (the owner this node knew of died).
    pub located: u64,
    /// Faults failed because no copy of their page survives.
    pub lost: u64,
    /// Pages whose owner died taken over from a surviving copy (decided here).
    pub adopted: u64,
    /// Replicas sent (a page to one replica node).
    pub replicas_sent: u64,
    /// Replicas this node holds of other nodes' pages.
    pub replicas_held: u64,
    /// Pages taken over from a replica (not a copy) here.
    pub from_replica: u64,
}

/// A segment's run of read misses, for read-ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Run {
    /// The last page read ahead (or missed).
    end: u32,
    /// How many pages the next read-ahead asks for.
    window: u32,
}

/// A request this node sent or passed on, and to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Sent {
    to: NodeId,
    key: PageKey,
    requester: NodeId,
    seq: u32,
}

/// What local processes of a fenced node (see `Input::Fence`) may have of a page: nothing
/// written, and nothing read that another node could take over and change — only a page this
/// node owns with no copy elsewhere stays readable.
fn fence_cap(me: NodeId, page: &PageState) -> Access {
    if page.probable_owner == me && page.copyset.is_empty() {
        Access::Read
    } else {
        Access::None
    }
}

/// A node's index in node sets ([`NodeSet`]): its id − 1, for ids 1 to 64 (a cluster's
/// node ids), so that every node agrees on it however and whenever nodes joined.
pub fn index(node: NodeId) -> Option<usize> {
    (1..=64).contains(&node.0).then(|| node.0 as usize - 1)
}

/// The node of index `i` (see [`index`]).
fn node_at(i: usize) -> NodeId {
    NodeId(i as u32 + 1)
}

/// Requests remembered (see [`Node::record`]); an older one lost with a node that died is
/// found by its requester's fault timeout instead.
const MAX_SENT: usize = 4096;

/// Pages past the end of a segment's dense run beyond which a page is kept apart ([`Node`]'s
/// `far`).
const DENSE_GAP: usize = 1 << 16;

/// One node's protocol state.
#[derive(Clone, Debug)]
pub struct Node {
    config: Config,
    me_index: usize,
    /// Every member known, by index (node id − 1): the founders, this node, and every node
    /// that joined since.
    known: NodeSet,
    pages: BTreeMap<SegmentId, Vec<PageState>>,
    /// Pages far past the end of their segment's dense run (more than [`DENSE_GAP`] pages on):
    /// kept apart, so that a page index from a peer never allocates room for every page below it.
    far: BTreeMap<PageKey, PageState>,
    busy: BTreeMap<PageKey, Busy>,
    managed: BTreeMap<PageKey, Managed>,
    runs: BTreeMap<SegmentId, Run>,
    /// Members whose current incarnation is dead (until a new one joins).
    down: NodeSet,
    /// Segments whose creator's incarnation died: their untouched pages have no owner.
    orphans: std::collections::BTreeSet<SegmentId>,
    /// Number of this node's next request.
    next_seq: u32,
    /// Number of this node's last round of locating.
    next_round: u32,
    /// A node has died (since then, requests may be answered twice: not a violation).
    failures: bool,
    /// Each member's daemon incarnation as last heard (0: not yet).
    incarnations: Vec<u64>,
    /// Requests sent or passed on, most recent last (dynamic manager).
    sent: VecDeque<Sent>,
    /// The log index at which this daemon joined (0: it started the cluster).
    joined_at: u64,
    /// The latest time heard (ms), from faults and ticks.
    now_ms: u64,
    /// Cut off from a possible majority: no write access (see `Input::Fence`).
    fenced: bool,
    /// Node deaths heard of, and for each member the count just after its last death.
    deaths: u64,
    died_at: Vec<u64>,
    /// Owned pages written here since their last replication (see `replicas`).
    dirty: BTreeSet<PageKey>,
    /// Dirty pages whose replication waits for the page to be idle.
    queued: BTreeSet<PageKey>,
    /// Pages whose replica went out from bytes a local writer could still change, until the
    /// writers' revocation ends (see `replicas`); and of those, the ones the driver found
    /// changed ([`Input::Rewritten`]).
    checking: BTreeSet<PageKey>,
    rewritten: BTreeSet<PageKey>,
    /// Owned pages' last replication: (epoch, version).
    versions: BTreeMap<PageKey, (u16, u32)>,
    /// Replications under way.
    inflight: BTreeMap<PageKey, replicas::Inflight>,
    /// Replicas this node keeps of pages it does not hold: (epoch, version).
    held: BTreeMap<PageKey, (u16, u32)>,
    /// Dirty pages waiting for a replication slot (see `replicas`), in page order.
    backlog: BTreeSet<PageKey>,
    /// Pages whose replication a release may wait for, each with the number of its oldest
    /// job not done (see `replicas`), and the same by number.
    outstanding: BTreeMap<PageKey, u64>,
    by_seq: BTreeSet<(u64, PageKey)>,
    /// The next job number.
    next_job: u64,
    /// Releases waiting, by the last job number each waits for.
    releases: BTreeMap<u64, Vec<u64>>,
    outputs: VecDeque<Output>,
    stats: Stats,
}

// Equality and hashing cover the protocol state only (not counters or the output queue), so
// the model checker sees two nodes in the same state as the same.
impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        self.pages == other.pages
            && self.far == other.far
            && self.busy == other.busy
            && self.managed == other.managed
            && self.runs == other.runs
            && self.known == other.known
            && self.down == other.down
            && self.orphans == other.orphans
            && self.failures == other.failures
            && self.incarnations == other.incarnations
            && self.sent == other.sent
            && self.joined_at == other.joined_at
            && self.deaths == other.deaths
            && self.died_at == other.died_at
            && self.dirty == other.dirty
            && self.queued == other.queued
            && self.versions == other.versions
            && self.inflight == other.inflight
            && self.held == other.held
            && self.backlog == other.backlog
            && self.releases == other.releases
            && self.outstanding == other.outstanding
    }
}

impl Eq for Node {}

impl Hash for Node {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.pages.hash(state);
        self.far.hash(state);
        self.busy.hash(state);
        self.managed.hash(state);
        self.runs.hash(state);
        self.known.hash(state);
        self.down.hash(state);
        self.orphans.hash(state);
        self.failures.hash(state);
        self.incarnations.hash(state);
        self.sent.hash(state);
        self.joined_at.hash(state);
        self.deaths.hash(state);
        self.died_at.hash(state);
        self.dirty.hash(state);
        self.queued.hash(state);
        self.versions.hash(state);
        self.inflight.hash(state);
        self.held.hash(state);
        self.backlog.hash(state);
        self.releases.hash(state);
        self.outstanding.hash(state);
    }
}

impl Node {
    /// A node that knows no pages yet.
    ///
    /// # Panics
    /// If a node id (this one's or a founder's) is outside 1 to 64, or there are no founders.
    pub fn new(mut config: Config) -> Node {
        config.members.sort();
        config.members.dedup();
        assert!(!config.members.is_empty(), "a cluster has founders");
        let me_index = index(config.me).expect("node ids are 1 to 64");
        let known = config
            .members
            .iter()
            .map(|&m| index(m).expect("node ids are 1 to 64"))
            .fold(NodeSet::EMPTY.with(me_index), NodeSet::with);
        let members = known.iter().last().map_or(0, |i| i + 1);

        Node {
            config,
            me_index,
            known,
            pages: BTreeMap::new(),
            far: BTreeMap::new(),
            busy: BTreeMap::new(),
            managed: BTreeMap::new(),
            runs: BTreeMap::new(),
            down: NodeSet::EMPTY,
            orphans: Default::default(),
            next_seq: 0,
            next_round: 0,
            failures: false,
            incarnations: vec![0; members],
            sent: VecDeque::new(),
            joined_at: 0,
            now_ms: 0,
            fenced: false,
            deaths: 0,
            died_at: vec![0; members],
            dirty: BTreeSet::new(),
            queued: BTreeSet::new(),
            checking: BTreeSet::new(),
            rewritten: BTreeSet::new(),
            versions: BTreeMap::new(),
            inflight: BTreeMap::new(),
            held: BTreeMap::new(),
            backlog: BTreeSet::new(),
            releases: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            by_seq: BTreeSet::new(),
            next_job: 1,
            outputs: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.me
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The next action for the driver, if any. Drain after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The resting state of a page as this node sees it.
    pub fn page(&self, key: PageKey) -> PageState {
        self.pages
            .get(&key.segment)
            .and_then(|v| v.get(key.page as usize))
            .or_else(|| self.far.get(&key))
            .copied()
            .unwrap_or_else(|| self.untouched(key.segment))
    }

    /// A page this node has no state for: its creator's, unless the creator's incarnation died.
    fn untouched(&self, segment: SegmentId) -> PageState {
        if self.orphans.contains(&segment) {
            PageState {
                access: Access::None,
                local: Access::None,
                probable_owner: LOST,
                copyset: NodeSet::EMPTY,
                epoch: 0,
            }
        } else {
            PageState::untouched(self.config.me, segment.creator())
        }
    }

    /// What a local process may take of a page without asking (the state table's entry): the
    /// page's `local`, or, while local processes are being revoked, what the revocation leaves
    /// them. `local` itself drops only when the revocation completes, as it bounds what they may
    /// still hold.
    pub fn grantable(&self, key: PageKey) -> Access {
        let local = self.page(key).local.min(self.cap(key));
        match self.busy.get(&key).and_then(|b| b.revoking) {
            Some(AfterRevoke::ServeRead(_) | AfterRevoke::Replicate) => local.min(Access::Read),
            Some(AfterRevoke::ServeWrite(_) | AfterRevoke::Invalidate(_)) => Access::None,
            Some(AfterRevoke::Nothing { keep, .. }) => local.min(keep),
            None => local,
        }
    }

    /// The work in progress on a page, if any.
    pub fn busy(&self, key: PageKey) -> Option<&Busy> {
        self.busy.get(&key)
    }

    /// Whether a read of `key` is out that no local fault waits for: a page read ahead (the
    /// driver counts whether a process opens it once it arrives).
    pub fn reading_ahead(&self, key: PageKey) -> bool {
        self.busy
            .get(&key)
            .is_some_and(|b| b.pending == Some(false) && b.faults.is_empty())
    }

    /// Pages of `segment` this node has state for (touched here or heard of), in order.
    pub fn pages_of(&self, segment: SegmentId) -> &[PageState] {
        self.pages.get(&segment).map_or(&[], Vec::as_slice)
    }

    /// Bytes of protocol state per page (the resting state).
    pub const fn bytes_per_page() -> usize {
        std::mem::size_of::<PageState>()
    }

    /// Feeds one event; afterwards drain [`Node::poll_output`].
    pub fn handle(&mut self, input: Input) {
        let key = match &input {
            Input::Fault { key, .. } | Input::Revoked { key } | Input::Rewritten { key } => {
                Some(*key)
            }
            Input::Peer { msg, .. } => Some(msg.key()),
            _ => None,
        };
        self.handle_input(input);
        self.start_queued(key);
        match key {
            Some(key) => self.report_changes(key),
            None => self.report_all_changes(),
        }
    }

    fn handle_input(&mut self, input: Input) {
        match input {
            Input::Fault {
                id,
                key,
                write,
                pages,
                now_ms,
            } => self.on_fault(id, key, write, pages, now_ms),
            Input::Revoked { key } => self.on_revoked(key),
            Input::Rewritten { key } => self.on_rewritten(key),
            Input::Peer { from, msg } => self.on_peer(from, msg),
            Input::Tick { now_ms } => self.on_tick(now_ms),
            Input::SegmentRemoved { segment } => self.on_removed(segment),
            Input::PeerDown { node } => self.on_peer_down(node),
            Input::PeerUp { node, incarnation } => {
                if self.admit(node) {
                    let i = index(node).expect("admitted");
                    self.down = self.down.without(i);
                    self.incarnations[i] = incarnation;
                    // Pages being located are asked of it too.
                    let locating: Vec<(PageKey, NodeSet)> = self
                        .busy
                        .iter()
                        .filter_map(|(&k, b)| b.locating.as_ref().map(|l| (k, l.asked)))
                        .collect();
                    for (key, asked) in locating {
                        self.start_round(key, asked);
                    }
                }
            }
            Input::Orphaned { segment } => {
                self.orphans.insert(segment);
            }
            Input::Fence { on } => self.on_fence(on),
            Input::Release { id } => self.on_release(id),
            Input::History {
                deaths,
                died_at,
                joined_at,
                down,
            } => {
                self.joined_at = joined_at;
                for node in down {
                    self.admit(node);
                    if let Some(i) = self.index_of(node).filter(|&i| i != self.me_index) {
                        self.down = self.down.with(i);
                        self.failures = true;
                    }
                }
                self.deaths = self.deaths.max(deaths);
                // Nodes died before: their requests may be answered twice, their pages taken
                // over (an adopter invalidates nodes whose read is still queued at it).
                self.failures |= deaths > 0;
                for (node, at) in died_at {
                    self.admit(node);
                    if let Some(i) = self.index_of(node) {
                        self.died_at[i] = self.died_at[i].max(at);
                    }
                }
            }
        }
    }

    // ---- small helpers ----

    /// A member's index in node sets (see [`index`]), if it is a member.
    fn index_of(&self, node: NodeId) -> Option<usize> {
        index(node).filter(|&i| self.known.contains(i))
    }

    /// Every member's index, this node's included, ascending.
    fn member_indices(&self) -> impl Iterator<Item = usize> {
        self.known.iter()
    }

    /// Makes `node` a member (it joined, or a peer names it), with room for its per-node
    /// state. False if its id cannot be a member's.
    fn admit(&mut self, node: NodeId) -> bool {
        let Some(i) = index(node) else { return false };
        self.known = self.known.with(i);
        if self.incarnations.len() <= i {
            self.incarnations.resize(i + 1, 0);
            self.died_at.resize(i + 1, 0);
        }
        true
    }

    /// Whether `node` is unreachable for good: dead, or the [`LOST`] owner.
    fn is_down(&self, node: NodeId) -> bool {
        node == LOST || self.index_of(node).is_some_and(|i| self.down.contains(i))
    }

    fn state_mut(&mut self, key: PageKey) -> &mut PageState {
        let fresh = self.untouched(key.segment);
        let pages = self.pages.entry(key.segment).or_default();
        let index = key.page as usize;
        if pages.len() <= index {
            if index - pages.len() > DENSE_GAP {
                return self.far.entry(key).or_insert(fresh);
            }
            let from = pages.len() as u32;
            pages.resize(index + 1, fresh);
            // Far pages the dense run now reaches move into it.
            let reached: Vec<PageKey> = self
                .far
                .range(
                    PageKey {
                        segment: key.segment,
                        page: from,
                    }..=key,
                )
                .map(|(k, _)| *k)
                .collect();
            for k in reached {
                if let Some(state) = self.far.remove(&k) {
                    pages[k.page as usize] = state;
                }
            }
        }
        &mut pages[index]
    }

    fn is_owner(&self, key: PageKey) -> bool {
        self.page(key).probable_owner == self.config.me
    }

    fn busy_mut(&mut self, key: PageKey) -> &mut Busy {
        self.busy.entry(key).or_default()
    }

    fn manager_of(&self, key: PageKey) -> NodeId {
        let members = &self.config.members;
        match self.config.manager {
            ManagerKind::Central => members[0],
            ManagerKind::Fixed => members[key.page as usize % members.len()],
            ManagerKind::Dynamic => unreachable!("the dynamic manager has no fixed manager"),
        }
    }

    fn send(&mut self, to: NodeId, msg: PeerMsg) {
        debug_assert_ne!(to, self.config.me, "a node never messages itself");
        if self.is_down(to) {
            return; // dead: what it would have answered is dealt with by `on_peer_down`
        }
        self.stats.messages_sent += 1;
        if let PeerMsg::Grant { .. } = msg {
            self.stats.pages_sent += 1;
        }
        self.outputs.push_back(Output::Send { to, msg });
    }

    fn grant(&mut self, w: Waiting, key: PageKey, waited: bool) {
        let cap = self.cap(key);
        let state = self.state_mut(key);
        let access = state.access.min(cap);
        state.local = state.local.max(access);
        if access == Access::Write {
            self.dirtied(key);
        }
        self.outputs.push_back(Output::Grant {
            id: w.id,
            key,
            access,
            waited,
        });
    }

    fn revoke(&mut self, key: PageKey, to: Access, after: AfterRevoke) {
        self.stats.revocations += 1;
        self.busy_mut(key).revoking = Some(after);
        self.outputs.push_back(Output::Revoke { key, to });
    }

    // ---- local faults ----

    fn on_fault(&mut self, id: FaultId, key: PageKey, write: bool, pages: u32, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let waiting = Waiting {
            id,
            write,
            since_ms: now_ms,
        };
        if self.busy.contains_key(&key) {
            // Something is in progress or queued: stay in line behind it. A reader that caught
            // up with pages still on their way extends its run.
            self.busy_mut(key).faults.push(waiting);
            self.settle(key);
            if !write {
                self.read_ahead(key, pages);
            }
            return;
        }
        let state = self.page(key);
        if self.fenced && self.cap(key) < Access::for_fault(write) {
            // No such access while fenced: wait (or time out).
            self.busy_mut(key).faults.push(waiting);
            return;
        }
        if state.access >= Access::for_fault(write) {
            if write {
                self.stats.local_writes += 1;
            } else {
                self.stats.local_reads += 1;
            }
            // A page a release made read-only, written again (see `reopen_run`).
            let rewrite = write && state.access == Access::Write && state.local == Access::Read;
            self.grant(waiting, key, false);
            if rewrite {
                self.reopen_run(key, pages);
            }
            return;
        }
        self.busy_mut(key).faults.push(waiting);
        self.acquire(key);
        if !write {
            self.read_ahead(key, pages);
        }
    }

    /// A read miss that continues a sequential run asks for the pages after it too, the window
    /// doubling with each miss of the run: a scan pays one round trip per window, not per page.
    /// The requests are ordinary read requests, answered and invalidated as any.
    fn read_ahead(&mut self, key: PageKey, pages: u32) {
        let max = self.config.readahead;
        if max == 0 {
            return;
        }
        let run = self.runs.get(&key.segment).copied();
        let window = match run {
            Some(r) if key.page > r.end.saturating_sub(r.window) && key.page <= r.end + 1 => {
                // (A run that starts after a miss elsewhere has window 0: it starts at 1.)
                (r.window * 2).clamp(1, max)
            }
            None if key.page == 0 => 1,
            _ => {
                // Not sequential: remember where this miss was, read nothing ahead.
                self.runs.insert(
                    key.segment,
                    Run {
                        end: key.page,
                        window: 0,
                    },
                );
                return;
            }
        };
        let first = key.page.max(run.map_or(0, |r| r.end)) + 1;
        let last = (key.page.saturating_add(window)).min(pages.saturating_sub(1));
        self.runs.insert(
            key.segment,
            Run {
                end: last.max(key.page),
                window,
            },
        );
        for page in first..=last {
            let ahead = PageKey {
                segment: key.segment,
                page,
            };
            if self.busy.contains_key(&ahead) || self.page(ahead).access > Access::None {
                continue;
            }
            self.stats.prefetched += 1;
            self.request(ahead, false);
        }
    }

    /// Starts getting the access the waiting faults need. The page is not in transition.
    fn acquire(&mut self, key: PageKey) {
        let write = self
            .busy
            .get(&key)
            .is_some_and(|b| b.faults.iter().any(|w| w.write));
        let state = self.page(key);
        if self.is_owner(key) {
            // Only an owner holding a read-only copy gets here, for a write: invalidate the
            // copies; no one else need be asked.
            debug_assert!(write && state.access == Access::Read);
            self.stats.upgrades += 1;
            self.start_invalidations(key, state.copyset.without(self.me_index));
            return;
        }
        if write {
            if state.access == Access::Read {
                self.stats.upgrades += 1;
            } else {
                self.stats.remote_writes += 1;
            }
        } else {
            self.stats.remote_reads += 1;
        }
        self.request(key, write);
    }

    /// Sends a request for `key` (the page is not in transition and not ours); locates the
    /// page first if its owner died.
    fn request(&mut self, key: PageKey, write: bool) {
        let state = self.page(key);
        let me = self.config.me;
        if self.config.manager == ManagerKind::Dynamic && self.is_down(state.probable_owner) {
            if !write {
                self.busy_mut(key).wanted = true;
            }
            self.locate(key);
            return;
        }
        if self.config.manager != ManagerKind::Dynamic && self.is_down(self.manager_of(key)) {
            self.lose(key);
            return;
        }
        self.next_seq = self.next_seq.wrapping_add(1);
        let seq = self.next_seq;
        let now_ms = self.now_ms;
        let busy = self.busy_mut(key);
        busy.pending = Some(write);
        busy.pending_seq = seq;
        busy.pending_since_ms = now_ms;
        let msg = PeerMsg::Request {
            key,
            write,
            requester: me,
            seq,
            incarnation: self.config.incarnation,
            hops: 0,
        };
        match self.config.manager {
            ManagerKind::Dynamic => {
                self.record(state.probable_owner, key, me, seq);
                self.send(state.probable_owner, msg);
            }
            ManagerKind::Fixed | ManagerKind::Central => {
                self.busy_mut(key).confirm = true;
                let manager = self.manager_of(key);
                if manager == me {
                    self.manage(
                        key,
                        Queued {
                            write,
                            requester: me,
                            seq,
                            incarnation: self.config.incarnation,
                            hops: 0,
                        },
                    );
                } else {
                    self.send(manager, msg);
                }
            }
        }
    }

    /// Asks every live node who owns `key` and who holds a copy (the owner this node knew of
    /// died), freezing them for it until this node decides (see `PeerMsg::Locate`).
    fn locate(&mut self, key: PageKey) {
        self.state_mut(key).probable_owner = LOST;
        self.stats.located += 1;
        // Requests held here would wait for a page we do not know where to find: their
        // requesters locate it too.
        let held = std::mem::take(&mut self.busy_mut(key).requests);
        for request in held {
            self.serve(key, request);
        }
        self.start_round(key, NodeSet::EMPTY);
    }

    /// Sends a round of `Locate`s (a new one when a node died or joined meanwhile: answers
    /// given before then may miss what the dead node sent).
    fn start_round(&mut self, key: PageKey, asked: NodeSet) {
        let me_index = self.me_index;
        let live = self
            .member_indices()
            .filter(|&i| i != me_index && !self.down.contains(i))
            .fold(NodeSet::EMPTY, NodeSet::with);
        let deaths = self.deaths;
        self.next_round = self.next_round.wrapping_add(1);
        let round = self.next_round;
        let since_ms = self
            .busy
            .get(&key)
            .and_then(|b| b.locating.as_ref())
            .map_or(self.now_ms, |l| l.since_ms);
        self.busy_mut(key).locating = Some(Locating {
            since_ms,
            waiting: live,
            asked: NodeSet(asked.0 | live.0),
            round,
            answers: vec![None; self.incarnations.len()],
        });
        for i in live.iter() {
            let to = node_at(i);
            self.send(to, PeerMsg::Locate { key, deaths, round });
        }
        if live.is_empty() {
            self.decide(key);
        }
    }

    /// No copy of `key` survives: the faults waiting for it fail.
    fn lose(&mut self, key: PageKey) {
        if let Some(asked) = self
            .busy
            .get(&key)
            .and_then(|b| b.locating.as_ref())
            .map(|l| l.asked)
        {
            self.thaw_all(key, asked, LOST);
        }
        if let Some(busy) = self.busy.get_mut(&key) {
            busy.wanted = false;
        }
        let faults = self
            .busy
            .get_mut(&key)
            .map(|b| std::mem::take(&mut b.faults))
            .unwrap_or_default();
        for w in faults {
            self.stats.failed += 1;
            self.stats.lost += 1;
            self.outputs.push_back(Output::Fail {
                id: w.id,
                error: FaultError::Lost,
            });
        }
        self.settle(key);
    }

    fn start_invalidations(&mut self, key: PageKey, holders: NodeSet) {
        if holders.is_empty() {
            self.complete_write(key);
            return;
        }
        self.busy_mut(key).invalidating = Some(holders);
        let me = self.config.me;
        let epoch = self.page(key).epoch;
        for index in holders.iter() {
            self.stats.invalidations_sent += 1;
            let to = node_at(index);
            self.send(
                to,
                PeerMsg::Invalidate {
                    key,
                    new_owner: me,
                    epoch,
                },
            );
        }
    }

    fn complete_write(&mut self, key: PageKey) {
        let me = self.config.me;
        let state = self.state_mut(key);
        state.access = Access::Write;
        state.probable_owner = me;
        state.copyset = NodeSet::EMPTY;
        let busy = self.busy_mut(key);
        busy.invalidating = None;
        if std::mem::take(&mut busy.confirm) {
            self.confirm(key);
        }
        self.settle(key);
    }

    fn confirm(&mut self, key: PageKey) {
        let manager = self.manager_of(key);
        if manager == self.config.me {
            self.on_confirm(self.config.me, key);
        } else {
            self.send(manager, PeerMsg::Confirm { key });
        }
    }

    /// Once a page is out of transition: grant what the waiting faults can have, serve the
    /// queued requests, and ask again for what is still missing.
    fn settle(&mut self, key: PageKey) {
        loop {
            let Some(busy) = self.busy.get(&key) else {
                return;
            };
            // Locating, or (once a node has died) waiting for our own request: requests held
            // while a revocation ran are passed on (see `locate` and `on_request`).
            let passes_on = (busy.locating.is_some() || (self.failures && busy.pending.is_some()))
                && !self.is_owner(key)
                && busy.invalidating.is_none()
                && busy.revoking.is_none();
            if passes_on && !busy.requests.is_empty() {
                let request = self.busy_mut(key).requests.pop_front().expect("not empty");
                self.serve(key, request);
                continue;
            }
            if busy.in_transition() {
                return;
            }
            if let Some((new_owner, epoch)) = busy.deferred_invalidate {
                // Set while a read was pending or a revocation ran: it is over.
                self.busy_mut(key).deferred_invalidate = None;
                let state = self.state_mut(key);
                state.learn(epoch);
                self.invalidate_now(key, new_owner);
                continue;
            }
            let access = self.page(key).access.min(self.cap(key));
            let fenced = self.fenced;
            let faults = std::mem::take(&mut self.busy_mut(key).faults);
            let (ready, still): (Vec<Waiting>, Vec<Waiting>) = faults
                .into_iter()
                .partition(|w| access >= Access::for_fault(w.write));
            for w in ready {
                self.grant(w, key, true);
            }
            self.busy_mut(key).faults = still;
            if self.frozen_owner(key) {
                // A locator must see this ownership stay put until it decides.
                return;
            }
            if let Some(request) = self.busy_mut(key).requests.pop_front() {
                self.serve(key, request);
                continue;
            }
            // Fenced: nothing more is asked for (it could not be used).
            let held_back = fenced;
            if !self.busy_mut(key).faults.is_empty() && !held_back {
                self.acquire(key);
                continue;
            }
            // A read-ahead whose owner had died, located now: asked for again (a scan of a
            // dead node's pages fetched them one fault at a time, not a window at a time).
            if std::mem::take(&mut self.busy_mut(key).wanted)
                && !held_back
                && !self.is_owner(key)
                && self.page(key).access == Access::None
            {
                self.request(key, false);
                continue;
            }
            if self.busy.get(&key).is_some_and(Busy::is_idle) {
                self.busy.remove(&key);
            }
            return;
        }
    }

    // ---- messages ----

    fn on_peer(&mut self, from: NodeId, msg: PeerMsg) {
        if self.index_of(from).is_none() || from == self.config.me {
            self.outputs.push_back(Output::Violation {
                from,
                what: "message from a node outside the cluster, or from this node itself",
            });
            return;
        }
        match msg {
            PeerMsg::Request {
                key,
                write,
                requester,
                seq,
                incarnation,
                hops,
            } => {
                if requester == self.config.me {
                    // One of ours, back after an owner died on its way or it was asked again:
                    // moot (we own the page, or a later request of ours is out).
                    return;
                }
                if self.index_of(requester).is_none() {
                    self.outputs.push_back(Output::Violation {
                        from,
                        what: "request for an impossible requester",
                    });
                    return;
                }
                let known = self.index_of(requester).map_or(0, |i| self.incarnations[i]);
                if self.is_down(requester) || (known != 0 && known != incarnation) {
                    return; // it died (or this is its earlier daemon's): nobody to serve
                }
                let request = Queued {
                    write,
                    requester,
                    seq,
                    incarnation,
                    hops,
                };
                let managing = self.config.manager != ManagerKind::Dynamic
                    && self.manager_of(key) == self.config.me
                    && from == requester;
                if managing {
                    self.manage(key, request);
                } else {
                    self.on_request(key, request);
                }
            }
            PeerMsg::Unknown { key, seq } => {
                self.failures = true;
                let ours = !self.is_owner(key)
                    && self
                        .busy
                        .get(&key)
                        .is_some_and(|b| b.pending.is_some() && b.pending_seq == seq);
                if ours {
                    // Our request ended at a node that lost track of the owner: locate it.
                    let busy = self.busy_mut(key);
                    busy.wanted |= busy.pending == Some(false);
                    busy.pending = None;
                    self.state_mut(key).probable_owner = LOST;
                    self.settle(key);
                }
            }
            PeerMsg::Locate { key, deaths, round } => self.on_locate(from, key, deaths, round),
            PeerMsg::Located {
                key,
                round,
                owner,
                copy,
                epoch,
                handed,
                deaths,
                replica,
            } => self.on_located(
                from,
                key,
                round,
                Report {
                    owner,
                    copy,
                    epoch,
                    handed,
                    deaths,
                    replica,
                },
            ),
            PeerMsg::Replica {
                key,
                epoch,
                version,
            } => self.on_replica(from, key, epoch, version),
            PeerMsg::ReplicaAck {
                key,
                epoch,
                version,
            } => self.on_replica_ack(from, key, epoch, version),
            PeerMsg::Adopt {
                key,
                epoch,
                copyset,
                replica,
            } => self.adopt(from, key, epoch, copyset, replica),
            PeerMsg::Thaw { key, owner } => self.on_thaw(from, key, owner),
            PeerMsg::Lost { key } => {
                // Only ever sent after a death, which this node may not have heard of yet.
                self.failures = true;
                if let Some(b) = self.busy.get_mut(&key) {
                    if b.pending.is_some() {
                        b.pending = None;
                        b.confirm = false;
                        self.lose(key);
                    }
                }
            }
            PeerMsg::Grant {
                key,
                write,
                copyset,
                epoch,
                deaths,
            } => self.on_grant(from, key, write, copyset, epoch, deaths),
            PeerMsg::Invalidate {
                key,
                new_owner,
                epoch,
            } => self.on_invalidate(from, key, new_owner, epoch),
            PeerMsg::InvalidateAck { key } => self.on_invalidate_ack(from, key),
            PeerMsg::Confirm { key } => self.on_confirm(from, key),
        }
    }

    fn on_request(&mut self, key: PageKey, request: Queued) {
        // A node in a transition holds requests back until it is over (Li & Hudak): its own
        // request out, invalidations or a revocation under way; one merely locating the page
        // passes them on (or says it does not know) at once. Once a node has died, a page's
        // owner may be gone and requests held behind our own would wait on each other: a
        // node whose own request is out passes others on too.
        let failures = self.failures;
        let frozen = self.frozen_owner(key);
        let holds = frozen
            || self.busy.get(&key).is_some_and(|b| {
                (b.pending.is_some() && !failures)
                    || b.invalidating.is_some()
                    || b.revoking.is_some()
                    || !b.requests.is_empty()
            });
        if holds {
            self.busy_mut(key).requests.push_back(request);
            return;
        }
        self.serve(key, request);
    }

    /// Serves (or passes on) a request; the page is not in transition.
    fn serve(&mut self, key: PageKey, request: Queued) {
        if self.frozen_owner(key) {
            self.busy_mut(key).requests.push_back(request);
            return;
        }
        let state = self.page(key);
        if !self.is_owner(key) && self.config.manager != ManagerKind::Dynamic {
            // The manager sends requests to the owner only: this one was not for us.
            self.outputs.push_back(Output::Violation {
                from: request.requester,
                what: "request forwarded to a node that does not own the page",
            });
            return;
        }
        if !self.is_owner(key) {
            // Not ours (any more): pass it on along the probable owners. A write request makes
            // its requester our best guess, as it is about to own the page (path compression).
            self.stats.forwarded += 1;
            if request.write {
                self.state_mut(key).probable_owner = request.requester;
            }
            let msg = PeerMsg::Request {
                key,
                write: request.write,
                requester: request.requester,
                seq: request.seq,
                incarnation: request.incarnation,
                hops: request.hops.saturating_add(1),
            };
            let circling = usize::from(request.hops) >= self.known.iter().count();
            if state.probable_owner == request.requester
                || self.is_down(state.probable_owner)
                || circling
            {
                // We lost track of the owner (it died), or only know of the requester (whose
                // own write was abandoned when a node died): the requester must locate it.
                self.send(
                    request.requester,
                    PeerMsg::Unknown {
                        key,
                        seq: request.seq,
                    },
                );
                return;
            }
            self.record(state.probable_owner, key, request.requester, request.seq);
            self.send(state.probable_owner, msg);
            return;
        }
        if request.write {
            if state.local > Access::None {
                self.revoke(
                    key,
                    Access::None,
                    AfterRevoke::ServeWrite(request.requester),
                );
            } else {
                self.finish_serve_write(key, request.requester);
            }
        } else if state.local > Access::Read {
            self.revoke(key, Access::Read, AfterRevoke::ServeRead(request.requester));
        } else {
            self.finish_serve_read(key, request.requester);
        }
    }

    fn finish_serve_read(&mut self, key: PageKey, requester: NodeId) {
        let index = self.index_of(requester).expect("checked on receipt");
        let state = self.state_mut(key);
        state.access = state.access.min(Access::Read);
        state.copyset = state.copyset.with(index);
        let epoch = state.epoch;
        self.send(
            requester,
            PeerMsg::Grant {
                key,
                write: false,
                copyset: NodeSet::EMPTY,
                epoch,
                deaths: self.deaths,
            },
        );
    }

    fn finish_serve_write(&mut self, key: PageKey, requester: NodeId) {
        self.handing_over(key);
        let index = self.index_of(requester).expect("checked on receipt");
        let state = self.state_mut(key);
        let copyset = state.copyset.without(index);
        state.access = Access::None;
        // Remembered until a later epoch is heard of: the grant may still be on its way when
        // a locator asks (see `decide`).
        state.copyset = NodeSet::EMPTY.with(index);
        state.probable_owner = requester;
        state.epoch = state.epoch.wrapping_add(1);
        let epoch = state.epoch;
        self.send(
            requester,
            PeerMsg::Grant {
                key,
                write: true,
                copyset,
                epoch,
                deaths: self.deaths,
            },
        );
        self.handed_over(key, epoch);
    }

    /// Whether a grant of `key` (for a write if `write`) would be accepted now: the driver
    /// stores a grant's page bytes only then, before handing the grant over. A grant answers
    /// the pending request or one abandoned when a node died; ownership (a write grant) is
    /// taken whichever request of ours it answers, as its sender gave the page up.
    pub fn expects_grant(&self, key: PageKey, write: bool, epoch: u16) -> bool {
        if self.is_owner(key) {
            return false;
        }
        if !write && later(self.page(key).epoch, epoch) {
            // Sent before an ownership change whose invalidation this node acknowledged
            // already (a request abandoned when a node died, answered late): stale.
            return false;
        }
        if write {
            // Ownership: its sender gave the page up, so refusing it would lose the page.
            // After a node died, a request asked twice may be served twice, the second time
            // by a later owner: the answer is still the page.
            return self.failures
                || self
                    .busy
                    .get(&key)
                    .is_some_and(|b| b.pending.is_some() || b.abandoned.is_some());
        }
        // A read copy: after a node died, also one asked for twice and answered twice (its
        // sender counts us among the holders: refusing it would leave that wrong). Never one
        // older than an invalidation acknowledged here (above).
        self.failures
            || self
                .busy
                .get(&key)
                .is_some_and(|b| b.pending == Some(false) || b.abandoned == Some(false))
    }

    fn on_grant(
        &mut self,
        from: NodeId,
        key: PageKey,
        write: bool,
        copyset: NodeSet,
        epoch: u16,
        deaths: u64,
    ) {
        if !write && later(self.page(key).epoch, epoch) {
            // Stale (see `expects_grant`): the request it answers is over; if it is the one
            // we wait for, we ask again.
            if let Some(b) = self.busy.get_mut(&key) {
                if b.pending == Some(false) {
                    b.pending = None;
                } else if b.abandoned == Some(false) {
                    b.abandoned = None;
                }
                self.settle(key);
            }
            return;
        }
        if !self.expects_grant(key, write, epoch) {
            if !self.failures {
                self.outputs.push_back(Output::Violation {
                    from,
                    what: "grant for a request this node did not make",
                });
            }
            // Else: a read copy for a request asked again after a node died, and answered
            // already. Not taken; its sender's copyset names us, so it invalidates us in vain.
            return;
        }
        if copyset.0 & !self.known.0 != 0 {
            // It names a node whose join this node has not applied yet: one that joined.
            for i in copyset.iter() {
                self.admit(node_at(i));
            }
        }
        self.stats.pages_received += 1;
        let busy = self.busy_mut(key);
        let answered_pending = busy.pending == Some(write);
        if write {
            // Owner now: any other request of ours for it is moot (it comes back to us).
            busy.pending = None;
            busy.abandoned = None;
            if let Some(asked) = busy.locating.as_ref().map(|l| l.asked) {
                let me = self.config.me;
                self.thaw_all(key, asked, me);
            }
        } else if busy.pending == Some(false) {
            busy.pending = None;
        } else if busy.abandoned == Some(false) {
            busy.abandoned = None;
        }
        // Holders that are dead, or died after the sender last heard of a death (their bit
        // names a daemon that is gone; a new one of theirs holds nothing): not invalidated.
        let copyset = copyset
            .iter()
            .filter(|&i| !self.down.contains(i) && self.died_at.get(i).is_none_or(|&d| d <= deaths))
            .fold(NodeSet::EMPTY, NodeSet::with);
        if write {
            let me = self.config.me;
            let state = self.state_mut(key);
            // Our copy (if any) is the owner's copy until we write: keep reading it meanwhile.
            state.access = state.access.max(Access::Read);
            state.probable_owner = me;
            state.copyset = NodeSet::EMPTY;
            state.epoch = epoch;
            let holders = copyset.without(self.me_index);
            self.start_invalidations(key, holders);
        } else {
            let state = self.state_mut(key);
            state.access = Access::Read;
            // Local processes may read it (read ahead, or for the faults waiting): `local` is
            // an upper bound, so raising it only means a revocation asks them later.
            state.local = state.local.max(Access::Read);
            state.probable_owner = from;
            state.learn(epoch);
            if answered_pending && std::mem::take(&mut self.busy_mut(key).confirm) {
                self.confirm(key);
            }
            self.settle(key);
        }
    }

    fn on_invalidate(&mut self, from: NodeId, key: PageKey, new_owner: NodeId, epoch: u16) {
        if self.is_owner(key) || new_owner != from {
            self.outputs.push_back(Output::Violation {
                from,
                what: "invalidation of the owner's copy, or on another's behalf",
            });
            return;
        }
        if !self.failures && self.busy.get(&key).and_then(|b| b.pending) == Some(false) {
            // Our read grant is on its way from the previous owner (it put us in the copyset
            // it handed over): let it land and serve its readers first, then drop the copy.
            // (Once a node has died, that grant may never come: its sender may have died
            // with it. Then we acknowledge at once; the grant, if it comes, is refused as
            // stale, and the read asked again.)
            self.busy_mut(key).deferred_invalidate = Some((new_owner, epoch));
            let state = self.state_mut(key);
            state.learn(epoch.wrapping_sub(1));
            return;
        }
        if self.busy.get(&key).is_some_and(|b| b.revoking.is_some()) {
            // Local processes are still giving up access for an earlier reason (an owner that
            // died invalidating us; the page was taken over since): this invalidation follows.
            self.busy_mut(key).deferred_invalidate = Some((new_owner, epoch));
            self.state_mut(key).learn(epoch);
            return;
        }
        // An abandoned read's grant, if it still comes, is older than this: refused then.
        let state = self.state_mut(key);
        state.learn(epoch);
        self.invalidate_now(key, new_owner);
    }

    fn invalidate_now(&mut self, key: PageKey, new_owner: NodeId) {
        if self.page(key).local > Access::None {
            self.revoke(key, Access::None, AfterRevoke::Invalidate(new_owner));
        } else {
            self.finish_invalidate(key, new_owner);
        }
    }

    fn finish_invalidate(&mut self, key: PageKey, new_owner: NodeId) {
        let state = self.state_mut(key);
        state.access = Access::None;
        state.probable_owner = new_owner;
        self.send(new_owner, PeerMsg::InvalidateAck { key });
    }

    fn on_invalidate_ack(&mut self, from: NodeId, key: PageKey) {
        let index = self.index_of(from).expect("checked on receipt");
        let Some(holders) = self.busy.get(&key).and_then(|b| b.invalidating) else {
            self.outputs.push_back(Output::Violation {
                from,
                what: "invalidation ack nobody asked for",
            });
            return;
        };
        let left = holders.without(index);
        if left == holders {
            self.outputs.push_back(Output::Violation {
                from,
                what: "invalidation ack from a node that was not asked",
            });
            return;
        }
        if left.is_empty() {
            self.complete_write(key);
        } else {
            self.busy_mut(key).invalidating = Some(left);
        }
    }

    fn on_revoked(&mut self, key: PageKey) {
        let Some(after) = self.busy.get_mut(&key).and_then(|b| b.revoking.take()) else {
            return;
        };
        match after {
            AfterRevoke::ServeRead(requester) => {
                self.state_mut(key).local = Access::Read;
                if !self.is_down(requester) {
                    self.finish_serve_read(key, requester);
                }
            }
            AfterRevoke::ServeWrite(requester) => {
                self.state_mut(key).local = Access::None;
                // A requester that died meanwhile gets nothing: the page stays ours.
                if !self.is_down(requester) {
                    self.finish_serve_write(key, requester);
                }
            }
            AfterRevoke::Nothing { keep, owner_lost } => {
                let me = self.config.me;
                let state = self.state_mut(key);
                state.local = state.local.min(keep);
                // (Unless this node adopted the page meanwhile.)
                if owner_lost && state.probable_owner != me {
                    state.probable_owner = LOST;
                }
            }
            AfterRevoke::Replicate => self.revoked_for_replica(key),
            AfterRevoke::Invalidate(new_owner) => {
                self.state_mut(key).local = Access::None;
                if self.is_down(new_owner) {
                    // The new owner died waiting for our ack, so it never wrote: our copy is
                    // still the latest. Keep it; nobody owns the page now.
                    self.state_mut(key).probable_owner = LOST;
                } else {
                    self.finish_invalidate(key, new_owner);
                }
            }
        }
        if self.fenced && self.page(key).local > self.cap(key) {
            // Fenced meanwhile: local processes go down further.
            let keep = self.cap(key);
            self.revoke(
                key,
                keep,
                AfterRevoke::Nothing {
                    keep,
                    owner_lost: false,
                },
            );
            return;
        }
        self.settle(key);
    }

    /// Remembers that a request went to `to` (dynamic manager), so that if `to` dies with it
    /// the requester hears of it. The most recent [`MAX_SENT`] are kept.
    fn record(&mut self, to: NodeId, key: PageKey, requester: NodeId, seq: u32) {
        if self.sent.len() == MAX_SENT {
            self.sent.pop_front();
        }
        self.sent.push_back(Sent {
            to,
            key,
            requester,
            seq,
        });
    }

    fn on_fence(&mut self, on: bool) {
        if on == self.fenced {
            return;
        }
        self.fenced = on;
        if on {
            // Local access goes down to what a fenced node may keep; pages in a revocation
            // already go lower.
            let me = self.config.me;
            let over = |p: &PageState| p.local > fence_cap(me, p);
            let keys: Vec<PageKey> = self
                .pages
                .iter()
                .flat_map(|(&segment, v)| {
                    v.iter().enumerate().filter_map(move |(i, p)| {
                        over(p).then_some(PageKey {
                            segment,
                            page: i as u32,
                        })
                    })
                })
                .chain(self.far.iter().filter(|(_, p)| over(p)).map(|(&k, _)| k))
                .collect();
            for key in keys {
                if self.busy.get(&key).is_some_and(|b| b.revoking.is_some()) {
                    continue;
                }
                let keep = fence_cap(me, &self.page(key));
                self.revoke(
                    key,
                    keep,
                    AfterRevoke::Nothing {
                        keep,
                        owner_lost: false,
                    },
                );
            }
        } else {
            let keys: Vec<PageKey> = self.busy.keys().copied().collect();
            for key in keys {
                self.settle(key);
            }
        }
    }

    /// The most local processes may have of `key` now.
    fn cap(&self, key: PageKey) -> Access {
        if self.fenced {
            fence_cap(self.config.me, &self.page(key))
        } else {
            Access::Write
        }
    }

    /// When the next [`Input::Tick`] has something to do (ms on the driver's clock): a fault
    /// that times out, a locate or a request given up on. `None`: nothing is timed.
    pub fn poll_timeout(&self) -> Option<u64> {
        let timeout = self.config.fault_timeout_ms;
        let dynamic = self.config.manager == ManagerKind::Dynamic;
        self.busy
            .values()
            .flat_map(|b| {
                let faults = b.faults.iter().map(|w| w.since_ms + 2 * timeout).min();
                let locate = b.locating.as_ref().map(|l| l.since_ms + timeout);
                let pending = (dynamic && b.pending.is_some() && b.faults.is_empty())
                    .then_some(b.pending_since_ms + timeout);
                [faults, locate, pending].into_iter().flatten()
            })
            .min()
    }

    /// Whether write access is stopped (see `Input::Fence`).
    pub fn fenced(&self) -> bool {
        self.fenced
    }

    // ---- finding a page whose owner died ----

    /// What this node tells a locator of `key`.
    fn report(&self, key: PageKey) -> Report {
        let state = self.page(key);
        let owner = state.probable_owner == self.config.me;
        Report {
            owner,
            copy: state.access >= Access::Read,
            epoch: state.epoch,
            handed: if owner {
                None
            } else {
                state.handed().map(node_at)
            },
            deaths: self.deaths,
            replica: self.offered_replica(key),
        }
    }

    /// Whether this node owns `key` and is frozen for it by a locator: it grants nothing and
    /// starts no invalidation until thawed.
    fn frozen_owner(&self, key: PageKey) -> bool {
        self.is_owner(key) && self.busy.get(&key).is_some_and(|b| !b.frozen.is_empty())
    }

    fn on_locate(&mut self, from: NodeId, key: PageKey, deaths: u64, round: u32) {
        let Some(index) = self.index_of(from) else {
            return;
        };
        if self.config.manager != ManagerKind::Dynamic {
            self.outputs.push_back(Output::Violation {
                from,
                what: "locate under a fixed or central manager",
            });
            return;
        }
        let b = self.busy_mut(key);
        b.frozen.retain(|f| f.by != index);
        // Answered once the deaths it heard of are heard of here (`report_changes`): nothing
        // more comes from the dead then.
        b.frozen.push(Freeze {
            by: index,
            round,
            deaths,
            answered: false,
        });
    }

    fn send_report(&mut self, to: NodeId, key: PageKey, round: u32, r: Report) {
        self.send(
            to,
            PeerMsg::Located {
                key,
                round,
                owner: r.owner,
                copy: r.copy,
                epoch: r.epoch,
                handed: r.handed,
                deaths: r.deaths,
                replica: r.replica,
            },
        );
    }

    /// A frozen node answers its locators once it has heard of the deaths they had, and tells
    /// them whatever changed of its answer since (a grant that was on its way arrived, a
    /// revocation ended).
    fn report_changes(&mut self, key: PageKey) {
        let Some(b) = self.busy.get(&key) else {
            return;
        };
        if b.frozen.is_empty() {
            return;
        }
        let deaths = self.deaths;
        let report = self.report(key);
        let changed = b.reported != Some(report);
        let to: Vec<(usize, u32)> = b
            .frozen
            .iter()
            .filter(|f| f.deaths <= deaths && (changed || !f.answered))
            .map(|f| (f.by, f.round))
            .collect();
        let b = self.busy_mut(key);
        b.reported = Some(report);
        for f in &mut b.frozen {
            if f.deaths <= deaths {
                f.answered = true;
            }
        }
        for (i, round) in to {
            let node = node_at(i);
            self.send_report(node, key, round, report);
        }
    }

    /// Every frozen page's [`Node::report_changes`] (after an input that may touch many).
    fn report_all_changes(&mut self) {
        let frozen: Vec<PageKey> = self
            .busy
            .iter()
            .filter(|(_, b)| !b.frozen.is_empty())
            .map(|(&k, _)| k)
            .collect();
        for key in frozen {
            self.report_changes(key);
        }
    }

    fn on_located(&mut self, from: NodeId, key: PageKey, round: u32, report: Report) {
        let Some(index) = self.index_of(from) else {
            return;
        };
        let Some(locating) = self.busy.get_mut(&key).and_then(|b| b.locating.as_mut()) else {
            return; // decided already, or given up
        };
        if round != locating.round || !locating.asked.contains(index) {
            return; // of an earlier round: it may miss what a dead node sent
        }
        let Some(slot) = locating.answers.get_mut(index) else {
            return;
        };
        *slot = Some(report);
        locating.waiting = locating.waiting.without(index);
        if locating.waiting.is_empty() {
            self.decide(key);
        }
    }

    /// Every live node has answered (and is frozen): if one owns the page, there it is; if
    /// ownership is on its way to a live node, wait for that node to say it arrived; else no
    /// live node owns the page and none can come to, so a surviving copy — each is the latest,
    /// as a copy lives only while nobody writes — becomes the page: the holder at the latest
    /// epoch (the lowest id among equals, so concurrent locators choose alike) adopts it. No
    /// copy: the page is lost.
    fn decide(&mut self, key: PageKey) {
        let Some(locating) = self.busy.get(&key).and_then(|b| b.locating.clone()) else {
            return;
        };
        if !locating.waiting.is_empty() {
            return;
        }
        let me_index = self.me_index;
        if self
            .busy
            .get(&key)
            .is_some_and(|b| b.frozen.iter().any(|f| f.by < me_index))
        {
            // A node of lower id is locating the page too and has this one frozen: it decides
            // first (two locators whose answers differ — a copy landed between them — could
            // choose two adopters); its `Thaw` starts a new round here.
            return;
        }
        let mut reports: Vec<(usize, Report)> = locating
            .answers
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.map(|r| (i, r)))
            .filter(|&(i, _)| !self.down.contains(i))
            .collect();
        reports.push((self.me_index, self.report(key)));
        if reports.iter().any(|(_, r)| r.deaths > self.deaths) {
            // An answer rests on a death this node has not heard of yet: once it has, it asks
            // again (`on_peer_down`).
            return;
        }
        if let Some(&(i, _)) = reports.iter().find(|(_, r)| r.owner) {
            let owner = node_at(i);
            self.end_locating(key, locating.asked, owner);
            return;
        }
        for (_, r) in &reports {
            let Some(to) = r.handed.and_then(|n| self.index_of(n)) else {
                continue;
            };
            if self.down.contains(to) {
                continue; // lost with its receiver
            }
            let arrived = reports
                .iter()
                .find(|&&(i, _)| i == to)
                .is_some_and(|(_, t)| !later(r.epoch, t.epoch));
            if !arrived {
                return; // on its way: its receiver says so when it lands
            }
        }
        // The newest surviving bytes: the latest epoch; in it a copy (the owner has not written
        // since it was granted) before any replica, and replicas by version; then the lowest id.
        let candidates = reports.iter().flat_map(|&(i, r)| {
            let copy = r.copy.then_some((i, r.epoch, u64::MAX, None));
            let replica = r.replica.map(|(e, v)| (i, e, u64::from(v), Some((e, v))));
            copy.into_iter().chain(replica)
        });
        let best = candidates.min_by(|&(i, ea, va, _), &(j, eb, vb, _)| {
            if later(ea, eb) {
                std::cmp::Ordering::Less
            } else if later(eb, ea) {
                std::cmp::Ordering::Greater
            } else {
                vb.cmp(&va).then(i.cmp(&j))
            }
        });
        let Some((adopter, _, _, replica)) = best else {
            self.end_locating(key, locating.asked, LOST);
            return;
        };
        let epoch = reports
            .iter()
            .flat_map(|(_, r)| std::iter::once(r.epoch).chain(r.replica.map(|(e, _)| e)))
            .fold(reports[0].1.epoch, latest)
            .wrapping_add(1);
        // Every other live node, not only those that said they hold a copy: a read grant its
        // owner sent before handing the page to a node that then died may still land after its
        // receiver answered. Invalidating a node without a copy costs one message.
        let copyset = self
            .member_indices()
            .filter(|&i| i != adopter && !self.down.contains(i))
            .fold(NodeSet::EMPTY, NodeSet::with);
        self.stats.adopted += 1;
        let owner = node_at(adopter);
        if adopter == self.me_index {
            self.adopt(owner, key, epoch, copyset, replica);
        } else {
            self.send(
                owner,
                PeerMsg::Adopt {
                    key,
                    epoch,
                    copyset,
                    replica,
                },
            );
            // Ownership is on its way to the adopter, as if handed over by this node: another
            // locator that asks before the adopter has it waits for it.
            let state = self.state_mut(key);
            state.learn(epoch);
            state.copyset = NodeSet::EMPTY.with(adopter);
        }
        self.end_locating(key, locating.asked, owner);
    }

    /// Thaws every node asked; the page is at `owner` ([`LOST`]: no copy survives, and the
    /// faults waiting for it fail).
    fn end_locating(&mut self, key: PageKey, asked: NodeSet, owner: NodeId) {
        self.thaw_all(key, asked, owner);
        if owner == LOST {
            self.lose(key);
            return;
        }
        if !self.is_owner(key) {
            self.state_mut(key).probable_owner = owner;
        }
        self.settle(key);
    }

    fn thaw_all(&mut self, key: PageKey, asked: NodeSet, owner: NodeId) {
        for i in asked.iter() {
            if i != self.me_index {
                let to = node_at(i);
                self.send(to, PeerMsg::Thaw { key, owner });
            }
        }
        self.busy_mut(key).locating = None;
    }

    /// A locator decided this node's copy is the page now.
    fn adopt(
        &mut self,
        from: NodeId,
        key: PageKey,
        epoch: u16,
        copyset: NodeSet,
        replica: Option<(u16, u32)>,
    ) {
        let me = self.config.me;
        for i in NodeSet(copyset.0 & !self.known.0).iter() {
            self.admit(node_at(i));
        }
        // The other holders that are alive.
        let others = NodeSet(copyset.without(self.me_index).0 & !self.down.0);
        let adopted = self.is_owner(key);
        match replica {
            // Adopted already (a second locator chose alike): the page may have been written
            // since, keep it.
            _ if adopted => {}
            Some(label) if self.held.get(&key) == Some(&label) => {
                // The replica's bytes are the page now: a read copy, owned.
                self.state_mut(key).access = Access::Read;
                self.outputs.push_back(Output::RestoreReplica { key });
                self.stats.from_replica += 1;
            }
            None if self.page(key).access > Access::None => {}
            _ => {
                self.outputs.push_back(Output::Violation {
                    from,
                    what: "adoption of a copy or replica this node does not hold",
                });
                return;
            }
        }
        if !adopted {
            // One copy of the page is left, here: the next release (or the background flush)
            // replicates it again.
            self.dirtied(key);
        }
        let state = self.state_mut(key);
        // Adopted already (a second locator chose alike): its copyset grows.
        let kept = if state.probable_owner == me {
            state.copyset
        } else {
            NodeSet::EMPTY
        };
        state.probable_owner = me;
        state.epoch = latest(state.epoch, epoch);
        state.copyset = NodeSet(kept.0 | others.0);
        // Owner now: a request of ours still out is moot (a grant for it is refused), and so
        // is our own locating.
        let b = self.busy_mut(key);
        b.pending = None;
        b.abandoned = None;
        b.confirm = false;
        if let Some(asked) = b.locating.as_ref().map(|l| l.asked) {
            self.thaw_all(key, asked, me);
        }
        self.settle(key);
    }

    fn on_thaw(&mut self, from: NodeId, key: PageKey, owner: NodeId) {
        let Some(index) = self.index_of(from) else {
            return;
        };
        let Some(b) = self.busy.get_mut(&key) else {
            return;
        };
        b.frozen.retain(|f| f.by != index);
        if b.frozen.is_empty() {
            b.reported = None;
        }
        let hint = self.page(key).probable_owner;
        if owner != LOST && owner != self.config.me && !self.is_owner(key) && self.is_down(hint) {
            self.state_mut(key).probable_owner = owner;
        }
        let relocate = self
            .busy
            .get(&key)
            .and_then(|b| b.locating.as_ref())
            .filter(|_| index < self.me_index)
            .map(|l| l.asked);
        if let Some(asked) = relocate {
            // A locator that went first is done: ask again (the page may have an owner now).
            self.start_round(key, asked);
            return;
        }
        self.settle(key);
    }

    // ---- a node died ----

    fn on_peer_down(&mut self, node: NodeId) {
        let Some(index) = self.index_of(node) else {
            return;
        };
        if node == self.config.me || self.down.contains(index) {
            return;
        }
        self.down = self.down.with(index);
        self.failures = true;
        self.deaths += 1;
        self.died_at[index] = self.deaths;
        self.replica_node_down(index);
        let me = self.config.me;
        // The segments it created: their untouched pages have no owner now.
        let created: Vec<SegmentId> = self
            .pages
            .keys()
            .copied()
            .chain(self.far.keys().map(|k| k.segment))
            .chain(self.busy.keys().map(|k| k.segment))
            .chain(self.managed.keys().map(|k| k.segment))
            .filter(|s| s.creator() == node)
            .collect();
        for segment in created {
            if self.orphans.insert(segment) {
                // Pages never touched here were its: materialize none, they read as LOST.
            }
        }
        for state in self
            .pages
            .values_mut()
            .flat_map(|v| v.iter_mut())
            .chain(self.far.values_mut())
        {
            if state.probable_owner == node {
                state.probable_owner = LOST;
            }
            // A holder's copy, or ownership handed to it and maybe not landed: gone with it.
            state.copyset = state.copyset.without(index);
        }
        let mut restart = Vec::new();
        for (&key, entry) in &mut self.managed {
            entry.queue.retain(|q| q.requester != node);
            if entry.owner == node {
                entry.owner = LOST;
            }
            if let Some((q, target)) = entry.serving {
                if target == node || q.requester == node {
                    entry.serving = None;
                    if q.write || target == node {
                        entry.owner = LOST;
                    }
                    restart.push((key, (target == node && q.requester != node).then_some(q)));
                }
            }
        }
        for (key, failed) in restart {
            if let Some(q) = failed {
                self.tell_lost(key, q.requester);
            }
            self.manage_next(key);
        }
        // Requests this node sent (its own or passed on) to the dead node died with it: ours are
        // asked again (their grant, if it still comes, is taken), others' requesters told.
        let (lost, kept): (VecDeque<Sent>, VecDeque<Sent>) = std::mem::take(&mut self.sent)
            .into_iter()
            .partition(|r| r.to == node);
        self.sent = kept;
        for r in lost {
            if r.requester == me {
                if let Some(b) = self.busy.get_mut(&r.key) {
                    if b.pending.is_some() && b.pending_seq == r.seq {
                        let write = b.pending.take().expect("checked");
                        b.abandoned = Some(b.abandoned.unwrap_or(false) || write);
                        // A read-ahead under way goes on: asked again (located first).
                        b.wanted |= !write;
                    }
                }
            } else {
                self.send(
                    r.requester,
                    PeerMsg::Unknown {
                        key: r.key,
                        seq: r.seq,
                    },
                );
            }
        }
        // Requests held behind our own (see `on_request`) go on now.
        if self.config.manager == ManagerKind::Dynamic {
            let held: Vec<(PageKey, Queued)> = self
                .busy
                .iter_mut()
                .filter(|(_, b)| b.pending.is_some())
                .flat_map(|(&k, b)| {
                    std::mem::take(&mut b.requests)
                        .into_iter()
                        .map(move |q| (k, q))
                })
                .collect();
            for (key, request) in held {
                if request.requester != node {
                    self.serve(key, request);
                }
            }
        }
        let keys: Vec<PageKey> = self.busy.keys().copied().collect();
        for key in keys {
            let manager_died =
                self.config.manager != ManagerKind::Dynamic && self.manager_of(key) == node;
            let dynamic = self.config.manager == ManagerKind::Dynamic;
            let b = self.busy_mut(key);
            b.requests.retain(|q| q.requester != node);
            b.frozen.retain(|f| f.by != index);
            if b.deferred_invalidate.is_some_and(|(n, _)| n == node) {
                b.deferred_invalidate = None;
            }
            // A revocation under way for the dead node ends in nothing but lower access.
            b.revoking = match b.revoking {
                Some(AfterRevoke::ServeRead(n)) if n == node => Some(AfterRevoke::Nothing {
                    keep: Access::Read,
                    owner_lost: false,
                }),
                Some(AfterRevoke::ServeWrite(n)) if n == node => Some(AfterRevoke::Nothing {
                    keep: Access::None,
                    owner_lost: false,
                }),
                Some(AfterRevoke::Invalidate(n)) if n == node => Some(AfterRevoke::Nothing {
                    keep: Access::None,
                    owner_lost: true,
                }),
                other => other,
            };
            if !dynamic && manager_died && b.pending.is_some() {
                b.pending = None;
                b.confirm = false;
                self.lose(key);
                continue;
            }
            // A page being located is asked again: answers given before this death may miss
            // what the dead node sent.
            let relocate = b.locating.as_ref().map(|l| l.asked.without(index));
            let mut written = false;
            if let Some(holders) = b.invalidating {
                let left = holders.without(index);
                if left.is_empty() {
                    written = true;
                } else {
                    b.invalidating = Some(left);
                }
            }
            if let Some(asked) = relocate {
                self.start_round(key, asked);
            }
            if written {
                self.complete_write(key);
            } else {
                self.settle(key);
            }
        }
    }

    // ---- fixed and central managers ----

    fn manage(&mut self, key: PageKey, request: Queued) {
        let creator = key.segment.creator();
        // A manager that restarted knows nothing of the pages it managed before: owners it
        // cannot know are lost to it (the dynamic manager finds them instead).
        let restarted = self.died_at[self.me_index] > 0;
        let serial = key.segment.0 & ((1 << SegmentId::SERIAL_BITS) - 1);
        let forgotten = restarted && serial < self.joined_at;
        let orphan = self.orphans.contains(&key.segment) || self.is_down(creator) || forgotten;
        let entry = self.managed.entry(key).or_insert_with(|| Managed {
            owner: if orphan { LOST } else { creator },
            serving: None,
            queue: VecDeque::new(),
        });
        if entry.serving.is_some() {
            entry.queue.push_back(request);
            return;
        }
        let owner = entry.owner;
        if owner == LOST || self.is_down(owner) {
            if let Some(e) = self.managed.get_mut(&key) {
                e.owner = LOST;
            }
            self.tell_lost(key, request.requester);
            self.manage_next(key);
            return;
        }
        let entry = self.managed.get_mut(&key).expect("inserted above");
        entry.serving = Some((request, owner));
        if request.write {
            entry.owner = request.requester;
        }
        if owner == self.config.me {
            self.on_request(key, request);
        } else {
            self.stats.forwarded += 1;
            self.send(
                owner,
                PeerMsg::Request {
                    key,
                    write: request.write,
                    requester: request.requester,
                    seq: request.seq,
                    incarnation: request.incarnation,
                    hops: request.hops,
                },
            );
        }
    }

    /// The manager says no copy of `key` is known to survive.
    fn tell_lost(&mut self, key: PageKey, requester: NodeId) {
        if requester == self.config.me {
            if let Some(b) = self.busy.get_mut(&key) {
                b.pending = None;
                b.confirm = false;
            }
            self.lose(key);
        } else {
            self.send(requester, PeerMsg::Lost { key });
        }
    }

    fn manage_next(&mut self, key: PageKey) {
        let next = self
            .managed
            .get_mut(&key)
            .filter(|e| e.serving.is_none())
            .and_then(|e| e.queue.pop_front());
        if let Some(next) = next {
            self.manage(key, next);
        }
    }

    fn on_confirm(&mut self, from: NodeId, key: PageKey) {
        let Some(entry) = self.managed.get_mut(&key) else {
            return;
        };
        // Only the request being served confirms (one reset when a node died does not).
        if entry.serving.is_none_or(|(q, _)| q.requester != from) {
            return;
        }
        entry.serving = None;
        self.manage_next(key);
    }

    // ---- time and removal ----

    fn on_tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let timeout = self.config.fault_timeout_ms;
        let mut failed = Vec::new();
        for busy in self.busy.values_mut() {
            busy.faults.retain(|w| {
                let expired = now_ms.saturating_sub(w.since_ms) >= 2 * timeout;
                if expired {
                    failed.push(w.id);
                }
                !expired
            });
        }
        for id in failed {
            self.stats.failed += 1;
            self.outputs.push_back(Output::Fail {
                id,
                error: FaultError::TimedOut,
            });
        }
        // A page located for longer than the fault timeout (a node that should answer is
        // cut off, not yet agreed dead): its faults failed above; the nodes asked are thawed.
        let stale: Vec<(PageKey, NodeSet)> = self
            .busy
            .iter()
            .filter_map(|(&k, b)| b.locating.as_ref().map(|l| (k, l)))
            .filter(|(_, l)| now_ms.saturating_sub(l.since_ms) >= timeout)
            .map(|(k, l)| (k, l.asked))
            .collect();
        for (key, asked) in stale {
            self.thaw_all(key, asked, LOST);
            self.settle(key);
        }
        // A request out for longer than the fault timeout was lost (with a link that broke,
        // or a node): given up, so that the page is not busy for ever. Its grant, if it still
        // comes, is taken; the next fault asks again. Dynamic manager only (a fixed or central
        // manager would wait for its confirmation).
        if self.config.manager == ManagerKind::Dynamic {
            let stale: Vec<PageKey> = self
                .busy
                .iter()
                .filter(|(_, b)| {
                    b.pending.is_some()
                        && b.faults.is_empty()
                        && now_ms.saturating_sub(b.pending_since_ms) >= timeout
                })
                .map(|(&k, _)| k)
                .collect();
            for key in stale {
                self.failures = true;
                let b = self.busy_mut(key);
                let write = b.pending.take().expect("filtered");
                b.abandoned = Some(b.abandoned.unwrap_or(false) || write);
                self.settle(key);
            }
        }
    }

    fn on_removed(&mut self, segment: SegmentId) {
        self.forget_replicas(segment);
        self.pages.remove(&segment);
        self.orphans.remove(&segment);
        self.far.retain(|k, _| k.segment != segment);
        self.managed.retain(|k, _| k.segment != segment);
        let keys: Vec<PageKey> = self
            .busy
            .keys()
            .filter(|k| k.segment == segment)
            .copied()
            .collect();
        for key in keys {
            for w in self.busy.remove(&key).map(|b| b.faults).unwrap_or_default() {
                self.stats.failed += 1;
                self.outputs.push_back(Output::Fail {
                    id: w.id,
                    error: FaultError::UnknownSegment,
                });
            }
        }
    }

    /// Pages of a segment this node holds at each access level: (read, write).
    pub fn access_counts(&self, segment: SegmentId) -> (u64, u64) {
        let mut counts = (0, 0);
        let far = self
            .far
            .iter()
            .filter(|(k, _)| k.segment == segment)
            .map(|(_, p)| p);
        for page in self.pages_of(segment).iter().chain(far) {
            match page.access {
                Access::None => {}
                Access::Read => counts.0 += 1,
                Access::Write => counts.1 += 1,
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(me: u32, members: &[u32]) -> Node {
        Node::new(Config {
            me: NodeId(me),
            members: members.iter().copied().map(NodeId).collect(),
            manager: ManagerKind::Dynamic,
            fault_timeout_ms: 100,
            readahead: 0,
            incarnation: 1,
            replicas: 0,
        })
    }

    /// A local fault on page 0 of node 1's segment.
    fn fault_on_page_0(id: u64, write: bool) -> Input {
        Input::Fault {
            id: FaultId(id),
            key: key(1, 0),
            write,
            pages: 1,
            now_ms: 0,
        }
    }

    fn drain(node: &mut Node) -> Vec<Output> {
        std::iter::from_fn(|| node.poll_output()).collect()
    }

    fn key(creator: u32, page: u32) -> PageKey {
        PageKey {
            segment: SegmentId::new(NodeId(creator), 1),
            page,
        }
    }

    /// A peer's write grant whose copyset names node 64, which joined the cluster but whose
    /// join this node has not applied yet: it is a member now and is invalidated (this once
    /// indexed a fixed member list out of bounds).
    #[test]
    fn a_grant_naming_a_node_that_joined_meanwhile_invalidates_it() {
        let mut n = node(2, &[1, 2]);
        n.handle(Input::Fault {
            id: FaultId(1),
            key: key(1, 0),
            write: true,
            pages: 8,
            now_ms: 0,
        });
        drain(&mut n);
        n.handle(Input::Peer {
            from: NodeId(1),
            msg: PeerMsg::Grant {
                key: key(1, 0),
                write: true,
                copyset: NodeSet(1 << 63),
                epoch: 0,
                deaths: 0,
            },
        });
        let out = drain(&mut n);
        assert!(
            out.iter().any(|o| matches!(
                o,
                Output::Send {
                    to: NodeId(64),
                    msg: PeerMsg::Invalidate { .. }
                }
            )),
            "{out:?}"
        );
    }

    /// A page index far past anything touched (u32::MAX, for a segment the node never heard of,
    /// as a fixed manager may) allocates one entry, not room for every page below it.
    #[test]
    fn a_far_page_index_takes_one_entry() {
        let mut n = Node::new(Config {
            me: NodeId(1),
            members: vec![NodeId(1), NodeId(2)],
            manager: ManagerKind::Fixed,
            fault_timeout_ms: 100,
            readahead: 0,
            incarnation: 1,
            replicas: 0,
        });
        let far = key(2, u32::MAX);
        n.handle(Input::Peer {
            from: NodeId(2),
            msg: PeerMsg::Invalidate {
                key: far,
                new_owner: NodeId(2),
                epoch: 1,
            },
        });
        drain(&mut n);
        assert!(n.pages_of(far.segment).len() <= 1);
        // The dense run grows over far pages it reaches, keeping their state.
        let near = key(2, 70_000);
        n.handle(Input::Peer {
            from: NodeId(2),
            msg: PeerMsg::Invalidate {
                key: near,
                new_owner: NodeId(2),
                epoch: 1,
            },
        });
        let before = n.page(near);
        n.state_mut(key(2, 70_001)).local = Access::None;
        assert_eq!(n.page(near), before);
        assert!(n.pages_of(far.segment).len() > 70_000 || n.far.contains_key(&near));
    }

    /// Pages requested ahead of the faults in `out` (read requests for pages not in `faulted`).
    fn asked_ahead(out: &[Output], faulted: &[u32]) -> Vec<u32> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send {
                    msg:
                        PeerMsg::Request {
                            key, write: false, ..
                        },
                    ..
                } if !faulted.contains(&key.page) => Some(key.page),
                _ => None,
            })
            .collect()
    }

    /// A sequential run read ahead of, after a miss elsewhere: the run starts its window
    /// again (a window of 0 once doubled stayed 0, and a segment read at random once was never
    /// read ahead again).
    #[test]
    fn a_run_after_a_random_miss_is_read_ahead() {
        let mut n = node(2, &[1, 2]);
        n.config.readahead = 64;
        let mut fault = |id: u64, page: u32| {
            n.handle(Input::Fault {
                id: FaultId(id),
                key: key(1, page),
                write: false,
                pages: 1000,
                now_ms: 0,
            });
            drain(&mut n)
        };
        assert_eq!(asked_ahead(&fault(1, 500), &[500]), Vec::<u32>::new());
        assert_eq!(asked_ahead(&fault(2, 10), &[10]), Vec::<u32>::new());
        assert_eq!(asked_ahead(&fault(3, 11), &[11]), vec![12]);
        assert_eq!(asked_ahead(&fault(4, 13), &[13]), vec![14, 15]);
    }

    #[test]
    fn creator_grants_its_own_pages_at_once() {
        let mut n = node(1, &[1, 2]);
        n.handle(Input::Fault {
            id: FaultId(1),
            key: key(1, 5),
            write: false,
            pages: 8,
            now_ms: 0,
        });
        assert_eq!(
            drain(&mut n),
            vec![Output::Grant {
                id: FaultId(1),
                key: key(1, 5),
                access: Access::Write,
                waited: false,
            }]
        );
        assert_eq!(n.stats().local_reads, 1);
        assert_eq!(n.page(key(1, 5)).local, Access::Write);
    }

    #[test]
    fn remote_fault_asks_the_creator_and_times_out() {
        let mut n = node(2, &[1, 2]);
        n.handle(Input::Fault {
            id: FaultId(7),
            key: key(1, 0),
            write: true,
            pages: 8,
            now_ms: 10,
        });
        assert_eq!(
            drain(&mut n),
            vec![Output::Send {
                to: NodeId(1),
                msg: PeerMsg::Request {
                    key: key(1, 0),
                    write: true,
                    requester: NodeId(2),
                    seq: 1,
                    incarnation: 1,
                    hops: 0,
                }
            }]
        );
        n.handle(Input::Tick { now_ms: 150 });
        assert!(drain(&mut n).is_empty(), "not yet: twice the fault timeout");
        n.handle(Input::Tick { now_ms: 210 });
        assert_eq!(
            drain(&mut n),
            vec![Output::Fail {
                id: FaultId(7),
                error: FaultError::TimedOut
            }]
        );
        // The request is still out: a late grant is taken, and the page is ours.
        n.handle(Input::Peer {
            from: NodeId(1),
            msg: PeerMsg::Grant {
                key: key(1, 0),
                write: true,
                copyset: NodeSet::EMPTY,
                epoch: 0,
                deaths: 0,
            },
        });
        assert!(drain(&mut n).is_empty());
        assert_eq!(n.page(key(1, 0)).access, Access::Write);
        assert!(n.busy(key(1, 0)).is_none());
    }

    #[test]
    fn a_request_lost_with_a_link_is_given_up_and_asked_again() {
        let mut n = node(2, &[1, 2]);
        let fault = |id, now_ms| Input::Fault {
            id: FaultId(id),
            key: key(1, 0),
            write: false,
            pages: 1,
            now_ms,
        };
        n.handle(fault(1, 0));
        drain(&mut n);
        n.handle(Input::Tick { now_ms: 200 });
        assert!(matches!(
            drain(&mut n).as_slice(),
            [Output::Fail {
                error: FaultError::TimedOut,
                ..
            }]
        ));
        // The request is not answered by then: the page is not left busy for ever.
        assert_eq!(n.busy(key(1, 0)).and_then(|b| b.pending), None);
        n.handle(fault(2, 220));
        assert_eq!(
            drain(&mut n),
            vec![Output::Send {
                to: NodeId(1),
                msg: PeerMsg::Request {
                    key: key(1, 0),
                    write: false,
                    requester: NodeId(2),
                    seq: 2,
                    incarnation: 1,
                    hops: 0,
                }
            }],
            "asked again"
        );
        // Both are answered: the first copy serves the fault, the second is harmless.
        let grant = Input::Peer {
            from: NodeId(1),
            msg: PeerMsg::Grant {
                key: key(1, 0),
                write: false,
                copyset: NodeSet::EMPTY,
                epoch: 0,
                deaths: 0,
            },
        };
        n.handle(grant.clone());
        assert!(matches!(
            drain(&mut n).as_slice(),
            [Output::Grant {
                id: FaultId(2),
                access: Access::Read,
                ..
            }]
        ));
        n.handle(grant);
        assert!(drain(&mut n).is_empty(), "no violation for the duplicate");
        assert_eq!(n.page(key(1, 0)).access, Access::Read);
    }

    #[test]
    fn a_fenced_node_stops_writing_until_it_reaches_the_majority_again() {
        let mut n = node(1, &[1, 2, 3]);
        let fault = fault_on_page_0;
        n.handle(fault(1, true));
        drain(&mut n);
        assert_eq!(n.grantable(key(1, 0)), Access::Write);
        n.handle(Input::Fence { on: true });
        assert_eq!(
            drain(&mut n),
            vec![Output::Revoke {
                key: key(1, 0),
                to: Access::Read
            }],
            "local writers revoked"
        );
        assert_eq!(n.grantable(key(1, 0)), Access::Read);
        n.handle(Input::Revoked { key: key(1, 0) });
        drain(&mut n);
        n.handle(fault(2, true));
        assert!(drain(&mut n).is_empty(), "a write waits while fenced");
        n.handle(fault(3, false));
        assert!(
            matches!(
                drain(&mut n).as_slice(),
                [Output::Grant { id: FaultId(3), .. }]
            ),
            "reads go on"
        );
        n.handle(Input::Fence { on: false });
        assert!(matches!(
            drain(&mut n).as_slice(),
            [Output::Grant {
                id: FaultId(2),
                access: Access::Write,
                ..
            }]
        ));
    }

    /// A fenced node's read copy could be taken over and changed by the majority: its readers
    /// stop too, until the fence lifts.
    #[test]
    fn a_fenced_node_stops_reading_copies_others_could_change() {
        let mut n = node(2, &[1, 2, 3]);
        let read = |id| fault_on_page_0(id, false);
        n.handle(read(1));
        drain(&mut n);
        n.handle(Input::Peer {
            from: NodeId(1),
            msg: PeerMsg::Grant {
                key: key(1, 0),
                write: false,
                copyset: NodeSet::EMPTY,
                epoch: 0,
                deaths: 0,
            },
        });
        drain(&mut n);
        assert_eq!(n.grantable(key(1, 0)), Access::Read);
        n.handle(Input::Fence { on: true });
        assert_eq!(
            drain(&mut n),
            vec![Output::Revoke {
                key: key(1, 0),
                to: Access::None
            }]
        );
        assert_eq!(n.grantable(key(1, 0)), Access::None);
        n.handle(Input::Revoked { key: key(1, 0) });
        drain(&mut n);
        n.handle(read(2));
        assert!(
            drain(&mut n).is_empty(),
            "a read of the copy waits while fenced"
        );
        n.handle(Input::Fence { on: false });
        assert!(matches!(
            drain(&mut n).as_slice(),
            [Output::Grant {
                id: FaultId(2),
                access: Access::Read,
                ..
            }]
        ));
    }

    #[test]
    fn removal_fails_waiting_faults() {
        let mut n = node(2, &[1, 2]);
        n.handle(Input::Fault {
            id: FaultId(3),
            key: key(1, 0),
            write: false,
            pages: 8,
            now_ms: 0,
        });
        drain(&mut n);
        n.handle(Input::SegmentRemoved {
            segment: key(1, 0).segment,
        });
        assert_eq!(
            drain(&mut n),
            vec![Output::Fail {
                id: FaultId(3),
                error: FaultError::UnknownSegment
            }]
        );
    }

    #[test]
    fn strangers_and_unasked_grants_are_violations() {
        let mut n = node(1, &[1, 2]);
        n.handle(Input::Peer {
            from: NodeId(9),
            msg: PeerMsg::InvalidateAck { key: key(1, 0) },
        });
        n.handle(Input::Peer {
            from: NodeId(2),
            msg: PeerMsg::Grant {
                key: key(1, 0),
                write: true,
                copyset: NodeSet::EMPTY,
                epoch: 0,
                deaths: 0,
            },
        });
        n.handle(Input::Peer {
            from: NodeId(2),
            msg: PeerMsg::Invalidate {
                key: key(1, 0),
                new_owner: NodeId(2),
                epoch: 1,
            },
        });
        let outputs = drain(&mut n);
        assert_eq!(outputs.len(), 3);
        assert!(outputs
            .iter()
            .all(|o| matches!(o, Output::Violation { .. })));
        assert_eq!(n.page(key(1, 0)).access, Access::Write, "state untouched");
    }

    #[test]
    fn nothing_is_grantable_beyond_a_revocation_under_way() {
        let mut n = node(1, &[1, 2]);
        let k = key(1, 0);
        n.handle(Input::Fault {
            id: FaultId(1),
            key: k,
            write: true,
            pages: 8,
            now_ms: 0,
        });
        drain(&mut n);
        assert_eq!(n.grantable(k), Access::Write);
        n.handle(Input::Peer {
            from: NodeId(2),
            msg: PeerMsg::Request {
                key: k,
                write: false,
                requester: NodeId(2),
                seq: 1,
                incarnation: 1,
                hops: 0,
            },
        });
        assert_eq!(
            drain(&mut n),
            vec![Output::Revoke {
                key: k,
                to: Access::Read
            }]
        );
        assert_eq!(
            n.page(k).local,
            Access::Write,
            "processes may still hold write"
        );
        assert_eq!(n.grantable(k), Access::Read, "but may take only read");
        n.handle(Input::Revoked { key: k });
        drain(&mut n);
        assert_eq!(n.grantable(k), Access::Read);
        assert_eq!(n.page(k).local, Access::Read);
    }

    #[test]
    fn resting_page_state_is_small() {
        assert!(Node::bytes_per_page() <= 16, "{}", Node::bytes_per_page());
    }
}
