//! Everything a peer daemon sends.
#![no_main]
use dsm_proto::peer::PeerFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = dsm_proto::frame::decode::<PeerFrame>(data) {
        let again = dsm_proto::frame::encode(&f).expect("a decoded frame encodes");
        assert!(!again.is_empty());
    }
});
