//! What a node knows about one page.

use dsm_proto::Access;

/// One page's state on one node.
///
/// Kept small: a node holds one of these per page of every segment (target: at most 64 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageState {
    /// What this node's copy allows; local processes are never granted more.
    pub access: Access,
    /// Whether the page was ever faulted in on this node (untouched pages read as zeros).
    pub touched: bool,
}
