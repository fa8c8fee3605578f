//! Exhaustive model checking of the coherence core: every interleaving of 3 nodes doing reads
//! and writes on 2 pages, over per-pair FIFO channels, for each manager.
//!
//! In every reachable state: single writer / multiple readers, no process holding more than its
//! node, no holder of a stale copy. At every read: the latest written version. Every state with
//! nothing left to do has every fault granted and nothing in flight (no deadlock), and the state
//! graph has no cycle (no livelock: every fault is eventually granted, since every path ends).
//!
//! With failures: a daemon may die at any step (SIGKILL: its copies and everything sent to it
//! are gone; what it sent may still arrive until each survivor hears of the death) and come back
//! as a new incarnation with nothing. Then, among the live nodes: still a single writer, no
//! stale copy, every read the latest version; and every fault ends, granted or failed with
//! `Lost` (SIGBUS) — never a hang.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{report, Step, World};
use dsm_core::ManagerKind;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    OnPath,
    Done,
}

struct Report {
    states: usize,
    terminal: usize,
    max_depth: usize,
}

/// Whether the large worlds run (`scripts/test --long`, which CI runs): without it each
/// manager's world takes one operation per process instead of two, so the default suite's
/// model checks stay within about two minutes.
fn long() -> bool {
    std::env::var_os("DSM_LONG").is_some()
}

/// Operations per process: `quick` by default, `full` with `scripts/test --long`.
fn ops(quick: u8, full: u8) -> u8 {
    if long() {
        full
    } else {
        quick
    }
}

/// Depth-first search over fingerprints; an edge back to a state on the current path is a cycle.
/// Says how far it got every 10 s on stderr (past the test harness's capture), so a long run
/// shows progress.
fn explore(what: &str, initial: World) -> Result<Report, String> {
    use std::io::Write;
    let started = Instant::now();
    let mut said = Instant::now();
    let mut marks: HashMap<u64, Mark> = HashMap::new();
    let mut terminal = 0;
    let mut max_depth = 0;
    // (state, its steps, next step to try, the path that led here)
    let mut stack: Vec<(World, Vec<Step>, usize)> = Vec::new();
    let mut trail: Vec<Step> = Vec::new();
    marks.insert(initial.fingerprint(), Mark::OnPath);
    let steps = initial.steps();
    stack.push((initial, steps, 0));
    while let Some((world, steps, next)) = stack.last_mut() {
        max_depth = max_depth.max(trail.len());
        if *next == steps.len() {
            if steps.is_empty() {
                terminal += 1;
                if !world.quiescent() {
                    return Err(format!("deadlock after {trail:?}:\n{world:#?}"));
                }
            }
            marks.insert(world.fingerprint(), Mark::Done);
            stack.pop();
            trail.pop();
            continue;
        }
        let step = steps[*next];
        *next += 1;
        let mut successor = world.clone();
        if let Err(broken) = successor.step(step) {
            trail.push(step);
            return Err(format!("{broken}\nafter {trail:?}"));
        }
        let fp = successor.fingerprint();
        match marks.get(&fp) {
            Some(Mark::OnPath) => {
                trail.push(step);
                return Err(format!("cycle (livelock) after {trail:?}"));
            }
            Some(Mark::Done) => continue,
            None => {
                marks.insert(fp, Mark::OnPath);
                if marks.len().is_multiple_of(65_536) && said.elapsed() >= Duration::from_secs(10) {
                    said = Instant::now();
                    let secs = started.elapsed().as_secs_f64();
                    let _ = writeln!(
                        std::io::stderr(),
                        "  model check {what}: {} states so far, {:.0} states/s, {secs:.0} s",
                        marks.len(),
                        marks.len() as f64 / secs
                    );
                }
                let steps = successor.steps();
                trail.push(step);
                stack.push((successor, steps, 0));
            }
        }
    }
    Ok(Report {
        states: marks.len(),
        terminal,
        max_depth,
    })
}

fn check(manager: ManagerKind, nodes: usize, pages: usize, ops: u8) {
    check_with(manager, nodes, pages, ops, 0);
}

fn check_failures(manager: ManagerKind, nodes: usize, pages: usize, ops: u8) {
    check_crashes(manager, nodes, pages, ops, 1);
}

fn check_crashes(manager: ManagerKind, nodes: usize, pages: usize, ops: u8, restarts: u8) {
    let world = World::new(nodes, pages, ops, manager).with_failures(1, restarts);
    let what = format!(
        "{} with a crash{}: {nodes} nodes, {pages} pages, {ops} ops each",
        manager.as_str(),
        if restarts > 0 { " and a restart" } else { "" }
    );
    explore_world(&what, world);
}

/// Explores `world` exhaustively; reports its size, or panics with what broke.
fn explore_world(what: &str, world: World) {
    let started = Instant::now();
    match explore(what, world) {
        Ok(r) => report(format_args!(
            "model check {what}: {} states, {} terminal, depth {}, {:.1?} — all invariants hold",
            r.states,
            r.terminal,
            r.max_depth,
            started.elapsed()
        )),
        Err(e) => panic!("model check {what} failed: {e}"),
    }
}

/// The dynamic manager takes a dead owner's pages over (locate, freeze, adopt), which makes its
/// worlds with a crash *and a restart* too large for every CI run (tens of millions of states):
/// run by hand with `cargo test --release -p dsm-core --test model_check -- --ignored` (results
/// in docs/protocol.md). CI explores two pages with a crash, and the simulation restarts.
#[test]
#[ignore]
fn dynamic_manager_crash_and_restart() {
    check_failures(ManagerKind::Dynamic, 3, 2, 1);
}

/// See [`dynamic_manager_crash_and_restart`].
#[test]
#[ignore]
fn dynamic_manager_crash_and_restart_one_page() {
    check_failures(ManagerKind::Dynamic, 3, 1, 1);
}

#[test]
fn dynamic_manager_crash_two_pages() {
    check_crashes(ManagerKind::Dynamic, 3, 2, 1, 0);
}

/// Replicas at release points (`--replicas 1`, dynamic manager): a crash at any step of a
/// write, a release's replication, an ownership hand-over or a takeover; no write released
/// before the death is lost (its page never fails as `Lost`, no read sees older).
#[test]
fn dynamic_manager_replicas_and_a_crash() {
    check_replicas(3, 1, 1);
}

/// [`dynamic_manager_replicas_and_a_crash`] with two operations per process: too large for
/// every CI run; by hand.
#[test]
#[ignore]
fn dynamic_manager_replicas_and_a_crash_two_ops() {
    check_replicas(3, 1, 2);
}

fn check_replicas(nodes: usize, pages: usize, ops: u8) {
    let world = World::new(nodes, pages, ops, ManagerKind::Dynamic)
        .with_failures(1, 0)
        .with_replicas(1, 1);
    let what = format!(
        "dynamic with 1 replica, a release per node and a crash: {nodes} nodes, {pages} pages, {ops} ops each"
    );
    explore_world(&what, world);
}

#[test]
fn fixed_manager_crash_and_restart() {
    check_failures(ManagerKind::Fixed, 3, 2, 1);
}

#[test]
fn central_manager_crash_and_restart() {
    check_failures(ManagerKind::Central, 3, 2, 1);
}

fn check_with(manager: ManagerKind, nodes: usize, pages: usize, ops: u8, readahead: u32) {
    let world = World::with_readahead(nodes, pages, ops, manager, readahead);
    let what = format!(
        "{}{}: {nodes} nodes, {pages} pages, {ops} ops each",
        manager.as_str(),
        if readahead > 0 {
            " with read-ahead"
        } else {
            ""
        }
    );
    explore_world(&what, world);
}

#[test]
fn dynamic_manager_3_nodes_2_pages() {
    check(ManagerKind::Dynamic, 3, 2, ops(1, 2));
}

#[test]
fn fixed_manager_3_nodes_2_pages() {
    check(ManagerKind::Fixed, 3, 2, ops(1, 2));
}

#[test]
fn central_manager_3_nodes_2_pages() {
    check(ManagerKind::Central, 3, 2, ops(1, 2));
}

#[test]
fn dynamic_manager_with_read_ahead() {
    // A read miss on page 0 also requests page 1: prefetches race with writes and invalidations.
    check_with(ManagerKind::Dynamic, 3, 2, 1, 1);
}

/// Read-ahead and a crash: a prefetch that finds its page's owner dead locates the page and,
/// once located, asks for it again (no fault waits for it) — racing with the other nodes'
/// writes, takeovers and invalidations.
#[test]
fn dynamic_manager_with_read_ahead_and_a_crash() {
    let world = World::with_readahead(3, 2, 1, ManagerKind::Dynamic, 1).with_failures(1, 0);
    explore_world(
        "dynamic with read-ahead and a crash: 3 nodes, 2 pages, 1 op each",
        world,
    );
}

/// [`dynamic_manager_with_read_ahead`] with two operations per process: 15.5 million states,
/// five minutes — more than CI's budget holds beside the rest; by hand (`-- --ignored`).
#[test]
#[ignore]
fn dynamic_manager_with_read_ahead_two_ops() {
    check_with(ManagerKind::Dynamic, 3, 2, 2, 1);
}
