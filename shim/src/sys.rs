//! Raw system calls.
//!
//! The shim exports `mmap`, `munmap`, `mprotect` and `ftruncate`; calling libc's versions of
//! those from inside the shim would come straight back to our own hooks. Everything here goes
//! to the kernel through `syscall(2)`, which is async-signal-safe, and returns `Err(errno)`.

use core::ffi::c_void;

/// A raw errno value.
pub type Errno = i32;

/// Result of a raw system call.
pub type SysResult<T = usize> = Result<T, Errno>;

fn check(ret: libc::c_long) -> SysResult {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret as usize)
    }
}

/// The calling thread's errno.
pub fn errno() -> Errno {
    // SAFETY: __errno_location always returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's errno.
pub fn set_errno(e: Errno) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = e }
}

/// `mmap(2)`; the caller upholds mmap's contract for `addr` and `fd`.
///
/// # Safety
/// With `MAP_FIXED`, whatever was mapped at `[addr, addr + len)` is replaced.
pub unsafe fn mmap(addr: usize, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> SysResult {
    // SAFETY: forwarded contract; the kernel validates the arguments.
    check(unsafe { libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, off) })
}

/// `munmap(2)`.
///
/// # Safety
/// Memory in the range must not be used afterwards.
pub unsafe fn munmap(addr: usize, len: usize) -> SysResult {
    // SAFETY: forwarded contract.
    check(unsafe { libc::syscall(libc::SYS_munmap, addr, len) })
}

/// `mprotect(2)`.
///
/// # Safety
/// Lowering protection makes later accesses fault; the caller expects that.
pub unsafe fn mprotect(addr: usize, len: usize, prot: i32) -> SysResult {
    // SAFETY: forwarded contract.
    check(unsafe { libc::syscall(libc::SYS_mprotect, addr, len, prot) })
}

/// `ftruncate(2)`.
pub fn ftruncate(fd: i32, len: i64) -> SysResult {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_ftruncate, fd, len) })
}

/// `fstat(2)`.
pub fn fstat(fd: i32) -> SysResult<libc::stat> {
    // SAFETY: all-zero is a valid `stat`.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer for the call.
    check(unsafe { libc::syscall(libc::SYS_fstat, fd, &mut st as *mut libc::stat) })?;
    Ok(st)
}

/// `fcntl(F_GETFL)`.
pub fn access_mode(fd: i32) -> SysResult<i32> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) })
        .map(|f| f as i32 & libc::O_ACCMODE)
}

/// `fcntl(F_GETFL)`: the descriptor's status flags.
pub fn status_flags(fd: i32) -> SysResult<i32> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) }).map(|f| f as i32)
}

/// `lseek(2)`.
pub fn seek(fd: i32, off: i64, whence: i32) -> SysResult {
    // SAFETY: integer arguments only.
    check(unsafe { libc::syscall(libc::SYS_lseek, fd, off, whence) })
}

/// The process's umask, read without changing it (`/proc/self/status`); 022 if unknown.
pub fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// `close(2)`, ignoring errors (the descriptor is gone either way).
pub fn close(fd: i32) {
    // SAFETY: integer argument only.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

/// `gettid(2)`.
pub fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// `getpid(2)`.
pub fn getpid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getpid) as i32 }
}

/// Whether thread `tid` of this process still exists.
pub fn thread_alive(tid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, getpid(), tid, 0) };
    !(r < 0 && errno() == libc::ESRCH)
}

/// A descriptor that proves one is free (`/dev/null`, close-on-exec); `EMFILE` if none is.
pub fn free_descriptor() -> SysResult<i32> {
    // SAFETY: a NUL-terminated path literal.
    check(unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD as usize,
            c"/dev/null".as_ptr() as usize,
            (libc::O_RDONLY | libc::O_CLOEXEC) as usize,
        )
    })
    .map(|fd| fd as i32)
}

/// Moves one of the shim's own descriptors out of the way of the program's: to the lowest free
/// number at or above half the descriptor limit, so the program's `open`, `socket` and
/// `shm_open` get the numbers they would have had without the shim. Keeps `fd` if that fails.
pub fn relocate(fd: i32) -> i32 {
    // SAFETY: all-zero is a valid rlimit; the pointer is valid for the call.
    let mut lim: libc::rlimit = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    if unsafe {
        libc::syscall(
            libc::SYS_getrlimit,
            libc::RLIMIT_NOFILE,
            &mut lim as *mut libc::rlimit,
        )
    } < 0
    {
        return fd;
    }
    let floor = (lim.rlim_cur / 2).min(i32::MAX as u64) as usize;
    if floor as i32 <= fd {
        return fd;
    }
    // SAFETY: integer arguments only.
    match check(unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, floor) }) {
        Ok(high) => {
            close(fd);
            high as i32
        }
        Err(_) => fd,
    }
}

/// A connected `AF_UNIX` stream socket (close-on-exec) to `addr`.
pub fn connect_unix(addr: &libc::sockaddr_un) -> SysResult<i32> {
    // SAFETY: integer arguments only.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_socket,
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        )
    })? as i32;
    loop {
        // SAFETY: `addr` is a valid sockaddr_un for the length passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_connect,
                fd,
                addr as *const libc::sockaddr_un,
                core::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        match check(r) {
            Ok(_) => return Ok(relocate(fd)),
            Err(libc::EINTR) => continue,
            Err(e) => {
                close(fd);
                return Err(e);
            }
        }
    }
}

/// Writes all of `buf` to a socket, without raising SIGPIPE if the other end is gone.
pub fn send_all(fd: i32, mut buf: &[u8]) -> SysResult<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length.
        let r = unsafe {
            libc::syscall(
                libc::SYS_sendto,
                fd,
                buf.as_ptr(),
                buf.len(),
                libc::MSG_NOSIGNAL,
                core::ptr::null::<c_void>(),
                0,
            )
        };
        match check(r) {
            Ok(n) => buf = &buf[n..],
            Err(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits up to `spin_ns` for `fd` to become readable without sleeping (polling), so that an
/// answer arriving soon does not have to wake this thread on another CPU. Async-signal-safe.
pub fn spin_until_readable(fd: i32, spin_ns: u64) {
    if spin_ns == 0 {
        return;
    }
    let start = monotonic_ns();
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd; a zero timeout never sleeps.
        let r = unsafe { libc::syscall(libc::SYS_poll, &mut pfd as *mut libc::pollfd, 1, 0) };
        if r != 0 || monotonic_ns().saturating_sub(start) >= spin_ns {
            return;
        }
        core::hint::spin_loop();
    }
}

/// CLOCK_MONOTONIC in nanoseconds (vDSO; async-signal-safe).
pub fn monotonic_ns() -> u64 {
    // SAFETY: all-zero is a valid timespec.
    let mut t: libc::timespec = unsafe { core::mem::zeroed() };
    // SAFETY: valid out-pointer; clock_gettime is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Fills all of `buf` from a socket; a descriptor passed with the bytes lands in `fd_out`.
///
/// Received descriptors are close-on-exec. End of stream is `EPIPE`.
pub fn recv_exact(fd: i32, buf: &mut [u8], mut fd_out: Option<&mut i32>) -> SysResult<()> {
    let mut got = 0;
    while got < buf.len() {
        let mut control = [0u64; 4];
        let mut iov = libc::iovec {
            iov_base: buf[got..].as_mut_ptr().cast(),
            iov_len: buf.len() - got,
        };
        // SAFETY: all-zero is a valid msghdr.
        let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = core::mem::size_of_val(&control);
        // SAFETY: every pointer in `msg` refers to live locals or to `buf`.
        let r = unsafe {
            libc::syscall(
                libc::SYS_recvmsg,
                fd,
                &mut msg as *mut libc::msghdr,
                libc::MSG_CMSG_CLOEXEC,
            )
        };
        match check(r) {
            Ok(0) => return Err(libc::EPIPE),
            Ok(n) => got += n,
            Err(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        // SAFETY: the kernel filled `control` and set msg_controllen; the CMSG macros walk
        // only within it.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let passed = core::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>());
                    match fd_out.as_deref_mut() {
                        Some(slot) if *slot < 0 => *slot = passed,
                        _ => close(passed),
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
    }
    Ok(())
}

/// Replaces the calling thread's signal mask, returning the old one.
pub fn set_sigmask(mask: &libc::sigset_t) -> libc::sigset_t {
    // SAFETY: all-zero is a valid sigset_t.
    let mut old: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: both pointers are valid; 8 is the kernel's sigset size on x86-64.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            mask as *const libc::sigset_t,
            &mut old as *mut libc::sigset_t,
            8,
        )
    };
    old
}

/// Queues SIGBUS for the calling thread as a bus error at `addr` (as the kernel reports one).
pub fn queue_sigbus(addr: usize) {
    // SAFETY: all-zero is a valid siginfo_t; we then fill the fields the kernel ABI defines:
    // si_signo, si_errno, si_code at offsets 0, 4, 8 and si_addr at 16 on x86-64.
    unsafe {
        let mut info: libc::siginfo_t = core::mem::zeroed();
        let raw = (&mut info as *mut libc::siginfo_t).cast::<u8>();
        raw.cast::<i32>().write(libc::SIGBUS);
        raw.add(8).cast::<i32>().write(libc::BUS_ADRERR);
        raw.add(16).cast::<usize>().write(addr);
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            getpid(),
            gettid(),
            libc::SIGBUS,
            &info as *const libc::siginfo_t,
        );
    }
}
