//! Pages this node read ahead, followed until the node loses them: was each opened by a local
//! process first, or fetched for nothing? For `dsmctl stats`, which says how much of the
//! read-ahead a workload wastes.
//!
//! The daemon does not see a process take a page from the state table (it is not woken for
//! that), so the shim sets the page's mark beside the table when it opens a page
//! (`StateTable::take_mark`). A page arriving ahead of any fault has its mark cleared before it
//! is published; once a revocation takes it from every process (the node lost its copy), the
//! mark says whether one opened it. A page opened as part of a run the handler opens at once
//! counts as opened, read or not: the count of wasted pages is a floor.

use std::collections::HashSet;

use dsm_proto::peer::PageKey;
use dsm_proto::SegmentId;

/// The pages read ahead that this node still holds, and what became of the others.
#[derive(Debug, Default)]
pub struct ReadAhead {
    /// Arrived before any local fault asked for them; the node still holds them.
    held: HashSet<PageKey>,
    /// Of those, being revoked from the node's processes to no access.
    losing: HashSet<PageKey>,
    /// Lost after a process opened them.
    pub opened: u64,
    /// Lost with no process having opened them.
    pub wasted: u64,
}

impl ReadAhead {
    /// `key` arrived ahead of any fault (its mark is clear).
    pub fn arrived(&mut self, key: PageKey) {
        self.held.insert(key);
        self.losing.remove(&key);
    }

    /// Local processes lose `key` altogether once the revocation under way ends.
    pub fn losing(&mut self, key: PageKey) {
        if self.held.contains(&key) {
            self.losing.insert(key);
        }
    }

    /// The revocation of `key` ended: if it was one to no access of a page read ahead,
    /// `opened()` says whether a process opened the page (and clears the mark), and it is
    /// counted.
    pub fn revoked(&mut self, key: PageKey, opened: impl FnOnce() -> bool) {
        if !self.losing.remove(&key) {
            return;
        }
        self.held.remove(&key);
        if opened() {
            self.opened += 1;
        } else {
            self.wasted += 1;
        }
    }

    /// Forgets a removed segment's pages.
    pub fn remove_segment(&mut self, segment: SegmentId) {
        self.held.retain(|k| k.segment != segment);
        self.losing.retain(|k| k.segment != segment);
    }

    /// Pages read ahead and held now that no process opened yet.
    pub fn unopened(&self, marked: impl Fn(PageKey) -> bool) -> u64 {
        self.held.iter().filter(|k| !marked(**k)).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(page: u32) -> PageKey {
        PageKey {
            segment: SegmentId(7),
            page,
        }
    }

    #[test]
    fn a_page_read_ahead_is_counted_once_when_lost() {
        let mut ahead = ReadAhead::default();
        ahead.arrived(key(1));
        ahead.arrived(key(2));
        assert_eq!(ahead.unopened(|k| k.page == 1), 1);
        // A revocation to read only (or of a page not read ahead) counts nothing.
        ahead.revoked(key(1), || panic!("not asked"));
        ahead.losing(key(3));
        ahead.revoked(key(3), || panic!("not asked"));
        ahead.losing(key(1));
        ahead.losing(key(2));
        ahead.revoked(key(1), || true);
        ahead.revoked(key(2), || false);
        ahead.revoked(key(2), || panic!("counted twice"));
        assert_eq!((ahead.opened, ahead.wasted), (1, 1));
        assert_eq!(ahead.unopened(|_| false), 0);
    }

    #[test]
    fn a_removed_segment_is_forgotten() {
        let mut ahead = ReadAhead::default();
        ahead.arrived(key(1));
        ahead.losing(key(1));
        ahead.remove_segment(SegmentId(7));
        ahead.revoked(key(1), || panic!("forgotten"));
        assert_eq!(ahead.unopened(|_| false), 0);
    }
}
