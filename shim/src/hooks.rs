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

/// Interposed `msync`: on DSM memory a release point (see `ops::msync`).
///
/// # Safety
/// As libc's `msync`.
#[no_mangle]
pub unsafe extern "C" fn msync(addr: *mut c_void, len: usize, flags: c_int) -> c_int {
    match ops::msync(addr as usize, len, flags) {
        Some(Ok(())) => 0,
        Some(Err(e)) => fail(e, -1),
        // SAFETY: the caller's own msync, passed through unchanged.
        None => unsafe { libc::syscall(libc::SYS_msync, addr, len, flags) as c_int },
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

/// Interposed `sigaction`: SIGSEGV and SIGSYS dispositions are recorded, not installed, once the
/// DSM handlers are in place (they forward signals that are not ours to them); no handler's mask
/// blocks those two.
///
/// # Safety
/// As libc's `sigaction`.
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    if fault::installed(sig) {
        // SAFETY: the caller passes NULL or valid pointers, as for libc's sigaction.
        let (act, old) = unsafe { (act.as_ref().copied(), old.as_mut()) };
        if fault::program_sigaction(sig, act, old).is_some() {
            return 0;
        }
    }
    // A handler never runs with SIGSEGV or SIGSYS blocked: a DSM fault or a system call on DSM
    // memory inside it would kill the process (the kernel forces those signals).
    // SAFETY: the caller passes NULL or a valid pointer.
    let act = unsafe { act.as_ref() }.map(|a| {
        let mut a = *a;
        crate::sigmask::keep_deliverable(&mut a.sa_mask);
        a
    });
    let act_ptr = act
        .as_ref()
        .map_or(core::ptr::null(), |a| a as *const libc::sigaction);
    match real::sigaction() {
        // SAFETY: libc's sigaction with the caller's arguments.
        Some(f) => unsafe { f(sig, act_ptr, old) },
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

/// `signal`-family semantics expressed as a sigaction for a signal the shim handles.
fn taken_signal(
    sig: c_int,
    handler: libc::sighandler_t,
    flags: c_int,
    defer_self: bool,
) -> libc::sighandler_t {
    // SAFETY: all-zero is a valid sigaction; sigaddset gets a valid set.
    let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = flags;
    if defer_self {
        // SAFETY: valid set pointer.
        unsafe { libc::sigaddset(&mut act.sa_mask, sig) };
    }
    // SAFETY: all-zero is a valid sigaction.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    match fault::program_sigaction(sig, Some(act), Some(&mut old)) {
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
    if fault::installed(sig) {
        return taken_signal(sig, handler, libc::SA_RESTART, true);
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
    if fault::installed(sig) {
        return taken_signal(sig, handler, libc::SA_RESETHAND | libc::SA_NODEFER, false);
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

/// Interposed `pthread_sigmask`: SIGSEGV and SIGSYS stay deliverable (see [`crate::sigmask`]).
///
/// # Safety
/// As libc's `pthread_sigmask`.
#[no_mangle]
pub unsafe extern "C" fn pthread_sigmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    let Some(real) = real::pthread_sigmask() else {
        return libc::ENOSYS;
    };
    // SAFETY: the caller's pointers, as for libc's; `real` is libc's function.
    unsafe { crate::sigmask::change(how, set, old, |h, s, o| real(h, s, o)) }
}

/// Interposed `sigprocmask`: as [`pthread_sigmask`].
///
/// # Safety
/// As libc's `sigprocmask`.
#[no_mangle]
pub unsafe extern "C" fn sigprocmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    let Some(real) = real::sigprocmask() else {
        return fail(libc::ENOSYS, -1);
    };
    // SAFETY: the caller's pointers, as for libc's; `real` is libc's function.
    unsafe { crate::sigmask::change(how, set, old, |h, s, o| real(h, s, o)) }
}

/// A temporary mask as the kernel should get it: NULL stays NULL.
fn mask_ptr(m: &Option<libc::sigset_t>) -> *const libc::sigset_t {
    m.as_ref()
        .map_or(core::ptr::null(), |m| m as *const libc::sigset_t)
}

/// Interposed `sigsuspend`: SIGSEGV and SIGSYS stay deliverable while it waits.
///
/// # Safety
/// As libc's `sigsuspend`.
#[no_mangle]
pub unsafe extern "C" fn sigsuspend(mask: *const libc::sigset_t) -> c_int {
    // SAFETY: NULL or valid, as for libc's.
    let m = unsafe { crate::sigmask::temporary(mask) };
    match real::sigsuspend() {
        // SAFETY: libc's sigsuspend with a valid mask.
        Some(f) => unsafe { f(mask_ptr(&m)) },
        None => fail(libc::ENOSYS, -1),
    }
}

/// Interposed `ppoll`: SIGSEGV and SIGSYS stay deliverable while it waits.
///
/// # Safety
/// As libc's `ppoll`.
#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    timeout: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    // SAFETY: NULL or valid, as for libc's.
    let m = unsafe { crate::sigmask::temporary(mask) };
    match real::ppoll() {
        // SAFETY: libc's ppoll with the caller's arguments and a valid mask.
        Some(f) => unsafe { f(fds, n, timeout, mask_ptr(&m)) },
        None => fail(libc::ENOSYS, -1),
    }
}

/// Interposed `pselect`: SIGSEGV and SIGSYS stay deliverable while it waits.
///
/// # Safety
/// As libc's `pselect`.
#[no_mangle]
pub unsafe extern "C" fn pselect(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    timeout: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    // SAFETY: NULL or valid, as for libc's.
    let m = unsafe { crate::sigmask::temporary(mask) };
    match real::pselect() {
        // SAFETY: libc's pselect with the caller's arguments and a valid mask.
        Some(f) => unsafe { f(n, r, w, e, timeout, mask_ptr(&m)) },
        None => fail(libc::ENOSYS, -1),
    }
}

/// Interposed `epoll_pwait`: SIGSEGV and SIGSYS stay deliverable while it waits.
///
/// # Safety
/// As libc's `epoll_pwait`.
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const libc::sigset_t,
) -> c_int {
    // SAFETY: NULL or valid, as for libc's.
    let m = unsafe { crate::sigmask::temporary(mask) };
    match real::epoll_pwait() {
        // SAFETY: libc's epoll_pwait with the caller's arguments and a valid mask.
        Some(f) => unsafe { f(epfd, events, max, timeout, mask_ptr(&m)) },
        None => fail(libc::ENOSYS, -1),
    }
}

/// One private buffer as an iovec.
fn single(addr: usize, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: len,
    }
}

/// libc's return convention for a raw result (`-errno` on failure).
fn ssize(r: isize) -> isize {
    if r < 0 {
        fail(-r as Errno, -1)
    } else {
        r
    }
}

/// A vectored call's buffers, when one of them is DSM memory.
///
/// # Safety
/// `iov` points to `cnt` valid iovecs when `cnt` is positive.
unsafe fn dsm_iov<'a>(iov: *const libc::iovec, cnt: c_int) -> Option<&'a [libc::iovec]> {
    // SAFETY: per the contract.
    unsafe {
        crate::io::touches_dsm(iov, cnt).then(|| core::slice::from_raw_parts(iov, cnt as usize))
    }
}

/// A raw system call with `a` (`-errno` on failure).
fn raw(nr: libc::c_long, a: [usize; 6]) -> isize {
    // SAFETY: the callers pass the program's arguments with buffers replaced by private ones.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r == -1 {
        -(sys::errno() as isize)
    } else {
        r as isize
    }
}

macro_rules! vectored {
    ($(#[$doc:meta])* $name:ident, $real:ident, input, $fd:ident, ($($arg:ident: $ty:ty),*),
     pos: $pos:expr, |$b:ident, $n:ident| $call:expr) => {
        vectored!(@def $(#[$doc])* $name, $real, $fd, ($($arg: $ty),*), $pos, false, |iov| {
            crate::io::input(iov, |$b, $n| $call)
        });
    };
    ($(#[$doc:meta])* $name:ident, $real:ident, output, $fd:ident, ($($arg:ident: $ty:ty),*),
     pos: $pos:expr, |$b:ident, $n:ident, $done:ident| $call:expr) => {
        vectored!(@def $(#[$doc])* $name, $real, $fd, ($($arg: $ty),*), $pos, true, |iov| {
            crate::io::output(iov, |$b, $n, $done| $call)
        });
    };
    (@def $(#[$doc:meta])* $name:ident, $real:ident, $fd:ident, ($($arg:ident: $ty:ty),*),
     $pos:expr, $write:expr, |$iov:ident| $body:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// As libc's function of that name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($fd: c_int, iov: *const libc::iovec, cnt: c_int $(, $arg: $ty)*) -> isize {
            // On a segment's own descriptor: the segment's coherent bytes.
            // SAFETY: the caller's iovecs, as for libc's function.
            match unsafe { ops::vectored_segment($fd, iov, cnt, $pos, $write) } {
                Some(Ok(done)) => return done as isize,
                Some(Err(e)) => return fail(e, -1),
                None => {}
            }
            // SAFETY: the caller's iovecs, as for libc's function.
            match unsafe { dsm_iov(iov, cnt) } {
                Some($iov) => ssize($body),
                None => match real::$real() {
                    // SAFETY: libc's function with the caller's arguments.
                    Some(f) => unsafe { f($fd, iov, cnt $(, $arg)*) },
                    None => fail(libc::ENOSYS, -1),
                },
            }
        }
    };
}

vectored!(
/// Interposed `readv`: DSM buffers through a bounce ([`crate::io`]).
readv, readv, input, fd, (), pos: None, |b, n| {
    let v = single(b, n);
    raw(libc::SYS_readv, [fd as usize, &v as *const _ as usize, 1, 0, 0, 0])
});
vectored!(
/// Interposed `writev`: DSM buffers through a bounce ([`crate::io`]).
writev, writev, output, fd, (), pos: None, |b, n, _done| {
    let v = single(b, n);
    raw(libc::SYS_writev, [fd as usize, &v as *const _ as usize, 1, 0, 0, 0])
});
vectored!(
/// Interposed `preadv`: DSM buffers through a bounce ([`crate::io`]).
preadv, preadv, input, fd, (off: libc::off_t), pos: Some(off), |b, n| {
    raw(libc::SYS_pread64, [fd as usize, b, n, off as usize, 0, 0])
});
vectored!(
/// Interposed `preadv64`: DSM buffers through a bounce ([`crate::io`]).
preadv64, preadv, input, fd, (off: libc::off_t), pos: Some(off), |b, n| {
    raw(libc::SYS_pread64, [fd as usize, b, n, off as usize, 0, 0])
});
vectored!(
/// Interposed `pwritev`: DSM buffers through a bounce ([`crate::io`]).
pwritev, pwritev, output, fd, (off: libc::off_t), pos: Some(off), |b, n, done| {
    raw(libc::SYS_pwrite64, [fd as usize, b, n, off as usize + done, 0, 0])
});
vectored!(
/// Interposed `pwritev64`: DSM buffers through a bounce ([`crate::io`]).
pwritev64, pwritev, output, fd, (off: libc::off_t), pos: Some(off), |b, n, done| {
    raw(libc::SYS_pwrite64, [fd as usize, b, n, off as usize + done, 0, 0])
});
vectored!(
/// Interposed `preadv2`: DSM buffers through a bounce ([`crate::io`]).
preadv2, preadv2, input, fd, (off: libc::off_t, flags: c_int), pos: (off != -1).then_some(off), |b, n| {
    let v = single(b, n);
    raw(libc::SYS_preadv2, [fd as usize, &v as *const _ as usize, 1, off as usize, 0, flags as usize])
});
vectored!(
/// Interposed `preadv64v2`: DSM buffers through a bounce ([`crate::io`]).
preadv64v2, preadv2, input, fd, (off: libc::off_t, flags: c_int), pos: (off != -1).then_some(off), |b, n| {
    let v = single(b, n);
    raw(libc::SYS_preadv2, [fd as usize, &v as *const _ as usize, 1, off as usize, 0, flags as usize])
});
vectored!(
/// Interposed `pwritev2`: DSM buffers through a bounce ([`crate::io`]).
pwritev2, pwritev2, output, fd, (off: libc::off_t, flags: c_int), pos: (off != -1).then_some(off), |b, n, done| {
    let v = single(b, n);
    // An offset of -1 means the file position, which the kernel advances itself.
    let at = if off == -1 { off as usize } else { off as usize + done };
    raw(libc::SYS_pwritev2, [fd as usize, &v as *const _ as usize, 1, at, 0, flags as usize])
});
vectored!(
/// Interposed `pwritev64v2`: DSM buffers through a bounce ([`crate::io`]).
pwritev64v2, pwritev2, output, fd, (off: libc::off_t, flags: c_int), pos: (off != -1).then_some(off), |b, n, done| {
    let v = single(b, n);
    let at = if off == -1 { off as usize } else { off as usize + done };
    raw(libc::SYS_pwritev2, [fd as usize, &v as *const _ as usize, 1, at, 0, flags as usize])
});

/// `recvmsg` of one message whose buffers include DSM memory: through a bounce, with the
/// program's name and control buffers as they are.
///
/// # Safety
/// `msg` is valid, with `iov` its buffers.
unsafe fn recvmsg_bounced(
    fd: c_int,
    msg: *mut libc::msghdr,
    iov: &[libc::iovec],
    flags: c_int,
) -> isize {
    crate::io::input(iov, |b, n| {
        let mut v = single(b, n);
        // SAFETY: valid per the contract.
        let mut m = unsafe { *msg };
        m.msg_iov = &mut v;
        m.msg_iovlen = 1;
        let r = raw(
            libc::SYS_recvmsg,
            [
                fd as usize,
                &mut m as *mut _ as usize,
                flags as usize,
                0,
                0,
                0,
            ],
        );
        if r >= 0 {
            // SAFETY: valid per the contract; what the kernel reports back.
            unsafe {
                (*msg).msg_namelen = m.msg_namelen;
                (*msg).msg_controllen = m.msg_controllen;
                (*msg).msg_flags = m.msg_flags;
            }
        }
        r
    })
}

/// `sendmsg` of one message whose buffers include DSM memory, through a bounce.
///
/// # Safety
/// `msg` is valid, with `iov` its buffers.
unsafe fn sendmsg_bounced(
    fd: c_int,
    msg: *const libc::msghdr,
    iov: &[libc::iovec],
    flags: c_int,
) -> isize {
    crate::io::output(iov, |b, n, _done| {
        let mut v = single(b, n);
        // SAFETY: valid per the contract.
        let mut m = unsafe { *msg };
        m.msg_iov = &mut v;
        m.msg_iovlen = 1;
        raw(
            libc::SYS_sendmsg,
            [
                fd as usize,
                &m as *const _ as usize,
                flags as usize,
                0,
                0,
                0,
            ],
        )
    })
}

/// The DSM buffers of a message, if it has any.
///
/// # Safety
/// `msg` is NULL or valid.
unsafe fn msg_dsm_iov<'a>(msg: *const libc::msghdr) -> Option<&'a [libc::iovec]> {
    // SAFETY: NULL or valid per the contract.
    let m = unsafe { msg.as_ref() }?;
    // SAFETY: the message's own iovecs.
    unsafe { dsm_iov(m.msg_iov, m.msg_iovlen as c_int) }
}

/// Interposed `recvmsg`: DSM buffers through a bounce ([`crate::io`]).
///
/// # Safety
/// As libc's `recvmsg`.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> isize {
    // SAFETY: the caller's message, as for libc's.
    let r = match unsafe { msg_dsm_iov(msg) } {
        // SAFETY: as above.
        Some(iov) => ssize(unsafe { recvmsg_bounced(fd, msg, iov, flags) }),
        None => match real::recvmsg() {
            // SAFETY: libc's recvmsg with the caller's arguments.
            Some(f) => unsafe { f(fd, msg, flags) },
            None => fail(libc::ENOSYS, -1),
        },
    };
    if r >= 0 {
        // SAFETY: the message the kernel just filled.
        unsafe { mark_received(msg) };
    }
    r
}

/// Marks descriptors that arrived with a message (`SCM_RIGHTS`) and may be segments, so a
/// `read` of one before any `mmap` is the segment's too.
///
/// # Safety
/// `msg` is NULL or a message the kernel filled.
unsafe fn mark_received(msg: *const libc::msghdr) {
    // SAFETY: per the contract.
    let Some(m) = (unsafe { msg.as_ref() }) else {
        return;
    };
    if m.msg_control.is_null() || m.msg_controllen == 0 {
        return;
    }
    // SAFETY: the CMSG macros walk only within the control buffer the kernel filled.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<c_int>();
                let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..n {
                    let fd = core::ptr::read_unaligned(data.add(i));
                    if crate::segments::may_be_foreign_segment(fd) {
                        crate::segments::mark(fd);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(m, c);
        }
    }
}

/// Interposed `sendmsg`: DSM buffers through a bounce ([`crate::io`]).
///
/// # Safety
/// As libc's `sendmsg`.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> isize {
    // SAFETY: the caller's message, as for libc's.
    match unsafe { msg_dsm_iov(msg) } {
        // SAFETY: as above.
        Some(iov) => ssize(unsafe { sendmsg_bounced(fd, msg, iov, flags) }),
        None => match real::sendmsg() {
            // SAFETY: libc's sendmsg with the caller's arguments.
            Some(f) => unsafe { f(fd, msg, flags) },
            None => fail(libc::ENOSYS, -1),
        },
    }
}

/// Whether any message of `msgs` has a DSM buffer.
///
/// # Safety
/// `msgs` points to `n` valid messages.
unsafe fn mmsg_touches_dsm(msgs: *const libc::mmsghdr, n: libc::c_uint) -> bool {
    if msgs.is_null() || n == 0 || n > libc::UIO_MAXIOV as libc::c_uint {
        return false;
    }
    // SAFETY: per the contract.
    let msgs = unsafe { core::slice::from_raw_parts(msgs, n as usize) };
    // SAFETY: each message is valid.
    msgs.iter()
        .any(|m| unsafe { msg_dsm_iov(&m.msg_hdr) }.is_some())
}

/// Interposed `recvmmsg`: when a buffer is DSM memory, one `recvmsg` per message (after the
/// first, only what is ready if `MSG_WAITFORONE`; the timeout is not applied then).
///
/// # Safety
/// As libc's `recvmmsg`.
#[no_mangle]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    msgs: *mut libc::mmsghdr,
    n: libc::c_uint,
    flags: c_int,
    timeout: *mut libc::timespec,
) -> c_int {
    // SAFETY: the caller's messages, as for libc's.
    if !unsafe { mmsg_touches_dsm(msgs, n) } {
        return match real::recvmmsg() {
            // SAFETY: libc's recvmmsg with the caller's arguments.
            Some(f) => unsafe { f(fd, msgs, n, flags, timeout) },
            None => fail(libc::ENOSYS, -1),
        };
    }
    let mut got = 0;
    let mut flags = flags;
    while got < n {
        // SAFETY: `got < n` indexes the caller's array.
        let m = unsafe { &mut *msgs.add(got as usize) };
        // SAFETY: the caller's message.
        let r = match unsafe { msg_dsm_iov(&m.msg_hdr) } {
            // SAFETY: as above.
            Some(iov) => unsafe {
                recvmsg_bounced(fd, &mut m.msg_hdr, iov, flags & !libc::MSG_WAITFORONE)
            },
            None => raw(
                libc::SYS_recvmsg,
                [
                    fd as usize,
                    &mut m.msg_hdr as *mut _ as usize,
                    (flags & !libc::MSG_WAITFORONE) as usize,
                    0,
                    0,
                    0,
                ],
            ),
        };
        if r < 0 {
            if got > 0 {
                break;
            }
            return fail(-r as Errno, -1);
        }
        m.msg_len = r as libc::c_uint;
        got += 1;
        if flags & libc::MSG_WAITFORONE != 0 {
            flags |= libc::MSG_DONTWAIT;
        }
    }
    got as c_int
}

/// Interposed `sendmmsg`: when a buffer is DSM memory, one `sendmsg` per message.
///
/// # Safety
/// As libc's `sendmmsg`.
#[no_mangle]
pub unsafe extern "C" fn sendmmsg(
    fd: c_int,
    msgs: *mut libc::mmsghdr,
    n: libc::c_uint,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's messages, as for libc's.
    if !unsafe { mmsg_touches_dsm(msgs, n) } {
        return match real::sendmmsg() {
            // SAFETY: libc's sendmmsg with the caller's arguments.
            Some(f) => unsafe { f(fd, msgs, n, flags) },
            None => fail(libc::ENOSYS, -1),
        };
    }
    let mut sent = 0;
    while sent < n {
        // SAFETY: `sent < n` indexes the caller's array.
        let m = unsafe { &mut *msgs.add(sent as usize) };
        // SAFETY: the caller's message.
        let r = match unsafe { msg_dsm_iov(&m.msg_hdr) } {
            // SAFETY: as above.
            Some(iov) => unsafe { sendmsg_bounced(fd, &m.msg_hdr, iov, flags) },
            None => raw(
                libc::SYS_sendmsg,
                [
                    fd as usize,
                    &m.msg_hdr as *const _ as usize,
                    flags as usize,
                    0,
                    0,
                    0,
                ],
            ),
        };
        if r < 0 {
            if sent > 0 {
                break;
            }
            return fail(-r as Errno, -1);
        }
        m.msg_len = r as libc::c_uint;
        sent += 1;
    }
    sent as c_int
}

macro_rules! positioned {
    ($(#[$doc:meta])* $name:ident, $real:ident, $buf:ty, $write:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// As libc's function of that name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, buf: $buf, n: usize, off: libc::off_t) -> isize {
            match ops::positioned(fd, buf as usize, n, off, $write) {
                Some(Ok(done)) => done as isize,
                Some(Err(e)) => fail(e, -1),
                None => match real::$real() {
                    // SAFETY: libc's function with the caller's arguments.
                    Some(f) => unsafe { f(fd, buf, n, off) },
                    None => fail(libc::ENOSYS, -1),
                },
            }
        }
    };
}

positioned!(
    /// Interposed `pread`: on a DSM segment's descriptor, the segment's coherent bytes.
    pread, pread, *mut c_void, false);
positioned!(
    /// Interposed `pread64`: as [`pread`].
    pread64, pread, *mut c_void, false);
positioned!(
    /// Interposed `pwrite`: on a DSM segment's descriptor, a coherent write (growing it first).
    pwrite, pwrite, *const c_void, true);
positioned!(
    /// Interposed `pwrite64`: as [`pwrite`].
    pwrite64, pwrite, *const c_void, true);

/// The `shm_open` name a path in `/dev/shm` stands for, if it is one we distribute: the same
/// object as `shm_open("/NAME")` (glibc's `shm_open` is `open("/dev/shm/NAME")`).
///
/// # Safety
/// `path` is NULL or a valid C string.
unsafe fn dev_shm_name(path: *const c_char) -> Option<String> {
    // SAFETY: per the contract.
    let path = unsafe { name_of(path) }?;
    let rest = path.strip_prefix("/dev/shm/")?.trim_start_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    let name = format!("/{rest}");
    config::get().distributes(&name).then_some(name)
}

/// `open` of a distributed `/dev/shm` path: the segment, with `open`'s descriptor semantics
/// (close-on-exec only if asked, `O_APPEND`/`O_NONBLOCK` kept).
fn open_dev_shm(name: &str, flags: c_int, mode: libc::mode_t) -> c_int {
    // A descriptor opened write-only still reads through shm_open's read-write memfd; mmap
    // needs read access anyway.
    let shm_flags = flags & !libc::O_ACCMODE
        | if flags & libc::O_ACCMODE == libc::O_RDONLY {
            libc::O_RDONLY
        } else {
            libc::O_RDWR
        };
    let fd = match ops::shm_open(name, shm_flags, mode) {
        Ok(fd) => fd,
        Err(e) => return fail(e, -1),
    };
    if flags & libc::O_CLOEXEC == 0 {
        // SAFETY: integer arguments only.
        unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_SETFD, 0) };
    }
    let status = flags & (libc::O_APPEND | libc::O_NONBLOCK);
    if status != 0 {
        // SAFETY: integer arguments only.
        unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_SETFL, status) };
    }
    fd
}

macro_rules! open_hook {
    ($(#[$doc:meta])* $name:ident, $real:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// As libc's function of that name (the mode is read only with `O_CREAT`/`O_TMPFILE`,
        /// as libc does: on x86-64 a variadic int argument arrives in the same register).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int, mode: libc::mode_t) -> c_int {
            // SAFETY: the caller's path.
            if let Some(name) = unsafe { dev_shm_name(path) } {
                return open_dev_shm(&name, flags, mode);
            }
            match real::$real() {
                // SAFETY: libc's function with the caller's arguments.
                Some(f) => unsafe { f(path, flags, mode) },
                None => fail(libc::ENOSYS, -1),
            }
        }
    };
}

macro_rules! openat_hook {
    ($(#[$doc:meta])* $name:ident, $real:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// As libc's function of that name (see [`open`] for the mode).
        #[no_mangle]
        pub unsafe extern "C" fn $name(dir: c_int, path: *const c_char, flags: c_int, mode: libc::mode_t) -> c_int {
            // SAFETY: the caller's path (an absolute one ignores `dir`).
            if let Some(name) = unsafe { dev_shm_name(path) } {
                return open_dev_shm(&name, flags, mode);
            }
            match real::$real() {
                // SAFETY: libc's function with the caller's arguments.
                Some(f) => unsafe { f(dir, path, flags, mode) },
                None => fail(libc::ENOSYS, -1),
            }
        }
    };
}

open_hook!(
    /// Interposed `open`: `/dev/shm/NAME` is the segment `shm_open("/NAME")` opens.
    open, open);
open_hook!(
    /// Interposed `open64`: as [`open`].
    open64, open);
open_hook!(
    /// Interposed `__open_2` (fortified `open`): as [`open`].
    __open_2, open);
open_hook!(
    /// Interposed `__open64_2`: as [`open`].
    __open64_2, open);
openat_hook!(
    /// Interposed `openat`: as [`open`] for an absolute `/dev/shm` path.
    openat, openat);
openat_hook!(
    /// Interposed `openat64`: as [`openat`].
    openat64, openat);
openat_hook!(
    /// Interposed `__openat_2`: as [`openat`].
    __openat_2, openat);
openat_hook!(
    /// Interposed `__openat64_2`: as [`openat`].
    __openat64_2, openat);

/// Interposed `creat`: as [`open`] with `O_CREAT|O_WRONLY|O_TRUNC`.
///
/// # Safety
/// As libc's `creat`.
#[no_mangle]
pub unsafe extern "C" fn creat(path: *const c_char, mode: libc::mode_t) -> c_int {
    // SAFETY: same contract.
    unsafe { open(path, libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC, mode) }
}

/// Interposed `creat64`: as [`creat`].
///
/// # Safety
/// As libc's `creat64`.
#[no_mangle]
pub unsafe extern "C" fn creat64(path: *const c_char, mode: libc::mode_t) -> c_int {
    // SAFETY: same contract.
    unsafe { open(path, libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC, mode) }
}

/// `open` flags of an `fopen` mode string.
fn fopen_flags(mode: &[u8]) -> Option<c_int> {
    let mut flags = match mode.first()? {
        b'r' => libc::O_RDONLY,
        b'w' => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        b'a' => libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        _ => return None,
    };
    for c in &mode[1..] {
        match c {
            b'+' => flags = (flags & !libc::O_ACCMODE) | libc::O_RDWR,
            b'x' => flags |= libc::O_EXCL,
            b'e' => flags |= libc::O_CLOEXEC,
            _ => {}
        }
    }
    Some(flags)
}

/// Interposed `fopen`: `/dev/shm/NAME` is the segment (glibc's own `fopen` opens the path with
/// an internal `open` no hook sees, so it is interposed itself).
///
/// # Safety
/// As libc's `fopen`.
#[no_mangle]
pub unsafe extern "C" fn fopen(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    // SAFETY: the caller's path and mode.
    if let (Some(name), Some(m)) = (unsafe { dev_shm_name(path) }, unsafe { name_of(mode) }) {
        let Some(flags) = fopen_flags(m.as_bytes()) else {
            return fail(libc::EINVAL, core::ptr::null_mut());
        };
        let fd = open_dev_shm(&name, flags, 0o666);
        if fd < 0 {
            return core::ptr::null_mut();
        }
        if flags & libc::O_APPEND != 0 {
            // SAFETY: integer arguments only.
            unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_SETFL, libc::O_APPEND) };
        }
        // SAFETY: a descriptor we just opened and a valid mode string.
        let f = unsafe { crate::files::stream(fd, mode) };
        if f.is_null() {
            sys::close(fd);
        }
        return f;
    }
    match real::fopen() {
        // SAFETY: libc's fopen with the caller's arguments.
        Some(f) => unsafe { f(path, mode) },
        None => fail(libc::ENOSYS, core::ptr::null_mut()),
    }
}

/// Interposed `fopen64`: as [`fopen`].
///
/// # Safety
/// As libc's `fopen64`.
#[no_mangle]
pub unsafe extern "C" fn fopen64(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    // SAFETY: same contract.
    unsafe { fopen(path, mode) }
}

/// Interposed `unlink`: `/dev/shm/NAME` removes the segment's name, as `shm_unlink` does.
///
/// # Safety
/// As libc's `unlink`.
#[no_mangle]
pub unsafe extern "C" fn unlink(path: *const c_char) -> c_int {
    // SAFETY: the caller's path.
    if let Some(name) = unsafe { dev_shm_name(path) } {
        return match ops::shm_unlink(&name) {
            Ok(()) => 0,
            Err(e) => fail(e, -1),
        };
    }
    match real::unlink() {
        // SAFETY: libc's unlink with the caller's argument.
        Some(f) => unsafe { f(path) },
        None => fail(libc::ENOSYS, -1),
    }
}

/// Interposed `shmget`: a SysV key is a DSM segment ([`crate::sysv`]).
///
/// # Safety
/// As libc's `shmget`.
#[no_mangle]
pub unsafe extern "C" fn shmget(key: libc::key_t, size: usize, flags: c_int) -> c_int {
    match crate::sysv::shmget(key, size, flags) {
        Some(Ok(id)) => id,
        Some(Err(e)) => fail(e, -1),
        None => match real::shmget() {
            // SAFETY: libc's shmget with the caller's arguments.
            Some(f) => unsafe { f(key, size, flags) },
            None => fail(libc::ENOSYS, -1),
        },
    }
}

/// Interposed `shmat`.
///
/// # Safety
/// As libc's `shmat`.
#[no_mangle]
pub unsafe extern "C" fn shmat(id: c_int, addr: *const c_void, flags: c_int) -> *mut c_void {
    match crate::sysv::shmat(id, addr as usize, flags) {
        Some(Ok(at)) => at as *mut c_void,
        Some(Err(e)) => fail(e, usize::MAX as *mut c_void),
        None => match real::shmat() {
            // SAFETY: libc's shmat with the caller's arguments.
            Some(f) => unsafe { f(id, addr, flags) },
            None => fail(libc::ENOSYS, usize::MAX as *mut c_void),
        },
    }
}

/// Interposed `shmdt`.
///
/// # Safety
/// As libc's `shmdt`.
#[no_mangle]
pub unsafe extern "C" fn shmdt(addr: *const c_void) -> c_int {
    match crate::sysv::shmdt(addr as usize) {
        Some(Ok(())) => 0,
        Some(Err(e)) => fail(e, -1),
        None => match real::shmdt() {
            // SAFETY: libc's shmdt with the caller's argument.
            Some(f) => unsafe { f(addr) },
            None => fail(libc::ENOSYS, -1),
        },
    }
}

/// Interposed `shmctl`.
///
/// # Safety
/// As libc's `shmctl`.
#[no_mangle]
pub unsafe extern "C" fn shmctl(id: c_int, cmd: c_int, buf: *mut libc::shmid_ds) -> c_int {
    // SAFETY: the caller's buffer, as for libc's.
    match unsafe { crate::sysv::shmctl(id, cmd, buf) } {
        Some(Ok(r)) => r,
        Some(Err(e)) => fail(e, -1),
        None => match real::shmctl() {
            // SAFETY: libc's shmctl with the caller's arguments.
            Some(f) => unsafe { f(id, cmd, buf) },
            None => fail(libc::ENOSYS, -1),
        },
    }
}

/// Interposed `fdopen`: a stream on a segment's descriptor reads and writes the segment
/// coherently ([`crate::files`]).
///
/// # Safety
/// As libc's `fdopen`.
#[no_mangle]
pub unsafe extern "C" fn fdopen(fd: c_int, mode: *const c_char) -> *mut libc::FILE {
    if let Some(Ok(_)) = ops::marked_segment(fd) {
        // SAFETY: the caller's mode string.
        return unsafe { crate::files::stream(fd, mode) };
    }
    match real::fdopen() {
        // SAFETY: libc's fdopen with the caller's arguments.
        Some(f) => unsafe { f(fd, mode) },
        None => fail(libc::ENOSYS, core::ptr::null_mut()),
    }
}

/// Interposed `fileno`: a segment stream's descriptor ([`crate::files`]).
///
/// # Safety
/// As libc's `fileno`.
#[no_mangle]
pub unsafe extern "C" fn fileno(f: *mut libc::FILE) -> c_int {
    if let Some(fd) = crate::files::fileno(f) {
        return fd;
    }
    match real::fileno() {
        // SAFETY: libc's fileno with the caller's stream.
        Some(g) => unsafe { g(f) },
        None => fail(libc::ENOSYS, -1),
    }
}

/// Interposed `fileno_unlocked`: as [`fileno`].
///
/// # Safety
/// As libc's `fileno_unlocked`.
#[no_mangle]
pub unsafe extern "C" fn fileno_unlocked(f: *mut libc::FILE) -> c_int {
    // SAFETY: same contract.
    unsafe { fileno(f) }
}

/// Interposed `read`: on a segment's descriptor, the segment's coherent bytes at the file
/// position; any other descriptor costs one bit test.
///
/// # Safety
/// As libc's `read`.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize {
    match ops::sequential(fd, buf as usize, n, false) {
        Some(Ok(done)) => done as isize,
        Some(Err(e)) => fail(e, -1),
        None => match real::read() {
            // SAFETY: libc's read with the caller's arguments.
            Some(f) => unsafe { f(fd, buf, n) },
            None => fail(libc::ENOSYS, -1),
        },
    }
}

/// Interposed `write`: as [`read`].
///
/// # Safety
/// As libc's `write`.
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: usize) -> isize {
    match ops::sequential(fd, buf as usize, n, true) {
        Some(Ok(done)) => done as isize,
        Some(Err(e)) => fail(e, -1),
        None => match real::write() {
            // SAFETY: libc's write with the caller's arguments.
            Some(f) => unsafe { f(fd, buf, n) },
            None => fail(libc::ENOSYS, -1),
        },
    }
}

/// A copy of a segment's descriptor is one too (the bit test of [`read`] must know).
fn copied(old: c_int, new: c_int) -> c_int {
    if new >= 0 && crate::segments::is_marked(old) {
        crate::segments::mark(new);
    }
    new
}

/// Interposed `dup`.
#[no_mangle]
pub extern "C" fn dup(fd: c_int) -> c_int {
    match real::dup() {
        // SAFETY: libc's dup.
        Some(f) => copied(fd, unsafe { f(fd) }),
        None => fail(libc::ENOSYS, -1),
    }
}

/// Interposed `dup2`.
#[no_mangle]
pub extern "C" fn dup2(fd: c_int, to: c_int) -> c_int {
    match real::dup2() {
        // SAFETY: libc's dup2.
        Some(f) => copied(fd, unsafe { f(fd, to) }),
        None => fail(libc::ENOSYS, -1),
    }
}

/// Interposed `dup3`.
#[no_mangle]
pub extern "C" fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
    match real::dup3() {
        // SAFETY: libc's dup3.
        Some(f) => copied(fd, unsafe { f(fd, to, flags) }),
        None => fail(libc::ENOSYS, -1),
    }
}

/// Interposed `fcntl` (its third argument read as a word, as on x86-64 every variadic one
/// arrives): `F_DUPFD`/`F_DUPFD_CLOEXEC` copies of a segment's descriptor are marked.
///
/// # Safety
/// As libc's `fcntl`.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    let r = match real::fcntl() {
        // SAFETY: libc's fcntl with the caller's arguments.
        Some(f) => unsafe { f(fd, cmd, arg) },
        None => return fail(libc::ENOSYS, -1),
    };
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        copied(fd, r)
    } else {
        r
    }
}

/// Interposed `fcntl64`: as [`fcntl`].
///
/// # Safety
/// As libc's `fcntl64`.
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: same contract.
    unsafe { fcntl(fd, cmd, arg) }
}

/// Interposed `fallocate`: on a segment's descriptor, growth is cluster-wide.
#[no_mangle]
pub extern "C" fn fallocate(fd: c_int, mode: c_int, off: libc::off_t, len: libc::off_t) -> c_int {
    match ops::allocate(fd, mode, off, len) {
        Some(Ok(())) => 0,
        Some(Err(e)) => fail(e, -1),
        None => match real::fallocate() {
            // SAFETY: libc's fallocate with the caller's arguments.
            Some(f) => unsafe { f(fd, mode, off, len) },
            None => fail(libc::ENOSYS, -1),
        },
    }
}

/// Interposed `fallocate64`: as [`fallocate`].
#[no_mangle]
pub extern "C" fn fallocate64(fd: c_int, mode: c_int, off: libc::off_t, len: libc::off_t) -> c_int {
    fallocate(fd, mode, off, len)
}

/// Interposed `posix_fallocate` (returns the error number): as [`fallocate`] with mode 0.
#[no_mangle]
pub extern "C" fn posix_fallocate(fd: c_int, off: libc::off_t, len: libc::off_t) -> c_int {
    match ops::allocate(fd, 0, off, len) {
        Some(Ok(())) => 0,
        Some(Err(e)) => e,
        None => match real::posix_fallocate() {
            // SAFETY: libc's posix_fallocate with the caller's arguments.
            Some(f) => unsafe { f(fd, off, len) },
            None => libc::ENOSYS,
        },
    }
}

/// Interposed `posix_fallocate64`: as [`posix_fallocate`].
#[no_mangle]
pub extern "C" fn posix_fallocate64(fd: c_int, off: libc::off_t, len: libc::off_t) -> c_int {
    posix_fallocate(fd, off, len)
}

/// Interposed `fchmod`: on a segment's descriptor, the mode changes cluster-wide.
#[no_mangle]
pub extern "C" fn fchmod(fd: c_int, mode: libc::mode_t) -> c_int {
    match ops::chmod(fd, Some(mode), None, None) {
        Some(Ok(())) => 0,
        Some(Err(e)) => fail(e, -1),
        // SAFETY: integer arguments only.
        None => ssize(raw(
            libc::SYS_fchmod,
            [fd as usize, mode as usize, 0, 0, 0, 0],
        )) as c_int,
    }
}

/// Interposed `fchown`: on a segment's descriptor, the owner changes cluster-wide.
#[no_mangle]
pub extern "C" fn fchown(fd: c_int, uid: libc::uid_t, gid: libc::gid_t) -> c_int {
    let keep = |v: u32| (v != u32::MAX).then_some(v);
    match ops::chmod(fd, None, keep(uid), keep(gid)) {
        Some(Ok(())) => 0,
        Some(Err(e)) => fail(e, -1),
        None => ssize(raw(
            libc::SYS_fchown,
            [fd as usize, uid as usize, gid as usize, 0, 0, 0],
        )) as c_int,
    }
}
