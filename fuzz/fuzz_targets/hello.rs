//! The first frame of every local connection, both ways.
#![no_main]
use dsm_proto::hello::{Hello, HelloReply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dsm_proto::frame::decode::<Hello>(data);
    let _ = dsm_proto::frame::decode::<HelloReply<'_>>(data);
});
