//! The node's copy of each segment: one memfd per segment, shared with local processes.
//!
//! Processes map the memfd (MAP_SHARED), so every process on the node sees the node's copy and
//! they share it among themselves as ordinary shared memory. The daemon maps it too, so a page
//! travels between the mapping and a socket with no copy of our own in between: sent with
//! `writev` straight from the mapping ([`fdpass::send_frame_and_page`]), received from the
//! socket buffer straight into it ([`Page::fill_from`]). This module is the only place in the
//! daemon with `unsafe`.

pub mod fdpass;

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use dsm_proto::PAGE_SIZE;

/// The memory behind one segment on this node.
#[derive(Debug)]
pub struct MemFd {
    file: File,
    len: u64,
    map: Option<Mapped>,
}

#[derive(Debug)]
struct Mapped {
    ptr: *mut u8,
    len: usize,
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` is a mapping we created and nothing refers to it any more (the
        // only pointers into it are `Page`s, used and dropped within one event).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Maps `len` bytes of `file` shared and writable at an address the kernel picks; the caller
/// unmaps it (`Mapped` and `StateTable` do, when dropped).
fn map_shared(file: &File, len: usize) -> io::Result<*mut u8> {
    // SAFETY: a new mapping of our own memfd; nothing else is at the address the kernel picks.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(ptr.cast())
}

/// One page of a node's copy, in the daemon's mapping. Valid until the segment is resized or
/// removed: use it at once.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    ptr: *mut u8,
    /// The memfd and offset behind the page, for a page of a segment: bytes that arrive are
    /// written there with `pwrite` (see [`Page::fill_from`]).
    file: Option<(std::os::fd::RawFd, u64)>,
}

/// A page of zeros, for a page past the end of a node's copy (only ever read).
static ZEROS: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

impl Page {
    /// A page of zeros, to send; never [`Page::fill_from`] it.
    pub fn zeros() -> Page {
        Page {
            ptr: ZEROS.as_ptr() as *mut u8,
            file: None,
        }
    }

    /// Appends the page's bytes to `out` (one copy, no zeroing first).
    pub fn append_to(self, out: &mut Vec<u8>) {
        // SAFETY: the page is PAGE_SIZE mapped bytes. The core only sends a page after
        // revoking write access from every local process, so nothing writes it while we copy;
        // the slice lives only for this copy.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(self.ptr, PAGE_SIZE) });
    }

    /// Copies the page into `to` as it is now. Local processes may still be storing to it (a
    /// release's snapshot, taken beside the revocation of its writers): the copy may then miss
    /// or catch a store in progress, which the release's comparison ([`Page::holds`], once the
    /// writers stopped) finds.
    pub fn copy_to(self, to: Page) {
        // SAFETY: the page is PAGE_SIZE mapped bytes, read once for this copy; other processes
        // may store to them meanwhile (shared memory: the bytes read are some mix of before and
        // after, never out of bounds), and the slice lives only for the copy.
        to.fill_from(unsafe { std::slice::from_raw_parts(self.ptr, PAGE_SIZE) });
    }

    /// Whether the page holds exactly `bytes` (one page).
    pub fn holds(self, bytes: &[u8]) -> bool {
        // SAFETY: the page is PAGE_SIZE mapped bytes; the slice lives only for the comparison
        // (asked once the page's local writers were revoked).
        unsafe { std::slice::from_raw_parts(self.ptr, PAGE_SIZE) == bytes }
    }

    /// Stores `bytes` (exactly one page) into the page.
    ///
    /// A segment's page is written into its memfd with `pwrite`: a whole page written that
    /// way is allocated without being cleared first, where a store through the mapping
    /// faults the page in zeroed and then copies over the zeros (a node receiving a scan
    /// spent a third of its time clearing pages). The mapping sees the same page.
    pub fn fill_from(self, bytes: &[u8]) {
        assert_eq!(bytes.len(), PAGE_SIZE);
        assert!(
            !std::ptr::eq(self.ptr, ZEROS.as_ptr()),
            "the zero page is read-only"
        );
        if let Some((fd, offset)) = self.file {
            // SAFETY: `bytes` is PAGE_SIZE readable bytes; `fd` is the segment's memfd, open
            // while the page is in use (a `Page` is used at once, within one event).
            let n = unsafe { libc::pwrite(fd, bytes.as_ptr().cast(), PAGE_SIZE, offset as i64) };
            if n == PAGE_SIZE as isize {
                return;
            }
            // A short or failed write (no memory): the mapping's store below reports it the
            // way it always did (SIGBUS), or succeeds.
        }
        // SAFETY: the page is PAGE_SIZE mapped, writable bytes; `bytes` is a distinct buffer.
        // A page arrives only while local processes hold no write access to it (at most read
        // access to identical contents, on an upgrade).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr, PAGE_SIZE) };
    }
}

/// Raises this process's descriptor limit (the page store's memfds and every connection count
/// against it) to its hard limit; returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: all-zero is a valid rlimit; the pointers are valid for the calls.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    lim.rlim_cur
}

impl MemFd {
    /// Makes the memfd's owner and mode the segment's, so `fstat` in a process shows them (and
    /// reopening it through `/proc/self/fd` is checked against them). Changing the owner needs
    /// a daemon running as root; otherwise only the mode follows.
    pub fn set_owner(&self, uid: u32, gid: u32, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::os::unix::fs::fchown(&self.file, Some(uid), Some(gid)) {
            log::debug!("cannot give a segment's memory to {uid}:{gid}: {e}");
        }
        let perms = std::fs::Permissions::from_mode(mode & 0o7777);
        if let Err(e) = self.file.set_permissions(perms) {
            log::debug!("cannot set a segment's mode {mode:o}: {e}");
        }
    }

    /// The memfd's device and inode, as a process holding a descriptor of it sees them.
    pub fn identity(&self) -> io::Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let meta = self.file.metadata()?;
        Ok((meta.dev(), meta.ino()))
    }

    /// A new, empty memfd; `label` shows in `/proc/PID/maps` of every process that maps it.
    pub fn create(label: &str) -> io::Result<MemFd> {
        // memfd names are at most 249 bytes (MFD_NAME_MAX_LEN); segment names up to 255 (as
        // tmpfs allows) are cut to fit, on a character boundary. The name is only a label.
        let mut name = format!("dsm:{label}");
        let mut cut = name.len().min(249);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
        let name = CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in segment name"))?;
        // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create just returned this descriptor; nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(MemFd {
            file: File::from(owned),
            len: 0,
            map: None,
        })
    }

    /// Sets the size; pages past a smaller size are discarded, new ones read as zeros.
    pub fn set_len(&mut self, size: u64) -> io::Result<()> {
        self.file.set_len(size)?;
        if size != self.len {
            self.map = None;
            self.len = size;
        }
        Ok(())
    }

    /// Page `index`, if it lies inside the segment.
    pub fn page(&mut self, index: u32) -> io::Result<Option<Page>> {
        let offset = u64::from(index) * PAGE_SIZE as u64;
        if offset + PAGE_SIZE as u64 > self.len.next_multiple_of(PAGE_SIZE as u64) {
            return Ok(None);
        }
        if self.map.is_none() {
            // Bytes past the file's end in the last page read as zeros and are never sent
            // beyond the segment.
            let len = self.len.next_multiple_of(PAGE_SIZE as u64) as usize;
            let ptr = map_shared(&self.file, len)?;
            self.map = Some(Mapped { ptr, len });
        }
        let map = self.map.as_ref().expect("mapped above");
        // SAFETY: `offset + PAGE_SIZE <= map.len`, checked above.
        let ptr = unsafe { map.ptr.add(offset as usize) };
        Ok(Some(Page {
            ptr,
            file: Some((self.file.as_raw_fd(), offset)),
        }))
    }

    /// A new descriptor for the same memory, to hand to a client.
    pub fn share(&self) -> io::Result<OwnedFd> {
        self.file.as_fd().try_clone_to_owned()
    }
}

/// A segment's state table: one byte per page, the most a local process may hold (an
/// `Access` as 0, 1, 2). Processes map it read-only; the fault handler grants from it without
/// asking the daemon when the page is already held well enough.
///
/// The marks follow it in the same memfd, as many bytes, mapped read-write by processes: the
/// daemon sets bit 1 of a page's mark when the page arrives read ahead, the handler sets bit 0
/// when it opens the page, so the daemon can tell a page it read ahead that no process opened
/// before the node lost it (`dsmctl stats`).
#[derive(Debug)]
pub struct StateTable {
    memfd: MemFd,
    ptr: *mut u8,
    len: usize,
}

impl StateTable {
    /// A table of `pages` entries, all 0 (no access), and as many marks, all clear.
    pub fn create(label: &str, pages: usize) -> io::Result<StateTable> {
        let mut memfd = MemFd::create(&format!("{label}:state"))?;
        let len = pages.max(1).next_multiple_of(PAGE_SIZE);
        memfd.set_len(2 * len as u64)?;
        let ptr = map_shared(&memfd.file, 2 * len)?;
        Ok(StateTable { memfd, ptr, len })
    }

    /// Entry `index` of the table (`Some` below `len`), or of the marks after it.
    fn cell(&self, index: usize, mark: bool) -> Option<&std::sync::atomic::AtomicU8> {
        if index >= self.len {
            return None;
        }
        let at = if mark { self.len + index } else { index };
        // SAFETY: `at < 2 * len`, inside our mapping for the life of `self`; a byte is always
        // aligned for AtomicU8, and every access to the memfd (here and in the shim) is atomic.
        Some(unsafe { &*(self.ptr.add(at) as *const std::sync::atomic::AtomicU8) })
    }

    /// Publishes the most a local process may hold of `page`.
    pub fn set(&self, page: u32, access: dsm_proto::Access) {
        if let Some(cell) = self.cell(page as usize, false) {
            cell.store(access as u8, std::sync::atomic::Ordering::Release);
        }
    }

    /// `page` arrives read ahead: no process has opened it (nor can, until it is published).
    pub fn mark_ahead(&self, page: u32) {
        if let Some(m) = self.cell(page as usize, true) {
            m.store(MARK_AHEAD, std::sync::atomic::Ordering::Release);
        }
    }

    /// Clears `page`'s mark (local processes lost the page) and says what it was.
    pub fn take_mark(&self, page: u32) -> Mark {
        let mark = self
            .cell(page as usize, true)
            .map_or(0, |m| m.swap(0, std::sync::atomic::Ordering::Acquire));
        if mark & MARK_AHEAD == 0 {
            Mark::Plain
        } else {
            Mark::Ahead {
                opened: mark & MARK_OPENED != 0,
            }
        }
    }

    /// Pages read ahead that no process has opened yet. Reads only the marks' pages that
    /// hold data (`SEEK_DATA`): reading a hole through the mapping would allocate it, and a big
    /// segment's marks are mostly holes.
    pub fn unopened_ahead(&self) -> u64 {
        let fd = self.memfd.file.as_raw_fd();
        let (start, end) = (self.len as i64, 2 * self.len as i64);
        let (mut at, mut count) = (start, 0);
        while at < end {
            // SAFETY: `lseek` on our own memfd: it moves only the file offset, which nothing
            // uses (every read and write of it names its offset, and mapping ignores it).
            let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
            if data < 0 || data >= end {
                break;
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            let hole = if hole < 0 { end } else { hole.min(end) };
            count += ((data - start) as usize..(hole - start) as usize)
                .filter_map(|i| self.cell(i, true))
                .filter(|m| m.load(std::sync::atomic::Ordering::Relaxed) == MARK_AHEAD)
                .count() as u64;
            at = hole.max(data + 1);
        }
        count
    }

    /// Bytes in the table (the marks are as many, after it).
    pub fn len(&self) -> usize {
        self.len
    }

    /// A descriptor to hand to a client.
    pub fn share(&self) -> io::Result<OwnedFd> {
        self.memfd.share()
    }
}

/// A page's mark: bit 1, read ahead (set by the daemon); bit 0, opened by a process (by the
/// fault handler, `shim/src/revoke.rs`).
const MARK_AHEAD: u8 = 2;
const MARK_OPENED: u8 = 1;

/// What a page's mark said when the daemon took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Not read ahead (opened or not).
    Plain,
    /// Read ahead; opened by a process since, or not.
    Ahead {
        /// A process opened it.
        opened: bool,
    },
}

impl Drop for StateTable {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer referred to.
        unsafe { libc::munmap(self.ptr.cast(), 2 * self.len) };
    }
}

/// A segment's lock table ([`dsm_proto::fastlock`]): slots of a tag and a lock word that
/// local processes allowed to write the segment map read-write and swap atomically.
#[derive(Debug)]
pub struct LockTable {
    memfd: MemFd,
    ptr: *mut u8,
}

impl LockTable {
    /// A table of free slots (every tag 0: no mutex).
    pub fn create(label: &str) -> io::Result<LockTable> {
        let mut memfd = MemFd::create(&format!("{label}:locks"))?;
        memfd.set_len(dsm_proto::fastlock::TABLE_BYTES as u64)?;
        let ptr = map_shared(&memfd.file, dsm_proto::fastlock::TABLE_BYTES)?;
        Ok(LockTable { memfd, ptr })
    }

    fn cell(&self, slot: usize, second: bool) -> &std::sync::atomic::AtomicU64 {
        let slot = slot % dsm_proto::fastlock::SLOTS;
        // SAFETY: inside our mapping (slot < SLOTS, 16 bytes each), 8-aligned (page-aligned
        // base); every access to the table, here and in the shim, is atomic.
        unsafe {
            &*(self.ptr.add(slot * 16 + usize::from(second) * 8)
                as *const std::sync::atomic::AtomicU64)
        }
    }

    /// The slot's tag.
    pub fn tag(&self, slot: usize) -> u64 {
        self.cell(slot, false)
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Names the slot's mutex (only while its word is the daemon's, or was never handed out).
    pub fn set_tag(&self, slot: usize, tag: u64) {
        self.cell(slot, false)
            .store(tag, std::sync::atomic::Ordering::Release);
    }

    /// The slot's lock word.
    pub fn word(&self, slot: usize) -> u64 {
        self.cell(slot, true)
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Swaps the slot's word from `old` to `new`; `Err` with what it was if not `old`.
    pub fn swap_word(&self, slot: usize, old: u64, new: u64) -> Result<u64, u64> {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        self.cell(slot, true)
            .compare_exchange(old, new, AcqRel, Acquire)
    }

    /// Writes `new` into the slot's word; returns what it was.
    pub fn exchange_word(&self, slot: usize, new: u64) -> u64 {
        self.cell(slot, true)
            .swap(new, std::sync::atomic::Ordering::AcqRel)
    }

    /// A descriptor to hand to a client.
    pub fn share(&self) -> io::Result<OwnedFd> {
        self.memfd.share()
    }
}

impl Drop for LockTable {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer referred to.
        unsafe { libc::munmap(self.ptr.cast(), dsm_proto::fastlock::TABLE_BYTES) };
    }
}

impl AsFd for MemFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Pages kept apart from any segment's copy, by key: no process maps them, and a copy arriving
/// never overwrites one. The replicas this node keeps of pages owned elsewhere (`--replicas`),
/// and the bytes of replicas this node sent while their writers were still being stopped.
#[derive(Debug, Default)]
pub struct Replicas {
    pages: std::collections::HashMap<dsm_proto::peer::PageKey, Box<[u8; PAGE_SIZE]>>,
}

impl Replicas {
    /// Where the replica of `key` goes (a new page of zeros the first time). The page is a
    /// boxed buffer, which does not move while kept: valid until the replica is removed (use
    /// it at once, as any [`Page`]).
    pub fn slot(&mut self, key: dsm_proto::peer::PageKey) -> Page {
        let page = self
            .pages
            .entry(key)
            .or_insert_with(|| Box::new([0; PAGE_SIZE]));
        Page {
            ptr: page.as_mut_ptr(),
            file: None,
        }
    }

    /// The replica of `key`, if this node keeps one.
    pub fn get(&self, key: dsm_proto::peer::PageKey) -> Option<&[u8; PAGE_SIZE]> {
        self.pages.get(&key).map(|b| &**b)
    }

    /// The page kept for `key`, to send from, if there is one (as [`Replicas::slot`]).
    pub fn existing(&mut self, key: dsm_proto::peer::PageKey) -> Option<Page> {
        self.pages.get_mut(&key).map(|page| Page {
            ptr: page.as_mut_ptr(),
            file: None,
        })
    }

    /// Forgets the page kept for `key`, returning it.
    pub fn take(&mut self, key: dsm_proto::peer::PageKey) -> Option<Box<[u8; PAGE_SIZE]>> {
        self.pages.remove(&key)
    }

    /// Forgets the replicas of a removed segment.
    pub fn remove_segment(&mut self, segment: dsm_proto::SegmentId) {
        self.pages.retain(|k, _| k.segment != segment);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn pages_are_the_memfd_contents() {
        let mut m = MemFd::create("test").unwrap();
        m.set_len(8192 + 100).unwrap();
        let other = File::from(m.share().unwrap());
        other.write_all_at(b"hello", 4096).unwrap();
        let page = m.page(1).unwrap().unwrap();
        let mut bytes = Vec::new();
        page.append_to(&mut bytes);
        assert_eq!(&bytes[..5], b"hello");
        page.fill_from(&[7u8; PAGE_SIZE]);
        let mut buf = [0u8; 3];
        other.read_exact_at(&mut buf, 4096).unwrap();
        assert_eq!(buf, [7, 7, 7]);
        assert!(m.page(2).unwrap().is_some(), "a partial last page counts");
        assert!(m.page(3).unwrap().is_none());
        m.set_len(4096).unwrap();
        assert!(m.page(1).unwrap().is_none(), "remapped at the new size");
        assert_eq!(other.metadata().unwrap().len(), 4096);
    }

    /// A process's mark (written through its own mapping of the table's memfd, past the
    /// table, as the handler does) is what the daemon reads, once.
    #[test]
    fn a_page_mark_follows_the_table_and_is_taken_once() {
        let table = StateTable::create("test", 3).unwrap();
        let process = File::from(table.share().unwrap());
        assert_eq!(process.metadata().unwrap().len(), 2 * table.len() as u64);
        table.set(2, dsm_proto::Access::Read);
        let mut entry = [0u8; 1];
        process.read_exact_at(&mut entry, 2).unwrap();
        assert_eq!(entry, [1]);
        let opened = |page: u64| {
            let mut m = [0u8; 1];
            process
                .read_exact_at(&mut m, table.len() as u64 + page)
                .unwrap();
            process
                .write_all_at(&[m[0] | 1], table.len() as u64 + page)
                .unwrap();
        };
        table.mark_ahead(1);
        table.mark_ahead(2);
        opened(2);
        opened(0);
        assert_eq!(table.unopened_ahead(), 1);
        assert_eq!(table.take_mark(1), Mark::Ahead { opened: false });
        assert_eq!(table.take_mark(2), Mark::Ahead { opened: true });
        assert_eq!(table.take_mark(2), Mark::Plain, "taken once");
        assert_eq!(table.take_mark(0), Mark::Plain, "opened, not read ahead");
        assert_eq!(table.take_mark(u32::MAX), Mark::Plain, "past the table");
        assert_eq!(table.unopened_ahead(), 0);
    }

    /// Counting the unopened pages of a big segment reads only the marks' pages that hold
    /// data, and allocates none.
    #[test]
    fn unopened_pages_are_counted_without_touching_the_holes() {
        let table = StateTable::create("test", 1 << 26).unwrap(); // 256 GiB of pages
        table.mark_ahead(5);
        table.mark_ahead((1 << 26) - 1);
        assert_eq!(table.unopened_ahead(), 2);
        let blocks = File::from(table.share().unwrap())
            .metadata()
            .unwrap()
            .blocks();
        assert!(blocks * 512 <= 2 * 4096, "{blocks} blocks allocated");
    }

    #[test]
    fn a_snapshot_holds_the_page_until_it_is_written() {
        let mut m = MemFd::create("test").unwrap();
        m.set_len(4096).unwrap();
        let other = File::from(m.share().unwrap());
        other.write_all_at(b"before", 0).unwrap();
        let key = dsm_proto::peer::PageKey {
            segment: dsm_proto::SegmentId(1),
            page: 0,
        };
        let mut kept = Replicas::default();
        m.page(0).unwrap().unwrap().copy_to(kept.slot(key));
        let sent = kept.take(key).unwrap();
        assert!(m.page(0).unwrap().unwrap().holds(&sent[..]));
        other.write_all_at(b"after", 0).unwrap();
        assert!(!m.page(0).unwrap().unwrap().holds(&sent[..]));
        assert!(kept.existing(key).is_none());
    }
}
