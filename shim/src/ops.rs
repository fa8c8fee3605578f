//! What the interposed functions do for DSM segments. The `extern "C"` detours in
//! [`crate::hooks`] only convert arguments and results; a `None` from here means "not DSM:
//! let the call through unchanged".

use dsm_proto::client::{OpenFlags, Reply, Request, ShmError};
use dsm_proto::{SegmentId, PAGE_SIZE};

use crate::mappings::{self, Mapping};
use crate::sys::{self, Errno};
use crate::{channels, fault, say, segments, session};

/// The errno a failed request becomes.
pub fn errno_of(e: ShmError) -> Errno {
    match e {
        ShmError::NotFound => libc::ENOENT,
        ShmError::AlreadyExists => libc::EEXIST,
        ShmError::InvalidArgument => libc::EINVAL,
        ShmError::NameTooLong => libc::ENAMETOOLONG,
        ShmError::TooLarge => libc::EFBIG,
        ShmError::NoMemory => libc::ENOMEM,
        ShmError::Gone => libc::EIDRM,
        ShmError::OutOfRange => libc::ENXIO,
        ShmError::TimedOut => libc::EHOSTUNREACH,
        ShmError::Internal => libc::EIO,
        ShmError::PermissionDenied => libc::EACCES,
        ShmError::Lost => libc::EIO,
    }
}

/// Sends a request on this thread's channel; a daemon that cannot be reached is reported once
/// per call on stderr and becomes `ECONNREFUSED`.
pub(crate) fn request(
    what: &str,
    req: &Request<'_>,
    fd_out: Option<&mut i32>,
) -> Result<Reply, Errno> {
    session::ensure().map_err(|_| libc::ECONNREFUSED)?;
    channels::call_directory(req, fd_out).map_err(|e| {
        if e == libc::ETIMEDOUT {
            say!(
                "{what}: dsmd at {} did not answer in {} ms: it is stopped or wedged",
                crate::config::get().socket,
                crate::wire::limit_ms(crate::wire::Bound::Directory)
            );
            return libc::ETIMEDOUT;
        }
        say!(
            "{what}: lost the connection to dsmd at {} ({})",
            crate::config::get().socket,
            crate::errno_name(e)
        );
        libc::ECONNREFUSED
    })
}

fn expect_done(what: &str, req: &Request<'_>) -> Result<(), Errno> {
    match request(what, req, None)? {
        Reply::Done => Ok(()),
        Reply::Failed(e) => Err(errno_of(e)),
        other => Err(unexpected(what, other)),
    }
}

fn unexpected(what: &str, reply: Reply) -> Errno {
    say!("{what}: unexpected reply from dsmd: {reply:?}");
    libc::EIO
}

/// `shm_open` of a name that is to be distributed.
pub fn shm_open(name: &str, oflag: i32, mode: u32) -> Result<i32, Errno> {
    // As glibc 2.36, before anything else: a name that does not fit its path buffer is
    // EINVAL; one that fits but is longer than a file name may be is ENAMETOOLONG (from open).
    match name.trim_start_matches('/').len() {
        260.. => return Err(libc::EINVAL),
        256..=259 => return Err(libc::ENAMETOOLONG),
        _ => {}
    }
    // As the kernel: no free descriptor is EMFILE before the name is created or opened.
    sys::close(sys::free_descriptor()?);
    let mut fd = -1;
    let reply = request(
        "shm_open",
        &Request::Open {
            name,
            flags: OpenFlags {
                create: oflag & libc::O_CREAT != 0,
                exclusive: oflag & libc::O_EXCL != 0,
                truncate: oflag & libc::O_TRUNC != 0,
                mode: mode & !sys::umask(),
                write: oflag & libc::O_ACCMODE != libc::O_RDONLY,
            },
        },
        Some(&mut fd),
    )?;
    let segment = match reply {
        Reply::Opened { segment, .. } if fd >= 0 => segment,
        // The descriptor did not fit after all (another thread took the last one meanwhile).
        Reply::Opened { .. } => return Err(libc::EMFILE),
        Reply::Failed(e) => return Err(errno_of(e)),
        other => {
            if fd >= 0 {
                sys::close(fd);
            }
            return Err(unexpected("shm_open", other));
        }
    };
    if oflag & libc::O_ACCMODE == libc::O_RDONLY {
        // A read-only description of the same memory, so the kernel itself refuses writes
        // through it (mmap PROT_WRITE, ftruncate) as it would for /dev/shm.
        fd = reopen_read_only(fd)?;
    }
    segments::remember(fd, segment);
    Ok(fd)
}

fn reopen_read_only(fd: i32) -> Result<i32, Errno> {
    let mut path = [0u8; 32];
    let prefix = b"/proc/self/fd/";
    path[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let mut n = fd as u32;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let d = &digits[i..];
    path[prefix.len()..prefix.len() + d.len()].copy_from_slice(d);
    // SAFETY: `path` is NUL-terminated (zero-filled past the digits).
    let ro = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    let err = sys::errno();
    sys::close(fd);
    if ro < 0 {
        Err(err)
    } else {
        Ok(ro as i32)
    }
}

/// `shm_unlink` of a distributed name.
pub fn shm_unlink(name: &str) -> Result<(), Errno> {
    expect_done("shm_unlink", &Request::Unlink { name })
}

/// The segment `fd` refers to, also when this process did not get it from `shm_open`
/// (received over `SCM_RIGHTS`, inherited across `exec`): then the daemon is asked which
/// segment the memfd is, and the process holds it as if it had opened it.
/// `Err`: it is a dsm memfd but no segment the daemon can serve; using it would not be shared.
fn segment_of(fd: i32) -> Option<Result<SegmentId, Errno>> {
    if let Some(segment) = segments::lookup(fd) {
        return Some(Ok(segment));
    }
    if !segments::may_be_foreign_segment(fd) {
        return None;
    }
    let (dev, ino) = segments::identity(fd)?;
    let what = "a received segment descriptor";
    Some(match request(what, &Request::Identify { dev, ino }, None) {
        Ok(Reply::Opened { segment, .. }) => {
            segments::remember(fd, segment);
            Ok(segment)
        }
        Ok(_) => {
            say!(
                "descriptor {fd} is a dsm segment this node's dsmd does not know (removed, or \
                 from another node's daemon): refused (ENODEV), it would not be shared"
            );
            Err(libc::ENODEV)
        }
        Err(e) => Err(e),
    })
}

/// The segment of a descriptor marked as maybe one (the cheap test of `read`, `write`,
/// `pread`…; see [`segments::mark`]); a mark that turns out wrong is cleared. `Err`: a dsm memfd
/// no daemon serves.
pub fn marked_segment(fd: i32) -> Option<Result<SegmentId, Errno>> {
    if !segments::is_marked(fd) {
        return None;
    }
    let found = segment_of(fd);
    if found.is_none() {
        segments::unmark(fd);
    }
    found
}

/// `fchmod`/`fchown` of a segment's descriptor (`None`: not one): the directory's owner and
/// mode change cluster-wide (every node's memfd follows), as the kernel would allow it.
pub fn chmod(
    fd: i32,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Option<Result<(), Errno>> {
    let segment = match marked_segment(fd)? {
        Ok(s) => s,
        Err(e) => return Some(Err(e)),
    };
    Some(
        match request(
            "fchmod",
            &Request::Chmod {
                segment,
                mode,
                uid,
                gid,
            },
            None,
        ) {
            Ok(Reply::Done) => Ok(()),
            Ok(Reply::Failed(ShmError::PermissionDenied)) => Err(libc::EPERM),
            Ok(Reply::Failed(e)) => Err(errno_of(e)),
            Ok(other) => Err(unexpected("fchmod", other)),
            Err(e) => Err(e),
        },
    )
}

/// `ftruncate`: `None` if `fd` is not a DSM segment.
pub fn ftruncate(fd: i32, len: i64) -> Option<Result<(), Errno>> {
    let segment = segment_of(fd)?;
    Some((|| {
        let segment = segment?;
        if len < 0 || sys::access_mode(fd)? == libc::O_RDONLY {
            return Err(libc::EINVAL);
        }
        match request(
            "ftruncate",
            &Request::Resize {
                segment,
                size: len as u64,
            },
            None,
        )? {
            Reply::Resized { .. } => Ok(()),
            Reply::Failed(e) => Err(errno_of(e)),
            other => Err(unexpected("ftruncate", other)),
        }
    })())
}

/// `pread`/`pwrite` on a DSM segment's own descriptor (`None`: `fd` is not one). The bytes are
/// the segment's coherent bytes: they are copied through a mapping of the range (the one the
/// program has, or one made for the call), exactly as the program's loads and stores would see
/// them. A write past the end grows the segment cluster-wide first, as `pwrite` grows a file.
pub fn positioned(
    fd: i32,
    buf: usize,
    n: usize,
    off: i64,
    write: bool,
) -> Option<Result<usize, Errno>> {
    let segment = match marked_segment(fd)? {
        Ok(s) => s,
        Err(e) => return Some(Err(e)),
    };
    Some(if off < 0 {
        Err(libc::EINVAL)
    } else {
        transfer(segment, fd, buf, n, off as usize, write)
    })
}

/// `read`/`write` on a DSM segment's own descriptor (`None`: not one): [`positioned`] at the
/// descriptor's file position (the end, for a write with `O_APPEND`), which then advances.
pub fn sequential(fd: i32, buf: usize, n: usize, write: bool) -> Option<Result<usize, Errno>> {
    let iov = [libc::iovec {
        iov_base: buf as *mut libc::c_void,
        iov_len: n,
    }];
    // SAFETY: one iovec of ours.
    unsafe { vectored_segment(fd, iov.as_ptr(), 1, None, write) }
}

/// The vectored forms on a DSM segment's own descriptor (`None`: not one): at `pos`, or at the
/// file position, which then advances.
///
/// # Safety
/// `iov` points to `cnt` valid iovecs when `cnt` is positive.
pub unsafe fn vectored_segment(
    fd: i32,
    iov: *const libc::iovec,
    cnt: i32,
    pos: Option<i64>,
    write: bool,
) -> Option<Result<usize, Errno>> {
    let segment = match marked_segment(fd)? {
        Ok(s) => s,
        Err(e) => return Some(Err(e)),
    };
    if iov.is_null() || !(0..=libc::UIO_MAXIOV).contains(&cnt) || pos.is_some_and(|p| p < 0) {
        return Some(Err(libc::EINVAL));
    }
    // SAFETY: per the contract.
    let iov = unsafe { core::slice::from_raw_parts(iov, cnt as usize) };
    Some((|| {
        let mut at = match pos {
            Some(p) => p as usize,
            None if write && sys::status_flags(fd)? & libc::O_APPEND != 0 => {
                sys::fstat(fd)?.st_size as usize
            }
            None => sys::seek(fd, 0, libc::SEEK_CUR)?,
        };
        let mut total = 0;
        for v in iov.iter().filter(|v| v.iov_len > 0) {
            let n = match transfer(segment, fd, v.iov_base as usize, v.iov_len, at, write) {
                Ok(n) => n,
                Err(_) if total > 0 => break,
                Err(e) => return Err(e),
            };
            total += n;
            at += n;
            if n < v.iov_len {
                break;
            }
        }
        if pos.is_none() {
            sys::seek(fd, at as i64, libc::SEEK_SET)?;
        }
        Ok(total)
    })())
}

/// `fallocate`/`posix_fallocate` on a segment's descriptor (`None`: not one): growing it is a
/// cluster-wide resize; keeping the size changes nothing (every page is there already); the
/// modes that punch or shift ranges are refused out loud.
pub fn allocate(fd: i32, mode: i32, off: i64, len: i64) -> Option<Result<(), Errno>> {
    if let Err(e) = marked_segment(fd)? {
        return Some(Err(e));
    }
    Some((|| {
        if off < 0 || len <= 0 {
            return Err(libc::EINVAL);
        }
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            say!("fallocate mode {mode:#x} on a DSM segment is not supported (only growing it)");
            return Err(libc::EOPNOTSUPP);
        }
        let end = off.checked_add(len).ok_or(libc::EFBIG)?;
        if mode & libc::FALLOC_FL_KEEP_SIZE != 0 || end <= sys::fstat(fd)?.st_size {
            return Ok(());
        }
        ftruncate(fd, end).unwrap_or(Err(libc::EBADF))
    })())
}

/// Copies `n` bytes between the program's `buf` and the segment's bytes at `data` (into the
/// segment if `write`). A `buf` that is DSM memory itself goes through a bounce, so that both
/// sides get their pages as faults would.
fn copy_between(buf: usize, data: usize, n: usize, write: bool) -> usize {
    if !crate::io::in_window(buf) {
        return crate::io::copy(buf, data, n, write);
    }
    let user = [libc::iovec {
        iov_base: buf as *mut libc::c_void,
        iov_len: n,
    }];
    let r = if write {
        crate::io::output(&user, |b, len, done| {
            crate::io::copy(b, data + done, len, true) as isize
        })
    } else {
        crate::io::input(&user, |b, len| {
            crate::io::copy(b, data, len, false) as isize
        })
    };
    r.max(0) as usize
}

fn transfer(
    segment: SegmentId,
    fd: i32,
    buf: usize,
    n: usize,
    off: usize,
    write: bool,
) -> Result<usize, Errno> {
    let mode = sys::access_mode(fd)?;
    if (write && mode == libc::O_RDONLY) || (!write && mode == libc::O_WRONLY) {
        return Err(libc::EBADF);
    }
    let end = off.checked_add(n).ok_or(libc::EINVAL)?;
    let size = sys::fstat(fd)?.st_size as usize;
    let n = if write {
        if end > size {
            ftruncate(fd, end as i64).unwrap_or(Err(libc::EBADF))?;
        }
        n
    } else {
        n.min(size.saturating_sub(off))
    };
    if n == 0 {
        return Ok(0);
    }
    // The program's own mapping of the range if it has one, else one for this call.
    let done = match mappings::covering(segment, off, n, write) {
        Some(data) => copy_between(buf, data, n, write),
        None => {
            let start = off & !(PAGE_SIZE - 1);
            let len = off + n - start;
            let prot = libc::PROT_READ | if write { libc::PROT_WRITE } else { 0 };
            let at = map_segment(segment, 0, len, prot, libc::MAP_SHARED, fd, start as i64)?;
            let done = copy_between(buf, at + (off - start), n, write);
            let _ = munmap(at, len);
            done
        }
    };
    if done == 0 {
        Err(libc::EFAULT)
    } else {
        Ok(done)
    }
}

/// Where the next alias is tried (see [`dsm_proto::ALIAS_START`]); never reused, so a stale
/// address can never name a later alias.
static NEXT_ALIAS: core::sync::atomic::AtomicUsize =
    core::sync::atomic::AtomicUsize::new(dsm_proto::ALIAS_START as usize);

/// Maps `len` bytes of the memfd `fd` from `off` at a fresh address of the alias area, with no
/// access (faults open it).
fn map_alias(len: usize, keep: i32, fd: i32, off: i64) -> Result<usize, Errno> {
    use core::sync::atomic::Ordering;
    for _ in 0..64 {
        // One guard page between aliases.
        let at = NEXT_ALIAS.fetch_add(len + PAGE_SIZE, Ordering::Relaxed);
        if at
            .checked_add(len)
            .is_none_or(|end| end > dsm_proto::WINDOW_END as usize)
        {
            say!("this process has used up its address space for mapping segments again");
            return Err(libc::ENOMEM);
        }
        let flags = libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE | keep;
        // SAFETY: a fresh address of the alias area; NOREPLACE refuses if anything is there.
        match unsafe { sys::mmap(at, len, libc::PROT_NONE, flags, fd, off) } {
            Ok(p) if p == at => return Ok(at),
            Ok(p) => {
                // SAFETY: the mapping at `p` is ours and unseen.
                let _ = unsafe { sys::munmap(p, len) };
                return Err(libc::ENOMEM);
            }
            Err(libc::EEXIST) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(libc::ENOMEM)
}

fn round_up(len: usize) -> Option<usize> {
    len.checked_add(PAGE_SIZE - 1).map(|l| l & !(PAGE_SIZE - 1))
}

/// `mmap`: `None` if this is not a mapping of a DSM segment.
pub fn mmap(
    addr: usize,
    len: usize,
    prot: i32,
    flags: i32,
    fd: i32,
    off: i64,
) -> Option<Result<usize, Errno>> {
    if flags & libc::MAP_ANONYMOUS != 0 {
        return None;
    }
    let segment = segment_of(fd)?;
    Some(segment.and_then(|s| map_segment(s, addr, len, prot, flags, fd, off)))
}

pub(crate) fn map_segment(
    segment: SegmentId,
    addr: usize,
    len: usize,
    prot: i32,
    flags: i32,
    fd: i32,
    off: i64,
) -> Result<usize, Errno> {
    const MAP_TYPE: i32 = 0x0f;
    if flags & MAP_TYPE == libc::MAP_PRIVATE {
        say!("MAP_PRIVATE mappings of DSM segments are not supported; map them MAP_SHARED");
        return Err(libc::EINVAL);
    }
    let len = round_up(len).ok_or(libc::ENOMEM)?;
    if len == 0 || off < 0 || !(off as usize).is_multiple_of(PAGE_SIZE) {
        return Err(libc::EINVAL);
    }
    if prot & libc::PROT_WRITE != 0 && sys::access_mode(fd)? == libc::O_RDONLY {
        return Err(libc::EACCES);
    }
    let base = match request(
        "mmap",
        &Request::Map {
            segment,
            offset: off as u64,
            len: len as u64,
        },
        None,
    )? {
        Reply::Mapped { base } => base as usize,
        // More than the segment's address span: as the kernel says when a mapping cannot fit.
        Reply::Failed(ShmError::TooLarge) => {
            say!("mmap: {len} bytes exceed the segment's reserved address span");
            return Err(libc::ENOMEM);
        }
        Reply::Failed(e) => return Err(errno_of(e)),
        other => return Err(unexpected("mmap", other)),
    };
    let start = base + off as usize;
    let end = start + len;
    let (state, table_len) = state_table(segment, base).unwrap_or((0, 0));
    let fixed = flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) != 0;
    let mut table = mappings::write();
    if fixed && addr != start {
        release(table, &[segment]);
        say!(
            "segment {:#x} lives at {start:#x} in every process; a fixed mapping at {addr:#x} is not possible",
            segment.0
        );
        return Err(libc::EINVAL);
    }
    if flags & libc::MAP_FIXED == 0
        && table
            .overlapping(start, end)
            .any(|(_, m)| m.segment == segment)
    {
        // Mapped again while (part of) it is mapped: a distinct mapping at a distinct address,
        // as POSIX gives, with its own protection; revocations lower every alias of a page.
        let keep = flags & (libc::MAP_NORESERVE | libc::MAP_LOCKED);
        let at = map_alias(len, keep, fd, off)?;
        let alias = Mapping {
            start: at,
            end: at + len,
            segment,
            base: at - off as usize,
            prot,
            table: state,
            table_len,
        };
        if table.insert(alias).is_err() {
            // SAFETY: we just created this mapping and nobody has seen its address.
            let _ = unsafe { sys::munmap(at, len) };
            say!(
                "more than {} DSM mappings in one process",
                mappings::CAPACITY
            );
            return Err(libc::ENOMEM);
        }
        return Ok(at);
    }
    let mut replaced = Vec::new();
    let placement = if flags & libc::MAP_FIXED != 0 {
        // The program asked to replace whatever is there; DSM mappings there go away.
        if table.split_at(start, end).is_ok() {
            for (i, m) in table.inside(start, end) {
                table.remove(i);
                replaced.push(m.segment);
            }
        }
        libc::MAP_FIXED
    } else {
        libc::MAP_FIXED_NOREPLACE
    };
    let keep = flags & (libc::MAP_NORESERVE | libc::MAP_LOCKED);
    // SAFETY: maps the segment's memfd at its agreed address; without MAP_FIXED the kernel
    // refuses if anything is there, with it the program asked for the replacement.
    let result = unsafe {
        sys::mmap(
            start,
            len,
            libc::PROT_NONE,
            libc::MAP_SHARED | placement | keep,
            fd,
            off,
        )
    };
    let failure = match result {
        Ok(p) if p == start => match table.insert(Mapping {
            start,
            end,
            segment,
            base,
            prot,
            table: state,
            table_len,
        }) {
            Ok(()) => None,
            Err(mappings::TableFull) => {
                // SAFETY: we just created this mapping and nobody has seen its address.
                let _ = unsafe { sys::munmap(start, len) };
                say!(
                    "more than {} DSM mappings in one process",
                    mappings::CAPACITY
                );
                Some(libc::ENOMEM)
            }
        },
        Ok(p) => {
            // A kernel without MAP_FIXED_NOREPLACE took the address as a hint.
            // SAFETY: the mapping at `p` is ours and unseen.
            let _ = unsafe { sys::munmap(p, len) };
            Some(libc::ENOMEM)
        }
        Err(libc::EEXIST) => {
            say!(
                "address range {start:#x}-{end:#x} of segment {:#x} is already in use in this process",
                segment.0
            );
            Some(libc::ENOMEM)
        }
        Err(e) => Some(e),
    };
    replaced.push(segment);
    release(table, &replaced);
    if let Some(e) = failure {
        return Err(e);
    }
    fault::install();
    Ok(start)
}

/// The segment's state table, mapped read-only in this process (fetched once per segment),
/// followed by its marks, read-write (see `revoke::mark_opened`). Without them every fault asks
/// the daemon, which is slower but as correct.
fn state_table(segment: SegmentId, base: usize) -> Option<(usize, usize)> {
    if let Some(t) = segments::table(segment, base) {
        return Some(t);
    }
    let mut fd = -1;
    let reply = request("mmap", &Request::Table { segment }, Some(&mut fd));
    let len = match reply {
        Ok(Reply::Table { len }) if fd >= 0 => len as usize,
        _ => {
            if fd >= 0 {
                sys::close(fd);
            }
            return None;
        }
    };
    // The memfd holds the table and the marks, `len` bytes each: the handler touches both, and
    // a mapping past the memfd's end would raise SIGBUS there.
    let whole = sys::fstat(fd).is_ok_and(|st| st.st_size as usize >= 2 * len);
    // SAFETY: maps the daemon's table memfd at an address the kernel picks, both halves within
    // the memfd (checked above); it stays mapped for the life of the process (the handler reads
    // it). The table half is then made read-only: only the daemon writes it.
    let addr = whole
        .then(|| unsafe {
            sys::mmap(
                0,
                2 * len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        })
        .and_then(Result::ok);
    sys::close(fd);
    let addr = addr?;
    // SAFETY: the first half of the mapping just made.
    if unsafe { sys::mprotect(addr, len, libc::PROT_READ) }.is_err() {
        // SAFETY: the mapping just made, seen by no one.
        let _ = unsafe { sys::munmap(addr, 2 * len) };
        return None;
    }
    segments::set_table(segment, base, addr, len);
    Some((addr, len))
}

/// Ends a write section, then tells the daemon about each of `segments` that the process no
/// longer maps at all.
fn release(table: mappings::Writer, segments: &[SegmentId]) {
    let mut gone: Vec<SegmentId> = segments
        .iter()
        .copied()
        .filter(|s| !table.maps_segment(*s))
        .collect();
    drop(table);
    gone.sort();
    gone.dedup();
    for segment in gone {
        let _ = expect_done("munmap", &Request::Unmap { segment });
    }
}

/// The write section and page-rounded end of `[addr, addr + len)`, with the DSM mappings
/// straddling its ends split, so each lies wholly inside or outside it. `None`: the range holds
/// no DSM mapping (let the call through); `Some(Err)`: the table has no room for the pieces.
fn dsm_range(addr: usize, len: usize) -> Option<Result<(mappings::Writer, usize), Errno>> {
    if mappings::is_empty() || !addr.is_multiple_of(PAGE_SIZE) {
        return None;
    }
    let hi = addr.checked_add(round_up(len)?)?;
    let mut table = mappings::write();
    table.overlapping(addr, hi).next()?;
    if table.split_at(addr, hi).is_err() {
        say!(
            "more than {} DSM mapping pieces in one process",
            mappings::CAPACITY
        );
        return Some(Err(libc::ENOMEM));
    }
    Some(Ok((table, hi)))
}

/// `munmap`: `None` if the range holds no DSM mapping.
pub fn munmap(addr: usize, len: usize) -> Option<Result<(), Errno>> {
    let (mut table, hi) = match dsm_range(addr, len)? {
        Ok(found) => found,
        Err(e) => return Some(Err(e)),
    };
    let gone: Vec<SegmentId> = table
        .inside(addr, hi)
        .into_iter()
        .map(|(i, m)| {
            table.remove(i);
            m.segment
        })
        .collect();
    // SAFETY: the program unmaps its own range (DSM pieces and any other memory in it).
    let result = unsafe { sys::munmap(addr, hi - addr) }.map(|_| ());
    release(table, &gone);
    Some(result)
}

/// After a successful `MAP_FIXED` mapping that is not DSM: any DSM mapping it replaced is
/// forgotten (the kernel already unmapped it).
pub fn forget_range(addr: usize, len: usize) -> Option<()> {
    let Ok((mut table, hi)) = dsm_range(addr, len)? else {
        return Some(());
    };
    let mut gone = Vec::new();
    for (i, m) in table.inside(addr, hi) {
        table.remove(i);
        gone.push(m.segment);
    }
    release(table, &gone);
    Some(())
}

/// `mprotect`: `None` if the range holds no DSM mapping.
pub fn mprotect(addr: usize, len: usize, prot: i32) -> Option<Result<(), Errno>> {
    let (mut table, hi) = match dsm_range(addr, len)? {
        Ok(found) => found,
        Err(e) => return Some(Err(e)),
    };
    let inside: Vec<_> = table.overlapping(addr, hi).collect();
    let covered: usize = inside.iter().map(|(_, m)| m.end - m.start).sum();
    for (i, _) in &inside {
        table.set_prot(*i, prot);
    }
    // Pages of DSM mappings drop to no access: whatever the program now allows, a page must be
    // granted again before it is used (and the grant honours the new protection).
    // SAFETY: the program changes the protection of its own range; DSM pages only lose access.
    let result = unsafe {
        if covered == hi - addr {
            sys::mprotect(addr, hi - addr, libc::PROT_NONE)
        } else {
            sys::mprotect(addr, hi - addr, prot).and_then(|_| {
                for (_, m) in &inside {
                    sys::mprotect(m.start, m.end - m.start, libc::PROT_NONE)?;
                }
                Ok(0)
            })
        }
    };
    Some(result.map(|_| ()))
}

/// `msync` of a range: `None` if it holds no DSM memory (the caller's own `msync` then). DSM
/// memory needs no writing back, but `msync` is a release point: with replication on, what
/// this node wrote goes to its replica nodes — waited for with `MS_SYNC`, started with
/// `MS_ASYNC`.
pub fn msync(addr: usize, len: usize, flags: i32) -> Option<Result<(), Errno>> {
    if mappings::is_empty() || !mappings::any_in(addr, addr.checked_add(len.max(1))?) {
        return None;
    }
    if !crate::wire::replicating() || session::ensure().is_err() {
        return Some(Ok(()));
    }
    let wait = flags & libc::MS_SYNC != 0;
    let request = Request::Release { wait };
    let result = if wait {
        match channels::call_unbounded(&request, None) {
            Ok(Reply::Done) => Ok(()),
            Ok(other) => {
                say!("msync: unexpected reply from dsmd: {other:?}");
                Err(libc::EIO)
            }
            Err(e) => Err(e),
        }
    } else {
        channels::post(&request)
    };
    Some(result)
}

/// Before `fork`: no table may be inherited half-written.
pub fn prepare_fork() {
    crate::sigmask::prepare_fork();
    session::lock_for_fork();
    segments::lock_for_fork();
    mappings::lock_for_fork();
    fault::lock_for_fork();
    crate::revoke::lock_for_fork();
    crate::fastlock::lock_for_fork();
}

/// After `fork`, in the parent.
pub fn parent_after_fork() {
    crate::fastlock::unlock_after_fork();
    crate::revoke::unlock_after_fork();
    fault::unlock_after_fork();
    mappings::unlock_after_fork();
    segments::unlock_after_fork();
    session::unlock_after_fork();
}

/// After `fork`, in the child: it inherits the mappings and their page protections but not the
/// parent's connection to the daemon. It drops every page to no access (the daemon granted
/// those pages to the parent, not to it), attaches as a process of its own and registers the
/// mappings it has, so it can fault pages in as any process can.
pub fn child_after_fork() {
    crate::fastlock::child_after_fork();
    crate::revoke::unlock_after_fork();
    fault::unlock_after_fork();
    mappings::unlock_after_fork();
    segments::unlock_after_fork();
    session::reset_after_fork();
    channels::reset_after_fork();
    crate::sigmask::child_after_fork();
    if mappings::is_empty() {
        return;
    }
    let all = mappings::write().all();
    for m in &all {
        // SAFETY: our own DSM mapping; dropping access only causes refaults.
        let _ = unsafe { sys::mprotect(m.start, m.end - m.start, libc::PROT_NONE) };
    }
    let mut segments: Vec<&Mapping> = Vec::new();
    for m in &all {
        if !segments.iter().any(|s| s.segment == m.segment) {
            segments.push(m);
        }
    }
    for m in segments {
        let req = Request::Map {
            segment: m.segment,
            offset: (m.start - m.base) as u64,
            len: (m.end - m.start) as u64,
        };
        if !matches!(request("fork", &req, None), Ok(Reply::Mapped { .. })) {
            say!(
                "forked child could not register its mapping of segment {:#x}",
                m.segment.0
            );
        }
    }
}
