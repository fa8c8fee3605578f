//! Replicas at release points (`--replicas K`): a page written on this node since its last
//! release is copied to K other live nodes before a release completes, so that the death of
//! its owner loses no released write (see docs/protocol.md, "Replicas").
//!
//! - **Dirty pages**: an owned page becomes dirty when a local process is granted write access
//!   to it ([`Node::grant`]). It stays writable until the next release; then its bytes as they
//!   are go to the replica nodes as `Replica{epoch, version}` — the version counts the owner's
//!   replications of the page in its ownership epoch — and at the same time local writers are
//!   revoked to read (their next write faults, cheaply, and dirties it again). A writer may
//!   store between the two: when the revocation ends the driver compares the page with the
//!   bytes it sent (`Input::Rewritten`), and a page that changed is sent again; a release
//!   waits for both the replica nodes' acknowledgement and that verdict.
//! - **A release** (`Input::Release`) completes (`Output::Released`) once every page dirty or
//!   being replicated when it was asked for is acknowledged by its replica nodes (or they died,
//!   or ownership of the page moved away).
//! - **Replica nodes**: the next K live members after this one, by node id round the ring:
//!   never this node, so one host's death never takes both copies.
//! - **Handing ownership on is a release**: the old owner keeps the bytes it handed over as a
//!   replica of the new epoch (version 0): the new owner's page survives the new owner's death
//!   until it replicates on its own.
//! - **A replica holder** keeps the bytes in its copy of the page, which it does not hold
//!   (access none), and says so when the page is located (`Located{replica}`); a locator takes
//!   the newest copy or replica (latest epoch, then a copy before any replica, then the highest
//!   version), and the holder adopts it.

/// Pages whose replication may be under way at once (sent, not yet acknowledged); the rest
/// wait their turn (`backlog`), so that a release of many pages neither floods the link (Raft's
/// heartbeats share it) nor holds a queue of that size.
const MAX_INFLIGHT: usize = 256;

/// Most pages after a rewritten one that a write fault opens again (see `reopen_run`).
const REOPEN_RUN: u32 = 64;

use dsm_proto::peer::{NodeSet, PageKey, PeerMsg};
use dsm_proto::{Access, NodeId, SegmentId};

use super::{index, node_at, Node, Output};
use crate::page::{later, AfterRevoke};

/// A replication of one page under way: its version, and the replica nodes that have not
/// acknowledged it yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Inflight {
    pub epoch: u16,
    pub version: u32,
    pub waiting: NodeSet,
}

/// What this node knows of a page's replication, for `dsmctl pages`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replication {
    /// Written here since its last replication: the next release sends it.
    pub dirty: bool,
    /// The last replication this node (as its owner) started: epoch and version.
    pub sent: Option<(u16, u32)>,
    /// That replication is not acknowledged yet.
    pub under_way: bool,
    /// A replica this node keeps for the page's owner: epoch and version.
    pub held: Option<(u16, u32)>,
}

impl Node {
    /// What this node knows of `key`'s replication (`dsmctl pages`).
    pub fn replication(&self, key: PageKey) -> Replication {
        Replication {
            dirty: self.dirty.contains(&key),
            sent: self.versions.get(&key).copied(),
            under_way: self.inflight.contains_key(&key)
                || self.checking.contains(&key)
                || self.backlog.contains(&key),
            held: self.held.get(&key).copied(),
        }
    }

    /// Whether pages are replicated at all: `--replicas` above 0.
    fn replicating(&self) -> bool {
        self.config.replicas > 0
    }

    /// Whether pages were written here since their last replication (a release would send
    /// something).
    pub fn has_unreleased(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Marks an owned page written locally since its last replication.
    pub(super) fn dirtied(&mut self, key: PageKey) {
        if self.replicating() {
            self.dirty.insert(key);
        }
    }

    /// The nodes that get this node's replicas now: the next `--replicas` live members after
    /// it, by node id round the ring.
    fn replica_targets(&self) -> NodeSet {
        let k = usize::from(self.config.replicas);
        (1..64)
            .map(|d| (self.me_index + d) % 64)
            .filter(|&i| self.known.contains(i) && !self.down.contains(i))
            .take(k)
            .fold(NodeSet::EMPTY, NodeSet::with)
    }

    /// A write fault on a page a release made read-only (owned, writable here): the pages after
    /// it that a release left the same way are likely written again too (a program rewriting
    /// its block each step), so local processes may write them without asking from now on —
    /// dirty, so the next release replicates them — and a rewrite costs a fault per run, not
    /// per page. Stops at the first page that is not so.
    pub(super) fn reopen_run(&mut self, key: PageKey, pages: u32) {
        if !self.replicating() {
            return;
        }
        let end = key.page.saturating_add(REOPEN_RUN).min(pages);
        for page in key.page.saturating_add(1)..end {
            let k = PageKey {
                segment: key.segment,
                page,
            };
            let state = self.page(k);
            let reopen = !self.busy.contains_key(&k)
                && state.probable_owner == self.config.me
                && state.access == Access::Write
                && state.local == Access::Read
                && self.cap(k) == Access::Write;
            if !reopen {
                break;
            }
            self.state_mut(k).local = Access::Write;
            self.dirtied(k);
            self.outputs.push_back(Output::Opened { key: k });
        }
    }

    /// A release point: every page written here since its last replication goes to the
    /// replica nodes; `Output::Released { id }` once they have it.
    pub(super) fn on_release(&mut self, id: u64) {
        if self.replica_targets().is_empty() {
            // Nowhere to copy to (alone, or every other node is down): done, and the pages stay
            // dirty for when a node is there.
            self.outputs.push_back(Output::Released { id });
            return;
        }
        let dirty: Vec<PageKey> = std::mem::take(&mut self.dirty).into_iter().collect();
        for &key in &dirty {
            // (One whose earlier replication is still under way goes again: it was written
            // since. One waiting to be sent will be sent as it is then.)
            if !self.queued.contains(&key) {
                self.backlog.insert(key);
            }
            self.track(key);
        }
        // Done once every page outstanding now is: every job numbered up to the last one.
        let upto = self.next_job.wrapping_sub(1);
        if self.by_seq.first().is_none_or(|&(first, _)| first > upto) {
            self.outputs.push_back(Output::Released { id });
        } else {
            self.releases.entry(upto).or_default().push(id);
        }
        self.pump();
    }

    /// Makes `key` a job later releases wait for (numbered, unless it is one already).
    fn track(&mut self, key: PageKey) {
        if !self.outstanding.contains_key(&key) {
            let seq = self.next_job;
            self.next_job += 1;
            self.outstanding.insert(key, seq);
            self.by_seq.insert((seq, key));
        }
    }

    /// Whether `key`'s replication is not done: under way, or waiting to start.
    fn pending(&self, key: PageKey) -> bool {
        self.inflight.contains_key(&key)
            || self.checking.contains(&key)
            || self.queued.contains(&key)
            || self.backlog.contains(&key)
    }

    /// `key` left the replication pipeline: the releases that waited only for it and older
    /// pages are done. (A page outstanding keeps its oldest job number until it leaves: a page
    /// sent again covers the releases its earlier sending was for.)
    fn settled(&mut self, key: PageKey) {
        if self.pending(key) {
            return;
        }
        let Some(seq) = self.outstanding.remove(&key) else {
            return;
        };
        self.by_seq.remove(&(seq, key));
        let frontier = self.by_seq.first().map_or(u64::MAX, |&(first, _)| first);
        while let Some(entry) = self.releases.first_entry() {
            if *entry.key() >= frontier {
                break;
            }
            for id in entry.remove() {
                self.outputs.push_back(Output::Released { id });
            }
        }
    }

    /// Starts waiting replications while fewer than [`MAX_INFLIGHT`] are under way.
    fn pump(&mut self) {
        while self.inflight.len() + self.queued.len() < MAX_INFLIGHT {
            let Some(key) = self.backlog.pop_first() else {
                return;
            };
            self.start_replica(key);
        }
    }

    /// Starts replicating `key` now, or once the page is idle (it waits in `queued`).
    fn start_replica(&mut self, key: PageKey) {
        if !self.is_owner(key) {
            // Ownership moved away (replicated as it went: `handing_over`).
            self.queued.remove(&key);
            self.settled(key);
            return;
        }
        self.queued.insert(key);
        if self.busy.get(&key).is_some_and(|b| b.in_transition()) {
            return;
        }
        self.queued.remove(&key);
        if self.page(key).local == Access::Write {
            // Sent now, as the bytes are (every write before the release is in them), while
            // the writers are stopped (their next write faults and dirties the page again):
            // the two round trips overlap. A writer may still store in between; the driver
            // compares the bytes when the revocation ends (`Input::Rewritten`), and a page
            // that changed is sent again before the releases waiting for it complete.
            self.checking.insert(key);
            self.send_replica(key);
            self.revoke(key, Access::Read, AfterRevoke::Replicate);
            return;
        }
        self.send_replica(key);
    }

    /// Whether `key`'s replica went out from bytes a local writer may still change (its
    /// writers' revocation has not ended): the driver keeps those bytes, sends them, and says
    /// whether the page differs from them when the revocation ends ([`Input::Rewritten`]).
    ///
    /// [`Input::Rewritten`]: crate::Input::Rewritten
    pub fn checking(&self, key: PageKey) -> bool {
        self.checking.contains(&key)
    }

    /// The driver found `key`'s bytes changed since its replica was sent.
    pub(super) fn on_rewritten(&mut self, key: PageKey) {
        if self.checking.contains(&key) {
            self.rewritten.insert(key);
        }
    }

    /// After `AfterRevoke::Replicate`: local processes hold read access at most, so the page's
    /// bytes are final until it is written again; sent again if they changed since its replica.
    pub(super) fn revoked_for_replica(&mut self, key: PageKey) {
        let state = self.state_mut(key);
        state.local = state.local.min(Access::Read);
        let changed = self.rewritten.remove(&key);
        if self.checking.remove(&key) && changed && self.is_owner(key) {
            self.send_replica(key);
        } else {
            self.settled(key);
        }
    }

    fn send_replica(&mut self, key: PageKey) {
        let epoch = self.page(key).epoch;
        let version = match self.versions.get(&key) {
            Some(&(e, v)) if e == epoch => v.wrapping_add(1),
            _ => 1,
        };
        self.versions.insert(key, (epoch, version));
        let targets = self.replica_targets();
        for i in targets.iter() {
            self.stats.replicas_sent += 1;
            self.send(
                node_at(i),
                PeerMsg::Replica {
                    key,
                    epoch,
                    version,
                },
            );
        }
        if targets.is_empty() {
            self.inflight.remove(&key);
            self.settled(key);
        } else {
            self.inflight.insert(
                key,
                Inflight {
                    epoch,
                    version,
                    waiting: targets,
                },
            );
        }
    }

    /// Pages whose replication waited for them to be idle: started now, where they are — the
    /// input's page (only an input about a page ends its transition), or all of them after
    /// any other input.
    pub(super) fn start_queued(&mut self, about: Option<PageKey>) {
        if self.queued.is_empty() {
            return;
        }
        let idle = |n: &Node, k: &PageKey| !n.busy.get(k).is_some_and(|b| b.in_transition());
        let ready: Vec<PageKey> = match about {
            Some(key) => (self.queued.contains(&key) && idle(self, &key))
                .then_some(key)
                .into_iter()
                .collect(),
            None => self
                .queued
                .iter()
                .copied()
                .filter(|k| idle(self, k))
                .collect(),
        };
        for key in ready {
            self.queued.remove(&key);
            self.start_replica(key);
        }
        self.pump();
    }

    /// Whether a replica of `key` at (`epoch`, `version`) would be kept now: the driver stores
    /// its bytes (in the replica store, apart from the page) only then. Kept unless this node
    /// owns the page or holds a newer replica.
    pub fn expects_replica(&self, key: PageKey, epoch: u16, version: u32) -> bool {
        !self.is_owner(key)
            && self
                .held
                .get(&key)
                .is_none_or(|&(e, v)| later(epoch, e) || (e == epoch && version > v))
    }

    pub(super) fn on_replica(&mut self, from: NodeId, key: PageKey, epoch: u16, version: u32) {
        if self.expects_replica(key, epoch, version) {
            self.held.insert(key, (epoch, version));
            self.stats.replicas_held = self.held.len() as u64;
        }
        // Acknowledged whether kept or not: not kept, this node has something newer (the
        // page itself, or a newer replica).
        self.send(
            from,
            PeerMsg::ReplicaAck {
                key,
                epoch,
                version,
            },
        );
    }

    pub(super) fn on_replica_ack(&mut self, from: NodeId, key: PageKey, epoch: u16, version: u32) {
        let Some(i) = index(from) else { return };
        if let Some(f) = self.inflight.get_mut(&key) {
            if f.epoch == epoch && f.version == version {
                f.waiting = f.waiting.without(i);
                if f.waiting.is_empty() {
                    self.inflight.remove(&key);
                    self.settled(key);
                    self.pump();
                }
            }
        }
    }

    /// Ownership of `key` is about to go to another node: if it was written since its last
    /// replication, the replica nodes get it first (the grant could die with this node before
    /// it lands, and a release may count on the page).
    pub(super) fn handing_over(&mut self, key: PageKey) {
        let backlogged = self.backlog.remove(&key);
        if self.dirty.remove(&key) | self.queued.remove(&key) | backlogged {
            self.track(key);
            self.send_replica(key);
        }
    }

    /// Ownership of `key` was handed to another node at `epoch`: the bytes handed over stay
    /// here as a replica of that epoch.
    pub(super) fn handed_over(&mut self, key: PageKey, epoch: u16) {
        if !self.replicating() {
            return;
        }
        self.held.insert(key, (epoch, 0));
        self.outputs.push_back(Output::KeepReplica { key });
        self.stats.replicas_held = self.held.len() as u64;
    }

    /// A replica node died: replications waiting for it wait no more.
    pub(super) fn replica_node_down(&mut self, i: usize) {
        let mut done = Vec::new();
        for (&key, f) in self.inflight.iter_mut() {
            f.waiting = f.waiting.without(i);
            if f.waiting.is_empty() {
                done.push(key);
            }
        }
        for key in done {
            self.inflight.remove(&key);
            self.settled(key);
        }
        self.pump();
    }

    /// The replica this node holds of `key` and would offer a locator.
    pub(super) fn offered_replica(&self, key: PageKey) -> Option<(u16, u32)> {
        (!self.is_owner(key))
            .then(|| self.held.get(&key).copied())
            .flatten()
    }

    /// A removed segment's replication state goes with it.
    pub(super) fn forget_replicas(&mut self, segment: SegmentId) {
        let gone: Vec<PageKey> = self
            .outstanding
            .keys()
            .copied()
            .filter(|k| k.segment == segment)
            .collect();
        self.dirty.retain(|k| k.segment != segment);
        self.queued.retain(|k| k.segment != segment);
        self.checking.retain(|k| k.segment != segment);
        self.rewritten.retain(|k| k.segment != segment);
        self.backlog.retain(|k| k.segment != segment);
        self.versions.retain(|k, _| k.segment != segment);
        self.inflight.retain(|k, _| k.segment != segment);
        self.held.retain(|k, _| k.segment != segment);
        self.stats.replicas_held = self.held.len() as u64;
        for key in gone {
            self.settled(key);
        }
        self.pump();
    }
}
