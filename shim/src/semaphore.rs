//! Interposed POSIX semaphores. An unnamed one (`sem_init` with `pshared`) in DSM memory is
//! counted and queued by the cluster's lock service, so a `sem_post` on one host wakes a
//! `sem_wait` on another. A named one (`sem_open`) whose name is distributed (see `DSM_SHM`)
//! becomes a one-page segment `/sem.NAME` holding such a semaphore — the same name glibc
//! gives its `/dev/shm` file. Others go to glibc.

use core::ffi::{c_int, c_uint, c_void};

use dsm_proto::sync::{SyncKey, SyncOp, SyncResult, Wait};

use crate::sync::{self, code};
use crate::{config, ops, real, sys};

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

/// `sem_wait` as a pthread-style code (`EBUSY` for a try that found nothing).
///
/// # Safety
/// `s` must point to a `sem_t` in DSM memory.
unsafe fn take(key: SyncKey, s: Obj, wait: Wait) -> c_int {
    // SAFETY: forwarded from our caller.
    let initial = unsafe { initial(s) };
    code(sync::call_interruptible(
        key,
        SyncOp::SemWait { initial, wait },
    ))
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
        Some(key) => status(unsafe { take(key, s, Wait::Block) }),
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
        Some(key) => match unsafe { take(key, s, Wait::Try) } {
            libc::EBUSY => failed(libc::EAGAIN),
            other => status(other),
        },
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
        Some(key) => {
            // SAFETY: the caller's semaphore (in DSM memory) and timespec.
            let code = unsafe { sync::timed(libc::CLOCK_REALTIME, abstime, |w| take(key, s, w)) };
            status(code)
        }
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
        Some(key) => {
            // SAFETY: the caller's semaphore (in DSM memory) and timespec.
            let code = unsafe { sync::timed(clock, abstime, |w| take(key, s, w)) };
            status(code)
        }
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

/// A named semaphore's segment: the `sem_t`, then a word saying it is initialized.
const NAMED_BYTES: usize = dsm_proto::PAGE_SIZE;
const READY_OFFSET: usize = 32;
const READY: u32 = u32::from_le_bytes(*b"sem!");

/// Opens (creating if asked) the named semaphore `name` as a distributed segment.
fn open_named(name: &str, oflag: c_int, mode: libc::mode_t, value: c_uint) -> Result<Obj, c_int> {
    if oflag & libc::O_CREAT != 0 && value > libc::c_int::MAX as c_uint {
        return Err(libc::EINVAL);
    }
    let segment = format!("/sem.{}", name.trim_start_matches('/'));
    let (fd, created) = if oflag & libc::O_CREAT != 0 {
        match ops::shm_open(&segment, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, mode) {
            Ok(fd) => (fd, true),
            Err(libc::EEXIST) if oflag & libc::O_EXCL == 0 => {
                (ops::shm_open(&segment, libc::O_RDWR, 0)?, false)
            }
            Err(e) => return Err(e),
        }
    } else {
        (ops::shm_open(&segment, libc::O_RDWR, 0)?, false)
    };
    let mapped = (|| {
        if created {
            ops::ftruncate(fd, NAMED_BYTES as i64).unwrap_or(Err(libc::EINVAL))?;
        } else {
            // Its creator may not have sized it yet.
            wait_for(|| sys::fstat(fd).is_ok_and(|st| st.st_size as usize >= NAMED_BYTES))?;
        }
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        ops::mmap(0, NAMED_BYTES, prot, libc::MAP_SHARED, fd, 0).unwrap_or(Err(libc::EINVAL))
    })();
    sys::close(fd);
    let sem = mapped? as Obj;
    // SAFETY: `sem` is the start of the page just mapped; the ready word lies in it.
    let ready = unsafe {
        &*sem
            .cast::<u8>()
            .add(READY_OFFSET)
            .cast::<core::sync::atomic::AtomicU32>()
    };
    if created {
        // SAFETY: our own fresh mapping, big enough for a sem_t.
        if unsafe { sem_init(sem, 1, value) } != 0 {
            return Err(sys::errno());
        }
        ready.store(READY, core::sync::atomic::Ordering::Release);
    } else {
        wait_for(|| ready.load(core::sync::atomic::Ordering::Acquire) == READY)?;
    }
    Ok(sem)
}

/// Polls `done` for up to five seconds (a creator on another host is between its steps).
fn wait_for(done: impl Fn() -> bool) -> Result<(), c_int> {
    for _ in 0..5000 {
        if done() {
            return Ok(());
        }
        // SAFETY: plain sleep.
        unsafe { libc::usleep(1000) };
    }
    Err(libc::ETIMEDOUT)
}

/// Interposed `sem_open`. Declared with the mode and value its variadic form passes after
/// `O_CREAT` (the x86-64 calling convention passes them as plain integer arguments).
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn sem_open(
    name: *const libc::c_char,
    oflag: c_int,
    mode: libc::mode_t,
    value: c_uint,
) -> Obj {
    // SAFETY: forwarded from our caller.
    match unsafe { crate::hooks::name_of(name) } {
        Some(n) if config::get().distributes(n) => match open_named(n, oflag, mode, value) {
            Ok(sem) => sem,
            Err(e) => {
                sys::set_errno(e);
                core::ptr::null_mut() // SEM_FAILED
            }
        },
        _ => match real::sem_open() {
            // SAFETY: libc's sem_open with the caller's arguments.
            Some(f) => unsafe { f(name, oflag, mode, value) },
            None => {
                sys::set_errno(libc::ENOSYS);
                core::ptr::null_mut()
            }
        },
    }
}

/// Interposed `sem_close`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn sem_close(s: Obj) -> c_int {
    if sync::key_of(s as usize).is_none() {
        return real!(sem_close(s));
    }
    match ops::munmap(s as usize, NAMED_BYTES) {
        Some(Ok(())) => 0,
        Some(Err(e)) => failed(e),
        None => failed(libc::EINVAL),
    }
}

/// Interposed `sem_unlink`.
///
/// # Safety
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn sem_unlink(name: *const libc::c_char) -> c_int {
    // SAFETY: forwarded from our caller.
    match unsafe { crate::hooks::name_of(name) } {
        Some(n) if config::get().distributes(n) => {
            let segment = format!("/sem.{}", n.trim_start_matches('/'));
            status(ops::shm_unlink(&segment).err().unwrap_or(0))
        }
        _ => real!(sem_unlink(name)),
    }
}
