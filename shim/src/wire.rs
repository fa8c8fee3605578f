//! Framed request/reply with the daemon over a blocking socket, in stack buffers only, so the
//! signal handler can use it.

use dsm_proto::client::{Reply, Request};
use dsm_proto::frame::{self, HEADER_LEN};
use dsm_proto::hello::{Hello, HelloReply, Role};
use dsm_proto::{NodeId, SessionId};
use serde::{Deserialize, Serialize};

use crate::sys::{self, Errno, SysResult};

/// Largest frame the shim sends or receives (requests carry at most a 255-byte name).
pub const BUF: usize = 1024;

/// Sends one message.
pub fn send<T: Serialize>(fd: i32, msg: &T) -> SysResult<()> {
    let mut buf = [0u8; BUF];
    let n = frame::encode_into(msg, &mut buf).map_err(|_| libc::EMSGSIZE)?;
    sys::send_all(fd, &buf[..n])
}

/// Receives one message into `buf`; a passed descriptor lands in `fd_out`.
pub fn recv<'b, T: Deserialize<'b>>(
    fd: i32,
    buf: &'b mut [u8; BUF],
    mut fd_out: Option<&mut i32>,
) -> SysResult<T> {
    let mut header = [0u8; HEADER_LEN];
    sys::recv_exact(fd, &mut header, fd_out.as_deref_mut())?;
    let len = frame::peek_len(&header, BUF)
        .map_err(|_| libc::EPROTO)?
        .ok_or(libc::EPROTO)?;
    sys::recv_exact(fd, &mut buf[..len], fd_out)?;
    frame::decode(&buf[..len]).map_err(|_| libc::EPROTO)
}

/// How long a fault, and a directory request, wait for their reply (ms; from the daemon's
/// welcome). 0: no bound.
static LIMIT_MS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
static DIR_LIMIT_MS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// The daemon replicates at release points (its welcome said so): releases wait for it.
static REPLICATING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether the daemon replicates at release points, so that a release returns only once what
/// this node wrote before it is on the replica nodes.
pub fn replicating() -> bool {
    REPLICATING.load(core::sync::atomic::Ordering::Relaxed)
}

/// The daemon said releases wait for replicas from now on, or no longer.
pub fn set_replicating(on: bool) {
    REPLICATING.store(on, core::sync::atomic::Ordering::Relaxed);
}

/// Which bound a request has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// A fault, or a short question.
    Fault,
    /// A segment directory request (may wait out an election).
    Directory,
}

/// The bound on a request of this kind, in ms (0 before the first connection: none).
pub fn limit_ms(bound: Bound) -> u64 {
    match bound {
        Bound::Fault => LIMIT_MS.load(core::sync::atomic::Ordering::Relaxed),
        Bound::Directory => DIR_LIMIT_MS.load(core::sync::atomic::Ordering::Relaxed),
    }
}

/// How long a new connection waits for the daemon's welcome.
const HELLO_LIMIT_MS: u64 = 10_000;

/// Waits until `fd` is readable, at most `limit_ms`; `Ok(false)` if it did not become so.
fn wait_readable(fd: i32, limit_ms: u64) -> SysResult<bool> {
    let deadline = sys::monotonic_ns() + limit_ms * 1_000_000;
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let left_ms = deadline.saturating_sub(sys::monotonic_ns()) / 1_000_000;
        // SAFETY: one valid pollfd.
        let r = unsafe {
            libc::syscall(
                libc::SYS_poll,
                &mut pfd as *mut libc::pollfd,
                1,
                left_ms as i32,
            )
        };
        match r {
            0 => return Ok(false),
            r if r > 0 => return Ok(true),
            _ if sys::errno() == libc::EINTR => continue,
            _ => return Err(sys::errno()),
        }
    }
}

/// [`call`], failing with `ETIMEDOUT` if the reply does not come within the daemon's bound: a
/// daemon that is stopped (SIGSTOP) or wedged does not hold its processes for ever. The
/// channel is then out of step, and the caller closes it. Async-signal-safe.
pub fn call_bounded(
    fd: i32,
    request: &Request<'_>,
    fd_out: Option<&mut i32>,
    bound: Bound,
) -> SysResult<Reply> {
    send(fd, request)?;
    sys::spin_until_readable(fd, crate::config::get().spin_ns);
    let limit = limit_ms(bound);
    if limit > 0 && !wait_readable(fd, limit)? {
        return Err(libc::ETIMEDOUT);
    }
    let mut buf = [0u8; BUF];
    recv(fd, &mut buf, fd_out)
}

/// Sends `request` and waits for its reply.
pub fn call(fd: i32, request: &Request<'_>, fd_out: Option<&mut i32>) -> SysResult<Reply> {
    send(fd, request)?;
    sys::spin_until_readable(fd, crate::config::get().spin_ns);
    let mut buf = [0u8; BUF];
    recv(fd, &mut buf, fd_out)
}

/// [`call`], except that a signal handler running while the reply is awaited makes it send
/// `withdraw` once (the daemon then ends the request early, if it still can).
pub fn call_interruptible(
    fd: i32,
    request: &Request<'_>,
    withdraw: &Request<'_>,
) -> SysResult<Reply> {
    send(fd, request)?;
    let mut withdrawn = false;
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // poll is never restarted after a handler (SA_RESTART or not): EINTR says one ran.
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::syscall(libc::SYS_poll, &mut pfd as *mut libc::pollfd, 1, -1) };
        if r >= 0 {
            break;
        }
        match sys::errno() {
            libc::EINTR if !withdrawn => {
                send(fd, withdraw)?;
                withdrawn = true;
            }
            libc::EINTR => {}
            e => return Err(e),
        }
    }
    let mut buf = [0u8; BUF];
    recv(fd, &mut buf, None)
}

/// Connects to the daemon and introduces the connection as `role`.
pub fn connect(role: Role) -> Result<(i32, NodeId, SessionId), Errno> {
    let config = crate::config::get();
    let addr = config.addr.as_ref().ok_or(libc::ENAMETOOLONG)?;
    let fd = sys::connect_unix(addr)?;
    let result = (|| {
        send(fd, &Hello::new(role))?;
        // A daemon that accepts but never answers (stopped, wedged) does not hold us for ever.
        if !wait_readable(fd, HELLO_LIMIT_MS)? {
            crate::say!(
                "dsmd at {} accepted the connection but did not answer in {HELLO_LIMIT_MS} ms: \
                 it is stopped or wedged",
                config.socket
            );
            return Err(libc::ETIMEDOUT);
        }
        let mut buf = [0u8; BUF];
        match recv::<HelloReply<'_>>(fd, &mut buf, None)? {
            HelloReply::Welcome {
                node,
                session,
                limit_ms,
                dir_limit_ms,
                replicating,
            } => {
                LIMIT_MS.store(limit_ms, core::sync::atomic::Ordering::Relaxed);
                DIR_LIMIT_MS.store(dir_limit_ms, core::sync::atomic::Ordering::Relaxed);
                REPLICATING.store(replicating, core::sync::atomic::Ordering::Relaxed);
                Ok((node, session))
            }
            HelloReply::Refused { reason } => {
                crate::say!("dsmd at {} refused the connection: {reason}", config.socket);
                Err(libc::ECONNREFUSED)
            }
        }
    })();
    match result {
        Ok((node, session)) => Ok((fd, node, session)),
        Err(e) => {
            sys::close(fd);
            Err(e)
        }
    }
}
