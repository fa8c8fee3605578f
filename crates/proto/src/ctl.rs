//! `dsmctl` requests and the daemon's answers.

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// A request from `dsmctl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtlRequest {
    /// Everything `dsmctl status` shows.
    Status,
}

/// The daemon's answer to a [`CtlRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtlReply {
    /// Answer to [`CtlRequest::Status`].
    Status(Status),
    /// The request failed.
    Error(String),
}

/// A node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This node.
    pub node: NodeId,
    /// `dsmd` version.
    pub version: String,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// Address peers connect to.
    pub listen: String,
    /// Unix socket clients connect to.
    pub socket: String,
    /// Configured peers.
    pub peers: Vec<PeerStatus>,
    /// Segments this node knows.
    pub segments: Vec<SegmentStatus>,
    /// Attached client processes.
    pub processes: Vec<ProcessStatus>,
}

/// One configured peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its node id.
    pub node: NodeId,
    /// Its address.
    pub addr: String,
    /// Whether a connection is up.
    pub connected: bool,
}

/// One segment, as this node holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentStatus {
    /// Its name, or `None` once unlinked (still mapped somewhere).
    pub name: Option<String>,
    /// Cluster-wide id.
    pub id: u64,
    /// Size in bytes.
    pub size: u64,
    /// Base virtual address.
    pub base: u64,
    /// Permission bits it was created with.
    pub mode: u32,
    /// Pages in the segment.
    pub pages: u64,
    /// Pages this node holds a valid copy of.
    pub resident: u64,
    /// Pages this node holds read-only.
    pub readable: u64,
    /// Pages this node holds writable.
    pub writable: u64,
    /// Local processes that map it.
    pub mappings: u64,
}

/// One attached client process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// Process id.
    pub pid: u32,
    /// Session id the daemon gave it.
    pub session: u64,
    /// Names (or ids) of the segments it maps.
    pub segments: Vec<String>,
    /// Faults it has asked the daemon to serve.
    pub faults: u64,
}
