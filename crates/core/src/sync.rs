//! The lock, condition, barrier and allocation service, as a pure state machine.
//!
//! Every object lives at its home node ([`SyncKey::home`]), which keeps its holder and a FIFO
//! queue of waiters. A process's request goes to its daemon ([`Service::request`]), from there
//! to the home ([`SyncMsg::Op`]); the home answers the waiter's node ([`SyncMsg::Done`]), which
//! answers the process. A waiter costs one queue entry and no traffic while it waits; a hand-off
//! goes straight from the releasing request to the next waiter (FIFO, so no node wins by being
//! near the home).
//!
//! A condition wait releases its mutex and queues at the condition; a signal moves the waiter
//! to the mutex's queue (wait morphing), so it wakes holding the mutex without a second trip.
//!
//! Death: a process that ends ([`Service::process_gone`]) or a node whose daemon is gone
//! ([`Service::node_gone`]) leaves its waits dropped and its robust mutexes passed on with
//! [`SyncResult::OwnerDead`] (non-robust ones held by a dead host: `NotRecoverable`).
//!
//! A dead home's objects move to the next founder that lives ([`SyncKey::home_among`]), which
//! rebuilds them: from the [`Mirror`] the old home kept there (what only it knew: holders on its
//! own node, flags, semaphore values, heap tops) and the [`SyncMsg::Claims`] of every survivor
//! (what its threads hold, its semaphore traffic); the survivors' waits are sent again. Requests
//! for those objects wait until every survivor's claims are in. See docs/protocol.md, "Lock
//! service when a home dies".

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use dsm_proto::fastlock::DELEGATE_SESSION;
use dsm_proto::sync::{
    next_home, Hold, Mirror, MutexKind, Owner, SyncKey, SyncMsg, SyncOp, SyncResult, Tally, Wait,
    Waiter,
};
use dsm_proto::{NodeId, SegmentId};

/// The ticket of a request nobody waits for (an unlock done on behalf of a condition wait).
const SILENT: u64 = 0;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutput {
    /// Answer the local request numbered `ticket`.
    Answer {
        /// The request.
        ticket: u64,
        /// Its outcome.
        result: SyncResult,
    },
    /// Send `msg` to node `to`.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        msg: SyncMsg,
    },
    /// A thread waits for the mutex `key`, which this node's processes hold through their
    /// fast path ([`Service::delegate`]): take it back ([`Service::recalled`]).
    Recall {
        /// The mutex.
        key: SyncKey,
    },
    /// `from` sent a message this node should not have been sent (log it, rate-limited).
    Violation {
        /// The peer.
        from: NodeId,
        /// What was wrong.
        what: String,
    },
}

/// What the driver feeds in ([`Service::handle`]); each variant is one of the service's
/// entry points, documented there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncInput {
    /// [`Service::request`].
    Request {
        /// Names the answer.
        ticket: u64,
        /// The thread asking.
        owner: Owner,
        /// The object.
        key: SyncKey,
        /// What to do.
        op: SyncOp,
        /// Now (ms).
        now_ms: u64,
    },
    /// [`Service::cancel`].
    Cancel {
        /// The request whose thread went away.
        ticket: u64,
    },
    /// [`Service::on_peer`].
    Peer {
        /// The sender.
        from: NodeId,
        /// The message.
        msg: SyncMsg,
        /// Now (ms).
        now_ms: u64,
    },
    /// [`Service::process_gone`].
    ProcessGone {
        /// Its session.
        session: u64,
        /// Now (ms).
        now_ms: u64,
    },
    /// [`Service::node_gone`].
    NodeGone {
        /// The dead node.
        node: NodeId,
        /// The members alive now.
        survivors: Vec<NodeId>,
        /// Now (ms).
        now_ms: u64,
    },
    /// [`Service::home_unreachable`].
    HomeUnreachable {
        /// The node.
        node: NodeId,
        /// Now (ms).
        now_ms: u64,
    },
    /// [`Service::segment_removed`].
    SegmentRemoved {
        /// The segment.
        segment: SegmentId,
    },
    /// [`Service::tick`].
    Tick {
        /// Now (ms).
        now_ms: u64,
    },
    /// [`Service::recalled`].
    Recalled {
        /// The mutex.
        key: SyncKey,
        /// The local thread that held it through the fast path, if one did.
        holder: Option<Owner>,
        /// Now (ms).
        now_ms: u64,
    },
}

/// One object as `dsmctl locks` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectView {
    /// The object.
    pub key: SyncKey,
    /// What it is: `mutex`, `condition`, `barrier`, `rwlock`, `semaphore`, `heap`.
    pub kind: &'static str,
    /// Who holds it.
    pub holders: Vec<Owner>,
    /// Threads queued on it.
    pub waiters: usize,
    /// Anything else worth knowing.
    pub detail: String,
}

/// Counters for `dsmctl stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Requests from local processes.
    pub requests: u64,
    /// Operations applied here as the home.
    pub served: u64,
    /// Messages sent to peers.
    pub messages: u64,
    /// Mutexes delegated to this node's processes (their fast path).
    pub delegations: u64,
    /// Delegated mutexes taken back.
    pub recalls: u64,
}

/// A request of a local process under way.
#[derive(Debug, Clone, Copy)]
struct Pending {
    key: SyncKey,
    op: SyncOp,
    owner: Owner,
    /// The process or thread went away: release whatever the answer grants.
    gone: bool,
}

/// One node's part of the service: the objects it is home to, and its processes' requests.
#[derive(Debug, Clone)]
pub struct Service {
    me: NodeId,
    members: Vec<NodeId>,
    objects: BTreeMap<SyncKey, Object>,
    deadlines: BTreeSet<(u64, SyncKey)>,
    pending: BTreeMap<u64, Pending>,
    out: VecDeque<SyncOutput>,
    stats: SyncStats,
    /// Founders whose death the cluster agreed: never homes again (a restarted one neither).
    deposed: BTreeSet<NodeId>,
    /// What local threads hold, for a new home's rebuild.
    held: BTreeMap<(SyncKey, Owner), Hold>,
    /// Local threads' traffic on each semaphore, for a new home's rebuild.
    tally: BTreeMap<SyncKey, Tally>,
    /// The end of the highest allocation local threads got from each heap, for the same.
    heap_ends: BTreeMap<SyncKey, u64>,
    /// Mirrors of objects homed elsewhere that would come here, with their home.
    mirrors: BTreeMap<SyncKey, (NodeId, Mirror)>,
    /// What was last mirrored of each object homed here.
    mirrored: BTreeMap<SyncKey, Mirror>,
    /// Objects homed here that changed since their mirror was last looked at.
    touched: BTreeSet<SyncKey>,
    /// Dead homes whose objects are being rebuilt here: the survivors whose claims are awaited.
    rebuilding: BTreeMap<NodeId, Rebuild>,
    /// Requests for objects being rebuilt, applied once the rebuild is done.
    parked: VecDeque<(SyncKey, SyncOp, Waiter)>,
    /// Messages about objects of a home whose death this node has not applied yet.
    early: VecDeque<(NodeId, SyncMsg)>,
}

/// A dead home's objects being rebuilt here.
#[derive(Debug, Clone, Default)]
struct Rebuild {
    /// Survivors whose claims are not in yet.
    awaiting: BTreeSet<NodeId>,
    /// The objects built from the dead home's mirrors (the only ones its holders are in).
    moved: Vec<SyncKey>,
    /// When it began.
    since_ms: u64,
    /// Each semaphore's per-node traffic as the dead home mirrored it.
    tallies: BTreeMap<SyncKey, BTreeMap<NodeId, Tally>>,
}

/// Messages kept for a death not yet applied here; more are refused.
const EARLY_KEPT: usize = 65_536;

/// A rebuild waits this long for a survivor's claims (one that never applied the death: it
/// caught up from a snapshot taken after it), then goes on without them.
const CLAIMS_WAIT_MS: u64 = 30_000;

impl Service {
    /// The service of node `me` in a cluster of `members` (sorted, `me` included).
    pub fn new(me: NodeId, members: Vec<NodeId>) -> Service {
        Service {
            me,
            members,
            objects: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            pending: BTreeMap::new(),
            out: VecDeque::new(),
            stats: SyncStats::default(),
            deposed: BTreeSet::new(),
            held: BTreeMap::new(),
            tally: BTreeMap::new(),
            heap_ends: BTreeMap::new(),
            mirrors: BTreeMap::new(),
            mirrored: BTreeMap::new(),
            touched: BTreeSet::new(),
            rebuilding: BTreeMap::new(),
            parked: VecDeque::new(),
            early: VecDeque::new(),
        }
    }

    /// Feeds one input (the same shape as `Node`, `Members`, `Link` and `Revocations`);
    /// drain [`Service::poll_output`] afterwards.
    pub fn handle(&mut self, input: SyncInput) {
        match input {
            SyncInput::Request {
                ticket,
                owner,
                key,
                op,
                now_ms,
            } => self.request(ticket, owner, key, op, now_ms),
            SyncInput::Cancel { ticket } => self.cancel(ticket),
            SyncInput::Peer { from, msg, now_ms } => {
                if let Err(what) = self.on_peer(from, msg, now_ms) {
                    self.out.push_back(SyncOutput::Violation { from, what });
                }
            }
            SyncInput::ProcessGone { session, now_ms } => self.process_gone(session, now_ms),
            SyncInput::NodeGone {
                node,
                survivors,
                now_ms,
            } => self.node_gone(node, &survivors, now_ms),
            SyncInput::HomeUnreachable { node, now_ms } => self.home_unreachable(node, now_ms),
            SyncInput::SegmentRemoved { segment } => self.segment_removed(segment),
            SyncInput::Tick { now_ms } => self.tick(now_ms),
            SyncInput::Recalled {
                key,
                holder,
                now_ms,
            } => self.recalled(key, holder, now_ms),
        }
    }

    /// Whether `key` is homed on this node now.
    pub fn is_home(&self, key: SyncKey) -> bool {
        self.home_of(key) == self.me
    }

    /// The holder that stands for this node's processes while a mutex homed here is delegated
    /// to them (`dsm_proto::fastlock`: they lock and unlock it on a shared word, unseen here).
    pub fn delegate_owner(&self) -> Owner {
        Owner {
            node: self.me,
            session: DELEGATE_SESSION,
            tid: 0,
        }
    }

    /// Delegates the mutex `key` (not robust) to this node's processes if it is homed here and
    /// idle (nobody holds it or waits, it is consistent): it is then held by [`Service::delegate_owner`]
    /// until [`Service::recalled`]. A thread that asks for it meanwhile makes the service ask
    /// for it back ([`SyncOutput::Recall`]). Mirrored as held here: if this node dies, the heir
    /// takes it as held by a dead host, whether or not one of its threads held it then (the
    /// heir cannot know).
    pub fn delegate(&mut self, key: SyncKey, kind: MutexKind) -> bool {
        if !matches!(key, SyncKey::Object { .. })
            || kind.robust
            || self.home_of(key) != self.me
            || self.rebuilding_key(key)
        {
            return false;
        }
        let owner = self.delegate_owner();
        match self.objects.get_mut(&key) {
            None => {
                self.objects.insert(
                    key,
                    Object::Mutex(Mutex {
                        holder: Some(Holder { owner, count: 1 }),
                        kind,
                        ..Mutex::default()
                    }),
                );
            }
            Some(Object::Mutex(m))
                if m.holder.is_none()
                    && m.queue.is_empty()
                    && !m.inconsistent
                    && !m.unrecoverable =>
            {
                m.holder = Some(Holder { owner, count: 1 });
                m.kind = kind;
            }
            Some(_) => return false,
        }
        self.stats.delegations += 1;
        self.touched.insert(key);
        true
    }

    /// The driver took the delegated mutex `key` back from this node's processes: `holder`
    /// held it (it now holds it here, as if granted), or nobody did (it is free, or handed to
    /// its first waiter).
    pub fn recalled(&mut self, key: SyncKey, holder: Option<Owner>, now_ms: u64) {
        let delegate = self.delegate_owner();
        let Some(Object::Mutex(m)) = self.objects.get_mut(&key) else {
            return;
        };
        if m.holder.map(|h| h.owner) != Some(delegate) {
            return;
        }
        self.stats.recalls += 1;
        match holder {
            Some(owner) => {
                m.holder = Some(Holder { owner, count: 1 });
                let kind = m.kind;
                self.take_mutex(key, owner, kind);
                self.touched.insert(key);
            }
            None => {
                let mut fx = Effects::default();
                let kind = m.kind;
                let _ = m.unlock(delegate, kind, &mut fx);
                self.run(fx, now_ms);
                self.collect(key);
            }
        }
    }

    /// A delegated mutex someone waits for is asked back.
    fn recall_if_wanted(&mut self, key: SyncKey) {
        let delegate = self.delegate_owner();
        if let Some(Object::Mutex(m)) = self.objects.get(&key) {
            if !m.queue.is_empty() && m.holder.map(|h| h.owner) == Some(delegate) {
                self.out.push_back(SyncOutput::Recall { key });
            }
        }
    }

    /// A local thread asks for `op` on `key`; `ticket` (not 0, unique while under way) names
    /// the answer, if the op is answered at all.
    pub fn request(&mut self, ticket: u64, owner: Owner, key: SyncKey, op: SyncOp, now_ms: u64) {
        self.stats.requests += 1;
        self.note_sent(owner, key, op);
        let ticket = if op.answered() {
            self.pending.insert(
                ticket,
                Pending {
                    key,
                    op,
                    owner,
                    gone: false,
                },
            );
            ticket
        } else {
            SILENT
        };
        self.route(key, op, Waiter { owner, ticket }, now_ms);
    }

    /// The thread waiting on `ticket` went away (its connection closed).
    pub fn cancel(&mut self, ticket: u64) {
        if let Some(p) = self.pending.get_mut(&ticket) {
            p.gone = true;
        }
    }

    /// The cluster's founders changed (this node joined a running cluster, and learned them
    /// from its log): objects are homed among them from now on.
    pub fn set_homes(&mut self, mut members: Vec<NodeId>) {
        members.sort();
        members.dedup();
        if !members.is_empty() {
            self.members = members;
        }
    }

    /// The founders whose death the cluster agreed, as a node that joined learns them from its
    /// log (a node that lived through a death learns it from [`Service::node_gone`]).
    pub fn set_deposed(&mut self, deposed: BTreeSet<NodeId>) {
        if deposed != self.deposed {
            self.deposed = deposed;
            self.remirror();
        }
    }

    /// The founders whose death was agreed.
    pub fn deposed(&self) -> &BTreeSet<NodeId> {
        &self.deposed
    }

    /// Where `key` lives now.
    fn home_of(&self, key: SyncKey) -> NodeId {
        key.home_among(&self.members, &self.deposed)
    }

    /// A message from a peer. `Err` names a message this node should not have been sent.
    pub fn on_peer(&mut self, from: NodeId, msg: SyncMsg, now_ms: u64) -> Result<(), String> {
        match msg {
            SyncMsg::Op { key, op, waiter } => {
                if self.home_of(key) != self.me {
                    // The sender may have applied a death this node has not yet.
                    return self.keep_early(from, SyncMsg::Op { key, op, waiter });
                }
                self.apply(key, op, waiter, now_ms);
            }
            SyncMsg::Done { ticket, result } => self.finish(ticket, result, now_ms),
            SyncMsg::ProcessGone { session } => {
                self.drop_owners(|o| o.node == from && o.session == session, false, now_ms);
                self.held
                    .retain(|(_, o), _| !(o.node == from && o.session == session));
            }
            SyncMsg::Mirror { key, state }
                if next_home(&self.members, &self.deposed, from) != Some(self.me) =>
            {
                // The sender may have applied a death that made this node its heir.
                return self.keep_early(from, SyncMsg::Mirror { key, state });
            }
            SyncMsg::Mirror { key, state } => match state {
                Some(m) => {
                    self.mirrors.insert(key, (from, m));
                }
                None => {
                    self.mirrors.remove(&key);
                }
            },
            SyncMsg::Claims {
                dead,
                holds,
                tallies,
                heaps,
            } => {
                if !self.deposed.contains(&dead) {
                    let msg = SyncMsg::Claims {
                        dead,
                        holds,
                        tallies,
                        heaps,
                    };
                    return self.keep_early(from, msg);
                }
                self.claims(from, dead, holds, tallies, heaps);
                self.finish_rebuilds(now_ms);
            }
        }
        Ok(())
    }

    fn keep_early(&mut self, from: NodeId, msg: SyncMsg) -> Result<(), String> {
        if self.early.len() >= EARLY_KEPT {
            return Err(format!(
                "{msg:?} is not for this node (and {EARLY_KEPT} such are kept)"
            ));
        }
        self.early.push_back((from, msg));
        Ok(())
    }

    /// A local process ended: everything it held or waited for is released, here and at every
    /// other home.
    pub fn process_gone(&mut self, session: u64, now_ms: u64) {
        for p in self.pending.values_mut() {
            if p.owner.session == session {
                p.gone = true;
            }
        }
        for to in self.members.clone() {
            if to != self.me {
                self.send(to, SyncMsg::ProcessGone { session });
            }
        }
        let me = self.me;
        self.drop_owners(|o| o.node == me && o.session == session, false, now_ms);
        self.held
            .retain(|(_, o), _| !(o.node == me && o.session == session));
    }

    /// The cluster agreed node `node` is dead (its daemon died or restarted); `survivors` are
    /// the members alive now. Its processes' holds and waits are dropped here. If it was a home,
    /// its objects move to the next founder that lives: this node tells that one what its
    /// threads hold and sends its waits there again; if that one is this node, it rebuilds them.
    pub fn node_gone(&mut self, node: NodeId, survivors: &[NodeId], now_ms: u64) {
        if node == self.me {
            // This node's earlier incarnation, in the log it caught up with: it is no home.
            self.deposed.insert(node);
            self.remirror();
            return;
        }
        self.drop_owners(|o| o.node == node, true, now_ms);
        for rebuild in self.rebuilding.values_mut() {
            rebuild.awaiting.remove(&node);
        }
        // Semaphore traffic of the dead node is final (in the values already): it is nobody's
        // to correct any more, and a restarted node with its id counts afresh.
        for (key, obj) in &mut self.objects {
            if let Object::Sem(sem) = obj {
                if sem.tally.remove(&node).is_some() {
                    self.touched.insert(*key);
                }
            }
        }
        for (_, m) in self.mirrors.values_mut() {
            if let Mirror::Sem { tally, .. } = m {
                tally.retain(|(n, _)| *n != node);
            }
        }
        if self.members.contains(&node) && !self.deposed.contains(&node) {
            self.move_home(node, survivors, now_ms);
        } else {
            self.home_unreachable(node, now_ms);
        }
        self.finish_rebuilds(now_ms);
    }

    /// `node` has been unreachable for the fault timeout (not yet agreed dead): waits on
    /// objects it is home to fail ([`SyncResult::HomeLost`]) rather than hang. What its own
    /// processes hold here is kept until its death is agreed ([`Service::node_gone`]).
    pub fn home_unreachable(&mut self, node: NodeId, now_ms: u64) {
        let lost: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                self.home_of(p.key) == node
                    || matches!(p.op, SyncOp::CondWait { mutex, .. } if self.home_of(mutex) == node)
            })
            .map(|(&t, _)| t)
            .collect();
        for ticket in lost {
            self.finish(ticket, SyncResult::HomeLost, now_ms);
        }
    }

    /// The segment is gone cluster-wide (unlinked, and mapped nowhere): so are its objects, and
    /// what they kept (a semaphore's count, a heap's top).
    pub fn segment_removed(&mut self, segment: SegmentId) {
        let other = |key: &SyncKey| key.segment() != Some(segment);
        self.objects.retain(|key, _| other(key));
        self.mirrored.retain(|key, _| other(key));
        self.mirrors.retain(|key, _| other(key));
        self.held.retain(|(key, _), _| other(key));
        self.tally.retain(|key, _| other(key));
        self.heap_ends.retain(|key, _| other(key));
    }

    /// Time passed: timed waits that are due time out; rebuilds that waited too long for a
    /// survivor's claims go on without them.
    pub fn tick(&mut self, now_ms: u64) {
        for (dead, rebuild) in &mut self.rebuilding {
            if !rebuild.awaiting.is_empty() && now_ms >= rebuild.since_ms + CLAIMS_WAIT_MS {
                log::warn!(
                    "lock service: no claims on the objects of {dead} from {:?} in {} s: \
                     served without them (what their threads held there is not known)",
                    rebuild.awaiting,
                    CLAIMS_WAIT_MS / 1000
                );
                rebuild.awaiting.clear();
            }
        }
        self.finish_rebuilds(now_ms);
        while let Some(&(due, key)) = self.deadlines.first() {
            if due > now_ms {
                break;
            }
            self.deadlines.pop_first();
            let mut effects = Effects::default();
            if let Some(obj) = self.objects.get_mut(&key) {
                obj.expire(now_ms, &mut effects);
            }
            self.run(effects, now_ms);
            self.collect(key);
        }
    }

    /// When [`Service::tick`] next has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        let rebuild = self
            .rebuilding
            .values()
            .map(|r| r.since_ms + CLAIMS_WAIT_MS)
            .min();
        let wait = self.deadlines.first().map(|&(due, _)| due);
        wait.into_iter().chain(rebuild).min()
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<SyncOutput> {
        if self.out.is_empty() {
            self.flush_mirrors();
        }
        self.out.pop_front()
    }

    /// Counters.
    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    /// Objects this node is home to (for status).
    pub fn objects(&self) -> usize {
        self.objects.len()
    }

    /// What each object this node is home to holds, for `dsmctl locks`.
    pub fn views(&self) -> Vec<ObjectView> {
        self.objects
            .iter()
            .map(|(&key, obj)| obj.view(key))
            .collect()
    }

    fn send(&mut self, to: NodeId, msg: SyncMsg) {
        self.stats.messages += 1;
        self.out.push_back(SyncOutput::Send { to, msg });
    }

    fn route(&mut self, key: SyncKey, op: SyncOp, waiter: Waiter, now_ms: u64) {
        let home = self.home_of(key);
        if home == self.me {
            self.apply(key, op, waiter, now_ms);
        } else {
            self.send(home, SyncMsg::Op { key, op, waiter });
        }
    }

    /// The home's work: `op` on `key` for `waiter`.
    fn apply(&mut self, key: SyncKey, op: SyncOp, waiter: Waiter, now_ms: u64) {
        if self.rebuilding_key(key) {
            self.parked.push_back((key, op, waiter));
            return;
        }
        self.stats.served += 1;
        let mut fx = Effects::default();
        match op {
            SyncOp::Reset => {
                if self.objects.get(&key).is_some_and(Object::resettable) {
                    self.objects.remove(&key);
                    self.touched.insert(key);
                }
                return;
            }
            SyncOp::Abandon => {
                if let Some(obj) = self.objects.get_mut(&key) {
                    obj.abandon(waiter.owner, &mut fx);
                }
                self.run(fx, now_ms);
                self.collect(key);
                return;
            }
            SyncOp::Withdraw => {
                if let Some(Object::Sem(sem)) = self.objects.get_mut(&key) {
                    for (w, _) in extract(&mut sem.waiters, |(w, _)| w.owner == waiter.owner) {
                        fx.answer(w, SyncResult::Interrupted);
                    }
                }
                self.run(fx, now_ms);
                return;
            }
            _ => {}
        }
        let Some(obj) = self.object(key, op) else {
            fx.answer(waiter, SyncResult::Invalid);
            self.run(fx, now_ms);
            return;
        };
        let due = |wait: Wait| match wait {
            Wait::Ms(ms) => Some(now_ms + u64::from(ms)),
            _ => None,
        };
        let mut deadline = None;
        match (obj, op) {
            (
                Object::Mutex(m),
                SyncOp::Lock {
                    kind,
                    wait,
                    after_timeout,
                },
            ) => {
                deadline = due(wait);
                m.lock(waiter, kind, wait, deadline, after_timeout, &mut fx);
            }
            (Object::Mutex(m), SyncOp::Unlock { kind }) => {
                let r = m.unlock(waiter.owner, kind, &mut fx);
                fx.answer(waiter, r);
            }
            (Object::Mutex(m), SyncOp::Consistent) => {
                let r = m.consistent(waiter.owner);
                fx.answer(waiter, r);
            }
            (Object::Cond(c), SyncOp::CondWait { mutex, kind, wait }) => {
                if wait == Wait::Try {
                    fx.answer(waiter, SyncResult::Invalid);
                } else {
                    deadline = due(wait);
                    c.waiters.push_back(CondWaiter {
                        waiter,
                        mutex,
                        kind,
                        deadline,
                    });
                    // Queued before the mutex is released: a signal sent by whoever takes the
                    // mutex next reaches this waiter.
                    let unlock = SyncOp::Unlock { kind };
                    let on_behalf = Waiter {
                        owner: waiter.owner,
                        ticket: SILENT,
                    };
                    fx.route(mutex, unlock, on_behalf);
                }
            }
            (Object::Cond(c), SyncOp::Signal) => {
                if let Some(w) = c.waiters.pop_front() {
                    w.relock(false, &mut fx);
                }
            }
            (Object::Cond(c), SyncOp::Broadcast) => {
                for w in c.waiters.drain(..) {
                    w.relock(false, &mut fx);
                }
            }
            (Object::Barrier(b), SyncOp::Barrier { count }) => b.arrive(waiter, count, &mut fx),
            (Object::Rw(rw), SyncOp::ReadLock { wait }) => {
                deadline = due(wait);
                rw.lock(waiter, false, wait, deadline, &mut fx);
            }
            (Object::Rw(rw), SyncOp::WriteLock { wait }) => {
                deadline = due(wait);
                rw.lock(waiter, true, wait, deadline, &mut fx);
            }
            (Object::Rw(rw), SyncOp::RwUnlock) => {
                let r = rw.unlock(waiter.owner, &mut fx);
                fx.answer(waiter, r);
            }
            (Object::Sem(sem), SyncOp::SemWait { wait, .. }) => {
                deadline = due(wait);
                sem.wait(waiter, wait, deadline, &mut fx);
            }
            (Object::Sem(sem), SyncOp::SemPost { .. }) => sem.post(waiter.owner.node, &mut fx),
            (Object::Sem(sem), SyncOp::SemValue { .. }) => {
                fx.answer(waiter, SyncResult::Value(sem.value))
            }
            (Object::Heap(next), SyncOp::Alloc { size, align, limit }) => {
                let r = alloc(next, size, align, limit);
                fx.answer(waiter, r);
            }
            _ => fx.answer(waiter, SyncResult::Invalid),
        }
        if let Some(due) = deadline {
            self.deadlines.insert((due, key));
        }
        self.run(fx, now_ms);
        self.collect(key);
        self.recall_if_wanted(key);
    }

    /// The object at `key`, made for `op` if there is none (or only an idle one of another
    /// kind); `None` if a busy object of another kind is there.
    fn object(&mut self, key: SyncKey, op: SyncOp) -> Option<&mut Object> {
        let fresh = Object::for_op(key, op)?;
        let kind = std::mem::discriminant(&fresh);
        match self.objects.get(&key) {
            Some(o) if std::mem::discriminant(o) == kind => {}
            Some(o) if !o.idle() => return None,
            _ => {
                self.objects.insert(key, fresh);
            }
        }
        self.objects.get_mut(&key)
    }

    fn collect(&mut self, key: SyncKey) {
        if self.objects.get(&key).is_some_and(Object::idle) {
            self.objects.remove(&key);
        }
        self.touched.insert(key);
    }

    /// Carries out what an object's step decided.
    fn run(&mut self, fx: Effects, now_ms: u64) {
        for (waiter, result) in fx.answers {
            if waiter.ticket == SILENT {
                continue;
            }
            if waiter.owner.node == self.me {
                self.finish(waiter.ticket, result, now_ms);
            } else {
                self.send(
                    waiter.owner.node,
                    SyncMsg::Done {
                        ticket: waiter.ticket,
                        result,
                    },
                );
            }
        }
        for (key, op, waiter) in fx.routes {
            self.route(key, op, waiter, now_ms);
        }
    }

    /// The answer to a local request arrived.
    fn finish(&mut self, ticket: u64, result: SyncResult, now_ms: u64) {
        let Some(p) = self.pending.remove(&ticket) else {
            return;
        };
        self.note_answer(&p, result);
        if !p.gone {
            self.out.push_back(SyncOutput::Answer { ticket, result });
            return;
        }
        // Nobody will use what was granted: give it back as a holder that left.
        let holds = matches!(
            result,
            SyncResult::Ok | SyncResult::OwnerDead | SyncResult::TimedOut
        );
        let held = match p.op {
            SyncOp::CondWait { mutex, .. } if holds => Some(mutex),
            SyncOp::Lock { .. } if holds => Some(p.key),
            SyncOp::ReadLock { .. } | SyncOp::WriteLock { .. } | SyncOp::SemWait { .. }
                if result == SyncResult::Ok =>
            {
                Some(p.key)
            }
            _ => None,
        };
        if let Some(key) = held {
            let on_behalf = Waiter {
                owner: p.owner,
                ticket: SILENT,
            };
            self.note_sent(p.owner, key, SyncOp::Abandon);
            self.route(key, SyncOp::Abandon, on_behalf, now_ms);
        }
    }

    /// Drops the holds and waits of every owner `gone` says is gone, at the objects homed here.
    /// Owners `gone` hold and wait for nothing any more; `host_died`: they died with their
    /// host, not as a process (see [`Object::drop_owners`]).
    fn drop_owners(&mut self, gone: impl Fn(&Owner) -> bool, host_died: bool, now_ms: u64) {
        let keys: Vec<SyncKey> = self.objects.keys().copied().collect();
        self.drop_owners_of(&keys, gone, host_died, now_ms);
    }

    /// [`Service::drop_owners`], at the objects `keys` only.
    fn drop_owners_of(
        &mut self,
        keys: &[SyncKey],
        gone: impl Fn(&Owner) -> bool,
        host_died: bool,
        now_ms: u64,
    ) {
        for &key in keys {
            let mut fx = Effects::default();
            if let Some(obj) = self.objects.get_mut(&key) {
                obj.drop_owners(&gone, host_died, &mut fx);
            }
            self.run(fx, now_ms);
            self.collect(key);
        }
    }
}

/// Rebuilding a dead home's objects, and what makes it possible (see the module's doc).
impl Service {
    /// What a local thread's request changes of what it holds, as the request leaves.
    fn note_sent(&mut self, owner: Owner, key: SyncKey, op: SyncOp) {
        match op {
            SyncOp::Unlock { .. } | SyncOp::RwUnlock => self.release_hold(key, owner),
            SyncOp::CondWait { mutex, .. } => self.release_hold(mutex, owner),
            SyncOp::SemPost { initial } | SyncOp::SemWait { initial, .. } => {
                let t = self.tally.entry(key).or_insert(Tally {
                    initial,
                    ..Tally::default()
                });
                if matches!(op, SyncOp::SemPost { .. }) {
                    t.posts += 1;
                }
            }
            SyncOp::Abandon => {
                if self.held.contains_key(&(key, owner)) {
                    self.release_hold(key, owner);
                } else if let Some(t) = self.tally.get_mut(&key) {
                    // A semaphore's grant nobody saw goes back: a post.
                    t.posts += 1;
                }
            }
            _ => {}
        }
    }

    /// What an answer gave a local thread.
    fn note_answer(&mut self, p: &Pending, result: SyncResult) {
        let holds = matches!(result, SyncResult::Ok | SyncResult::OwnerDead);
        match p.op {
            SyncOp::Lock { kind, .. } if holds => self.take_mutex(p.key, p.owner, kind),
            SyncOp::CondWait { mutex, kind, .. } if holds || result == SyncResult::TimedOut => {
                self.take_mutex(mutex, p.owner, kind)
            }
            SyncOp::ReadLock { .. } if result == SyncResult::Ok => {
                let hold = match self.held.get(&(p.key, p.owner)) {
                    Some(Hold::Read(n)) => Hold::Read(n + 1),
                    _ => Hold::Read(1),
                };
                self.held.insert((p.key, p.owner), hold);
            }
            SyncOp::WriteLock { .. } if result == SyncResult::Ok => {
                self.held.insert((p.key, p.owner), Hold::Write);
            }
            SyncOp::SemWait { initial, .. } if result == SyncResult::Ok => {
                let t = self.tally.entry(p.key).or_insert(Tally {
                    initial,
                    ..Tally::default()
                });
                t.grants += 1;
            }
            SyncOp::Alloc { size, .. } => {
                if let SyncResult::Allocated(start) = result {
                    let end = start.saturating_add(size.max(1));
                    let e = self.heap_ends.entry(p.key).or_default();
                    *e = (*e).max(end);
                }
            }
            _ => {}
        }
    }

    fn take_mutex(&mut self, key: SyncKey, owner: Owner, kind: MutexKind) {
        let count = match self.held.get(&(key, owner)) {
            Some(Hold::Mutex { count, .. }) => count + 1,
            _ => 1,
        };
        self.held.insert((key, owner), Hold::Mutex { kind, count });
    }

    fn release_hold(&mut self, key: SyncKey, owner: Owner) {
        let Some(hold) = self.held.get_mut(&(key, owner)) else {
            return;
        };
        match hold {
            Hold::Mutex { count, .. } | Hold::Read(count) if *count > 1 => *count -= 1,
            _ => {
                self.held.remove(&(key, owner));
            }
        }
    }

    /// Founder `dead` died: its objects go to the next founder that lives (the heir). This node
    /// tells the heir what its threads hold of them and sends its waits on them again; if this
    /// node is the heir, it starts their rebuild from the dead home's mirrors.
    fn move_home(&mut self, dead: NodeId, survivors: &[NodeId], now_ms: u64) {
        let before = self.deposed.clone();
        self.deposed.insert(dead);
        self.remirror();
        let members = self.members.clone();
        let was_dead = |key: SyncKey| key.home_among(&members, &before) == dead;
        let Some(heir) = next_home(&self.members, &self.deposed, dead) else {
            // No founder lives to take them over: waits on them fail.
            self.home_unreachable(dead, now_ms);
            return;
        };
        if heir == self.me {
            let mut rebuild = Rebuild {
                awaiting: survivors
                    .iter()
                    .copied()
                    .filter(|&n| n != self.me && n != dead)
                    .collect(),
                tallies: BTreeMap::new(),
                moved: Vec::new(),
                since_ms: now_ms,
            };
            let moved: Vec<SyncKey> = self
                .mirrors
                .iter()
                .filter(|(_, (home, _))| *home == dead)
                .map(|(&k, _)| k)
                .collect();
            for key in moved {
                let Some((_, mirror)) = self.mirrors.remove(&key) else {
                    continue;
                };
                if let Mirror::Sem { tally, .. } = &mirror {
                    rebuild.tallies.insert(key, tally.iter().copied().collect());
                }
                self.objects.insert(key, Object::from_mirror(mirror));
                rebuild.moved.push(key);
            }
            self.rebuilding.insert(dead, rebuild);
        }
        self.mirrors.retain(|_, (home, _)| *home != dead);
        let holds: Vec<(SyncKey, Owner, Hold)> = self
            .held
            .iter()
            .filter(|((key, _), _)| was_dead(*key))
            .map(|(&(key, owner), &hold)| (key, owner, hold))
            .collect();
        let tallies = entries_where(&self.tally, &was_dead);
        let heaps = entries_where(&self.heap_ends, &was_dead);
        if heir == self.me {
            self.claims(self.me, dead, holds, tallies, heaps);
        } else {
            self.send(
                heir,
                SyncMsg::Claims {
                    dead,
                    holds,
                    tallies,
                    heaps,
                },
            );
        }
        // Waits that were at the dead home go to the heir (after the claims, on the same link).
        let again: Vec<(u64, Pending)> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                was_dead(p.key) || matches!(p.op, SyncOp::CondWait { mutex, .. } if was_dead(mutex))
            })
            .map(|(&t, &p)| (t, p))
            .collect();
        for (ticket, p) in again {
            let waiter = Waiter {
                owner: p.owner,
                ticket,
            };
            match p.op {
                SyncOp::CondWait { mutex, kind, .. } if was_dead(mutex) && was_dead(p.key) => {
                    // Woken (spuriously, as POSIX allows): it takes its mutex back.
                    let lock = SyncOp::Lock {
                        kind,
                        wait: Wait::Block,
                        after_timeout: false,
                    };
                    self.route(mutex, lock, waiter, now_ms);
                }
                // Its condition and mutex live apart and one of them died: where its wake-up
                // was cannot be known.
                SyncOp::CondWait { .. } => self.finish(ticket, SyncResult::HomeLost, now_ms),
                // The hold it gave back was not claimed: the rebuilt mutex is not held by it.
                SyncOp::Unlock { .. } => self.finish(ticket, SyncResult::Ok, now_ms),
                op => self.route(p.key, op, waiter, now_ms),
            }
        }
        for (from, msg) in std::mem::take(&mut self.early) {
            if let Err(e) = self.on_peer(from, msg, now_ms) {
                log::warn!("{from}: {e}");
            }
        }
    }

    /// A survivor's claims on the objects of `dead` that this node rebuilds: what its threads
    /// hold override the dead home's mirror; its semaphore traffic since the mirror corrects
    /// their values.
    fn claims(
        &mut self,
        from: NodeId,
        dead: NodeId,
        holds: Vec<(SyncKey, Owner, Hold)>,
        tallies: Vec<(SyncKey, Tally)>,
        heaps: Vec<(SyncKey, u64)>,
    ) {
        let Some(rebuild) = self.rebuilding.get_mut(&dead) else {
            // Not the heir, or the rebuild is over (the claims of a node that joined since).
            return;
        };
        rebuild.awaiting.remove(&from);
        // What the dead home had applied of the sender's traffic, per semaphore.
        let mirrored: BTreeMap<SyncKey, Tally> = rebuild
            .tallies
            .iter()
            .filter_map(|(&key, by_node)| Some((key, *by_node.get(&from)?)))
            .collect();
        let mut tallies = tallies;
        // A semaphore the home counted traffic of the sender on that the sender does not
        // name (it forgot it with its segment): nothing of it is the sender's any more.
        for (&key, t) in &mirrored {
            if !tallies.iter().any(|&(k, _)| k == key) {
                tallies.push((
                    key,
                    Tally {
                        posts: 0,
                        grants: 0,
                        ..*t
                    },
                ));
            }
        }
        for (key, owner, hold) in holds {
            let fresh = match hold {
                Hold::Mutex { .. } => Object::Mutex(Mutex::default()),
                Hold::Read(_) | Hold::Write => Object::Rw(RwLock::default()),
            };
            let obj = self.objects.entry(key).or_insert(fresh);
            match (obj, hold) {
                (Object::Mutex(m), Hold::Mutex { kind, count }) => {
                    m.holder = Some(Holder { owner, count });
                    m.kind = kind;
                }
                (Object::Rw(rw), Hold::Read(n)) => {
                    rw.readers.insert(owner, n);
                }
                (Object::Rw(rw), Hold::Write) => rw.writer = Some(owner),
                _ => log::warn!("{from} claims {hold:?} of {key:?}, which is something else"),
            }
        }
        for (key, t) in tallies {
            let obj = self.objects.entry(key).or_insert(Object::Sem(Semaphore {
                value: t.initial,
                initial: t.initial,
                waiters: VecDeque::new(),
                tally: BTreeMap::new(),
            }));
            let Object::Sem(sem) = obj else {
                continue;
            };
            // Posts the home had not applied, and grants it made that the node never saw
            // (their waits come again), since the mirror.
            let seen = mirrored.get(&key).copied().unwrap_or_default();
            let delta = (i128::from(t.posts) - i128::from(seen.posts))
                - (i128::from(t.grants) - i128::from(seen.grants));
            sem.value = (i128::from(sem.value) + delta).clamp(0, i128::from(u32::MAX)) as u32;
            sem.tally.insert(from, t);
        }
        // A heap's top is past every allocation a survivor was given (the mirror may be older).
        for (key, end) in heaps {
            if let Object::Heap(next) = self.objects.entry(key).or_insert(Object::Heap(0)) {
                *next = (*next).max(end);
            }
        }
    }

    /// Rebuilds every survivor has answered are done: holders that died with the old home are
    /// dropped (as a dead host's), and the requests that waited are served.
    fn finish_rebuilds(&mut self, now_ms: u64) {
        let done: Vec<NodeId> = self
            .rebuilding
            .iter()
            .filter(|(_, r)| r.awaiting.is_empty())
            .map(|(&d, _)| d)
            .collect();
        if done.is_empty() {
            return;
        }
        for dead in done {
            let Some(rebuild) = self.rebuilding.remove(&dead) else {
                continue;
            };
            log::info!("lock service: the objects homed at {dead} are served here now");
            // Only the mirrors name the dead node's holders (a new incarnation of it may hold
            // other objects by now).
            self.drop_owners_of(&rebuild.moved, |o| o.node == dead, true, now_ms);
        }
        self.touched.extend(self.objects.keys().copied());
        for (key, op, waiter) in std::mem::take(&mut self.parked) {
            self.apply(key, op, waiter, now_ms);
        }
    }

    /// Whether `key` is one of the objects being rebuilt here (its requests wait).
    fn rebuilding_key(&self, key: SyncKey) -> bool {
        self.rebuilding.keys().any(|&dead| {
            let mut before = self.deposed.clone();
            before.remove(&dead);
            key.home_among(&self.members, &before) == dead
        })
    }

    /// Who would be this node's heir changed: every mirror is sent again, and mirrors of homes
    /// whose heir this node no longer is are dropped.
    fn remirror(&mut self) {
        self.mirrored.clear();
        self.touched.extend(self.objects.keys().copied());
        let (members, deposed, me) = (&self.members, &self.deposed, self.me);
        self.mirrors
            .retain(|_, (home, _)| next_home(members, deposed, *home) == Some(me));
    }

    /// Sends the heir what changed of the mirrors of objects homed here.
    fn flush_mirrors(&mut self) {
        if self.touched.is_empty() {
            return;
        }
        let touched = std::mem::take(&mut self.touched);
        let heir = if self.members.contains(&self.me) && !self.deposed.contains(&self.me) {
            next_home(&self.members, &self.deposed, self.me)
        } else {
            None
        };
        let Some(heir) = heir else {
            return;
        };
        for key in touched {
            let now = self.objects.get(&key).and_then(|o| o.mirror(self.me));
            let state = match (now, self.mirrored.get(&key)) {
                (Some(m), Some(prev)) if *prev == m => continue,
                (Some(m), _) => {
                    self.mirrored.insert(key, m.clone());
                    Some(m)
                }
                (None, Some(_)) => {
                    self.mirrored.remove(&key);
                    None
                }
                (None, None) => continue,
            };
            self.send(heir, SyncMsg::Mirror { key, state });
        }
    }
}

/// What one step of one object decided, carried out by [`Service::run`].
#[derive(Default)]
struct Effects {
    answers: Vec<(Waiter, SyncResult)>,
    routes: Vec<(SyncKey, SyncOp, Waiter)>,
}

impl Effects {
    fn answer(&mut self, waiter: Waiter, result: SyncResult) {
        self.answers.push((waiter, result));
    }

    fn route(&mut self, key: SyncKey, op: SyncOp, waiter: Waiter) {
        self.routes.push((key, op, waiter));
    }
}

#[derive(Debug, Clone)]
enum Object {
    Mutex(Mutex),
    Cond(Cond),
    Barrier(Barrier),
    Rw(RwLock),
    Sem(Semaphore),
    /// The next free offset of a `dsm_alloc` heap.
    Heap(u64),
}

impl Object {
    fn view(&self, key: SyncKey) -> ObjectView {
        let (kind, holders, waiters, detail) = match self {
            Object::Mutex(m) => (
                "mutex",
                m.holder.iter().map(|h| h.owner).collect(),
                m.queue.len(),
                if m.unrecoverable {
                    "not recoverable".to_string()
                } else if m.inconsistent {
                    "holder died: inconsistent".to_string()
                } else {
                    String::new()
                },
            ),
            Object::Cond(c) => ("condition", Vec::new(), c.waiters.len(), String::new()),
            Object::Barrier(b) => (
                "barrier",
                Vec::new(),
                b.arrived.len(),
                format!("{} of {} arrived", b.arrived.len(), b.count),
            ),
            Object::Rw(rw) => (
                "rwlock",
                rw.writer.iter().chain(rw.readers.keys()).copied().collect(),
                rw.queue.len(),
                match rw.writer {
                    _ if rw.unrecoverable => "writer's host died: not recoverable".to_string(),
                    Some(_) => "write-locked".to_string(),
                    None => format!("{} readers", rw.readers.len()),
                },
            ),
            Object::Sem(sem) => (
                "semaphore",
                Vec::new(),
                sem.waiters.len(),
                format!("value {}", sem.value),
            ),
            Object::Heap(next) => ("heap", Vec::new(), 0, format!("{next} bytes allocated")),
        };
        ObjectView {
            key,
            kind,
            holders,
            waiters,
            detail,
        }
    }

    /// What the heir must keep of this object homed at `home`; `None` if nothing (what the
    /// survivors hold and wait for, they tell it).
    fn mirror(&self, home: NodeId) -> Option<Mirror> {
        match self {
            Object::Mutex(m) => {
                let holder = m
                    .holder
                    .filter(|h| h.owner.node == home)
                    .map(|h| (h.owner, h.count));
                (holder.is_some() || m.inconsistent || m.unrecoverable).then_some(Mirror::Mutex {
                    holder,
                    kind: m.kind,
                    inconsistent: m.inconsistent,
                    unrecoverable: m.unrecoverable,
                })
            }
            Object::Rw(rw) => {
                let writer = rw.writer.filter(|o| o.node == home);
                let readers: Vec<(Owner, u32)> = rw
                    .readers
                    .iter()
                    .filter(|(o, _)| o.node == home)
                    .map(|(&o, &n)| (o, n))
                    .collect();
                (writer.is_some() || !readers.is_empty() || rw.unrecoverable).then_some(
                    Mirror::Rw {
                        writer,
                        readers,
                        unrecoverable: rw.unrecoverable,
                    },
                )
            }
            Object::Sem(sem) => Some(Mirror::Sem {
                value: sem.value,
                tally: sem
                    .tally
                    .iter()
                    .map(|(&n, &t)| {
                        let initial = sem.initial;
                        (n, Tally { initial, ..t })
                    })
                    .collect(),
            }),
            Object::Heap(next) => Some(Mirror::Heap(*next)),
            Object::Cond(_) | Object::Barrier(_) => None,
        }
    }

    /// The object as its mirror left it (its waiters come again from the survivors).
    fn from_mirror(mirror: Mirror) -> Object {
        match mirror {
            Mirror::Mutex {
                holder,
                kind,
                inconsistent,
                unrecoverable,
            } => Object::Mutex(Mutex {
                holder: holder.map(|(owner, count)| Holder { owner, count }),
                kind,
                queue: VecDeque::new(),
                inconsistent,
                unrecoverable,
            }),
            Mirror::Rw {
                writer,
                readers,
                unrecoverable,
            } => Object::Rw(RwLock {
                writer,
                readers: readers.into_iter().collect(),
                queue: VecDeque::new(),
                unrecoverable,
            }),
            Mirror::Sem { value, tally } => Object::Sem(Semaphore {
                value,
                initial: tally.first().map_or(0, |(_, t)| t.initial),
                waiters: VecDeque::new(),
                tally: tally.into_iter().collect(),
            }),
            Mirror::Heap(next) => Object::Heap(next),
        }
    }

    fn for_op(key: SyncKey, op: SyncOp) -> Option<Object> {
        Some(match (key, op) {
            (SyncKey::Heap(_), SyncOp::Alloc { .. }) => Object::Heap(0),
            (SyncKey::Heap(_), _) | (_, SyncOp::Alloc { .. } | SyncOp::Withdraw) => return None,
            (_, SyncOp::Lock { .. } | SyncOp::Unlock { .. } | SyncOp::Consistent) => {
                Object::Mutex(Mutex::default())
            }
            (_, SyncOp::CondWait { .. } | SyncOp::Signal | SyncOp::Broadcast) => {
                Object::Cond(Cond::default())
            }
            (_, SyncOp::Barrier { .. }) => Object::Barrier(Barrier::default()),
            (_, SyncOp::ReadLock { .. } | SyncOp::WriteLock { .. } | SyncOp::RwUnlock) => {
                Object::Rw(RwLock::default())
            }
            (
                _,
                SyncOp::SemWait { initial, .. }
                | SyncOp::SemPost { initial }
                | SyncOp::SemValue { initial },
            ) => Object::Sem(Semaphore {
                value: initial,
                initial,
                waiters: VecDeque::new(),
                tally: BTreeMap::new(),
            }),
            (_, SyncOp::Reset | SyncOp::Abandon) => return None,
        })
    }

    /// Nothing held, nobody waiting, nothing to remember: the object need not be kept.
    fn idle(&self) -> bool {
        match self {
            Object::Mutex(m) => {
                m.holder.is_none() && m.queue.is_empty() && !m.inconsistent && !m.unrecoverable
            }
            Object::Cond(c) => c.waiters.is_empty(),
            Object::Barrier(b) => b.arrived.is_empty(),
            Object::Rw(rw) => {
                rw.writer.is_none()
                    && rw.readers.is_empty()
                    && rw.queue.is_empty()
                    && !rw.unrecoverable
            }
            // A semaphore's value is state of its own.
            Object::Sem(_) | Object::Heap(_) => false,
        }
    }

    /// Whether `pthread_*_init` may start the object afresh (nobody holds or waits).
    fn resettable(&self) -> bool {
        match self {
            Object::Mutex(m) => m.holder.is_none() && m.queue.is_empty(),
            Object::Sem(sem) => sem.waiters.is_empty(),
            other => other.idle(),
        }
    }

    fn expire(&mut self, now_ms: u64, fx: &mut Effects) {
        let due = |d: Option<u64>| d.is_some_and(|d| d <= now_ms);
        match self {
            Object::Mutex(m) => {
                for q in extract(&mut m.queue, |q| due(q.deadline)) {
                    fx.answer(q.waiter, SyncResult::TimedOut);
                }
            }
            Object::Cond(c) => {
                for w in extract(&mut c.waiters, |w| due(w.deadline)) {
                    w.relock(true, fx);
                }
            }
            Object::Rw(rw) => {
                for q in extract(&mut rw.queue, |q| due(q.deadline)) {
                    fx.answer(q.waiter, SyncResult::TimedOut);
                }
                // A timed-out writer at the head may have kept readers out.
                rw.grant_queued(fx);
            }
            Object::Sem(sem) => {
                for (w, _) in extract(&mut sem.waiters, |(_, d)| due(*d)) {
                    fx.answer(w, SyncResult::TimedOut);
                }
            }
            Object::Barrier(_) | Object::Heap(_) => {}
        }
    }

    /// A holder that never saw its grant gives it back.
    fn abandon(&mut self, owner: Owner, fx: &mut Effects) {
        match self {
            Object::Mutex(m) if m.holder.is_some_and(|h| h.owner == owner) => {
                m.holder = None;
                m.grant_next(fx);
            }
            Object::Rw(rw) => {
                let _ = rw.unlock(owner, fx);
            }
            // The one it took goes back.
            Object::Sem(sem) => sem.post(owner.node, fx),
            _ => {}
        }
    }

    /// A non-robust mutex whose holder *process* died stays locked, as on one host; one whose
    /// holder's *host* died (`host_died`) is not recoverable: its waiters and later lockers
    /// get `ENOTRECOVERABLE` instead of waiting for ever.
    fn drop_owners(&mut self, gone: &dyn Fn(&Owner) -> bool, host_died: bool, fx: &mut Effects) {
        match self {
            Object::Mutex(m) => {
                extract(&mut m.queue, |q| gone(&q.waiter.owner));
                if m.holder.is_some_and(|h| gone(&h.owner)) && m.kind.robust {
                    // POSIX robust mutex: the next locker learns the holder died.
                    m.holder = None;
                    m.inconsistent = true;
                    m.grant_next(fx);
                } else if m.holder.is_some_and(|h| gone(&h.owner)) && host_died {
                    m.holder = None;
                    m.unrecoverable = true;
                    for q in m.queue.drain(..) {
                        fx.answer(q.waiter, SyncResult::NotRecoverable);
                    }
                }
            }
            Object::Cond(c) => {
                extract(&mut c.waiters, |w| gone(&w.waiter.owner));
            }
            Object::Rw(rw) => {
                extract(&mut rw.queue, |q| gone(&q.waiter.owner));
                if host_died {
                    // A dead host's readers changed nothing: their locks go. A dead host's
                    // writer may have left things half-changed, as a mutex's holder would.
                    rw.readers.retain(|o, _| !gone(o));
                    if rw.writer.is_some_and(|o| gone(&o)) {
                        rw.writer = None;
                        rw.unrecoverable = true;
                        for q in rw.queue.drain(..) {
                            fx.answer(q.waiter, SyncResult::NotRecoverable);
                        }
                    }
                }
                rw.grant_queued(fx);
            }
            Object::Sem(sem) => {
                extract(&mut sem.waiters, |(w, _)| gone(&w.owner));
            }
            Object::Barrier(_) | Object::Heap(_) => {}
        }
    }
}

/// The entries of `map` whose key `keep` says to.
fn entries_where<V: Copy>(
    map: &BTreeMap<SyncKey, V>,
    keep: &dyn Fn(SyncKey) -> bool,
) -> Vec<(SyncKey, V)> {
    map.iter()
        .filter(|(&key, _)| keep(key))
        .map(|(&key, &v)| (key, v))
        .collect()
}

/// Removes and returns the entries `pick` chooses, keeping the others in order.
fn extract<T>(queue: &mut VecDeque<T>, pick: impl Fn(&T) -> bool) -> Vec<T> {
    let mut taken = Vec::new();
    let mut kept = VecDeque::with_capacity(queue.len());
    for item in queue.drain(..) {
        if pick(&item) {
            taken.push(item);
        } else {
            kept.push_back(item);
        }
    }
    *queue = kept;
    taken
}

fn alloc(next: &mut u64, size: u64, align: u64, limit: u64) -> SyncResult {
    if !align.is_power_of_two() {
        return SyncResult::Invalid;
    }
    let Some(start) = next.checked_add(align - 1).map(|n| n & !(align - 1)) else {
        return SyncResult::NoSpace;
    };
    match start.checked_add(size.max(1)) {
        Some(end) if end <= limit => {
            *next = end;
            SyncResult::Allocated(start)
        }
        _ => SyncResult::NoSpace,
    }
}

#[derive(Debug, Clone, Copy)]
struct Holder {
    owner: Owner,
    /// Recursive locks held.
    count: u32,
}

#[derive(Debug, Clone, Copy)]
struct Queued {
    waiter: Waiter,
    kind: MutexKind,
    deadline: Option<u64>,
    after_timeout: bool,
}

#[derive(Debug, Clone, Default)]
struct Mutex {
    holder: Option<Holder>,
    /// The holder's mutex type (the latest lock's).
    kind: MutexKind,
    queue: VecDeque<Queued>,
    /// A robust holder died; the state it protected may be half-changed.
    inconsistent: bool,
    /// Unlocked while inconsistent: no lock will ever succeed again.
    unrecoverable: bool,
}

impl Mutex {
    fn lock(
        &mut self,
        waiter: Waiter,
        kind: MutexKind,
        wait: Wait,
        deadline: Option<u64>,
        after_timeout: bool,
        fx: &mut Effects,
    ) {
        if self.unrecoverable {
            return fx.answer(waiter, SyncResult::NotRecoverable);
        }
        match self.holder {
            None => self.grant(
                Queued {
                    waiter,
                    kind,
                    deadline,
                    after_timeout,
                },
                fx,
            ),
            Some(h) if h.owner == waiter.owner && kind.recursive => {
                self.holder = Some(Holder {
                    count: h.count + 1,
                    ..h
                });
                fx.answer(waiter, SyncResult::Ok);
            }
            Some(h) if h.owner == waiter.owner && kind.errorcheck => {
                fx.answer(waiter, SyncResult::Deadlock)
            }
            Some(_) if wait == Wait::Try => fx.answer(waiter, SyncResult::Busy),
            Some(_) => self.queue.push_back(Queued {
                waiter,
                kind,
                deadline,
                after_timeout,
            }),
        }
    }

    fn grant(&mut self, q: Queued, fx: &mut Effects) {
        self.holder = Some(Holder {
            owner: q.waiter.owner,
            count: 1,
        });
        self.kind = q.kind;
        let result = if self.inconsistent {
            SyncResult::OwnerDead
        } else if q.after_timeout {
            SyncResult::TimedOut
        } else {
            SyncResult::Ok
        };
        fx.answer(q.waiter, result);
    }

    fn grant_next(&mut self, fx: &mut Effects) {
        if self.holder.is_none() {
            if let Some(q) = self.queue.pop_front() {
                self.grant(q, fx);
            }
        }
    }

    fn unlock(&mut self, owner: Owner, kind: MutexKind, fx: &mut Effects) -> SyncResult {
        let strict = kind.errorcheck || kind.robust || kind.recursive;
        let Some(h) = self.holder else {
            return if strict {
                SyncResult::NotOwner
            } else {
                SyncResult::Ok
            };
        };
        if h.owner != owner && strict {
            return SyncResult::NotOwner;
        }
        if h.count > 1 && h.owner == owner {
            self.holder = Some(Holder {
                count: h.count - 1,
                ..h
            });
            return SyncResult::Ok;
        }
        self.holder = None;
        if self.inconsistent {
            // Unlocked without pthread_mutex_consistent: the mutex is beyond repair.
            self.unrecoverable = true;
            for q in self.queue.drain(..) {
                fx.answer(q.waiter, SyncResult::NotRecoverable);
            }
            return SyncResult::Ok;
        }
        self.grant_next(fx);
        SyncResult::Ok
    }

    fn consistent(&mut self, owner: Owner) -> SyncResult {
        if self.inconsistent && self.holder.is_some_and(|h| h.owner == owner) {
            self.inconsistent = false;
            SyncResult::Ok
        } else {
            SyncResult::Invalid
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct CondWaiter {
    waiter: Waiter,
    mutex: SyncKey,
    kind: MutexKind,
    deadline: Option<u64>,
}

impl CondWaiter {
    /// Woken (or timed out): queue for the mutex, answered once it is held.
    fn relock(self, timed_out: bool, fx: &mut Effects) {
        let op = SyncOp::Lock {
            kind: self.kind,
            wait: Wait::Block,
            after_timeout: timed_out,
        };
        fx.route(self.mutex, op, self.waiter);
    }
}

#[derive(Debug, Clone, Default)]
struct Cond {
    waiters: VecDeque<CondWaiter>,
}

#[derive(Debug, Clone, Default)]
struct Barrier {
    count: u32,
    arrived: Vec<Waiter>,
}

impl Barrier {
    fn arrive(&mut self, waiter: Waiter, count: u32, fx: &mut Effects) {
        if count == 0 || (!self.arrived.is_empty() && count != self.count) {
            return fx.answer(waiter, SyncResult::Invalid);
        }
        self.count = count;
        self.arrived.push(waiter);
        if self.arrived.len() as u32 == count {
            // The last to arrive is the serial thread.
            let last = self.arrived.pop().expect("just pushed");
            for w in self.arrived.drain(..) {
                fx.answer(w, SyncResult::Ok);
            }
            fx.answer(last, SyncResult::Serial);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct RwQueued {
    waiter: Waiter,
    write: bool,
    deadline: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct RwLock {
    writer: Option<Owner>,
    readers: BTreeMap<Owner, u32>,
    queue: VecDeque<RwQueued>,
    /// Its writer died with its host: what it guarded may be half-changed, and no lock will
    /// succeed again.
    unrecoverable: bool,
}

impl RwLock {
    fn lock(
        &mut self,
        waiter: Waiter,
        write: bool,
        wait: Wait,
        deadline: Option<u64>,
        fx: &mut Effects,
    ) {
        let owner = waiter.owner;
        if self.unrecoverable {
            return fx.answer(waiter, SyncResult::NotRecoverable);
        }
        if self.writer == Some(owner) || (write && self.readers.contains_key(&owner)) {
            return fx.answer(waiter, SyncResult::Deadlock);
        }
        // A thread that reads already may read again even past a queued writer (else it would
        // deadlock on itself); everyone else queues behind whoever waits.
        let free = if write {
            self.writer.is_none() && self.readers.is_empty() && self.queue.is_empty()
        } else {
            self.writer.is_none() && (self.queue.is_empty() || self.readers.contains_key(&owner))
        };
        if free {
            self.take(owner, write);
            fx.answer(waiter, SyncResult::Ok);
        } else if wait == Wait::Try {
            fx.answer(waiter, SyncResult::Busy);
        } else {
            self.queue.push_back(RwQueued {
                waiter,
                write,
                deadline,
            });
        }
    }

    fn take(&mut self, owner: Owner, write: bool) {
        if write {
            self.writer = Some(owner);
        } else {
            *self.readers.entry(owner).or_insert(0) += 1;
        }
    }

    fn unlock(&mut self, owner: Owner, fx: &mut Effects) -> SyncResult {
        if self.writer == Some(owner) {
            self.writer = None;
        } else if let Some(n) = self.readers.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                self.readers.remove(&owner);
            }
        } else {
            return SyncResult::NotOwner;
        }
        self.grant_queued(fx);
        SyncResult::Ok
    }

    /// Grants from the head of the queue, in order: a writer alone, readers together.
    fn grant_queued(&mut self, fx: &mut Effects) {
        while let Some(head) = self.queue.front().copied() {
            let ok = if head.write {
                self.writer.is_none() && self.readers.is_empty()
            } else {
                self.writer.is_none()
            };
            if !ok {
                break;
            }
            self.queue.pop_front();
            self.take(head.waiter.owner, head.write);
            fx.answer(head.waiter, SyncResult::Ok);
            if head.write {
                break;
            }
        }
    }
}

/// A counting semaphore (`sem_t`): its value, and FIFO waiters with their deadlines.
#[derive(Debug, Clone)]
struct Semaphore {
    value: u32,
    /// The value `sem_init` gave it.
    initial: u32,
    waiters: VecDeque<(Waiter, Option<u64>)>,
    /// Each node's posts and grants so far (for a new home, should this one die).
    tally: BTreeMap<NodeId, Tally>,
}

impl Semaphore {
    fn granted(&mut self, waiter: Waiter, fx: &mut Effects) {
        self.tally.entry(waiter.owner.node).or_default().grants += 1;
        fx.answer(waiter, SyncResult::Ok);
    }

    fn wait(&mut self, waiter: Waiter, wait: Wait, deadline: Option<u64>, fx: &mut Effects) {
        if self.value > 0 && self.waiters.is_empty() {
            self.value -= 1;
            self.granted(waiter, fx);
        } else if wait == Wait::Try {
            fx.answer(waiter, SyncResult::Busy);
        } else {
            self.waiters.push_back((waiter, deadline));
        }
    }

    fn post(&mut self, from: NodeId, fx: &mut Effects) {
        self.tally.entry(from).or_default().posts += 1;
        match self.waiters.pop_front() {
            Some((w, _)) => self.granted(w, fx),
            None => self.value = self.value.saturating_add(1),
        }
    }
}
