//! The daemon's reply as the shim decodes it.
#![no_main]
use dsm_proto::client::{Push, Reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dsm_proto::frame::decode::<Reply>(data);
    let _ = dsm_proto::frame::decode::<Push>(data);
});
