//! One request channel (a socket to the daemon) per thread, in a preallocated table keyed by
//! thread id.
//!
//! Thread-local storage is not an option in a signal handler of a preloaded library (its first
//! access may allocate), so threads find their slot by `gettid()`. A slot whose thread has died
//! is taken over with its socket, so a program that starts and ends many threads does not leak
//! descriptors. A thread that re-enters while its channel is busy (a signal handler of the
//! program touching DSM memory in the middle of our `shm_open`) gets a one-off connection.

use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use dsm_proto::client::{Reply, Request};
use dsm_proto::hello::Role;

use crate::sys::{self, SysResult};
use crate::{session, wire};

const SLOTS: usize = 512;

struct Slot {
    tid: AtomicI32,
    fd: AtomicI32,
    busy: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    tid: AtomicI32::new(0),
    fd: AtomicI32::new(-1),
    busy: AtomicBool::new(false),
};

static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];

/// Sends `request` on the calling thread's channel and returns the reply, or `ETIMEDOUT` once
/// the daemon's bound has passed without one (see [`wire::call_bounded`]). Async-signal-safe.
pub fn call(request: &Request<'_>, fd_out: Option<&mut i32>) -> SysResult<Reply> {
    with_channel(|fd| wire::call_bounded(fd, request, fd_out, wire::Bound::Fault))
}

/// [`call`] for a segment directory request, bounded by the daemon's directory timeout.
pub fn call_directory(request: &Request<'_>, fd_out: Option<&mut i32>) -> SysResult<Reply> {
    with_channel(|fd| wire::call_bounded(fd, request, fd_out, wire::Bound::Directory))
}

/// [`call`] without a bound: for a lock or barrier wait, which may last as long as the program
/// holds the lock elsewhere.
pub fn call_unbounded(request: &Request<'_>, fd_out: Option<&mut i32>) -> SysResult<Reply> {
    with_channel(|fd| wire::call(fd, request, fd_out))
}

/// [`call`], sending `withdraw` if a signal handler runs while the reply is awaited.
pub fn call_interruptible(request: &Request<'_>, withdraw: &Request<'_>) -> SysResult<Reply> {
    with_channel(|fd| wire::call_interruptible(fd, request, withdraw))
}

/// Sends `request`, which the daemon does not answer, on the calling thread's channel.
pub fn post(request: &Request<'_>) -> SysResult<()> {
    with_channel(|fd| wire::send(fd, request))
}

fn with_channel<T>(exchange: impl FnOnce(i32) -> SysResult<T>) -> SysResult<T> {
    let tid = sys::gettid();
    match claim(tid) {
        Some(slot) => {
            let mut fd = slot.fd.load(Ordering::Relaxed);
            if fd < 0 {
                fd = match open(tid) {
                    Ok(fd) => fd,
                    Err(e) => {
                        slot.busy.store(false, Ordering::Release);
                        return Err(e);
                    }
                };
                slot.fd.store(fd, Ordering::Relaxed);
            }
            let result = exchange(fd);
            if result.is_err() {
                // The stream may be out of step now: start afresh next time.
                sys::close(fd);
                slot.fd.store(-1, Ordering::Relaxed);
            }
            slot.busy.store(false, Ordering::Release);
            result
        }
        None => {
            let fd = open(tid)?;
            let result = exchange(fd);
            sys::close(fd);
            result
        }
    }
}

fn open(tid: i32) -> SysResult<i32> {
    let session = session::id().ok_or(libc::ENOTCONN)?;
    let (fd, _, _) = wire::connect(Role::Channel {
        session,
        tid: tid as u32,
    })?;
    Ok(fd)
}

/// The calling thread's slot, marked busy; `None` if it is busy already or the table is full.
fn claim(tid: i32) -> Option<&'static Slot> {
    // Own slot first; then a dead thread's, socket and all (one `tgkill(…, 0)` per slot looked
    // at, once per new thread), so threads that come and go share a few sockets; a free slot
    // only when every taken one belongs to a live thread.
    let mine = TABLE
        .iter()
        .find(|s| s.tid.load(Ordering::Relaxed) == tid)
        .or_else(|| {
            TABLE.iter().find(|s| {
                let old = s.tid.load(Ordering::Relaxed);
                old != 0
                    && old != tid
                    && !s.busy.load(Ordering::Relaxed)
                    && !sys::thread_alive(old)
                    && s.tid
                        .compare_exchange(old, tid, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
            })
        })
        .or_else(|| {
            TABLE.iter().find(|s| {
                s.tid
                    .compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
        })?;
    if mine.busy.swap(true, Ordering::Acquire) {
        return None;
    }
    Some(mine)
}

/// In a forked child: the inherited sockets belong to the parent's threads; drop them all.
pub fn reset_after_fork() {
    for slot in &TABLE {
        let fd = slot.fd.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            sys::close(fd);
        }
        slot.tid.store(0, Ordering::Relaxed);
        slot.busy.store(false, Ordering::Relaxed);
    }
}
