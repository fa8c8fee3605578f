//! SysV shared memory (`shmget`, `shmat`, `shmdt`, `shmctl`) as DSM segments.
//!
//! A key names one segment cluster-wide, `sysv:0xKKKKKKKK` in the directory (so `DSM_SHM`
//! filters it like any name); `IPC_PRIVATE` makes a segment under a random name no other
//! `shmget` can find. The shmid *is* the segment's id (node and serial, with bit 30 set to tell
//! it from the kernel's ids), so a shmid handed to another process, on any node, attaches the
//! same segment. `shmat` maps it at its cluster-wide address (a second attach in one process
//! gets an alias, as the kernel gives a second address); `IPC_RMID` removes the name, and the
//! memory goes once nothing holds it, as for an unlinked POSIX segment.
//!
//! Known differences: `IPC_STAT` reports this process's attaches as `shm_nattch`, the calling
//! user as owner and creator, and no times; `IPC_SET` is accepted and changes nothing
//! (permissions are not enforced yet); a process that called `shmget` holds the segment until it
//! exits (`close` of a POSIX segment is not seen either).

use dsm_proto::client::{OpenFlags, Reply, Request};
use dsm_proto::{NodeId, SegmentId, PAGE_SIZE};

use crate::lock::SpinLock;
use crate::ops::{errno_of, map_segment, request};
use crate::sys::{self, Errno};
use crate::{config, segments};

/// Bit 30 marks a shmid as ours.
const OURS: i32 = 0x4000_0000;
const NODE_BITS: u32 = 7;
const SERIAL_BITS: u32 = 23;

/// A live `shmat`: address, length, shmid.
static ATTACHED: SpinLock<Vec<(usize, usize, i32)>> = SpinLock::new(Vec::new());
/// Keys and modes of the shmids this process got from `shmget`, for `IPC_STAT`.
static KNOWN: SpinLock<Vec<(i32, libc::key_t, u32)>> = SpinLock::new(Vec::new());

fn shmid_of(segment: SegmentId) -> Result<i32, Errno> {
    let node = segment.0 >> SegmentId::SERIAL_BITS;
    let serial = segment.0 & ((1 << SegmentId::SERIAL_BITS) - 1);
    if node >= 1 << NODE_BITS || serial >= 1 << SERIAL_BITS {
        say!(
            "shmget: segment {:#x} cannot be named by a SysV id (node {node} ≥ 128 or serial ≥ 2^23)",
            segment.0
        );
        return Err(libc::ENOSPC);
    }
    Ok(OURS | (node as i32) << SERIAL_BITS | serial as i32)
}

fn segment_of(shmid: i32) -> Option<SegmentId> {
    (shmid >= 0 && shmid & OURS != 0).then(|| {
        let node = (shmid >> SERIAL_BITS) as u32 & ((1 << NODE_BITS) - 1);
        SegmentId::new(NodeId(node), (shmid & ((1 << SERIAL_BITS) - 1)) as u64)
    })
}

fn random_u64() -> u64 {
    let mut v = 0u64;
    // SAFETY: 8 writable bytes.
    unsafe { libc::syscall(libc::SYS_getrandom, &mut v as *mut u64, 8usize, 0usize) };
    v ^ sys::monotonic_ns()
}

/// `shmget`; `None` when the key is not one we distribute (libc's then).
pub fn shmget(key: libc::key_t, size: usize, flags: i32) -> Option<Result<i32, Errno>> {
    let private = key == libc::IPC_PRIVATE;
    let name = if private {
        format!("/sysv:private:{:016x}", random_u64())
    } else {
        format!("/sysv:{:#010x}", key as u32)
    };
    if !config::get().distributes(&name) {
        return None;
    }
    Some((|| {
        let mode = (flags & 0o777) as u32;
        let open = OpenFlags {
            create: private || flags & libc::IPC_CREAT != 0,
            exclusive: private || flags & libc::IPC_EXCL != 0,
            truncate: false,
            mode: mode & !sys::umask(),
            write: false,
        };
        let mut fd = -1;
        let reply = request(
            "shmget",
            &Request::Open {
                name: &name,
                flags: open,
            },
            Some(&mut fd),
        );
        if fd >= 0 {
            sys::close(fd);
        }
        let (segment, current) = match reply? {
            Reply::Opened { segment, size, .. } => (segment, size as usize),
            Reply::Failed(e) => return Err(errno_of(e)),
            _ => return Err(libc::EIO),
        };
        let shmid = shmid_of(segment)?;
        if current == 0 && open.create {
            if size == 0 {
                return Err(libc::EINVAL);
            }
            // Sizing it takes write access: open it again for writing (its creator may).
            let again = OpenFlags {
                create: false,
                exclusive: false,
                write: true,
                ..open
            };
            let mut fd2 = -1;
            let reopened = request(
                "shmget",
                &Request::Open {
                    name: &name,
                    flags: again,
                },
                Some(&mut fd2),
            );
            if fd2 >= 0 {
                sys::close(fd2);
            }
            match reopened? {
                Reply::Opened { .. } => {}
                Reply::Failed(e) => return Err(errno_of(e)),
                _ => return Err(libc::EIO),
            }
            match request(
                "shmget",
                &Request::Resize {
                    segment,
                    size: size as u64,
                },
                None,
            )? {
                Reply::Resized { .. } => {}
                Reply::Failed(e) => return Err(errno_of(e)),
                _ => return Err(libc::EIO),
            }
        } else if size > current {
            // An existing segment smaller than asked for, as the kernel says.
            return Err(libc::EINVAL);
        }
        let mut known = KNOWN.lock();
        if !known.iter().any(|k| k.0 == shmid) {
            known.push((shmid, key, mode));
        }
        Ok(shmid)
    })())
}

/// Opens the segment by id: (descriptor, size, base).
fn open_id(segment: SegmentId, write: bool) -> Result<(i32, usize, usize), Errno> {
    let mut fd = -1;
    match request("shmat", &Request::OpenId { segment, write }, Some(&mut fd))? {
        Reply::Opened { size, base, .. } if fd >= 0 => Ok((fd, size as usize, base as usize)),
        Reply::Failed(e) => {
            // A removed segment's id, like the kernel's for an id that is gone.
            let e = errno_of(e);
            Err(if e == libc::EIDRM { libc::EINVAL } else { e })
        }
        _ => Err(libc::EIO),
    }
}

/// `shmat`; `None` when the id is not ours.
pub fn shmat(shmid: i32, addr: usize, flags: i32) -> Option<Result<usize, Errno>> {
    let segment = segment_of(shmid)?;
    Some((|| {
        let (fd, size, base) = open_id(segment, flags & libc::SHM_RDONLY == 0)?;
        segments::remember(fd, segment);
        let mut prot = libc::PROT_READ;
        if flags & libc::SHM_RDONLY == 0 {
            prot |= libc::PROT_WRITE;
        }
        if flags & libc::SHM_EXEC != 0 {
            prot |= libc::PROT_EXEC;
        }
        let want = if flags & libc::SHM_RND != 0 {
            addr & !(PAGE_SIZE - 1)
        } else {
            addr
        };
        let result = if size == 0 {
            Err(libc::EINVAL)
        } else if want != 0 && want != base {
            say!("shmat: segment {shmid:#x} lives at {base:#x} in every process; it cannot attach at {want:#x}");
            Err(libc::EINVAL)
        } else {
            let fixed = if want != 0 { libc::MAP_FIXED } else { 0 };
            map_segment(segment, want, size, prot, libc::MAP_SHARED | fixed, fd, 0)
        };
        sys::close(fd);
        let at = result?;
        ATTACHED
            .lock()
            .push((at, size.next_multiple_of(PAGE_SIZE), shmid));
        Ok(at)
    })())
}

/// `shmdt`; `None` when `addr` is no attach of ours.
pub fn shmdt(addr: usize) -> Option<Result<(), Errno>> {
    let (at, len, _) = {
        let mut attached = ATTACHED.lock();
        let i = attached.iter().position(|a| a.0 == addr)?;
        attached.swap_remove(i)
    };
    Some(crate::ops::munmap(at, len).unwrap_or(Ok(())))
}

/// `shmctl`; `None` when the id is not ours or the command is not about one segment.
///
/// # Safety
/// `buf` is NULL or points to a `shmid_ds` for `IPC_STAT`/`IPC_SET`.
pub unsafe fn shmctl(shmid: i32, cmd: i32, buf: *mut libc::shmid_ds) -> Option<Result<i32, Errno>> {
    let segment = segment_of(shmid)?;
    Some(match cmd {
        libc::IPC_RMID => match request("shmctl", &Request::UnlinkId { segment }, None) {
            Ok(Reply::Done) => Ok(0),
            Ok(Reply::Failed(_)) => Err(libc::EINVAL),
            Ok(_) => Err(libc::EIO),
            Err(e) => Err(e),
        },
        libc::IPC_STAT => (|| {
            let (fd, size, _) = open_id(segment, false)?;
            sys::close(fd);
            // SAFETY: per the contract.
            let ds = unsafe { buf.as_mut() }.ok_or(libc::EFAULT)?;
            // SAFETY: all-zero is a valid shmid_ds.
            *ds = unsafe { core::mem::zeroed() };
            let (key, mode) = KNOWN
                .lock()
                .iter()
                .find(|k| k.0 == shmid)
                .map_or((0, 0o600), |k| (k.1, k.2));
            // SAFETY: plain getters.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            ds.shm_perm.__key = key;
            ds.shm_perm.mode = mode as _;
            ds.shm_perm.uid = uid;
            ds.shm_perm.gid = gid;
            ds.shm_perm.cuid = uid;
            ds.shm_perm.cgid = gid;
            ds.shm_segsz = size;
            ds.shm_nattch = ATTACHED.lock().iter().filter(|a| a.2 == shmid).count() as _;
            Ok(0)
        })(),
        libc::IPC_SET | libc::SHM_LOCK | libc::SHM_UNLOCK => Ok(0),
        _ => Err(libc::EINVAL),
    })
}
