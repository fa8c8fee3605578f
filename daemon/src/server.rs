//! The event loop: accepts local connections, reads frames, hands them to the segment registry
//! and the protocol core, and writes the replies. Thin on purpose: decisions live in
//! `dsm_core` and in [`crate::segments`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dsm_core::{FaultError, FaultId, Input, Node, Output};
use dsm_proto::client::{Reply, Request, ShmError};
use dsm_proto::ctl::{CtlReply, CtlRequest, PeerStatus, ProcessStatus, SegmentStatus, Status};
use dsm_proto::frame::{self, MAX_CLIENT_FRAME};
use dsm_proto::hello::{Hello, HelloReply, Role};
use dsm_proto::peer::PageKey;
use dsm_proto::{SegmentId, SessionId, MAGIC, PROTOCOL_VERSION};
use log::{debug, info, warn};
use mio::net::{TcpListener, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};

use crate::config::Config;
use crate::conn::{Conn, Kind, ReadEnd};
use crate::segments::{Change, Registry};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const PEER_LISTENER: Token = Token(2);
const FIRST_CONN: usize = 16;
/// How often the core hears the time (fault timeouts are checked at this granularity).
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Why the daemon could not start or keep running.
#[derive(Debug)]
pub enum ServerError {
    /// Another daemon answers on the socket path.
    SocketInUse(PathBuf),
    /// A system call failed; `context` says what we were doing.
    Io {
        /// What we were doing.
        context: String,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::SocketInUse(p) => write!(
                f,
                "another dsmd is already serving {}; stop it or pass a different --socket",
                p.display()
            ),
            ServerError::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for ServerError {}

fn io_context(context: impl Into<String>) -> impl FnOnce(io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

/// A client process attached to this node.
#[derive(Debug)]
struct Session {
    pid: u32,
    /// Segments the process maps (any part of, any number of times).
    maps: BTreeSet<SegmentId>,
    faults: u64,
}

/// The daemon's whole state.
pub struct Server {
    config: Config,
    poll: Poll,
    listener: UnixListener,
    peer_listener: Option<TcpListener>,
    signals: UnixStream,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    sessions: BTreeMap<SessionId, Session>,
    next_session: u64,
    registry: Registry,
    core: Node,
    started: Instant,
}

impl Server {
    /// Binds the sockets and installs the signal handlers.
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        let poll = Poll::new().map_err(io_context("cannot create the event loop"))?;
        let mut listener = bind_unix(&config.socket)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(io_context("cannot register the Unix socket"))?;
        let peer_listener = match config.listen {
            Some(addr) => {
                let mut l = TcpListener::bind(addr)
                    .map_err(io_context(format!("cannot listen for peers on {addr}")))?;
                poll.registry()
                    .register(&mut l, PEER_LISTENER, Interest::READABLE)
                    .map_err(io_context("cannot register the peer listener"))?;
                Some(l)
            }
            None => None,
        };
        let (read, write) =
            std::os::unix::net::UnixStream::pair().map_err(io_context("cannot make a pipe"))?;
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            let w = write
                .try_clone()
                .map_err(io_context("cannot clone the pipe"))?;
            signal_hook::low_level::pipe::register(sig, w)
                .map_err(io_context("cannot install signal handlers"))?;
        }
        read.set_nonblocking(true)
            .map_err(io_context("cannot make the pipe non-blocking"))?;
        let mut signals = UnixStream::from_std(read);
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(io_context("cannot register the signal pipe"))?;
        let node = config.node_id;
        Ok(Server {
            core: Node::new(dsm_core::Config {
                me: node,
                members: config.members(),
                manager: config.manager,
                fault_timeout_ms: config.fault_timeout_ms,
            }),
            config,
            poll,
            listener,
            peer_listener,
            signals,
            conns: HashMap::new(),
            next_token: FIRST_CONN,
            sessions: BTreeMap::new(),
            next_session: 1,
            registry: Registry::new(node),
            started: Instant::now(),
        })
    }

    /// Serves until SIGTERM or SIGINT, then removes the socket file.
    pub fn run(mut self) -> Result<(), ServerError> {
        info!(
            "dsmd {} node {} serving {}{}",
            env!("CARGO_PKG_VERSION"),
            self.config.node_id.0,
            self.config.socket.display(),
            match self.config.listen {
                Some(a) => format!(", peers on {a}"),
                None => String::new(),
            }
        );
        if !self.config.peers.is_empty() {
            warn!("peer connections are not implemented yet: running as a one-node cluster");
        }
        let mut events = Events::with_capacity(256);
        'serve: loop {
            if let Err(e) = self.poll.poll(&mut events, Some(TICK)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io_context("event loop failed")(e));
            }
            self.core.handle(Input::Tick {
                now_ms: self.started.elapsed().as_millis() as u64,
            });
            self.drain_core();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    SIGNALS => {
                        if self.signalled() {
                            break 'serve;
                        }
                    }
                    PEER_LISTENER => self.refuse_peers(),
                    token => self.on_event(token, event.is_readable(), event.is_writable()),
                }
            }
        }
        info!(
            "shutting down: {} segments, {} attached processes",
            self.registry.iter().count(),
            self.sessions.len()
        );
        if let Err(e) = std::fs::remove_file(&self.config.socket) {
            warn!("cannot remove {}: {e}", self.config.socket.display());
        }
        Ok(())
    }

    fn signalled(&mut self) -> bool {
        let mut buf = [0u8; 64];
        let mut got = false;
        loop {
            match io::Read::read(&mut self.signals, &mut buf) {
                Ok(0) => return got,
                Ok(_) => got = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return got,
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, token, Interest::READABLE)
                    {
                        warn!("cannot register a new connection: {e}");
                        continue;
                    }
                    self.conns
                        .insert(token, Conn::new(stream, MAX_CLIENT_FRAME));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("cannot accept a local connection: {e}");
                    return;
                }
            }
        }
    }

    fn refuse_peers(&mut self) {
        let Some(listener) = &self.peer_listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((_, addr)) => {
                    warn!("refused peer connection from {addr}: peer protocol not implemented yet")
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn on_event(&mut self, token: Token, readable: bool, writable: bool) {
        if readable {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            let end = match conn.fill() {
                Ok(end) => end,
                Err(e) => {
                    self.close(token, &format!("read failed: {e}"));
                    return;
                }
            };
            self.serve_frames(token);
            if let ReadEnd::Eof = end {
                let pending = self.conns.get(&token).map_or(0, |c| c.frames.pending());
                if pending > 0 {
                    self.close(token, &format!("closed mid-frame ({pending} bytes unread)"));
                } else {
                    self.drop_conn(token);
                }
                return;
            }
        }
        if writable {
            self.flush(token);
        }
    }

    fn serve_frames(&mut self, token: Token) {
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            let frame = match conn.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => {
                    self.close(token, &e.to_string());
                    return;
                }
            };
            let kind = conn.kind;
            let result = match kind {
                Kind::New => self.hello(token, &frame),
                Kind::Channel(session) => self.request(token, session, &frame),
                Kind::Ctl => self.ctl(token, &frame),
                Kind::Session(_) => Err("a session sent a frame; sessions only listen".into()),
            };
            if let Err(reason) = result {
                self.close(token, &reason);
                return;
            }
        }
    }

    fn hello(&mut self, token: Token, frame: &[u8]) -> Result<(), String> {
        let hello: Hello = frame::decode(frame).map_err(|e| format!("bad hello: {e}"))?;
        let node = self.config.node_id;
        if hello.magic != MAGIC {
            return Err("not a dsm client (wrong magic)".into());
        }
        if hello.version != PROTOCOL_VERSION {
            let reason = format!(
                "protocol version {} is not supported by dsmd {} (speaks {}); use matching libdsm.so and dsmctl",
                hello.version,
                env!("CARGO_PKG_VERSION"),
                PROTOCOL_VERSION
            );
            warn!("refusing a local connection: {reason}");
            return self.refuse(token, &reason);
        }
        let (kind, session) = match hello.role {
            Role::Session { pid } => {
                let id = SessionId(self.next_session);
                self.next_session += 1;
                self.sessions.insert(
                    id,
                    Session {
                        pid,
                        maps: BTreeSet::new(),
                        faults: 0,
                    },
                );
                info!("process {pid} attached (session {})", id.0);
                (Kind::Session(id), id)
            }
            Role::Channel { session, tid } => {
                if !self.sessions.contains_key(&session) {
                    let reason = format!("unknown session {}", session.0);
                    warn!("refusing a channel of thread {tid}: {reason}");
                    return self.refuse(token, &reason);
                }
                (Kind::Channel(session), session)
            }
            Role::Ctl => (Kind::Ctl, SessionId(0)),
        };
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.kind = kind;
        }
        self.send(token, &HelloReply::Welcome { node, session }, None);
        Ok(())
    }

    fn refuse(&mut self, token: Token, reason: &str) -> Result<(), String> {
        self.send(token, &HelloReply::Refused { reason }, None);
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.closing = true;
        }
        self.flush(token);
        Ok(())
    }

    fn request(&mut self, token: Token, session: SessionId, frame: &[u8]) -> Result<(), String> {
        let request: Request<'_> = frame::decode(frame).map_err(|e| e.to_string())?;
        if !self.sessions.contains_key(&session) {
            return Err(format!("session {} has ended", session.0));
        }
        let reply = match request {
            Request::Open {
                name,
                create,
                exclusive,
                truncate,
                mode,
            } => match self.registry.open(name, create, exclusive, truncate, mode) {
                Ok((seg, change)) => {
                    let reply = Reply::Opened {
                        segment: seg.id,
                        size: seg.size,
                        base: seg.base,
                    };
                    match seg.store.share() {
                        Ok(fd) => {
                            self.apply(change);
                            self.send(token, &reply, Some(fd));
                            return Ok(());
                        }
                        Err(e) => {
                            warn!("cannot share segment {name}: {e}");
                            self.apply(change);
                            Reply::Failed(ShmError::NoMemory)
                        }
                    }
                }
                Err(e) => {
                    debug!("open {name}: {}", e.describe());
                    Reply::Failed(e)
                }
            },
            Request::Resize { segment, size } => match self.registry.resize(segment, size) {
                Ok(change) => {
                    self.apply(change);
                    let base = self.registry.get(segment).map_or(0, |s| s.base);
                    Reply::Resized { size, base }
                }
                Err(e) => Reply::Failed(e),
            },
            Request::Map {
                segment,
                offset,
                len,
            } => {
                let first = self
                    .sessions
                    .get_mut(&session)
                    .is_some_and(|s| s.maps.insert(segment));
                match self.registry.map(segment, offset, len, first) {
                    Ok(base) => Reply::Mapped { base },
                    Err(e) => {
                        if first {
                            self.sessions
                                .get_mut(&session)
                                .map(|s| s.maps.remove(&segment));
                        }
                        Reply::Failed(e)
                    }
                }
            }
            Request::Unmap { segment } => {
                let had = self
                    .sessions
                    .get_mut(&session)
                    .is_some_and(|s| s.maps.remove(&segment));
                if had {
                    let change = self.registry.unmap(segment);
                    self.apply(change);
                    Reply::Done
                } else {
                    Reply::Failed(ShmError::InvalidArgument)
                }
            }
            Request::Unlink { name } => match self.registry.unlink(name) {
                Ok(change) => {
                    self.apply(change);
                    Reply::Done
                }
                Err(e) => Reply::Failed(e),
            },
            Request::Fault {
                segment,
                page,
                write,
            } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.faults += 1;
                }
                debug!(
                    "fault: session {} {segment} page {page} {}",
                    session.0,
                    if write { "write" } else { "read" }
                );
                match self.registry.get(segment) {
                    None => Reply::Failed(ShmError::Gone),
                    Some(seg) if page >= seg.pages() => Reply::Failed(ShmError::OutOfRange),
                    Some(_) => {
                        if let Some(conn) = self.conns.get_mut(&token) {
                            conn.busy = true;
                        }
                        self.core.handle(Input::Fault {
                            id: FaultId(token.0 as u64),
                            key: PageKey { segment, page },
                            write,
                            now_ms: self.started.elapsed().as_millis() as u64,
                        });
                        self.drain_core();
                        return Ok(());
                    }
                }
            }
        };
        self.send(token, &reply, None);
        Ok(())
    }

    fn apply(&mut self, change: Change) {
        match change {
            // The core needs no sizes: the driver checks a fault is inside its segment.
            Change::None | Change::Sized(..) => {}
            Change::Removed(segment) => {
                self.core.handle(Input::SegmentRemoved { segment });
                self.drain_core();
            }
        }
    }

    fn drain_core(&mut self) {
        while let Some(output) = self.core.poll_output() {
            let (id, reply) = match output {
                Output::Grant { id, access, .. } => (id, Reply::Granted { access }),
                Output::Fail { id, error } => {
                    let error = match error {
                        FaultError::UnknownSegment => ShmError::Gone,
                        FaultError::TimedOut => ShmError::TimedOut,
                    };
                    debug!("fault {} failed: {}", id.0, error.describe());
                    (id, Reply::Failed(error))
                }
                Output::Send { to, msg } => {
                    warn!("no connection to {to} for {msg:?}: peers are not implemented yet");
                    continue;
                }
                Output::Revoke { key, .. } => {
                    // One node never gives pages away, so nothing asks for this yet.
                    self.core.handle(Input::Revoked { key });
                    continue;
                }
                Output::Violation { from, what } => {
                    warn!("protocol violation by {from}: {what}");
                    continue;
                }
            };
            let token = Token(id.0 as usize);
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.busy = false;
                self.send(token, &reply, None);
                self.serve_frames(token);
            }
        }
    }

    fn ctl(&mut self, token: Token, frame: &[u8]) -> Result<(), String> {
        let request: CtlRequest = frame::decode(frame).map_err(|e| e.to_string())?;
        let reply = match request {
            CtlRequest::Status => CtlReply::Status(self.status()),
        };
        self.send(token, &reply, None);
        Ok(())
    }

    fn status(&self) -> Status {
        let segments = self
            .registry
            .iter()
            .map(|seg| {
                let (readable, writable) = self.core.access_counts(seg.id);
                SegmentStatus {
                    name: seg.name.as_ref().map(|n| format!("/{n}")),
                    id: seg.id.0,
                    size: seg.size,
                    base: seg.base,
                    mode: seg.mode,
                    pages: u64::from(seg.pages()),
                    resident: readable + writable,
                    readable,
                    writable,
                    mappings: seg.mappings,
                }
            })
            .collect();
        let processes = self
            .sessions
            .iter()
            .map(|(id, s)| ProcessStatus {
                pid: s.pid,
                session: id.0,
                segments: s
                    .maps
                    .iter()
                    .map(|seg| {
                        self.registry
                            .get(*seg)
                            .map_or_else(|| format!("{:#x}", seg.0), |s| s.display_name())
                    })
                    .collect(),
                faults: s.faults,
            })
            .collect();
        Status {
            node: self.config.node_id,
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            listen: self
                .config
                .listen
                .map_or_else(String::new, |a| a.to_string()),
            socket: self.config.socket.display().to_string(),
            peers: self
                .config
                .peers
                .iter()
                .map(|p| PeerStatus {
                    node: p.node,
                    addr: p.addr.to_string(),
                    connected: false,
                })
                .collect(),
            segments,
            processes,
        }
    }

    fn send<T: serde::Serialize>(&mut self, token: Token, msg: &T, fd: Option<OwnedFd>) {
        let bytes = match frame::encode(msg) {
            Ok(b) => b,
            Err(e) => {
                warn!("cannot encode a reply: {e}");
                return;
            }
        };
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if let Err(e) = conn.queue(bytes, fd) {
            self.close(token, &e.to_string());
            return;
        }
        self.flush(token);
    }

    fn flush(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let more = match conn.flush() {
            Ok(more) => more,
            Err(e) => {
                self.close(token, &format!("write failed: {e}"));
                return;
            }
        };
        if !more && conn.closing {
            self.drop_conn(token);
            return;
        }
        if more != conn.want_write {
            conn.want_write = more;
            let interest = if more {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.stream, token, interest)
            {
                self.close(token, &format!("cannot reregister: {e}"));
            }
        }
    }

    /// Closes a connection whose peer misbehaved or failed: logged as a warning.
    fn close(&mut self, token: Token, reason: &str) {
        if let Some(conn) = self.conns.get(&token) {
            warn!(
                "closing local connection ({}): {reason}",
                describe(conn.kind)
            );
        }
        self.drop_conn(token);
    }

    /// Forgets a connection; a session's end releases what its process mapped.
    fn drop_conn(&mut self, token: Token) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        debug!("connection closed ({})", describe(conn.kind));
        if let Kind::Session(id) = conn.kind {
            self.end_session(id);
        }
    }

    fn end_session(&mut self, id: SessionId) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        let released = session.maps.len();
        for segment in session.maps {
            let change = self.registry.unmap(segment);
            self.apply(change);
        }
        info!(
            "process {} detached (session {}): released its mappings of {released} segments",
            session.pid, id.0
        );
    }
}

fn describe(kind: Kind) -> String {
    match kind {
        Kind::New => "before its hello".into(),
        Kind::Session(s) => format!("session {}", s.0),
        Kind::Channel(s) => format!("channel of session {}", s.0),
        Kind::Ctl => "dsmctl".into(),
    }
}

/// Binds the Unix socket, replacing a stale socket file but never a live daemon's.
fn bind_unix(path: &Path) -> Result<UnixListener, ServerError> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(io_context(format!(
                "cannot create directory {}",
                dir.display()
            )))?;
        }
    }
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ServerError::SocketInUse(path.to_owned())),
            Err(_) => {
                info!("removing stale socket {}", path.display());
                std::fs::remove_file(path).map_err(io_context(format!(
                    "cannot remove stale {}",
                    path.display()
                )))?;
            }
        }
    }
    let std_listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(io_context(format!("cannot bind {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_context(
        format!("cannot set the mode of {}", path.display()),
    ))?;
    std_listener
        .set_nonblocking(true)
        .map_err(io_context("cannot make the socket non-blocking"))?;
    Ok(UnixListener::from_std(std_listener))
}
