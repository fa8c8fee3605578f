//! The node's copy of each segment: one memfd per segment, shared with local processes.
//!
//! Processes map the memfd (MAP_SHARED), so every process on the node sees the node's copy and
//! they share it among themselves as ordinary shared memory. This module and [`fdpass`] are the
//! only places in the daemon with `unsafe`.

pub mod fdpass;

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

/// The memory behind one segment on this node.
#[derive(Debug)]
pub struct MemFd {
    file: File,
}

impl MemFd {
    /// A new, empty memfd; `label` shows in `/proc/PID/maps` of every process that maps it.
    pub fn create(label: &str) -> io::Result<MemFd> {
        let name = CString::new(format!("dsm:{label}"))
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
        })
    }

    /// Sets the size; pages past a smaller size are discarded, new ones read as zeros.
    pub fn set_len(&self, size: u64) -> io::Result<()> {
        self.file.set_len(size)
    }

    /// Reads `buf.len()` bytes at `offset`; bytes past the end read as zeros.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64)? {
                0 => break,
                n => done += n,
            }
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    /// A new descriptor for the same memory, to hand to a client.
    pub fn share(&self) -> io::Result<OwnedFd> {
        self.file.as_fd().try_clone_to_owned()
    }
}

impl AsFd for MemFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfd_resizes_and_shares_contents() {
        let m = MemFd::create("test").unwrap();
        m.set_len(8192).unwrap();
        let other = File::from(m.share().unwrap());
        other.write_all_at(b"hello", 4096).unwrap();
        let mut buf = [0u8; 5];
        m.file.read_exact_at(&mut buf, 4096).unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(other.metadata().unwrap().len(), 8192);
    }
}
