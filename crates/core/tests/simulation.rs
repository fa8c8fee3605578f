//! Deterministic simulation: thousands of random schedules over more nodes, pages and
//! operations than the model checker can reach, also with daemons dying (SIGKILL: copies and
//! messages to them lost, messages from them arriving or not) and coming back as new
//! incarnations. Each run is a seed; a failure prints it, and
//! `DSM_SIM_SEED=<seed> cargo test -p dsm-core --test simulation` replays exactly that run;
//! `DSM_SIM_SCALE=<n>` runs n times as many seeds.

mod common;

use common::{report, Rng, Step, World};
use dsm_core::ManagerKind;

/// Runs one random schedule to the end; returns (steps, messages) or what broke.
fn run(
    seed: u64,
    manager: ManagerKind,
    nodes: usize,
    pages: usize,
    ops: u8,
    failures: u8,
    replicas: u8,
) -> Result<(u64, u64, u64), String> {
    let mut rng = Rng::new(seed);
    let mut world = World::new(nodes, pages, ops, manager).with_failures(failures, failures);
    if replicas > 0 {
        world = world.with_replicas(replicas, ops / 2);
    }
    let limit = 200_000u64;
    let mut taken = 0u64;
    loop {
        let steps = world.steps();
        if steps.is_empty() {
            if !world.quiescent() {
                return Err(format!(
                    "deadlock after {taken} steps\n{}",
                    world.describe()
                ));
            }
            return Ok((taken, world.messages(), world.adopted()));
        }
        // Bias towards delivering messages sometimes, so both queue-heavy and eager schedules
        // are common.
        // Deaths and restarts are rare events among the others.
        let rare = |s: &Step| matches!(s, Step::Crash { .. } | Step::Restart { .. });
        let steps: Vec<Step> = if rng.below(40) == 0 || steps.iter().all(rare) {
            steps
        } else {
            steps.into_iter().filter(|s| !rare(s)).collect()
        };
        let step = steps[rng.below(steps.len())];
        world
            .step(step)
            .map_err(|e| format!("{e} (step {taken}: {step:?})"))?;
        taken += 1;
        if taken > limit {
            return Err(format!("no end after {limit} steps: livelock"));
        }
    }
}

fn sweep(manager: ManagerKind, nodes: usize, pages: usize, ops: u8, seeds: u64) {
    sweep_with(manager, nodes, pages, ops, seeds, 0);
}

fn sweep_with(manager: ManagerKind, nodes: usize, pages: usize, ops: u8, seeds: u64, failures: u8) {
    sweep_replicated(manager, nodes, pages, ops, seeds, failures, 0);
}

fn sweep_replicated(
    manager: ManagerKind,
    nodes: usize,
    pages: usize,
    ops: u8,
    seeds: u64,
    failures: u8,
    replicas: u8,
) {
    if let Ok(seed) = std::env::var("DSM_SIM_SEED") {
        let seed: u64 = seed.parse().expect("DSM_SIM_SEED is a number");
        let result = run(seed, manager, nodes, pages, ops, failures, replicas);
        assert!(result.is_ok(), "seed {seed}: {}", result.unwrap_err());
        return;
    }
    // `DSM_SIM_SCALE=N` runs N times as many seeds (a longer sweep by hand).
    let scale: u64 = std::env::var("DSM_SIM_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let seeds = seeds * scale;
    let (mut steps, mut messages, mut adopted) = (0, 0, 0);
    for seed in 0..seeds {
        match run(seed, manager, nodes, pages, ops, failures, replicas) {
            Ok((s, m, a)) => {
                steps += s;
                messages += m;
                adopted += a;
            }
            Err(e) => panic!(
                "{} manager, seed {seed}: {e}\nreplay: DSM_SIM_SEED={seed} cargo test -p dsm-core --test simulation",
                manager.as_str()
            ),
        }
    }
    report(format_args!(
        "simulation {}: {seeds} schedules of {nodes} nodes, {pages} pages, {ops} ops each{}{}: {steps} steps, {messages} messages{}, all invariants held",
        manager.as_str(),
        if replicas > 0 { format!(", {replicas} replicas") } else { String::new() },
        if failures > 0 { format!(", up to {failures} crashes and restarts") } else { String::new() },
        if adopted > 0 { format!(", {adopted} pages taken over from a surviving copy") } else { String::new() }
    ));
}

#[test]
fn dynamic_manager_random_schedules() {
    sweep(ManagerKind::Dynamic, 5, 4, 20, 5000);
    sweep(ManagerKind::Dynamic, 8, 2, 10, 500);
}

#[test]
fn random_schedules_with_crashes_and_restarts() {
    for manager in [
        ManagerKind::Dynamic,
        ManagerKind::Fixed,
        ManagerKind::Central,
    ] {
        sweep_with(manager, 5, 4, 12, 4000, 2);
        sweep_with(manager, 8, 2, 10, 1500, 4);
        sweep_with(manager, 6, 3, 12, 1500, 3);
    }
}

#[test]
fn fixed_manager_random_schedules() {
    sweep(ManagerKind::Fixed, 5, 4, 20, 5000);
    sweep(ManagerKind::Fixed, 8, 2, 10, 500);
}

#[test]
fn central_manager_random_schedules() {
    sweep(ManagerKind::Central, 5, 4, 20, 5000);
    sweep(ManagerKind::Central, 8, 2, 10, 500);
}

/// `--replicas K` with up to K crashes: no write released before a death is ever lost (a
/// fault on its page is never `Lost`, a read never sees older than it), and nothing else
/// changes.
#[test]
fn random_schedules_with_replicas_lose_no_released_write() {
    sweep_replicated(ManagerKind::Dynamic, 5, 4, 12, 3000, 1, 1);
    sweep_replicated(ManagerKind::Dynamic, 6, 3, 12, 1500, 2, 2);
    sweep_replicated(ManagerKind::Dynamic, 4, 2, 10, 2000, 0, 1);
}
