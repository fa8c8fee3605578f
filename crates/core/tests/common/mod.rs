//! A cluster of real `Node`s wired by a model network, for the model checker and the simulator.
//!
//! Channels are per ordered pair of nodes and FIFO (what TCP gives); the interleaving across
//! pairs is arbitrary. A page's contents are a version number: a write makes a new version, a
//! grant carries the sender's version, a read must see the latest version written anywhere.
//! Each node runs one local process whose access to a page persists until the node revokes it,
//! so reads and writes that need no fault are modelled too. Revocation completes as a step of
//! its own, so messages can arrive while it is under way.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};

use dsm_core::{Config, FaultId, Input, ManagerKind, Node, Output};
use dsm_proto::peer::{PageKey, PeerMsg};
use dsm_proto::{Access, NodeId, SegmentId};

/// xorshift64*: small, fast, and the same on every machine (the seeded simulations' dice).
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value: it is spread and made odd).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One read or write by a node's process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Op {
    pub page: usize,
    pub write: bool,
}

/// A step the world can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Node `node`'s daemon dies (SIGKILL): its copies, its process and every message to it
    /// are gone; what it sent may still arrive until each survivor hears of the death.
    Crash { node: usize },
    /// Survivor `node` hears that the cluster agreed `dead` is dead (`PeerDown`): nothing more
    /// arrives from it.
    Agree { node: usize, dead: usize },
    /// A dead node's daemon starts again, a new incarnation with nothing (every survivor
    /// heard of its death first, and hears `PeerUp` now).
    Restart { node: usize },
    /// Node `node`'s process performs `op`.
    Issue { node: usize, op: Op },
    /// The oldest message from `from` to `to` arrives.
    Deliver { from: usize, to: usize },
    /// Node `node` finishes revoking its process's access to `page`.
    Revoked { node: usize, page: usize },
    /// Node `node`'s process reaches a release point (an unlock): what it wrote so far must
    /// survive any one death once the release completes (`--replicas`).
    Release { node: usize },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct World {
    pub nodes: Vec<Node>,
    /// `chans[from * n + to]`: messages in flight, with the page version a grant carries.
    pub chans: Vec<VecDeque<(PeerMsg, u32)>>,
    /// Version of each page in each node's copy.
    pub copy: Vec<Vec<u32>>,
    /// Version of each page in each node's replica store.
    pub rep: Vec<Vec<u32>>,
    /// Latest version written of each page.
    pub latest: Vec<u32>,
    /// What each node's process may do to each page.
    pub local: Vec<Vec<Access>>,
    /// Revocation under way: the access the process keeps.
    pub revoking: Vec<Vec<Option<Access>>>,
    /// As the daemon: the version a replica carried while the page's writers could still
    /// store to it (`Node::checking`), compared when their revocation ends.
    pub snapshot: Vec<Vec<Option<u32>>>,
    /// The op each process is blocked on (waiting for its fault).
    pub outstanding: Vec<Option<Op>>,
    /// Ops each process may still start.
    pub budget: Vec<u8>,
    pub next_fault: u64,
    pub pages: usize,
    /// Whether each node's daemon is running.
    pub alive: Vec<bool>,
    /// `told[survivor * n + dead]`: the survivor has processed the death.
    pub told: Vec<bool>,
    /// Crashes and restarts still allowed.
    pub crashes: u8,
    pub restarts: u8,
    /// Some node crashed at some point (faults may then fail: their page's only copy died).
    pub crashed: bool,
    pub manager: ManagerKind,
    pub readahead: u32,
    /// Each node's daemon incarnation (one more at each restart).
    pub incarnation: Vec<u64>,
    /// Deaths so far, and the count just after each node's last one.
    pub deaths: u64,
    pub died_at: Vec<u64>,
    /// Replica nodes per page (`--replicas`), and releases each process may still make.
    pub replicas: u8,
    pub release_budget: Vec<u8>,
    /// The latest version each node's process wrote of each page (this incarnation).
    pub wrote: Vec<Vec<u32>>,
    /// Releases under way: (id, what the process had written of each page when it asked).
    pub releasing: Vec<(u64, Vec<u32>)>,
    pub next_release: u64,
    /// The latest version of each page written before a release that completed: it must
    /// survive.
    pub released: Vec<u32>,
    /// Who wrote each page's latest version: (node, its incarnation then).
    pub writer: Vec<Option<(usize, u64)>>,
    /// Crashes so far.
    pub crash_count: u8,
    /// Versions made of each page so far (each write makes a new one, never reused).
    pub made: Vec<u32>,
    /// Each page's history: the versions the latest descends from, oldest first (a page
    /// taken back to an older version after a death forgets the ones after it).
    pub history: Vec<Vec<u32>>,
}

pub const SEGMENT_CREATOR: NodeId = NodeId(1);

pub fn segment() -> SegmentId {
    SegmentId::new(SEGMENT_CREATOR, 1)
}

pub fn key(page: usize) -> PageKey {
    PageKey {
        segment: segment(),
        page: page as u32,
    }
}

impl World {
    pub fn new(nodes: usize, pages: usize, ops_per_node: u8, manager: ManagerKind) -> World {
        World::with_readahead(nodes, pages, ops_per_node, manager, 0)
    }

    pub fn with_readahead(
        nodes: usize,
        pages: usize,
        ops_per_node: u8,
        manager: ManagerKind,
        readahead: u32,
    ) -> World {
        let members: Vec<NodeId> = (1..=nodes as u32).map(NodeId).collect();
        World {
            nodes: members
                .iter()
                .map(|&me| {
                    Node::new(Config {
                        me,
                        members: members.clone(),
                        manager,
                        fault_timeout_ms: u64::MAX,
                        readahead,
                        incarnation: 1,
                        replicas: 0,
                    })
                })
                .collect(),
            chans: vec![VecDeque::new(); nodes * nodes],
            copy: vec![vec![0; pages]; nodes],
            rep: vec![vec![0; pages]; nodes],
            latest: vec![0; pages],
            local: vec![vec![Access::None; pages]; nodes],
            revoking: vec![vec![None; pages]; nodes],
            snapshot: vec![vec![None; pages]; nodes],
            outstanding: vec![None; nodes],
            budget: vec![ops_per_node; nodes],
            next_fault: 1,
            pages,
            alive: vec![true; nodes],
            told: vec![false; nodes * nodes],
            crashes: 0,
            restarts: 0,
            crashed: false,
            manager,
            readahead,
            incarnation: vec![1; nodes],
            deaths: 0,
            died_at: vec![0; nodes],
            replicas: 0,
            release_budget: vec![0; nodes],
            wrote: vec![vec![0; pages]; nodes],
            releasing: Vec::new(),
            next_release: 1,
            released: vec![0; pages],
            writer: vec![None; pages],
            crash_count: 0,
            made: vec![0; pages],
            history: vec![vec![0]; pages],
        }
    }

    /// The same world with `--replicas k`, each process making up to `releases` releases.
    pub fn with_replicas(mut self, k: u8, releases: u8) -> World {
        self.replicas = k;
        self.release_budget = vec![releases; self.n()];
        for i in 0..self.n() {
            self.nodes[i] = Node::new(self.node_config(i));
        }
        self
    }

    /// The same world, where up to `crashes` daemons may die and `restarts` come back.
    pub fn with_failures(mut self, crashes: u8, restarts: u8) -> World {
        self.crashes = crashes;
        self.restarts = restarts;
        self
    }

    fn node_config(&self, index: usize) -> Config {
        Config {
            me: NodeId(index as u32 + 1),
            members: (1..=self.n() as u32).map(NodeId).collect(),
            manager: self.manager,
            fault_timeout_ms: u64::MAX,
            readahead: self.readahead,
            incarnation: self.incarnation[index],
            replicas: self.replicas,
        }
    }

    pub fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }

    fn n(&self) -> usize {
        self.nodes.len()
    }

    /// Every step possible from here.
    pub fn steps(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        let n = self.n();
        for node in 0..n {
            if !self.alive[node] {
                let all_told = (0..n).all(|s| !self.alive[s] || self.told[s * n + node]);
                if self.restarts > 0 && all_told {
                    steps.push(Step::Restart { node });
                }
                continue;
            }
            if self.crashes > 0 {
                steps.push(Step::Crash { node });
            }
            for dead in 0..n {
                if !self.alive[dead] && !self.told[node * n + dead] {
                    steps.push(Step::Agree { node, dead });
                }
            }
            if self.outstanding[node].is_none() && self.release_budget[node] > 0 {
                steps.push(Step::Release { node });
            }
            if self.outstanding[node].is_none() && self.budget[node] > 0 {
                for page in 0..self.pages {
                    for write in [false, true] {
                        steps.push(Step::Issue {
                            node,
                            op: Op { page, write },
                        });
                    }
                }
            }
            for page in 0..self.pages {
                if self.revoking[node][page].is_some() {
                    steps.push(Step::Revoked { node, page });
                }
            }
        }
        for from in 0..n {
            for to in 0..n {
                if !self.chans[from * n + to].is_empty() {
                    steps.push(Step::Deliver { from, to });
                }
            }
        }
        steps
    }

    fn crash(&mut self, node: usize) {
        let n = self.n();
        self.crashes -= 1;
        self.crash_count += 1;
        self.crashed = true;
        self.deaths += 1;
        self.died_at[node] = self.deaths;
        self.alive[node] = false;
        self.outstanding[node] = None;
        self.budget[node] = 0;
        self.release_budget[node] = 0;
        for page in 0..self.pages {
            self.local[node][page] = Access::None;
            self.revoking[node][page] = None;
            self.snapshot[node][page] = None;
            self.copy[node][page] = 0;
            self.rep[node][page] = 0;
            self.wrote[node][page] = 0;
        }
        for from in 0..n {
            self.chans[from * n + node].clear();
        }
        for s in 0..n {
            self.told[s * n + node] = false;
        }
    }

    /// Takes a step; `Err` names a broken invariant.
    pub fn step(&mut self, step: Step) -> Result<(), String> {
        match step {
            Step::Issue { node, op } => {
                self.budget[node] -= 1;
                let need = Access::for_fault(op.write);
                if self.local[node][op.page] >= need {
                    self.perform(node, op)?;
                } else {
                    self.outstanding[node] = Some(op);
                    let id = FaultId(self.next_fault);
                    self.next_fault += 1;
                    self.input(
                        node,
                        Input::Fault {
                            id,
                            key: key(op.page),
                            write: op.write,
                            pages: self.pages as u32,
                            now_ms: 0,
                        },
                    )?;
                }
            }
            Step::Deliver { from, to } => {
                let n = self.n();
                let (msg, version) = self.chans[from * n + to].pop_front().expect("enabled");
                if let PeerMsg::Grant {
                    key, write, epoch, ..
                } = msg
                {
                    // As the daemon: the page's bytes are stored only if the grant is taken.
                    if self.nodes[to].expects_grant(key, write, epoch) {
                        self.copy[to][key.page as usize] = version;
                    }
                }
                if let PeerMsg::Replica {
                    key,
                    epoch,
                    version: v,
                } = msg
                {
                    if self.nodes[to].expects_replica(key, epoch, v) {
                        self.rep[to][key.page as usize] = version;
                    }
                }
                let from_id = self.nodes[from].id();
                self.input(to, Input::Peer { from: from_id, msg })?;
            }
            Step::Crash { node } => self.crash(node),
            Step::Agree { node, dead } => {
                let n = self.n();
                self.told[node * n + dead] = true;
                self.chans[dead * n + node].clear();
                let dead_id = self.nodes[dead].id();
                if dead_id == SEGMENT_CREATOR {
                    // What the daemon does for the segments it holds whose creator died.
                    self.input(node, Input::Orphaned { segment: segment() })?;
                }
                self.input(node, Input::PeerDown { node: dead_id })?;
            }
            Step::Restart { node } => {
                self.restarts -= 1;
                let me = self.nodes[node].id();
                self.incarnation[node] += 1;
                let incarnation = self.incarnation[node];
                let mut fresh = Node::new(self.node_config(node));
                if me == SEGMENT_CREATOR {
                    // Its earlier incarnation created the segment: not this one's.
                    fresh.handle(Input::Orphaned { segment: segment() });
                }
                fresh.handle(Input::History {
                    deaths: self.deaths,
                    died_at: (0..self.n())
                        .map(|i| (NodeId(i as u32 + 1), self.died_at[i]))
                        .collect(),
                    // Joined after the segment was made.
                    joined_at: u64::MAX,
                    down: (0..self.n())
                        .filter(|&i| i != node && !self.alive[i])
                        .map(|i| NodeId(i as u32 + 1))
                        .collect(),
                });
                // It knows who is dead from the membership it joins: no `Agree` for them.
                let n = self.n();
                for d in 0..n {
                    self.told[node * n + d] = !self.alive[d];
                }
                self.nodes[node] = fresh;
                self.alive[node] = true;
                self.budget[node] = 1;
                for s in 0..self.n() {
                    if s != node && self.alive[s] {
                        self.input(
                            s,
                            Input::PeerUp {
                                node: me,
                                incarnation,
                            },
                        )?;
                    }
                }
            }
            Step::Revoked { node, page } => {
                let keep = self.revoking[node][page].take().expect("enabled");
                self.local[node][page] = self.local[node][page].min(keep);
                if let Some(sent) = self.snapshot[node][page].take() {
                    if self.copy[node][page] != sent {
                        self.input(node, Input::Rewritten { key: key(page) })?;
                    }
                }
                self.input(node, Input::Revoked { key: key(page) })?;
            }
            Step::Release { node } => {
                self.release_budget[node] -= 1;
                let id = self.next_release;
                self.next_release += 1;
                self.releasing.push((id, self.wrote[node].clone()));
                self.input(node, Input::Release { id })?;
            }
        }
        self.take_reverts();
        self.check()
    }

    /// Whether node `node`'s copy of `page`, older than the latest version, is what the
    /// cluster may have gone back to: a node died, the latest version's writer is dead (its
    /// writes after its last release may be lost), nobody alive holds the latest, and no
    /// released write is older than the copy.
    fn may_revert(&self, node: usize, page: usize) -> bool {
        let writer_dead =
            self.writer[page].is_some_and(|(w, inc)| !self.alive[w] || self.incarnation[w] != inc);
        let latest_held = (0..self.n()).any(|i| {
            self.alive[i]
                && self.nodes[i].page(key(page)).access > Access::None
                && self.copy[i][page] == self.latest[page]
        });
        let copy = self.copy[node][page];
        self.crashed
            && writer_dead
            && !latest_held
            && copy >= self.released[page]
            && self.history[page].contains(&copy)
    }

    /// Page `page` is back at version `to` (see `may_revert`).
    fn revert(&mut self, page: usize, to: u32) {
        self.latest[page] = to;
        self.writer[page] = None;
        let h = &mut self.history[page];
        let keep = h.iter().position(|&v| v == to).map_or(h.len(), |p| p + 1);
        h.truncate(keep);
    }

    /// Takes a page back to an older version where a node holds one it may (see
    /// `may_revert`): from then on that is the latest.
    fn take_reverts(&mut self) {
        for page in 0..self.pages {
            for node in 0..self.n() {
                let held =
                    self.alive[node] && self.nodes[node].page(key(page)).access > Access::None;
                if held && self.copy[node][page] != self.latest[page] && self.may_revert(node, page)
                {
                    self.revert(page, self.copy[node][page]);
                }
            }
        }
    }

    fn perform(&mut self, node: usize, op: Op) -> Result<(), String> {
        let page = op.page;
        if op.write {
            if self.nodes[node].page(key(page)).access != Access::Write {
                return Err(format!(
                    "node {node} wrote page {page} without write access"
                ));
            }
            self.made[page] += 1;
            self.latest[page] = self.made[page];
            self.history[page].push(self.latest[page]);
            self.copy[node][page] = self.latest[page];
            self.wrote[node][page] = self.latest[page];
            self.writer[page] = Some((node, self.incarnation[node]));
        } else if self.copy[node][page] != self.latest[page] && self.may_revert(node, page) {
            self.revert(page, self.copy[node][page]);
        } else if self.copy[node][page] != self.latest[page] {
            return Err(format!(
                "node {node} read version {} of page {page}, latest is {}",
                self.copy[node][page], self.latest[page]
            ));
        }
        Ok(())
    }

    fn input(&mut self, node: usize, input: Input) -> Result<(), String> {
        let trace = std::env::var_os("DSM_MODEL_TRACE").is_some();
        if trace {
            eprintln!("node {node} <- {input:?}");
        }
        self.nodes[node].handle(input);
        while let Some(out) = self.nodes[node].poll_output() {
            if trace {
                eprintln!("node {node} -> {out:?}");
            }
            match out {
                Output::Grant { key, access, .. } => {
                    let page = key.page as usize;
                    let op = self.outstanding[node]
                        .take()
                        .ok_or_else(|| format!("node {node}: grant for no fault"))?;
                    if op.page != page || access < Access::for_fault(op.write) {
                        return Err(format!(
                            "node {node}: grant {access:?} of {page} for {op:?}"
                        ));
                    }
                    self.local[node][page] = self.local[node][page].max(access);
                    self.perform(node, op)?;
                }
                Output::Fail { id, error } => {
                    if !(self.crashed && error == dsm_core::FaultError::Lost) {
                        return Err(format!("node {node}: fault {id:?} failed: {error:?}"));
                    }
                    if let Some(op) = self.outstanding[node] {
                        if self.replicas >= self.crash_count && self.released[op.page] > 0 {
                            return Err(format!(
                                "node {node}: page {} lost with {} replicas after {} deaths, \
                                 though version {} of it was released",
                                op.page, self.replicas, self.crash_count, self.released[op.page]
                            ));
                        }
                    }
                    // The page's only copy died with its node: the fault fails (SIGBUS).
                    self.outstanding[node] = None;
                }
                Output::Send { to, msg } => {
                    let page = msg.key().page as usize;
                    if matches!(msg, PeerMsg::Replica { .. })
                        && self.nodes[node].checking(msg.key())
                    {
                        // As the daemon: the bytes sent, kept until the revocation ends.
                        self.snapshot[node][page] = Some(self.copy[node][page]);
                    }
                    let to = self
                        .nodes
                        .iter()
                        .position(|x| x.id() == to)
                        .expect("member");
                    if !self.alive[to] {
                        continue; // lost with the dead daemon
                    }
                    let version = self.copy[node][msg.key().page as usize];
                    let n = self.n();
                    self.chans[node * n + to].push_back((msg, version));
                }
                Output::Revoke { key, to } => {
                    let page = key.page as usize;
                    if self.revoking[node][page].is_some() {
                        return Err(format!("node {node}: two revocations of page {page}"));
                    }
                    self.revoking[node][page] = Some(to);
                }
                // What processes may take without asking: the model's processes always ask.
                Output::Opened { .. } => {}
                Output::KeepReplica { key } => {
                    let page = key.page as usize;
                    self.rep[node][page] = self.copy[node][page];
                }
                Output::RestoreReplica { key } => {
                    let page = key.page as usize;
                    self.copy[node][page] = self.rep[node][page];
                }
                Output::Released { id } => {
                    let at = self
                        .releasing
                        .iter()
                        .position(|(r, _)| *r == id)
                        .ok_or_else(|| format!("node {node}: released {id}, never asked"))?;
                    let (_, wrote) = self.releasing.remove(at);
                    for (page, &v) in wrote.iter().enumerate() {
                        self.released[page] = self.released[page].max(v);
                    }
                }
                Output::Violation { from, what } => {
                    return Err(format!(
                        "node {node}: protocol violation by {from:?}: {what}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Invariants that hold in every state.
    pub fn check(&self) -> Result<(), String> {
        for page in 0..self.pages {
            let access: Vec<Access> = self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    if self.alive[i] {
                        x.page(key(page)).access
                    } else {
                        Access::None
                    }
                })
                .collect();
            let writers = access.iter().filter(|a| **a == Access::Write).count();
            let holders = access.iter().filter(|a| **a > Access::None).count();
            if writers > 1 || (writers == 1 && holders > 1) {
                return Err(format!("single writer broken on page {page}: {access:?}"));
            }
            for (node, &held) in access.iter().enumerate() {
                if self.local[node][page] > held {
                    return Err(format!(
                        "node {node}'s process holds {:?} of page {page}, node holds {held:?}",
                        self.local[node][page]
                    ));
                }
                if held > Access::None && self.copy[node][page] != self.latest[page] {
                    return Err(format!(
                        "node {node} holds a stale copy of page {page} with {held:?}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether all work is done: no op waiting, nothing in flight.
    pub fn quiescent(&self) -> bool {
        let n = self.n();
        let all_told =
            (0..n).all(|d| self.alive[d] || (0..n).all(|s| !self.alive[s] || self.told[s * n + d]));
        self.outstanding.iter().all(Option::is_none)
            && self.chans.iter().all(VecDeque::is_empty)
            && self.revoking.iter().flatten().all(Option::is_none)
            && all_told
    }

    /// The live nodes' unfinished work, for a deadlock report.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            out += &format!(
                "node {i} alive {} outstanding {:?}\n",
                self.alive[i], self.outstanding[i]
            );
            for page in 0..self.pages {
                if let Some(b) = node.busy(key(page)) {
                    out += &format!("  page {page}: {:?}\n  busy {b:?}\n", node.page(key(page)));
                }
            }
        }
        out
    }

    /// Pages taken over from a surviving copy so far (for the simulator's statistics).
    pub fn adopted(&self) -> u64 {
        self.nodes.iter().map(|x| x.stats().adopted).sum()
    }

    /// Total messages sent so far (for the simulator's statistics).
    pub fn messages(&self) -> u64 {
        self.nodes.iter().map(|x| x.stats().messages_sent).sum()
    }
}

/// Prints a result line even when the test harness captures output (it captures `println!`,
/// not writes to the stderr handle), so the state counts show in every test run.
pub fn report(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
