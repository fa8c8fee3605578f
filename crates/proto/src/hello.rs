//! The first frame on every connection, and the daemon's answer to it.
//!
//! A connection says what it is (a client process's session, one of its threads' request
//! channels, or `dsmctl`) and which protocol version it speaks. The daemon refuses a wrong magic
//! or version with a reason meant for a person, and closes the connection.

use serde::{Deserialize, Serialize};

use crate::{NodeId, SessionId, MAGIC, PROTOCOL_VERSION};

/// The first frame a connection sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: u32,
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// What the connection is for.
    pub role: Role,
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A client process attaches: the connection lives as long as the process and its closing
    /// tells the daemon the process is gone.
    Session {
        /// Process id, for people reading `dsmctl status`.
        pid: u32,
    },
    /// One thread's request channel inside an attached process.
    Channel {
        /// The session the process got in its [`HelloReply::Welcome`].
        session: SessionId,
        /// Thread id, for logs.
        tid: u32,
    },
    /// `dsmctl`.
    Ctl,
}

impl Hello {
    /// A hello of this crate's version for `role`.
    pub fn new(role: Role) -> Hello {
        Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            role,
        }
    }
}

/// The daemon's answer to a [`Hello`].
///
/// Borrowed so the shim's signal handler can decode it from a stack buffer without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply<'a> {
    /// Accepted.
    Welcome {
        /// The daemon's node.
        node: NodeId,
        /// For a `Session`, its new id; otherwise the session the connection belongs to (or 0).
        session: SessionId,
        /// How long a fault may go unanswered before the process takes the daemon for stopped
        /// or wedged (its fault timeout and a margin), in ms.
        limit_ms: u64,
        /// The same for a segment directory request (`shm_open`, `ftruncate`, …), which may
        /// wait out a Raft election, in ms.
        dir_limit_ms: u64,
        /// The daemon replicates at release points (`--replicas` above 0): a release
        /// (`SyncOp::is_release`) is answered once what the node wrote before it is on the
        /// replica nodes, and the process waits for that answer before the call returns.
        replicating: bool,
    },
    /// Refused; the daemon closes the connection after sending this.
    Refused {
        /// Why, for a person.
        reason: &'a str,
    },
}
