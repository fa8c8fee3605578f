//! dsmctl's requests (decoded by the daemon) and the daemon's answers (decoded by dsmctl).
#![no_main]
use dsm_proto::ctl::{CtlReply, CtlRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dsm_proto::frame::decode::<CtlRequest>(data);
    let _ = dsm_proto::frame::decode_owned::<CtlReply>(data);
});
