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

/// One read or write by a node's process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Op {
    pub page: usize,
    pub write: bool,
}

/// A step the world can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Node `node`'s process performs `op`.
    Issue { node: usize, op: Op },
    /// The oldest message from `from` to `to` arrives.
    Deliver { from: usize, to: usize },
    /// Node `node` finishes revoking its process's access to `page`.
    Revoked { node: usize, page: usize },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct World {
    pub nodes: Vec<Node>,
    /// `chans[from * n + to]`: messages in flight, with the page version a grant carries.
    pub chans: Vec<VecDeque<(PeerMsg, u32)>>,
    /// Version of each page in each node's copy.
    pub copy: Vec<Vec<u32>>,
    /// Latest version written of each page.
    pub latest: Vec<u32>,
    /// What each node's process may do to each page.
    pub local: Vec<Vec<Access>>,
    /// Revocation under way: the access the process keeps.
    pub revoking: Vec<Vec<Option<Access>>>,
    /// The op each process is blocked on (waiting for its fault).
    pub outstanding: Vec<Option<Op>>,
    /// Ops each process may still start.
    pub budget: Vec<u8>,
    pub next_fault: u64,
    pub pages: usize,
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
                    })
                })
                .collect(),
            chans: vec![VecDeque::new(); nodes * nodes],
            copy: vec![vec![0; pages]; nodes],
            latest: vec![0; pages],
            local: vec![vec![Access::None; pages]; nodes],
            revoking: vec![vec![None; pages]; nodes],
            outstanding: vec![None; nodes],
            budget: vec![ops_per_node; nodes],
            next_fault: 1,
            pages,
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
                if let PeerMsg::Grant { key, .. } = msg {
                    self.copy[to][key.page as usize] = version;
                }
                let from_id = self.nodes[from].id();
                self.input(to, Input::Peer { from: from_id, msg })?;
            }
            Step::Revoked { node, page } => {
                let keep = self.revoking[node][page].take().expect("enabled");
                self.local[node][page] = self.local[node][page].min(keep);
                self.input(node, Input::Revoked { key: key(page) })?;
            }
        }
        self.check()
    }

    fn perform(&mut self, node: usize, op: Op) -> Result<(), String> {
        let page = op.page;
        if op.write {
            if self.nodes[node].page(key(page)).access != Access::Write {
                return Err(format!(
                    "node {node} wrote page {page} without write access"
                ));
            }
            self.latest[page] += 1;
            self.copy[node][page] = self.latest[page];
        } else if self.copy[node][page] != self.latest[page] {
            return Err(format!(
                "node {node} read version {} of page {page}, latest is {}",
                self.copy[node][page], self.latest[page]
            ));
        }
        Ok(())
    }

    fn input(&mut self, node: usize, input: Input) -> Result<(), String> {
        self.nodes[node].handle(input);
        while let Some(out) = self.nodes[node].poll_output() {
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
                    return Err(format!("node {node}: fault {id:?} failed: {error:?}"));
                }
                Output::Send { to, msg } => {
                    let to = self
                        .nodes
                        .iter()
                        .position(|x| x.id() == to)
                        .expect("member");
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
                .map(|x| x.page(key(page)).access)
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
        self.outstanding.iter().all(Option::is_none)
            && self.chans.iter().all(VecDeque::is_empty)
            && self.revoking.iter().flatten().all(Option::is_none)
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
