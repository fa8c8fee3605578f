//! libc's own versions of the functions we interpose but cannot replace with a raw system call
//! (`shm_open` is a path lookup in `/dev/shm`; `sigaction` sets glibc's signal restorer).
//! Looked up once with `dlsym(RTLD_NEXT)`; never on a hot path.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

macro_rules! real_fn {
    ($(#[$doc:meta])* $name:ident, $sym:literal, fn($($arg:ty),*) -> $ret:ty) => {
        real_fn!($(#[$doc])* $name, $sym, None, fn($($arg),*) -> $ret);
    };
    ($(#[$doc:meta])* $name:ident, $sym:literal, $version:expr, fn($($arg:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        pub fn $name() -> Option<unsafe extern "C" fn($($arg),*) -> $ret> {
            static ADDR: AtomicUsize = AtomicUsize::new(0);
            let mut addr = ADDR.load(Ordering::Relaxed);
            if addr == 0 {
                addr = lookup(concat!($sym, "\0"), $version);
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
real_fn!(
    /// libc's `pthread_sigmask`.
    pthread_sigmask, "pthread_sigmask",
    fn(c_int, *const libc::sigset_t, *mut libc::sigset_t) -> c_int);
real_fn!(
    /// libc's `sigprocmask`.
    sigprocmask, "sigprocmask",
    fn(c_int, *const libc::sigset_t, *mut libc::sigset_t) -> c_int);
real_fn!(
    /// libc's `sigsuspend`.
    sigsuspend, "sigsuspend", fn(*const libc::sigset_t) -> c_int);
real_fn!(
    /// libc's `ppoll`.
    ppoll, "ppoll",
    fn(*mut libc::pollfd, libc::nfds_t, *const libc::timespec, *const libc::sigset_t) -> c_int);
real_fn!(
    /// libc's `pselect`.
    pselect, "pselect",
    fn(c_int, *mut libc::fd_set, *mut libc::fd_set, *mut libc::fd_set, *const libc::timespec,
       *const libc::sigset_t) -> c_int);
real_fn!(
    /// libc's `epoll_pwait`.
    epoll_pwait, "epoll_pwait",
    fn(c_int, *mut libc::epoll_event, c_int, c_int, *const libc::sigset_t) -> c_int);
type Iov = *const libc::iovec;
real_fn!(
    /// libc's `readv`.
    readv, "readv", fn(c_int, Iov, c_int) -> isize);
real_fn!(
    /// libc's `writev`.
    writev, "writev", fn(c_int, Iov, c_int) -> isize);
real_fn!(
    /// libc's `preadv`.
    preadv, "preadv", fn(c_int, Iov, c_int, libc::off_t) -> isize);
real_fn!(
    /// libc's `pwritev`.
    pwritev, "pwritev", fn(c_int, Iov, c_int, libc::off_t) -> isize);
real_fn!(
    /// libc's `preadv2`.
    preadv2, "preadv2", fn(c_int, Iov, c_int, libc::off_t, c_int) -> isize);
real_fn!(
    /// libc's `pwritev2`.
    pwritev2, "pwritev2", fn(c_int, Iov, c_int, libc::off_t, c_int) -> isize);
real_fn!(
    /// libc's `recvmsg`.
    recvmsg, "recvmsg", fn(c_int, *mut libc::msghdr, c_int) -> isize);
real_fn!(
    /// libc's `sendmsg`.
    sendmsg, "sendmsg", fn(c_int, *const libc::msghdr, c_int) -> isize);
real_fn!(
    /// libc's `recvmmsg`.
    recvmmsg, "recvmmsg",
    fn(c_int, *mut libc::mmsghdr, libc::c_uint, c_int, *mut libc::timespec) -> c_int);
real_fn!(
    /// libc's `sendmmsg`.
    sendmmsg, "sendmmsg", fn(c_int, *mut libc::mmsghdr, libc::c_uint, c_int) -> c_int);
real_fn!(
    /// libc's `pread`.
    pread, "pread", fn(c_int, *mut c_void, usize, libc::off_t) -> isize);
real_fn!(
    /// libc's `pwrite`.
    pwrite, "pwrite", fn(c_int, *const c_void, usize, libc::off_t) -> isize);
real_fn!(
    /// libc's `open` (variadic; the mode is passed as the third argument, as on x86-64).
    open, "open", fn(*const libc::c_char, c_int, libc::mode_t) -> c_int);
real_fn!(
    /// libc's `openat` (variadic, as `open`).
    openat, "openat", fn(c_int, *const libc::c_char, c_int, libc::mode_t) -> c_int);
real_fn!(
    /// libc's `fopen`.
    fopen, "fopen", fn(*const libc::c_char, *const libc::c_char) -> *mut libc::FILE);
real_fn!(
    /// libc's `unlink`.
    unlink, "unlink", fn(*const libc::c_char) -> c_int);
real_fn!(
    /// libc's `shmget`.
    shmget, "shmget", fn(libc::key_t, usize, c_int) -> c_int);
real_fn!(
    /// libc's `shmat`.
    shmat, "shmat", fn(c_int, *const c_void, c_int) -> *mut c_void);
real_fn!(
    /// libc's `shmdt`.
    shmdt, "shmdt", fn(*const c_void) -> c_int);
real_fn!(
    /// libc's `shmctl`.
    shmctl, "shmctl", fn(c_int, c_int, *mut libc::shmid_ds) -> c_int);
real_fn!(
    /// libc's `fdopen`.
    fdopen, "fdopen", fn(c_int, *const libc::c_char) -> *mut libc::FILE);
real_fn!(
    /// libc's `fileno`.
    fileno, "fileno", fn(*mut libc::FILE) -> c_int);
real_fn!(
    /// libc's `read`.
    read, "read", fn(c_int, *mut c_void, usize) -> isize);
real_fn!(
    /// libc's `write`.
    write, "write", fn(c_int, *const c_void, usize) -> isize);
real_fn!(
    /// libc's `dup`.
    dup, "dup", fn(c_int) -> c_int);
real_fn!(
    /// libc's `dup2`.
    dup2, "dup2", fn(c_int, c_int) -> c_int);
real_fn!(
    /// libc's `dup3`.
    dup3, "dup3", fn(c_int, c_int, c_int) -> c_int);
real_fn!(
    /// libc's `fcntl` (variadic; the argument as a word, as on x86-64).
    fcntl, "fcntl", fn(c_int, c_int, usize) -> c_int);
real_fn!(
    /// libc's `fallocate`.
    fallocate, "fallocate", fn(c_int, c_int, libc::off_t, libc::off_t) -> c_int);
real_fn!(
    /// libc's `posix_fallocate`.
    posix_fallocate, "posix_fallocate", fn(c_int, libc::off_t, libc::off_t) -> c_int);

/// The next definition of `sym` after ours (NUL-terminated), of `version` if given: glibc keeps
/// an old `pthread_cond_*` beside the current one, and plain `dlsym` would find the old one.
fn lookup(sym: &str, version: Option<&str>) -> usize {
    let name = sym.as_ptr().cast();
    // SAFETY: `sym` and `version` are NUL-terminated literals.
    let found = unsafe {
        match version {
            Some(v) => libc::dlvsym(libc::RTLD_NEXT, name, v.as_ptr().cast()),
            None => core::ptr::null_mut(),
        }
    };
    if !found.is_null() {
        return found as usize;
    }
    // SAFETY: as above.
    unsafe { libc::dlsym(libc::RTLD_NEXT, name) as usize }
}

type Obj = *mut c_void;
type Attr = *const c_void;
type Time = *const libc::timespec;

/// The glibc version of the current `pthread_cond_*` ABI on x86-64.
const COND: Option<&str> = Some("GLIBC_2.3.2\0");

real_fn!(
    /// libc's `pthread_mutex_init`.
    pthread_mutex_init, "pthread_mutex_init", fn(Obj, Attr) -> c_int);
real_fn!(
    /// libc's `pthread_mutex_destroy`.
    pthread_mutex_destroy, "pthread_mutex_destroy", fn(Obj) -> c_int);
real_fn!(
    /// libc's `pthread_mutex_lock`.
    pthread_mutex_lock, "pthread_mutex_lock", fn(Obj) -> c_int);
real_fn!(
    /// libc's `pthread_mutex_trylock`.
    pthread_mutex_trylock, "pthread_mutex_trylock", fn(Obj) -> c_int);
real_fn!(
    /// libc's `pthread_mutex_timedlock`.
    pthread_mutex_timedlock, "pthread_mutex_timedlock", fn(Obj, Time) -> c_int);
real_fn!(
    /// libc's `pthread_mutex_clocklock`.
    pthread_mutex_clocklock, "pthread_mutex_clocklock", fn(Obj, libc::clockid_t, Time) -> c_int);
real_fn!(
    /// libc's `pthread_mutex_unlock`.
    pthread_mutex_unlock, "pthread_mutex_unlock", fn(Obj) -> c_int);
real_fn!(
    /// libc's `pthread_mutex_consistent`.
    pthread_mutex_consistent, "pthread_mutex_consistent", fn(Obj) -> c_int);
real_fn!(
    /// libc's `pthread_cond_init`.
    pthread_cond_init, "pthread_cond_init", COND, fn(Obj, Attr) -> c_int);
real_fn!(
    /// libc's `pthread_cond_destroy`.
    pthread_cond_destroy, "pthread_cond_destroy", COND, fn(Obj) -> c_int);
real_fn!(
    /// libc's `pthread_cond_wait`.
    pthread_cond_wait, "pthread_cond_wait", COND, fn(Obj, Obj) -> c_int);
real_fn!(
    /// libc's `pthread_cond_timedwait`.
    pthread_cond_timedwait, "pthread_cond_timedwait", COND, fn(Obj, Obj, Time) -> c_int);
real_fn!(
    /// libc's `pthread_cond_clockwait`.
    pthread_cond_clockwait, "pthread_cond_clockwait", fn(Obj, Obj, libc::clockid_t, Time) -> c_int);
real_fn!(
    /// libc's `pthread_cond_signal`.
    pthread_cond_signal, "pthread_cond_signal", COND, fn(Obj) -> c_int);
real_fn!(
    /// libc's `pthread_cond_broadcast`.
    pthread_cond_broadcast, "pthread_cond_broadcast", COND, fn(Obj) -> c_int);
real_fn!(
    /// libc's `pthread_barrier_init`.
    pthread_barrier_init, "pthread_barrier_init", fn(Obj, Attr, libc::c_uint) -> c_int);
real_fn!(
    /// libc's `pthread_barrier_destroy`.
    pthread_barrier_destroy, "pthread_barrier_destroy", fn(Obj) -> c_int);
real_fn!(
    /// libc's `pthread_barrier_wait`.
    pthread_barrier_wait, "pthread_barrier_wait", fn(Obj) -> c_int);
real_fn!(
    /// libc's `pthread_rwlock_init`.
    pthread_rwlock_init, "pthread_rwlock_init", fn(Obj, Attr) -> c_int);
real_fn!(
    /// libc's `pthread_rwlock_destroy`.
    pthread_rwlock_destroy, "pthread_rwlock_destroy", fn(Obj) -> c_int);
real_fn!(
    /// libc's `pthread_rwlock_rdlock`.
    pthread_rwlock_rdlock, "pthread_rwlock_rdlock", fn(Obj) -> c_int);
real_fn!(
    /// libc's `pthread_rwlock_tryrdlock`.
    pthread_rwlock_tryrdlock, "pthread_rwlock_tryrdlock", fn(Obj) -> c_int);
real_fn!(
    /// libc's `pthread_rwlock_timedrdlock`.
    pthread_rwlock_timedrdlock, "pthread_rwlock_timedrdlock", fn(Obj, Time) -> c_int);
real_fn!(
    /// libc's `pthread_rwlock_clockrdlock`.
    pthread_rwlock_clockrdlock, "pthread_rwlock_clockrdlock", fn(Obj, libc::clockid_t, Time) -> c_int);
real_fn!(
    /// libc's `pthread_rwlock_wrlock`.
    pthread_rwlock_wrlock, "pthread_rwlock_wrlock", fn(Obj) -> c_int);
real_fn!(
    /// libc's `pthread_rwlock_trywrlock`.
    pthread_rwlock_trywrlock, "pthread_rwlock_trywrlock", fn(Obj) -> c_int);
real_fn!(
    /// libc's `pthread_rwlock_timedwrlock`.
    pthread_rwlock_timedwrlock, "pthread_rwlock_timedwrlock", fn(Obj, Time) -> c_int);
real_fn!(
    /// libc's `pthread_rwlock_clockwrlock`.
    pthread_rwlock_clockwrlock, "pthread_rwlock_clockwrlock", fn(Obj, libc::clockid_t, Time) -> c_int);
real_fn!(
    /// libc's `pthread_rwlock_unlock`.
    pthread_rwlock_unlock, "pthread_rwlock_unlock", fn(Obj) -> c_int);

real_fn!(
    /// libc's `sem_init`.
    sem_init, "sem_init", fn(Obj, c_int, libc::c_uint) -> c_int);
real_fn!(
    /// libc's `sem_destroy`.
    sem_destroy, "sem_destroy", fn(Obj) -> c_int);
real_fn!(
    /// libc's `sem_wait`.
    sem_wait, "sem_wait", fn(Obj) -> c_int);
real_fn!(
    /// libc's `sem_trywait`.
    sem_trywait, "sem_trywait", fn(Obj) -> c_int);
real_fn!(
    /// libc's `sem_timedwait`.
    sem_timedwait, "sem_timedwait", fn(Obj, Time) -> c_int);
real_fn!(
    /// libc's `sem_clockwait`.
    sem_clockwait, "sem_clockwait", fn(Obj, libc::clockid_t, Time) -> c_int);
real_fn!(
    /// libc's `sem_post`.
    sem_post, "sem_post", fn(Obj) -> c_int);
real_fn!(
    /// libc's `sem_getvalue`.
    sem_getvalue, "sem_getvalue", fn(Obj, *mut c_int) -> c_int);

real_fn!(
    /// libc's `sem_close`.
    sem_close, "sem_close", fn(Obj) -> c_int);
real_fn!(
    /// libc's `sem_unlink`.
    sem_unlink, "sem_unlink", fn(*const libc::c_char) -> c_int);

/// libc's `sem_open` (variadic: the mode and value follow when `O_CREAT` is given).
pub fn sem_open() -> Option<unsafe extern "C" fn(*const libc::c_char, c_int, ...) -> *mut c_void> {
    static ADDR: AtomicUsize = AtomicUsize::new(0);
    let mut addr = ADDR.load(Ordering::Relaxed);
    if addr == 0 {
        addr = lookup("sem_open\0", None);
        ADDR.store(addr, Ordering::Relaxed);
    }
    // SAFETY: the symbol, when found, is libc's sem_open, which has this signature.
    (addr != 0).then(|| unsafe {
        core::mem::transmute::<
            usize,
            unsafe extern "C" fn(*const libc::c_char, c_int, ...) -> *mut c_void,
        >(addr)
    })
}

/// Resolves every symbol now, while it is safe to call `dlsym`.
pub fn resolve_all() {
    let _ = (
        shm_open(),
        shm_unlink(),
        sigaction(),
        signal(),
        sysv_signal(),
        pthread_sigmask(),
        sigprocmask(),
        sigsuspend(),
        ppoll(),
        pselect(),
        epoll_pwait(),
    );
    let _ = (
        readv(),
        writev(),
        preadv(),
        pwritev(),
        preadv2(),
        pwritev2(),
        recvmsg(),
        sendmsg(),
        recvmmsg(),
        sendmmsg(),
        pread(),
        pwrite(),
        open(),
        openat(),
        fopen(),
        unlink(),
        shmget(),
        shmat(),
        shmdt(),
        shmctl(),
    );
    let _ = (
        fdopen(),
        fileno(),
        read(),
        write(),
        dup(),
        dup2(),
        dup3(),
        fcntl(),
        fallocate(),
        posix_fallocate(),
    );
    let _ = (
        pthread_mutex_init(),
        pthread_mutex_destroy(),
        pthread_mutex_lock(),
        pthread_mutex_trylock(),
        pthread_mutex_timedlock(),
        pthread_mutex_clocklock(),
        pthread_mutex_unlock(),
        pthread_mutex_consistent(),
        pthread_cond_init(),
        pthread_cond_destroy(),
        pthread_cond_wait(),
        pthread_cond_timedwait(),
        pthread_cond_clockwait(),
        pthread_cond_signal(),
        pthread_cond_broadcast(),
    );
    let _ = (
        pthread_barrier_init(),
        pthread_barrier_destroy(),
        pthread_barrier_wait(),
        pthread_rwlock_init(),
        pthread_rwlock_destroy(),
        pthread_rwlock_rdlock(),
        pthread_rwlock_tryrdlock(),
        pthread_rwlock_timedrdlock(),
        pthread_rwlock_clockrdlock(),
        pthread_rwlock_wrlock(),
        pthread_rwlock_trywrlock(),
        pthread_rwlock_timedwrlock(),
        pthread_rwlock_clockwrlock(),
        pthread_rwlock_unlock(),
    );
    let _ = (
        sem_init(),
        sem_destroy(),
        sem_wait(),
        sem_trywait(),
        sem_timedwait(),
        sem_clockwait(),
        sem_post(),
        sem_getvalue(),
        sem_close(),
        sem_unlink(),
    );
    let _ = sem_open();
}
