//! This node's segments: the metadata it learned from the directory, its copy of the pages
//! (a memfd), and which local processes map each one.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use dsm_proto::peer::SegmentMeta;
use dsm_proto::{SegmentId, SessionId, PAGE_SIZE};

use crate::page_store::{MemFd, Page, StateTable};

/// One segment on this node.
#[derive(Debug)]
pub struct Local {
    /// What the directory says.
    pub meta: SegmentMeta,
    /// The node's copy.
    pub memfd: MemFd,
    /// What local processes may hold of each page, shared with them read-only.
    pub table: StateTable,
    /// Local processes that map it (revocations go to them).
    pub sessions: BTreeSet<SessionId>,
    /// Local processes that opened or map it: the node holds the segment (attached at the
    /// directory) while any does. The daemon cannot see `close`, so an open lasts until the
    /// process ends: a segment unlinked at once after `shm_open` stays usable, as POSIX says.
    pub holders: BTreeSet<SessionId>,
    /// Whether its name was unlinked (it lives on while mapped).
    pub unlinked: bool,
}

impl Local {
    /// Pages in the segment (a partial last page counts).
    pub fn pages(&self) -> u32 {
        self.meta.size.div_ceil(PAGE_SIZE as u64) as u32
    }

    /// `/name`, or the id once unlinked.
    pub fn display_name(&self) -> String {
        if self.unlinked {
            format!("({:#x}, unlinked)", self.meta.id.0)
        } else {
            format!("/{}", self.meta.name)
        }
    }
}

fn span_pages(span: u64) -> usize {
    (span / PAGE_SIZE as u64) as usize
}

/// Every segment this node has heard of through its own processes.
#[derive(Debug, Default)]
pub struct Store {
    segments: BTreeMap<SegmentId, Local>,
}

impl Store {
    /// The segment, if this node has it.
    pub fn get(&self, id: SegmentId) -> Option<&Local> {
        self.segments.get(&id)
    }

    /// The segment, mutably.
    pub fn get_mut(&mut self, id: SegmentId) -> Option<&mut Local> {
        self.segments.get_mut(&id)
    }

    /// Every segment, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Local> {
        self.segments.values()
    }

    /// Takes the directory's word for a segment: creates the node's copy the first time, and
    /// follows size and address changes.
    pub fn learn(&mut self, meta: SegmentMeta) -> io::Result<&Local> {
        let id = meta.id;
        match self.segments.get_mut(&id) {
            Some(local) => {
                if local.meta.size != meta.size {
                    local.memfd.set_len(meta.size)?;
                }
                if local.meta.span != meta.span {
                    // Moved (only possible while no process maps it): a table of the new span.
                    local.table = StateTable::create(&meta.name, span_pages(meta.span))?;
                }
                if (local.meta.uid, local.meta.gid, local.meta.mode)
                    != (meta.uid, meta.gid, meta.mode)
                {
                    local.memfd.set_owner(meta.uid, meta.gid, meta.mode);
                }
                local.meta = meta;
            }
            None => {
                let mut memfd = MemFd::create(&meta.name)?;
                memfd.set_len(meta.size)?;
                memfd.set_owner(meta.uid, meta.gid, meta.mode);
                let table = StateTable::create(&meta.name, span_pages(meta.span))?;
                self.segments.insert(
                    id,
                    Local {
                        meta,
                        memfd,
                        table,
                        sessions: BTreeSet::new(),
                        holders: BTreeSet::new(),
                        unlinked: false,
                    },
                );
            }
        }
        Ok(&self.segments[&id])
    }

    /// A size change the directory announced (for a segment this node has).
    pub fn resize(&mut self, id: SegmentId, size: u64) -> io::Result<()> {
        if let Some(local) = self.segments.get_mut(&id) {
            if local.meta.size != size {
                local.memfd.set_len(size)?;
                local.meta.size = size;
            }
        }
        Ok(())
    }

    /// Forgets a segment the directory removed.
    pub fn remove(&mut self, id: SegmentId) -> Option<Local> {
        self.segments.remove(&id)
    }

    /// Page `page` of the node's copy of `id`, to send.
    pub fn page(&mut self, id: SegmentId, page: u32) -> io::Result<Option<Page>> {
        match self.segments.get_mut(&id) {
            Some(local) => local.memfd.page(page),
            None => Ok(None),
        }
    }

    /// Where an arriving page goes: page `page` of `id`, growing the node's copy if the page
    /// lies past its end (the directory's size announcement may still be on its way).
    pub fn incoming(&mut self, id: SegmentId, page: u32) -> io::Result<Option<Page>> {
        let Some(local) = self.segments.get_mut(&id) else {
            return Ok(None);
        };
        let end = (u64::from(page) + 1) * PAGE_SIZE as u64;
        if end > local.meta.span {
            // Past the segment's address span: no grant can be for it.
            return Ok(None);
        }
        if end > local.meta.size.next_multiple_of(PAGE_SIZE as u64) {
            local.memfd.set_len(end)?;
            local.meta.size = end;
        }
        local.memfd.page(page)
    }
}
