//! Writes the fuzz targets' seed corpora (`fuzz/corpus/<target>/`): one file per kind of message,
//! encoded as it travels. Run from the workspace root: `cargo run -p dsm-proto --example fuzz_seeds`.

use std::path::Path;

use dsm_proto::client::{OpenFlags, Push, Reply, Request, ShmError};
use dsm_proto::ctl::CtlRequest;
use dsm_proto::frame;
use dsm_proto::hello::{Hello, HelloReply, Role};
use dsm_proto::peer::{NodeSet, PageKey, PeerFrame, PeerHello, PeerMsg};
use dsm_proto::sync::{SyncKey, SyncOp, Wait};
use dsm_proto::{Access, NodeId, SegmentId, SessionId, MAGIC, PROTOCOL_VERSION};

fn write(target: &str, seeds: Vec<Vec<u8>>) {
    let dir = Path::new("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    for (i, s) in seeds.into_iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), s).expect("seed");
    }
}

/// A frame's payload (what the decoders take).
fn payload<T: serde::Serialize>(m: &T) -> Vec<u8> {
    frame::encode(m).expect("encodes")[frame::HEADER_LEN..].to_vec()
}

fn main() {
    let seg = SegmentId::new(NodeId(1), 3);
    let key = PageKey {
        segment: seg,
        page: 5,
    };
    let flags = OpenFlags {
        create: true,
        exclusive: false,
        truncate: false,
        mode: 0o600,
        write: true,
    };
    write(
        "client_request",
        vec![
            payload(&Request::Open {
                name: "/data",
                flags,
            }),
            payload(&Request::Fault {
                segment: seg,
                page: 5,
                write: true,
            }),
            payload(&Request::Map {
                segment: seg,
                offset: 0,
                len: 4096,
            }),
            payload(&Request::Sync {
                key: SyncKey::Object {
                    segment: seg,
                    offset: 64,
                },
                op: SyncOp::SemWait {
                    initial: 1,
                    wait: Wait::Block,
                },
                wait: true,
            }),
            payload(&Request::Identify { dev: 5, ino: 77 }),
        ],
    );
    write(
        "client_reply",
        vec![
            payload(&Reply::Granted {
                access: Access::Write,
                seq: 9,
            }),
            payload(&Reply::Failed(ShmError::PermissionDenied)),
            payload(&Push::Revoke {
                segment: seg,
                page: 5,
                count: 1,
                access: Access::None,
                seq: 10,
            }),
        ],
    );
    write(
        "hello",
        vec![
            payload(&Hello::new(Role::Session { pid: 42 })),
            payload(&Hello::new(Role::Channel {
                session: SessionId(1),
                tid: 7,
            })),
            payload(&HelloReply::Refused { reason: "no" }),
        ],
    );
    let hello = PeerHello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        cluster: "dsm".into(),
        node: NodeId(2),
        manager: "dynamic".into(),
        incarnation: 1,
        formed: false,
        peer_incarnation: 0,
        received: 0,
        listen: None,
        roster: Vec::new(),
    };
    let peer = vec![
        payload(&PeerFrame::Hello(hello)),
        payload(&PeerFrame::Coherence(PeerMsg::Request {
            key,
            write: true,
            requester: NodeId(2),
            seq: 1,
            incarnation: 1,
            hops: 0,
        })),
        payload(&PeerFrame::Coherence(PeerMsg::Grant {
            key,
            write: false,
            copyset: NodeSet(6),
            epoch: 0,
            deaths: 0,
        })),
        payload(&PeerFrame::Raft(vec![8, 3, 16, 1])),
        payload(&PeerFrame::Ping),
    ];
    write("peer_frame", peer.clone());
    write("core_node", peer);
    write(
        "ctl",
        vec![
            payload(&CtlRequest::Status),
            payload(&CtlRequest::Pages {
                segment: "/data".into(),
            }),
        ],
    );
    write(
        "frame_stream",
        vec![
            frame::encode(&Request::Info).expect("encodes"),
            vec![0xff, 0xff, 0xff, 0x7f],
        ],
    );
    write(
        "sync_service",
        vec![
            payload(&SyncOp::Barrier { count: 2 }),
            payload(&SyncKey::Lock(3)),
        ],
    );
}
