//! Per-process grants and revocations on one node: the daemon's half of design invariant 3
//! ("a grant and a revoke racing inside one process never leave it with more access than the
//! node holds").
//!
//! The coherence core ([`crate::Node`]) decides that local processes must give a page up
//! (`Output::Revoke`) and waits for `Input::Revoked`. Between the two, every process that maps
//! the page's segment is pushed a revocation and must acknowledge it. This state machine keeps
//! that bookkeeping, so the model checker sees it (`tests/revocations.rs`, two processes per
//! node) and the daemon only moves frames:
//!
//! - [`RevokeInput::Revoke`] queues a page for the processes that map it; the queue becomes
//!   pushes when the driver drains [`Revocations::poll_output`] — one [`RevokeOutput::Push`]
//!   per process per run of consecutive pages of a segment revoked to the same access (a
//!   release revokes all its dirty pages at once), each numbered: the numbers rise by one per
//!   push, across processes.
//! - Every grant to a process carries [`Revocations::seq`], the number of the last push made:
//!   the shim refuses a grant numbered below a revocation it has already applied (it may be
//!   older than that revocation) and faults again.
//! - A process acknowledges pushes in the order it got them ([`RevokeInput::Acked`]: an
//!   acknowledgement covers its earlier pushes too); a process that ends
//!   ([`RevokeInput::Gone`]) owes nothing more. Once no process owes a page's latest
//!   revocation, [`RevokeOutput::Revoked`] tells the driver to give the core `Input::Revoked`.
//! - A second revocation of a page before the first is done waits for both: a process's
//!   acknowledgement of the first push does not settle the second.
//!
//! Nothing here knows sockets or time; a process is the daemon's [`SessionId`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use dsm_proto::peer::PageKey;
use dsm_proto::{Access, SegmentId, SessionId};

/// What the driver feeds in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeInput {
    /// The core asked local processes to give `key` up down to `to` (`Output::Revoke`);
    /// `processes` map its segment now. The table of what processes may take without asking
    /// must already show the lower access (see `shim/src/revoke.rs`).
    Revoke {
        /// The page.
        key: PageKey,
        /// The access processes keep.
        to: Access,
        /// The processes that map the page's segment.
        processes: Vec<SessionId>,
    },
    /// `process` acknowledged the push numbered `seq` (and so every earlier one).
    Acked {
        /// Who.
        process: SessionId,
        /// The push's number.
        seq: u64,
    },
    /// `process` ended: it owes nothing.
    Gone {
        /// Who.
        process: SessionId,
    },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RevokeOutput {
    /// Push this revocation to `process` (client `Push::Revoke`).
    Push {
        /// To whom.
        process: SessionId,
        /// The pages' segment.
        segment: SegmentId,
        /// The first page.
        page: u32,
        /// How many consecutive pages.
        count: u32,
        /// The access the process keeps.
        access: Access,
        /// The push's number.
        seq: u64,
    },
    /// No process holds more of `key` than the core asked: give the core `Input::Revoked`.
    Revoked {
        /// The page.
        key: PageKey,
    },
    /// `process` broke the protocol (acknowledged a push it was never sent): close it.
    Violation {
        /// Who.
        process: SessionId,
        /// What it did.
        what: String,
    },
}

/// The revocations of one node's processes (see the module's documentation).
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct Revocations {
    /// The number of the last push made.
    seq: u64,
    /// Per page being revoked: each process that still owes it, with the number of the push
    /// it must acknowledge (`None`: queued, not pushed yet).
    waiting: BTreeMap<PageKey, BTreeMap<SessionId, Option<u64>>>,
    /// Pushes made and not acknowledged: (process, seq) → the pages in it.
    unacked: BTreeMap<(SessionId, u64), Vec<PageKey>>,
    /// Revocations queued since the last drain: (process, page, access).
    queued: Vec<(SessionId, PageKey, Access)>,
    out: VecDeque<RevokeOutput>,
}

impl Revocations {
    /// No revocation under way.
    pub fn new() -> Revocations {
        Revocations::default()
    }

    /// The number of the last push made: a grant answered now carries it.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Pages whose revocation is under way.
    pub fn pending(&self) -> usize {
        self.waiting.len()
    }

    /// Pushes not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Feeds one input; drain [`Revocations::poll_output`] afterwards.
    pub fn handle(&mut self, input: RevokeInput) {
        match input {
            RevokeInput::Revoke { key, to, processes } => {
                let processes: BTreeSet<SessionId> = processes.into_iter().collect();
                if processes.is_empty() && !self.waiting.contains_key(&key) {
                    self.out.push_back(RevokeOutput::Revoked { key });
                    return;
                }
                let owed = self.waiting.entry(key).or_default();
                for &process in &processes {
                    owed.insert(process, None);
                    self.queued.push((process, key, to));
                }
            }
            RevokeInput::Acked { process, seq } => {
                if !self.unacked.contains_key(&(process, seq)) {
                    self.out.push_back(RevokeOutput::Violation {
                        process,
                        what: format!("acknowledged revocation {seq}, which it was not sent"),
                    });
                    return;
                }
                let settled: Vec<(SessionId, u64)> = self
                    .unacked
                    .range((process, 0)..=(process, seq))
                    .map(|(&k, _)| k)
                    .collect();
                for k in settled {
                    let keys = self.unacked.remove(&k).unwrap_or_default();
                    for key in keys {
                        self.settle(key, process, Some(seq));
                    }
                }
            }
            RevokeInput::Gone { process } => {
                self.queued.retain(|&(p, _, _)| p != process);
                let owed: Vec<(SessionId, u64)> = self
                    .unacked
                    .range((process, 0)..=(process, u64::MAX))
                    .map(|(&k, _)| k)
                    .collect();
                for k in owed {
                    self.unacked.remove(&k);
                }
                let keys: Vec<PageKey> = self
                    .waiting
                    .iter()
                    .filter(|(_, owed)| owed.contains_key(&process))
                    .map(|(&key, _)| key)
                    .collect();
                for key in keys {
                    self.settle(key, process, None);
                }
            }
        }
    }

    /// `process` no longer owes `key` if it acknowledged push `acked` (or ended: `None`) and
    /// that covers the latest push of `key` it was sent.
    fn settle(&mut self, key: PageKey, process: SessionId, acked: Option<u64>) {
        let Some(owed) = self.waiting.get_mut(&key) else {
            return;
        };
        let done = match (owed.get(&process), acked) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(Some(needed)), Some(acked)) => acked >= *needed,
            // Queued again since: that push is still to come.
            (Some(None), Some(_)) => false,
        };
        if done {
            owed.remove(&process);
        }
        if owed.is_empty() {
            self.waiting.remove(&key);
            self.out.push_back(RevokeOutput::Revoked { key });
        }
    }

    /// The next thing to do. Queued revocations become pushes here, so every revocation
    /// queued since the last drain goes out batched.
    pub fn poll_output(&mut self) -> Option<RevokeOutput> {
        if self.out.is_empty() && !self.queued.is_empty() {
            self.make_pushes();
        }
        self.out.pop_front()
    }

    fn make_pushes(&mut self) {
        let mut batch = std::mem::take(&mut self.queued);
        batch.sort_by_key(|&(process, key, to)| (process, key.segment, to, key.page));
        batch.dedup();
        let mut i = 0;
        while i < batch.len() {
            let (process, first, to) = batch[i];
            let mut run = vec![first];
            while let Some(&(p, k, a)) = batch.get(i + run.len()) {
                let next = run[run.len() - 1].page.checked_add(1);
                if p != process || k.segment != first.segment || a != to || Some(k.page) != next {
                    break;
                }
                run.push(k);
            }
            i += run.len();
            self.seq += 1;
            let seq = self.seq;
            for key in &run {
                if let Some(owed) = self.waiting.get_mut(key).and_then(|o| o.get_mut(&process)) {
                    *owed = Some(seq);
                }
            }
            self.out.push_back(RevokeOutput::Push {
                process,
                segment: first.segment,
                page: first.page,
                count: run.len() as u32,
                access: to,
                seq,
            });
            self.unacked.insert((process, seq), run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(page: u32) -> PageKey {
        PageKey {
            segment: SegmentId(1),
            page,
        }
    }

    fn drain(r: &mut Revocations) -> Vec<RevokeOutput> {
        std::iter::from_fn(|| r.poll_output()).collect()
    }

    #[test]
    fn a_page_nobody_maps_is_revoked_at_once() {
        let mut r = Revocations::new();
        r.handle(RevokeInput::Revoke {
            key: key(0),
            to: Access::None,
            processes: vec![],
        });
        assert_eq!(drain(&mut r), vec![RevokeOutput::Revoked { key: key(0) }]);
        assert_eq!(r.seq(), 0);
    }

    #[test]
    fn consecutive_pages_go_out_as_one_push_per_process() {
        let mut r = Revocations::new();
        let (a, b) = (SessionId(1), SessionId(2));
        for page in [2, 0, 1, 5] {
            r.handle(RevokeInput::Revoke {
                key: key(page),
                to: Access::Read,
                processes: vec![a, b],
            });
        }
        let pushes = drain(&mut r);
        let runs: Vec<(SessionId, u32, u32, u64)> = pushes
            .iter()
            .map(|o| match *o {
                RevokeOutput::Push {
                    process,
                    page,
                    count,
                    seq,
                    ..
                } => (process, page, count, seq),
                ref other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            runs,
            vec![(a, 0, 3, 1), (a, 5, 1, 2), (b, 0, 3, 3), (b, 5, 1, 4)]
        );
        r.handle(RevokeInput::Acked { process: a, seq: 2 });
        assert_eq!(drain(&mut r), vec![], "b still owes every page");
        r.handle(RevokeInput::Acked { process: b, seq: 3 });
        let done = drain(&mut r);
        assert_eq!(
            done.len(),
            3,
            "pages 0..3 done, 5 still owed by b: {done:?}"
        );
        r.handle(RevokeInput::Gone { process: b });
        assert_eq!(drain(&mut r), vec![RevokeOutput::Revoked { key: key(5) }]);
        assert_eq!((r.pending(), r.unacked()), (0, 0));
    }

    #[test]
    fn an_ack_of_the_first_revocation_does_not_settle_a_second() {
        let mut r = Revocations::new();
        let a = SessionId(7);
        let revoke = |r: &mut Revocations, to| {
            r.handle(RevokeInput::Revoke {
                key: key(0),
                to,
                processes: vec![a],
            })
        };
        revoke(&mut r, Access::Read);
        assert_eq!(drain(&mut r).len(), 1);
        revoke(&mut r, Access::None);
        r.handle(RevokeInput::Acked { process: a, seq: 1 });
        assert_eq!(
            drain(&mut r).len(),
            1,
            "only the second push, no Revoked yet"
        );
        r.handle(RevokeInput::Acked { process: a, seq: 2 });
        assert_eq!(drain(&mut r), vec![RevokeOutput::Revoked { key: key(0) }]);
    }

    #[test]
    fn an_ack_of_a_push_never_sent_is_a_violation() {
        let mut r = Revocations::new();
        r.handle(RevokeInput::Acked {
            process: SessionId(1),
            seq: 9,
        });
        assert!(matches!(
            drain(&mut r)[..],
            [RevokeOutput::Violation { .. }]
        ));
    }
}
