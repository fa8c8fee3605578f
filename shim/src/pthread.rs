//! Interposed process-shared pthread objects. A mutex, condition variable, barrier or rwlock
//! that lies in DSM memory gets its slow path from the cluster's lock service through dsmd
//! instead of a futex (a futex wakes only waiters on the same kernel); everything else goes to
//! glibc untouched. The object's bytes keep glibc's layout: `*_init` still runs glibc's, and the
//! type a mutex was made with is read back from them.

use core::ffi::{c_int, c_uint, c_void};

use dsm_proto::sync::{SyncKey, SyncOp, Wait};

use crate::fastlock;
use crate::sync::{self, code};
use crate::{real, say};

type Obj = *mut c_void;
type Attr = *const c_void;
type Time = *const libc::timespec;

/// Calls libc's own `$f` with `$args` (ENOSYS if libc has none).
macro_rules! real {
    ($f:ident($($arg:expr),*)) => {
        match real::$f() {
            // SAFETY: libc's function, with the caller's arguments.
            Some(f) => unsafe { f($($arg),*) },
            None => libc::ENOSYS,
        }
    };
}

fn lock(key: SyncKey, m: Obj, wait: Wait) -> c_int {
    // SAFETY: `m` is the program's mutex, in DSM memory.
    let kind = unsafe { sync::mutex_kind(m) };
    if let SyncKey::Object { segment, offset } = key {
        if fastlock::try_lock(segment, offset, kind) {
            return 0;
        }
    }
    let op = SyncOp::Lock {
        kind,
        wait,
        after_timeout: false,
    };
    let result = code(sync::call(key, op));
    if let (0, SyncKey::Object { segment, offset }) = (result, key) {
        fastlock::granted(segment, offset, kind);
    }
    result
}

/// After glibc's `*_init` on a DSM object: whatever the service remembers of it is stale.
fn reset(key: SyncKey, result: c_int) -> c_int {
    if result == 0 {
        sync::post(key, SyncOp::Reset);
    }
    result
}

/// Interposed `pthread_mutex_init`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_init(m: Obj, attr: Attr) -> c_int {
    let result = real!(pthread_mutex_init(m, attr));
    match sync::key_of(m as usize) {
        Some(key) => reset(key, result),
        None => result,
    }
}

/// Interposed `pthread_mutex_destroy`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_destroy(m: Obj) -> c_int {
    match sync::key_of(m as usize) {
        Some(key) => reset(key, 0),
        None => real!(pthread_mutex_destroy(m)),
    }
}

/// Interposed `pthread_mutex_lock`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_lock(m: Obj) -> c_int {
    match sync::key_of(m as usize) {
        Some(key) => lock(key, m, Wait::Block),
        None => real!(pthread_mutex_lock(m)),
    }
}

/// Interposed `pthread_mutex_trylock`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_trylock(m: Obj) -> c_int {
    match sync::key_of(m as usize) {
        Some(key) => lock(key, m, Wait::Try),
        None => real!(pthread_mutex_trylock(m)),
    }
}

/// Interposed `pthread_mutex_timedlock`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_timedlock(m: Obj, abstime: Time) -> c_int {
    match sync::key_of(m as usize) {
        // SAFETY: forwarded from our caller.
        Some(key) => unsafe { sync::timed(libc::CLOCK_REALTIME, abstime, |w| lock(key, m, w)) },
        None => real!(pthread_mutex_timedlock(m, abstime)),
    }
}

/// Interposed `pthread_mutex_clocklock`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_clocklock(
    m: Obj,
    clock: libc::clockid_t,
    abstime: Time,
) -> c_int {
    match sync::key_of(m as usize) {
        // SAFETY: forwarded from our caller.
        Some(key) => unsafe { sync::timed(clock, abstime, |w| lock(key, m, w)) },
        None => real!(pthread_mutex_clocklock(m, clock, abstime)),
    }
}

/// Interposed `pthread_mutex_unlock`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_unlock(m: Obj) -> c_int {
    let Some(key) = sync::key_of(m as usize) else {
        return real!(pthread_mutex_unlock(m));
    };
    // SAFETY: `m` is the program's mutex, in DSM memory.
    let kind = unsafe { sync::mutex_kind(m) };
    if let SyncKey::Object { segment, offset } = key {
        if fastlock::try_unlock(segment, offset, kind) {
            return 0;
        }
    }
    let op = SyncOp::Unlock { kind };
    if op.answered() {
        code(sync::call(key, op))
    } else {
        // Nothing to report: the unlock need not wait for the home's answer.
        sync::post(key, op)
    }
}

/// Interposed `pthread_mutex_consistent`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_consistent(m: Obj) -> c_int {
    match sync::key_of(m as usize) {
        Some(key) => code(sync::call(key, SyncOp::Consistent)),
        None => real!(pthread_mutex_consistent(m)),
    }
}

/// Interposed `pthread_mutex_consistent_np` (glibc's older name).
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_consistent_np(m: Obj) -> c_int {
    // SAFETY: forwarded from our caller.
    unsafe { pthread_mutex_consistent(m) }
}

/// Interposed `pthread_cond_init`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_cond_init(c: Obj, attr: Attr) -> c_int {
    let result = real!(pthread_cond_init(c, attr));
    match sync::key_of(c as usize) {
        Some(key) => reset(key, result),
        None => result,
    }
}

/// Interposed `pthread_cond_destroy`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_cond_destroy(c: Obj) -> c_int {
    match sync::key_of(c as usize) {
        Some(key) => reset(key, 0),
        None => real!(pthread_cond_destroy(c)),
    }
}

/// Both keys of a condition wait, or why it cannot be served: `Ok(None)` is a wait glibc serves.
fn cond_keys(c: Obj, m: Obj) -> Result<Option<(SyncKey, SyncKey)>, c_int> {
    match (sync::key_of(c as usize), sync::key_of(m as usize)) {
        (Some(ck), Some(mk)) => Ok(Some((ck, mk))),
        (None, None) => Ok(None),
        _ => {
            say!("a condition variable and its mutex must both lie in DSM memory, or neither");
            Err(libc::EINVAL)
        }
    }
}

fn cond_wait(ck: SyncKey, mk: SyncKey, m: Obj, wait: Wait) -> c_int {
    if wait == Wait::Try {
        // Already past its deadline: return at once, the mutex still held.
        return libc::ETIMEDOUT;
    }
    // SAFETY: `m` is the program's mutex, in DSM memory.
    let kind = unsafe { sync::mutex_kind(m) };
    let op = SyncOp::CondWait {
        mutex: mk,
        kind,
        wait,
    };
    code(sync::call(ck, op))
}

/// Interposed `pthread_cond_wait`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_cond_wait(c: Obj, m: Obj) -> c_int {
    match cond_keys(c, m) {
        Ok(Some((ck, mk))) => cond_wait(ck, mk, m, Wait::Block),
        Ok(None) => real!(pthread_cond_wait(c, m)),
        Err(e) => e,
    }
}

/// Interposed `pthread_cond_timedwait` (the clock is the condition's, as glibc's).
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_cond_timedwait(c: Obj, m: Obj, abstime: Time) -> c_int {
    match cond_keys(c, m) {
        Ok(Some((ck, mk))) => {
            // SAFETY: the program's condition variable and timespec.
            match unsafe { sync::until(sync::cond_clock(c), abstime) } {
                Ok(wait) => cond_wait(ck, mk, m, wait),
                Err(e) => e,
            }
        }
        Ok(None) => real!(pthread_cond_timedwait(c, m, abstime)),
        Err(e) => e,
    }
}

/// Interposed `pthread_cond_clockwait`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_cond_clockwait(
    c: Obj,
    m: Obj,
    clock: libc::clockid_t,
    abstime: Time,
) -> c_int {
    match cond_keys(c, m) {
        // SAFETY: the program's timespec.
        Ok(Some((ck, mk))) => match unsafe { sync::until(clock, abstime) } {
            Ok(wait) => cond_wait(ck, mk, m, wait),
            Err(e) => e,
        },
        Ok(None) => real!(pthread_cond_clockwait(c, m, clock, abstime)),
        Err(e) => e,
    }
}

/// Interposed `pthread_cond_signal`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_cond_signal(c: Obj) -> c_int {
    match sync::key_of(c as usize) {
        Some(key) => sync::post(key, SyncOp::Signal),
        None => real!(pthread_cond_signal(c)),
    }
}

/// Interposed `pthread_cond_broadcast`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_cond_broadcast(c: Obj) -> c_int {
    match sync::key_of(c as usize) {
        Some(key) => sync::post(key, SyncOp::Broadcast),
        None => real!(pthread_cond_broadcast(c)),
    }
}

/// Interposed `pthread_barrier_init`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_barrier_init(b: Obj, attr: Attr, count: c_uint) -> c_int {
    let result = real!(pthread_barrier_init(b, attr, count));
    match sync::key_of(b as usize) {
        Some(key) => reset(key, result),
        None => result,
    }
}

/// Interposed `pthread_barrier_destroy`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_barrier_destroy(b: Obj) -> c_int {
    match sync::key_of(b as usize) {
        Some(key) => reset(key, 0),
        None => real!(pthread_barrier_destroy(b)),
    }
}

/// Interposed `pthread_barrier_wait`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_barrier_wait(b: Obj) -> c_int {
    match sync::key_of(b as usize) {
        Some(key) => {
            // SAFETY: `b` is the program's barrier, in DSM memory.
            let count = unsafe { sync::barrier_count(b) };
            code(sync::call(key, SyncOp::Barrier { count }))
        }
        None => real!(pthread_barrier_wait(b)),
    }
}

/// Interposed `pthread_rwlock_init`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_init(l: Obj, attr: Attr) -> c_int {
    let result = real!(pthread_rwlock_init(l, attr));
    match sync::key_of(l as usize) {
        Some(key) => reset(key, result),
        None => result,
    }
}

/// Interposed `pthread_rwlock_destroy`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_destroy(l: Obj) -> c_int {
    match sync::key_of(l as usize) {
        Some(key) => reset(key, 0),
        None => real!(pthread_rwlock_destroy(l)),
    }
}

fn rw_lock(key: SyncKey, write: bool, wait: Wait) -> c_int {
    let op = if write {
        SyncOp::WriteLock { wait }
    } else {
        SyncOp::ReadLock { wait }
    };
    code(sync::call(key, op))
}

/// Interposed `pthread_rwlock_rdlock`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_rdlock(l: Obj) -> c_int {
    match sync::key_of(l as usize) {
        Some(key) => rw_lock(key, false, Wait::Block),
        None => real!(pthread_rwlock_rdlock(l)),
    }
}

/// Interposed `pthread_rwlock_tryrdlock`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_tryrdlock(l: Obj) -> c_int {
    match sync::key_of(l as usize) {
        Some(key) => rw_lock(key, false, Wait::Try),
        None => real!(pthread_rwlock_tryrdlock(l)),
    }
}

/// Interposed `pthread_rwlock_timedrdlock`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_timedrdlock(l: Obj, abstime: Time) -> c_int {
    match sync::key_of(l as usize) {
        // SAFETY: forwarded from our caller.
        Some(key) => unsafe {
            sync::timed(libc::CLOCK_REALTIME, abstime, |w| rw_lock(key, false, w))
        },
        None => real!(pthread_rwlock_timedrdlock(l, abstime)),
    }
}

/// Interposed `pthread_rwlock_clockrdlock`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_clockrdlock(
    l: Obj,
    clock: libc::clockid_t,
    abstime: Time,
) -> c_int {
    match sync::key_of(l as usize) {
        // SAFETY: forwarded from our caller.
        Some(key) => unsafe { sync::timed(clock, abstime, |w| rw_lock(key, false, w)) },
        None => real!(pthread_rwlock_clockrdlock(l, clock, abstime)),
    }
}

/// Interposed `pthread_rwlock_wrlock`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_wrlock(l: Obj) -> c_int {
    match sync::key_of(l as usize) {
        Some(key) => rw_lock(key, true, Wait::Block),
        None => real!(pthread_rwlock_wrlock(l)),
    }
}

/// Interposed `pthread_rwlock_trywrlock`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_trywrlock(l: Obj) -> c_int {
    match sync::key_of(l as usize) {
        Some(key) => rw_lock(key, true, Wait::Try),
        None => real!(pthread_rwlock_trywrlock(l)),
    }
}

/// Interposed `pthread_rwlock_timedwrlock`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_timedwrlock(l: Obj, abstime: Time) -> c_int {
    match sync::key_of(l as usize) {
        // SAFETY: forwarded from our caller.
        Some(key) => unsafe {
            sync::timed(libc::CLOCK_REALTIME, abstime, |w| rw_lock(key, true, w))
        },
        None => real!(pthread_rwlock_timedwrlock(l, abstime)),
    }
}

/// Interposed `pthread_rwlock_clockwrlock`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_clockwrlock(
    l: Obj,
    clock: libc::clockid_t,
    abstime: Time,
) -> c_int {
    match sync::key_of(l as usize) {
        // SAFETY: forwarded from our caller.
        Some(key) => unsafe { sync::timed(clock, abstime, |w| rw_lock(key, true, w)) },
        None => real!(pthread_rwlock_clockwrlock(l, clock, abstime)),
    }
}

/// Interposed `pthread_rwlock_unlock`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_unlock(l: Obj) -> c_int {
    match sync::key_of(l as usize) {
        Some(key) => sync::post(key, SyncOp::RwUnlock),
        None => real!(pthread_rwlock_unlock(l)),
    }
}
