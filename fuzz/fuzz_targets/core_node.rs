//! The coherence core driven by arbitrary peer messages (and local faults, revocations and
//! ticks) under every manager: it may call them violations, never panic or allocate without
//! bound. The driver is shared with the regression tests (crates/core/tests/fuzz_driver).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/core/tests/fuzz_driver/mod.rs"]
mod fuzz_driver;

fuzz_target!(|data: &[u8]| {
    let _ = fuzz_driver::node(&mut arbitrary::Unstructured::new(data), false);
});
