//! Messages to stderr from anywhere, the signal handler included: formatted into a fixed stack
//! buffer and written with one raw `write(2)`, so no allocation and no stdio lock.

use core::fmt::{self, Write};

const CAPACITY: usize = 512;

struct StackLine {
    buf: [u8; CAPACITY],
    len: usize,
}

impl Write for StackLine {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Truncate rather than fail: a cut message beats none.
        let room = CAPACITY - 1 - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes `dsm: <message>\n` to stderr. Async-signal-safe as long as the arguments' `Display`
/// implementations do not allocate (integers, `&str`, addresses do not).
pub fn say(args: fmt::Arguments<'_>) {
    let saved = crate::sys::errno();
    let mut line = StackLine {
        buf: [0; CAPACITY],
        len: 0,
    };
    let _ = line.write_str("dsm: ");
    let _ = line.write_fmt(args);
    line.buf[line.len] = b'\n';
    // SAFETY: the buffer is valid for `len + 1` bytes.
    unsafe { libc::syscall(libc::SYS_write, 2, line.buf.as_ptr(), line.len + 1) };
    crate::sys::set_errno(saved);
}

/// `say!("format", args…)`: see [`say`].
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::say::say(format_args!($($arg)*)) };
}
