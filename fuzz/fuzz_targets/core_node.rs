//! The coherence core driven by arbitrary peer messages (and local faults, revocations and
//! ticks) under every manager: it may call them violations, never panic or allocate without
//! bound.
#![no_main]
use arbitrary::{Arbitrary, Unstructured};
use dsm_core::{Config, FaultId, Input, ManagerKind, Node};
use dsm_proto::peer::{PageKey, PeerMsg};
use dsm_proto::{NodeId, SegmentId};
use libfuzzer_sys::fuzz_target;

fn key(u: &mut Unstructured<'_>) -> arbitrary::Result<PageKey> {
    let segment = if bool::arbitrary(u)? {
        SegmentId::new(NodeId(u.int_in_range(0..=4)?), u.int_in_range(0..=2)?)
    } else {
        SegmentId(u64::arbitrary(u)?)
    };
    let page = if bool::arbitrary(u)? { u.int_in_range(0..=8)? } else { u32::arbitrary(u)? };
    Ok(PageKey { segment, page })
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let manager = *u.choose(&[ManagerKind::Dynamic, ManagerKind::Fixed, ManagerKind::Central])?;
    let me = NodeId(u.int_in_range(1..=3)?);
    let mut node = Node::new(Config {
        me,
        members: vec![NodeId(1), NodeId(2), NodeId(3)],
        manager,
        fault_timeout_ms: 100,
        readahead: u.int_in_range(0..=8)?,
    });
    let mut now = 0u64;
    for step in 0..u.int_in_range(1..=200)? {
        let input = match u.int_in_range(0..=5)? {
            0 => Input::Fault {
                id: FaultId(step),
                key: key(u)?,
                write: bool::arbitrary(u)?,
                pages: u.int_in_range(1..=16)?,
                now_ms: now,
            },
            1 => Input::Revoked { key: key(u)? },
            2 => {
                now += u.int_in_range(0..=200)?;
                Input::Tick { now_ms: now }
            }
            _ => {
                let from = NodeId(u.int_in_range(0..=4)?);
                let bytes = <&[u8]>::arbitrary(u)?;
                let msg = match postcard::from_bytes::<PeerMsg>(bytes) {
                    Ok(m) => m,
                    Err(_) => PeerMsg::Request {
                        key: key(u)?,
                        write: bool::arbitrary(u)?,
                        requester: NodeId(u.int_in_range(0..=4)?),
                    },
                };
                Input::Peer { from, msg }
            }
        };
        node.handle(input);
        while node.poll_output().is_some() {}
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
