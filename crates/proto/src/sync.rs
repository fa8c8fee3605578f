//! The cluster-wide lock, condition, barrier and allocation service: what a process asks of its
//! daemon for a synchronization object, and what daemons tell each other about it.
//!
//! Every object has a home node that keeps its queue ([`SyncKey::home`]); a request travels
//! from the process to its daemon, from there to the home, and the answer back the same way.
//! Nobody spins over the network and no page moves while a waiter waits.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{NodeId, SegmentId};

/// A synchronization object, cluster-wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SyncKey {
    /// A pthread object at `offset` in a segment (a mutex, condition, barrier or rwlock).
    Object {
        /// The segment.
        segment: SegmentId,
        /// Byte offset of the object in the segment.
        offset: u64,
    },
    /// `dsm_lock(id)`.
    Lock(u64),
    /// `dsm_barrier(name, …)`, by a hash of the name.
    Barrier(u64),
    /// The `dsm_alloc` heap of a segment.
    Heap(SegmentId),
}

impl SyncKey {
    /// The node that keeps the object's state: a segment's objects live with the segment's
    /// creator (so a condition and its mutex share a home); named ones are spread by id.
    pub fn home(self, members: &[NodeId]) -> NodeId {
        let by_segment = |s: SegmentId| {
            if members.contains(&s.creator()) {
                s.creator()
            } else {
                members[(s.0 % members.len() as u64) as usize]
            }
        };
        match self {
            SyncKey::Object { segment, .. } | SyncKey::Heap(segment) => by_segment(segment),
            SyncKey::Lock(id) | SyncKey::Barrier(id) => {
                members[(id % members.len() as u64) as usize]
            }
        }
    }
}

impl SyncKey {
    /// The object's home once the founders in `deposed` have died: its first home
    /// ([`SyncKey::home`]) while that lives, else the next founder after it that lives (so every
    /// object of a dead home moves to one node, [`next_home`]).
    pub fn home_among(self, members: &[NodeId], deposed: &BTreeSet<NodeId>) -> NodeId {
        let first = self.home(members);
        if deposed.contains(&first) {
            next_home(members, deposed, first).unwrap_or(first)
        } else {
            first
        }
    }

    /// The segment the object lives in, if it is one of a segment's.
    pub fn segment(self) -> Option<SegmentId> {
        match self {
            SyncKey::Object { segment, .. } | SyncKey::Heap(segment) => Some(segment),
            SyncKey::Lock(_) | SyncKey::Barrier(_) => None,
        }
    }
}

/// Who holds or waits: a thread of a process attached to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// The process's node.
    pub node: NodeId,
    /// The process's session on that node.
    pub session: u64,
    /// The thread.
    pub tid: u32,
}

/// One request under way: whom to answer, and under which number at its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Waiter {
    /// The requesting thread.
    pub owner: Owner,
    /// Unique at `owner.node` while the request is under way.
    pub ticket: u64,
}

/// A mutex's type, as `pthread_mutexattr_settype` set it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MutexKind {
    /// `PTHREAD_MUTEX_RECURSIVE`.
    pub recursive: bool,
    /// `PTHREAD_MUTEX_ERRORCHECK`.
    pub errorcheck: bool,
    /// `PTHREAD_MUTEX_ROBUST`.
    pub robust: bool,
}

/// How long a locking request may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Wait {
    /// Until granted.
    Block,
    /// Not at all (`trylock`): [`SyncResult::Busy`] if taken.
    Try,
    /// At most this many milliseconds, then [`SyncResult::TimedOut`].
    Ms(u32),
}

/// What is asked of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SyncOp {
    /// Lock a mutex.
    Lock {
        /// Its type.
        kind: MutexKind,
        /// How long to wait.
        wait: Wait,
        /// Re-locking after a timed condition wait that timed out: answer `TimedOut` once held.
        after_timeout: bool,
    },
    /// Unlock a mutex.
    Unlock {
        /// Its type.
        kind: MutexKind,
    },
    /// `pthread_mutex_consistent`: the holder repaired what a dead holder left.
    Consistent,
    /// Release `mutex` and wait on this condition; answered once the mutex is held again.
    CondWait {
        /// The mutex to release and take back.
        mutex: SyncKey,
        /// The mutex's type.
        kind: MutexKind,
        /// How long to wait for a signal (the mutex is taken back either way).
        wait: Wait,
    },
    /// Wake the first waiter of a condition. Not answered.
    Signal,
    /// Wake every waiter of a condition. Not answered.
    Broadcast,
    /// Arrive at a barrier of `count` and wait for the rest.
    Barrier {
        /// Threads per round.
        count: u32,
    },
    /// Take a read lock.
    ReadLock {
        /// How long to wait.
        wait: Wait,
    },
    /// Take the write lock.
    WriteLock {
        /// How long to wait.
        wait: Wait,
    },
    /// Release a read or the write lock.
    RwUnlock,
    /// The object was (re)initialized: forget what is known of it. Not answered.
    Reset,
    /// The requester's thread went away before it saw what it was granted: give it back as
    /// it was (a robust mutex stays as consistent as it was). Sent by daemons, not processes.
    Abandon,
    /// `sem_wait`: take one from a semaphore (created with value `initial` if the home knows it
    /// not yet: the value `sem_init` wrote, which stays in the object's bytes).
    SemWait {
        /// The value `sem_init` gave it.
        initial: u32,
        /// How long to wait.
        wait: Wait,
    },
    /// `sem_post`: add one, or wake the first waiter. Not answered.
    SemPost {
        /// The value `sem_init` gave it.
        initial: u32,
    },
    /// `sem_getvalue`.
    SemValue {
        /// The value `sem_init` gave it.
        initial: u32,
    },
    /// Allocate `size` bytes aligned to `align` in a heap of `limit` bytes.
    Alloc {
        /// Bytes.
        size: u64,
        /// Alignment, a power of two.
        align: u64,
        /// The segment's size.
        limit: u64,
    },
    /// A signal handler interrupted the thread's `sem_wait`: if its wait on the object is
    /// still queued, it ends with [`SyncResult::Interrupted`] (`EINTR`, as glibc's); if it was
    /// granted meanwhile, that answer stands. Not answered itself; sent on the channel that is
    /// waiting, which the daemon reads for this alone while a request is under way.
    Withdraw,
}

impl SyncOp {
    /// Whether the op is a release point: what its thread wrote before it must be on the
    /// replica nodes before it takes effect (and, with replication on, before it returns).
    pub fn is_release(self) -> bool {
        matches!(
            self,
            SyncOp::Unlock { .. }
                | SyncOp::CondWait { .. }
                | SyncOp::Signal
                | SyncOp::Broadcast
                | SyncOp::Barrier { .. }
                | SyncOp::RwUnlock
                | SyncOp::SemPost { .. }
        )
    }

    /// Whether the requester waits for an answer (without replication: see
    /// [`SyncOp::is_release`]).
    pub fn answered(self) -> bool {
        match self {
            SyncOp::Signal
            | SyncOp::Broadcast
            | SyncOp::Reset
            | SyncOp::Abandon
            | SyncOp::Withdraw
            | SyncOp::RwUnlock
            | SyncOp::SemPost { .. } => false,
            // Unlocks that can fail (EPERM: not the holder's) are answered, as glibc checks
            // the owner of these three kinds.
            SyncOp::Unlock { kind } => kind.errorcheck || kind.robust || kind.recursive,
            _ => true,
        }
    }
}

/// The answer to a [`SyncOp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SyncResult {
    /// Done (lock held, barrier passed, unlocked, …).
    Ok,
    /// Barrier passed, and this thread is the round's serial thread.
    Serial,
    /// `trylock` found it taken (`EBUSY`).
    Busy,
    /// The wait timed out (`ETIMEDOUT`).
    TimedOut,
    /// Held now, but the previous holder died holding it (`EOWNERDEAD`).
    OwnerDead,
    /// A robust mutex unlocked inconsistent: unusable (`ENOTRECOVERABLE`).
    NotRecoverable,
    /// Relocking an error-checking mutex (`EDEADLK`).
    Deadlock,
    /// Unlocking what the thread does not hold (`EPERM`).
    NotOwner,
    /// The request makes no sense for this object (`EINVAL`).
    Invalid,
    /// The object's home node is down: its state is lost.
    HomeLost,
    /// A semaphore's value.
    Value(u32),
    /// An allocation, at this offset in the segment.
    Allocated(u64),
    /// The heap has no room (`dsm_alloc` returns NULL).
    NoSpace,
    /// The wait was withdrawn after a signal interrupted it (`EINTR`).
    Interrupted,
}

/// Lock-service traffic between daemons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMsg {
    /// To the object's home: do `op` on behalf of `waiter`.
    Op {
        /// The object.
        key: SyncKey,
        /// What.
        op: SyncOp,
        /// On whose behalf.
        waiter: Waiter,
    },
    /// To the waiter's node: the request numbered `ticket` is done.
    Done {
        /// The request.
        ticket: u64,
        /// Its outcome.
        result: SyncResult,
    },
    /// To every node: a process of the sender ended; what it held is released (robust mutexes
    /// pass to the next locker with `OwnerDead`) and its waits are dropped.
    ProcessGone {
        /// Its session on the sender.
        session: u64,
    },
    /// From an object's home to the node that would be its home if this one died: what to
    /// rebuild it from (`None`: the object is no longer kept).
    Mirror {
        /// The object.
        key: SyncKey,
        /// Its state.
        state: Option<Mirror>,
    },
    /// From each survivor to the new home of a dead node's objects, once the death is agreed:
    /// what its threads hold of those objects and its semaphore traffic. The new home serves
    /// them once every survivor's claims are in; the survivor's waits follow as [`SyncMsg::Op`]s.
    Claims {
        /// The dead home.
        dead: NodeId,
        /// What the sender's threads hold.
        holds: Vec<(SyncKey, Owner, Hold)>,
        /// The sender's traffic on semaphores.
        tallies: Vec<(SyncKey, Tally)>,
        /// Per `dsm_alloc` heap, the end of the highest allocation the sender was answered.
        heaps: Vec<(SyncKey, u64)>,
    },
}

/// The founder after `of` in `members` (cyclically) that is not in `deposed`: where the objects
/// homed at `of` go when it dies, and so where its home keeps their [`Mirror`]s.
pub fn next_home(members: &[NodeId], deposed: &BTreeSet<NodeId>, of: NodeId) -> Option<NodeId> {
    let at = members.iter().position(|&m| m == of)?;
    (1..members.len())
        .map(|i| members[(at + i) % members.len()])
        .find(|m| !deposed.contains(m))
}

/// What one thread holds of an object, as its node tells the object's new home when the old
/// one died ([`SyncMsg::Claims`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hold {
    /// A mutex, locked `count` times (more than once only if recursive).
    Mutex {
        /// Its type.
        kind: MutexKind,
        /// Locks held.
        count: u32,
    },
    /// A rwlock's read lock, taken `count` times.
    Read(u32),
    /// A rwlock's write lock.
    Write,
}

/// One node's traffic on a semaphore: what a new home needs to work out its value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// The value `sem_init` gave it.
    pub initial: u32,
    /// Posts the node's threads made (sent, at the node; applied, at the home).
    pub posts: u64,
    /// Waits granted to the node's threads (answered, at the node; decided, at the home).
    pub grants: u64,
}

/// What an object's home keeps at the node that would become its home ([`next_home`]): the
/// part of its state no survivor could tell — holders on the home's own node, flags, a
/// semaphore's value, a heap's top. Sent when that part changes, not awaited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mirror {
    /// A mutex.
    Mutex {
        /// Its holder, if a thread on the home's node, with its lock count.
        holder: Option<(Owner, u32)>,
        /// The holder's type.
        kind: MutexKind,
        /// A robust holder died.
        inconsistent: bool,
        /// Beyond repair.
        unrecoverable: bool,
    },
    /// A rwlock's holders on the home's node.
    Rw {
        /// The writer.
        writer: Option<Owner>,
        /// The readers, with their counts.
        readers: Vec<(Owner, u32)>,
        /// Its writer died with its host.
        unrecoverable: bool,
    },
    /// A semaphore.
    Sem {
        /// Its value.
        value: u32,
        /// Each node's posts and grants so far, as the home applied them.
        tally: Vec<(NodeId, Tally)>,
    },
    /// A `dsm_alloc` heap's next free offset.
    Heap(u64),
}

/// FNV-1a of a name: the id of a named barrier (the same on every node).
pub fn name_hash(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
