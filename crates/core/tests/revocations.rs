//! Exhaustive model check of the daemon's half of invariant 3 with two processes on one node:
//! [`Revocations`] (the real code) between an abstract coherence core and two processes that
//! behave as the shim does (`shim/src/revoke.rs`).
//!
//! The coherence model (`model_check.rs`) gives each node one process that gives access up at
//! once; here the node's pages move as the core may move them — revoked to a lower access (one
//! page, or all at once as a release does, and again before the first is done), taken back —
//! while each process faults, is granted from the state table or by an answer numbered with
//! [`Revocations::seq`], applies pushed revocations in order, acknowledges them, and may die.
//! Messages between the daemon and a process are FIFO per direction, delivered at any time.
//!
//! In every reachable state a live process holds no more of a page than the node; when the
//! core is told `Revoked`, no live process holds more than the revocation left; and a state
//! with nothing in flight has no revocation under way (none waits for ever).

use std::collections::{HashSet, VecDeque};

use dsm_core::{Revocations, RevokeInput, RevokeOutput};
use dsm_proto::peer::PageKey;
use dsm_proto::{Access, SegmentId, SessionId};

const PROCESSES: usize = 2;

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct Process {
    alive: bool,
    /// Its protection of each page.
    prot: Vec<Access>,
    /// The highest revocation number it applied (the shim's `LAST_APPLIED`).
    last_applied: u64,
    /// The fault it waits on: (page, access needed).
    faulting: Option<(usize, Access)>,
    /// Faults it may still take.
    faults_left: u8,
    /// Pushed revocations not yet applied: (first page, count, access, seq).
    pushes: VecDeque<(usize, usize, Access, u64)>,
    /// The daemon's answer to its fault, not yet read: (access, seq).
    answer: Option<(Access, u64)>,
    /// Acknowledgements on their way to the daemon.
    acks: VecDeque<u64>,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct World {
    /// What the node holds of each page (the core's access, until `Revoked` lowers it).
    node: Vec<Access>,
    /// The revocation under way per page: the access processes keep.
    revoking: Vec<Option<Access>>,
    /// The state table: what processes may take without asking.
    table: Vec<Access>,
    processes: Vec<Process>,
    revocations: Revocations,
    /// Core steps left (revocations, pages taken back), and deaths left.
    core_left: u8,
    deaths_left: u8,
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// The core revokes `page` (or every page: `None`) down to `to`.
    Revoke(Option<usize>, Access),
    /// The node gets `page` back with write access (a peer granted it).
    Regain(usize),
    /// The daemon answers process `p`'s fault.
    Answer(usize),
    /// Process `p` faults on `page` for `need`.
    Fault(usize, usize, Access),
    /// Process `p` reads its answer.
    ReadAnswer(usize),
    /// Process `p` applies its next pushed revocation.
    Apply(usize),
    /// Process `p`'s next acknowledgement reaches the daemon.
    Ack(usize),
    /// Process `p` dies.
    Die(usize),
}

fn key(page: usize) -> PageKey {
    PageKey {
        segment: SegmentId(1),
        page: page as u32,
    }
}

impl World {
    fn new(pages: usize, core_left: u8, faults: u8, deaths: u8) -> World {
        World {
            node: vec![Access::Write; pages],
            revoking: vec![None; pages],
            table: vec![Access::Write; pages],
            processes: vec![
                Process {
                    alive: true,
                    prot: vec![Access::None; pages],
                    last_applied: 0,
                    faulting: None,
                    faults_left: faults,
                    pushes: VecDeque::new(),
                    answer: None,
                    acks: VecDeque::new(),
                };
                PROCESSES
            ],
            revocations: Revocations::new(),
            core_left,
            deaths_left: deaths,
        }
    }

    /// What the core would grant a process of `page` now.
    fn grantable(&self, page: usize) -> Access {
        match self.revoking[page] {
            Some(to) => to.min(self.node[page]),
            None => self.node[page],
        }
    }

    fn steps(&self) -> Vec<Step> {
        let pages = self.node.len();
        let mut steps = Vec::new();
        if self.core_left > 0 {
            for page in 0..pages {
                for to in [Access::None, Access::Read] {
                    if to < self.grantable(page) {
                        steps.push(Step::Revoke(Some(page), to));
                    }
                }
                if self.revoking[page].is_none() && self.node[page] < Access::Write {
                    steps.push(Step::Regain(page));
                }
            }
            if pages > 1 && (0..pages).all(|p| self.grantable(p) == Access::Write) {
                steps.push(Step::Revoke(None, Access::Read));
            }
        }
        for (p, proc) in self.processes.iter().enumerate() {
            if !proc.alive {
                continue;
            }
            if let Some((page, need)) = proc.faulting {
                if proc.answer.is_none() && self.grantable(page) >= need {
                    steps.push(Step::Answer(p));
                }
            } else if proc.faults_left > 0 {
                for page in 0..pages {
                    for need in [Access::Read, Access::Write] {
                        if proc.prot[page] < need {
                            steps.push(Step::Fault(p, page, need));
                        }
                    }
                }
            }
            if proc.answer.is_some() {
                steps.push(Step::ReadAnswer(p));
            }
            if !proc.pushes.is_empty() {
                steps.push(Step::Apply(p));
            }
            if !proc.acks.is_empty() {
                steps.push(Step::Ack(p));
            }
            if self.deaths_left > 0 {
                steps.push(Step::Die(p));
            }
        }
        steps
    }

    fn step(&mut self, step: Step) -> Result<(), String> {
        match step {
            Step::Revoke(which, to) => {
                self.core_left -= 1;
                let pages: Vec<usize> = match which {
                    Some(page) => vec![page],
                    None => (0..self.node.len()).collect(),
                };
                let mapped: Vec<SessionId> = (0..PROCESSES)
                    .filter(|&p| self.processes[p].alive)
                    .map(|p| SessionId(p as u64 + 1))
                    .collect();
                for page in pages {
                    self.revoking[page] = Some(to);
                    // The table is lowered before any push goes out.
                    self.table[page] = self.table[page].min(to);
                    self.revocations.handle(RevokeInput::Revoke {
                        key: key(page),
                        to,
                        processes: mapped.clone(),
                    });
                }
            }
            Step::Regain(page) => {
                self.core_left -= 1;
                self.node[page] = Access::Write;
                self.table[page] = Access::Write;
            }
            Step::Answer(p) => {
                let (page, _) = self.processes[p].faulting.expect("faulting");
                let access = self.grantable(page);
                let seq = self.revocations.seq();
                self.processes[p].answer = Some((access, seq));
            }
            Step::Fault(p, page, need) => {
                let table = self.table[page];
                let proc = &mut self.processes[p];
                proc.faults_left -= 1;
                // The shim reads the table under the lock revocations are applied under.
                if table >= need {
                    proc.prot[page] = table;
                } else {
                    proc.faulting = Some((page, need));
                }
            }
            Step::ReadAnswer(p) => {
                let proc = &mut self.processes[p];
                let (access, seq) = proc.answer.take().expect("answer");
                let (page, _) = proc.faulting.take().expect("faulting");
                // A revocation applied since the answer was made: refused, fault again.
                if proc.last_applied <= seq {
                    proc.prot[page] = access;
                }
            }
            Step::Apply(p) => {
                let proc = &mut self.processes[p];
                let (first, count, access, seq) = proc.pushes.pop_front().expect("push");
                for page in first..first + count {
                    proc.prot[page] = access;
                }
                proc.last_applied = proc.last_applied.max(seq);
                proc.acks.push_back(seq);
            }
            Step::Ack(p) => {
                let seq = self.processes[p].acks.pop_front().expect("ack");
                self.revocations.handle(RevokeInput::Acked {
                    process: SessionId(p as u64 + 1),
                    seq,
                });
            }
            Step::Die(p) => {
                self.deaths_left -= 1;
                let proc = &mut self.processes[p];
                proc.alive = false;
                proc.pushes.clear();
                proc.acks.clear();
                proc.answer = None;
                proc.faulting = None;
                self.revocations.handle(RevokeInput::Gone {
                    process: SessionId(p as u64 + 1),
                });
            }
        }
        self.drain()?;
        self.check()
    }

    /// The daemon drains the revocations' outputs after each input.
    fn drain(&mut self) -> Result<(), String> {
        while let Some(out) = self.revocations.poll_output() {
            match out {
                RevokeOutput::Push {
                    process,
                    page,
                    count,
                    access,
                    seq,
                    ..
                } => {
                    let p = process.0 as usize - 1;
                    if !self.processes[p].alive {
                        return Err(format!("pushed to dead process {p}"));
                    }
                    self.processes[p].pushes.push_back((
                        page as usize,
                        count as usize,
                        access,
                        seq,
                    ));
                }
                RevokeOutput::Revoked { key } => {
                    let page = key.page as usize;
                    let Some(to) = self.revoking[page].take() else {
                        return Err(format!("Revoked for page {page}, which was not revoking"));
                    };
                    for (p, proc) in self.processes.iter().enumerate() {
                        if proc.alive && proc.prot[page] > to {
                            return Err(format!(
                                "page {page} revoked to {to:?} while process {p} holds {:?}",
                                proc.prot[page]
                            ));
                        }
                    }
                    self.node[page] = self.node[page].min(to);
                }
                RevokeOutput::Violation { process, what } => {
                    return Err(format!("violation by {process:?}: {what}"))
                }
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        for (p, proc) in self.processes.iter().enumerate() {
            for (page, &prot) in proc.prot.iter().enumerate() {
                if proc.alive && prot > self.node[page] {
                    return Err(format!(
                        "process {p} holds {prot:?} of page {page}, the node {:?}",
                        self.node[page]
                    ));
                }
            }
        }
        let quiet = self
            .processes
            .iter()
            .all(|p| p.pushes.is_empty() && p.acks.is_empty());
        if quiet && (self.revoking.iter().any(Option::is_some) || self.revocations.pending() > 0) {
            return Err("a revocation waits with nothing in flight".into());
        }
        Ok(())
    }
}

/// Every state reachable from `initial`; the first violation with the steps that led to it.
fn explore(initial: World) -> Result<usize, String> {
    let mut seen: HashSet<World> = HashSet::new();
    let mut stack: Vec<(World, Vec<Step>)> = vec![(initial, Vec::new())];
    while let Some((world, path)) = stack.pop() {
        if !seen.insert(world.clone()) {
            continue;
        }
        for step in world.steps() {
            let mut next = world.clone();
            let mut trail = path.clone();
            trail.push(step);
            if let Err(e) = next.step(step) {
                return Err(format!("{e}\nafter {trail:?}"));
            }
            if !seen.contains(&next) {
                stack.push((next, trail));
            }
        }
    }
    Ok(seen.len())
}

#[test]
fn two_processes_one_page_every_interleaving() {
    let states = explore(World::new(1, 4, 3, 1)).unwrap();
    println!("{states} states");
    assert!(states > 1_000, "{states}");
}

#[test]
fn two_processes_two_pages_batched_revocations() {
    let states = explore(World::new(2, 3, 1, 1)).unwrap();
    println!("{states} states");
    assert!(states > 1_000, "{states}");
}

/// The check finds what it is for: a process that applies a grant made before a revocation it
/// already applied (the shim without its sequence check) holds more than the node.
#[test]
fn a_grant_applied_after_a_later_revocation_is_caught() {
    let mut w = World::new(1, 2, 2, 0);
    let steps = [
        Step::Fault(0, 0, Access::Write), // table says Write: granted at once
        Step::Revoke(Some(0), Access::None),
    ];
    for s in steps {
        w.step(s).unwrap();
    }
    // Process 1 faulted before the revocation and was answered Write at seq 0...
    w.processes[1].faulting = Some((0, Access::Write));
    w.processes[1].answer = Some((Access::Write, 0));
    // ...then applies the revocation and acknowledges it: the node lets the page go.
    w.step(Step::Apply(1)).unwrap();
    w.step(Step::Ack(1)).unwrap();
    w.step(Step::Apply(0)).unwrap();
    w.step(Step::Ack(0)).unwrap();
    assert_eq!(w.node[0], Access::None);
    // With the sequence check the stale answer is refused.
    let mut checked = w.clone();
    checked.step(Step::ReadAnswer(1)).unwrap();
    assert_eq!(checked.processes[1].prot[0], Access::None);
    // Without it, the process would hold Write of a page the node gave away.
    w.processes[1].prot[0] = Access::Write;
    assert!(w.check().is_err());
}
