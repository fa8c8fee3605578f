//! The SIGSEGV handler: DSM page faults are served by the daemon; every other fault goes where
//! it would have gone without the shim.
//!
//! Installed at the first DSM `mmap`. From then on the program's own `sigaction(SIGSEGV, …)`
//! calls are recorded here instead of replacing our handler, and a fault that is not ours is
//! passed to the handler the program believes it installed — or, if that is `SIG_DFL`, the
//! default disposition is restored and the faulting instruction runs again, so the process dies
//! of SIGSEGV (with its core dump) exactly as it would have.

use core::sync::atomic::{AtomicBool, Ordering};

use dsm_proto::client::{Reply, Request, ShmError};
use dsm_proto::PAGE_SIZE;

use crate::lock::SpinLock;
use crate::mappings::{self, Mapping};
use crate::sys;
use crate::{channels, say};

/// The signals the shim handles itself once DSM memory exists: SIGSEGV (page faults) and SIGSYS
/// (system calls on DSM memory, see [`crate::io`]). For these the program's dispositions are
/// virtual: recorded here, reported back, and used for every signal that is not ours.
const TAKEN: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGSYS];

static INSTALLED: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

/// The actions the program believes are installed, per [`TAKEN`] signal.
static PROGRAM_ACTION: SpinLock<[Option<libc::sigaction>; 2]> = SpinLock::new([None; 2]);

fn slot(sig: libc::c_int) -> Option<usize> {
    TAKEN.iter().position(|&s| s == sig)
}

fn empty_action() -> libc::sigaction {
    // SAFETY: all-zero is a valid sigaction (SIG_DFL, empty mask, no flags).
    unsafe { core::mem::zeroed() }
}

/// Installs the SIGSEGV handler, once, and with it the system-call path ([`crate::io`]).
pub fn install() {
    // SA_SIGINFO: we need the address and the context (write bit).
    // SA_ONSTACK: a program that handles stack overflow on an alternate stack keeps doing so.
    // SA_RESTART: a fault inside a restartable system call's user buffer restarts it.
    // No SA_NODEFER: a fault inside our own handler is a bug and should kill, not recurse.
    // Every signal blocked while we serve a fault: no program handler can run on this thread
    // in the middle of a request to the daemon and re-enter DSM memory.
    if take_over(
        libc::SIGSEGV,
        on_sigsegv,
        libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART,
        true,
    ) {
        crate::io::install();
    }
}

/// Installs `handler` for `sig` (one of [`TAKEN`]), once, remembering the program's action.
/// `block_all`: every signal is blocked while it runs. `true` once installed.
pub fn take_over(
    sig: libc::c_int,
    handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void),
    flags: libc::c_int,
    block_all: bool,
) -> bool {
    let Some(i) = slot(sig) else { return false };
    if INSTALLED[i].load(Ordering::Acquire) {
        return true;
    }
    let mut program = PROGRAM_ACTION.lock();
    if INSTALLED[i].load(Ordering::Acquire) {
        return true;
    }
    let Some(real) = crate::real::sigaction() else {
        say!("cannot find libc's sigaction; DSM memory will not work");
        return false;
    };
    let mut ours = empty_action();
    ours.sa_sigaction = handler as *const () as usize;
    ours.sa_flags = flags;
    if block_all {
        // SAFETY: sa_mask is a valid sigset_t to fill.
        unsafe { libc::sigfillset(&mut ours.sa_mask) };
    }
    let mut previous = empty_action();
    // SAFETY: both pointers are valid for the call.
    if unsafe { real(sig, &ours, &mut previous) } != 0 {
        say!("cannot install the handler of signal {sig}; DSM memory will not work");
        return false;
    }
    program[i] = Some(previous);
    INSTALLED[i].store(true, Ordering::Release);
    true
}

/// `sigaction(sig, act, old)` by the program: for a signal we handle, record, don't install.
/// Returns `None` when the call should go to libc as it is.
pub fn program_sigaction(
    sig: libc::c_int,
    act: Option<libc::sigaction>,
    old: Option<&mut libc::sigaction>,
) -> Option<()> {
    let i = slot(sig)?;
    if !INSTALLED[i].load(Ordering::Acquire) {
        return None;
    }
    let previous = {
        let mut program = PROGRAM_ACTION.lock();
        let previous = program[i].unwrap_or_else(empty_action);
        if let Some(act) = act {
            program[i] = Some(act);
        }
        previous
    };
    if let Some(old) = old {
        *old = previous;
    }
    Some(())
}

/// Whether our handler for `sig` is installed (so its dispositions are virtual).
pub fn installed(sig: libc::c_int) -> bool {
    slot(sig).is_some_and(|i| INSTALLED[i].load(Ordering::Acquire))
}

extern "C" fn on_sigsegv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let saved_errno = sys::errno();
    // SAFETY: the kernel passes a valid siginfo_t and ucontext_t to an SA_SIGINFO handler.
    let (code, addr, write) = unsafe {
        let uc = &*(ctx as *const libc::ucontext_t);
        (
            (*info).si_code,
            (*info).si_addr() as usize,
            // x86-64 page-fault error code, bit 1: the access was a write.
            uc.uc_mcontext.gregs[libc::REG_ERR as usize] & 2 != 0,
        )
    };
    // SEGV_ACCERR: the address is mapped but the access is not permitted (our PROT_NONE).
    const SEGV_ACCERR: libc::c_int = 2;
    if code == SEGV_ACCERR {
        if let Some(mapping) = mappings::lookup(addr) {
            if permitted(mapping.prot, write) {
                serve(&mapping, addr, write);
                sys::set_errno(saved_errno);
                return;
            }
        }
    }
    forward(sig, info, ctx);
    sys::set_errno(saved_errno);
}

/// Whether the program's protection `prot` allows the access (else the fault is the program's).
pub fn permitted(prot: i32, write: bool) -> bool {
    if write {
        prot & libc::PROT_WRITE != 0
    } else {
        prot & (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) != 0
    }
}

/// Asks the daemon for the page and opens it; on failure, queues SIGBUS.
fn serve(mapping: &Mapping, addr: usize, write: bool) {
    if let Err(error) = obtain(mapping, addr, write) {
        say!(
            "{} fault at {addr:#x} (page {} of segment {:#x}) failed: {error}; raising SIGBUS",
            if write { "write" } else { "read" },
            mapping.page_of(addr),
            mapping.segment.0
        );
        sys::queue_sigbus(addr);
    }
}

/// Makes the page holding `addr` accessible to this process for a read or a write, as a fault
/// there would: from the node's state table, or by asking the daemon. `Ok` also when the
/// program unmapped the page meanwhile (the access then is not ours). Async-signal-safe; the
/// caller keeps the program's signal handlers from running on this thread meanwhile.
pub fn obtain(mapping: &Mapping, addr: usize, write: bool) -> Result<(), &'static str> {
    let result = obtain_access(mapping, addr, write);
    if write && result.is_ok() {
        // Counted once the access is had, before the store it is for: a release that reads
        // the count after this is processed by the daemon after the grant (or, granted from
        // the state table, while the node held the page writable), so it covers the store —
        // which lands before the release revokes the page, or faults and counts again. A
        // release that read the count before this does not cover it, and says so.
        crate::fastlock::note_write();
    }
    result
}

fn obtain_access(mapping: &Mapping, addr: usize, write: bool) -> Result<(), &'static str> {
    let page = mapping.page_of(addr);
    let page_addr = addr & !(PAGE_SIZE - 1);
    // The node may hold the page already (another local process faulted it in): no request.
    if crate::revoke::grant_from_table(mapping, page, page_addr, write) {
        return Ok(());
    }
    let request = Request::Fault {
        segment: mapping.segment,
        page,
        write,
    };
    loop {
        match channels::call(&request, None) {
            Ok(Reply::Granted { access, seq }) => {
                match crate::revoke::apply_grant(mapping, page_addr, access, seq) {
                    Ok(true) => return Ok(()),
                    // A revocation overtook this grant: ask again.
                    Ok(false) => continue,
                    // Splitting the mapping needs one more kernel mapping than the process may
                    // have: retrying would fault forever.
                    Err(libc::ENOMEM) => {
                        return Err("the process reached vm.max_map_count (raise it: sysctl -w vm.max_map_count=4194304)");
                    }
                    // The program unmapped it meanwhile: the access faults again and is not ours.
                    Err(_) => return Ok(()),
                }
            }
            Ok(Reply::Failed(e)) => return Err(e.describe()),
            Ok(_) => return Err(ShmError::Internal.describe()),
            Err(libc::ETIMEDOUT) => {
                return Err("dsmd did not answer in time: it is stopped or wedged")
            }
            Err(e) => return Err(crate::errno_name(e)),
        }
    }
}

/// Delivers a SIGSEGV or SIGSYS that is not ours as if the shim were not there.
pub(crate) fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(i) = slot(sig) else { return };
    // The program's action, read without waiting on a lock the interrupted thread might hold.
    let action = {
        let mut copy = None;
        for _ in 0..1000 {
            if let Some(guard) = try_lock_program(i) {
                copy = Some(guard);
                break;
            }
            core::hint::spin_loop();
        }
        copy.unwrap_or_else(empty_action)
    };
    // SAFETY: siginfo is valid (see on_sigsegv).
    let from_kernel = unsafe { (*info).si_code } > 0;
    // A fault the kernel raised happens again when we return; anything else must be sent again.
    let refaults = from_kernel && sig == libc::SIGSEGV;
    // A thread that blocked the signal (as far as it knows: see `crate::sigmask`) dies of a
    // fault the kernel raises, as it would have.
    let blocked = from_kernel && crate::sigmask::program_blocks(sig);
    let handler = action.sa_sigaction;
    if handler == libc::SIG_DFL || (handler == libc::SIG_IGN && from_kernel) || blocked {
        // Restore the default and let the kernel do what it would have done: for a real fault
        // the instruction faults again and the process dies with SIGSEGV; a SIGSEGV sent with
        // kill() is sent again, to arrive once we return.
        if let Some(real) = crate::real::sigaction() {
            let dfl = empty_action();
            // SAFETY: valid pointers; sigaction is async-signal-safe.
            unsafe { real(sig, &dfl, core::ptr::null_mut()) };
        }
        if !refaults {
            // SAFETY: signalling our own thread.
            unsafe { libc::syscall(libc::SYS_tgkill, sys::getpid(), sys::gettid(), sig) };
        }
        return;
    }
    if handler == libc::SIG_IGN {
        return;
    }
    if action.sa_flags & libc::SA_RESETHAND != 0 {
        if let Some(mut program) = PROGRAM_ACTION.try_lock() {
            program[i] = Some(empty_action());
        }
    }
    // Run the program's handler with the mask it asked for, as the kernel would have: the mask
    // at the fault, plus sa_mask, plus SIGSEGV itself unless SA_NODEFER. If the handler
    // longjmps out, this is the mask it leaves behind, as without the shim.
    // SAFETY: ctx is a valid ucontext_t; the sigset functions get valid pointers.
    unsafe {
        let uc = &*(ctx as *const libc::ucontext_t);
        let mut mask = uc.uc_sigmask;
        for s in 1..65 {
            if libc::sigismember(&action.sa_mask, s) == 1 {
                libc::sigaddset(&mut mask, s);
            }
        }
        if action.sa_flags & libc::SA_NODEFER == 0 {
            libc::sigaddset(&mut mask, sig);
        }
        // SIGSYS stays deliverable: a system call on DSM memory inside the handler needs it.
        libc::sigdelset(&mut mask, libc::SIGSYS);
        sys::set_sigmask(&mask);
        if action.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                core::mem::transmute(handler);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = core::mem::transmute(handler);
            f(sig);
        }
    }
}

fn try_lock_program(i: usize) -> Option<libc::sigaction> {
    PROGRAM_ACTION
        .try_lock()
        .map(|g| g[i].unwrap_or_else(empty_action))
}

/// Taken before `fork`.
pub fn lock_for_fork() {
    PROGRAM_ACTION.raw_lock();
}

/// Released after `fork`, in parent and child.
pub fn unlock_after_fork() {
    // SAFETY: taken by `lock_for_fork` in this thread; no guard is alive.
    unsafe { PROGRAM_ACTION.force_unlock() };
}
