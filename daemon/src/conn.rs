//! One non-blocking Unix stream connection: frames in, frames (and descriptors) out.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use dsm_proto::client::Request;
use dsm_proto::frame::{self, FrameBuffer, FrameError};
use dsm_proto::sync::SyncOp;
use dsm_proto::SessionId;
use mio::net::UnixStream;

use crate::page_store::fdpass;

/// Bytes a connection may have queued for sending before we give up on it.
const MAX_QUEUED: usize = 256 * 1024 * 1024;

/// What to wait for on a connection: always readable, writable too while output is queued.
pub fn interest(output_queued: bool) -> mio::Interest {
    if output_queued {
        mio::Interest::READABLE | mio::Interest::WRITABLE
    } else {
        mio::Interest::READABLE
    }
}

/// What a connection turned out to be, after its hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No hello yet.
    New,
    /// A client process's session.
    Session(SessionId),
    /// One thread's request channel of a session.
    Channel {
        /// The session.
        session: SessionId,
        /// The thread.
        tid: u32,
    },
    /// `dsmctl`.
    Ctl,
}

/// A connection and its buffers.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: UnixStream,
    /// What it is.
    pub kind: Kind,
    /// Incoming bytes not yet taken as frames.
    pub frames: FrameBuffer,
    /// A request is being served; later frames wait until its reply is queued.
    pub busy: bool,
    /// The page a fault on this channel waits for, and since when.
    pub fault: Option<(dsm_proto::peer::PageKey, std::time::Instant)>,
    /// The lock-service request this channel waits for (its ticket).
    pub sync_ticket: Option<u64>,
    /// Close once everything queued is sent.
    pub closing: bool,
    /// Whether WRITABLE interest is registered.
    pub want_write: bool,
    out: VecDeque<Outgoing>,
    queued: usize,
    /// When it was accepted (one that never says its hello is closed).
    pub opened: std::time::Instant,
    /// Reading stopped with [`MAX_BUFFERED`] bytes unserved; resumes once they are served.
    pub throttled: bool,
}

/// Bytes a connection may have read but not yet served: past this the daemon stops reading it
/// (the client's writes then block), so a client that pipelines requests while one waits (a
/// lock) cannot make the daemon buffer without end.
pub const MAX_BUFFERED: usize = 256 * 1024;

#[derive(Debug)]
struct Outgoing {
    bytes: Vec<u8>,
    sent: usize,
    fd: Option<OwnedFd>,
}

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadEnd {
    /// The socket has no more bytes for now.
    Drained,
    /// The peer closed its end.
    Eof,
}

impl Conn {
    /// A fresh connection whose frames may be up to `max_frame` bytes.
    pub fn new(stream: UnixStream, max_frame: usize) -> Conn {
        Conn {
            stream,
            kind: Kind::New,
            frames: FrameBuffer::new(max_frame),
            busy: false,
            fault: None,
            sync_ticket: None,
            closing: false,
            want_write: false,
            out: VecDeque::new(),
            queued: 0,
            opened: std::time::Instant::now(),
            throttled: false,
        }
    }

    /// Reads what is available into the frame buffer, up to [`MAX_BUFFERED`] unserved bytes.
    pub fn fill(&mut self) -> io::Result<ReadEnd> {
        thread_local! {
            // Read into once allocated: a fresh zeroed buffer per read cost a 16 KiB memset
            // on every request.
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 16 * 1024]);
        }
        BUF.with_borrow_mut(|buf| loop {
            if self.frames.pending() >= MAX_BUFFERED {
                self.throttled = true;
                return Ok(ReadEnd::Drained);
            }
            match self.stream.read(buf) {
                Ok(0) => return Ok(ReadEnd::Eof),
                Ok(n) => self.frames.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadEnd::Drained),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        })
    }

    /// The next complete frame, unless a request is still being served: then only a
    /// withdrawal of that request (a signal interrupted the process's `sem_wait`) is read.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.closing {
            return Ok(None);
        }
        if self.busy {
            let withdrawal = matches!(
                self.frames.peek()?.map(frame::decode::<Request<'_>>),
                Some(Ok(Request::Sync {
                    op: SyncOp::Withdraw,
                    ..
                }))
            );
            if !withdrawal {
                return Ok(None);
            }
        }
        self.frames.pop()
    }

    /// Queues a frame, with a descriptor riding on its first byte if `fd` is given.
    pub fn queue(&mut self, bytes: Vec<u8>, fd: Option<OwnedFd>) -> io::Result<()> {
        self.queued += bytes.len();
        if self.queued > MAX_QUEUED {
            return Err(io::Error::other("peer is not reading its replies"));
        }
        self.out.push_back(Outgoing { bytes, sent: 0, fd });
        Ok(())
    }

    /// Sends what the socket accepts now; returns whether anything is still queued.
    pub fn flush(&mut self) -> io::Result<bool> {
        while let Some(front) = self.out.front_mut() {
            let rest = &front.bytes[front.sent..];
            let result = match front.fd.take() {
                Some(fd) => {
                    let r = fdpass::send_with_fd(self.stream.as_fd(), rest, fd.as_fd());
                    if r.is_err() {
                        front.fd = Some(fd);
                    }
                    r
                }
                None => self.stream.write(rest),
            };
            match result {
                Ok(n) => {
                    front.sent += n;
                    self.queued -= n;
                    if front.sent == front.bytes.len() {
                        self.out.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }
}
