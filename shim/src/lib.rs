//! `libdsm.so`: run an unmodified program with `LD_PRELOAD=libdsm.so` and its POSIX shared
//! memory (`shm_open`, `ftruncate`, `mmap`, …) becomes distributed shared memory served by the
//! node's `dsmd`.
//!
//! How a page gets to a program: `mmap` of a segment maps the daemon's memfd at the segment's
//! cluster-wide base address with no access; the first touch of a page raises SIGSEGV; the
//! handler ([`fault`]) asks the daemon on the thread's channel ([`channels`]) and `mprotect`s
//! the page to what was granted; the instruction runs again.
//!
//! This is the one crate with much `unsafe`. The rules: every block says why it is sound; the
//! signal handler and everything it calls use raw system calls, stack buffers and lock-free
//! tables only; nothing in the shim calls a libc function that we interpose.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod api;
pub mod channels;
pub mod config;
pub mod fastlock;
pub mod fault;
pub mod files;
pub mod hooks;
pub mod io;
pub mod lock;
pub mod mappings;
pub mod ops;
pub mod pthread;
pub mod real;
pub mod revoke;
#[macro_use]
pub mod say;
pub mod segments;
pub mod semaphore;
pub mod session;
pub mod sigmask;
pub mod sync;
pub mod sys;
pub mod sysv;
pub mod wire;

/// A readable name for an errno, for messages.
pub fn errno_name(e: sys::Errno) -> &'static str {
    match e {
        libc::ENOENT => "no such file (ENOENT)",
        libc::ECONNREFUSED => "connection refused (ECONNREFUSED)",
        libc::EACCES => "permission denied (EACCES)",
        libc::EPIPE => "connection closed (EPIPE)",
        libc::ECONNRESET => "connection reset (ECONNRESET)",
        libc::EPROTO => "protocol error (EPROTO)",
        libc::ENOTCONN => "not attached to dsmd (ENOTCONN)",
        libc::ENAMETOOLONG => "socket path too long (ENAMETOOLONG)",
        libc::EMFILE => "too many open files (EMFILE)",
        _ => "system error",
    }
}

extern "C" fn init() {
    config::get();
    real::resolve_all();
    segments::mark_inherited();
    // SAFETY: registers plain extern "C" functions that live as long as the library.
    unsafe {
        libc::pthread_atfork(
            Some(prepare_fork),
            Some(parent_after_fork),
            Some(child_after_fork),
        )
    };
}

extern "C" fn prepare_fork() {
    ops::prepare_fork();
}

extern "C" fn parent_after_fork() {
    ops::parent_after_fork();
}

extern "C" fn child_after_fork() {
    ops::child_after_fork();
}

/// Runs [`init`] when the library is loaded, before the program's `main`.
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;
