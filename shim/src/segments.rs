//! Which open file descriptions are DSM segments, by the memfd's device and inode.
//!
//! Recognizing a descriptor by what it refers to, rather than by its number, makes `dup`,
//! `dup2`, `fork` and Python's `mmap` (which dups the descriptor it is given) work without
//! hooking them.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dsm_proto::SegmentId;

use crate::lock::SpinLock;
use crate::sys;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Known {
    dev: u64,
    ino: u64,
    segment: SegmentId,
    /// The segment's state table mapped in this process (address, entries), once fetched, and
    /// the segment's base address then: a segment that moved (grown while mapped nowhere) has
    /// a new table.
    table: Option<(usize, usize, usize)>,
}

/// Every segment this process opened or was handed, without limit: forgetting one would make
/// its descriptors silently local. Not read by the signal handler.
static TABLE: SpinLock<Vec<Known>> = SpinLock::new(Vec::new());
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Descriptor numbers that may be segments (set when one becomes a segment's, or a copy of
/// one; cleared when a check finds it is not): the one-load test that keeps `read` and `write`
/// of every other descriptor free of an `fstat`.
static MAYBE: [AtomicU64; MAYBE_FDS / 64] = [const { AtomicU64::new(0) }; MAYBE_FDS / 64];
const MAYBE_FDS: usize = 1 << 16;

/// Marks `fd` as maybe a segment's (a higher number is always checked).
pub fn mark(fd: i32) {
    if let Some(word) = MAYBE.get(fd as usize / 64) {
        word.fetch_or(1 << (fd as usize % 64), Ordering::Relaxed);
    }
}

/// Whether `fd` may be a segment's ([`mark`]): one load.
pub fn is_marked(fd: i32) -> bool {
    fd >= 0
        && MAYBE
            .get(fd as usize / 64)
            .is_none_or(|w| w.load(Ordering::Relaxed) & (1 << (fd as usize % 64)) != 0)
}

/// `fd` is not a segment's after all.
pub fn unmark(fd: i32) {
    if let Some(w) = MAYBE.get(fd as usize / 64) {
        w.fetch_and(!(1 << (fd as usize % 64)), Ordering::Relaxed);
    }
}

/// Marks every descriptor the process has that may be a segment's: at start, for those
/// inherited across `exec`.
pub fn mark_inherited() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in dir.flatten() {
        if let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        {
            if may_be_foreign_segment(fd) {
                mark(fd);
            }
        }
    }
}

/// Remembers that `fd` (just received from the daemon) is `segment`.
pub fn remember(fd: i32, segment: SegmentId) {
    mark(fd);
    let Ok(st) = sys::fstat(fd) else { return };
    let known = Known {
        dev: st.st_dev,
        ino: st.st_ino,
        segment,
        table: None,
    };
    let mut entries = TABLE.lock();
    if let Some(entry) = entries
        .iter_mut()
        .find(|k| k.dev == known.dev && k.ino == known.ino)
    {
        // Opened again: the same segment keeps its entry (and its mapped state table); a new
        // segment that got the inode of a removed one replaces it.
        if entry.segment != segment {
            *entry = known;
        }
        return;
    }
    entries.push(known);
    COUNT.fetch_add(1, Ordering::Relaxed);
}

/// The segment `fd` refers to, if it is one. Costs one `fstat` once any segment is known.
pub fn lookup(fd: i32) -> Option<SegmentId> {
    if fd < 0 || COUNT.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let st = sys::fstat(fd).ok()?;
    let found = TABLE
        .lock()
        .iter()
        .find(|k| k.dev == st.st_dev && k.ino == st.st_ino)
        .map(|k| k.segment);
    if found.is_some() {
        // A copy (dup, fork, Python's mmap) found by the slow path is fast from now on.
        mark(fd);
    }
    found
}

/// Whether `fd` may be a segment this process was not told of (received over `SCM_RIGHTS`, or
/// inherited across `exec`): a memfd (unlinked regular file) the daemon named `dsm:…`.
pub fn may_be_foreign_segment(fd: i32) -> bool {
    let Ok(st) = sys::fstat(fd) else { return false };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_nlink != 0 {
        return false;
    }
    let path = format!("/proc/self/fd/{fd}\0");
    let mut target = [0u8; 64];
    // SAFETY: a NUL-terminated path and a buffer of the length passed.
    let n = unsafe {
        libc::syscall(
            libc::SYS_readlinkat,
            libc::AT_FDCWD as usize,
            path.as_ptr() as usize,
            target.as_mut_ptr() as usize,
            target.len(),
        )
    };
    n > 0 && target[..n as usize].starts_with(b"/memfd:dsm:")
}

/// The device and inode of `fd`.
pub fn identity(fd: i32) -> Option<(u64, u64)> {
    sys::fstat(fd).ok().map(|st| (st.st_dev, st.st_ino))
}

/// The state table of `segment` at `base` mapped in this process, if it was fetched; a table
/// of an older base is unmapped and forgotten.
pub fn table(segment: SegmentId, base: usize) -> Option<(usize, usize)> {
    let mut entries = TABLE.lock();
    let k = entries.iter_mut().find(|k| k.segment == segment)?;
    match k.table {
        Some((addr, len, at)) if at == base => Some((addr, len)),
        Some((addr, len, _)) => {
            // SAFETY: the old table's mapping is ours; no mapping of the segment is left that
            // refers to it (the segment moved only while mapped nowhere). Its marks follow it.
            let _ = unsafe { sys::munmap(addr, 2 * len) };
            k.table = None;
            None
        }
        None => None,
    }
}

/// Records the state table of `segment` at `base`, mapped at `addr` with `len` entries.
pub fn set_table(segment: SegmentId, base: usize, addr: usize, len: usize) {
    for k in TABLE.lock().iter_mut() {
        if k.segment == segment {
            k.table = Some((addr, len, base));
        }
    }
}

/// Taken before `fork`.
pub fn lock_for_fork() {
    TABLE.raw_lock();
}

/// Released after `fork`, in parent and child.
pub fn unlock_after_fork() {
    // SAFETY: taken by `lock_for_fork` in this thread; no guard is alive.
    unsafe { TABLE.force_unlock() };
}
