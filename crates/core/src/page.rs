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
    /// The owner: the nodes holding read copies. Any other node: the node it handed ownership
    /// to at `epoch`, if it did (emptied once it hears of a later epoch) — a grant that may
    /// still be on its way when a dead owner's page is located.
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
    /// Hears of ownership epoch `epoch` (a non-owner): past the one it knew, a handover it
    /// remembered (`copyset`) has landed.
    pub fn learn(&mut self, epoch: u16) {
        if later(epoch, self.epoch) {
            self.epoch = epoch;
            self.copyset = NodeSet::EMPTY;
        }
    }

    /// Whom this node (not the owner) handed ownership to at its `epoch`, if it did.
    pub fn handed(&self) -> Option<usize> {
        self.copyset.iter().next()
    }

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

/// What a node says of a page when it is located (`PeerMsg::Located`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Report {
    /// It owns the page.
    pub owner: bool,
    /// It holds a copy.
    pub copy: bool,
    /// The latest ownership epoch it knows of.
    pub epoch: u16,
    /// Whom it handed ownership to at `epoch`, if it did.
    pub handed: Option<NodeId>,
    /// Node deaths it had heard of (a report made after a death the locator has not heard of
    /// yet may rest on it: the locator waits until it has, and asks again).
    pub deaths: u64,
    /// The replica it holds, with no copy: (epoch, version).
    pub replica: Option<(u16, u32)>,
}

/// A locator this node is frozen for (see `PeerMsg::Locate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Freeze {
    /// The locator, by member index.
    pub by: usize,
    /// Its round, echoed in every answer.
    pub round: u32,
    /// Deaths to hear of before answering.
    pub deaths: u64,
    /// Answered (then every change is sent too).
    pub answered: bool,
}

/// Looking for a page whose owner this node lost track of (it died): every live node is asked,
/// and frozen for the page until this node decides (see `PeerMsg::Locate`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Locating {
    /// When the page was first located (ms).
    pub since_ms: u64,
    /// The nodes yet to answer.
    pub waiting: NodeSet,
    /// Every node asked (and so frozen) since the page was first located: thawed at the end.
    pub asked: NodeSet,
    /// This round's number (answers to earlier ones are ignored).
    pub round: u32,
    /// Each member's latest answer this round, by member index.
    pub answers: Vec<Option<Report>>,
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
    /// Local writers stopped for a release: send the replicas (see `replicas`).
    Replicate,
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
    /// A read request that found the page's owner dead (or gone) and became a locate: it is
    /// made again once the page is located, though no fault waits for it (a read-ahead).
    pub wanted: bool,
    /// Locators this node is frozen for (see `PeerMsg::Locate`), at most one per member.
    pub frozen: Vec<Freeze>,
    /// What this node last told its locators.
    pub reported: Option<Report>,
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
            && self.frozen.is_empty()
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
