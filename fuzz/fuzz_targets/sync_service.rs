//! The lock service driven by arbitrary local requests and peer messages: answers or refusals,
//! never a panic. The driver is shared with the regression tests (crates/core/tests/fuzz_driver).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/core/tests/fuzz_driver/mod.rs"]
mod fuzz_driver;

fuzz_target!(|data: &[u8]| {
    let _ = fuzz_driver::service(&mut arbitrary::Unstructured::new(data), false);
});
