//! The lock service driven by arbitrary local requests and peer messages: answers or refusals,
//! never a panic.
#![no_main]
use arbitrary::{Arbitrary, Unstructured};
use dsm_core::Service;
use dsm_proto::sync::{Owner, SyncKey, SyncMsg, SyncOp};
use dsm_proto::NodeId;
use libfuzzer_sys::fuzz_target;

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let me = NodeId(u.int_in_range(1..=3)?);
    let mut s = Service::new(me, vec![NodeId(1), NodeId(2), NodeId(3)]);
    let mut now = 0u64;
    for ticket in 1..u.int_in_range(2..=200)? {
        match u.int_in_range(0..=4)? {
            0 | 1 => {
                let key: Result<SyncKey, _> = postcard::from_bytes(<&[u8]>::arbitrary(u)?);
                let op: Result<SyncOp, _> = postcard::from_bytes(<&[u8]>::arbitrary(u)?);
                if let (Ok(key), Ok(op)) = (key, op) {
                    let owner = Owner {
                        node: me,
                        session: u.int_in_range(0..=3)?,
                        tid: u.int_in_range(0..=3)?,
                    };
                    if !matches!(op, SyncOp::Abandon) {
                        s.request(ticket, owner, key, op, now);
                    }
                }
            }
            2 => {
                if let Ok(msg) = postcard::from_bytes::<SyncMsg>(<&[u8]>::arbitrary(u)?) {
                    let _ = s.on_peer(NodeId(u.int_in_range(0..=4)?), msg, now);
                }
            }
            3 => {
                now += u.int_in_range(0..=100)?;
                s.tick(now);
            }
            _ => s.process_gone(u.int_in_range(0..=3)?, now),
        }
        while s.poll_output().is_some() {}
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
