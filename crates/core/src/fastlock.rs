//! The mutex fast path's protocol at the home node: which mutexes are delegated to this
//! node's processes, and taking them back. The lock words themselves (`dsm_proto::fastlock`)
//! live in memory the processes share with the daemon; they are reached through [`Words`], so
//! the daemon passes its lock tables and a model check passes plain memory whose swaps it
//! interleaves with the processes'.
//!
//! ```text
//!                 a local thread's lock, the mutex idle        a thread waits for it, a peer
//!                 here, not contended for HOLDOFF_MS           or a local thread asks the
//!   [service] ──────────────────────────────────────────▶ [delegated] ──────────────────────▶
//!       ▲          (granted at once: the word names the        │ processes swap the word:
//!       │           thread, the service names the delegate)    │ free ⇄ held, no request
//!       └──────────────────────────────────────────────────────┘
//!          recall: the word becomes the daemon's in one swap; its holder, if any, becomes
//!          the service's holder; a free one is unlocked (handed to a waiter, if any)
//! ```
//!
//! The rule: a delegated mutex is recalled before the lock service is given any input that
//! names it ([`FastPath::before`], [`FastPath::process_gone`], [`FastPath::recall_all`]) and
//! whenever the service finds a thread waiting for it ([`crate::SyncOutput::Recall`]). So the
//! service never answers about a mutex whose true holder only the word knows.

use std::collections::BTreeMap;

use dsm_proto::fastlock as fl;
use dsm_proto::sync::{MutexKind, Owner, SyncKey, SyncOp};
use dsm_proto::SegmentId;

use crate::sync::{Service, SyncInput};

/// The lock words of each segment, as the daemon shares them with its processes.
pub trait Words {
    /// Whether `segment` has a lock table (a process asked for it).
    fn has_table(&self, segment: SegmentId) -> bool;
    /// The tag of `slot` (0 if there is no table).
    fn tag(&self, segment: SegmentId, slot: usize) -> u64;
    /// Names the mutex of `slot`.
    fn set_tag(&mut self, segment: SegmentId, slot: usize, tag: u64);
    /// The word of `slot` (the daemon's if there is no table).
    fn word(&self, segment: SegmentId, slot: usize) -> u64;
    /// Swaps the word of `slot` from `old` to `new`; `false` if it was not `old`.
    fn swap(&mut self, segment: SegmentId, slot: usize, old: u64, new: u64) -> bool;
    /// Writes `new` into the word of `slot` and returns what it was, in one atomic step.
    fn exchange(&mut self, segment: SegmentId, slot: usize, new: u64) -> u64;
}

/// Who a word's session bits name: the full session id of a live local process.
pub type Sessions<'a> = &'a dyn Fn(u64) -> Option<u64>;

/// What each call works on: the lock service of this node, the words, who their session bits
/// name, and the time.
pub struct Env<'a, W: Words> {
    /// The node's lock service.
    pub sync: &'a mut Service,
    /// The lock words.
    pub words: &'a mut W,
    /// Who a word's session bits name.
    pub sessions: Sessions<'a>,
    /// Now (ms).
    pub now_ms: u64,
}

/// A delegated mutex unused for this long is recalled: the heir of a home that dies takes a
/// delegated mutex as held by the dead host, so only recently used ones should be.
pub const IDLE_MS: u64 = 1_000;

/// A mutex recalled because another thread wanted it is not delegated again for this long:
/// while threads contend for it, every acquisition goes through the lock service, which hands
/// it on in FIFO order (delegated between their requests, this node's threads could take it
/// again and again before another node's request arrives). Contended again within twice its
/// hold-off, the hold-off doubles, up to [`MAX_HOLDOFF_MS`]: a mutex contended for good is
/// delegated once a minute at most (each time, this node's threads may take it a few times more
/// before the next request from elsewhere arrives).
pub const HOLDOFF_MS: u64 = 1_000;

/// The longest hold-off.
pub const MAX_HOLDOFF_MS: u64 = 64_000;

/// Most mutexes remembered as contended (more: all are forgotten).
const CONTENDED_KEPT: usize = 65_536;

/// The home's side of the fast path.
#[derive(Debug, Clone, Default)]
pub struct FastPath {
    /// Each delegated mutex's slot, and its word when the idle sweep last looked.
    delegated: BTreeMap<SyncKey, (usize, u64)>,
    /// Which mutex each slot was last handed to.
    slots: BTreeMap<(SegmentId, usize), SyncKey>,
    /// Mutexes recalled because a thread wanted them: when (ms), and for how long they are
    /// not delegated again.
    contended: BTreeMap<SyncKey, (u64, u64)>,
    next_sweep_ms: Option<u64>,
    /// Words recalled that named no live local process (a process wrote the table by hand).
    strangers: u64,
}

/// The keys `op` on `key` names (a condition wait names its mutex too).
fn named(key: SyncKey, op: SyncOp) -> [Option<SyncKey>; 2] {
    match op {
        SyncOp::CondWait { mutex, .. } => [Some(key), Some(mutex)],
        _ => [Some(key), None],
    }
}

/// Robust mutexes are never delegated: their holders must be known to pass them on. A
/// recursive one is held once for its thread (the thread counts the rest).
fn delegable(kind: MutexKind) -> bool {
    !kind.robust
}

impl FastPath {
    /// Nothing delegated.
    pub fn new() -> FastPath {
        FastPath::default()
    }

    /// Mutexes delegated now.
    pub fn delegated(&self) -> usize {
        self.delegated.len()
    }

    /// Whether `key` is delegated now.
    pub fn is_delegated(&self, key: SyncKey) -> bool {
        self.delegated.contains_key(&key)
    }

    /// Words recalled so far that named no live local process (the driver logs them).
    pub fn strangers(&self) -> u64 {
        self.strangers
    }

    /// When [`FastPath::sweep`] is due (ms).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.next_sweep_ms
    }

    /// A local thread, `owner`, asks to lock the mutex `key` (its own fast path failed). If the
    /// mutex is homed here, idle, not contended lately and its slot is free, it is delegated
    /// and granted at once: the word names `owner`, so its unlock and later locks take the fast
    /// path. `true`: granted (answer the thread `Ok`; the service is not asked).
    pub fn grant<W: Words>(
        &mut self,
        env: &mut Env<'_, W>,
        key: SyncKey,
        kind: MutexKind,
        owner: Owner,
    ) -> bool {
        let (sync, words, now_ms) = (&mut *env.sync, &mut *env.words, env.now_ms);
        let SyncKey::Object { segment, offset } = key else {
            return false;
        };
        if self.delegated.contains_key(&key) || !delegable(kind) || !words.has_table(segment) {
            return false;
        }
        if let Some(&(at, holdoff)) = self.contended.get(&key) {
            if now_ms < at.saturating_add(holdoff) {
                return false;
            }
        }
        let slot = fl::slot(offset);
        if let Some(other) = self.slots.get(&(segment, slot)) {
            if *other != key && self.delegated.contains_key(other) {
                return false; // the slot is another mutex's
            }
        }
        // The word must be the daemon's before its tag changes (a fresh slot's tag is 0, which
        // no mutex has, and its word 0).
        let w = words.word(segment, slot);
        let daemons = fl::holder_of(w) == fl::DAEMON
            || (words.tag(segment, slot) == 0
                && words.swap(segment, slot, w, fl::with_holder(w, fl::DAEMON)));
        if !daemons || !sync.delegate(key, kind) {
            return false;
        }
        let w = words.word(segment, slot);
        words.set_tag(segment, slot, fl::tag(offset));
        let handed = fl::with_holder(fl::reissued(w), fl::holder(owner.session, owner.tid));
        if !words.swap(segment, slot, w, handed) {
            // Nobody swaps a word the daemon keeps; a process that wrote it anyway loses the
            // fast path of this mutex.
            sync.handle(SyncInput::Recalled {
                key,
                holder: None,
                now_ms,
            });
            return false;
        }
        self.slots.insert((segment, slot), key);
        self.delegated.insert(key, (slot, handed));
        self.next_sweep_ms
            .get_or_insert(now_ms.saturating_add(IDLE_MS));
        true
    }

    /// Before the lock service is given `op` on `key` from `requester` (a local thread;
    /// `None`: a peer): the delegated mutexes it names are recalled. One another thread held,
    /// or a peer asks for, is contended (not delegated again for [`HOLDOFF_MS`]).
    pub fn before<W: Words>(
        &mut self,
        env: &mut Env<'_, W>,
        key: SyncKey,
        op: SyncOp,
        requester: Option<Owner>,
    ) {
        for k in named(key, op).into_iter().flatten() {
            if self.delegated.contains_key(&k) {
                let holder = self.recall(env, k, false);
                if requester.is_none() || holder.is_some_and(|h| Some(h) != requester) {
                    self.note_contended(k, env.now_ms);
                }
            }
        }
    }

    fn note_contended(&mut self, key: SyncKey, now_ms: u64) {
        if self.contended.len() >= CONTENDED_KEPT {
            self.contended.clear();
        }
        let holdoff = match self.contended.get(&key) {
            Some(&(at, holdoff)) if now_ms < at.saturating_add(2 * holdoff) => {
                (2 * holdoff).min(MAX_HOLDOFF_MS)
            }
            _ => HOLDOFF_MS,
        };
        self.contended.insert(key, (now_ms, holdoff));
    }

    /// How long the mutex `key` is not delegated again after its last contention (ms).
    pub fn holdoff(&self, key: SyncKey) -> Option<u64> {
        self.contended.get(&key).map(|&(_, h)| h)
    }

    /// Recalls the delegated mutex `key` (`contended`: because a thread waits for it) and
    /// tells the lock service who held it, which this returns. The caller drains the
    /// service's outputs.
    pub fn recall<W: Words>(
        &mut self,
        env: &mut Env<'_, W>,
        key: SyncKey,
        contended: bool,
    ) -> Option<Owner> {
        let (sync, words, now_ms) = (&mut *env.sync, &mut *env.words, env.now_ms);
        let (slot, _) = self.delegated.remove(&key)?;
        if contended {
            self.note_contended(key, now_ms);
        }
        let SyncKey::Object { segment, .. } = key else {
            return None;
        };
        // One exchange, not a compare-and-swap loop: a process that keeps writing the word
        // cannot keep the daemon here. (Its generation is the daemon's to change; the use
        // count a thread may have raised since the load does not matter in a daemon's word.)
        let w = words.word(segment, slot);
        let h = fl::holder_of(words.exchange(segment, slot, fl::with_holder(w, fl::DAEMON)));
        let held = (h != fl::FREE && h != fl::DAEMON).then_some(h);
        let holder = held.map(|h| {
            let (bits, tid) = fl::split(h);
            let session = (env.sessions)(bits).unwrap_or_else(|| {
                // A word naming no live process (written by hand): held as by one that ended.
                self.strangers += 1;
                u64::MAX - 1
            });
            Owner {
                node: sync.delegate_owner().node,
                session,
                tid,
            }
        });
        sync.handle(SyncInput::Recalled {
            key,
            holder,
            now_ms,
        });
        holder
    }

    /// Before the lock service hears that local process `session` ended: what its threads
    /// held on the fast path becomes theirs in the service (which then does what it does for
    /// any holder that ends).
    pub fn process_gone<W: Words>(&mut self, env: &mut Env<'_, W>, session: u64) {
        let bits = fl::session_bits(session);
        let held: Vec<SyncKey> = self
            .delegated
            .iter()
            .filter(|(key, (slot, _))| {
                let SyncKey::Object { segment, .. } = key else {
                    return false;
                };
                let h = fl::holder_of(env.words.word(*segment, *slot));
                h != fl::FREE && h != fl::DAEMON && fl::split(h).0 == bits
            })
            .map(|(k, _)| *k)
            .collect();
        for key in held {
            self.recall(env, key, false);
        }
    }

    /// Every delegated mutex is recalled (the cluster's homes may change).
    pub fn recall_all<W: Words>(&mut self, env: &mut Env<'_, W>) {
        let all: Vec<SyncKey> = self.delegated.keys().copied().collect();
        for key in all {
            self.recall(env, key, false);
        }
    }

    /// The segment was removed cluster-wide (the lock service forgets its objects).
    pub fn segment_removed(&mut self, segment: SegmentId) {
        let other = |k: &SyncKey| !matches!(k, SyncKey::Object { segment: s, .. } if *s == segment);
        self.delegated.retain(|k, _| other(k));
        self.contended.retain(|k, _| other(k));
        self.slots.retain(|(s, _), _| *s != segment);
    }

    /// Recalls delegated mutexes that stayed free and unused since the last sweep.
    pub fn sweep<W: Words>(&mut self, env: &mut Env<'_, W>) {
        let now_ms = env.now_ms;
        if self.next_sweep_ms.is_none_or(|due| now_ms < due) {
            return;
        }
        let mut idle = Vec::new();
        for (key, (slot, seen)) in self.delegated.iter_mut() {
            let SyncKey::Object { segment, .. } = key else {
                continue;
            };
            let w = env.words.word(*segment, *slot);
            if w == *seen && fl::holder_of(w) == fl::FREE {
                idle.push(*key);
            }
            *seen = w;
        }
        for key in idle {
            self.recall(env, key, false);
        }
        self.next_sweep_ms = (!self.delegated.is_empty()).then(|| now_ms.saturating_add(IDLE_MS));
    }
}

/// Lock words in ordinary memory, every slot of every segment present: for a model or a test
/// that drives [`FastPath`] and plays the processes' loads and swaps as steps of its own.
#[derive(Debug, Clone, Default)]
pub struct PlainWords(BTreeMap<(SegmentId, usize), (u64, u64)>);

impl PlainWords {
    /// Every slot written so far: (segment, slot) → (tag, word).
    pub fn slots(&self) -> impl Iterator<Item = (SegmentId, usize, u64, u64)> + '_ {
        self.0
            .iter()
            .map(|(&(segment, slot), &(tag, word))| (segment, slot, tag, word))
    }
}

impl Words for PlainWords {
    fn has_table(&self, _: SegmentId) -> bool {
        true
    }
    fn tag(&self, segment: SegmentId, slot: usize) -> u64 {
        self.0.get(&(segment, slot)).map_or(0, |c| c.0)
    }
    fn set_tag(&mut self, segment: SegmentId, slot: usize, tag: u64) {
        self.0.entry((segment, slot)).or_default().0 = tag;
    }
    fn word(&self, segment: SegmentId, slot: usize) -> u64 {
        self.0.get(&(segment, slot)).map_or(0, |c| c.1)
    }
    fn swap(&mut self, segment: SegmentId, slot: usize, old: u64, new: u64) -> bool {
        let cell = self.0.entry((segment, slot)).or_default();
        let swapped = cell.1 == old;
        if swapped {
            cell.1 = new;
        }
        swapped
    }
    fn exchange(&mut self, segment: SegmentId, slot: usize, new: u64) -> u64 {
        std::mem::replace(&mut self.0.entry((segment, slot)).or_default().1, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SyncOutput;
    use dsm_proto::sync::{SyncResult, Wait};
    use dsm_proto::NodeId;

    fn segment() -> SegmentId {
        SegmentId::new(NodeId(1), 1)
    }

    /// The home (node 1) of `nodes` nodes: its lock service, words and fast path.
    struct Home {
        sync: Service,
        mem: PlainWords,
        path: FastPath,
    }

    impl Home {
        fn new(nodes: u32) -> Home {
            Home {
                sync: Service::new(NodeId(1), (1..=nodes).map(NodeId).collect()),
                mem: PlainWords::default(),
                path: FastPath::new(),
            }
        }

        fn env(&mut self) -> (&mut FastPath, Env<'_, PlainWords>) {
            let env = Env {
                sync: &mut self.sync,
                words: &mut self.mem,
                sessions: &known,
                now_ms: 0,
            };
            (&mut self.path, env)
        }
    }

    fn mutex(offset: u64) -> SyncKey {
        SyncKey::Object {
            segment: segment(),
            offset,
        }
    }

    fn thread(session: u64) -> Owner {
        Owner {
            node: NodeId(1),
            session,
            tid: 42,
        }
    }

    fn known(bits: u64) -> Option<u64> {
        Some(bits)
    }

    fn lock(sync: &mut Service, ticket: u64, who: Owner, key: SyncKey) -> Vec<SyncOutput> {
        let op = SyncOp::Lock {
            kind: MutexKind::default(),
            wait: Wait::Try,
            after_timeout: false,
        };
        sync.request(ticket, who, key, op, 0);
        std::iter::from_fn(|| sync.poll_output()).collect()
    }

    /// Swaps the word as the shim's fast lock does.
    fn fast_lock(mem: &mut PlainWords, key: SyncKey, who: Owner) -> bool {
        let SyncKey::Object { segment, offset } = key else {
            unreachable!()
        };
        let slot = fl::slot(offset);
        let w = mem.word(segment, slot);
        fl::holder_of(w) == fl::FREE
            && mem.tag(segment, slot) == fl::tag(offset)
            && mem.swap(
                segment,
                slot,
                w,
                fl::with_holder(w, fl::holder(who.session, who.tid)),
            )
    }

    #[test]
    fn a_grant_delegates_an_idle_mutex_and_a_recall_hands_its_holder_to_the_service() {
        let mut home = Home::new(2);
        let m = mutex(8);
        let (path, mut env) = home.env();
        assert!(path.grant(&mut env, m, MutexKind::default(), thread(1)));
        assert!(path.is_delegated(m));
        // A robust mutex is never delegated.
        let robust = MutexKind {
            robust: true,
            ..MutexKind::default()
        };
        assert!(!path.grant(&mut env, mutex(48), robust, thread(1)));
        // Another thread's swap fails while thread 1 holds it; its request recalls the mutex,
        // thread 1 is the service's holder and the trylock is busy.
        assert!(!fast_lock(env.words, m, thread(2)));
        path.before(
            &mut env,
            m,
            SyncOp::Unlock {
                kind: MutexKind::default(),
            },
            Some(thread(2)),
        );
        assert!(!path.is_delegated(m));
        let out = lock(env.sync, 5, thread(2), m);
        assert_eq!(
            out[0],
            SyncOutput::Answer {
                ticket: 5,
                result: SyncResult::Busy
            }
        );
        // The heir's mirror names thread 1 now.
        assert!(
            matches!(
                &out[1],
                SyncOutput::Send {
                    msg: dsm_proto::sync::SyncMsg::Mirror { .. },
                    ..
                }
            ),
            "{out:?}"
        );
        // Contended: not delegated again until HOLDOFF_MS passed.
        env.sync.request(
            6,
            thread(1),
            m,
            SyncOp::Unlock {
                kind: MutexKind::default(),
            },
            0,
        );
        assert!(!path.grant(&mut env, m, MutexKind::default(), thread(1)));
        env.now_ms = HOLDOFF_MS;
        assert!(path.grant(&mut env, m, MutexKind::default(), thread(1)));
    }

    #[test]
    fn a_waiter_makes_the_service_ask_back_and_a_free_word_hands_the_mutex_on() {
        let mut home = Home::new(2);
        let m = mutex(8);
        let (path, mut env) = home.env();
        assert!(path.grant(&mut env, m, MutexKind::default(), thread(1)));
        // Thread 1 unlocks on the word; a thread of node 2 waits at the home (its request came
        // in without being recalled for: the service queues it behind the delegate and asks).
        let SyncKey::Object { segment, offset } = m else {
            unreachable!()
        };
        let slot = fl::slot(offset);
        let w = env.words.word(segment, slot);
        assert!(env.words.swap(segment, slot, w, fl::freed(w)));
        let remote = Owner {
            node: NodeId(2),
            session: 9,
            tid: 1,
        };
        let op = SyncOp::Lock {
            kind: MutexKind::default(),
            wait: Wait::Block,
            after_timeout: false,
        };
        let waiter = dsm_proto::sync::Waiter {
            owner: remote,
            ticket: 77,
        };
        env.sync
            .on_peer(
                NodeId(2),
                dsm_proto::sync::SyncMsg::Op { key: m, op, waiter },
                0,
            )
            .unwrap();
        let out: Vec<SyncOutput> = std::iter::from_fn(|| env.sync.poll_output()).collect();
        assert_eq!(out[0], SyncOutput::Recall { key: m });
        // The heir's mirror says the mutex is held on this node (by its processes): were this
        // node to die now, the heir would not take it as free.
        let delegate = env.sync.delegate_owner();
        assert!(
            matches!(
                &out[1],
                SyncOutput::Send {
                    msg: dsm_proto::sync::SyncMsg::Mirror {
                        state: Some(dsm_proto::sync::Mirror::Mutex {
                            holder: Some((h, 1)),
                            ..
                        }),
                        ..
                    },
                    ..
                } if *h == delegate
            ),
            "{out:?}"
        );
        assert_eq!(path.recall(&mut env, m, true), None);
        let out: Vec<SyncOutput> = std::iter::from_fn(|| env.sync.poll_output()).collect();
        assert!(
            matches!(
                &out[0],
                SyncOutput::Send {
                    to: NodeId(2),
                    msg: dsm_proto::sync::SyncMsg::Done {
                        ticket: 77,
                        result: SyncResult::Ok
                    },
                }
            ),
            "{out:?}"
        );
        assert_eq!(fl::holder_of(env.words.word(segment, slot)), fl::DAEMON);
    }

    #[test]
    fn a_process_that_ends_holding_on_the_word_keeps_the_mutex_locked() {
        let mut home = Home::new(1);
        let m = mutex(8);
        let (path, mut env) = home.env();
        assert!(path.grant(&mut env, m, MutexKind::default(), thread(3)));
        path.process_gone(&mut env, 3);
        env.sync.process_gone(3, 0);
        let out = lock(env.sync, 5, thread(4), m);
        assert_eq!(
            out,
            vec![SyncOutput::Answer {
                ticket: 5,
                result: SyncResult::Busy
            }]
        );
    }

    #[test]
    fn an_idle_delegated_mutex_is_recalled_by_the_second_sweep() {
        let mut home = Home::new(1);
        let m = mutex(8);
        let (path, mut env) = home.env();
        assert!(path.grant(&mut env, m, MutexKind::default(), thread(1)));
        // Held at the first sweep: kept.
        env.now_ms = IDLE_MS;
        path.sweep(&mut env);
        assert!(path.is_delegated(m));
        // Freed and unused since: recalled at the next, and the service holds nothing.
        let SyncKey::Object { segment, offset } = m else {
            unreachable!()
        };
        let slot = fl::slot(offset);
        let w = env.words.word(segment, slot);
        assert!(env.words.swap(segment, slot, w, fl::freed(w)));
        env.now_ms = 2 * IDLE_MS;
        path.sweep(&mut env);
        assert!(path.is_delegated(m), "used since the last sweep");
        env.now_ms = 3 * IDLE_MS;
        path.sweep(&mut env);
        assert!(!path.is_delegated(m));
        assert_eq!(path.poll_timeout(), None);
        assert!(env.sync.views().is_empty(), "{:?}", env.sync.views());
    }

    #[test]
    fn a_recursive_mutex_recalled_is_held_once_and_counts_on_in_the_service() {
        let mut home = Home::new(1);
        let m = mutex(8);
        let kind = MutexKind {
            recursive: true,
            ..MutexKind::default()
        };
        let (path, mut env) = home.env();
        assert!(path.grant(&mut env, m, kind, thread(1)));
        // Thread 1 locked it twice more on its own; another thread's trylock recalls it: held
        // once by thread 1 in the service.
        path.before(&mut env, m, SyncOp::Unlock { kind }, Some(thread(2)));
        let op = |wait| SyncOp::Lock {
            kind,
            wait,
            after_timeout: false,
        };
        let answers = |sync: &mut Service| -> Vec<SyncResult> {
            std::iter::from_fn(|| sync.poll_output())
                .filter_map(|o| match o {
                    SyncOutput::Answer { result, .. } => Some(result),
                    _ => None,
                })
                .collect()
        };
        env.sync.request(5, thread(2), m, op(Wait::Try), 0);
        assert_eq!(answers(env.sync), vec![SyncResult::Busy]);
        // Its two inner unlocks were its own; the last goes to the service and frees it.
        env.sync
            .request(6, thread(1), m, SyncOp::Unlock { kind }, 0);
        assert_eq!(answers(env.sync), vec![SyncResult::Ok]);
        env.sync.request(7, thread(2), m, op(Wait::Try), 0);
        assert_eq!(answers(env.sync), vec![SyncResult::Ok]);
    }

    #[test]
    fn a_mutex_contended_again_soon_waits_twice_as_long() {
        let mut home = Home::new(2);
        let m = mutex(8);
        let (path, mut env) = home.env();
        let unlock = SyncOp::Unlock {
            kind: MutexKind::default(),
        };
        let mut t = 0;
        for want in [HOLDOFF_MS, 2 * HOLDOFF_MS, 4 * HOLDOFF_MS] {
            env.now_ms = t;
            assert!(
                path.grant(&mut env, m, MutexKind::default(), thread(1)),
                "at {t}"
            );
            // Another node wants it (a peer's request: no local requester): recalled, thread 1
            // holds it at the home now, and it is held off.
            path.before(&mut env, m, unlock, None);
            assert_eq!(path.holdoff(m), Some(want));
            env.sync.request(1, thread(1), m, unlock, t);
            assert!(!path.grant(&mut env, m, MutexKind::default(), thread(1)));
            t += want;
        }
        // Not contended for twice its hold-off: back to the shortest.
        env.now_ms = t + 8 * HOLDOFF_MS;
        assert!(path.grant(&mut env, m, MutexKind::default(), thread(1)));
        path.before(&mut env, m, unlock, None);
        assert_eq!(path.holdoff(m), Some(HOLDOFF_MS));
    }
}
