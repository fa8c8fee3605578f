//! libc's own versions of the functions we interpose but cannot replace with a raw system call
//! (`shm_open` is a path lookup in `/dev/shm`; `sigaction` sets glibc's signal restorer).
//! Looked up once with `dlsym(RTLD_NEXT)`; never on a hot path.

use core::sync::atomic::{AtomicUsize, Ordering};

macro_rules! real_fn {
    ($(#[$doc:meta])* $name:ident, $sym:literal, fn($($arg:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        pub fn $name() -> Option<unsafe extern "C" fn($($arg),*) -> $ret> {
            static ADDR: AtomicUsize = AtomicUsize::new(0);
            let mut addr = ADDR.load(Ordering::Relaxed);
            if addr == 0 {
                // SAFETY: the symbol name is a NUL-terminated literal.
                addr = unsafe { libc::dlsym(libc::RTLD_NEXT, concat!($sym, "\0").as_ptr().cast()) }
                    as usize;
                ADDR.store(addr, Ordering::Relaxed);
            }
            // SAFETY: the symbol, when found, is libc's function of this exact signature.
            (addr != 0).then(|| unsafe {
                core::mem::transmute::<usize, unsafe extern "C" fn($($arg),*) -> $ret>(addr)
            })
        }
    };
}

real_fn!(
    /// libc's `shm_open`.
    shm_open, "shm_open", fn(*const libc::c_char, libc::c_int, libc::mode_t) -> libc::c_int);
real_fn!(
    /// libc's `shm_unlink`.
    shm_unlink, "shm_unlink", fn(*const libc::c_char) -> libc::c_int);
real_fn!(
    /// libc's `sigaction`.
    sigaction, "sigaction",
    fn(libc::c_int, *const libc::sigaction, *mut libc::sigaction) -> libc::c_int);
real_fn!(
    /// libc's `signal`.
    signal, "signal", fn(libc::c_int, libc::sighandler_t) -> libc::sighandler_t);
real_fn!(
    /// libc's `sysv_signal`.
    sysv_signal, "sysv_signal", fn(libc::c_int, libc::sighandler_t) -> libc::sighandler_t);

/// Resolves every symbol now, while it is safe to call `dlsym`.
pub fn resolve_all() {
    let _ = (
        shm_open(),
        shm_unlink(),
        sigaction(),
        signal(),
        sysv_signal(),
    );
}
