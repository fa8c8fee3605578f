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

use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};

use dsm_proto::peer::{NodeSet, PageKey, PeerMsg};
use dsm_proto::{Access, NodeId, SegmentId};

use crate::page::{AfterRevoke, Busy, Managed, PageState, Queued, Waiting};

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
    /// Every node of the cluster, this one included (at most 64).
    pub members: Vec<NodeId>,
    /// The manager algorithm (the same on every node).
    pub manager: ManagerKind,
    /// A local fault still waiting after this long fails (`FaultError::TimedOut`).
    pub fault_timeout_ms: u64,
    /// Most pages to read ahead of a sequential run of read misses (0: no read-ahead).
    pub readahead: u32,
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
}

/// A segment's run of read misses, for read-ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Run {
    /// The last page read ahead (or missed).
    end: u32,
    /// How many pages the next read-ahead asks for.
    window: u32,
}

/// Pages past the end of a segment's dense run beyond which a page is kept apart ([`Node`]'s
/// `far`).
const DENSE_GAP: usize = 1 << 16;

/// One node's protocol state.
#[derive(Clone, Debug)]
pub struct Node {
    config: Config,
    me_index: usize,
    pages: BTreeMap<SegmentId, Vec<PageState>>,
    /// Pages far past the end of their segment's dense run (more than [`DENSE_GAP`] pages on):
    /// kept apart, so that a page index from a peer never allocates room for every page below it.
    far: BTreeMap<PageKey, PageState>,
    busy: BTreeMap<PageKey, Busy>,
    managed: BTreeMap<PageKey, Managed>,
    runs: BTreeMap<SegmentId, Run>,
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
    }
}

impl Node {
    /// A node that knows no pages yet.
    ///
    /// # Panics
    /// If `config.me` is not among `config.members`, or there are more than 64 members.
    pub fn new(mut config: Config) -> Node {
        config.members.sort();
        config.members.dedup();
        assert!(config.members.len() <= 64, "at most 64 nodes");
        let me_index = config
            .members
            .iter()
            .position(|m| *m == config.me)
            .expect("this node is a member");
        Node {
            config,
            me_index,
            pages: BTreeMap::new(),
            far: BTreeMap::new(),
            busy: BTreeMap::new(),
            managed: BTreeMap::new(),
            runs: BTreeMap::new(),
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
            .unwrap_or_else(|| PageState::untouched(self.config.me, key.segment.creator()))
    }

    /// What a local process may take of a page without asking (the state table's entry): the
    /// page's `local`, or, while local processes are being revoked, what the revocation leaves
    /// them. `local` itself drops only when the revocation completes, as it bounds what they may
    /// still hold.
    pub fn grantable(&self, key: PageKey) -> Access {
        let local = self.page(key).local;
        match self.busy.get(&key).and_then(|b| b.revoking) {
            Some(AfterRevoke::ServeRead(_)) => local.min(Access::Read),
            Some(AfterRevoke::ServeWrite(_) | AfterRevoke::Invalidate(_)) => Access::None,
            None => local,
        }
    }

    /// The work in progress on a page, if any.
    pub fn busy(&self, key: PageKey) -> Option<&Busy> {
        self.busy.get(&key)
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
        match input {
            Input::Fault {
                id,
                key,
                write,
                pages,
                now_ms,
            } => self.on_fault(id, key, write, pages, now_ms),
            Input::Revoked { key } => self.on_revoked(key),
            Input::Peer { from, msg } => self.on_peer(from, msg),
            Input::Tick { now_ms } => self.on_tick(now_ms),
            Input::SegmentRemoved { segment } => self.on_removed(segment),
        }
    }

    // ---- small helpers ----

    fn index_of(&self, node: NodeId) -> Option<usize> {
        self.config.members.iter().position(|m| *m == node)
    }

    fn state_mut(&mut self, key: PageKey) -> &mut PageState {
        let (me, creator) = (self.config.me, key.segment.creator());
        let pages = self.pages.entry(key.segment).or_default();
        let index = key.page as usize;
        if pages.len() <= index {
            if index - pages.len() > DENSE_GAP {
                return self
                    .far
                    .entry(key)
                    .or_insert_with(|| PageState::untouched(me, creator));
            }
            let from = pages.len() as u32;
            pages.resize(index + 1, PageState::untouched(me, creator));
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

    fn in_transition(&self, key: PageKey) -> bool {
        self.busy.get(&key).is_some_and(Busy::in_transition)
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
        self.stats.messages_sent += 1;
        if let PeerMsg::Grant { .. } = msg {
            self.stats.pages_sent += 1;
        }
        self.outputs.push_back(Output::Send { to, msg });
    }

    fn grant(&mut self, w: Waiting, key: PageKey, waited: bool) {
        let state = self.state_mut(key);
        state.local = state.local.max(state.access);
        let access = state.access;
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
        if state.access >= Access::for_fault(write) {
            if write {
                self.stats.local_writes += 1;
            } else {
                self.stats.local_reads += 1;
            }
            self.grant(waiting, key, false);
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
                (r.window * 2).min(max)
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

    /// Sends a request for `key` (the page is not in transition and not ours).
    fn request(&mut self, key: PageKey, write: bool) {
        let state = self.page(key);
        let me = self.config.me;
        let busy = self.busy_mut(key);
        busy.pending = Some(write);
        match self.config.manager {
            ManagerKind::Dynamic => self.send(
                state.probable_owner,
                PeerMsg::Request {
                    key,
                    write,
                    requester: me,
                },
            ),
            ManagerKind::Fixed | ManagerKind::Central => {
                self.busy_mut(key).confirm = true;
                let manager = self.manager_of(key);
                if manager == me {
                    self.manage(key, write, me);
                } else {
                    self.send(
                        manager,
                        PeerMsg::Request {
                            key,
                            write,
                            requester: me,
                        },
                    );
                }
            }
        }
    }

    fn start_invalidations(&mut self, key: PageKey, holders: NodeSet) {
        if holders.is_empty() {
            self.complete_write(key);
            return;
        }
        self.busy_mut(key).invalidating = Some(holders);
        let me = self.config.me;
        for index in holders.iter() {
            self.stats.invalidations_sent += 1;
            let to = self.config.members[index];
            self.send(to, PeerMsg::Invalidate { key, new_owner: me });
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
            self.on_confirm(key);
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
            if busy.in_transition() {
                return;
            }
            if let Some(new_owner) = busy.deferred_invalidate {
                // Only set while a read was pending, and the read has completed.
                self.busy_mut(key).deferred_invalidate = None;
                self.invalidate_now(key, new_owner);
                continue;
            }
            let access = self.page(key).access;
            let faults = std::mem::take(&mut self.busy_mut(key).faults);
            let (ready, still): (Vec<Waiting>, Vec<Waiting>) = faults
                .into_iter()
                .partition(|w| access >= Access::for_fault(w.write));
            for w in ready {
                self.grant(w, key, true);
            }
            self.busy_mut(key).faults = still;
            if let Some(request) = self.busy_mut(key).requests.pop_front() {
                self.serve(key, request);
                continue;
            }
            if !self.busy_mut(key).faults.is_empty() {
                self.acquire(key);
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
            } => {
                if self.index_of(requester).is_none() || requester == self.config.me {
                    self.outputs.push_back(Output::Violation {
                        from,
                        what: "request for an impossible requester",
                    });
                    return;
                }
                let managing = self.config.manager != ManagerKind::Dynamic
                    && self.manager_of(key) == self.config.me
                    && from == requester;
                if managing {
                    self.manage(key, write, requester);
                } else {
                    self.on_request(key, Queued { write, requester });
                }
            }
            PeerMsg::Grant {
                key,
                write,
                copyset,
            } => self.on_grant(from, key, write, copyset),
            PeerMsg::Invalidate { key, new_owner } => self.on_invalidate(from, key, new_owner),
            PeerMsg::InvalidateAck { key } => self.on_invalidate_ack(from, key),
            PeerMsg::Confirm { key } => self.on_confirm(key),
        }
    }

    fn on_request(&mut self, key: PageKey, request: Queued) {
        if self.in_transition(key) || self.busy.get(&key).is_some_and(|b| !b.requests.is_empty()) {
            self.busy_mut(key).requests.push_back(request);
            return;
        }
        self.serve(key, request);
    }

    /// Serves (or passes on) a request; the page is not in transition.
    fn serve(&mut self, key: PageKey, request: Queued) {
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
            };
            if state.probable_owner == request.requester {
                // Only a request that overtook our own knowledge gets here: it is the
                // requester's page already, nothing to pass on.
                self.outputs.push_back(Output::Violation {
                    from: request.requester,
                    what: "request routed back to its requester",
                });
                return;
            }
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
        self.send(
            requester,
            PeerMsg::Grant {
                key,
                write: false,
                copyset: NodeSet::EMPTY,
            },
        );
    }

    fn finish_serve_write(&mut self, key: PageKey, requester: NodeId) {
        let index = self.index_of(requester).expect("checked on receipt");
        let state = self.state_mut(key);
        let copyset = state.copyset.without(index);
        state.access = Access::None;
        state.copyset = NodeSet::EMPTY;
        state.probable_owner = requester;
        self.send(
            requester,
            PeerMsg::Grant {
                key,
                write: true,
                copyset,
            },
        );
    }

    /// Whether a grant of `key` (for a write if `write`) would be accepted now: the driver
    /// stores a grant's page bytes only then, before handing the grant over.
    pub fn expects_grant(&self, key: PageKey, write: bool) -> bool {
        self.busy.get(&key).and_then(|b| b.pending) == Some(write)
    }

    fn on_grant(&mut self, from: NodeId, key: PageKey, write: bool, copyset: NodeSet) {
        if !self.expects_grant(key, write) {
            self.outputs.push_back(Output::Violation {
                from,
                what: "grant for a request this node did not make",
            });
            return;
        }
        let members = self.config.members.len();
        if members < 64 && copyset.0 >> members != 0 {
            self.outputs.push_back(Output::Violation {
                from,
                what: "grant whose copyset names nodes outside the cluster",
            });
            return;
        }
        self.stats.pages_received += 1;
        self.busy_mut(key).pending = None;
        if write {
            let me = self.config.me;
            let state = self.state_mut(key);
            // Our copy (if any) is the owner's copy until we write: keep reading it meanwhile.
            state.access = state.access.max(Access::Read);
            state.probable_owner = me;
            let holders = copyset.without(self.me_index);
            self.start_invalidations(key, holders);
        } else {
            let state = self.state_mut(key);
            state.access = Access::Read;
            // Local processes may read it (read ahead, or for the faults waiting): `local` is
            // an upper bound, so raising it only means a revocation asks them later.
            state.local = state.local.max(Access::Read);
            state.probable_owner = from;
            if std::mem::take(&mut self.busy_mut(key).confirm) {
                self.confirm(key);
            }
            self.settle(key);
        }
    }

    fn on_invalidate(&mut self, from: NodeId, key: PageKey, new_owner: NodeId) {
        if self.is_owner(key) || new_owner != from {
            self.outputs.push_back(Output::Violation {
                from,
                what: "invalidation of the owner's copy, or on another's behalf",
            });
            return;
        }
        if self.busy.get(&key).and_then(|b| b.pending) == Some(false) {
            // Our read grant is on its way from the previous owner (it put us in the copyset
            // it handed over): let it land and serve its readers first, then drop the copy.
            self.busy_mut(key).deferred_invalidate = Some(new_owner);
            return;
        }
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
                self.finish_serve_read(key, requester);
            }
            AfterRevoke::ServeWrite(requester) => {
                self.state_mut(key).local = Access::None;
                self.finish_serve_write(key, requester);
            }
            AfterRevoke::Invalidate(new_owner) => {
                self.state_mut(key).local = Access::None;
                self.finish_invalidate(key, new_owner);
            }
        }
        self.settle(key);
    }

    // ---- fixed and central managers ----

    fn manage(&mut self, key: PageKey, write: bool, requester: NodeId) {
        let entry = self.managed.entry(key).or_insert_with(|| Managed {
            owner: key.segment.creator(),
            busy: false,
            queue: VecDeque::new(),
        });
        if entry.busy {
            entry.queue.push_back(Queued { write, requester });
            return;
        }
        entry.busy = true;
        let owner = entry.owner;
        if write {
            entry.owner = requester;
        }
        if owner == self.config.me {
            self.on_request(key, Queued { write, requester });
        } else {
            self.stats.forwarded += 1;
            self.send(
                owner,
                PeerMsg::Request {
                    key,
                    write,
                    requester,
                },
            );
        }
    }

    fn on_confirm(&mut self, key: PageKey) {
        let Some(entry) = self.managed.get_mut(&key) else {
            return;
        };
        entry.busy = false;
        if let Some(next) = entry.queue.pop_front() {
            self.manage(key, next.write, next.requester);
        }
    }

    // ---- time and removal ----

    fn on_tick(&mut self, now_ms: u64) {
        let timeout = self.config.fault_timeout_ms;
        let mut failed = Vec::new();
        for busy in self.busy.values_mut() {
            busy.faults.retain(|w| {
                let expired = now_ms.saturating_sub(w.since_ms) >= timeout;
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
    }

    fn on_removed(&mut self, segment: SegmentId) {
        self.pages.remove(&segment);
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
        })
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

    /// A peer's write grant whose copyset names member 63 (of a 2-node cluster) is refused as a
    /// violation; it once indexed the member list out of bounds.
    #[test]
    fn a_grant_with_a_copyset_outside_the_cluster_is_a_violation() {
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
            },
        });
        assert!(matches!(
            drain(&mut n).as_slice(),
            [Output::Violation {
                from: NodeId(1),
                ..
            }]
        ));
        assert!(
            n.expects_grant(key(1, 0), true),
            "the real grant may still come"
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
        });
        let far = key(2, u32::MAX);
        n.handle(Input::Peer {
            from: NodeId(2),
            msg: PeerMsg::Invalidate {
                key: far,
                new_owner: NodeId(2),
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
            },
        });
        let before = n.page(near);
        n.state_mut(key(2, 70_001)).local = Access::None;
        assert_eq!(n.page(near), before);
        assert!(n.pages_of(far.segment).len() > 70_000 || n.far.contains_key(&near));
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
                    requester: NodeId(2)
                }
            }]
        );
        n.handle(Input::Tick { now_ms: 50 });
        assert!(drain(&mut n).is_empty(), "not yet");
        n.handle(Input::Tick { now_ms: 110 });
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
            },
        });
        assert!(drain(&mut n).is_empty());
        assert_eq!(n.page(key(1, 0)).access, Access::Write);
        assert!(n.busy(key(1, 0)).is_none());
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
            },
        });
        n.handle(Input::Peer {
            from: NodeId(2),
            msg: PeerMsg::Invalidate {
                key: key(1, 0),
                new_owner: NodeId(2),
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
