//! The event loop's side of the lock service ([`dsm_core::sync`]): requests from channels in,
//! answers to channels and messages to peers out.

use std::time::Duration;

use dsm_core::{SyncInput, SyncOutput};
use dsm_proto::client::{NodeCounters, Reply};
use dsm_proto::ctl::LockStatus;
use dsm_proto::peer::PeerFrame;
use dsm_proto::sync::{Owner, SyncKey, SyncMsg, SyncOp, SyncResult};
use dsm_proto::{NodeId, SessionId};
use log::{debug, warn};
use mio::Token;

use super::Server;
use crate::page_store::Page;

impl Server {
    /// A thread asks for `op` on `key`; if the op is answered, its channel waits for the answer.
    pub(super) fn sync_request(
        &mut self,
        token: Token,
        session: SessionId,
        tid: u32,
        key: SyncKey,
        op: SyncOp,
    ) -> Result<(), String> {
        if let SyncOp::Abandon = op {
            return Err("sent a daemon-only lock request".into());
        }
        debug!(
            "sync: session {} thread {tid}: {op:?} on {key:?}",
            session.0
        );
        if let Some(s) = self.sessions.get_mut(&session) {
            s.used_sync = true;
        }
        let owner = Owner {
            node: self.config.node_id,
            session: session.0,
            tid,
        };
        if let SyncOp::Lock {
            kind,
            after_timeout: false,
            ..
        } = op
        {
            if self.grant_by_delegation(key, kind, owner) {
                self.send(token, &Reply::Synced(SyncResult::Ok), None);
                return Ok(());
            }
        }
        let ticket = self.next_ticket;
        self.next_ticket = self.next_ticket.wrapping_add(2);
        if op.answered() {
            self.tickets.insert(ticket, token);
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.busy = true;
                conn.sync_ticket = Some(ticket);
            }
        }
        self.recall_named(key, op, Some(owner));
        let now_ms = self.now_ms();
        self.sync.handle(SyncInput::Request {
            ticket,
            owner,
            key,
            op,
            now_ms,
        });
        self.drain_sync();
        Ok(())
    }

    pub(super) fn sync_from_peer(&mut self, from: NodeId, msg: SyncMsg) {
        debug!("sync from {from}: {msg:?}");
        if let SyncMsg::Op { key, op, .. } = msg {
            self.recall_named(key, op, None);
        }
        let now_ms = self.now_ms();
        self.sync.handle(SyncInput::Peer { from, msg, now_ms });
        self.drain_sync();
    }

    /// A channel closed while its request `ticket` was under way: the answer goes to nobody
    /// (and what it would have granted is given back).
    pub(super) fn sync_cancel(&mut self, ticket: u64) {
        self.tickets.remove(&ticket);
        self.sync.handle(SyncInput::Cancel { ticket });
    }

    pub(super) fn sync_process_gone(&mut self, session: SessionId) {
        self.recall_session(session);
        let now_ms = self.now_ms();
        self.sync.handle(SyncInput::ProcessGone {
            session: session.0,
            now_ms,
        });
        self.drain_sync();
    }

    /// A peer's daemon died or restarted.
    /// `survivors`: the members alive just after the death, as the log says.
    pub(super) fn node_gone(&mut self, node: NodeId, survivors: &[NodeId]) {
        self.recall_all();
        let now_ms = self.now_ms();
        self.sync.handle(SyncInput::NodeGone {
            node,
            survivors: survivors.to_vec(),
            now_ms,
        });
        self.drain_sync();
    }

    /// `node`'s link has been down for the fault timeout: waits homed there fail.
    pub(super) fn home_unreachable(&mut self, node: NodeId) {
        let now_ms = self.now_ms();
        self.sync
            .handle(SyncInput::HomeUnreachable { node, now_ms });
        self.drain_sync();
    }

    /// How long the event loop may sleep before a timed wait is due.
    pub(super) fn until_sync_deadline(&self) -> Duration {
        match self.sync.poll_timeout() {
            Some(due) => Duration::from_millis(due.saturating_sub(self.now_ms())),
            None => Duration::MAX,
        }
    }

    pub(super) fn sync_tick(&mut self) {
        self.sweep_fast_locks();
        let now_ms = self.now_ms();
        if self.sync.poll_timeout().is_some_and(|d| d <= now_ms) {
            self.sync.handle(SyncInput::Tick { now_ms });
            self.drain_sync();
        }
    }

    pub(super) fn drain_sync(&mut self) {
        self.peers.begin_batch();
        while let Some(output) = self.sync.poll_output() {
            match output {
                SyncOutput::Answer { ticket, result } => {
                    if let Some(token) = self.tickets.remove(&ticket) {
                        self.answer_waiting(token, &Reply::Synced(result));
                    }
                }
                SyncOutput::Send { to, msg } => {
                    if self.deliverable(to) {
                        self.peers
                            .send(self.poll.registry(), to, &PeerFrame::Sync(msg));
                    }
                }
                // Taken back at once: its outputs join this queue.
                SyncOutput::Recall { key } => self.recall_wanted(key),
                SyncOutput::Violation { from, what } => limited_warn!(
                    self.limit,
                    "lock service violation",
                    "{from} sent a lock request this node cannot serve: {what}"
                ),
            }
        }
        // Lock-service messages carry no page, so nothing is ever resolved.
        self.peers
            .end_batch(self.poll.registry(), &mut |_| Page::zeros());
    }

    /// The objects this node is home to, for `dsmctl locks`.
    pub(super) fn locks(&self) -> Vec<LockStatus> {
        let name = |segment| {
            self.store
                .get(segment)
                .map_or_else(|| segment.to_string(), |l| l.display_name())
        };
        self.sync
            .views()
            .into_iter()
            .map(|v| LockStatus {
                object: match v.key {
                    SyncKey::Object { segment, offset } => format!("{}+{offset:#x}", name(segment)),
                    SyncKey::Lock(id) => format!("lock {id}"),
                    SyncKey::Barrier(id) => format!("barrier {id:#x}"),
                    SyncKey::Heap(segment) => format!("heap of {}", name(segment)),
                },
                kind: v.kind.into(),
                holders: v
                    .holders
                    .iter()
                    .map(|o| match o.session {
                        dsm_proto::fastlock::DELEGATE_SESSION => {
                            format!("{}'s processes (fast path)", o.node)
                        }
                        _ => format!("{} session {} thread {}", o.node, o.session, o.tid),
                    })
                    .collect(),
                waiters: v.waiters as u64,
                detail: v.detail,
            })
            .collect()
    }

    /// This node's totals for `dsm_counters()`.
    pub(super) fn counters(&self) -> NodeCounters {
        let s = self.core.stats();
        let links = self.peers.view();
        NodeCounters {
            faults: s.local_reads + s.local_writes + s.remote_reads + s.remote_writes + s.upgrades,
            messages_sent: links.iter().map(|l| l.stats.messages_out).sum(),
            messages_received: links.iter().map(|l| l.stats.messages_in).sum(),
            sync_requests: self.sync.stats().requests,
        }
    }
}

/// What waits for a release to complete.
#[derive(Debug, Clone, Copy)]
pub(super) enum AfterRelease {
    /// A lock request, carried out then (and answered, if its process waits for that).
    Sync {
        token: Token,
        session: SessionId,
        tid: u32,
        key: SyncKey,
        op: SyncOp,
        wait: bool,
    },
    /// An `msync(MS_SYNC)`, answered then.
    Answer(Token),
}

impl Server {
    /// Starts a release (pages written here go to the replica nodes), then `op` — its channel
    /// reads nothing more meanwhile, so its requests keep their order.
    pub(super) fn release_then(
        &mut self,
        token: Token,
        session: SessionId,
        tid: u32,
        key: SyncKey,
        op: SyncOp,
        wait: bool,
    ) {
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.busy = true;
        }
        self.start_release(Some(AfterRelease::Sync {
            token,
            session,
            tid,
            key,
            op,
            wait,
        }));
    }

    /// A release point with nothing waiting on it (a process exited, or the background flush),
    /// or with a lock request to carry out once it is done.
    pub(super) fn start_release(&mut self, then: Option<AfterRelease>) {
        let id = self.next_release;
        self.next_release += 1;
        self.releasing.insert(id, then);
        self.last_release = std::time::Instant::now();
        self.core.handle(dsm_core::Input::Release { id });
        self.drain_core();
    }

    /// The background flush: pages written since the last release are replicated at least
    /// every `--replica-interval-ms`.
    pub(super) fn flush_replicas(&mut self) {
        let every = Duration::from_millis(self.config.replica_interval_ms);
        if self.config.replicas > 0
            && !every.is_zero()
            && self.last_release.elapsed() >= every
            && self.core.has_unreleased()
        {
            self.start_release(None);
        }
    }

    /// Release `id` is done: the lock request that waited for it goes ahead (even if its
    /// process has gone meanwhile: a post or unlock it sent still happens).
    pub(super) fn released(&mut self, id: u64) {
        let Some(Some(after)) = self.releasing.remove(&id) else {
            return;
        };
        let (token, session, tid, key, op, wait) = match after {
            AfterRelease::Answer(token) => {
                self.answer_waiting(token, &Reply::Done);
                return;
            }
            AfterRelease::Sync {
                token,
                session,
                tid,
                key,
                op,
                wait,
            } => (token, session, tid, key, op, wait),
        };
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.busy = false;
        }
        if let Err(e) = self.sync_request(token, session, tid, key, op) {
            warn!("session {}: {e}", session.0);
        }
        if !op.answered() && wait {
            // The process waits for its release all the same (see `HelloReply::Welcome`).
            self.answer_waiting(token, &Reply::Synced(dsm_proto::sync::SyncResult::Ok));
        } else if self.conns.get(&token).is_some_and(|c| !c.busy) {
            self.serve_frames(token);
        }
    }
}
