//! The coherence protocol as a pure state machine (sans-IO).
//!
//! The driver (`dsmd`) feeds [`Input`]s to a [`Node`] with [`Node::handle`], then drains
//! [`Node::poll_output`] until it returns `None`, turning each [`Output`] into a syscall or a
//! message. Nothing here touches a socket, a clock or a thread, so the same code runs in the
//! daemon, under the model checker (`tests/model_check.rs`) and in the simulator
//! (`tests/simulation.rs`).
//!
//! The protocol is Li & Hudak's (1989): sequential consistency at page granularity with single
//! writer / multiple readers, pages moving on demand, copies invalidated before a write.
//! Three managers locate a page's owner ([`ManagerKind`]). See `docs/protocol.md`.

#![forbid(unsafe_code)]

pub mod directory;
pub mod fastlock;
pub mod link;
pub mod members;
pub mod node;
pub mod page;
pub mod revoke;
pub mod sync;

pub use fastlock::{FastPath, Words};
pub use link::{Link, LinkInput, LinkOutput, LinkTiming};
pub use node::{Config, FaultError, FaultId, Input, ManagerKind, Node, Output, Replication, Stats};
pub use page::PageState;
pub use revoke::{Revocations, RevokeInput, RevokeOutput};
pub use sync::{ObjectView, Service, SyncInput, SyncOutput, SyncStats};
