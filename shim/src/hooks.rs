//! The interposed libc functions: thin `extern "C"` detours that convert arguments, call
//! [`crate::ops`], and turn the result into libc's return-value-and-errno convention. Every
//! 64-bit alias glibc exports is exported too, so programs reach us by any name.

use core::ffi::{c_char, c_int, c_void, CStr};

use crate::sys::{self, Errno};
use crate::{config, fault, ops, real};

fn fail<T>(e: Errno, value: T) -> T {
    sys::set_errno(e);
    value
}

/// # Safety
/// `name` must be NULL or a valid C string, as for libc's `shm_open`.
pub(crate) unsafe fn name_of<'a>(name: *const c_char) -> Option<&'a str> {
    if name.is_null() {
        return None;
    }
    // SAFETY: the caller passes a valid C string.
    unsafe { CStr::from_ptr(name) }.to_str().ok()
}

/// Interposed `shm_open`.
///
/// # Safety
/// As libc's `shm_open`.
#[no_mangle]
pub unsafe extern "C" fn shm_open(name: *const c_char, oflag: c_int, mode: libc::mode_t) -> c_int {
    // SAFETY: forwarded from our caller.
    match unsafe { name_of(name) } {
        Some(n) if config::get().distributes(n) => match ops::shm_open(n, oflag, mode) {
            Ok(fd) => fd,
            Err(e) => fail(e, -1),
        },
        _ => match real::shm_open() {
            // SAFETY: libc's shm_open with the caller's arguments.
            Some(f) => unsafe { f(name, oflag, mode) },
            None => fail(libc::ENOSYS, -1),
        },
    }
}

/// Interposed `shm_unlink`.
///
/// # Safety
/// As libc's `shm_unlink`.
#[no_mangle]
pub unsafe extern "C" fn shm_unlink(name: *const c_char) -> c_int {
    // SAFETY: forwarded from our caller.
    match unsafe { name_of(name) } {
        Some(n) if config::get().distributes(n) => match ops::shm_unlink(n) {
            Ok(()) => 0,
            Err(e) => fail(e, -1),
        },
        _ => match real::shm_unlink() {
            // SAFETY: libc's shm_unlink with the caller's argument.
            Some(f) => unsafe { f(name) },
            None => fail(libc::ENOSYS, -1),
        },
    }
}

/// Interposed `ftruncate`.
#[no_mangle]
pub extern "C" fn ftruncate(fd: c_int, len: libc::off_t) -> c_int {
    let result = ops::ftruncate(fd, len).unwrap_or_else(|| sys::ftruncate(fd, len).map(|_| ()));
    match result {
        Ok(()) => 0,
        Err(e) => fail(e, -1),
    }
}

/// Interposed `ftruncate64` (the same call on 64-bit Linux).
#[no_mangle]
pub extern "C" fn ftruncate64(fd: c_int, len: libc::off64_t) -> c_int {
    ftruncate(fd, len)
}

/// Interposed `mmap`.
///
/// # Safety
/// As libc's `mmap`.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    let result = match ops::mmap(addr as usize, len, prot, flags, fd, off) {
        Some(r) => r,
        None => {
            if off as usize & (dsm_proto::PAGE_SIZE - 1) != 0 {
                return fail(libc::EINVAL, libc::MAP_FAILED);
            }
            // SAFETY: the caller's own mmap, passed through unchanged.
            let r = unsafe { sys::mmap(addr as usize, len, prot, flags, fd, off) };
            if r.is_ok() && flags & libc::MAP_FIXED != 0 {
                // A fixed mapping may have replaced DSM memory: forget what it covered.
                let _ = ops::forget_range(addr as usize, len);
            }
            r
        }
    };
    match result {
        Ok(p) => p as *mut c_void,
        Err(e) => fail(e, libc::MAP_FAILED),
    }
}

/// Interposed `mmap64` (the same call on 64-bit Linux).
///
/// # Safety
/// As libc's `mmap64`.
#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off64_t,
) -> *mut c_void {
    // SAFETY: same contract.
    unsafe { mmap(addr, len, prot, flags, fd, off) }
}

/// Interposed `munmap`.
///
/// # Safety
/// As libc's `munmap`.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: usize) -> c_int {
    let result = ops::munmap(addr as usize, len).unwrap_or_else(|| {
        // SAFETY: the caller's own munmap, passed through unchanged.
        unsafe { sys::munmap(addr as usize, len) }.map(|_| ())
    });
    match result {
        Ok(()) => 0,
        Err(e) => fail(e, -1),
    }
}

/// Interposed `mprotect`.
///
/// # Safety
/// As libc's `mprotect`.
#[no_mangle]
pub unsafe extern "C" fn mprotect(addr: *mut c_void, len: usize, prot: c_int) -> c_int {
    let result = ops::mprotect(addr as usize, len, prot).unwrap_or_else(|| {
        // SAFETY: the caller's own mprotect, passed through unchanged.
        unsafe { sys::mprotect(addr as usize, len, prot) }.map(|_| ())
    });
    match result {
        Ok(()) => 0,
        Err(e) => fail(e, -1),
    }
}

/// Interposed `sigaction`: SIGSEGV dispositions are recorded, not installed, once the DSM
/// handler is in place (it forwards foreign faults to them).
///
/// # Safety
/// As libc's `sigaction`.
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    if sig == libc::SIGSEGV && fault::installed() {
        // SAFETY: the caller passes NULL or valid pointers, as for libc's sigaction.
        let (act, old) = unsafe { (act.as_ref().copied(), old.as_mut()) };
        if fault::program_sigaction(act, old).is_some() {
            return 0;
        }
    }
    match real::sigaction() {
        // SAFETY: libc's sigaction with the caller's arguments.
        Some(f) => unsafe { f(sig, act, old) },
        None => fail(libc::ENOSYS, -1),
    }
}

/// Interposed `__sigaction` (glibc's other name for it).
///
/// # Safety
/// As libc's `sigaction`.
#[no_mangle]
pub unsafe extern "C" fn __sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    // SAFETY: same contract.
    unsafe { sigaction(sig, act, old) }
}

/// `signal`-family semantics expressed as a sigaction for SIGSEGV.
fn segv_signal(handler: libc::sighandler_t, flags: c_int, defer_self: bool) -> libc::sighandler_t {
    // SAFETY: all-zero is a valid sigaction; sigaddset gets a valid set.
    let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = flags;
    if defer_self {
        // SAFETY: valid set pointer.
        unsafe { libc::sigaddset(&mut act.sa_mask, libc::SIGSEGV) };
    }
    // SAFETY: all-zero is a valid sigaction.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    match fault::program_sigaction(Some(act), Some(&mut old)) {
        Some(()) => old.sa_sigaction,
        None => libc::SIG_ERR,
    }
}

/// Interposed `signal` (BSD semantics, as glibc's).
///
/// # Safety
/// As libc's `signal`.
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    if sig == libc::SIGSEGV && fault::installed() {
        return segv_signal(handler, libc::SA_RESTART, true);
    }
    match real::signal() {
        // SAFETY: libc's signal with the caller's arguments.
        Some(f) => unsafe { f(sig, handler) },
        None => fail(libc::ENOSYS, libc::SIG_ERR),
    }
}

/// Interposed `bsd_signal`.
///
/// # Safety
/// As libc's `signal`.
#[no_mangle]
pub unsafe extern "C" fn bsd_signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: same contract.
    unsafe { signal(sig, handler) }
}

/// Interposed `sysv_signal` (one-shot, no deferral).
///
/// # Safety
/// As libc's `sysv_signal`.
#[no_mangle]
pub unsafe extern "C" fn sysv_signal(
    sig: c_int,
    handler: libc::sighandler_t,
) -> libc::sighandler_t {
    if sig == libc::SIGSEGV && fault::installed() {
        return segv_signal(handler, libc::SA_RESETHAND | libc::SA_NODEFER, false);
    }
    match real::sysv_signal() {
        // SAFETY: libc's sysv_signal with the caller's arguments.
        Some(f) => unsafe { f(sig, handler) },
        None => fail(libc::ENOSYS, libc::SIG_ERR),
    }
}

/// Interposed `__sysv_signal`.
///
/// # Safety
/// As libc's `sysv_signal`.
#[no_mangle]
pub unsafe extern "C" fn __sysv_signal(
    sig: c_int,
    handler: libc::sighandler_t,
) -> libc::sighandler_t {
    // SAFETY: same contract.
    unsafe { sysv_signal(sig, handler) }
}
