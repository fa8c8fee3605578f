//! System calls whose user buffer is DSM memory ("kernel access" in docs/architecture.md).
//!
//! The kernel never raises SIGSEGV for a system call's user buffer: a buffer on a DSM page this
//! process may not touch yet makes the call fail with EFAULT. And glibc reaches the kernel by
//! paths no interposed symbol sees (stdio's `fwrite`/`fread` of a large block, `printf` of a
//! long string, the `__*_chk` variants). So the shim catches the calls at the kernel boundary:
//!
//! - A seccomp filter, installed with the SIGSEGV handler for every thread of the process,
//!   traps `read`, `write`, `pread64`, `pwrite64`, `recvfrom`, `sendto` and `getrandom` whose
//!   buffer argument lies in the DSM address window ([`dsm_proto::WINDOW_START`]`..`
//!   [`dsm_proto::WINDOW_END`]): the kernel skips the call and raises SIGSYS. Every other call,
//!   and these with any other buffer, run as before after a few BPF instructions.
//! - The SIGSYS handler runs the call on a private bounce buffer: for output it copies the DSM
//!   bytes into the bounce first, for input it copies what the kernel wrote out into DSM memory
//!   afterwards. The copies are the kernel's own (`process_vm_readv`/`process_vm_writev` on this
//!   process), which respect page protections and fail instead of faulting; a page that is not
//!   accessible yet is obtained as a fault would obtain it, and the copy resumes. So no page is
//!   held while a call blocks (a `recv` that waits for minutes stalls nobody), a revocation
//!   racing with the copy only makes it obtain the page again, and memory that is not there
//!   gives EFAULT as it would have.
//! - The vectored calls (`readv`, `writev`, `preadv*`, `pwritev*`, `recvmsg`, `sendmsg`,
//!   `recvmmsg`, `sendmmsg`) keep their buffers behind a pointer BPF cannot follow: they are
//!   interposed as functions ([`crate::hooks`]) and take the same path when a buffer is DSM.
//!
//! Bounce buffers are at most [`CHUNK`] bytes: longer output is sent chunk by chunk (stopping at
//! a short count, as a blocking call would), longer input is a short read.

use core::mem::MaybeUninit;

use crate::lock::SpinLock;

use crate::{fault, mappings, say, sys};

/// Largest bounce buffer: bounds the memory one call takes.
pub const CHUNK: usize = 16 << 20;
/// Bounces up to this size live on the stack.
const SMALL: usize = 4096;
/// `si_errno` of our SIGSYS (SECCOMP_RET_DATA), telling it from a filter of the program's.
const MAGIC: u32 = 0xd5a;
/// `si_code` of a seccomp SIGSYS.
const SYS_SECCOMP: i32 = 1;
/// Times in a row a copy may find the same page gone again before the call fails (EFAULT).
const MAX_STALLS: u32 = 1000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// The trapped calls and the argument holding their buffer.
const TRAPPED: [(i64, u32); 7] = [
    (libc::SYS_read, 1),
    (libc::SYS_write, 1),
    (libc::SYS_pread64, 1),
    (libc::SYS_pwrite64, 1),
    (libc::SYS_recvfrom, 1),
    (libc::SYS_sendto, 1),
    (libc::SYS_getrandom, 0),
];

/// Whether `addr` lies in the DSM window (one shift: the window is [2^45, 2^46)).
pub fn in_window(addr: usize) -> bool {
    addr >> 45 == 1
}

const _: () = assert!(dsm_proto::WINDOW_START == 1 << 45 && dsm_proto::WINDOW_END == 1 << 46);

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The filter: per trapped call a block of six instructions that traps when the buffer's high
/// word lies in the window, allows otherwise.
fn filter() -> [libc::sock_filter; 6 + 6 * TRAPPED.len()] {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let load = BPF_LD | BPF_W | BPF_ABS;
    let allow = stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW);
    let mut f = [allow; 6 + 6 * TRAPPED.len()];
    // seccomp_data: nr at 0, arch at 4, args at 16 + 8 i (little-endian: high word at +4).
    f[0] = stmt(load, 4);
    f[1] = jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
    f[2] = allow;
    f[3] = stmt(load, 0);
    // x32 system calls (bit 30) are not ours.
    f[4] = jump(
        BPF_JMP | BPF_JGE | BPF_K,
        0x4000_0000,
        6 * TRAPPED.len() as u8,
        0,
    );
    for (i, &(nr, arg)) in TRAPPED.iter().enumerate() {
        let b = 5 + 6 * i;
        f[b] = jump(BPF_JMP | BPF_JEQ | BPF_K, nr as u32, 0, 5);
        f[b + 1] = stmt(load, 16 + 8 * arg + 4);
        f[b + 2] = jump(
            BPF_JMP | BPF_JGE | BPF_K,
            (dsm_proto::WINDOW_START >> 32) as u32,
            0,
            2,
        );
        f[b + 3] = jump(
            BPF_JMP | BPF_JGE | BPF_K,
            (dsm_proto::WINDOW_END >> 32) as u32,
            1,
            0,
        );
        f[b + 4] = stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_TRAP | MAGIC);
        f[b + 5] = allow;
    }
    // The last instruction (after the blocks) is `allow`, from the fill.
    f
}

/// Installs the SIGSYS handler and the filter, once (from [`fault::install`]).
pub fn install() {
    // SA_SIGINFO: the call's number and arguments. SA_NODEFER: a program handler that runs
    // while we wait in a call (our mask blocks nothing) may itself write from DSM memory.
    // No SA_ONSTACK: the bounce may be on the stack, and the call may take long.
    if !fault::take_over(
        libc::SIGSYS,
        on_sigsys,
        libc::SA_SIGINFO | libc::SA_NODEFER,
        false,
    ) {
        return;
    }
    let prog = filter();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    let install = || {
        // SAFETY: `fprog` points to a valid filter for the duration of the call.
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as usize,
                libc::SECCOMP_FILTER_FLAG_TSYNC as usize,
                &fprog as *const libc::sock_fprog as usize,
            )
        }
    };
    let mut r = install();
    if r == -1 && sys::errno() == libc::EACCES {
        // Without CAP_SYS_ADMIN a filter needs no_new_privs (see docs/operations.md).
        // SAFETY: integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1usize, 0usize, 0usize, 0usize) };
        r = install();
    }
    if r != 0 {
        let (why, errno) = if r > 0 {
            ("a thread has a seccomp filter of its own", 0)
        } else {
            (crate::errno_name(sys::errno()), sys::errno())
        };
        say!(
            "cannot trap system calls on DSM memory ({why}, errno {errno}): read, write, send \
             and recv with a buffer in a DSM segment will fail with EFAULT"
        );
    }
}

extern "C" fn on_sigsys(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let saved_errno = sys::errno();
    // SAFETY: the kernel passes a valid siginfo_t; for SIGSYS the union holds the call address
    // (offset 16), the call's number (24) and its architecture (28).
    let (code, data, nr) = unsafe {
        let raw = info.cast::<u8>();
        (
            (*info).si_code,
            (*info).si_errno as u32,
            raw.add(24).cast::<i32>().read(),
        )
    };
    if code != SYS_SECCOMP || data != MAGIC {
        fault::forward(sig, info, ctx);
        sys::set_errno(saved_errno);
        return;
    }
    // SAFETY: an SA_SIGINFO handler gets a valid ucontext_t; the result goes where the kernel
    // would have put it (rax), and the program resumes after the system call.
    unsafe {
        let uc = &mut *(ctx as *mut libc::ucontext_t);
        let g = &mut uc.uc_mcontext.gregs;
        let a = [
            g[libc::REG_RDI as usize] as usize,
            g[libc::REG_RSI as usize] as usize,
            g[libc::REG_RDX as usize] as usize,
            g[libc::REG_R10 as usize] as usize,
            g[libc::REG_R8 as usize] as usize,
            g[libc::REG_R9 as usize] as usize,
        ];
        g[libc::REG_RAX as usize] = emulate(nr as i64, a) as i64;
    }
    sys::set_errno(saved_errno);
}

/// A raw system call: the result, or `-errno`.
fn raw(nr: i64, a: [usize; 6]) -> isize {
    // SAFETY: the callers pass the program's own arguments with the buffer replaced by a
    // private bounce buffer of the length passed.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r == -1 {
        -(sys::errno() as isize)
    } else {
        r as isize
    }
}

fn emulate(nr: i64, a: [usize; 6]) -> isize {
    let one = |addr: usize, len: usize| {
        [libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        }]
    };
    let fd = a[0];
    match nr {
        libc::SYS_read => input(&one(a[1], a[2]), |b, n| raw(nr, [fd, b, n, 0, 0, 0])),
        libc::SYS_pread64 => input(&one(a[1], a[2]), |b, n| raw(nr, [fd, b, n, a[3], 0, 0])),
        libc::SYS_recvfrom => input(&one(a[1], a[2]), |b, n| {
            raw(nr, [fd, b, n, a[3], a[4], a[5]])
        }),
        libc::SYS_getrandom => input(&one(a[0], a[1]), |b, n| raw(nr, [b, n, a[2], 0, 0, 0])),
        libc::SYS_write => output(&one(a[1], a[2]), |b, n, _| raw(nr, [fd, b, n, 0, 0, 0])),
        libc::SYS_pwrite64 => output(&one(a[1], a[2]), |b, n, done| {
            raw(nr, [fd, b, n, a[3] + done, 0, 0])
        }),
        libc::SYS_sendto => output(&one(a[1], a[2]), |b, n, _| {
            raw(nr, [fd, b, n, a[3], a[4], a[5]])
        }),
        _ => -(libc::ENOSYS as isize),
    }
}

/// Bounce buffers kept for the next call (address, length): a fresh mapping costs its page
/// faults, more than the copy itself. Only ever `try_lock`ed: a thread that finds it busy (another
/// thread, or a handler interrupting its own thread) maps a fresh buffer instead of waiting.
static SPARE: SpinLock<[(usize, usize); SPARES]> = SpinLock::new([(0, 0); SPARES]);
/// How many bounce buffers are kept, and the largest kept (memory held: at most 16 MiB).
const SPARES: usize = 4;
const SPARE_MAX: usize = 4 << 20;

/// Runs `f` on a private buffer of `len` bytes; `-errno` if there is no memory for it.
fn with_bounce(len: usize, f: impl FnOnce(usize) -> isize) -> isize {
    if len <= SMALL {
        let mut buf = MaybeUninit::<[u8; SMALL]>::uninit();
        return f(buf.as_mut_ptr() as usize);
    }
    let (addr, size) = match take_spare(len) {
        Some(found) => found,
        None => {
            let size = len.next_multiple_of(SMALL);
            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
            let prot = libc::PROT_READ | libc::PROT_WRITE;
            // SAFETY: a fresh anonymous mapping; nothing is replaced.
            match unsafe { sys::mmap(0, size, prot, flags, -1, 0) } {
                Ok(a) => (a, size),
                Err(e) => return -(e as isize),
            }
        }
    };
    let r = f(addr);
    put_spare(addr, size);
    r
}

fn take_spare(len: usize) -> Option<(usize, usize)> {
    let mut spare = SPARE.try_lock()?;
    let slot = spare.iter_mut().find(|(a, s)| *a != 0 && *s >= len)?;
    Some(core::mem::take(slot))
}

fn put_spare(addr: usize, size: usize) {
    if size <= SPARE_MAX {
        if let Some(mut spare) = SPARE.try_lock() {
            if let Some(slot) = spare.iter_mut().find(|(a, _)| *a == 0) {
                *slot = (addr, size);
                return;
            }
        }
    }
    // SAFETY: our own mapping, no longer used.
    let _ = unsafe { sys::munmap(addr, size) };
}

/// Sum of the lengths.
fn total(iov: &[libc::iovec]) -> usize {
    iov.iter().fold(0usize, |t, v| t.saturating_add(v.iov_len))
}

/// Output from the program's buffers `iov`: gathers up to [`CHUNK`] bytes into a bounce and
/// calls `call(bounce, len, bytes_done_before)`, again until all is sent or a call is short.
/// Returns the bytes sent, or `-errno` if none were.
pub fn output(iov: &[libc::iovec], mut call: impl FnMut(usize, usize, usize) -> isize) -> isize {
    let all = total(iov);
    if all == 0 {
        let mut none = 0u8;
        return call(&mut none as *mut u8 as usize, 0, 0);
    }
    let mut done = 0usize;
    while done < all {
        let n = (all - done).min(CHUNK);
        let r = with_bounce(n, |b| {
            let got = gather(iov, done, b, n);
            if got == 0 {
                return -(libc::EFAULT as isize);
            }
            call(b, got, done)
        });
        if r < 0 {
            return if done > 0 { done as isize } else { r };
        }
        done += r as usize;
        if (r as usize) < n {
            break;
        }
    }
    done as isize
}

/// Input into the program's buffers `iov`: `call(bounce, len)` fills a bounce of up to
/// [`CHUNK`] bytes, which is then scattered into `iov`. Returns what the call returned (or the
/// bytes placed, if not all of them could be, or `-EFAULT` if none).
pub fn input(iov: &[libc::iovec], call: impl FnOnce(usize, usize) -> isize) -> isize {
    let n = total(iov).min(CHUNK);
    with_bounce(n, |b| {
        let r = call(b, n);
        if r <= 0 {
            return r;
        }
        let want = (r as usize).min(n);
        match scatter(b, want, iov) {
            put if put == want => r,
            0 => -(libc::EFAULT as isize),
            put => put as isize,
        }
    })
}

/// Copies `n` bytes of the program's `iov`, from byte `skip` on, to `dst`; returns how many.
fn gather(iov: &[libc::iovec], mut skip: usize, dst: usize, n: usize) -> usize {
    let mut done = 0;
    for v in iov {
        if done == n {
            break;
        }
        if skip >= v.iov_len {
            skip -= v.iov_len;
            continue;
        }
        let len = (v.iov_len - skip).min(n - done);
        let got = copy(dst + done, v.iov_base as usize + skip, len, false);
        done += got;
        skip = 0;
        if got < len {
            break;
        }
    }
    done
}

/// Copies `n` bytes from `src` into the program's `iov`; returns how many.
fn scatter(src: usize, n: usize, iov: &[libc::iovec]) -> usize {
    let mut done = 0;
    for v in iov {
        if done == n {
            break;
        }
        let len = v.iov_len.min(n - done);
        let put = copy(src + done, v.iov_base as usize, len, true);
        done += put;
        if put < len {
            break;
        }
    }
    done
}

/// Copies `n` bytes between our private `local` and the program's `remote` (into `remote` if
/// `into_remote`) with the kernel's copy, obtaining DSM pages as needed. Returns the bytes
/// copied: fewer if `remote` runs into memory the program may not access that way.
pub fn copy(local: usize, remote: usize, n: usize, into_remote: bool) -> usize {
    let pid = sys::getpid();
    let nr = if into_remote {
        libc::SYS_process_vm_writev
    } else {
        libc::SYS_process_vm_readv
    };
    let mut done = 0;
    let mut stalls = 0;
    while done < n {
        let l = libc::iovec {
            iov_base: (local + done) as *mut libc::c_void,
            iov_len: n - done,
        };
        let r = libc::iovec {
            iov_base: (remote + done) as *mut libc::c_void,
            iov_len: n - done,
        };
        // SAFETY: both iovecs describe memory of this process; the kernel checks `remote`
        // against its mappings and protections and fails rather than fault.
        let got = unsafe {
            libc::syscall(
                nr,
                pid as usize,
                &l as *const libc::iovec as usize,
                1usize,
                &r as *const libc::iovec as usize,
                1usize,
                0usize,
            )
        };
        if got > 0 {
            done += got as usize;
            stalls = 0;
            continue;
        }
        if stalls == MAX_STALLS || !make_accessible(remote + done, into_remote) {
            break;
        }
        stalls += 1;
    }
    done
}

/// Obtains the DSM page holding `addr` for a read or write, as a fault would; `false` if it is
/// not DSM memory, the program's protection forbids the access, or the page cannot be had.
fn make_accessible(addr: usize, write: bool) -> bool {
    let Some(mapping) = mappings::lookup(addr) else {
        return false;
    };
    if !fault::permitted(mapping.prot, write) {
        return false;
    }
    // As in the fault handler: no program handler runs on this thread mid-request.
    // SAFETY: all-ones is a valid full signal set.
    let all: libc::sigset_t = unsafe {
        let mut set = core::mem::zeroed();
        libc::sigfillset(&mut set);
        set
    };
    let old = sys::set_sigmask(&all);
    let result = fault::obtain(&mapping, addr, write);
    sys::set_sigmask(&old);
    match result {
        Ok(()) => true,
        Err(error) => {
            say!(
                "a system call's buffer at {addr:#x} (segment {:#x}) could not be had: {error}; \
                 the call fails with EFAULT",
                mapping.segment.0
            );
            false
        }
    }
}

/// Whether any buffer of `iov` is DSM memory (so the vectored call takes the bounce path).
///
/// # Safety
/// `iov` points to `cnt` valid iovecs when `cnt` is positive.
pub unsafe fn touches_dsm(iov: *const libc::iovec, cnt: libc::c_int) -> bool {
    if mappings::is_empty() || iov.is_null() || !(1..=libc::UIO_MAXIOV).contains(&cnt) {
        return false;
    }
    // SAFETY: per the contract.
    let iov = unsafe { core::slice::from_raw_parts(iov, cnt as usize) };
    iov.iter().any(|v| in_window(v.iov_base as usize))
}
