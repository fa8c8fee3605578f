//! Drivers shared by the fuzz targets (`fuzz/fuzz_targets/core_node.rs`, `sync_service.rs`) and
//! the regression tests that replay what the fuzzer found (`tests/fuzz_regressions.rs`): bytes
//! become a sequence of inputs to the core's state machines. `trace` prints each input.

#![allow(dead_code)]

use arbitrary::{Arbitrary, Unstructured};
use dsm_core::{Config, FaultId, Input, ManagerKind, Node, Service};
use dsm_proto::peer::{PageKey, PeerMsg};
use dsm_proto::sync::{Owner, SyncKey, SyncMsg, SyncOp};
use dsm_proto::{NodeId, SegmentId};

fn key(u: &mut Unstructured<'_>) -> arbitrary::Result<PageKey> {
    let segment = if bool::arbitrary(u)? {
        SegmentId::new(NodeId(u.int_in_range(0..=4)?), u.int_in_range(0..=2)?)
    } else {
        SegmentId(u64::arbitrary(u)?)
    };
    let page = if bool::arbitrary(u)? {
        u.int_in_range(0..=8)?
    } else {
        u32::arbitrary(u)?
    };
    Ok(PageKey { segment, page })
}

pub fn node(u: &mut Unstructured<'_>, trace: bool) -> arbitrary::Result<()> {
    let manager = *u.choose(&[
        ManagerKind::Dynamic,
        ManagerKind::Fixed,
        ManagerKind::Central,
    ])?;
    let me = NodeId(u.int_in_range(1..=3)?);
    let mut node = Node::new(Config {
        me,
        members: vec![NodeId(1), NodeId(2), NodeId(3)],
        manager,
        fault_timeout_ms: 100,
        readahead: u.int_in_range(0..=8)?,
        incarnation: 1,
        replicas: 1,
    });
    let mut now = 0u64;
    for step in 0..u.int_in_range(1..=200)? {
        let input = match u.int_in_range(0..=8)? {
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
            3 => Input::PeerDown {
                node: NodeId(u.int_in_range(0..=4)?),
            },
            4 => Input::PeerUp {
                node: NodeId(u.int_in_range(0..=4)?),
                incarnation: u.int_in_range(0..=3)?,
            },
            5 => Input::Orphaned {
                segment: key(u)?.segment,
            },
            _ => {
                let from = NodeId(u.int_in_range(0..=4)?);
                let bytes = <&[u8]>::arbitrary(u)?;
                let msg = match postcard::from_bytes::<PeerMsg>(bytes) {
                    Ok(m) => m,
                    Err(_) => PeerMsg::Request {
                        key: key(u)?,
                        write: bool::arbitrary(u)?,
                        requester: NodeId(u.int_in_range(0..=4)?),
                        seq: u.int_in_range(0..=3)?,
                        incarnation: u.int_in_range(0..=3)?,
                        hops: u.int_in_range(0..=4)?,
                    },
                };
                Input::Peer { from, msg }
            }
        };
        if trace {
            eprintln!("{me:?} <- {input:?}");
        }
        node.handle(input);
        while node.poll_output().is_some() {}
    }
    Ok(())
}

pub fn service(u: &mut Unstructured<'_>, trace: bool) -> arbitrary::Result<()> {
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
                        if trace {
                            eprintln!("{me:?} request {ticket}: {op:?} on {key:?} by {owner:?}");
                        }
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
