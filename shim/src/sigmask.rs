//! SIGSEGV and SIGSYS are never really blocked; each thread still sees the mask it asked for.
//!
//! The kernel forces the signal of a page fault (SIGSEGV) and of a trapped system call (SIGSYS,
//! see [`crate::io`]) on a thread that blocks it by killing the thread's process. A DSM fault or
//! a `write` from DSM memory on a thread that called `pthread_sigmask(SIG_BLOCK, {SIGSEGV})`
//! would therefore be fatal. So every mask the program hands to libc (`pthread_sigmask`,
//! `sigprocmask`, `sigsuspend`, `ppoll`, `pselect`, `epoll_pwait`, a handler's `sa_mask`) goes
//! in without those two, and what the thread asked for is kept here, keyed by thread id (no
//! thread-local storage: the fault handler reads it), and added back to every old mask the
//! program reads. A fault that is *not* a DSM fault on a thread that believes it blocks SIGSEGV
//! kills the process, as the kernel would have ([`crate::fault::forward`]).
//!
//! Known difference: a thread starts with no virtual bits, where the kernel would have copied
//! its creator's mask.

use core::sync::atomic::{AtomicI32, AtomicU8, Ordering};

use crate::sys;

const SLOTS: usize = 1024;
const SEGV: u8 = 1;
const SYS: u8 = 2;

struct Slot {
    tid: AtomicI32,
    bits: AtomicU8,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    tid: AtomicI32::new(0),
    bits: AtomicU8::new(0),
};

/// Threads that believe they block SIGSEGV or SIGSYS (few: most never do).
static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];

/// Bits of the thread that called `fork`, for the child's only thread.
static FORKING: AtomicU8 = AtomicU8::new(0);

fn bits_of(set: &libc::sigset_t) -> u8 {
    // SAFETY: `set` is a valid sigset_t.
    let has = |s| unsafe { libc::sigismember(set, s) } == 1;
    (if has(libc::SIGSEGV) { SEGV } else { 0 }) | (if has(libc::SIGSYS) { SYS } else { 0 })
}

/// Removes SIGSEGV and SIGSYS from `set`.
pub fn keep_deliverable(set: &mut libc::sigset_t) {
    // SAFETY: `set` is a valid sigset_t.
    unsafe {
        libc::sigdelset(set, libc::SIGSEGV);
        libc::sigdelset(set, libc::SIGSYS);
    }
}

fn add_bits(set: &mut libc::sigset_t, bits: u8) {
    // SAFETY: `set` is a valid sigset_t.
    unsafe {
        if bits & SEGV != 0 {
            libc::sigaddset(set, libc::SIGSEGV);
        }
        if bits & SYS != 0 {
            libc::sigaddset(set, libc::SIGSYS);
        }
    }
}

fn get(tid: i32) -> u8 {
    TABLE
        .iter()
        .find(|s| s.tid.load(Ordering::Acquire) == tid)
        .map_or(0, |s| s.bits.load(Ordering::Relaxed))
}

fn store(tid: i32, bits: u8) {
    if let Some(slot) = TABLE.iter().find(|s| s.tid.load(Ordering::Acquire) == tid) {
        slot.bits.store(bits, Ordering::Relaxed);
        if bits == 0 {
            slot.tid.store(0, Ordering::Release);
        }
        return;
    }
    if bits == 0 {
        return;
    }
    for pass in 0..2 {
        for slot in &TABLE {
            let owner = slot.tid.load(Ordering::Acquire);
            // Second pass: slots of threads that ended are free too.
            let free = owner == 0 || (pass == 1 && !sys::thread_alive(owner));
            if free
                && slot
                    .tid
                    .compare_exchange(owner, tid, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                slot.bits.store(bits, Ordering::Relaxed);
                return;
            }
        }
    }
    crate::say!(
        "more than {SLOTS} threads block SIGSEGV or SIGSYS; thread {tid} will see them unblocked"
    );
}

/// Whether the calling thread believes it blocks `sig`. Async-signal-safe.
pub fn program_blocks(sig: libc::c_int) -> bool {
    let bit = match sig {
        libc::SIGSEGV => SEGV,
        libc::SIGSYS => SYS,
        _ => return false,
    };
    get(sys::gettid()) & bit != 0
}

/// `pthread_sigmask`/`sigprocmask(how, set, old)` through libc's `real`, which returns 0 or a
/// failure the caller's convention understands (it is passed back unchanged).
///
/// # Safety
/// `set` and `old` are NULL or valid, as for `pthread_sigmask`.
pub unsafe fn change(
    how: libc::c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
    real: impl FnOnce(libc::c_int, *const libc::sigset_t, *mut libc::sigset_t) -> libc::c_int,
) -> libc::c_int {
    let tid = sys::gettid();
    let before = get(tid);
    // SAFETY: NULL or valid, per the contract; read before the call (`old` may alias it).
    let asked = unsafe { set.as_ref() }.copied();
    let cleaned = asked.map(|mut s| {
        keep_deliverable(&mut s);
        s
    });
    let r = real(
        how,
        cleaned
            .as_ref()
            .map_or(core::ptr::null(), |s| s as *const libc::sigset_t),
        old,
    );
    if r != 0 {
        return r;
    }
    // SAFETY: NULL or valid, per the contract.
    if let Some(old) = unsafe { old.as_mut() } {
        add_bits(old, before);
    }
    if let Some(asked) = asked {
        let bits = bits_of(&asked);
        let after = match how {
            libc::SIG_BLOCK => before | bits,
            libc::SIG_UNBLOCK => before & !bits,
            libc::SIG_SETMASK => bits,
            _ => before,
        };
        if after != before {
            store(tid, after);
        }
    }
    0
}

/// A temporary mask (`sigsuspend`, `ppoll`, …) without SIGSEGV and SIGSYS.
///
/// # Safety
/// `mask` is NULL or valid.
pub unsafe fn temporary(mask: *const libc::sigset_t) -> Option<libc::sigset_t> {
    // SAFETY: NULL or valid, per the contract.
    unsafe { mask.as_ref() }.map(|m| {
        let mut m = *m;
        keep_deliverable(&mut m);
        m
    })
}

/// Before `fork`: what the forking thread believes it blocks.
pub fn prepare_fork() {
    FORKING.store(get(sys::gettid()), Ordering::Relaxed);
}

/// In the child after `fork`: its one thread has a new id; the others are gone.
pub fn child_after_fork() {
    for slot in &TABLE {
        slot.tid.store(0, Ordering::Relaxed);
        slot.bits.store(0, Ordering::Relaxed);
    }
    store(sys::gettid(), FORKING.load(Ordering::Relaxed));
}
