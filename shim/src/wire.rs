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
        let mut buf = [0u8; BUF];
        match recv::<HelloReply<'_>>(fd, &mut buf, None)? {
            HelloReply::Welcome { node, session } => Ok((node, session)),
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
