//! Interposed unnamed POSIX semaphores (`sem_init` with `pshared`, in a shared segment): a
//! `sem_t` in DSM memory is counted and queued by the cluster's lock service, so a `sem_post`
//! on one host wakes a `sem_wait` on another. Others go to glibc. (Named semaphores, `sem_open`,
//! live in `/dev/shm` files of their own and stay local.)

use core::ffi::{c_int, c_uint, c_void};

use dsm_proto::sync::{SyncKey, SyncOp, SyncResult, Wait};

use crate::sync::{self, code};
use crate::{real, sys};

type Obj = *mut c_void;
type Time = *const libc::timespec;

/// Calls libc's own `$f` with `$args` (-1 with ENOSYS if libc has none).
macro_rules! real {
    ($f:ident($($arg:expr),*)) => {
        match real::$f() {
            // SAFETY: libc's function, with the caller's arguments.
            Some(f) => unsafe { f($($arg),*) },
            None => failed(libc::ENOSYS),
        }
    };
}

/// The semaphore convention: -1 with errno.
fn failed(e: c_int) -> c_int {
    sys::set_errno(e);
    -1
}

fn status(code: c_int) -> c_int {
    if code == 0 {
        0
    } else {
        failed(code)
    }
}

/// The value `sem_init` wrote (the low half of glibc's 64-bit `data` word on x86-64), which stays
/// in the object's bytes: nothing writes them afterwards.
///
/// # Safety
/// `s` must point to a `sem_t`.
unsafe fn initial(s: Obj) -> u32 {
    // SAFETY: within the caller's sem_t; volatile, as another node may have written it.
    unsafe { core::ptr::read_volatile(s.cast::<u32>()) }
}

/// # Safety
/// `s` must point to a `sem_t` in DSM memory.
unsafe fn take(key: SyncKey, s: Obj, wait: Wait) -> c_int {
    // SAFETY: forwarded from our caller.
    let initial = unsafe { initial(s) };
    match sync::call(key, SyncOp::SemWait { initial, wait }) {
        Ok(SyncResult::Busy) => failed(libc::EAGAIN),
        other => status(code(other)),
    }
}

/// # Safety
/// As `sem_timedwait`.
unsafe fn timed_take(key: SyncKey, s: Obj, clock: libc::clockid_t, abstime: Time) -> c_int {
    // SAFETY: forwarded from our caller.
    match unsafe { sync::until(clock, abstime) } {
        // SAFETY: as above.
        Ok(Wait::Try) => match unsafe { take(key, s, Wait::Try) } {
            -1 if sys::errno() == libc::EAGAIN => failed(libc::ETIMEDOUT),
            other => other,
        },
        // SAFETY: as above.
        Ok(wait) => unsafe { take(key, s, wait) },
        Err(e) => failed(e),
    }
}

/// Interposed `sem_init`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn sem_init(s: Obj, pshared: c_int, value: c_uint) -> c_int {
    let result = real!(sem_init(s, pshared, value));
    if let (0, Some(key)) = (result, sync::key_of(s as usize)) {
        sync::post(key, SyncOp::Reset);
    }
    result
}

/// Interposed `sem_destroy`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn sem_destroy(s: Obj) -> c_int {
    match sync::key_of(s as usize) {
        Some(key) => status(sync::post(key, SyncOp::Reset)),
        None => real!(sem_destroy(s)),
    }
}

/// Interposed `sem_wait`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn sem_wait(s: Obj) -> c_int {
    match sync::key_of(s as usize) {
        // SAFETY: the program's semaphore, in DSM memory.
        Some(key) => unsafe { take(key, s, Wait::Block) },
        None => real!(sem_wait(s)),
    }
}

/// Interposed `sem_trywait`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn sem_trywait(s: Obj) -> c_int {
    match sync::key_of(s as usize) {
        // SAFETY: the program's semaphore, in DSM memory.
        Some(key) => unsafe { take(key, s, Wait::Try) },
        None => real!(sem_trywait(s)),
    }
}

/// Interposed `sem_timedwait`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn sem_timedwait(s: Obj, abstime: Time) -> c_int {
    match sync::key_of(s as usize) {
        // SAFETY: forwarded from our caller.
        Some(key) => unsafe { timed_take(key, s, libc::CLOCK_REALTIME, abstime) },
        None => real!(sem_timedwait(s, abstime)),
    }
}

/// Interposed `sem_clockwait`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn sem_clockwait(s: Obj, clock: libc::clockid_t, abstime: Time) -> c_int {
    match sync::key_of(s as usize) {
        // SAFETY: forwarded from our caller.
        Some(key) => unsafe { timed_take(key, s, clock, abstime) },
        None => real!(sem_clockwait(s, clock, abstime)),
    }
}

/// Interposed `sem_post`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn sem_post(s: Obj) -> c_int {
    match sync::key_of(s as usize) {
        Some(key) => {
            // SAFETY: the program's semaphore, in DSM memory.
            let initial = unsafe { initial(s) };
            status(sync::post(key, SyncOp::SemPost { initial }))
        }
        None => real!(sem_post(s)),
    }
}

/// Interposed `sem_getvalue`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn sem_getvalue(s: Obj, value: *mut c_int) -> c_int {
    let Some(key) = sync::key_of(s as usize) else {
        return real!(sem_getvalue(s, value));
    };
    // SAFETY: the program's semaphore, in DSM memory.
    let initial = unsafe { initial(s) };
    match sync::call(key, SyncOp::SemValue { initial }) {
        Ok(SyncResult::Value(v)) if !value.is_null() => {
            // SAFETY: the caller's out-pointer.
            unsafe { *value = v.min(c_int::MAX as u32) as c_int };
            0
        }
        Ok(SyncResult::Value(_)) => failed(libc::EINVAL),
        other => status(code(other)),
    }
}
