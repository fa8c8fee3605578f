//! What a node knows about one page, and what it is in the middle of doing with it.

use std::collections::VecDeque;

use dsm_proto::peer::NodeSet;
use dsm_proto::{Access, NodeId};

use crate::FaultId;

/// One page's resting state on one node: 16 bytes, one per page of every segment.
///
/// `probable_owner == this node` means this node owns the page; the owner always holds a copy
/// (`access >= Read`) and knows the copyset. Local processes never hold more than the node
/// (`local <= access`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageState {
    /// What this node's copy allows.
    pub access: Access,
    /// The most any local process may currently hold (revoked before `access` drops).
    pub local: Access,
    /// Who owns the page, as far as this node knows (itself, if it owns it).
    pub probable_owner: NodeId,
    /// Owner only: the nodes holding read copies.
    pub copyset: NodeSet,
    /// The latest ownership epoch this node knows of (each change of owner is one more): a
    /// read grant from an earlier epoch than an invalidation acknowledged here is stale.
    /// Serial-number arithmetic ([`later`]): a stale grant is a few epochs behind at most.
    pub epoch: u16,
}

/// Whether epoch `a` is later than `b` (serial-number arithmetic, so epochs may wrap).
pub fn later(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) > 0
}

/// The later of two epochs.
pub fn latest(a: u16, b: u16) -> u16 {
    if later(a, b) {
        a
    } else {
        b
    }
}

impl PageState {
    /// The state of a page nobody has touched: owned by `creator`, whose copy (zeros) is
    /// writable.
    pub fn untouched(me: NodeId, creator: NodeId) -> PageState {
        PageState {
            access: if me == creator {
                Access::Write
            } else {
                Access::None
            },
            local: Access::None,
            probable_owner: creator,
            copyset: NodeSet::EMPTY,
            epoch: 0,
        }
    }
}

/// A local fault waiting for the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Waiting {
    /// The fault.
    pub id: FaultId,
    /// Whether it needs write access.
    pub write: bool,
    /// When it arrived (ms), for the timeout.
    pub since_ms: u64,
}

/// A remote request waiting until this node is done with the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Queued {
    /// Ownership wanted.
    pub write: bool,
    /// Who asked.
    pub requester: NodeId,
    /// The requester's number for it.
    pub seq: u32,
    /// The requester daemon's incarnation.
    pub incarnation: u64,
    /// Times it was passed on.
    pub hops: u8,
}

/// Looking for a page whose owner this node lost track of (it died): every live node is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Locating {
    /// The nodes yet to answer.
    pub waiting: NodeSet,
}

/// What to do once local processes have given up access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AfterRevoke {
    /// Send `requester` a read copy (we keep one).
    ServeRead(NodeId),
    /// Hand ownership to `requester`.
    ServeWrite(NodeId),
    /// Acknowledge `new_owner`'s invalidation.
    Invalidate(NodeId),
    /// The node this was for died meanwhile: only lower local access (to `keep`); if
    /// `owner_lost`, nobody owns the page now (an invalidating new owner died: our copy is
    /// still the latest, kept).
    Nothing {
        /// What local processes keep.
        keep: Access,
        /// The page's owner died.
        owner_lost: bool,
    },
}

/// Work in progress on a page (kept apart from [`PageState`] so idle pages stay small).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Busy {
    /// Our request is out: `Some(write)`.
    pub pending: Option<bool>,
    /// The pending request's number.
    pub pending_seq: u32,
    /// When it was sent (ms).
    pub pending_since_ms: u64,
    /// A request given up on when a node died (it may have died with it, or may still be
    /// answered): `Some(write)`. Its grant is still taken.
    pub abandoned: Option<bool>,
    /// Asking every live node who owns the page.
    pub locating: Option<Locating>,
    /// Nodes that asked who owns the page while our own request was out: answered once it is in.
    pub locators: NodeSet,
    /// We are the new owner (or an upgrading owner) waiting for these nodes' acks.
    pub invalidating: Option<NodeSet>,
    /// Local processes are being revoked; then this.
    pub revoking: Option<AfterRevoke>,
    /// An invalidation arrived while our read grant was still on its way: acknowledge it (to
    /// this new owner) once the grant is in and its readers served.
    pub deferred_invalidate: Option<(NodeId, u16)>,
    /// A manager must hear `Confirm` when the request completes (fixed and central managers).
    pub confirm: bool,
    /// Local faults waiting, in arrival order.
    pub faults: Vec<Waiting>,
    /// Remote requests waiting, in arrival order.
    pub requests: VecDeque<Queued>,
}

impl Busy {
    /// Whether the page is in a transition (new faults and requests must wait).
    pub fn in_transition(&self) -> bool {
        self.pending.is_some()
            || self.invalidating.is_some()
            || self.revoking.is_some()
            || self.locating.is_some()
    }

    /// Whether nothing is in progress or waiting.
    pub fn is_idle(&self) -> bool {
        !self.in_transition()
            && self.abandoned.is_none()
            && self.locators.is_empty()
            && self.deferred_invalidate.is_none()
            && self.faults.is_empty()
            && self.requests.is_empty()
    }
}

/// Fixed and central managers: what the manager of a page knows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Managed {
    /// The owner (or the node ownership is moving to; [`crate::node::LOST`] once it died).
    pub owner: NodeId,
    /// The request being served (later ones wait for its `Confirm`), and the owner it was sent
    /// to.
    pub serving: Option<(Queued, NodeId)>,
    /// Requests waiting.
    pub queue: VecDeque<Queued>,
}
