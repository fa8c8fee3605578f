//! A node's protocol engine: segments, their pages, and the faults local processes raise.

use std::collections::{BTreeMap, VecDeque};

use dsm_proto::{Access, NodeId, SegmentId};

use crate::page::PageState;

/// Identifies one pending fault; chosen by the driver, echoed back in the [`Output`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FaultId(pub u64);

/// An event the driver hands to the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A segment now exists with this many pages (or was resized to it).
    SegmentSized {
        /// The segment.
        segment: SegmentId,
        /// Its page count.
        pages: u32,
    },
    /// A segment is gone; faults on it fail.
    SegmentRemoved {
        /// The segment.
        segment: SegmentId,
    },
    /// A local process faulted on a page.
    Fault {
        /// Echoed back in the grant or failure.
        id: FaultId,
        /// The segment.
        segment: SegmentId,
        /// Page index in the segment.
        page: u32,
        /// Whether the access was a write.
        write: bool,
    },
}

/// An action the node asks the driver to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Let the faulting process access the page this much.
    Grant {
        /// The fault.
        id: FaultId,
        /// At least what the fault needs, at most what the node holds.
        access: Access,
    },
    /// The fault cannot be served.
    Fail {
        /// The fault.
        id: FaultId,
        /// Why.
        error: FaultError,
    },
}

/// Why a fault cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// The segment is not known (removed, or never created).
    UnknownSegment,
    /// The page is past the segment's end.
    OutOfRange,
}

/// Counters the node keeps for `dsmctl stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Read faults served.
    pub read_faults: u64,
    /// Write faults served.
    pub write_faults: u64,
    /// Faults that touched a page for the first time on this node.
    pub first_touches: u64,
    /// Faults that failed.
    pub failed_faults: u64,
}

/// One node's protocol state.
#[derive(Debug)]
pub struct Node {
    id: NodeId,
    segments: BTreeMap<SegmentId, Vec<PageState>>,
    outputs: VecDeque<Output>,
    stats: Stats,
}

impl Node {
    /// A node with no segments.
    pub fn new(id: NodeId) -> Node {
        Node {
            id,
            segments: BTreeMap::new(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Feeds one event; afterwards drain [`Node::poll_output`].
    pub fn handle(&mut self, input: Input) {
        match input {
            Input::SegmentSized { segment, pages } => {
                // Shrinking drops the pages past the end; growing adds untouched ones.
                self.segments
                    .entry(segment)
                    .or_default()
                    .resize(pages as usize, PageState::default());
            }
            Input::SegmentRemoved { segment } => {
                self.segments.remove(&segment);
            }
            Input::Fault {
                id,
                segment,
                page,
                write,
            } => self.fault(id, segment, page, write),
        }
    }

    /// The next action for the driver, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The state of one page, if the segment and page exist.
    pub fn page(&self, segment: SegmentId, page: u32) -> Option<PageState> {
        self.segments.get(&segment)?.get(page as usize).copied()
    }

    /// Pages of a segment that this node holds at each access level: (read, write).
    pub fn access_counts(&self, segment: SegmentId) -> (u64, u64) {
        let mut counts = (0, 0);
        for page in self.segments.get(&segment).into_iter().flatten() {
            match page.access {
                Access::None => {}
                Access::Read => counts.0 += 1,
                Access::Write => counts.1 += 1,
            }
        }
        counts
    }

    fn fault(&mut self, id: FaultId, segment: SegmentId, page: u32, write: bool) {
        let Some(pages) = self.segments.get_mut(&segment) else {
            self.fail(id, FaultError::UnknownSegment);
            return;
        };
        let Some(state) = pages.get_mut(page as usize) else {
            self.fail(id, FaultError::OutOfRange);
            return;
        };
        if !state.touched {
            state.touched = true;
            self.stats.first_touches += 1;
        }
        // Alone in the cluster, this node owns every page: its copy is writable. Grant all of
        // it, so a read followed by a write costs one fault, not two.
        state.access = Access::Write;
        if write {
            self.stats.write_faults += 1;
        } else {
            self.stats.read_faults += 1;
        }
        self.outputs.push_back(Output::Grant {
            id,
            access: state.access,
        });
    }

    fn fail(&mut self, id: FaultId, error: FaultError) {
        self.stats.failed_faults += 1;
        self.outputs.push_back(Output::Fail { id, error });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(node: &mut Node) -> Vec<Output> {
        std::iter::from_fn(|| node.poll_output()).collect()
    }

    #[test]
    fn lone_node_grants_write_on_first_read() {
        let mut node = Node::new(NodeId(1));
        let seg = SegmentId(1);
        node.handle(Input::SegmentSized {
            segment: seg,
            pages: 2,
        });
        node.handle(Input::Fault {
            id: FaultId(9),
            segment: seg,
            page: 1,
            write: false,
        });
        assert_eq!(
            drain(&mut node),
            vec![Output::Grant {
                id: FaultId(9),
                access: Access::Write
            }]
        );
        assert_eq!(
            node.page(seg, 1),
            Some(PageState {
                access: Access::Write,
                touched: true
            })
        );
        assert_eq!(node.page(seg, 0), Some(PageState::default()));
        assert_eq!(node.access_counts(seg), (0, 1));
        assert_eq!(node.stats().first_touches, 1);
    }

    #[test]
    fn faults_outside_known_memory_fail() {
        let mut node = Node::new(NodeId(1));
        let seg = SegmentId(1);
        node.handle(Input::Fault {
            id: FaultId(1),
            segment: seg,
            page: 0,
            write: true,
        });
        node.handle(Input::SegmentSized {
            segment: seg,
            pages: 1,
        });
        node.handle(Input::Fault {
            id: FaultId(2),
            segment: seg,
            page: 1,
            write: true,
        });
        node.handle(Input::SegmentRemoved { segment: seg });
        node.handle(Input::Fault {
            id: FaultId(3),
            segment: seg,
            page: 0,
            write: false,
        });
        assert_eq!(
            drain(&mut node),
            vec![
                Output::Fail {
                    id: FaultId(1),
                    error: FaultError::UnknownSegment
                },
                Output::Fail {
                    id: FaultId(2),
                    error: FaultError::OutOfRange
                },
                Output::Fail {
                    id: FaultId(3),
                    error: FaultError::UnknownSegment
                },
            ]
        );
        assert_eq!(node.stats().failed_faults, 3);
    }

    #[test]
    fn shrinking_forgets_pages_past_the_end() {
        let mut node = Node::new(NodeId(1));
        let seg = SegmentId(1);
        node.handle(Input::SegmentSized {
            segment: seg,
            pages: 4,
        });
        node.handle(Input::Fault {
            id: FaultId(1),
            segment: seg,
            page: 3,
            write: true,
        });
        node.handle(Input::SegmentSized {
            segment: seg,
            pages: 2,
        });
        node.handle(Input::SegmentSized {
            segment: seg,
            pages: 4,
        });
        assert_eq!(node.page(seg, 3), Some(PageState::default()));
    }
}
