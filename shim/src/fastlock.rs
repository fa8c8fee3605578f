//! The fast path of a mutex on its home node ([`dsm_proto::fastlock`]): while the home's
//! daemon has delegated a mutex to its node's processes, a lock or an unlock is one
//! compare-and-swap on a word in the segment's lock table, with no request (a recursive mutex's
//! nested locks are counted here). Anything else (a word the daemon keeps, a failed swap, a
//! robust mutex, an unlock by a process that wrote since its last release while releases
//! replicate) goes to the daemon as before.

use core::sync::atomic::{AtomicU64, Ordering};

use dsm_proto::client::{Reply, Request};
use dsm_proto::fastlock as fl;
use dsm_proto::sync::MutexKind;
use dsm_proto::SegmentId;

use crate::lock::SpinLock;
use crate::{session, sys};

/// Each segment's lock table as mapped here: its address, or 0 when the daemon would not
/// give it (the process may not write the segment): asked once per segment.
static TABLES: SpinLock<Vec<(SegmentId, usize)>> = SpinLock::new(Vec::new());

/// Write accesses this process obtained to DSM pages (counted by the fault path).
static WRITES: AtomicU64 = AtomicU64::new(0);
/// Of those, how many a completed release covers.
static RELEASED: AtomicU64 = AtomicU64::new(0);

/// The fault path obtained write access to a page. Async-signal-safe.
pub fn note_write() {
    WRITES.fetch_add(1, Ordering::Relaxed);
}

/// Before a release is asked for: the writes it will cover.
pub fn release_begins() -> u64 {
    WRITES.load(Ordering::Acquire)
}

/// A release asked for when [`release_begins`] said `upto` has completed.
pub fn release_done(upto: u64) {
    RELEASED.fetch_max(upto, Ordering::AcqRel);
}

/// Whether a release may skip waiting for the daemon (an unlock: skip it altogether): releases
/// do not replicate, or every write access this process obtained is covered by a release that
/// completed since (see `fault::obtain` for why the count is taken after the access).
pub fn nothing_to_release() -> bool {
    !crate::wire::replicating()
        || WRITES.load(Ordering::Acquire) == RELEASED.load(Ordering::Acquire)
}

fn eligible(kind: MutexKind) -> bool {
    !kind.robust
}

/// A recursive mutex a thread holds through the fast path, and how many more times it locked
/// it: the word names only the holder, the count beyond the first lock is the thread's own
/// (if the home takes the mutex back meanwhile, it holds it once for the thread, and the last
/// unlock goes to the home).
#[derive(Clone, Copy)]
struct Nested {
    segment: SegmentId,
    offset: u64,
    tid: i32,
    more: u32,
}

/// Every recursive mutex this process's threads hold through the fast path.
static NESTED: SpinLock<Vec<Nested>> = SpinLock::new(Vec::new());
/// Most kept: beyond, recursive mutexes go to the daemon, which counts for them.
const NESTED_KEPT: usize = 4_096;

/// Thread `tid`'s record of the recursive mutex at `offset` of `segment`, if it holds one.
fn nested<T>(
    segment: SegmentId,
    offset: u64,
    tid: i32,
    f: impl FnOnce(&mut Vec<Nested>, Option<usize>) -> T,
) -> T {
    let mut all = NESTED.lock();
    let at = all
        .iter()
        .position(|n| n.segment == segment && n.offset == offset && n.tid == tid);
    f(&mut all, at)
}

/// Records that this thread took the recursive mutex through the fast path; `false` if there
/// is no room (the caller gives it back).
fn note_nested(segment: SegmentId, offset: u64, tid: i32) -> bool {
    nested(segment, offset, tid, |all, at| {
        if at.is_some() {
            return true;
        }
        if all.len() >= NESTED_KEPT {
            return false;
        }
        all.push(Nested {
            segment,
            offset,
            tid,
            more: 0,
        });
        true
    })
}

/// The lock table of `segment`, mapped read-write; fetched from the daemon once.
fn table(segment: SegmentId) -> Option<usize> {
    if let Some(&(_, addr)) = TABLES.lock().iter().find(|(s, _)| *s == segment) {
        return (addr != 0).then_some(addr);
    }
    let addr = fetch(segment).unwrap_or(0);
    let mut tables = TABLES.lock();
    match tables.iter().find(|(s, _)| *s == segment) {
        // Another thread fetched it meanwhile: keep the first (ours stays mapped, unused).
        Some(&(_, first)) => (first != 0).then_some(first),
        None => {
            tables.push((segment, addr));
            (addr != 0).then_some(addr)
        }
    }
}

fn fetch(segment: SegmentId) -> Option<usize> {
    let mut fd = -1;
    let reply = crate::ops::request(
        "pthread_mutex_lock",
        &Request::Locks { segment },
        Some(&mut fd),
    );
    let ok = matches!(reply, Ok(Reply::Table { len }) if len as usize == fl::TABLE_BYTES);
    if fd < 0 {
        return None;
    }
    let addr = if ok {
        // SAFETY: maps the daemon's lock table memfd read-write at an address the kernel
        // picks; it stays mapped for the life of the process.
        unsafe {
            sys::mmap(
                0,
                fl::TABLE_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        }
        .ok()
    } else {
        None
    };
    sys::close(fd);
    addr
}

/// The lock table of `segment` if this process mapped it already (no request).
fn mapped(segment: SegmentId) -> Option<usize> {
    TABLES
        .lock()
        .iter()
        .find(|(s, _)| *s == segment)
        .map(|&(_, a)| a)
        .filter(|&a| a != 0)
}

/// The tag and word of `offset`'s slot in the table at `addr`.
fn cells(addr: usize, offset: u64) -> (&'static AtomicU64, &'static AtomicU64) {
    let at = addr + fl::slot(offset) * 16;
    // SAFETY: `at` and `at + 8` lie in the table's mapping (slot < SLOTS), which is never
    // unmapped, 8-aligned (page-aligned base, 16-byte slots); the table is only ever accessed
    // atomically, here and by the daemon.
    unsafe { (&*(at as *const AtomicU64), &*((at + 8) as *const AtomicU64)) }
}

/// Thread `tid` of this process as a word's holder.
fn me(tid: i32) -> Option<u64> {
    let session = session::id()?;
    Some(fl::holder(session.0, tid as u32))
}

/// Takes the mutex at `offset` of `segment` if its home delegated it and it is free (or, a
/// recursive one, if this thread holds it through the fast path already).
pub fn try_lock(segment: SegmentId, offset: u64, kind: MutexKind) -> bool {
    if !eligible(kind) {
        return false;
    }
    let tid = sys::gettid();
    if kind.recursive {
        // Held by this thread through the fast path already: once more, counted here.
        let held = nested(segment, offset, tid, |all, at| match at {
            Some(i) => {
                all[i].more += 1;
                Some(true)
            }
            None if all.len() >= NESTED_KEPT => Some(false), // no room: the daemon counts
            None => None,
        });
        if let Some(took) = held {
            return took;
        }
    }
    let (Some(addr), Some(me)) = (table(segment), me(tid)) else {
        return false;
    };
    let (tag, word) = cells(addr, offset);
    let w = word.load(Ordering::Acquire);
    // The tag is read after the word: if the slot was given to another mutex since, the word's
    // generation moved and the swap fails.
    if fl::holder_of(w) != fl::FREE || tag.load(Ordering::Acquire) != fl::tag(offset) {
        return false;
    }
    let took = word
        .compare_exchange(
            w,
            fl::with_holder(w, me),
            Ordering::Acquire,
            Ordering::Relaxed,
        )
        .is_ok();
    if took && kind.recursive && !note_nested(segment, offset, tid) {
        // No room after all (another thread took the last): held once, counted by nobody;
        // give it back and let the daemon count.
        let _ = word.compare_exchange(
            fl::with_holder(w, me),
            w,
            Ordering::Release,
            Ordering::Relaxed,
        );
        return false;
    }
    took
}

/// After the daemon granted this thread the mutex: a recursive one it delegated (the word names
/// this thread) is counted here from now on, as if taken through the fast path.
pub fn granted(segment: SegmentId, offset: u64, kind: MutexKind) {
    if !kind.recursive || kind.robust {
        return;
    }
    let Some(addr) = mapped(segment) else {
        return;
    };
    let tid = sys::gettid();
    let Some(me) = me(tid) else { return };
    let (tag, word) = cells(addr, offset);
    if fl::holder_of(word.load(Ordering::Acquire)) == me
        && tag.load(Ordering::Acquire) == fl::tag(offset)
    {
        // Without room, no record: the thread's next lock goes to the daemon, which takes the
        // mutex back (held by this thread) and counts.
        let _ = note_nested(segment, offset, tid);
    }
}

/// Gives back the mutex at `offset` of `segment` if this thread holds it through the fast
/// path and nothing waits for a release.
pub fn try_unlock(segment: SegmentId, offset: u64, kind: MutexKind) -> bool {
    if !eligible(kind) {
        return false;
    }
    let tid = sys::gettid();
    if kind.recursive {
        // A lock beyond the first is given back here; the last one ends the record, then goes
        // on the word or to the daemon.
        let inner = nested(segment, offset, tid, |all, at| match at {
            Some(i) if all[i].more > 0 => {
                all[i].more -= 1;
                true
            }
            Some(i) => {
                all.swap_remove(i);
                false
            }
            None => false,
        });
        if inner {
            return true;
        }
    }
    if !nothing_to_release() {
        return false;
    }
    let Some(addr) = mapped(segment) else {
        return false;
    };
    let Some(me) = me(tid) else { return false };
    let (tag, word) = cells(addr, offset);
    let w = word.load(Ordering::Acquire);
    // Held by this thread, the slot cannot change mutex (the daemon retags only words it
    // keeps), so the tag says whether the hold is this mutex's or a slot-mate's.
    if fl::holder_of(w) != me || tag.load(Ordering::Acquire) != fl::tag(offset) {
        return false;
    }
    word.compare_exchange(w, fl::freed(w), Ordering::Release, Ordering::Relaxed)
        .is_ok()
}

/// Taken before `fork`.
pub fn lock_for_fork() {
    TABLES.raw_lock();
    NESTED.raw_lock();
}

/// Released after `fork`, in the parent (and in the child, which keeps the tables: their
/// mappings are inherited).
pub fn unlock_after_fork() {
    // SAFETY: taken by `lock_for_fork` in this thread; no guard is alive.
    unsafe {
        NESTED.force_unlock();
        TABLES.force_unlock();
    }
}

/// In a forked child: its threads are new, the parent's recursive holds are not its own.
pub fn child_after_fork() {
    unlock_after_fork();
    NESTED.lock().clear();
}
