//! Benchmark figure 6: coherence messages per fault under random access, for each manager on 3,
//! 5 and 8 nodes, next to what Li & Hudak's analysis predicts. Runs the protocol core in the
//! deterministic simulator (no IO, no timing): each node's process reads or writes uniformly
//! random pages, in random interleavings. Prints one JSON line per configuration.

#[path = "../tests/common/mod.rs"]
mod common;

use common::World;
use dsm_core::ManagerKind;

const PAGES: usize = 16;
const OPS_PER_NODE: u8 = 60;
const SEEDS: u64 = 40;

fn main() {
    for manager in [
        ManagerKind::Dynamic,
        ManagerKind::Fixed,
        ManagerKind::Central,
    ] {
        for nodes in [3usize, 5, 8] {
            let (mut messages, mut misses, mut forwards, mut invalidations) =
                (0u64, 0u64, 0u64, 0u64);
            for seed in 0..SEEDS {
                let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut world = World::new(nodes, PAGES, OPS_PER_NODE, manager);
                loop {
                    let steps = world.steps();
                    if steps.is_empty() {
                        break;
                    }
                    rng ^= rng >> 12;
                    rng ^= rng << 25;
                    rng ^= rng >> 27;
                    let pick = rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % steps.len() as u64;
                    world.step(steps[pick as usize]).expect("invariants hold");
                }
                for node in &world.nodes {
                    let s = node.stats();
                    messages += s.messages_sent;
                    misses += s.remote_reads + s.remote_writes + s.upgrades;
                    forwards += s.forwarded;
                    invalidations += s.invalidations_sent;
                }
            }
            let n = nodes as f64;
            // Fixed and central managers, a miss with requester, manager and owner independent
            // and uniform: request and confirmation unless the requester manages the page,
            // a forward unless the manager owns it, and the grant: 3(N-1)/N + 1, plus two
            // messages per copy invalidated on a write.
            let analysis = match manager {
                ManagerKind::Dynamic => None,
                _ => Some(3.0 * (n - 1.0) / n + 1.0),
            };
            println!(
                "{{\"manager\": \"{}\", \"nodes\": {nodes}, \"misses\": {misses}, \"messages_per_miss\": {:.2}, \"forwards_per_miss\": {:.2}, \"invalidations_per_miss\": {:.2}, \"analysis_read_miss\": {}}}",
                manager.as_str(),
                messages as f64 / misses as f64,
                forwards as f64 / misses as f64,
                invalidations as f64 / misses as f64,
                analysis.map_or("null".into(), |a| format!("{a:.2}")),
            );
        }
    }
}
