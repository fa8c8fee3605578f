//! A client's request as the daemon decodes it from a local socket.
#![no_main]
use dsm_proto::client::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = dsm_proto::frame::decode::<Request<'_>>(data) {
        let _ = r.touches();
        // Whatever decodes encodes again.
        let again = dsm_proto::frame::encode(&r).expect("a decoded request encodes");
        assert!(!again.is_empty());
    }
});
