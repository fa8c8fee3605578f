//! The lock and barrier service (`dsm_core::sync`) driven without IO: threads on several nodes
//! run small programs (lock/unlock, producer/consumer on a condition, barrier rounds, readers
//! and writers), messages travel per-pair FIFO in any order. Checked after every step:
//! mutual exclusion, readers/writers exclusion, a barrier releases nobody before everyone of
//! the round arrived and names exactly one serial thread; at the end: every thread finished
//! (no deadlock, no lost wake-up) and every item was consumed exactly once.
//!
//! With a crash: one node dies at any step (its messages still in flight may arrive until a
//! survivor learns of the death, each survivor at its own step); its objects are rebuilt at the
//! next founder. Then, among the survivors: the same exclusion, no post lost, no survivor's
//! thread hung; a mutex the dead node's thread held answers `NotRecoverable` (or, inside the
//! documented window where the holder's mirror had not reached the heir, is free).
//!
//! Small worlds are explored exhaustively (every delivery order, states deduplicated); bigger
//! ones by seeded random schedules (`DSM_SIM_SEED` replays one; `DSM_TRACE=1` prints its steps).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use dsm_core::fastlock::{Env, PlainWords};
use dsm_core::{FastPath, Service, SyncOutput, Words};
use dsm_proto::fastlock as fl;
use dsm_proto::sync::{MutexKind, Owner, SyncKey, SyncMsg, SyncOp, SyncResult, Wait};
use dsm_proto::{NodeId, SegmentId};

#[derive(Clone, Copy, Debug)]
enum Program {
    /// Lock, (critical section), unlock; `rounds` times.
    Locker { m: SyncKey },
    /// Lock, add an item, signal, unlock.
    Producer { m: SyncKey, c: SyncKey },
    /// Lock, add an item, unlock, then signal (without the mutex, as POSIX allows).
    LateProducer { m: SyncKey, c: SyncKey },
    /// Lock, wait while there is no item, take one, unlock.
    Consumer { m: SyncKey, c: SyncKey },
    /// Arrive at a barrier of `count`.
    Barrier { b: SyncKey, count: u32 },
    /// Read or write lock, unlock.
    Rw { l: SyncKey, write: bool },
    /// `sem_post` one item.
    SemPost { s: SyncKey },
    /// `sem_wait` for one item.
    SemTake { s: SyncKey },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Ready,
    Waiting(u64),
    Holding,
    Done,
    /// The fast path (a `Locker` on the home node): the lock word read, the tag next.
    FastRead(u64),
    /// The tag matched: the swap next.
    FastTagged(u64),
    /// Unlocking on the fast path: the word read (held by this thread), the swap next.
    Unlocking(u64),
    /// The process ended (killed at any step but a request's wait); whether its daemon has
    /// noticed yet.
    Dead(bool),
}

/// Node index 0's fast path: its daemon's state and the words.
#[derive(Clone, Debug, Default)]
struct Fast {
    path: FastPath,
    /// The home node's lock words: the agents' loads and swaps on them are steps of their own,
    /// interleaved with the daemon's (whose own steps are atomic: one event loop).
    words: PlainWords,
    /// Idle sweeps (each a jump of time past `IDLE_MS`) the schedule may still make.
    sweeps: u32,
    /// Fast-path agents the schedule may still kill.
    deaths: u32,
}

/// Sessions are small in the model: a word's session bits are the session.
fn sessions(bits: u64) -> Option<u64> {
    Some(bits)
}

/// A key's segment, slot and tag.
fn cell(key: SyncKey) -> (SegmentId, usize, u64) {
    match key {
        SyncKey::Object { segment, offset } => (segment, fl::slot(offset), fl::tag(offset)),
        _ => unreachable!("the fast path is for objects in segments"),
    }
}

#[derive(Clone, Debug)]
struct Agent {
    node: usize,
    owner: Owner,
    program: Program,
    phase: Phase,
    left: u32,
    round: usize,
}

#[derive(Clone, Debug, Default)]
struct Shared {
    holder: BTreeMap<SyncKey, usize>,
    items: u32,
    produced: u32,
    consumed: u32,
    arrived: BTreeMap<usize, u32>,
    serials: BTreeMap<usize, u32>,
    readers: u32,
    writers: u32,
    /// Mutexes a thread of the dead node held when it died, or had held: its unlock may not
    /// have reached the heir's mirror before the death (docs/protocol.md).
    lost: std::collections::BTreeSet<SyncKey>,
    /// Mutexes each node's threads ever held.
    locked_by: std::collections::BTreeSet<(usize, SyncKey)>,
}

#[derive(Clone, Debug)]
struct World {
    nodes: Vec<Service>,
    links: BTreeMap<(usize, usize), VecDeque<SyncMsg>>,
    agents: Vec<Agent>,
    shared: Shared,
    next_ticket: Vec<u64>,
    now_ms: u64,
    /// The node that may still crash, then the one that did.
    victim: Option<usize>,
    dead: Option<usize>,
    /// Survivors that applied the death.
    learned: Vec<bool>,
    /// Node index 0 delegates idle mutexes to its threads (`Locker`s there take the fast path).
    fast: Option<Fast>,
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Run(usize),
    Deliver(usize, usize),
    Crash(usize),
    Learn(usize),
    /// Time passes `IDLE_MS` at node index 0, whose daemon sweeps its delegated mutexes.
    Sweep,
    /// A fast-path agent's process is killed.
    Die(usize),
    /// Its daemon notices (the session's connection closed).
    Gone(usize),
}

fn node(i: usize) -> NodeId {
    NodeId(i as u32 + 1)
}

/// A pthread object homed at node index `home` (objects live with their segment's creator).
fn object(home: usize, offset: u64) -> SyncKey {
    SyncKey::Object {
        segment: SegmentId::new(node(home), 1),
        offset,
    }
}

impl World {
    fn new(nodes: usize, programs: &[(usize, Program, u32)]) -> World {
        let members: Vec<NodeId> = (0..nodes).map(node).collect();
        World {
            nodes: (0..nodes)
                .map(|i| Service::new(node(i), members.clone()))
                .collect(),
            links: BTreeMap::new(),
            agents: programs
                .iter()
                .enumerate()
                .map(|(i, &(n, program, left))| Agent {
                    node: n,
                    owner: Owner {
                        node: node(n),
                        session: i as u64 + 1,
                        tid: 7,
                    },
                    program,
                    phase: Phase::Ready,
                    left,
                    round: 0,
                })
                .collect(),
            shared: Shared::default(),
            next_ticket: vec![1; nodes],
            now_ms: 0,
            victim: None,
            dead: None,
            learned: vec![false; nodes],
            fast: None,
        }
    }

    /// The same world with node index 0's mutexes delegated to its threads when idle, and
    /// `sweeps` idle sweeps the schedule may make.
    fn fast(mut self, sweeps: u32) -> World {
        self.fast = Some(Fast {
            sweeps,
            ..Fast::default()
        });
        self
    }

    /// The same world in which up to `deaths` of the home's fast-path processes may be killed.
    fn killing(mut self, deaths: u32) -> World {
        self.fast.as_mut().expect("a fast world").deaths = deaths;
        self
    }

    /// Whether a killed process held a mutex when it died (it stays locked: its waiters may
    /// wait for ever, as on one host).
    fn dead_holder(&self) -> bool {
        self.shared
            .holder
            .values()
            .any(|&i| matches!(self.agents[i].phase, Phase::Dead(_)))
    }

    /// Whether agent `i` takes the fast path.
    fn fast_agent(&self, i: usize) -> bool {
        let a = &self.agents[i];
        self.fast.is_some() && a.node == 0 && matches!(a.program, Program::Locker { .. })
    }

    /// The fast path's word holder for agent `i`.
    fn me(&self, i: usize) -> u64 {
        let o = self.agents[i].owner;
        fl::holder(o.session, o.tid)
    }

    /// The same world, in which node `victim` may die at any step.
    fn crashing(mut self, victim: usize) -> World {
        self.victim = Some(victim);
        self
    }

    fn alive(&self, n: usize) -> bool {
        self.dead != Some(n)
    }

    fn steps(&self) -> Vec<Step> {
        let mut steps: Vec<Step> = self
            .agents
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                self.alive(a.node)
                    && !matches!(a.phase, Phase::Waiting(_) | Phase::Done | Phase::Dead(_))
            })
            .map(|(i, _)| Step::Run(i))
            .collect();
        if let Some(f) = &self.fast {
            if f.sweeps > 0 && self.alive(0) && f.path.delegated() > 0 {
                steps.push(Step::Sweep);
            }
            if self.alive(0) {
                for (i, a) in self.agents.iter().enumerate() {
                    match a.phase {
                        Phase::Dead(false) => steps.push(Step::Gone(i)),
                        Phase::Waiting(_) | Phase::Done | Phase::Dead(_) => {}
                        _ if f.deaths > 0 && self.fast_agent(i) => steps.push(Step::Die(i)),
                        _ => {}
                    }
                }
            }
        }
        steps.extend(
            self.links
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(&(f, t), _)| Step::Deliver(f, t)),
        );
        if let Some(v) = self.victim {
            steps.push(Step::Crash(v));
        }
        if let Some(d) = self.dead {
            steps.extend(
                (0..self.nodes.len())
                    .filter(|&n| n != d && !self.learned[n])
                    .map(Step::Learn),
            );
        }
        steps
    }

    fn finished(&self) -> Result<(), String> {
        if let Some(a) = self.agents.iter().find(|a| {
            !matches!(a.phase, Phase::Done | Phase::Dead(_))
                && self.alive(a.node)
                && !self.dead_holder()
        }) {
            return Err(format!("deadlock: {a:?} never finished"));
        }
        let s = &self.shared;
        // A dead node's consumers may have taken items, its producers made some.
        if s.consumed > s.produced || (s.consumed != s.produced && self.dead.is_none()) {
            return Err(format!("{} produced, {} consumed", s.produced, s.consumed));
        }
        if let Some((r, n)) = s.serials.iter().find(|(_, &n)| n != 1) {
            return Err(format!("barrier round {r} had {n} serial threads"));
        }
        if let (Some(f), true) = (&self.fast, self.alive(0)) {
            // Everyone done: a delegated mutex's word is free, any other's is the daemon's.
            for (segment, slot, tag, word) in f.words.slots() {
                if tag == 0 {
                    continue; // a slot no mutex was ever given
                }
                let delegated = f.path.is_delegated(SyncKey::Object {
                    segment,
                    offset: tag - 1,
                });
                let h = fl::holder_of(word);
                if (delegated && h != fl::FREE) || (!delegated && h != fl::DAEMON) {
                    return Err(format!(
                        "slot {slot}: word {word:#x} (delegated: {delegated}) at the end"
                    ));
                }
            }
        }
        Ok(())
    }

    fn issue(&mut self, i: usize, key: SyncKey, op: SyncOp) {
        let (n, owner) = (self.agents[i].node, self.agents[i].owner);
        let ticket = self.next_ticket[n];
        self.next_ticket[n] += 1;
        if op.answered() {
            self.agents[i].phase = Phase::Waiting(ticket);
        }
        if let (0, Some(f)) = (n, &mut self.fast) {
            // The daemon's side of a local request (daemon/src/server/locks.rs): a lock may be
            // granted by delegation; otherwise what it names is recalled first.
            let mut env = Env {
                sync: &mut self.nodes[0],
                words: &mut f.words,
                sessions: &sessions,
                now_ms: self.now_ms,
            };
            if let SyncOp::Lock {
                kind,
                after_timeout: false,
                ..
            } = op
            {
                if f.path.grant(&mut env, key, kind, owner) {
                    if let Err(e) = self.answered(0, ticket, SyncResult::Ok) {
                        panic!("{e}");
                    }
                    return;
                }
            }
            f.path.before(&mut env, key, op, Some(owner));
        }
        self.nodes[n].request(ticket, owner, key, op, self.now_ms);
        self.drain(n);
    }

    /// Agent `i` took the mutex `m` on the fast path.
    fn took(&mut self, i: usize, m: SyncKey) -> Result<(), String> {
        self.shared.locked_by.insert((self.agents[i].node, m));
        if let Some(other) = self.shared.holder.insert(m, i) {
            return Err(format!(
                "mutual exclusion broken: {i} took the fast path while {other} holds"
            ));
        }
        self.agents[i].phase = Phase::Holding;
        Ok(())
    }

    fn lock(&mut self, i: usize, m: SyncKey) {
        let op = SyncOp::Lock {
            kind: MutexKind::default(),
            wait: Wait::Block,
            after_timeout: false,
        };
        self.issue(i, m, op);
    }

    fn unlock(&mut self, i: usize, m: SyncKey) {
        self.shared.holder.remove(&m);
        self.issue(
            i,
            m,
            SyncOp::Unlock {
                kind: MutexKind::default(),
            },
        );
    }

    fn one_done(&mut self, i: usize) {
        let a = &mut self.agents[i];
        a.left -= 1;
        a.phase = if a.left == 0 {
            Phase::Done
        } else {
            Phase::Ready
        };
    }

    fn step(&mut self, step: Step) -> Result<(), String> {
        match step {
            Step::Deliver(from, to) => {
                let msg = self
                    .links
                    .get_mut(&(from, to))
                    .and_then(VecDeque::pop_front)
                    .expect("enabled");
                if let (0, Some(f), SyncMsg::Op { key, op, .. }) = (to, &mut self.fast, &msg) {
                    let mut env = Env {
                        sync: &mut self.nodes[0],
                        words: &mut f.words,
                        sessions: &sessions,
                        now_ms: self.now_ms,
                    };
                    f.path.before(&mut env, *key, *op, None);
                }
                self.nodes[to].on_peer(node(from), msg, self.now_ms)?;
                self.drain(to);
            }
            Step::Crash(v) => {
                self.victim = None;
                self.dead = Some(v);
                self.links.retain(|&(_, to), _| to != v);
                for (i, a) in self.agents.iter().enumerate() {
                    if a.node == v {
                        self.shared.holder.retain(|_, h| *h != i);
                        match (a.program, a.phase) {
                            (Program::Rw { write: true, .. }, Phase::Holding) => {
                                self.shared.writers -= 1
                            }
                            (Program::Rw { write: false, .. }, Phase::Holding) => {
                                self.shared.readers -= 1
                            }
                            _ => {}
                        }
                    }
                }
                let lost = self.shared.locked_by.iter().filter(|(n, _)| *n == v);
                self.shared.lost = lost.map(|&(_, m)| m).collect();
            }
            Step::Learn(n) => {
                let d = self.dead.expect("a death to learn");
                self.learned[n] = true;
                self.links.remove(&(d, n));
                let survivors: Vec<NodeId> = (0..self.nodes.len())
                    .filter(|&m| m != d)
                    .map(node)
                    .collect();
                if let (0, Some(f)) = (n, &mut self.fast) {
                    let mut env = Env {
                        sync: &mut self.nodes[0],
                        words: &mut f.words,
                        sessions: &sessions,
                        now_ms: self.now_ms,
                    };
                    f.path.recall_all(&mut env);
                }
                self.nodes[n].node_gone(node(d), &survivors, self.now_ms);
                self.drain(n);
            }
            Step::Sweep => {
                let f = self.fast.as_mut().expect("enabled");
                f.sweeps -= 1;
                self.now_ms += dsm_core::fastlock::IDLE_MS;
                let mut env = Env {
                    sync: &mut self.nodes[0],
                    words: &mut f.words,
                    sessions: &sessions,
                    now_ms: self.now_ms,
                };
                f.path.sweep(&mut env);
                self.drain(0);
            }
            Step::Die(i) => {
                self.fast.as_mut().expect("fast").deaths -= 1;
                // A hold it had (on the word or at the home) is kept: nobody may be granted
                // the mutex while `shared.holder` names it.
                self.agents[i].phase = Phase::Dead(false);
            }
            Step::Gone(i) => {
                let f = self.fast.as_mut().expect("fast");
                let session = self.agents[i].owner.session;
                let mut env = Env {
                    sync: &mut self.nodes[0],
                    words: &mut f.words,
                    sessions: &sessions,
                    now_ms: self.now_ms,
                };
                f.path.process_gone(&mut env, session);
                self.nodes[0].process_gone(session, self.now_ms);
                self.agents[i].phase = Phase::Dead(true);
                self.drain(0);
            }
            Step::Run(i) if self.fast_agent(i) => {
                let Program::Locker { m } = self.agents[i].program else {
                    unreachable!()
                };
                let (segment, slot, tag) = cell(m);
                let me = self.me(i);
                let words = &mut self.fast.as_mut().expect("fast").words;
                match self.agents[i].phase {
                    Phase::Ready => {
                        self.agents[i].phase = Phase::FastRead(words.word(segment, slot))
                    }
                    Phase::FastRead(w) => {
                        if fl::holder_of(w) == fl::FREE && words.tag(segment, slot) == tag {
                            self.agents[i].phase = Phase::FastTagged(w);
                        } else {
                            self.lock(i, m);
                        }
                    }
                    Phase::FastTagged(w) => {
                        if words.swap(segment, slot, w, fl::with_holder(w, me)) {
                            self.took(i, m)?;
                        } else {
                            self.lock(i, m);
                        }
                    }
                    Phase::Holding => {
                        let w = words.word(segment, slot);
                        // Even sessions unlock through the service, as a thread with writes
                        // to replicate does (shim/src/fastlock.rs), even when the word is its.
                        let released = self.agents[i].owner.session % 2 == 1;
                        if released && fl::holder_of(w) == me && words.tag(segment, slot) == tag {
                            self.agents[i].phase = Phase::Unlocking(w);
                        } else {
                            self.unlock(i, m);
                            self.one_done(i);
                        }
                    }
                    Phase::Unlocking(w) => {
                        if words.swap(segment, slot, w, fl::freed(w)) {
                            self.shared.holder.remove(&m);
                        } else {
                            self.unlock(i, m);
                        }
                        self.one_done(i);
                    }
                    phase => return Err(format!("agent {i} run in {phase:?}")),
                }
            }
            Step::Run(i) => {
                let a = self.agents[i].clone();
                match (a.program, a.phase) {
                    (Program::Locker { m }, Phase::Ready)
                    | (Program::Producer { m, .. }, Phase::Ready)
                    | (Program::LateProducer { m, .. }, Phase::Ready)
                    | (Program::Consumer { m, .. }, Phase::Ready) => self.lock(i, m),
                    (Program::Locker { m }, Phase::Holding) => {
                        self.unlock(i, m);
                        self.one_done(i);
                    }
                    (Program::LateProducer { m, c }, Phase::Holding) => {
                        self.shared.items += 1;
                        self.shared.produced += 1;
                        self.unlock(i, m);
                        self.issue(i, c, SyncOp::Signal);
                        self.one_done(i);
                    }
                    (Program::Producer { m, c }, Phase::Holding) => {
                        self.shared.items += 1;
                        self.shared.produced += 1;
                        self.issue(i, c, SyncOp::Signal);
                        self.unlock(i, m);
                        self.one_done(i);
                    }
                    (Program::Consumer { m, c }, Phase::Holding) => {
                        if self.shared.items > 0 {
                            self.shared.items -= 1;
                            self.shared.consumed += 1;
                            self.unlock(i, m);
                            self.one_done(i);
                        } else {
                            self.shared.holder.remove(&m);
                            let op = SyncOp::CondWait {
                                mutex: m,
                                kind: MutexKind::default(),
                                wait: Wait::Block,
                            };
                            self.issue(i, c, op);
                        }
                    }
                    (Program::Barrier { b, count }, Phase::Ready) => {
                        *self.shared.arrived.entry(a.round).or_default() += 1;
                        self.issue(i, b, SyncOp::Barrier { count });
                    }
                    (Program::Rw { l, write }, Phase::Ready) => {
                        let op = if write {
                            SyncOp::WriteLock { wait: Wait::Block }
                        } else {
                            SyncOp::ReadLock { wait: Wait::Block }
                        };
                        self.issue(i, l, op);
                    }
                    (Program::Rw { l, write }, Phase::Holding) => {
                        if write {
                            self.shared.writers -= 1;
                        } else {
                            self.shared.readers -= 1;
                        }
                        self.issue(i, l, SyncOp::RwUnlock);
                        self.one_done(i);
                    }
                    (Program::SemPost { s }, Phase::Ready) => {
                        self.shared.produced += 1;
                        self.issue(i, s, SyncOp::SemPost { initial: 0 });
                        self.one_done(i);
                    }
                    (Program::SemTake { s }, Phase::Ready) => {
                        let op = SyncOp::SemWait {
                            initial: 0,
                            wait: Wait::Block,
                        };
                        self.issue(i, s, op);
                    }
                    (p, phase) => return Err(format!("agent {i} ({p:?}) run in {phase:?}")),
                }
            }
        }
        Ok(())
    }

    fn drain(&mut self, n: usize) {
        while let Some(out) = self.nodes[n].poll_output() {
            match out {
                SyncOutput::Send { to, msg } => {
                    let to = (to.0 - 1) as usize;
                    if self.alive(to) {
                        self.links.entry((n, to)).or_default().push_back(msg);
                    }
                }
                SyncOutput::Answer { ticket, result } => {
                    if let Err(e) = self.answered(n, ticket, result) {
                        panic!("{e}");
                    }
                }
                SyncOutput::Violation { from, what } => panic!("violation by {from}: {what}"),
                SyncOutput::Recall { key } => {
                    let f = self
                        .fast
                        .as_mut()
                        .expect("only a node that delegates recalls");
                    assert_eq!(n, 0, "only node index 0 delegates");
                    let mut env = Env {
                        sync: &mut self.nodes[0],
                        words: &mut f.words,
                        sessions: &sessions,
                        now_ms: self.now_ms,
                    };
                    f.path.recall(&mut env, key, true);
                }
            }
        }
    }

    fn answered(&mut self, n: usize, ticket: u64, result: SyncResult) -> Result<(), String> {
        let i = self
            .agents
            .iter()
            .position(|a| a.node == n && a.phase == Phase::Waiting(ticket))
            .ok_or_else(|| format!("answer {result:?} to ticket {ticket} that nobody awaits"))?;
        let a = self.agents[i].clone();
        match a.program {
            Program::Locker { m }
            | Program::Producer { m, .. }
            | Program::LateProducer { m, .. }
            | Program::Consumer { m, .. } => {
                if result == SyncResult::NotRecoverable && self.shared.lost.contains(&m) {
                    // Its holder died with its host: the mutex is beyond use, and says so.
                    self.agents[i].left = 1;
                    self.one_done(i);
                    return Ok(());
                }
                if result != SyncResult::Ok {
                    return Err(format!("agent {i}: lock answered {result:?}"));
                }
                self.shared.locked_by.insert((a.node, m));
                if let Some(other) = self.shared.holder.insert(m, i) {
                    return Err(format!(
                        "mutual exclusion broken: {i} granted while {other} holds"
                    ));
                }
                self.agents[i].phase = Phase::Holding;
            }
            Program::Barrier { count, .. } => {
                let arrived = self.shared.arrived.get(&a.round).copied().unwrap_or(0);
                if arrived != count {
                    return Err(format!(
                        "barrier round {} released agent {i} with {arrived} of {count} arrived",
                        a.round
                    ));
                }
                match result {
                    SyncResult::Serial => *self.shared.serials.entry(a.round).or_default() += 1,
                    SyncResult::Ok => {
                        self.shared.serials.entry(a.round).or_default();
                    }
                    other => return Err(format!("barrier answered {other:?}")),
                }
                self.agents[i].round += 1;
                self.one_done(i);
            }
            Program::SemTake { .. } => {
                if result != SyncResult::Ok {
                    return Err(format!("sem_wait answered {result:?}"));
                }
                self.shared.consumed += 1;
                if self.shared.consumed > self.shared.produced {
                    return Err(format!(
                        "{} taken from a semaphore posted {} times",
                        self.shared.consumed, self.shared.produced
                    ));
                }
                self.one_done(i);
            }
            Program::SemPost { .. } => return Err("sem_post was answered".into()),
            Program::Rw { l, write } => {
                if result == SyncResult::NotRecoverable && self.shared.lost.contains(&l) {
                    self.agents[i].left = 1;
                    self.one_done(i);
                    return Ok(());
                }
                self.shared.locked_by.insert((a.node, l));
                if result != SyncResult::Ok {
                    return Err(format!("rwlock answered {result:?}"));
                }
                if write {
                    self.shared.writers += 1;
                } else {
                    self.shared.readers += 1;
                }
                let s = &self.shared;
                if s.writers > 1 || (s.writers == 1 && s.readers > 0) {
                    return Err(format!(
                        "rwlock exclusion broken: {} writers, {} readers",
                        s.writers, s.readers
                    ));
                }
                self.agents[i].phase = Phase::Holding;
            }
        }
        Ok(())
    }

    fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        format!(
            "{:?}",
            (
                &self.nodes,
                &self.links,
                &self.agents,
                &self.shared,
                &self.fast
            )
        )
        .hash(&mut h);
        h.finish()
    }
}

/// Every reachable state of `world`, deduplicated; returns how many.
fn explore(world: World) -> usize {
    let mut seen = HashSet::new();
    let mut stack = vec![world];
    while let Some(w) = stack.pop() {
        if !seen.insert(w.fingerprint()) {
            continue;
        }
        let steps = w.steps();
        if steps.is_empty() {
            if let Err(e) = w.finished() {
                panic!("{e}\nin {w:#?}");
            }
            continue;
        }
        for step in steps {
            let mut next = w.clone();
            if let Err(e) = next.step(step) {
                panic!("{e} after {step:?}\nfrom {w:#?}");
            }
            stack.push(next);
        }
    }
    seen.len()
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

fn simulate(seed: u64, mut world: World) -> Result<(), String> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    for _ in 0..1_000_000 {
        let steps = world.steps();
        if steps.is_empty() {
            return world.finished();
        }
        let step = steps[rng.below(steps.len())];
        if std::env::var("DSM_TRACE").is_ok() {
            eprintln!("{step:?}");
        }
        world.step(step)?;
    }
    Err("no end: livelock".into())
}

fn sweep(seeds: u64, make: impl Fn() -> World) {
    let only = std::env::var("DSM_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    for seed in only.map_or(0..seeds, |s: u64| s..s + 1) {
        if let Err(e) = simulate(seed, make()) {
            panic!("seed {seed}: {e} (replay with DSM_SIM_SEED={seed})");
        }
    }
}

#[test]
fn three_nodes_one_mutex_exhaustive() {
    let m = object(0, 0);
    let programs: Vec<_> = (0..3).map(|n| (n, Program::Locker { m }, 3)).collect();
    let states = explore(World::new(3, &programs));
    println!("mutex, 3 nodes × 3 rounds: {states} states");
    assert!(states > 1000);
}

#[test]
fn condition_across_homes_exhaustive() {
    // Mutex homed on node 1, condition on node 2: wait morphing crosses homes.
    let (m, c) = (object(1, 0), object(2, 64));
    let programs = [
        (0, Program::Producer { m, c }, 3),
        (0, Program::Consumer { m, c }, 1),
        (1, Program::Consumer { m, c }, 1),
        (2, Program::Consumer { m, c }, 1),
    ];
    let states = explore(World::new(3, &programs));
    println!("condition, producer + 3 consumers on 3 nodes: {states} states");
    assert!(states > 1000);
}

#[test]
fn condition_same_home_exhaustive() {
    let (m, c) = (object(0, 0), object(0, 64));
    let programs = [
        (1, Program::Producer { m, c }, 2),
        (0, Program::Consumer { m, c }, 1),
        (2, Program::Consumer { m, c }, 1),
    ];
    let states = explore(World::new(3, &programs));
    println!("condition, one home: {states} states");
}

#[test]
fn barrier_exhaustive() {
    let b = SyncKey::Barrier(2);
    let programs: Vec<_> = (0..3)
        .map(|n| (n, Program::Barrier { b, count: 3 }, 2))
        .collect();
    let states = explore(World::new(3, &programs));
    println!("barrier, 3 nodes × 2 rounds: {states} states");
}

#[test]
fn rwlock_exhaustive() {
    let l = object(1, 128);
    let programs = [
        (0, Program::Rw { l, write: false }, 2),
        (1, Program::Rw { l, write: true }, 1),
        (2, Program::Rw { l, write: false }, 1),
        (2, Program::Rw { l, write: true }, 1),
    ];
    let states = explore(World::new(3, &programs));
    println!("rwlock, 2 readers + 2 writers on 3 nodes: {states} states");
}

#[test]
fn semaphore_exhaustive() {
    let s = object(1, 512);
    let programs = [
        (0, Program::SemPost { s }, 2),
        (2, Program::SemPost { s }, 1),
        (1, Program::SemTake { s }, 2),
        (2, Program::SemTake { s }, 1),
    ];
    let states = explore(World::new(3, &programs));
    println!("semaphore, 3 posts and 3 waits on 3 nodes: {states} states");
    assert!(states > 100);
}

#[test]
fn semaphore_value_trywait_timeout_and_abandon() {
    let mut s = single();
    let k = object(0, 0);
    let take = |wait| SyncOp::SemWait { initial: 2, wait };
    s.request(1, owner(1, 1), k, take(Wait::Block), 0);
    s.request(2, owner(1, 1), k, take(Wait::Block), 0);
    s.request(3, owner(1, 1), k, take(Wait::Try), 0);
    s.request(4, owner(1, 2), k, take(Wait::Ms(10)), 0);
    s.request(5, owner(1, 3), k, take(Wait::Block), 0);
    s.request(6, owner(1, 1), k, SyncOp::SemValue { initial: 2 }, 0);
    assert_eq!(
        answers(&mut s),
        [
            (1, SyncResult::Ok),
            (2, SyncResult::Ok),
            (3, SyncResult::Busy),
            (6, SyncResult::Value(0))
        ]
    );
    s.tick(10);
    assert_eq!(answers(&mut s), [(4, SyncResult::TimedOut)]);
    // Waiter 5 goes away; the post meant for it goes back to the semaphore.
    s.cancel(5);
    s.request(7, owner(1, 1), k, SyncOp::SemPost { initial: 2 }, 11);
    s.request(8, owner(1, 1), k, SyncOp::SemValue { initial: 2 }, 11);
    assert_eq!(answers(&mut s), [(8, SyncResult::Value(1))]);
}

#[test]
fn a_withdrawn_semaphore_wait_ends_interrupted_and_takes_nothing() {
    let mut s = single();
    let k = object(0, 0);
    let take = SyncOp::SemWait {
        initial: 0,
        wait: Wait::Block,
    };
    s.request(1, owner(1, 1), k, take, 0);
    s.request(2, owner(1, 2), k, take, 0);
    assert_eq!(answers(&mut s), []);
    // Thread 1's wait is withdrawn (a signal); thread 2 keeps waiting and gets the post.
    s.request(3, owner(1, 1), k, SyncOp::Withdraw, 1);
    assert_eq!(answers(&mut s), [(1, SyncResult::Interrupted)]);
    s.request(4, owner(1, 1), k, SyncOp::SemPost { initial: 0 }, 2);
    assert_eq!(answers(&mut s), [(2, SyncResult::Ok)]);
    // A withdrawal that comes after its wait was granted changes nothing.
    s.request(5, owner(1, 2), k, SyncOp::Withdraw, 3);
    s.request(6, owner(1, 1), k, SyncOp::SemValue { initial: 0 }, 3);
    assert_eq!(answers(&mut s), [(6, SyncResult::Value(0))]);
}

#[test]
fn a_removed_segment_takes_its_objects_along() {
    let mut s = single();
    let (sem, other) = (object(0, 0), SyncKey::Lock(3));
    s.request(1, owner(1, 1), sem, SyncOp::SemPost { initial: 5 }, 0);
    s.request(
        2,
        owner(1, 1),
        other,
        lock_op(MutexKind::default(), Wait::Block),
        0,
    );
    assert_eq!(s.objects(), 2);
    s.segment_removed(SegmentId::new(NodeId(1), 1));
    assert_eq!(s.objects(), 1, "the lock outside any segment stays");
    s.request(3, owner(1, 1), sem, SyncOp::SemValue { initial: 0 }, 1);
    assert_eq!(
        answers(&mut s),
        [(2, SyncResult::Ok), (3, SyncResult::Value(0))]
    );
}

#[test]
fn random_schedules_mixed_programs() {
    sweep(300, || {
        let (m, c) = (object(1, 0), object(3, 64));
        let l = object(0, 256);
        let b = SyncKey::Barrier(9);
        let mut programs = Vec::new();
        for n in 0..5 {
            programs.push((n, Program::Locker { m }, 6));
            programs.push((n, Program::Barrier { b, count: 5 }, 4));
            programs.push((
                n,
                Program::Rw {
                    l,
                    write: n % 2 == 0,
                },
                5,
            ));
        }
        programs.push((4, Program::Producer { m, c }, 12));
        let sem = object(2, 512);
        programs.push((1, Program::SemPost { s: sem }, 8));
        programs.push((3, Program::SemTake { s: sem }, 4));
        programs.push((0, Program::SemTake { s: sem }, 4));
        for n in 0..4 {
            programs.push((n, Program::Consumer { m, c }, 3));
        }
        World::new(5, &programs)
    });
}

/// Node 0 is home to a mutex three nodes' threads lock; it dies at any step.
#[test]
fn a_dead_home_s_mutex_is_rebuilt_exhaustive() {
    let m = object(0, 0);
    let programs: Vec<_> = (0..3).map(|n| (n, Program::Locker { m }, 2)).collect();
    let states = explore(World::new(3, &programs).crashing(0));
    println!("{states} states");
}

/// Node 0 is home to a semaphore node 1 posts to and node 2 waits on; it dies at any step:
/// no post is lost, none counted twice.
#[test]
fn a_dead_home_s_semaphore_keeps_every_post_exhaustive() {
    let s = object(0, 0);
    let programs = [
        (1, Program::SemPost { s }, 3),
        (2, Program::SemTake { s }, 2),
        (1, Program::SemTake { s }, 1),
    ];
    let states = explore(World::new(3, &programs).crashing(0));
    println!("{states} states");
}

/// A condition and its mutex homed at node 0, a producer on node 1 and a consumer on node 2;
/// node 0 dies at any step: the consumer's wait ends (spuriously, or by the signal) and no
/// item is lost.
#[test]
fn a_dead_home_s_condition_wakes_its_waiters_exhaustive() {
    let (m, c) = (object(0, 0), object(0, 64));
    let programs = [
        (1, Program::Producer { m, c }, 2),
        (2, Program::Consumer { m, c }, 2),
    ];
    let states = explore(World::new(3, &programs).crashing(0));
    println!("{states} states");
}

/// A rwlock homed at node 0: a writer on node 1, a reader on node 2, node 0 dies.
#[test]
fn a_dead_home_s_rwlock_is_rebuilt_exhaustive() {
    let l = object(0, 0);
    let programs = [
        (1, Program::Rw { l, write: true }, 2),
        (2, Program::Rw { l, write: false }, 2),
        (0, Program::Rw { l, write: false }, 1),
    ];
    let states = explore(World::new(3, &programs).crashing(0));
    println!("{states} states");
}

/// Mixed programs on 5 nodes; node 1, home to the mutex and the semaphore, dies at a random
/// step.
#[test]
fn random_schedules_with_a_home_dying() {
    sweep(300, || {
        let (m, c) = (object(1, 0), object(1, 64));
        let l = object(1, 256);
        let sem = object(1, 512);
        let mut programs = Vec::new();
        for n in 0..5 {
            programs.push((n, Program::Locker { m }, 4));
            programs.push((
                n,
                Program::Rw {
                    l,
                    write: n % 2 == 0,
                },
                3,
            ));
        }
        programs.push((4, Program::Producer { m, c }, 12));
        programs.push((4, Program::SemPost { s: sem }, 8));
        programs.push((3, Program::SemTake { s: sem }, 4));
        programs.push((0, Program::SemTake { s: sem }, 4));
        for n in 0..4 {
            programs.push((n, Program::Consumer { m, c }, 3));
        }
        World::new(5, &programs).crashing(1)
    });
}

// ---- single behaviours, step by step ----

fn owner(n: u32, session: u64) -> Owner {
    Owner {
        node: NodeId(n),
        session,
        tid: 1,
    }
}

fn answers(s: &mut Service) -> Vec<(u64, SyncResult)> {
    std::iter::from_fn(|| s.poll_output())
        .filter_map(|o| match o {
            SyncOutput::Answer { ticket, result } => Some((ticket, result)),
            SyncOutput::Send { .. } | SyncOutput::Violation { .. } | SyncOutput::Recall { .. } => {
                None
            }
        })
        .collect()
}

fn single() -> Service {
    Service::new(NodeId(1), vec![NodeId(1)])
}

fn lock_op(kind: MutexKind, wait: Wait) -> SyncOp {
    SyncOp::Lock {
        kind,
        wait,
        after_timeout: false,
    }
}

#[test]
fn trylock_timedlock_and_fifo_order() {
    let mut s = single();
    let m = object(0, 0);
    let k = MutexKind::default();
    s.request(1, owner(1, 1), m, lock_op(k, Wait::Block), 0);
    s.request(2, owner(1, 2), m, lock_op(k, Wait::Try), 0);
    s.request(3, owner(1, 3), m, lock_op(k, Wait::Ms(100)), 0);
    s.request(4, owner(1, 4), m, lock_op(k, Wait::Block), 0);
    s.request(5, owner(1, 5), m, lock_op(k, Wait::Block), 0);
    assert_eq!(
        answers(&mut s),
        [(1, SyncResult::Ok), (2, SyncResult::Busy)]
    );
    assert_eq!(s.poll_timeout(), Some(100));
    s.tick(99);
    assert!(answers(&mut s).is_empty());
    s.tick(100);
    assert_eq!(answers(&mut s), [(3, SyncResult::TimedOut)]);
    s.request(6, owner(1, 1), m, SyncOp::Unlock { kind: k }, 101);
    assert_eq!(
        answers(&mut s),
        [(4, SyncResult::Ok)],
        "first in line gets it"
    );
    s.request(7, owner(1, 4), m, SyncOp::Unlock { kind: k }, 102);
    assert_eq!(answers(&mut s), [(5, SyncResult::Ok)]);
}

#[test]
fn recursive_and_errorcheck() {
    let mut s = single();
    let m = object(0, 0);
    let rec = MutexKind {
        recursive: true,
        ..Default::default()
    };
    s.request(1, owner(1, 1), m, lock_op(rec, Wait::Block), 0);
    s.request(2, owner(1, 1), m, lock_op(rec, Wait::Block), 0);
    s.request(3, owner(1, 2), m, lock_op(rec, Wait::Block), 0);
    s.request(4, owner(1, 1), m, SyncOp::Unlock { kind: rec }, 0);
    // A recursive unlock is answered (it may be refused: EPERM, as glibc's).
    assert_eq!(
        answers(&mut s),
        [
            (1, SyncResult::Ok),
            (2, SyncResult::Ok),
            (4, SyncResult::Ok)
        ]
    );
    s.request(5, owner(1, 1), m, SyncOp::Unlock { kind: rec }, 0);
    assert_eq!(answers(&mut s), [(3, SyncResult::Ok), (5, SyncResult::Ok)]);
    s.request(9, owner(1, 1), m, SyncOp::Unlock { kind: rec }, 0);
    assert_eq!(answers(&mut s), [(9, SyncResult::NotOwner)]);

    let e = object(0, 64);
    let chk = MutexKind {
        errorcheck: true,
        ..Default::default()
    };
    s.request(6, owner(1, 1), e, lock_op(chk, Wait::Block), 0);
    s.request(7, owner(1, 1), e, lock_op(chk, Wait::Block), 0);
    s.request(8, owner(1, 2), e, SyncOp::Unlock { kind: chk }, 0);
    assert_eq!(
        answers(&mut s),
        [
            (6, SyncResult::Ok),
            (7, SyncResult::Deadlock),
            (8, SyncResult::NotOwner)
        ]
    );
}

#[test]
fn robust_mutex_owner_dead_then_consistent_or_unrecoverable() {
    let robust = MutexKind {
        robust: true,
        ..Default::default()
    };
    let m = object(0, 0);
    let mut s = single();
    s.request(1, owner(1, 1), m, lock_op(robust, Wait::Block), 0);
    s.request(2, owner(1, 2), m, lock_op(robust, Wait::Block), 0);
    assert_eq!(answers(&mut s), [(1, SyncResult::Ok)]);
    s.process_gone(1, 1);
    assert_eq!(answers(&mut s), [(2, SyncResult::OwnerDead)]);
    s.request(3, owner(1, 2), m, SyncOp::Consistent, 2);
    s.request(4, owner(1, 2), m, SyncOp::Unlock { kind: robust }, 2);
    s.request(5, owner(1, 3), m, lock_op(robust, Wait::Block), 2);
    assert_eq!(
        answers(&mut s),
        [
            (3, SyncResult::Ok),
            (4, SyncResult::Ok),
            (5, SyncResult::Ok)
        ]
    );

    // Dead again, and this time the next holder unlocks without repairing.
    s.process_gone(3, 3);
    s.request(6, owner(1, 4), m, lock_op(robust, Wait::Block), 3);
    s.request(7, owner(1, 5), m, lock_op(robust, Wait::Block), 3);
    s.request(8, owner(1, 4), m, SyncOp::Unlock { kind: robust }, 3);
    s.request(9, owner(1, 6), m, lock_op(robust, Wait::Try), 3);
    assert_eq!(
        answers(&mut s),
        [
            (6, SyncResult::OwnerDead),
            (7, SyncResult::NotRecoverable),
            (8, SyncResult::Ok),
            (9, SyncResult::NotRecoverable)
        ]
    );
    // pthread_mutex_init starts it afresh.
    s.request(10, owner(1, 6), m, SyncOp::Reset, 4);
    s.request(11, owner(1, 6), m, lock_op(robust, Wait::Try), 4);
    assert_eq!(answers(&mut s), [(11, SyncResult::Ok)]);
}

#[test]
fn a_non_robust_mutex_stays_locked_when_its_holder_dies() {
    let mut s = single();
    let m = object(0, 0);
    let k = MutexKind::default();
    s.request(1, owner(1, 1), m, lock_op(k, Wait::Block), 0);
    s.request(2, owner(1, 2), m, lock_op(k, Wait::Block), 0);
    s.process_gone(1, 0);
    assert_eq!(answers(&mut s), [(1, SyncResult::Ok)]);
}

/// A non-robust mutex held by a process whose *host* died (not only the process) is not
/// recoverable: its waiters, and later lockers, get `ENOTRECOVERABLE` — never a hang.
#[test]
fn a_non_robust_mutex_held_on_a_dead_host_is_not_recoverable() {
    let mut s = Service::new(NodeId(1), vec![NodeId(1), NodeId(2)]);
    let m = object(0, 0);
    let k = MutexKind::default();
    let remote = dsm_proto::sync::Waiter {
        owner: owner(2, 7),
        ticket: 1,
    };
    s.on_peer(
        NodeId(2),
        SyncMsg::Op {
            key: m,
            op: lock_op(k, Wait::Block),
            waiter: remote,
        },
        0,
    )
    .unwrap();
    s.request(2, owner(1, 2), m, lock_op(k, Wait::Block), 0);
    assert!(answers(&mut s).is_empty(), "node 2's process holds it");
    s.node_gone(NodeId(2), &[NodeId(1)], 1);
    s.request(3, owner(1, 3), m, lock_op(k, Wait::Try), 2);
    assert_eq!(
        answers(&mut s),
        [
            (2, SyncResult::NotRecoverable),
            (3, SyncResult::NotRecoverable)
        ]
    );
}

#[test]
fn a_waiter_that_went_away_gives_the_lock_back() {
    let mut s = single();
    let m = object(0, 0);
    let k = MutexKind::default();
    s.request(1, owner(1, 1), m, lock_op(k, Wait::Block), 0);
    s.request(2, owner(1, 2), m, lock_op(k, Wait::Block), 0);
    s.request(3, owner(1, 3), m, lock_op(k, Wait::Block), 0);
    s.cancel(2);
    s.request(4, owner(1, 1), m, SyncOp::Unlock { kind: k }, 0);
    assert_eq!(answers(&mut s), [(1, SyncResult::Ok), (3, SyncResult::Ok)]);
}

#[test]
fn timed_condition_wait_takes_the_mutex_back() {
    let mut s = single();
    let (m, c) = (object(0, 0), object(0, 64));
    let k = MutexKind::default();
    s.request(1, owner(1, 1), m, lock_op(k, Wait::Block), 0);
    let wait = SyncOp::CondWait {
        mutex: m,
        kind: k,
        wait: Wait::Ms(50),
    };
    s.request(2, owner(1, 1), c, wait, 0);
    s.request(3, owner(1, 2), m, lock_op(k, Wait::Block), 1);
    assert_eq!(answers(&mut s), [(1, SyncResult::Ok), (3, SyncResult::Ok)]);
    s.tick(50);
    assert!(answers(&mut s).is_empty(), "the mutex is still held");
    s.request(4, owner(1, 2), m, SyncOp::Unlock { kind: k }, 60);
    assert_eq!(answers(&mut s), [(2, SyncResult::TimedOut)]);
}

/// A request whose home died goes to the next founder that lives (here: this node, the only
/// survivor, which rebuilds the object at once); with no founder left it fails.
#[test]
fn requests_move_to_the_next_home_or_fail_when_no_founder_lives() {
    let members = vec![NodeId(1), NodeId(2)];
    let mut s = Service::new(NodeId(1), members);
    let m = object(1, 0); // homed at node 2
    let lock = lock_op(MutexKind::default(), Wait::Block);
    s.request(1, owner(1, 1), m, lock, 0);
    assert!(matches!(
        s.poll_output(),
        Some(SyncOutput::Send { to: NodeId(2), .. })
    ));
    s.node_gone(NodeId(2), &[NodeId(1)], 5);
    assert_eq!(answers(&mut s), [(1, SyncResult::Ok)]);

    // Node 3 joined a cluster founded by node 2 alone: nobody can take its objects over.
    let mut s = Service::new(NodeId(3), vec![NodeId(2)]);
    s.request(1, owner(3, 1), m, lock, 0);
    s.node_gone(NodeId(2), &[NodeId(3)], 5);
    assert_eq!(answers(&mut s), [(1, SyncResult::HomeLost)]);
}

#[test]
fn allocations_are_aligned_disjoint_and_bounded() {
    let mut s = single();
    let h = SyncKey::Heap(SegmentId::new(NodeId(1), 1));
    let alloc = |size, align| SyncOp::Alloc {
        size,
        align,
        limit: 100,
    };
    s.request(1, owner(1, 1), h, alloc(10, 8), 0);
    s.request(2, owner(1, 2), h, alloc(10, 16), 0);
    s.request(3, owner(1, 2), h, alloc(90, 8), 0);
    s.request(4, owner(1, 2), h, alloc(10, 3), 0);
    assert_eq!(
        answers(&mut s),
        [
            (1, SyncResult::Allocated(0)),
            (2, SyncResult::Allocated(16)),
            (3, SyncResult::NoSpace),
            (4, SyncResult::Invalid)
        ]
    );
}

/// A heap's top survives its home's death even when the mirror of the last allocation did not
/// reach the heir: the survivor that was answered claims it, and the heir allocates past it.
#[test]
fn a_dead_home_s_heap_never_hands_out_a_range_twice() {
    let members = vec![NodeId(1), NodeId(2), NodeId(3)];
    let (mut home, mut heir) = (
        Service::new(NodeId(1), members.clone()),
        Service::new(NodeId(2), members),
    );
    let h = SyncKey::Heap(SegmentId::new(NodeId(1), 1));
    let alloc = SyncOp::Alloc {
        size: 100,
        align: 8,
        limit: 4096,
    };
    heir.request(1, owner(2, 1), h, alloc, 0);
    let Some(SyncOutput::Send { msg, .. }) = heir.poll_output() else {
        panic!("the request goes to the home");
    };
    home.on_peer(NodeId(2), msg, 0).unwrap();
    // The home answers, and mirrors its top to its heir: only the answer arrives.
    while let Some(out) = home.poll_output() {
        if let SyncOutput::Send {
            msg: msg @ SyncMsg::Done { .. },
            ..
        } = out
        {
            heir.on_peer(NodeId(1), msg, 0).unwrap();
        }
    }
    assert_eq!(answers(&mut heir), [(1, SyncResult::Allocated(0))]);
    heir.node_gone(NodeId(1), &[NodeId(2), NodeId(3)], 1);
    let none = SyncMsg::Claims {
        dead: NodeId(1),
        holds: Vec::new(),
        tallies: Vec::new(),
        heaps: Vec::new(),
    };
    heir.on_peer(NodeId(3), none, 1).unwrap();
    heir.request(2, owner(2, 1), h, alloc, 2);
    assert_eq!(answers(&mut heir), [(2, SyncResult::Allocated(104))]);
}

/// A survivor that never sends its claims (it caught up from a snapshot taken after the death,
/// so it never applied it) holds a rebuild up for 30 s at most: then its objects are served.
#[test]
fn a_rebuild_goes_on_without_claims_that_never_come() {
    let mut heir = Service::new(NodeId(2), vec![NodeId(1), NodeId(2), NodeId(3)]);
    let m = object(0, 0); // homed at node 1
    heir.node_gone(NodeId(1), &[NodeId(2), NodeId(3)], 0);
    heir.request(
        1,
        owner(2, 1),
        m,
        lock_op(MutexKind::default(), Wait::Block),
        1,
    );
    assert!(answers(&mut heir).is_empty(), "node 3's claims are awaited");
    assert_eq!(heir.poll_timeout(), Some(30_000));
    heir.tick(29_999);
    assert!(answers(&mut heir).is_empty());
    heir.tick(30_000);
    assert_eq!(answers(&mut heir), [(1, SyncResult::Ok)]);
}

// ---- the fast path: mutexes delegated to their home node's threads ----

/// Explores `world` exhaustively and says how many states it had (more than `least`).
fn explored(world: World, what: &str, least: usize) {
    let states = explore(world);
    println!("{what}: {states} states");
    assert!(states > least, "{what}: only {states} states");
}

/// Two threads on the home node take the mutex on the fast path (loads and swaps on the word
/// interleaved with everything else), a thread on another node through the lock service; the
/// home's idle sweep may run once. Mutual exclusion after every step, nobody hangs, and at the
/// end the words agree with the service.
#[test]
fn fast_path_beside_a_remote_locker_exhaustive() {
    let m = object(0, 0);
    let programs = [
        (0, Program::Locker { m }, 2),
        (0, Program::Locker { m }, 2),
        (1, Program::Locker { m }, 1),
    ];
    explored(
        World::new(2, &programs).fast(1),
        "fast path, 2 home threads + 1 remote",
        1000,
    );
}

/// A delegated mutex under a condition homed with it: a producer on the home node signals a
/// consumer on another node and one on the home node; a locker on the home node takes the fast
/// path meanwhile. A signal's relock of a delegated mutex makes the service ask for it back.
#[test]
fn fast_path_with_a_condition_exhaustive() {
    let (m, c) = (object(0, 0), object(0, 64));
    let programs = [
        (0, Program::Producer { m, c }, 2),
        (1, Program::Consumer { m, c }, 1),
        (0, Program::Consumer { m, c }, 1),
        (0, Program::Locker { m }, 1),
    ];
    explored(
        World::new(2, &programs).fast(1),
        "fast path, condition",
        1000,
    );
}

/// A home-node process dies at any step of its fast path (or holding the mutex at the home),
/// and its daemon notices later: a hold on the word becomes its hold at the home (the mutex
/// stays locked, as on one host), and no other thread is ever granted the mutex meanwhile.
#[test]
fn fast_path_process_killed_exhaustive() {
    let m = object(0, 0);
    let programs = [
        (0, Program::Locker { m }, 2),
        (0, Program::Locker { m }, 1),
        (1, Program::Locker { m }, 1),
    ];
    explored(
        World::new(2, &programs).fast(1).killing(1),
        "fast path, a process killed",
        1000,
    );
}

/// A producer that signals after its unlock wakes a consumer whose relock finds the mutex
/// delegated to a locker on the home node: the service must ask for it back, or the consumer
/// waits for ever.
#[test]
fn fast_path_relock_after_a_late_signal_exhaustive() {
    let (m, c) = (object(0, 0), object(0, 64));
    let programs = [
        (1, Program::LateProducer { m, c }, 1),
        (1, Program::Consumer { m, c }, 1),
        (0, Program::Locker { m }, 3),
    ];
    explored(
        World::new(2, &programs).fast(0),
        "fast path, late signal",
        100,
    );
}

/// The home node, whose thread takes the mutex on the fast path, dies at any step: the heir
/// takes a delegated mutex as held by the dead host (`NotRecoverable`), never as free while a
/// dead thread may have held it.
#[test]
fn fast_path_home_dies_exhaustive() {
    let m = object(0, 0);
    let programs = [
        (0, Program::Locker { m }, 2),
        (1, Program::Locker { m }, 1),
        (2, Program::Locker { m }, 1),
    ];
    explored(
        World::new(3, &programs).fast(1).crashing(0),
        "fast path, home dies",
        1000,
    );
}

/// Mixed programs on 4 nodes with the home's threads on the fast path.
#[test]
fn fast_path_random_schedules() {
    sweep(300, || {
        let (m, c) = (object(0, 0), object(0, 64));
        let mut programs = Vec::new();
        for n in 0..4 {
            programs.push((n, Program::Locker { m }, 4));
        }
        programs.push((0, Program::Locker { m }, 6));
        programs.push((0, Program::Producer { m, c }, 6));
        for n in 0..3 {
            programs.push((n, Program::Consumer { m, c }, 2));
        }
        World::new(4, &programs).fast(3)
    });
}
