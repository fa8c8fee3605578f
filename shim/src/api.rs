//! The explicit API of `dsm.h`, for programs written for dsm (as TreadMarks and IVY programs
//! were): named barriers and locks, the node's place in the cluster, a shared allocator, and
//! the node's counters.

use core::ffi::{c_char, c_int, c_ulong, c_void, CStr};

use dsm_proto::client::{NodeCounters, Reply, Request};
use dsm_proto::sync::{name_hash, MutexKind, SyncKey, SyncOp, SyncResult, Wait};

use crate::sync::{self, code};
use crate::sys::{self, Errno};
use crate::{channels, mappings, session};

fn ask(request: &Request<'_>) -> Result<Reply, Errno> {
    session::ensure().map_err(|_| libc::ECONNREFUSED)?;
    channels::call(request, None)
}

fn info() -> Result<(u32, u32), Errno> {
    match ask(&Request::Info)? {
        Reply::Info { node, nodes } => Ok((node.0, nodes)),
        _ => Err(libc::EIO),
    }
}

/// Turns a pthread-style code into the API's `0` / `-1` with `errno`.
fn status(code: c_int) -> c_int {
    if code == 0 {
        0
    } else {
        sys::set_errno(code);
        -1
    }
}

/// `dsm_node_id()`: this node's id, or -1 (errno set) if dsmd cannot be reached.
#[no_mangle]
pub extern "C" fn dsm_node_id() -> c_int {
    match info() {
        Ok((node, _)) => node as c_int,
        Err(e) => status(e),
    }
}

/// `dsm_node_count()`: nodes in the cluster, or -1 (errno set).
#[no_mangle]
pub extern "C" fn dsm_node_count() -> c_int {
    match info() {
        Ok((_, nodes)) => nodes as c_int,
        Err(e) => status(e),
    }
}

/// `dsm_barrier(name, count)`: waits until `count` callers, cluster-wide, reached the barrier
/// `name`; returns 1 in exactly one of them per round, 0 in the others, -1 (errno) on error.
///
/// # Safety
/// `name` must be a C string.
#[no_mangle]
pub unsafe extern "C" fn dsm_barrier(name: *const c_char, count: u32) -> c_int {
    if name.is_null() || count == 0 {
        return status(libc::EINVAL);
    }
    // SAFETY: the caller passes a C string.
    let id = name_hash(unsafe { CStr::from_ptr(name) }.to_bytes());
    match sync::call(SyncKey::Barrier(id), SyncOp::Barrier { count }) {
        Ok(SyncResult::Serial) => 1,
        other => status(code(other)),
    }
}

/// `dsm_lock(id)`: takes cluster-wide lock `id` (FIFO among waiters); 0, or -1 (errno).
#[no_mangle]
pub extern "C" fn dsm_lock(id: c_ulong) -> c_int {
    let op = SyncOp::Lock {
        kind: MutexKind::default(),
        wait: Wait::Block,
        after_timeout: false,
    };
    status(code(sync::call(SyncKey::Lock(id), op)))
}

/// `dsm_unlock(id)`: releases lock `id`; 0, or -1 (errno).
#[no_mangle]
pub extern "C" fn dsm_unlock(id: c_ulong) -> c_int {
    let op = SyncOp::Unlock {
        kind: MutexKind::default(),
    };
    status(sync::post(SyncKey::Lock(id), op))
}

/// `dsm_alloc(segment, size)`: `size` bytes (16-aligned) from the shared heap of the segment
/// mapped at `segment`, the same offset for every caller in the cluster; NULL if the mapped
/// part of the segment is full (ENOMEM) or `segment` is not DSM memory (EINVAL).
#[no_mangle]
pub extern "C" fn dsm_alloc(segment: *mut c_void, size: usize) -> *mut c_void {
    let Some(m) = mappings::lookup(segment as usize) else {
        sys::set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    };
    let limit = mappings::extent(m.segment) as u64;
    let op = SyncOp::Alloc {
        size: size as u64,
        align: 16,
        limit,
    };
    match sync::call(SyncKey::Heap(m.segment), op) {
        Ok(SyncResult::Allocated(offset)) => (m.base + offset as usize) as *mut c_void,
        other => {
            sys::set_errno(code(other));
            core::ptr::null_mut()
        }
    }
}

/// The node's counters, as `struct dsm_counters` in `dsm.h`.
#[repr(C)]
pub struct DsmCounters {
    /// Page faults the node's daemon served.
    pub faults: u64,
    /// Messages the node sent to peers.
    pub messages_sent: u64,
    /// Messages the node received from peers.
    pub messages_received: u64,
    /// Lock, condition, barrier and allocation requests of the node's processes.
    pub sync_requests: u64,
}

/// `dsm_counters(&c)`: fills `c` with the node's running totals; 0, or -1 (errno).
///
/// # Safety
/// `out` must point to a `struct dsm_counters`.
#[no_mangle]
pub unsafe extern "C" fn dsm_counters(out: *mut DsmCounters) -> c_int {
    if out.is_null() {
        return status(libc::EINVAL);
    }
    match ask(&Request::Counters) {
        Ok(Reply::Counters(NodeCounters {
            faults,
            messages_sent,
            messages_received,
            sync_requests,
        })) => {
            // SAFETY: the caller's struct.
            unsafe {
                *out = DsmCounters {
                    faults,
                    messages_sent,
                    messages_received,
                    sync_requests,
                }
            };
            0
        }
        Ok(_) => status(libc::EIO),
        Err(e) => status(e),
    }
}
