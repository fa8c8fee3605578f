//! Revocation: the daemon takes access back from this process before a page leaves the node
//! or is downgraded, and grants and revocations never cross.
//!
//! A listener thread reads revocations from the session connection, lowers the page's
//! protection and acknowledges. The fault handler raises a page's protection for a grant. Both
//! `mprotect` under one lock, and every grant carries the number of revocations the daemon had
//! sent before it: if this process has already applied a higher-numbered one, the grant may be
//! older than that revocation and is not applied — the handler asks again. So a grant and a
//! revocation racing inside the process can never leave it with more access than the node
//! holds (design invariant 3).

use core::sync::atomic::{AtomicU64, Ordering};

use dsm_proto::client::{Push, PushAck};
use dsm_proto::{Access, SegmentId, PAGE_SIZE};

use crate::lock::SpinLock;
use crate::mappings::{self, Mapping};
use crate::sys;
use crate::wire;

static LOCK: SpinLock<()> = SpinLock::new(());
static LAST_APPLIED: AtomicU64 = AtomicU64::new(0);

/// The protection a process gets for `access`, within what the program asked for.
pub fn prot_for(access: Access, mapping: &Mapping) -> i32 {
    let granted = match access {
        Access::Write => libc::PROT_READ | libc::PROT_WRITE,
        Access::Read => libc::PROT_READ,
        Access::None => libc::PROT_NONE,
    };
    let exec = if access > Access::None {
        mapping.prot & libc::PROT_EXEC
    } else {
        0
    };
    (granted & mapping.prot) | exec
}

/// Applies a grant numbered `seq` to the page at `page_addr`; `false` if a later revocation
/// was applied meanwhile (fault again). Async-signal-safe.
pub fn apply_grant(
    mapping: &Mapping,
    page_addr: usize,
    access: Access,
    seq: u64,
) -> Result<bool, i32> {
    let _held = LOCK.lock();
    if LAST_APPLIED.load(Ordering::Relaxed) > seq {
        return Ok(false);
    }
    mark_opened(mapping, mapping.page_of(page_addr), 1);
    // SAFETY: the page lies in a DSM mapping of this process; its protection becomes what the
    // daemon granted, under the lock revocations take too.
    unsafe { sys::mprotect(page_addr, PAGE_SIZE, prot_for(access, mapping)) }.map(|_| true)
}

/// Grants the fault from the segment's state table if the node already holds the page well
/// enough for local processes; `false`: ask the daemon. Async-signal-safe.
///
/// The table is read under the lock revocations are applied under, and the daemon lowers a
/// page's entry before it sends any revocation for it: so either this `mprotect` comes first and
/// the revocation lowers it afterwards, or the revocation came first and the read sees the
/// lowered entry.
pub fn grant_from_table(mapping: &Mapping, page: u32, page_addr: usize, write: bool) -> bool {
    let need = Access::for_fault(write);
    let _held = LOCK.lock();
    let Some(mut access) = table_entry(mapping, page).filter(|a| *a >= need) else {
        return false;
    };
    // Open the run of following pages the node holds as well (read ahead, or pages other
    // processes use): a scan then faults once per run instead of once per page.
    let mut run = 1;
    while run < MAX_RUN && page_addr + (run + 1) * PAGE_SIZE <= mapping.end {
        match table_entry(mapping, page + run as u32) {
            Some(a) if a >= need => access = access.min(a),
            _ => break,
        }
        run += 1;
    }
    mark_opened(mapping, page, run);
    // SAFETY: the pages lie in a DSM mapping of this process; the node holds them this well
    // and will revoke them from this process before that changes.
    unsafe { sys::mprotect(page_addr, run * PAGE_SIZE, prot_for(access, mapping)) }.is_ok()
}

/// Most pages one table hit opens.
const MAX_RUN: usize = 256;

/// Marks `count` pages from `page` as opened in this process (bit 0 of their marks; the daemon
/// sets bit 1 of a page read ahead), for its count of pages read ahead that no process opened
/// (`dsmctl stats`). Under `LOCK`, before the `mprotect`: a revocation's acknowledgement, which
/// the daemon reads the marks after, comes later.
fn mark_opened(mapping: &Mapping, page: u32, count: usize) {
    if mapping.table == 0 {
        return;
    }
    let marks = mapping.table + mapping.table_len;
    for p in (page as usize)..(page as usize + count).min(mapping.table_len) {
        // SAFETY: the marks follow the table in the same mapping, `table_len` bytes, mapped
        // read-write for the life of the process (`p < table_len`); every access is atomic.
        let mark = unsafe { &*((marks + p) as *const core::sync::atomic::AtomicU8) };
        if mark.load(Ordering::Relaxed) & 1 == 0 {
            mark.fetch_or(1, Ordering::Release);
        }
    }
}

/// The state table's entry for `page`, if the table covers it.
fn table_entry(mapping: &Mapping, page: u32) -> Option<Access> {
    if mapping.table == 0 || page as usize >= mapping.table_len {
        return None;
    }
    // SAFETY: the table is mapped read-only for the life of the process with `table_len`
    // entries (checked above); every access to it is atomic.
    let entry =
        unsafe { &*((mapping.table + page as usize) as *const core::sync::atomic::AtomicU8) };
    match entry.load(Ordering::Acquire) {
        2 => Some(Access::Write),
        1 => Some(Access::Read),
        _ => Some(Access::None),
    }
}

fn apply_revoke(segment: SegmentId, first: u32, count: u32, access: Access, seq: u64) {
    let _held = LOCK.lock();
    // The run at the segment's own address and at every alias of it in this process, one
    // `mprotect` each (page by page, a run split and merged the kernel's mapping once a page:
    // a release of a rewritten block cost 40-odd calls).
    for (mapping, lo, hi) in mappings::pieces_holding(segment, first, first.saturating_add(count)) {
        // SAFETY: lowering (never raising beyond the node's access) pages of our own DSM
        // mapping; a later access faults and is served again.
        let lowered = unsafe { sys::mprotect(lo, hi - lo, prot_for(access, &mapping)) };
        if lowered.is_err() || injected_failure() {
            lower_all(&mapping);
        }
    }
    LAST_APPLIED.fetch_max(seq, Ordering::Relaxed);
}

/// Test hook: `DSM_TEST_REVOKE_ENOMEM=N` makes the Nth revocation `mprotect` of the process fail as
/// at `vm.max_map_count` (which a test cannot safely reach: the limit is the whole machine's).
static INJECT_AT: AtomicU64 = AtomicU64::new(0);
static REVOKED: AtomicU64 = AtomicU64::new(0);

fn injected_failure() -> bool {
    let at = INJECT_AT.load(Ordering::Relaxed);
    at != 0 && REVOKED.fetch_add(1, Ordering::Relaxed) + 1 == at
}

/// A page's protection could not be lowered — lowering the middle of a mapping splits it, and
/// the process is at `vm.max_map_count` — so the whole mapping loses its access instead (one
/// piece: nothing to split). The page is never left writable against the daemon's word; every
/// page of the mapping faults again, and the faults that cannot be granted for the same reason
/// fail with a line that names the limit.
fn lower_all(mapping: &Mapping) {
    static SAID: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    // SAFETY: removing access from a whole DSM mapping of this process; every later access
    // faults and is served again.
    let all = unsafe { sys::mprotect(mapping.start, mapping.end - mapping.start, libc::PROT_NONE) };
    if !SAID.swap(true, Ordering::Relaxed) {
        crate::say!(
            "could not revoke one page of a shared mapping (the process is at vm.max_map_count: \
             raise it, sysctl -w vm.max_map_count=4194304): the whole mapping was revoked \
             instead, and faults again{}",
            if all.is_ok() {
                ""
            } else {
                " (that failed too)"
            }
        );
    }
    if all.is_err() {
        // Never go on with memory the cluster took away.
        crate::say!("cannot revoke access to shared memory: stopping the process");
        // SAFETY: ending the process is always sound.
        unsafe { libc::abort() };
    }
}

/// Starts the listener thread on the session connection `fd`.
pub fn start_listener(fd: i32) {
    if let Some(at) = std::env::var("DSM_TEST_REVOKE_ENOMEM")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        INJECT_AT.store(at, Ordering::Relaxed);
    }
    let spawned = std::thread::Builder::new()
        .name("dsm-revoke".into())
        .spawn(move || listen(fd));
    if let Err(e) = spawned {
        crate::say!("cannot start the revocation thread ({e}); pages can be revoked only slowly");
    }
}

fn listen(fd: i32) {
    // No signal handler of the program runs on this thread: it may hold the grant lock.
    // SAFETY: all-ones is a valid full signal set.
    let all: libc::sigset_t = unsafe {
        let mut set = core::mem::zeroed();
        libc::sigfillset(&mut set);
        set
    };
    sys::set_sigmask(&all);
    let mut buf = [0u8; wire::BUF];
    loop {
        let push = match wire::recv::<Push>(fd, &mut buf, None) {
            Ok(p) => p,
            // The daemon is gone or the session closed (fork child, exit): nothing to revoke.
            Err(_) => return,
        };
        let (segment, page, count, access, seq) = match push {
            Push::Revoke {
                segment,
                page,
                count,
                access,
                seq,
            } => (segment, page, count, access, seq),
            Push::Replicating { on } => {
                wire::set_replicating(on);
                continue;
            }
        };
        apply_revoke(segment, page, count, access, seq);
        if wire::send(fd, &PushAck::Revoked { seq }).is_err() {
            return;
        }
    }
}

/// Taken before `fork`.
pub fn lock_for_fork() {
    LOCK.raw_lock();
}

/// Released after `fork`, in parent and child.
pub fn unlock_after_fork() {
    // SAFETY: taken by `lock_for_fork` in this thread; no guard is alive.
    unsafe { LOCK.force_unlock() };
}
