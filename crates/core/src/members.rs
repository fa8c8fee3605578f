//! Membership and the segment directory, one replicated state machine on Raft.
//!
//! Consensus is TiKV's raft-rs (sans-IO: `tick`, `step`, `ready`), not a protocol of ours. The
//! log holds [`Command`]s: members and their incarnations, their agreed deaths, and every
//! directory operation (`shm_open`, `ftruncate`, `shm_unlink`, attach/map bookkeeping). Every
//! node applies the committed log in order to its copy of [`Cluster`], so every node knows the
//! same segments at the same addresses, and any majority of the members keeps the directory
//! working. Page traffic and locks stay off the log.
//!
//! Memory is volatile, and so is the log: a daemon that starts is a new *incarnation* with a new
//! Raft id (its node id and incarnation, [`raft_id`]), which the leader adds to the group once the
//! old incarnation's death is committed and its Raft id removed. A voter never comes back with
//! amnesia: a restarted daemon is another voter. See docs/architecture.md, "Membership".
//!
//! Same shape as [`crate::Node`]: [`Members::handle`] an input, then drain
//! [`Members::poll_output`]; time comes in with the inputs.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;

use dsm_proto::client::ShmError;
use dsm_proto::peer::{DirMsg, DirOp, SegmentMeta};
use dsm_proto::NodeId;
use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, RaftState, RawNode, Snapshot,
    Storage,
};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, StateRole, StorageError};
use serde::{Deserialize, Serialize};

use crate::directory::Directory;

/// The Raft id of `node`'s incarnation `incarnation`: the node id above, the incarnation's low
/// bits below (never 0), so that a restarted daemon is a different voter.
pub fn raft_id(node: NodeId, incarnation: u64) -> u64 {
    (u64::from(node.0) << 32) | u64::from(incarnation as u32 | 1)
}

/// The node a Raft id belongs to.
pub fn node_of(raft_id: u64) -> NodeId {
    NodeId((raft_id >> 32) as u32)
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `node`'s daemon `incarnation` is a member (its Raft id is added next).
    Join {
        /// The node.
        node: NodeId,
        /// Its daemon's incarnation.
        incarnation: u64,
        /// Where its peers reach it, if the proposer knows (a node that joined with `--join`
        /// is dialled there by members it has not met).
        addr: Option<SocketAddr>,
    },
    /// `node`'s daemon `incarnation` is dead: what it held is gone, nothing is sent to it again.
    Died {
        /// The node.
        node: NodeId,
        /// The incarnation that died.
        incarnation: u64,
    },
    /// A directory operation `from` a node's incarnation, its request `req`.
    Dir {
        /// Who asks.
        from: NodeId,
        /// Its incarnation (an entry of a dead incarnation does nothing).
        incarnation: u64,
        /// The asker's request number (an entry proposed twice applies once).
        req: u64,
        /// What.
        op: DirOp,
    },
    /// The asker gave up on request `req`: if its `Dir` entry comes later, it does nothing.
    Cancel {
        /// Who asked.
        from: NodeId,
        /// Its incarnation.
        incarnation: u64,
        /// The request.
        req: u64,
    },
}

/// A member as the log knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its daemon's incarnation.
    pub incarnation: u64,
    /// Alive (joined, no death committed).
    pub alive: bool,
    /// The cluster's death count just after this node's last death (0: never died).
    pub died_at: u64,
    /// The log index of its incarnation's join.
    pub joined_at: u64,
    /// Where its peers reach it, as last said in the log.
    pub addr: Option<SocketAddr>,
}

/// Requests remembered per asker: enough to recognise a retry, bounded.
const DONE_KEPT: usize = 4096;

/// The replicated state: what every node agrees on.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cluster {
    /// Every node that ever joined, with its latest incarnation.
    pub members: BTreeMap<NodeId, Member>,
    /// The nodes the cluster was started with (its `--peer` list): the fixed and central
    /// managers' nodes and the lock service's homes. Nodes that join later are neither.
    pub founders: Vec<NodeId>,
    /// The segments.
    pub directory: Directory,
    /// Requests applied or cancelled, per asker's incarnation.
    done: BTreeMap<(NodeId, u64), BTreeSet<u64>>,
    /// Node deaths committed so far.
    pub deaths: u64,
    /// The last log index applied.
    pub applied: u64,
}

impl Cluster {
    fn alive(&self, node: NodeId, incarnation: u64) -> bool {
        self.members
            .get(&node)
            .is_some_and(|m| m.alive && m.incarnation == incarnation)
    }

    /// Marks `req` of an asker done; false if it already was.
    fn finish(&mut self, from: NodeId, incarnation: u64, req: u64) -> bool {
        let done = self.done.entry((from, incarnation)).or_default();
        if !done.insert(req) {
            return false;
        }
        if done.len() > DONE_KEPT {
            done.pop_first();
        }
        true
    }
}

/// What applying one entry did, for the node that applies it.
#[derive(Debug, PartialEq)]
enum Applied {
    Nothing,
    Answer {
        from: NodeId,
        incarnation: u64,
        req: u64,
        result: Result<SegmentMeta, ShmError>,
        news: Vec<DirMsg>,
    },
    Cancelled {
        from: NodeId,
        incarnation: u64,
        req: u64,
    },
    Joined(NodeId, u64),
    /// A death, the directory's news of it, and the members alive just after it.
    Died(NodeId, u64, Vec<DirMsg>, Vec<NodeId>),
}

impl Cluster {
    fn apply(&mut self, index: u64, command: Command) -> Applied {
        match command {
            Command::Join {
                node,
                incarnation,
                addr,
            } => {
                let m = self.members.entry(node).or_insert(Member {
                    incarnation,
                    alive: false,
                    died_at: 0,
                    joined_at: index,
                    addr,
                });
                if addr.is_some() {
                    m.addr = addr;
                }
                if m.alive {
                    // The leader commits the old one's death first, never two incarnations;
                    // and a join proposed twice applies once.
                    return Applied::Nothing;
                }
                m.incarnation = incarnation;
                m.alive = true;
                m.joined_at = index;
                Applied::Joined(node, incarnation)
            }
            Command::Died { node, incarnation } => {
                if !self.alive(node, incarnation) {
                    return Applied::Nothing;
                }
                self.deaths += 1;
                if let Some(m) = self.members.get_mut(&node) {
                    m.alive = false;
                    m.died_at = self.deaths;
                }
                self.done.retain(|(n, _), _| *n != node);
                let news = self.directory.node_died(node);
                let survivors = self
                    .members
                    .iter()
                    .filter(|(_, m)| m.alive)
                    .map(|(&n, _)| n)
                    .collect();
                Applied::Died(node, incarnation, news, survivors)
            }
            Command::Dir {
                from,
                incarnation,
                req,
                op,
            } => {
                if !self.alive(from, incarnation) || !self.finish(from, incarnation, req) {
                    return Applied::Nothing;
                }
                let effect = self.directory.apply_at(index, from, incarnation, op);
                Applied::Answer {
                    from,
                    incarnation,
                    req,
                    result: effect.reply,
                    news: effect.broadcast.into_iter().collect(),
                }
            }
            Command::Cancel {
                from,
                incarnation,
                req,
            } => {
                if self.finish(from, incarnation, req) {
                    Applied::Cancelled {
                        from,
                        incarnation,
                        req,
                    }
                } else {
                    Applied::Nothing
                }
            }
        }
    }
}

/// The Raft log's storage: raft-rs's in-memory one, whose snapshots carry the [`Cluster`] (so a
/// joining node gets the directory with its first snapshot, and the log can be compacted).
#[derive(Clone)]
pub struct LogStore {
    mem: MemStorage,
    state: Rc<RefCell<Cluster>>,
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let mut snap = self.mem.snapshot(request_index, to)?;
        let state = self.state.borrow();
        if snap.get_metadata().index != state.applied {
            // Not yet applied as far as committed: ask again later.
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let data = postcard::to_allocvec(&*state)
            .map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))?;
        snap.data = data.into();
        Ok(snap)
    }
}

/// Timing, in the driver's milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// One Raft tick.
    pub tick_ms: u64,
    /// A member whose link has been down this long is declared dead by the leader.
    pub death_ms: u64,
    /// A directory request not yet applied is proposed again this often (leader changes).
    pub retry_ms: u64,
    /// A directory request not applied after this long is cancelled, and fails once the
    /// cancellation commits (or, without a quorum, two retries later).
    pub timeout_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            tick_ms: 100,
            death_ms: 5000,
            retry_ms: 500,
            timeout_ms: 5000,
        }
    }
}

/// An event the driver hands to [`Members`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberInput {
    /// Time passes.
    Tick {
        /// Now, in ms.
        now_ms: u64,
    },
    /// A Raft message from a peer (protobuf bytes, as [`MemberOutput::Send`] made them).
    Raft {
        /// The authenticated sender.
        from: NodeId,
        /// The message.
        bytes: Vec<u8>,
    },
    /// The link to `node` is up; its daemon said this in its hello.
    LinkUp {
        /// The peer.
        node: NodeId,
        /// Its daemon's incarnation.
        incarnation: u64,
        /// Whether it is a member of a running cluster already.
        formed: bool,
        /// Where it is reached, if known (recorded with its join).
        addr: Option<SocketAddr>,
        /// Now, in ms.
        now_ms: u64,
    },
    /// The link to `node` went down.
    LinkDown {
        /// The peer.
        node: NodeId,
        /// Now, in ms.
        now_ms: u64,
    },
    /// A local directory request; answered by a [`MemberOutput::Reply`] with the same `req`.
    Propose {
        /// The driver's request number (unique for this incarnation).
        req: u64,
        /// What.
        op: DirOp,
        /// Now, in ms.
        now_ms: u64,
    },
}

/// What [`Members`] asks of the driver, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberOutput {
    /// Send a Raft message to `to`'s daemon `incarnation` (drop it if that is not whom the link
    /// reaches now, or the link is down: Raft sends again).
    Send {
        /// The peer.
        to: NodeId,
        /// Its incarnation the message is for.
        incarnation: u64,
        /// The message.
        bytes: Vec<u8>,
    },
    /// The answer to a local request.
    Reply {
        /// The request.
        req: u64,
        /// The segment as it now is, or why not.
        result: Result<SegmentMeta, ShmError>,
    },
    /// A segment changed (size, address, owner) or is gone: every node hears it, in log order.
    News(DirMsg),
    /// A node's incarnation joined.
    Joined {
        /// The node.
        node: NodeId,
        /// Its incarnation.
        incarnation: u64,
    },
    /// A node's incarnation is dead, as committed.
    Died {
        /// The node.
        node: NodeId,
        /// Its incarnation.
        incarnation: u64,
        /// The members alive just after the death, as the log says (the same on every node,
        /// whatever else this node applied since).
        survivors: Vec<NodeId>,
    },
    /// This node's own death was committed (it was cut off too long): it must start afresh.
    Expelled,
    /// A peer sent something Raft or this layer cannot take. For the log.
    Violation {
        /// The peer.
        from: NodeId,
        /// What.
        what: String,
    },
}

#[derive(Clone, Copy, Debug)]
struct Link {
    up: bool,
    incarnation: Option<u64>,
    formed: bool,
    addr: Option<SocketAddr>,
    /// When the link went down (or the node was first expected), if it is down.
    down_since_ms: Option<u64>,
}

#[derive(Debug)]
struct Pending {
    op: DirOp,
    since_ms: u64,
    tried_ms: Option<u64>,
    cancelled: bool,
}

/// Entries kept in the log behind the applied index before it is compacted into a snapshot.
const LOG_KEPT: u64 = 4096;

/// A node's membership: its Raft node, the replicated [`Cluster`], and its links' states.
pub struct Members {
    me: NodeId,
    incarnation: u64,
    /// The nodes configured with `--peer` (and this one): the seed of a new cluster is the
    /// lowest, once all have said they are not in one.
    configured: Vec<NodeId>,
    timing: Timing,
    raw: Option<RawNode<LogStore>>,
    state: Rc<RefCell<Cluster>>,
    conf: ConfState,
    links: BTreeMap<NodeId, Link>,
    pending: BTreeMap<u64, Pending>,
    /// Leader only: when each reconciling step was last proposed (so it is not proposed on
    /// every tick while it commits).
    intents: BTreeMap<String, u64>,
    now_ms: u64,
    last_tick_ms: u64,
    outputs: VecDeque<MemberOutput>,
    logger: slog::Logger,
    expelled: bool,
    /// Started with `--join`: never starts a cluster.
    joins: bool,
}

fn raft_config(id: u64) -> raft::Config {
    raft::Config {
        id,
        election_tick: 10,
        heartbeat_tick: 2,
        pre_vote: true,
        check_quorum: true,
        max_inflight_msgs: 256,
        max_size_per_msg: 1 << 20,
        ..Default::default()
    }
}

impl Members {
    /// A node that joins a running cluster (`--join`): it never starts one, and waits for
    /// the cluster's leader to add it once a member has linked to it.
    pub fn joining(me: NodeId, incarnation: u64, timing: Timing) -> Members {
        Members::build(me, incarnation, &[], timing, true)
    }

    /// A node that is in no cluster yet; `peers` are the configured ones (`--peer`). Without
    /// peers it starts a cluster of its own at once.
    pub fn new(me: NodeId, incarnation: u64, peers: &[NodeId], timing: Timing) -> Members {
        Members::build(me, incarnation, peers, timing, false)
    }

    fn build(
        me: NodeId,
        incarnation: u64,
        peers: &[NodeId],
        timing: Timing,
        joins: bool,
    ) -> Members {
        let mut configured: Vec<NodeId> = peers.to_vec();
        configured.push(me);
        configured.sort();
        configured.dedup();
        let links = peers
            .iter()
            .filter(|&&n| n != me)
            .map(|&n| {
                (
                    n,
                    Link {
                        up: false,
                        incarnation: None,
                        formed: false,
                        addr: None,
                        down_since_ms: Some(0),
                    },
                )
            })
            .collect();
        let mut members = Members {
            me,
            incarnation,
            configured,
            timing,
            raw: None,
            state: Rc::new(RefCell::new(Cluster::default())),
            conf: ConfState::default(),
            links,
            pending: BTreeMap::new(),
            intents: BTreeMap::new(),
            now_ms: 0,
            last_tick_ms: 0,
            outputs: VecDeque::new(),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            expelled: false,
            joins,
        };
        if !joins && peers.iter().all(|&n| n == me) {
            members.bootstrap();
        }
        members
    }

    /// The nodes the cluster was started with (empty until this node has the cluster's
    /// state): the fixed and central managers' nodes, the lock service's homes.
    pub fn founders(&self) -> Vec<NodeId> {
        self.state.borrow().founders.clone()
    }

    /// The founders whose death the cluster agreed (a restarted one included): no longer
    /// homes of lock-service objects.
    pub fn deposed(&self) -> BTreeSet<NodeId> {
        let state = self.state.borrow();
        state
            .founders
            .iter()
            .copied()
            .filter(|n| state.members.get(n).is_some_and(|m| m.died_at > 0))
            .collect()
    }

    /// This node's Raft id.
    pub fn raft_id(&self) -> u64 {
        raft_id(self.me, self.incarnation)
    }

    /// Whether this node is in a running cluster (said in its hellos).
    pub fn formed(&self) -> bool {
        self.state.borrow().alive(self.me, self.incarnation)
    }

    /// The Raft leader, as far as this node knows.
    pub fn leader(&self) -> Option<NodeId> {
        let id = self.raw.as_ref()?.raft.leader_id;
        (id != 0).then(|| node_of(id))
    }

    /// The current Raft term (0 before any).
    pub fn term(&self) -> u64 {
        self.raw.as_ref().map_or(0, |r| r.raft.term)
    }

    /// The members as committed.
    pub fn members(&self) -> BTreeMap<NodeId, Member> {
        self.state.borrow().members.clone()
    }

    /// Whether `node`'s incarnation `incarnation` is an alive member.
    pub fn is_alive(&self, node: NodeId, incarnation: u64) -> bool {
        self.state.borrow().alive(node, incarnation)
    }

    /// The incarnation the log knows for `node`, alive or dead.
    pub fn incarnation_of(&self, node: NodeId) -> Option<Member> {
        self.state.borrow().members.get(&node).copied()
    }

    /// Runs `f` on the directory as committed.
    pub fn with_directory<R>(&self, f: impl FnOnce(&Directory) -> R) -> R {
        f(&self.state.borrow().directory)
    }

    /// Node deaths committed so far, and each member's death count just after its last death
    /// (for the coherence core of a daemon that joins: see `Input::History`).
    pub fn history(&self) -> (u64, Vec<(NodeId, u64)>, u64, Vec<NodeId>) {
        let state = self.state.borrow();
        let died = state
            .members
            .iter()
            .filter(|(_, m)| m.died_at > 0)
            .map(|(&n, m)| (n, m.died_at))
            .collect();
        let joined_at = state.members.get(&self.me).map_or(0, |m| m.joined_at);
        let down = state
            .members
            .iter()
            .filter(|(_, m)| !m.alive)
            .map(|(&n, _)| n)
            .collect();
        (state.deaths, died, joined_at, down)
    }

    /// The last log index applied here.
    pub fn applied(&self) -> u64 {
        self.state.borrow().applied
    }

    /// The next action for the driver, if any. Drain after every input.
    pub fn poll_output(&mut self) -> Option<MemberOutput> {
        self.outputs.pop_front()
    }

    /// When the next tick is due (ms on the driver's clock).
    pub fn poll_timeout(&self) -> u64 {
        self.last_tick_ms + self.timing.tick_ms
    }

    /// Feeds one event; afterwards drain [`Members::poll_output`].
    pub fn handle(&mut self, input: MemberInput) {
        match input {
            MemberInput::Tick { now_ms } => {
                self.now_ms = self.now_ms.max(now_ms);
                while self.now_ms >= self.last_tick_ms + self.timing.tick_ms {
                    self.last_tick_ms += self.timing.tick_ms;
                    if let Some(raw) = &mut self.raw {
                        raw.tick();
                    }
                }
                self.retry_and_expire();
                self.maybe_bootstrap();
                self.reconcile();
            }
            MemberInput::Raft { from, bytes } => self.on_raft(from, &bytes),
            MemberInput::LinkUp {
                node,
                incarnation,
                formed,
                addr,
                now_ms,
            } => {
                self.now_ms = self.now_ms.max(now_ms);
                // A node not configured here (one that joins, or joined): linked all the same.
                self.links.insert(
                    node,
                    Link {
                        up: true,
                        incarnation: Some(incarnation),
                        formed,
                        addr,
                        down_since_ms: None,
                    },
                );
                self.maybe_bootstrap();
                self.reconcile();
            }
            MemberInput::LinkDown { node, now_ms } => {
                self.now_ms = self.now_ms.max(now_ms);
                if let Some(link) = self.links.get_mut(&node) {
                    link.up = false;
                    link.down_since_ms.get_or_insert(now_ms);
                }
            }
            MemberInput::Propose { req, op, now_ms } => {
                self.now_ms = self.now_ms.max(now_ms);
                self.pending.insert(
                    req,
                    Pending {
                        op,
                        since_ms: now_ms,
                        tried_ms: None,
                        cancelled: false,
                    },
                );
                self.try_propose(req);
            }
        }
        self.on_ready();
    }

    fn try_propose(&mut self, req: u64) {
        let Some(p) = self.pending.get_mut(&req) else {
            return;
        };
        let command = if p.cancelled {
            Command::Cancel {
                from: self.me,
                incarnation: self.incarnation,
                req,
            }
        } else {
            Command::Dir {
                from: self.me,
                incarnation: self.incarnation,
                req,
                op: p.op.clone(),
            }
        };
        p.tried_ms = Some(self.now_ms);
        let data = postcard::to_allocvec(&command).expect("commands encode");
        if let Some(raw) = &mut self.raw {
            // Dropped without a leader: tried again on a later tick.
            let _ = raw.propose(vec![], data);
        }
    }

    fn retry_and_expire(&mut self) {
        let now = self.now_ms;
        let mut retry = Vec::new();
        let mut failed = Vec::new();
        for (&req, p) in &mut self.pending {
            let age = now.saturating_sub(p.since_ms);
            if age >= self.timing.timeout_ms + 2 * self.timing.retry_ms {
                // Neither the request nor its cancellation committed: no quorum (an entry of
                // this request still in some old leader's log is one no majority took).
                failed.push(req);
            } else if age >= self.timing.timeout_ms && !p.cancelled {
                p.cancelled = true;
                retry.push(req);
            } else if p
                .tried_ms
                .is_none_or(|t| now.saturating_sub(t) >= self.timing.retry_ms)
            {
                retry.push(req);
            }
        }
        for req in retry {
            self.try_propose(req);
        }
        for req in failed {
            self.pending.remove(&req);
            self.outputs.push_back(MemberOutput::Reply {
                req,
                result: Err(ShmError::TimedOut),
            });
        }
    }

    /// A new cluster starts at its lowest configured node, once every configured node has
    /// said (in its hello) that it is in no cluster: then no running cluster can be missed.
    fn maybe_bootstrap(&mut self) {
        if self.raw.is_some() || self.joins || self.configured.first() != Some(&self.me) {
            return;
        }
        let all_fresh = self
            .links
            .values()
            .all(|l| l.up && l.incarnation.is_some() && !l.formed);
        if all_fresh {
            self.bootstrap();
        }
    }

    fn bootstrap(&mut self) {
        {
            let mut state = self.state.borrow_mut();
            state.members.insert(
                self.me,
                Member {
                    incarnation: self.incarnation,
                    alive: true,
                    died_at: 0,
                    joined_at: 1,
                    addr: None,
                },
            );
            state.founders = self.configured.clone();
            state.applied = 1;
        }
        self.start_group(1);
        log::info!(
            "{} starts a new cluster (every configured node said it is in none)",
            self.me
        );
        self.outputs.push_back(MemberOutput::Joined {
            node: self.me,
            incarnation: self.incarnation,
        });
    }

    /// A Raft group of this node alone, from the replicated state as it is now (at log index
    /// `state.applied`, term `term`), and a campaign to lead it.
    fn start_group(&mut self, term: u64) {
        let id = self.raft_id();
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = self.applied();
        snap.mut_metadata().term = term;
        snap.mut_metadata().mut_conf_state().voters = vec![id];
        snap.data = postcard::to_allocvec(&*self.state.borrow())
            .expect("encodes")
            .into();
        let mem = MemStorage::new();
        mem.wl().apply_snapshot(snap).expect("fresh storage");
        self.conf = ConfState::from((vec![id], vec![]));
        let store = LogStore {
            mem,
            state: Rc::clone(&self.state),
        };
        let mut raw = RawNode::new(&raft_config(id), store, &self.logger).expect("valid config");
        let _ = raw.campaign();
        self.raw = Some(raw);
    }

    /// Two voters, and the other one came back as a new incarnation: its old self is dead, and
    /// with two voters every committed entry is on this node, but no majority is left to
    /// commit the change. This node goes on alone from its state (the old voter's death
    /// applied), and adds the new incarnation as any other. With three or more voters a
    /// majority remains and the leader replaces the voter through the log instead.
    fn maybe_go_on_alone(&mut self) {
        let Some(raw) = &self.raw else { return };
        let me = self.raft_id();
        let voters = &self.conf.voters;
        if voters.len() != 2 || !voters.contains(&me) {
            return;
        }
        let Some(&other) = voters.iter().find(|&&v| v != me) else {
            return;
        };
        let node = node_of(other);
        let restarted = self
            .links
            .get(&node)
            .is_some_and(|l| l.up && l.incarnation.is_some_and(|i| raft_id(node, i) != other));
        let old = self.incarnation_of(node).filter(|m| m.alive);
        let (true, Some(old)) = (restarted, old) else {
            return;
        };
        if raft_id(node, old.incarnation) != other {
            return;
        }
        let term = raw.raft.term + 1;
        log::warn!(
            "{node} restarted and was one of two voters: {} goes on alone and adds it back",
            self.me
        );
        let index = self.applied() + 1;
        let applied = self.state.borrow_mut().apply(
            index,
            Command::Died {
                node,
                incarnation: old.incarnation,
            },
        );
        self.state.borrow_mut().applied = index;
        self.applied_effect(applied);
        self.start_group(term);
    }

    fn on_raft(&mut self, from: NodeId, bytes: &[u8]) {
        let msg = match Message::parse_from_bytes(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.outputs.push_back(MemberOutput::Violation {
                    from,
                    what: format!("undecodable Raft message: {e}"),
                });
                return;
            }
        };
        let link_inc = self.links.get(&from).and_then(|l| l.incarnation);
        if node_of(msg.from) != from || link_inc.map(|i| raft_id(from, i)) != Some(msg.from) {
            self.outputs.push_back(MemberOutput::Violation {
                from,
                what: format!("Raft message from {:#x}, not this link's daemon", msg.from),
            });
            return;
        }
        if msg.to != self.raft_id() {
            // For an earlier incarnation of this node: not ours.
            return;
        }
        if self.raw.is_none() {
            // The leader of a running cluster added this incarnation: join it.
            let store = LogStore {
                mem: MemStorage::new(),
                state: Rc::clone(&self.state),
            };
            match RawNode::new(&raft_config(self.raft_id()), store, &self.logger) {
                Ok(raw) => self.raw = Some(raw),
                Err(e) => {
                    log::warn!("cannot start Raft: {e}");
                    return;
                }
            }
        }
        if let Some(raw) = &mut self.raw {
            if let Err(e) = raw.step(msg) {
                log::debug!("Raft message from {from} not taken: {e}");
            }
        }
    }

    fn on_ready(&mut self) {
        loop {
            let Some(raw) = &mut self.raw else { return };
            if !raw.has_ready() {
                return;
            }
            let store = raw.store().clone();
            let mut ready = raw.ready();
            let messages = ready.take_messages();
            self.send_all(messages);
            if *ready.snapshot() != Snapshot::default() {
                let snap = ready.snapshot().clone();
                match postcard::from_bytes::<Cluster>(&snap.data) {
                    Ok(mut cluster) => {
                        cluster.applied = snap.get_metadata().index;
                        self.conf = snap.get_metadata().get_conf_state().clone();
                        *self.state.borrow_mut() = cluster;
                        if let Err(e) = store.mem.wl().apply_snapshot(snap) {
                            log::warn!("cannot apply a Raft snapshot: {e}");
                        }
                        log::info!(
                            "{} has the cluster's state as of log index {}",
                            self.me,
                            self.applied()
                        );
                        self.after_snapshot();
                    }
                    Err(e) => log::warn!("undecodable Raft snapshot: {e}"),
                }
            }
            let committed = ready.take_committed_entries();
            self.apply_entries(committed);
            let raw = self.raw.as_mut().expect("present");
            if let Err(e) = store.mem.wl().append(ready.entries()) {
                log::warn!("cannot append to the Raft log: {e}");
            }
            if let Some(hs) = ready.hs() {
                store.mem.wl().set_hardstate(hs.clone());
            }
            let persisted = ready.take_persisted_messages();
            let mut light = raw.advance(ready);
            if let Some(commit) = light.commit_index() {
                store.mem.wl().mut_hard_state().set_commit(commit);
            }
            let more = light.take_messages();
            let committed = light.take_committed_entries();
            self.send_all(persisted);
            self.send_all(more);
            self.apply_entries(committed);
            let raw = self.raw.as_mut().expect("present");
            raw.advance_apply();
            self.compact();
            self.reconcile();
        }
    }

    fn compact(&mut self) {
        let applied = self.applied();
        let Some(raw) = &self.raw else { return };
        let mem = &raw.store().mem;
        let first = Storage::first_index(mem).unwrap_or(1);
        if applied > first + 2 * LOG_KEPT {
            let _ = mem.wl().compact(applied - LOG_KEPT);
        }
    }

    fn send_all(&mut self, messages: Vec<Message>) {
        for msg in messages {
            let to = node_of(msg.to);
            let incarnation = match self.links.get(&to).and_then(|l| l.incarnation) {
                Some(i) if raft_id(to, i) == msg.to => i,
                _ => continue, // an old incarnation, or one not linked: Raft sends again
            };
            match msg.write_to_bytes() {
                Ok(bytes) => self.outputs.push_back(MemberOutput::Send {
                    to,
                    incarnation,
                    bytes,
                }),
                Err(e) => log::warn!("cannot encode a Raft message: {e}"),
            }
        }
    }

    fn after_snapshot(&mut self) {
        // Deaths and joins before the snapshot are facts now: say what the driver must know.
        let members = self.members();
        for (node, m) in members {
            if node == self.me && m.incarnation != self.incarnation {
                continue;
            }
            // (This daemon's own join too, when the snapshot holds it: the driver then tells
            // the coherence core the deaths before it.)
            if m.alive {
                self.outputs.push_back(MemberOutput::Joined {
                    node,
                    incarnation: m.incarnation,
                });
            }
        }
        let pending: Vec<u64> = self.pending.keys().copied().collect();
        for req in pending {
            self.try_propose(req);
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            let index = entry.index;
            if index <= self.applied() {
                continue;
            }
            self.state.borrow_mut().applied = index;
            if entry.data.is_empty() {
                continue;
            }
            match entry.get_entry_type() {
                EntryType::EntryConfChange => {
                    let mut cc = ConfChange::default();
                    if cc.merge_from_bytes(&entry.data).is_err() {
                        continue;
                    }
                    if let Some(raw) = &mut self.raw {
                        match raw.apply_conf_change(&cc) {
                            Ok(cs) => {
                                raw.store().mem.wl().set_conf_state(cs.clone());
                                self.conf = cs;
                            }
                            Err(e) => log::warn!("cannot apply a membership change: {e}"),
                        }
                    }
                }
                EntryType::EntryConfChangeV2 => {}
                EntryType::EntryNormal => {
                    let command = match postcard::from_bytes::<Command>(&entry.data) {
                        Ok(c) => c,
                        Err(e) => {
                            log::warn!("undecodable log entry {index}: {e}");
                            continue;
                        }
                    };
                    let applied = self.state.borrow_mut().apply(index, command);
                    self.applied_effect(applied);
                }
            }
        }
    }

    fn applied_effect(&mut self, applied: Applied) {
        let mine = |from: NodeId, inc: u64, me: NodeId, my_inc: u64| from == me && inc == my_inc;
        match applied {
            Applied::Nothing => {}
            Applied::Answer {
                from,
                incarnation,
                req,
                result,
                news,
            } => {
                for n in news {
                    self.outputs.push_back(MemberOutput::News(n));
                }
                if mine(from, incarnation, self.me, self.incarnation)
                    && self.pending.remove(&req).is_some()
                {
                    self.outputs.push_back(MemberOutput::Reply { req, result });
                }
            }
            Applied::Cancelled {
                from,
                incarnation,
                req,
            } => {
                if mine(from, incarnation, self.me, self.incarnation)
                    && self.pending.remove(&req).is_some()
                {
                    self.outputs.push_back(MemberOutput::Reply {
                        req,
                        result: Err(ShmError::TimedOut),
                    });
                }
            }
            Applied::Joined(node, incarnation) => {
                log::info!("{node} (incarnation {incarnation:#x}) joined the cluster");
                if node != self.me {
                    // A node that joined through another member: the leader declares it dead
                    // if it never links to it either.
                    let now = self.now_ms;
                    self.links.entry(node).or_insert(Link {
                        up: false,
                        incarnation: None,
                        formed: false,
                        addr: None,
                        down_since_ms: Some(now),
                    });
                }
                self.outputs
                    .push_back(MemberOutput::Joined { node, incarnation });
            }
            Applied::Died(node, incarnation, news, survivors) => {
                for n in news {
                    self.outputs.push_back(MemberOutput::News(n));
                }
                if node == self.me && incarnation == self.incarnation {
                    if !self.expelled {
                        self.expelled = true;
                        self.outputs.push_back(MemberOutput::Expelled);
                    }
                } else {
                    self.outputs.push_back(MemberOutput::Died {
                        node,
                        incarnation,
                        survivors,
                    });
                }
            }
        }
    }

    /// Whether `intent` is due for a proposal (not proposed within the retry interval), and
    /// notes that it is proposed now.
    fn due(&mut self, intent: String) -> bool {
        if self
            .intents
            .get(&intent)
            .is_some_and(|&t| self.now_ms.saturating_sub(t) < self.timing.retry_ms)
        {
            return false;
        }
        self.intents.insert(intent, self.now_ms);
        true
    }

    /// Not the leader: a node never seen in the cluster linked to this one (it joins through
    /// it, `--join`), so its join is proposed here (Raft forwards it to the leader), with its
    /// address: then every member, the leader too, can reach it.
    fn introduce(&mut self) {
        if !self.formed() {
            return;
        }
        let known = self.members();
        let newcomer = self.links.iter().find_map(|(&node, l)| {
            let inc = l.incarnation.filter(|_| l.up)?;
            (!known.contains_key(&node)).then_some((node, inc, l.addr))
        });
        let Some((node, incarnation, addr)) = newcomer else {
            self.intents.clear();
            return;
        };
        if !self.due(format!("introduce {node:?} {incarnation:#x}")) {
            return;
        }
        let command = Command::Join {
            node,
            incarnation,
            addr,
        };
        log::info!("proposing {command:?} (it linked to this node)");
        let data = postcard::to_allocvec(&command).expect("encodes");
        if let Some(raw) = &mut self.raw {
            let _ = raw.propose(vec![], data);
        }
    }

    /// Leader only: one step towards the membership the links show. Joins of new incarnations
    /// (after their old one's death), deaths of members unreachable too long, and the Raft
    /// voters following the members. One step proposed at a time; again after a while if it
    /// did not commit.
    fn reconcile(&mut self) {
        self.maybe_go_on_alone();
        let Some(raw) = &self.raw else { return };
        if raw.raft.state != StateRole::Leader {
            self.introduce();
            return;
        }
        if raw.raft.has_pending_conf() {
            return;
        }
        let members = self.members();
        let voters: BTreeSet<u64> = self.conf.voters.iter().copied().collect();
        let mut step: Option<(String, Result<Command, ConfChange>)> = None;
        let change = |kind: ConfChangeType, id: u64| {
            let mut cc = ConfChange::default();
            cc.set_change_type(kind);
            cc.node_id = id;
            cc
        };
        // A voter of a dead or earlier incarnation leaves first.
        for &id in &voters {
            let node = node_of(id);
            let current = members
                .get(&node)
                .filter(|m| m.alive)
                .map(|m| raft_id(node, m.incarnation));
            if current != Some(id) && id != self.raft_id() {
                step = Some((
                    format!("remove {id:#x}"),
                    Err(change(ConfChangeType::RemoveNode, id)),
                ));
                break;
            }
        }
        if step.is_none() {
            for (&node, link) in &self.links {
                let member = members.get(&node).copied();
                let seen = link.incarnation.filter(|_| link.up);
                let unreachable = link
                    .down_since_ms
                    .is_some_and(|t| self.now_ms.saturating_sub(t) >= self.timing.death_ms);
                let next = match (member, seen) {
                    (Some(m), Some(inc)) if m.alive && m.incarnation != inc => {
                        // Restarted: the old incarnation is dead for sure.
                        Some(Ok(Command::Died {
                            node,
                            incarnation: m.incarnation,
                        }))
                    }
                    (Some(m), Some(inc)) if m.alive && m.incarnation == inc => {
                        let id = raft_id(node, inc);
                        (!voters.contains(&id)).then(|| Err(change(ConfChangeType::AddNode, id)))
                    }
                    (_, Some(inc)) => Some(Ok(Command::Join {
                        node,
                        incarnation: inc,
                        addr: link.addr,
                    })),
                    (Some(m), None) if m.alive && unreachable => Some(Ok(Command::Died {
                        node,
                        incarnation: m.incarnation,
                    })),
                    _ => None,
                };
                if let Some(next) = next {
                    step = Some((format!("{node:?} {next:?}"), next));
                    break;
                }
            }
        }
        let Some((intent, what)) = step else {
            self.intents.clear();
            return;
        };
        if !self.due(intent) {
            return;
        }
        let raw = self.raw.as_mut().expect("present");
        let result = match what {
            Ok(command) => {
                log::info!("proposing {command:?}");
                let data = postcard::to_allocvec(&command).expect("encodes");
                raw.propose(vec![], data)
            }
            Err(cc) => {
                log::info!(
                    "proposing Raft membership change {:?} {:#x}",
                    cc.get_change_type(),
                    cc.node_id
                );
                raw.propose_conf_change(vec![], cc)
            }
        };
        if let Err(e) = result {
            log::debug!("proposal dropped: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_ids_differ_per_incarnation_and_name_their_node() {
        let a = raft_id(NodeId(7), 0x1234_0000_0000);
        let b = raft_id(NodeId(7), 0x1234_0000_0002);
        assert_ne!(a, b);
        assert_ne!(a & 0xffff_ffff, 0, "never 0");
        assert_eq!(node_of(a), NodeId(7));
    }
}
