//! The process's session with its node's daemon: one connection that lives as long as the
//! process, whose closing tells the daemon the process is gone and what it mapped is released.

use core::sync::atomic::{AtomicU64, Ordering};

use dsm_proto::hello::Role;
use dsm_proto::SessionId;

use crate::lock::SpinLock;
use crate::sys::{self, SysResult};
use crate::wire;

static ID: AtomicU64 = AtomicU64::new(0);
static FD: SpinLock<i32> = SpinLock::new(-1);

/// The session id, if the process has attached. Async-signal-safe.
pub fn id() -> Option<SessionId> {
    match ID.load(Ordering::Acquire) {
        0 => None,
        id => Some(SessionId(id)),
    }
}

/// Whether this process said it cannot reach the daemon.
static SAID_UNREACHABLE: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// Attaches to the daemon unless already attached.
pub fn ensure() -> SysResult<SessionId> {
    if let Some(id) = id() {
        return Ok(id);
    }
    let mut fd = FD.lock();
    if let Some(id) = id() {
        return Ok(id);
    }
    let (new_fd, _, session) = wire::connect(Role::Session {
        pid: sys::getpid() as u32,
    })
    .inspect_err(|&e| {
        // Once per process: every later call fails the same way, with its errno.
        if !SAID_UNREACHABLE.swap(true, Ordering::Relaxed) {
            let config = crate::config::get();
            crate::say!(
                "cannot reach dsmd at {} ({}); is dsmd running? Set DSM_SOCKET to its --socket path \
                 (calls on shared memory fail until it answers)",
                config.socket,
                crate::errno_name(e)
            );
        }
    })?;
    *fd = new_fd;
    ID.store(session.0, Ordering::Release);
    crate::revoke::start_listener(new_fd);
    Ok(session)
}

/// Taken before `fork` so the child does not inherit it locked mid-update.
pub fn lock_for_fork() {
    FD.raw_lock();
}

/// Released in the parent after `fork`.
pub fn unlock_after_fork() {
    // SAFETY: taken by `lock_for_fork` in this thread; no guard is alive.
    unsafe { FD.force_unlock() };
}

/// In a forked child: the inherited session is the parent's (and its listener thread did not
/// survive the fork); forget it. The next `ensure` attaches the child on its own.
pub fn reset_after_fork() {
    // SAFETY: the child runs only this thread, which took the lock in `lock_for_fork`.
    unsafe { FD.force_unlock() };
    let mut fd = FD.lock();
    if *fd >= 0 {
        sys::close(*fd);
    }
    *fd = -1;
    ID.store(0, Ordering::Release);
}
