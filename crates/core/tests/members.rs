//! Membership and the directory on Raft, driven without IO: three nodes and a network that
//! delivers, cuts and restarts, under a fake clock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use dsm_core::members::{MemberInput, MemberOutput, Members, Timing};
use dsm_proto::client::{OpenFlags, ShmError};
use dsm_proto::peer::{Caller, DirOp, SegmentMeta};
use dsm_proto::NodeId;

struct Net {
    nodes: BTreeMap<NodeId, (Members, u64)>,
    /// Links cut (both directions), by the pair.
    cut: BTreeSet<(NodeId, NodeId)>,
    wire: VecDeque<(NodeId, NodeId, u64, Vec<u8>)>,
    now: u64,
    replies: BTreeMap<(NodeId, u64), Result<SegmentMeta, ShmError>>,
    died: Vec<(NodeId, NodeId)>,
    next_inc: u64,
}

fn addr(n: NodeId) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([10, 0, 0, n.0 as u8], 7700))
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

impl Net {
    fn new(n: u32) -> Net {
        let mut net = Net {
            nodes: BTreeMap::new(),
            cut: BTreeSet::new(),
            wire: VecDeque::new(),
            now: 0,
            replies: BTreeMap::new(),
            died: Vec::new(),
            next_inc: 0x100,
        };
        for id in 1..=n {
            net.start(NodeId(id), n);
        }
        net.relink();
        net
    }

    fn start(&mut self, me: NodeId, n: u32) {
        self.next_inc += 0x100;
        let peers: Vec<NodeId> = (1..=n).map(NodeId).filter(|&p| p != me).collect();
        let m = Members::new(me, self.next_inc, &peers, Timing::default());
        self.nodes.insert(me, (m, self.next_inc));
    }

    /// Starts `me` with `--join`: no configured peers.
    fn start_joining(&mut self, me: NodeId) {
        self.next_inc += 0x100;
        let m = Members::joining(me, self.next_inc, Timing::default());
        self.nodes.insert(me, (m, self.next_inc));
    }

    /// Tells every node which of its links are up (after a start or a cut).
    fn relink(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &a in &ids {
            for &b in &ids {
                if a == b {
                    continue;
                }
                let (inc_b, formed_b) = {
                    let (m, inc) = &self.nodes[&b];
                    (*inc, m.formed())
                };
                let now_ms = self.now;
                let input = if self.cut.contains(&pair(a, b)) {
                    MemberInput::LinkDown { node: b, now_ms }
                } else {
                    MemberInput::LinkUp {
                        node: b,
                        incarnation: inc_b,
                        formed: formed_b,
                        addr: Some(addr(b)),
                        now_ms,
                    }
                };
                self.feed(a, input);
            }
        }
    }

    fn feed(&mut self, at: NodeId, input: MemberInput) {
        let Some((m, _)) = self.nodes.get_mut(&at) else {
            return;
        };
        m.handle(input);
        while let Some(out) = m.poll_output() {
            match out {
                MemberOutput::Send {
                    to,
                    incarnation,
                    bytes,
                } => self.wire.push_back((at, to, incarnation, bytes)),
                MemberOutput::Reply { req, result } => {
                    self.replies.insert((at, req), result);
                }
                MemberOutput::Died { node, .. } => self.died.push((at, node)),
                _ => {}
            }
        }
    }

    /// Runs `ms` of time: every message delivered at once, ticks every 10 ms.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            while let Some((from, to, inc, bytes)) = self.wire.pop_front() {
                let live = self.nodes.get(&to).is_some_and(|(_, i)| *i == inc);
                if live && !self.cut.contains(&pair(from, to)) {
                    self.feed(to, MemberInput::Raft { from, bytes });
                }
            }
            self.now += 10;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                let now_ms = self.now;
                self.feed(id, MemberInput::Tick { now_ms });
            }
        }
    }

    /// Runs until request `req` at `at` is answered, at most `limit_ms` (an election after a
    /// death takes randomized timeouts, a split vote another round: wait for the answer, not
    /// for a fixed time).
    fn run_until_answered(&mut self, at: NodeId, req: u64, limit_ms: u64) {
        let end = self.now + limit_ms;
        while !self.replies.contains_key(&(at, req)) && self.now < end {
            self.run(100);
        }
    }

    fn open(&mut self, at: NodeId, req: u64, name: &str, excl: bool) {
        let op = DirOp::Open {
            name: name.into(),
            flags: OpenFlags {
                create: true,
                exclusive: excl,
                truncate: false,
                mode: 0o600,
                write: true,
            },
            who: Caller::default(),
        };
        let now_ms = self.now;
        self.feed(at, MemberInput::Propose { req, op, now_ms });
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes.values().find_map(|(m, _)| {
            let l = m.leader()?;
            (self.nodes.get(&l).map(|(lm, _)| lm.leader()) == Some(Some(l))).then_some(l)
        })
    }

    fn kill(&mut self, node: NodeId) {
        self.nodes.remove(&node);
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let now_ms = self.now;
            self.feed(id, MemberInput::LinkDown { node, now_ms });
        }
    }
}

#[test]
fn a_cluster_forms_and_agrees_on_segments() {
    let mut net = Net::new(3);
    net.run(3000);
    assert!(net.leader().is_some(), "a leader");
    for (m, _) in net.nodes.values() {
        assert_eq!(m.members().len(), 3, "every node joined: {:?}", m.members());
    }
    net.open(NodeId(2), 1, "/a", true);
    net.run(500);
    let a = net.replies[&(NodeId(2), 1)].clone().expect("created");
    net.open(NodeId(3), 1, "/a", true);
    net.run(500);
    assert_eq!(net.replies[&(NodeId(3), 1)], Err(ShmError::AlreadyExists));
    for (m, _) in net.nodes.values() {
        assert_eq!(m.with_directory(|d| d.get(a.id).cloned()), Some(a.clone()));
    }
}

#[test]
fn a_restarted_node_rejoins_as_a_new_incarnation_and_ids_are_not_reused() {
    let mut net = Net::new(3);
    net.run(3000);
    net.open(NodeId(2), 1, "/a", true);
    net.run(500);
    let a = net.replies[&(NodeId(2), 1)].clone().expect("created");
    // The seed (node 1) dies and comes back with nothing.
    net.kill(NodeId(1));
    net.run(2000);
    net.open(NodeId(3), 2, "/b", true);
    net.run_until_answered(NodeId(3), 2, 30_000);
    let b = net.replies[&(NodeId(3), 2)]
        .clone()
        .expect("a majority still creates");
    assert_ne!((b.id, b.base), (a.id, a.base));
    net.start(NodeId(1), 3);
    net.relink();
    net.run(3000);
    let (m1, inc1) = &net.nodes[&NodeId(1)];
    assert!(
        m1.is_alive(NodeId(1), *inc1),
        "rejoined: {:?}",
        m1.members()
    );
    assert_eq!(
        m1.with_directory(|d| d.get(a.id).cloned()),
        Some(a.clone()),
        "the restarted node knows the live segments"
    );
    net.open(NodeId(1), 1, "/c", true);
    net.run_until_answered(NodeId(1), 1, 30_000);
    let c = net.replies[&(NodeId(1), 1)].clone().expect("created");
    assert!(c.id != a.id && c.id != b.id && c.base != a.base && c.base != b.base);
    assert!(
        net.died.iter().any(|&(_, d)| d == NodeId(1)),
        "the old incarnation's death was committed"
    );
}

#[test]
fn a_cut_off_member_is_declared_dead_and_the_minority_cannot_create() {
    let mut net = Net::new(3);
    net.run(3000);
    net.cut.insert(pair(NodeId(3), NodeId(1)));
    net.cut.insert(pair(NodeId(3), NodeId(2)));
    net.relink();
    net.open(NodeId(3), 7, "/x", false);
    net.open(NodeId(1), 7, "/y", false);
    net.run(7000);
    assert!(net.replies[&(NodeId(1), 7)].is_ok(), "the majority works");
    assert_eq!(
        net.replies.get(&(NodeId(3), 7)),
        Some(&Err(ShmError::TimedOut)),
        "the minority fails, within its bound"
    );
    assert!(net
        .died
        .iter()
        .any(|&(at, d)| at == NodeId(1) && d == NodeId(3)));
}

#[test]
fn two_nodes_survive_a_restart_of_either() {
    for restarted in [NodeId(1), NodeId(2)] {
        let mut net = Net::new(2);
        net.run(3000);
        net.open(NodeId(2), 1, "/a", true);
        net.run(500);
        let a = net.replies[&(NodeId(2), 1)].clone().expect("created");
        net.kill(restarted);
        net.run(500);
        net.start(restarted, 2);
        net.relink();
        net.run(4000);
        let (m, inc) = &net.nodes[&restarted];
        assert!(m.is_alive(restarted, *inc), "rejoined: {:?}", m.members());
        net.open(restarted, 2, "/b", true);
        net.run_until_answered(restarted, 2, 30_000);
        let b = net.replies[&(restarted, 2)].clone().expect("created");
        assert_ne!((a.id, a.base), (b.id, b.base));
        let other = if restarted == NodeId(1) {
            NodeId(2)
        } else {
            NodeId(1)
        };
        net.open(other, 3, "/a", false);
        net.run(1000);
        assert_eq!(net.replies[&(other, 3)].as_ref().map(|m| m.id), Ok(a.id));
    }
}

#[test]
fn a_node_joins_through_a_member_that_is_not_the_leader() {
    let mut net = Net::new(3);
    net.run(3000);
    let leader = net.leader().expect("a leader");
    let seed = (1..=3).map(NodeId).find(|&n| n != leader).unwrap();
    net.open(NodeId(2), 1, "/a", true);
    net.run(500);
    let a = net.replies[&(NodeId(2), 1)].clone().expect("created");
    // Node 9 knows only the seed's address: linked to it alone.
    let joiner = NodeId(9);
    net.start_joining(joiner);
    for n in 1..=3 {
        if NodeId(n) != seed {
            net.cut.insert(pair(NodeId(n), joiner));
        }
    }
    net.relink();
    net.run(2000);
    for (&n, (m, _)) in &net.nodes {
        if n != joiner {
            let nine = m
                .incarnation_of(joiner)
                .expect("its join committed everywhere");
            assert_eq!(nine.addr, Some(addr(joiner)), "with its address");
        }
    }
    // Every member dials the address it learned from the log.
    net.cut.clear();
    net.relink();
    net.run(3000);
    let (m9, inc9) = &net.nodes[&joiner];
    assert!(m9.is_alive(joiner, *inc9) && m9.formed());
    assert_eq!(m9.founders(), vec![NodeId(1), NodeId(2), NodeId(3)]);
    assert_eq!(m9.with_directory(|d| d.get(a.id).cloned()), Some(a));
    // It is a voter: with node 9, four voters, and a create still commits with one founder
    // down.
    net.kill(NodeId(3));
    net.open(joiner, 1, "/b", true);
    net.run(6000);
    assert!(net.replies[&(joiner, 1)].is_ok(), "{:?}", net.replies);
}
