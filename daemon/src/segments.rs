//! The segments this node knows: names, sizes, base addresses, who maps them.
//!
//! A segment lives from `shm_open(O_CREAT)` until it is unlinked *and* no process maps it, as a
//! POSIX shared memory object does. Base addresses come from a fixed window of the address space
//! that programs leave alone, so the same segment sits at the same address in every process.

use std::collections::{BTreeMap, HashMap};

use dsm_proto::client::{ShmError, MAX_NAME_LEN};
use dsm_proto::{NodeId, SegmentId, PAGE_SIZE};
use log::{info, warn};

use crate::page_store::MemFd;

/// Start of the window base addresses are taken from (32 TiB: far below the mmap area near the
/// top of the 47-bit address space, far above PIE binaries and their heaps).
pub const WINDOW_START: u64 = 0x2000_0000_0000;
/// End of that window (64 TiB).
pub const WINDOW_END: u64 = 0x4000_0000_0000;
/// Address span a segment reserves at least, so it can grow without moving.
pub const MIN_SPAN: u64 = 1 << 30;
/// Largest segment (the page index is a `u32`).
pub const MAX_SIZE: u64 = (u32::MAX as u64) * PAGE_SIZE as u64;

/// One segment on this node.
#[derive(Debug)]
pub struct Segment {
    /// Cluster-wide id.
    pub id: SegmentId,
    /// Name without the leading `/`; `None` once unlinked.
    pub name: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Base virtual address.
    pub base: u64,
    /// Bytes of address space reserved from `base`.
    pub span: u64,
    /// Permission bits it was created with.
    pub mode: u32,
    /// Local processes that map it.
    pub mappings: u64,
    /// The node's copy.
    pub store: MemFd,
}

impl Segment {
    /// Pages in the segment (a partial last page counts).
    pub fn pages(&self) -> u32 {
        self.size.div_ceil(PAGE_SIZE as u64) as u32
    }

    /// The name as programs spell it, or the id once unlinked.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(n) => format!("/{n}"),
            None => format!("({:#x}, unlinked)", self.id.0),
        }
    }
}

/// What an operation changed that the protocol core must hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing the core cares about.
    None,
    /// The segment has this many pages now.
    Sized(SegmentId, u32),
    /// The segment is gone.
    Removed(SegmentId),
}

/// All segments of this node.
#[derive(Debug)]
pub struct Registry {
    node: NodeId,
    segments: BTreeMap<SegmentId, Segment>,
    names: HashMap<String, SegmentId>,
    next_id: u64,
    space: AddressSpace,
}

impl Registry {
    /// An empty registry for `node`.
    pub fn new(node: NodeId) -> Registry {
        Registry {
            node,
            segments: BTreeMap::new(),
            names: HashMap::new(),
            next_id: 1,
            space: AddressSpace::new(WINDOW_START, WINDOW_END),
        }
    }

    /// Looks a segment up.
    pub fn get(&self, id: SegmentId) -> Option<&Segment> {
        self.segments.get(&id)
    }

    /// Every segment, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Segment> {
        self.segments.values()
    }

    /// `shm_open`: finds or creates `name`.
    pub fn open(
        &mut self,
        name: &str,
        create: bool,
        exclusive: bool,
        truncate: bool,
        mode: u32,
    ) -> Result<(&Segment, Change), ShmError> {
        let key = normalize(name)?;
        let mut change = Change::None;
        let id = match self.names.get(key) {
            Some(&id) if create && exclusive => {
                let _ = id;
                return Err(ShmError::AlreadyExists);
            }
            Some(&id) => {
                if truncate {
                    change = self.resize(id, 0)?;
                }
                id
            }
            None if !create => return Err(ShmError::NotFound),
            None => {
                let id = SegmentId::new(self.node, self.next_id);
                let base = self.space.alloc(MIN_SPAN).ok_or(ShmError::NoMemory)?;
                let store = MemFd::create(key).map_err(|e| {
                    warn!("cannot create memory for segment /{key}: {e}");
                    self.space.free(base, MIN_SPAN);
                    ShmError::NoMemory
                })?;
                self.next_id += 1;
                self.segments.insert(
                    id,
                    Segment {
                        id,
                        name: Some(key.to_owned()),
                        size: 0,
                        base,
                        span: MIN_SPAN,
                        mode,
                        mappings: 0,
                        store,
                    },
                );
                self.names.insert(key.to_owned(), id);
                info!("created /{key} ({id}) at {base:#x}");
                change = Change::Sized(id, 0);
                id
            }
        };
        Ok((&self.segments[&id], change))
    }

    /// `ftruncate`: sets the size, moving the base only while nothing maps the segment.
    pub fn resize(&mut self, id: SegmentId, size: u64) -> Result<Change, ShmError> {
        if size > MAX_SIZE {
            return Err(ShmError::TooLarge);
        }
        let seg = self.segments.get_mut(&id).ok_or(ShmError::Gone)?;
        if size > seg.span {
            if seg.mappings > 0 {
                warn!(
                    "segment {} cannot grow to {size} bytes while mapped: its address span is {} bytes",
                    seg.display_name(),
                    seg.span
                );
                return Err(ShmError::TooLarge);
            }
            let span = size.next_multiple_of(MIN_SPAN);
            let base = self.space.alloc(span).ok_or(ShmError::NoMemory)?;
            self.space.free(seg.base, seg.span);
            seg.base = base;
            seg.span = span;
        }
        seg.store.set_len(size).map_err(|e| {
            warn!(
                "cannot resize segment {} to {size}: {e}",
                seg.display_name()
            );
            ShmError::NoMemory
        })?;
        seg.size = size;
        Ok(Change::Sized(id, seg.pages()))
    }

    /// `mmap`: a process maps `[offset, offset + len)` (`first`: the first mapping of the segment
    /// by that process); returns the base address.
    pub fn map(
        &mut self,
        id: SegmentId,
        offset: u64,
        len: u64,
        first: bool,
    ) -> Result<u64, ShmError> {
        let seg = self.segments.get_mut(&id).ok_or(ShmError::Gone)?;
        let end = offset.checked_add(len).ok_or(ShmError::InvalidArgument)?;
        if len == 0 || !offset.is_multiple_of(PAGE_SIZE as u64) {
            return Err(ShmError::InvalidArgument);
        }
        if end > seg.span {
            return Err(ShmError::TooLarge);
        }
        if first {
            seg.mappings += 1;
        }
        Ok(seg.base)
    }

    /// A process no longer maps any part of the segment.
    pub fn unmap(&mut self, id: SegmentId) -> Change {
        let Some(seg) = self.segments.get_mut(&id) else {
            return Change::None;
        };
        seg.mappings = seg.mappings.saturating_sub(1);
        self.reap(id)
    }

    /// `shm_unlink`: the name goes now, the memory once nothing maps it.
    pub fn unlink(&mut self, name: &str) -> Result<Change, ShmError> {
        let key = normalize(name)?;
        let id = self.names.remove(key).ok_or(ShmError::NotFound)?;
        if let Some(seg) = self.segments.get_mut(&id) {
            seg.name = None;
        }
        info!("unlinked /{key} ({id})");
        Ok(self.reap(id))
    }

    fn reap(&mut self, id: SegmentId) -> Change {
        match self.segments.get(&id) {
            Some(seg) if seg.name.is_none() && seg.mappings == 0 => {
                let seg = self.segments.remove(&id).expect("present");
                self.space.free(seg.base, seg.span);
                info!("removed {id}: unlinked and no longer mapped");
                Change::Removed(id)
            }
            _ => Change::None,
        }
    }
}

/// Strips the leading `/`s as glibc's `shm_open` does and checks what remains.
fn normalize(name: &str) -> Result<&str, ShmError> {
    let key = name.trim_start_matches('/');
    if key.is_empty() || key.contains('/') || key.contains('\0') {
        return Err(ShmError::InvalidArgument);
    }
    if key.len() > MAX_NAME_LEN {
        return Err(ShmError::NameTooLong);
    }
    Ok(key)
}

/// First-fit allocator of address spans inside the window.
#[derive(Debug)]
struct AddressSpace {
    /// Free spans, start → length, never adjacent (merged on free).
    free: BTreeMap<u64, u64>,
}

impl AddressSpace {
    fn new(start: u64, end: u64) -> AddressSpace {
        AddressSpace {
            free: BTreeMap::from([(start, end - start)]),
        }
    }

    fn alloc(&mut self, len: u64) -> Option<u64> {
        let (&start, &free_len) = self.free.iter().find(|(_, &l)| l >= len)?;
        self.free.remove(&start);
        if free_len > len {
            self.free.insert(start + len, free_len - len);
        }
        Some(start)
    }

    fn free(&mut self, start: u64, len: u64) {
        let mut start = start;
        let mut len = len;
        if let Some((&prev, &prev_len)) = self.free.range(..start).next_back() {
            if prev + prev_len == start {
                self.free.remove(&prev);
                start = prev;
                len += prev_len;
            }
        }
        if let Some(&next_len) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += next_len;
        }
        self.free.insert(start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_follows_posix() {
        let mut r = Registry::new(NodeId(1));
        assert_eq!(
            r.open("/a", false, false, false, 0o600).unwrap_err(),
            ShmError::NotFound
        );
        let (seg, _) = r.open("/a", true, true, false, 0o600).unwrap();
        let (id, base) = (seg.id, seg.base);
        assert_eq!(
            r.open("a", true, true, false, 0o600).unwrap_err(),
            ShmError::AlreadyExists
        );
        assert_eq!(r.resize(id, 10_000).unwrap(), Change::Sized(id, 3));
        assert_eq!(r.map(id, 0, 10_000, true).unwrap(), base);
        assert_eq!(r.unlink("/a").unwrap(), Change::None, "still mapped");
        assert!(
            r.open("/a", false, false, false, 0).is_err(),
            "name is gone"
        );
        assert_eq!(r.unmap(id), Change::Removed(id));
        assert!(r.get(id).is_none());
    }

    #[test]
    fn bad_names_and_offsets_are_refused() {
        let mut r = Registry::new(NodeId(1));
        assert_eq!(
            r.open("/", true, false, false, 0).unwrap_err(),
            ShmError::InvalidArgument
        );
        assert_eq!(
            r.open("/a/b", true, false, false, 0).unwrap_err(),
            ShmError::InvalidArgument
        );
        let long = "x".repeat(300);
        assert_eq!(
            r.open(&long, true, false, false, 0).unwrap_err(),
            ShmError::NameTooLong
        );
        let id = r.open("/s", true, false, false, 0).unwrap().0.id;
        assert_eq!(
            r.map(id, 100, 4096, true).unwrap_err(),
            ShmError::InvalidArgument
        );
        assert_eq!(
            r.map(id, 0, 0, true).unwrap_err(),
            ShmError::InvalidArgument
        );
        assert_eq!(
            r.map(id, 0, MIN_SPAN + 1, true).unwrap_err(),
            ShmError::TooLarge
        );
    }

    #[test]
    fn growth_moves_the_base_only_while_unmapped() {
        let mut r = Registry::new(NodeId(1));
        let id = r.open("/g", true, false, false, 0).unwrap().0.id;
        let first = r.get(id).unwrap().base;
        r.resize(id, 3 * MIN_SPAN / 2).unwrap();
        let moved = r.get(id).unwrap().base;
        assert_ne!(first, moved);
        assert_eq!(r.get(id).unwrap().span, 2 * MIN_SPAN);
        r.map(id, 0, 4096, true).unwrap();
        assert_eq!(r.resize(id, 3 * MIN_SPAN).unwrap_err(), ShmError::TooLarge);
        // The freed span is reused by the next segment.
        let other = r.open("/h", true, false, false, 0).unwrap().0.base;
        assert_eq!(other, first);
    }

    #[test]
    fn address_space_merges_freed_spans() {
        let mut s = AddressSpace::new(0, 100);
        let a = s.alloc(10).unwrap();
        let b = s.alloc(10).unwrap();
        let c = s.alloc(10).unwrap();
        s.free(b, 10);
        s.free(a, 10);
        s.free(c, 10);
        assert_eq!(s.free, BTreeMap::from([(0, 100)]));
        assert_eq!(s.alloc(101), None);
    }
}
