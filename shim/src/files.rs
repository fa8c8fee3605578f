//! stdio streams on a segment's descriptor (`fopen("/dev/shm/NAME")`, `fdopen` of a segment's
//! descriptor).
//!
//! glibc's stdio reads and writes with internal calls no interposed symbol sees, so such a
//! stream is made with `fopencookie`: its reads, writes and seeks come to
//! [`crate::ops::sequential`] (coherent, at the descriptor's file position). The descriptor
//! stays the stream's: `fileno` (interposed) returns it, so `mmap(fileno(f))` maps the segment.

use core::ffi::{c_char, c_int, c_void};

use crate::lock::SpinLock;
use crate::{ops, sys};

#[repr(C)]
struct CookieIo {
    read: unsafe extern "C" fn(*mut c_void, *mut c_char, usize) -> isize,
    write: unsafe extern "C" fn(*mut c_void, *const c_char, usize) -> isize,
    seek: unsafe extern "C" fn(*mut c_void, *mut i64, c_int) -> c_int,
    close: unsafe extern "C" fn(*mut c_void) -> c_int,
}

extern "C" {
    fn fopencookie(cookie: *mut c_void, mode: *const c_char, io: CookieIo) -> *mut libc::FILE;
}

/// The streams made here and their descriptors (for `fileno`).
static STREAMS: SpinLock<Vec<(usize, i32)>> = SpinLock::new(Vec::new());

fn fd_of(cookie: *mut c_void) -> i32 {
    cookie as usize as i32
}

fn result(r: Option<Result<usize, sys::Errno>>) -> isize {
    match r {
        Some(Ok(n)) => n as isize,
        Some(Err(e)) => {
            sys::set_errno(e);
            -1
        }
        None => {
            sys::set_errno(libc::EBADF);
            -1
        }
    }
}

unsafe extern "C" fn cookie_read(cookie: *mut c_void, buf: *mut c_char, n: usize) -> isize {
    result(ops::sequential(fd_of(cookie), buf as usize, n, false))
}

unsafe extern "C" fn cookie_write(cookie: *mut c_void, buf: *const c_char, n: usize) -> isize {
    result(ops::sequential(fd_of(cookie), buf as usize, n, true))
}

unsafe extern "C" fn cookie_seek(cookie: *mut c_void, off: *mut i64, whence: c_int) -> c_int {
    // SAFETY: glibc passes a valid position to read and update.
    let want = unsafe { *off };
    match sys::seek(fd_of(cookie), want, whence) {
        Ok(at) => {
            // SAFETY: as above.
            unsafe { *off = at as i64 };
            0
        }
        Err(e) => {
            sys::set_errno(e);
            -1
        }
    }
}

unsafe extern "C" fn cookie_close(cookie: *mut c_void) -> c_int {
    let fd = fd_of(cookie);
    STREAMS.lock().retain(|s| s.1 != fd);
    sys::close(fd);
    0
}

/// A stream on the segment descriptor `fd` (which it owns from now on), or NULL with errno.
///
/// # Safety
/// `mode` is a valid C string.
pub unsafe fn stream(fd: i32, mode: *const c_char) -> *mut libc::FILE {
    let io = CookieIo {
        read: cookie_read,
        write: cookie_write,
        seek: cookie_seek,
        close: cookie_close,
    };
    // SAFETY: the cookie is the descriptor's number; the functions match glibc's types.
    let f = unsafe { fopencookie(fd as usize as *mut c_void, mode, io) };
    if !f.is_null() {
        STREAMS.lock().push((f as usize, fd));
    }
    f
}

/// The descriptor of a stream made here.
pub fn fileno(f: *mut libc::FILE) -> Option<i32> {
    STREAMS
        .lock()
        .iter()
        .find(|s| s.0 == f as usize)
        .map(|s| s.1)
}
