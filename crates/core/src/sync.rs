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
//! [`SyncResult::OwnerDead`]; requests whose home is gone fail with [`SyncResult::HomeLost`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use dsm_proto::sync::{MutexKind, Owner, SyncKey, SyncMsg, SyncOp, SyncResult, Wait, Waiter};
use dsm_proto::{NodeId, SegmentId};

/// The ticket of a request nobody waits for (an unlock done on behalf of a condition wait).
const SILENT: u64 = 0;

/// What the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

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
        }
    }

    /// A local thread asks for `op` on `key`; `ticket` (not 0, unique while under way) names
    /// the answer, if the op is answered at all.
    pub fn request(&mut self, ticket: u64, owner: Owner, key: SyncKey, op: SyncOp, now_ms: u64) {
        self.stats.requests += 1;
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

    /// A message from a peer. `Err` names a message this node should not have been sent.
    pub fn on_peer(&mut self, from: NodeId, msg: SyncMsg, now_ms: u64) -> Result<(), String> {
        match msg {
            SyncMsg::Op { key, op, waiter } => {
                if key.home(&self.members) != self.me {
                    return Err(format!("{key:?} is not homed here"));
                }
                self.apply(key, op, waiter, now_ms);
            }
            SyncMsg::Done { ticket, result } => self.finish(ticket, result, now_ms),
            SyncMsg::ProcessGone { session } => {
                self.drop_owners(|o| o.node == from && o.session == session, false, now_ms)
            }
        }
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
    }

    /// Node `node` is gone (its daemon died or restarted): its processes' holds and waits are
    /// dropped here, and local requests that depended on it fail.
    pub fn node_gone(&mut self, node: NodeId, now_ms: u64) {
        self.drop_owners(|o| o.node == node, true, now_ms);
        self.home_unreachable(node, now_ms);
    }

    /// `node` has been unreachable for the fault timeout (not yet agreed dead): waits on
    /// objects it is home to fail ([`SyncResult::HomeLost`]) rather than hang. What its own
    /// processes hold here is kept until its death is agreed ([`Service::node_gone`]).
    pub fn home_unreachable(&mut self, node: NodeId, now_ms: u64) {
        let members = self.members.clone();
        let lost: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                p.key.home(&members) == node
                    || matches!(p.op, SyncOp::CondWait { mutex, .. } if mutex.home(&members) == node)
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
        self.objects.retain(|key, _| key.segment() != Some(segment));
    }

    /// Time passed: timed waits that are due time out.
    pub fn tick(&mut self, now_ms: u64) {
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
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|&(due, _)| due)
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<SyncOutput> {
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
        let home = key.home(&self.members);
        if home == self.me {
            self.apply(key, op, waiter, now_ms);
        } else {
            self.send(home, SyncMsg::Op { key, op, waiter });
        }
    }

    /// The home's work: `op` on `key` for `waiter`.
    fn apply(&mut self, key: SyncKey, op: SyncOp, waiter: Waiter, now_ms: u64) {
        self.stats.served += 1;
        let mut fx = Effects::default();
        match op {
            SyncOp::Reset => {
                if self.objects.get(&key).is_some_and(Object::resettable) {
                    self.objects.remove(&key);
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
            (Object::Sem(sem), SyncOp::SemPost { .. }) => sem.post(&mut fx),
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
            self.route(key, SyncOp::Abandon, on_behalf, now_ms);
        }
    }

    /// Drops the holds and waits of every owner `gone` says is gone, at the objects homed here.
    /// Owners `gone` hold and wait for nothing any more; `host_died`: they died with their
    /// host, not as a process (see [`Object::drop_owners`]).
    fn drop_owners(&mut self, gone: impl Fn(&Owner) -> bool, host_died: bool, now_ms: u64) {
        let keys: Vec<SyncKey> = self.objects.keys().copied().collect();
        for key in keys {
            let mut fx = Effects::default();
            if let Some(obj) = self.objects.get_mut(&key) {
                obj.drop_owners(&gone, host_died, &mut fx);
            }
            self.run(fx, now_ms);
            self.collect(key);
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
                waiters: VecDeque::new(),
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
            Object::Rw(rw) => rw.writer.is_none() && rw.readers.is_empty() && rw.queue.is_empty(),
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
            Object::Sem(sem) => sem.post(fx),
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
                rw.grant_queued(fx);
            }
            Object::Sem(sem) => {
                extract(&mut sem.waiters, |(w, _)| gone(&w.owner));
            }
            Object::Barrier(_) | Object::Heap(_) => {}
        }
    }
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
    waiters: VecDeque<(Waiter, Option<u64>)>,
}

impl Semaphore {
    fn wait(&mut self, waiter: Waiter, wait: Wait, deadline: Option<u64>, fx: &mut Effects) {
        if self.value > 0 && self.waiters.is_empty() {
            self.value -= 1;
            fx.answer(waiter, SyncResult::Ok);
        } else if wait == Wait::Try {
            fx.answer(waiter, SyncResult::Busy);
        } else {
            self.waiters.push_back((waiter, deadline));
        }
    }

    fn post(&mut self, fx: &mut Effects) {
        match self.waiters.pop_front() {
            Some((w, _)) => fx.answer(w, SyncResult::Ok),
            None => self.value = self.value.saturating_add(1),
        }
    }
}
