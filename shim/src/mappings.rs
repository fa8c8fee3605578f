//! The DSM mappings of this process: address ranges, their segment, and the protection the
//! program asked for.
//!
//! The signal handler reads this table without a lock (it may interrupt a thread that holds
//! one): writers bump a generation counter to odd before they change anything and to even
//! after, and a reader retries if the generation moved under it (a seqlock). Writers serialize
//! on a spin lock. A thread whose own write is interrupted by a fault reads the table as it is
//! rather than wait for itself.

use core::sync::atomic::{fence, AtomicI32, AtomicU64, AtomicUsize, Ordering};

use dsm_proto::{SegmentId, PAGE_SIZE};

use crate::lock::{SpinGuard, SpinLock};
use crate::sys;

/// Most DSM mappings a process can have at once.
pub const CAPACITY: usize = 256;

/// One DSM mapping (or a piece of one, after a partial `munmap`/`mprotect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First byte (page-aligned).
    pub start: usize,
    /// One past the last byte (page-aligned).
    pub end: usize,
    /// The segment.
    pub segment: SegmentId,
    /// The segment's base address.
    pub base: usize,
    /// Protection the program asked for (`PROT_*`).
    pub prot: i32,
    /// Address of the segment's state table in this process (0: none), and its length.
    pub table: usize,
    /// Entries in the state table.
    pub table_len: usize,
}

impl Mapping {
    /// Page index in the segment of the page holding `addr`.
    pub fn page_of(&self, addr: usize) -> u32 {
        ((addr - self.base) / PAGE_SIZE) as u32
    }
}

struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    segment: AtomicU64,
    base: AtomicUsize,
    prot: AtomicI32,
    table: AtomicUsize,
    table_len: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    segment: AtomicU64::new(0),
    base: AtomicUsize::new(0),
    prot: AtomicI32::new(0),
    table: AtomicUsize::new(0),
    table_len: AtomicUsize::new(0),
};

static SLOTS: [Slot; CAPACITY] = [EMPTY; CAPACITY];
static GENERATION: AtomicU64 = AtomicU64::new(0);
static WRITER_TID: AtomicI32 = AtomicI32::new(0);
static USED: AtomicUsize = AtomicUsize::new(0);
/// Every mapping lies in `[LOWEST, HIGHEST)` (bounds only grow while any mapping exists), so
/// the many lookups of addresses that are not DSM (a program's private mutexes) end at once.
static LOWEST: AtomicUsize = AtomicUsize::new(usize::MAX);
static HIGHEST: AtomicUsize = AtomicUsize::new(0);

/// Writers serialize on this (every `mmap` is a mapping of its own: a segment mapped again gets
/// an alias, so no piece stands for more than one).
static WRITER: SpinLock<()> = SpinLock::new(());

fn read_slot(slot: &Slot) -> Option<Mapping> {
    let start = slot.start.load(Ordering::Relaxed);
    if start == 0 {
        return None;
    }
    Some(Mapping {
        start,
        end: slot.end.load(Ordering::Relaxed),
        segment: SegmentId(slot.segment.load(Ordering::Relaxed)),
        base: slot.base.load(Ordering::Relaxed),
        prot: slot.prot.load(Ordering::Relaxed),
        table: slot.table.load(Ordering::Relaxed),
        table_len: slot.table_len.load(Ordering::Relaxed),
    })
}

fn scan(addr: usize) -> Option<Mapping> {
    SLOTS
        .iter()
        .filter_map(read_slot)
        .find(|m| m.start <= addr && addr < m.end)
}

/// The offset in `segment` of the end of the furthest piece this process maps (0: none).
/// Lock-free; a mapping changing meanwhile may or may not be seen.
pub fn extent(segment: SegmentId) -> usize {
    SLOTS
        .iter()
        .filter_map(read_slot)
        .filter(|m| m.segment == segment)
        .map(|m| m.end - m.base)
        .max()
        .unwrap_or(0)
}

/// Whether the process has no DSM mapping (the hooks' fast path). Async-signal-safe.
pub fn is_empty() -> bool {
    USED.load(Ordering::Relaxed) == 0
}

/// Whether any DSM mapping may hold an address of `[lo, hi)`: the part of it between the
/// lowest and highest mapped addresses, looked up a page at a time. Lock-free.
pub fn any_in(lo: usize, hi: usize) -> bool {
    let lo = lo.max(LOWEST.load(Ordering::Relaxed));
    let hi = hi.min(HIGHEST.load(Ordering::Relaxed));
    let mut a = lo & !(dsm_proto::PAGE_SIZE - 1);
    while a < hi {
        if lookup(a).is_some() {
            return true;
        }
        a += dsm_proto::PAGE_SIZE;
    }
    false
}

/// The mapping holding `addr`. Async-signal-safe and lock-free.
pub fn lookup(addr: usize) -> Option<Mapping> {
    if is_empty()
        || addr < LOWEST.load(Ordering::Relaxed)
        || addr >= HIGHEST.load(Ordering::Relaxed)
    {
        return None;
    }
    for _ in 0..10_000 {
        let before = GENERATION.load(Ordering::Acquire);
        if before & 1 == 1 {
            if WRITER_TID.load(Ordering::Relaxed) == sys::gettid() {
                break;
            }
            core::hint::spin_loop();
            continue;
        }
        let found = scan(addr);
        fence(Ordering::Acquire);
        if GENERATION.load(Ordering::Relaxed) == before {
            return found;
        }
    }
    scan(addr)
}

/// The table has no free slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull;

/// An address where this process maps bytes `[off, off + n)` of `segment` in one piece whose
/// protection allows the access, if it does.
pub fn covering(segment: SegmentId, off: usize, n: usize, write: bool) -> Option<usize> {
    SLOTS.iter().filter_map(read_slot).find_map(|m| {
        let addr = m.base + off;
        let allowed = if write {
            m.prot & libc::PROT_WRITE != 0
        } else {
            m.prot & libc::PROT_READ != 0
        };
        (m.segment == segment && allowed && m.start <= addr && addr + n <= m.end).then_some(addr)
    })
}

/// Every mapping piece of `segment`, with the address range in it of its pages
/// `[first, end)` (the segment's own address and any aliases: the same pages mapped again
/// elsewhere); pieces holding none of them are left out. Lock-free; a piece being added
/// meanwhile has no access yet, so missing it is harmless.
pub fn pieces_holding(
    segment: SegmentId,
    first: u32,
    end: u32,
) -> impl Iterator<Item = (Mapping, usize, usize)> {
    SLOTS
        .iter()
        .filter_map(read_slot)
        .filter(move |m| m.segment == segment)
        .filter_map(move |m| {
            let lo = (m.base + first as usize * PAGE_SIZE).max(m.start);
            let hi = (m.base + end as usize * PAGE_SIZE).min(m.end);
            (lo < hi).then_some((m, lo, hi))
        })
}

/// Exclusive access to the table for changes.
pub struct Writer {
    _held: SpinGuard<'static, ()>,
}

/// Takes the writer lock and opens a write section.
pub fn write() -> Writer {
    let held = WRITER.lock();
    WRITER_TID.store(sys::gettid(), Ordering::Relaxed);
    GENERATION.fetch_add(1, Ordering::Relaxed);
    fence(Ordering::Release);
    Writer { _held: held }
}

impl Drop for Writer {
    fn drop(&mut self) {
        GENERATION.fetch_add(1, Ordering::Release);
        WRITER_TID.store(0, Ordering::Relaxed);
    }
}

impl Writer {
    /// Every mapping overlapping `[lo, hi)`, with its slot index.
    pub fn overlapping(&self, lo: usize, hi: usize) -> impl Iterator<Item = (usize, Mapping)> {
        SLOTS
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, read_slot(s)?)))
            .filter(move |(_, m)| m.start < hi && lo < m.end)
    }

    /// Whether any mapping of `segment` is left.
    pub fn maps_segment(&self, segment: SegmentId) -> bool {
        SLOTS
            .iter()
            .filter_map(read_slot)
            .any(|m| m.segment == segment)
    }

    /// Changes the program's protection of slot `i`.
    pub fn set_prot(&mut self, i: usize, prot: i32) {
        SLOTS[i].prot.store(prot, Ordering::Relaxed);
    }

    /// Adds a new mapping; `Err` if the table is full.
    pub fn insert(&mut self, m: Mapping) -> Result<(), TableFull> {
        let i = SLOTS
            .iter()
            .position(|s| s.start.load(Ordering::Relaxed) == 0)
            .ok_or(TableFull)?;
        let s = &SLOTS[i];
        s.end.store(m.end, Ordering::Relaxed);
        s.segment.store(m.segment.0, Ordering::Relaxed);
        s.base.store(m.base, Ordering::Relaxed);
        s.prot.store(m.prot, Ordering::Relaxed);
        s.table.store(m.table, Ordering::Relaxed);
        s.table_len.store(m.table_len, Ordering::Relaxed);
        LOWEST.fetch_min(m.start, Ordering::Relaxed);
        HIGHEST.fetch_max(m.end, Ordering::Relaxed);
        s.start.store(m.start, Ordering::Relaxed);
        USED.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes slot `i`.
    pub fn remove(&mut self, i: usize) {
        if SLOTS[i].start.swap(0, Ordering::Relaxed) != 0
            && USED.fetch_sub(1, Ordering::Relaxed) == 1
        {
            LOWEST.store(usize::MAX, Ordering::Relaxed);
            HIGHEST.store(0, Ordering::Relaxed);
        }
    }

    /// Splits every mapping that straddles `lo` or `hi` so that each mapping lies wholly inside
    /// or wholly outside `[lo, hi)`. `Err` if the table has no room for the pieces.
    pub fn split_at(&mut self, lo: usize, hi: usize) -> Result<(), TableFull> {
        let straddling: Vec<(usize, Mapping)> = self
            .overlapping(lo, hi)
            .filter(|(_, m)| m.start < lo || hi < m.end)
            .collect();
        let needed: usize = straddling
            .iter()
            .map(|(_, m)| usize::from(m.start < lo) + usize::from(hi < m.end))
            .sum();
        if CAPACITY - USED.load(Ordering::Relaxed) < needed {
            return Err(TableFull);
        }
        for (i, m) in straddling {
            let inner = Mapping {
                start: m.start.max(lo),
                end: m.end.min(hi),
                ..m
            };
            SLOTS[i].start.store(inner.start, Ordering::Relaxed);
            SLOTS[i].end.store(inner.end, Ordering::Relaxed);
            if m.start < lo {
                self.insert(Mapping { end: lo, ..m })?;
            }
            if hi < m.end {
                self.insert(Mapping { start: hi, ..m })?;
            }
        }
        Ok(())
    }

    /// The mappings inside `[lo, hi)` (after [`Writer::split_at`], all that overlap it).
    pub fn inside(&self, lo: usize, hi: usize) -> Vec<(usize, Mapping)> {
        self.overlapping(lo, hi)
            .filter(|(_, m)| lo <= m.start && m.end <= hi)
            .collect()
    }

    /// Every mapping.
    pub fn all(&self) -> Vec<Mapping> {
        SLOTS.iter().filter_map(read_slot).collect()
    }
}

/// Taken before `fork` so the child does not inherit a half-written table.
pub fn lock_for_fork() {
    WRITER.raw_lock();
}

/// Released after `fork`, in the parent and in the child.
pub fn unlock_after_fork() {
    // SAFETY: taken by `lock_for_fork` in this thread; no guard is alive.
    unsafe { WRITER.force_unlock() };
}
