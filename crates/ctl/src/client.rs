//! The blocking client side of the ctl protocol.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use dsm_proto::ctl::{CtlReply, CtlRequest};
use dsm_proto::frame::{self, HEADER_LEN, MAX_CTL_REPLY_FRAME};
use dsm_proto::hello::{Hello, HelloReply, Role};

/// Sends one request and returns the daemon's reply; errors are sentences for a person.
pub fn ask(socket: &Path, request: &CtlRequest) -> Result<CtlReply, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach dsmd at {}: {e}; is dsmd running? Pass --socket or set DSM_SOCKET to its --socket path",
            socket.display()
        )
    })?;
    let timeout = Some(Duration::from_secs(10));
    stream
        .set_read_timeout(timeout)
        .and_then(|_| stream.set_write_timeout(timeout))
        .map_err(|e| format!("cannot set socket timeouts: {e}"))?;
    send(&mut stream, &Hello::new(Role::Ctl))?;
    let hello = recv(&mut stream)?;
    match frame::decode::<HelloReply<'_>>(&hello)
        .map_err(|e| format!("bad answer from dsmd: {e}"))?
    {
        HelloReply::Welcome { .. } => {}
        HelloReply::Refused { reason } => return Err(format!("dsmd refused: {reason}")),
    }
    send(&mut stream, request)?;
    let reply = recv(&mut stream)?;
    frame::decode_owned(&reply).map_err(|e| format!("bad answer from dsmd: {e}"))
}

fn send<T: serde::Serialize>(stream: &mut UnixStream, msg: &T) -> Result<(), String> {
    let bytes = frame::encode(msg).map_err(|e| e.to_string())?;
    stream
        .write_all(&bytes)
        .map_err(|e| format!("cannot send to dsmd: {e}"))
}

fn recv(stream: &mut UnixStream) -> Result<Vec<u8>, String> {
    let mut header = [0u8; HEADER_LEN];
    stream
        .read_exact(&mut header)
        .map_err(|e| format!("dsmd closed the connection or timed out: {e}"))?;
    let len = frame::peek_len(&header, MAX_CTL_REPLY_FRAME)
        .map_err(|e| e.to_string())?
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("dsmd closed the connection mid-answer: {e}"))?;
    Ok(body)
}
