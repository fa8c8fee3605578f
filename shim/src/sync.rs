//! The client side of the cluster's lock service (see `dsm_core::sync`): which object an
//! address is, one request to the node's dsmd, and the errno its answer becomes.

use core::ffi::c_int;

use dsm_proto::client::{Reply, Request};
use dsm_proto::sync::{MutexKind, SyncKey, SyncOp, SyncResult, Wait};

use crate::{channels, mappings, session};

/// The object at `addr`, if it lies in DSM memory.
pub fn key_of(addr: usize) -> Option<SyncKey> {
    let m = mappings::lookup(addr)?;
    Some(SyncKey::Object {
        segment: m.segment,
        offset: (addr - m.base) as u64,
    })
}

/// The error a request gets when the daemon cannot be asked: the lock's state is out of reach.
const UNREACHABLE: c_int = libc::ENOTRECOVERABLE;

/// Asks for `op` on `key` and waits for the answer.
pub fn call(key: SyncKey, op: SyncOp) -> Result<SyncResult, c_int> {
    call_as(key, op, false)
}

/// [`call`] for a wait a signal handler may interrupt (`sem_wait`: glibc's returns EINTR then,
/// whatever SA_RESTART says): the wait is withdrawn and ends with `EINTR` unless it was granted.
pub fn call_interruptible(key: SyncKey, op: SyncOp) -> Result<SyncResult, c_int> {
    call_as(key, op, true)
}

fn call_as(key: SyncKey, op: SyncOp, interruptible: bool) -> Result<SyncResult, c_int> {
    if session::ensure().is_err() {
        return Err(UNREACHABLE);
    }
    let request = Request::Sync {
        key,
        op,
        wait: true,
    };
    let releases = op.is_release().then(crate::fastlock::release_begins);
    let reply = if interruptible {
        let withdraw = Request::Sync {
            key,
            op: SyncOp::Withdraw,
            wait: false,
        };
        channels::call_interruptible(&request, &withdraw)
    } else {
        channels::call_unbounded(&request, None)
    };
    if let (Some(upto), Ok(Reply::Synced(_))) = (releases, &reply) {
        if crate::wire::replicating() {
            // The daemon answered once the release's replicas were written.
            crate::fastlock::release_done(upto);
        }
    }
    match reply {
        Ok(Reply::Synced(SyncResult::HomeLost)) => {
            say!("the node keeping this lock or barrier is gone: its state is lost");
            Err(UNREACHABLE)
        }
        Ok(Reply::Synced(result)) => Ok(result),
        Ok(other) => {
            say!("lock request: unexpected reply from dsmd: {other:?}");
            Err(libc::EIO)
        }
        Err(e) => {
            say!(
                "lock request: lost the connection to dsmd ({})",
                crate::errno_name(e)
            );
            Err(UNREACHABLE)
        }
    }
}

/// Sends `op`, which is not answered, on `key`.
pub fn post(key: SyncKey, op: SyncOp) -> c_int {
    if session::ensure().is_err() {
        return UNREACHABLE;
    }
    if op.is_release() && !crate::fastlock::nothing_to_release() {
        // Replicated: the release returns once what this node wrote is on its replica nodes
        // (the daemon answers it then), so a write before it survives this host's death. A
        // process that wrote nothing since its last completed release has nothing to wait for:
        // its release is posted, as without replication.
        return match call(key, op) {
            Ok(_) => 0,
            Err(e) => e,
        };
    }
    let request = Request::Sync {
        key,
        op,
        wait: false,
    };
    match channels::post(&request) {
        Ok(()) => 0,
        Err(e) => {
            say!(
                "lock request: lost the connection to dsmd ({})",
                crate::errno_name(e)
            );
            UNREACHABLE
        }
    }
}

/// The pthread return value of an answer.
pub fn code(result: Result<SyncResult, c_int>) -> c_int {
    match result {
        Ok(SyncResult::Ok | SyncResult::Allocated(_) | SyncResult::Value(_)) => 0,
        Ok(SyncResult::Serial) => libc::PTHREAD_BARRIER_SERIAL_THREAD,
        Ok(SyncResult::Busy) => libc::EBUSY,
        Ok(SyncResult::TimedOut) => libc::ETIMEDOUT,
        Ok(SyncResult::OwnerDead) => libc::EOWNERDEAD,
        Ok(SyncResult::NotRecoverable | SyncResult::HomeLost) => libc::ENOTRECOVERABLE,
        Ok(SyncResult::Deadlock) => libc::EDEADLK,
        Ok(SyncResult::NotOwner) => libc::EPERM,
        Ok(SyncResult::Invalid) => libc::EINVAL,
        Ok(SyncResult::NoSpace) => libc::ENOMEM,
        Ok(SyncResult::Interrupted) => libc::EINTR,
        Err(e) => e,
    }
}

/// How long a timed wait until `abstime` on `clock` may take: `Wait::Try` if it is past.
///
/// # Safety
/// `abstime` must be NULL or point to a `timespec`.
pub unsafe fn until(clock: libc::clockid_t, abstime: *const libc::timespec) -> Result<Wait, c_int> {
    if abstime.is_null() {
        return Err(libc::EINVAL);
    }
    // SAFETY: the caller's pointer to a timespec.
    let t = unsafe { *abstime };
    if !(0..1_000_000_000).contains(&t.tv_nsec) {
        return Err(libc::EINVAL);
    }
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid out-pointer.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return Err(libc::EINVAL);
    }
    let ns = (i128::from(t.tv_sec) - i128::from(now.tv_sec)) * 1_000_000_000
        + i128::from(t.tv_nsec - now.tv_nsec);
    if ns <= 0 {
        return Ok(Wait::Try);
    }
    let ms = (ns + 999_999) / 1_000_000;
    Ok(Wait::Ms(ms.min(i128::from(u32::MAX)) as u32))
}

/// A timed wait until `abstime` on `clock`: `attempt` with the time left; past the deadline one
/// try, whose `EBUSY` becomes `ETIMEDOUT` (POSIX: a timed lock that can be had at once is had).
/// Takes and returns pthread-style codes.
///
/// # Safety
/// `abstime` must be NULL or point to a `timespec`.
pub unsafe fn timed(
    clock: libc::clockid_t,
    abstime: *const libc::timespec,
    attempt: impl Fn(Wait) -> c_int,
) -> c_int {
    // SAFETY: forwarded from our caller.
    match unsafe { until(clock, abstime) } {
        Ok(Wait::Try) => match attempt(Wait::Try) {
            libc::EBUSY => libc::ETIMEDOUT,
            other => other,
        },
        Ok(wait) => attempt(wait),
        Err(e) => e,
    }
}

/// A glibc mutex's type, from its `__kind` field (x86-64 layout; written by
/// `pthread_mutex_init`, zero for `PTHREAD_MUTEX_INITIALIZER`).
///
/// # Safety
/// `m` must point to a `pthread_mutex_t` (in DSM memory: reading it may fault the page in).
pub unsafe fn mutex_kind(m: *const libc::c_void) -> MutexKind {
    const KIND_OFFSET: usize = 16;
    const ROBUST: i32 = 16;
    // SAFETY: within the caller's pthread_mutex_t; volatile, as another node may write it.
    let kind = unsafe { core::ptr::read_volatile(m.cast::<u8>().add(KIND_OFFSET).cast::<i32>()) };
    MutexKind {
        recursive: kind & 3 == libc::PTHREAD_MUTEX_RECURSIVE,
        errorcheck: kind & 3 == libc::PTHREAD_MUTEX_ERRORCHECK,
        robust: kind & ROBUST != 0,
    }
}

/// The clock of a glibc condition variable (bit 1 of `__wrefs`, set by
/// `pthread_condattr_setclock(CLOCK_MONOTONIC)`).
///
/// # Safety
/// `c` must point to a `pthread_cond_t`.
pub unsafe fn cond_clock(c: *const libc::c_void) -> libc::clockid_t {
    const WREFS_OFFSET: usize = 36;
    // SAFETY: within the caller's pthread_cond_t.
    let wrefs = unsafe { core::ptr::read_volatile(c.cast::<u8>().add(WREFS_OFFSET).cast::<u32>()) };
    if wrefs & 2 != 0 {
        libc::CLOCK_MONOTONIC
    } else {
        libc::CLOCK_REALTIME
    }
}

/// A glibc barrier's count (x86-64 layout, written by `pthread_barrier_init`).
///
/// # Safety
/// `b` must point to a `pthread_barrier_t`.
pub unsafe fn barrier_count(b: *const libc::c_void) -> u32 {
    const COUNT_OFFSET: usize = 8;
    // SAFETY: within the caller's pthread_barrier_t.
    unsafe { core::ptr::read_volatile(b.cast::<u8>().add(COUNT_OFFSET).cast::<u32>()) }
}
