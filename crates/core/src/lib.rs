//! The coherence protocol as a pure state machine (sans-IO).
//!
//! The driver (`dsmd`) feeds [`Input`]s to a [`Node`] with [`Node::handle`], then drains
//! [`Node::poll_output`] until it returns `None`, turning each [`Output`] into a syscall or a
//! message. Nothing here touches a socket, a clock or a thread, so the same code runs under the
//! model checker and the simulator.
//!
//! Today the node is alone in its cluster: it owns every page, and a fault is granted at once.
//! The page state ([`page::PageState`]) already carries what the distributed managers need.

#![forbid(unsafe_code)]

pub mod node;
pub mod page;

pub use node::{FaultError, FaultId, Input, Node, Output, Stats};
pub use page::PageState;
