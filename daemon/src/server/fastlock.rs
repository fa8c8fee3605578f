//! The event loop's side of the mutex fast path ([`dsm_core::fastlock`], words in
//! [`dsm_proto::fastlock`]): the segments' lock tables, shared with local processes that may
//! write them, and the calls that keep the lock service right about delegated mutexes.

use std::collections::BTreeMap;

use dsm_core::fastlock::Env;
use dsm_core::{FastPath, Words};
use dsm_proto::client::{Reply, ShmError};
use dsm_proto::fastlock as fl;
use dsm_proto::sync::{MutexKind, Owner, SyncKey, SyncOp};
use dsm_proto::{SegmentId, SessionId};
use log::warn;
use mio::Token;

use super::Server;
use crate::page_store::LockTable;

/// The segments' lock tables (made when a process first asks for one).
#[derive(Debug, Default)]
pub(super) struct Tables(BTreeMap<SegmentId, LockTable>);

impl Words for Tables {
    fn has_table(&self, segment: SegmentId) -> bool {
        self.0.contains_key(&segment)
    }

    fn tag(&self, segment: SegmentId, slot: usize) -> u64 {
        self.0.get(&segment).map_or(0, |t| t.tag(slot))
    }

    fn set_tag(&mut self, segment: SegmentId, slot: usize, tag: u64) {
        if let Some(t) = self.0.get(&segment) {
            t.set_tag(slot, tag);
        }
    }

    fn word(&self, segment: SegmentId, slot: usize) -> u64 {
        self.0.get(&segment).map_or(fl::DAEMON, |t| t.word(slot))
    }

    fn swap(&mut self, segment: SegmentId, slot: usize, old: u64, new: u64) -> bool {
        self.0
            .get(&segment)
            .is_some_and(|t| t.swap_word(slot, old, new).is_ok())
    }

    fn exchange(&mut self, segment: SegmentId, slot: usize, new: u64) -> u64 {
        self.0
            .get(&segment)
            .map_or(fl::DAEMON, |t| t.exchange_word(slot, new))
    }
}

/// The fast path's state and the tables its words are in.
#[derive(Debug, Default)]
pub(super) struct FastLocks {
    path: FastPath,
    tables: Tables,
}

impl FastLocks {
    /// When the idle sweep is due (ms since the daemon started).
    pub(super) fn poll_timeout(&self) -> Option<u64> {
        self.path.poll_timeout()
    }
}

impl Server {
    /// `Request::Locks`: the segment's lock table (made on first demand) for a process that
    /// may write the segment (checked with every request that touches a segment), on the node
    /// its mutexes are homed at. `None`: answered here, with the table's memfd.
    pub(super) fn share_lock_table(&mut self, token: Token, segment: SegmentId) -> Option<Reply> {
        let Some(local) = self.store.get(segment) else {
            return Some(Reply::Failed(ShmError::Gone));
        };
        // Only the home delegates: elsewhere a table would cost a memfd and every lock two
        // useless loads. (The home of a segment's objects is the same for all of them.)
        let any_object = SyncKey::Object { segment, offset: 0 };
        if !self.sync.is_home(any_object) {
            return Some(Reply::Failed(ShmError::NotFound));
        }
        let table = match self.fast.tables.0.entry(segment) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                match LockTable::create(&local.meta.name) {
                    Ok(t) => e.insert(t),
                    Err(e) => {
                        warn!("cannot make a lock table: {e}");
                        return Some(Reply::Failed(ShmError::NoMemory));
                    }
                }
            }
        };
        match table.share() {
            Ok(fd) => {
                let len = fl::TABLE_BYTES as u64;
                self.send(token, &Reply::Table { len }, Some(fd));
                None
            }
            Err(e) => {
                warn!("cannot share a lock table: {e}");
                Some(Reply::Failed(ShmError::NoMemory))
            }
        }
    }

    /// Runs `f` on the fast path with this node's lock service, tables, sessions and time.
    fn with_fast<T>(&mut self, f: impl FnOnce(&mut FastPath, &mut Env<'_, Tables>) -> T) -> T {
        let now_ms = self.now_ms();
        // Who a word's session bits name among this node's live processes.
        let live = &self.sessions;
        let sessions = |bits| {
            live.keys()
                .find(|s| fl::session_bits(s.0) == bits)
                .map(|s| s.0)
        };
        let mut env = Env {
            sync: &mut self.sync,
            words: &mut self.fast.tables,
            sessions: &sessions,
            now_ms,
        };
        let strangers = self.fast.path.strangers();
        let result = f(&mut self.fast.path, &mut env);
        if self.fast.path.strangers() > strangers {
            limited_warn!(
                self.limit,
                "lock word",
                "a lock table's word names no process of this node (a process wrote the table): \
                 its mutex stays locked, as by a process that ended"
            );
        }
        result
    }

    /// A local thread's lock that its fast path could not take: granted at once by delegating
    /// the mutex, if it can be ([`FastPath::grant`]).
    pub(super) fn grant_by_delegation(
        &mut self,
        key: SyncKey,
        kind: MutexKind,
        owner: Owner,
    ) -> bool {
        self.with_fast(|path, env| path.grant(env, key, kind, owner))
    }

    /// Before the lock service is given `op` on `key` ([`FastPath::before`]).
    pub(super) fn recall_named(&mut self, key: SyncKey, op: SyncOp, requester: Option<Owner>) {
        self.with_fast(|path, env| path.before(env, key, op, requester));
    }

    /// The lock service asks for the delegated mutex `key` back: a thread waits for it.
    pub(super) fn recall_wanted(&mut self, key: SyncKey) {
        self.with_fast(|path, env| path.recall(env, key, true));
    }

    /// Before the lock service hears that `session` ended ([`FastPath::process_gone`]).
    pub(super) fn recall_session(&mut self, session: SessionId) {
        self.with_fast(|path, env| path.process_gone(env, session.0));
    }

    /// Every delegated mutex is recalled (the cluster's homes may change).
    pub(super) fn recall_all(&mut self) {
        self.with_fast(|path, env| path.recall_all(env));
    }

    /// The segment was removed cluster-wide: its lock table and delegations go.
    pub(super) fn forget_lock_table(&mut self, segment: SegmentId) {
        self.fast.path.segment_removed(segment);
        self.fast.tables.0.remove(&segment);
    }

    /// Recalls delegated mutexes left unused ([`FastPath::sweep`]).
    pub(super) fn sweep_fast_locks(&mut self) {
        let now_ms = self.now_ms();
        if self.fast.path.poll_timeout().is_none_or(|due| now_ms < due) {
            return;
        }
        self.with_fast(|path, env| path.sweep(env));
        self.drain_sync();
    }

    /// The next session id: its low bits (what a lock word holds) usable and no live
    /// session's.
    pub(super) fn new_session_id(&mut self) -> SessionId {
        loop {
            let id = self.next_session;
            self.next_session += 1;
            let bits = fl::session_bits(id);
            if fl::session_usable(id)
                && !self.sessions.keys().any(|s| fl::session_bits(s.0) == bits)
            {
                return SessionId(id);
            }
        }
    }
}
