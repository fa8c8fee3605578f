//! Every input the fuzzer (scripts/fuzz) found a crash with, replayed in the normal suite with
//! debug assertions as the fuzz build has them: `tests/fuzz_cases/<target>-<what>`.

mod fuzz_driver;

use arbitrary::Unstructured;

fn replay(target: &str, case: &str) {
    let path = format!("{}/tests/fuzz_cases/{case}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let trace = std::env::var_os("DSM_FUZZ_TRACE").is_some();
    let mut u = Unstructured::new(&bytes);
    let _ = match target {
        "core_node" => fuzz_driver::node(&mut u, trace),
        _ => fuzz_driver::service(&mut u, trace),
    };
}

#[test]
fn core_node_send_to_self() {
    replay("core_node", "core_node-send-to-self");
}
