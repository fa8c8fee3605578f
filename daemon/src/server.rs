//! The event loop: local connections (processes and `dsmctl`), peer links, membership and the
//! segment directory (on Raft), and the protocol core. Thin on purpose: decisions live in
//! `dsm_core` ([`Node`], [`Members`], [`Service`]) and in [`crate::store`]; this file carries
//! bytes between them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dsm_core::members::{MemberInput, MemberOutput, Members, Timing};
use dsm_core::{
    FaultError, FaultId, Input, Node, Output, Revocations, RevokeInput, RevokeOutput, Service,
};
use dsm_proto::client::{Push, PushAck, Reply, Request, ShmError};
use dsm_proto::ctl::{
    CtlReply, CtlRequest, MemberStatus, PeerStatus, ProcessStatus, SegmentStatus, Status,
};
use dsm_proto::frame::{self, MAX_CLIENT_FRAME};
use dsm_proto::hello::{Hello, HelloReply, Role};
use dsm_proto::peer::{Caller, DirMsg, DirOp, PageKey, PeerFrame, PeerMsg, SegmentMeta};
use dsm_proto::{NodeId, SegmentId, SessionId, MAGIC, PAGE_SIZE, PROTOCOL_VERSION};
use log::{debug, info, warn};
use mio::net::{TcpListener, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};

use crate::config::Config;
use crate::conn::{Conn, Kind, ReadEnd, MAX_BUFFERED};
use crate::page_store::{Mark, Page};
use crate::peers::{Identity, Incoming, Peers};
use crate::store::Store;

mod fastlock;
mod locks;

use locks::AfterRelease;

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const PEER_LISTENER: Token = Token(2);
const FIRST_CONN: usize = 16;
/// How often the core hears the time and links retry (timeouts have this granularity).
/// The shortest sleep between two rounds of timed work (a deadline that stays due after its
/// round cannot make the loop spin).
const MIN_SLEEP: Duration = Duration::from_millis(1);
/// A directory request waits this much longer than a fault: long enough for a Raft election
/// (1–2 s, a few rounds under load) after the leader died.
const ELECTION_ALLOWANCE_MS: u64 = 5_000;
/// How long a directory request may take before it is cancelled.
fn dir_timeout_ms(fault_timeout_ms: u64) -> u64 {
    fault_timeout_ms + ELECTION_ALLOWANCE_MS
}

/// How long a link stays down before the leader declares its node dead: half the fault
/// timeout (at least 1 s), so that a fault waiting on a dead node (an invalidation it will never
/// acknowledge, a page it held) is answered — by the takeover, or `Lost` — before it times out.
/// A cut-off node fences itself sooner (no leader heard after 1–2 s; 3 s of silence).
fn death_ms(fault_timeout_ms: u64) -> u64 {
    (fault_timeout_ms / 2).max(1_000)
}

/// Messages held at most from a peer daemon whose join has not committed.
const MAX_HELD: usize = 65_536;

/// Why the daemon could not start or keep running.
#[derive(Debug)]
pub enum ServerError {
    /// Another daemon answers on the socket path.
    SocketInUse(PathBuf),
    /// The configuration cannot work; the message says what to do.
    Config(String),
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
            ServerError::Config(why) => f.write_str(why),
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
    token: Token,
    /// Who the process is (from its socket), for every permission check.
    who: Caller,
    /// The process as the kernel saw it connect: its channels must be the same process.
    cred_pid: i32,
    /// Segments the process maps (any part of, any number of times).
    maps: BTreeSet<SegmentId>,
    /// Segments the process opened (held until it ends: `close` is not seen).
    opened: BTreeSet<SegmentId>,
    /// Of those, the ones it may write (opened `O_RDWR` with the mode allowing it).
    writable: BTreeSet<SegmentId>,
    faults: u64,
    /// Whether it ever used the lock service (its end is then news for every home).
    used_sync: bool,
}

/// A client request waiting for its directory operation to commit.
#[derive(Debug, Clone, Copy)]
enum Parked {
    /// `shm_open`, or a SysV attach by id; whether for writing.
    Open(Token, bool),
    Resize(Token),
    Unlink(Token),
    /// A request answered `Done` once it commits (`fchmod`/`fchown`).
    Done(Token),
    /// A process's `mmap`, the node's first of the segment, waits for the directory to fix its
    /// base (`DirOp::Map`).
    Map {
        token: Token,
        session: SessionId,
        segment: SegmentId,
        offset: u64,
        len: u64,
    },
    /// Attach/Detach: nobody waits.
    Notice,
    /// `dsmctl rm`: answered with a [`CtlReply`].
    CtlRemove(Token),
}

/// The daemon's whole state.
pub struct Server {
    config: Config,
    poll: Poll,
    listener: UnixListener,
    peer_listener: Option<TcpListener>,
    signals: UnixStream,
    conns: HashMap<Token, Conn>,
    /// Most local connections at once (from the descriptor limit).
    max_conns: usize,
    /// Rate limit for complaints about bad input.
    limit: crate::ratelimit::RateLimit,
    /// Local connections that have not said their hello, and their tokens in accept order
    /// (some may have said it or gone since: skipped when met).
    silent: usize,
    hello_due: std::collections::VecDeque<Token>,
    /// Channels whose frames are being served now: an answer given inside that loop does not
    /// start another (a client pipelining requests must not make the daemon recurse per request).
    serving: HashSet<Token>,
    next_token: usize,
    sessions: BTreeMap<SessionId, Session>,
    next_session: u64,
    /// Membership and the directory (Raft).
    members: Members,
    /// The nodes the coherence core and the lock service take as the cluster's founders.
    founders: Vec<NodeId>,
    /// Releases under way (`--replicas`), with the lock request each holds back.
    releasing: HashMap<u64, Option<AfterRelease>>,
    /// Replicas kept of other nodes' pages.
    replicas: crate::page_store::Replicas,
    /// The bytes of replicas sent while the page's writers could still store to it
    /// (`Node::checking`): sent from here, and compared with the page when the writers'
    /// revocation ends (`Input::Rewritten`). At most one per page being replicated.
    snapshots: crate::page_store::Replicas,
    /// Pages read ahead and lost since: (opened by a process first, never opened). Which
    /// pages are read ahead and whether a process opened them is in their marks
    /// (`StateTable::mark_ahead`).
    ahead_lost: (u64, u64),
    next_release: u64,
    last_release: Instant,
    /// This daemon's incarnation.
    incarnation: u64,
    /// Why the daemon must stop, once it must (checked by the event loop).
    fatal: Option<String>,
    /// The incarnation each peer link reaches now (from its hello).
    link_inc: BTreeMap<NodeId, u64>,
    /// Messages from a peer daemon that is not yet a member (a new incarnation whose join has
    /// not committed): handled once it is, dropped if it never is.
    held: BTreeMap<NodeId, std::collections::VecDeque<Incoming>>,
    /// Peers whose link is down, since when, and whether waits homed there were failed.
    unreachable: BTreeMap<NodeId, (Instant, bool)>,
    store: Store,
    core: Node,
    peers: Peers,
    parked: HashMap<u64, (Parked, Instant)>,
    next_request: u64,
    /// Whether releases wait for replicas (what sessions were told): with `--replicas` above
    /// 0, once the cluster has another node to hold them (configured, or joined).
    replicating: bool,
    /// Revocations of local processes' access under way (a grant carries their number, see
    /// `Reply::Granted::seq`).
    revocations: Revocations,
    /// Recent fault latencies: [served at once, had to wait].
    latency: [Latencies; 2],
    /// Faults per page that reached the daemon (`dsmctl top`'s hottest pages); cleared when it
    /// would pass [`HOT_PAGES`] pages.
    hot: HashMap<PageKey, u64>,
    /// A remote fault's stages here: [its request read → the request to a peer sent, → the
    /// grant received, → the answer sent].
    stages: [Latencies; 3],
    /// When this node's own request for a page went out, and when its grant came.
    asked_at: HashMap<PageKey, Instant>,
    granted_at: HashMap<PageKey, Instant>,
    started: Instant,
    /// The lock, condition, barrier and allocation service.
    sync: Service,
    /// Local requests under way in the service, by ticket.
    tickets: HashMap<u64, Token>,
    next_ticket: u64,
    /// Mutexes delegated to local processes, and the lock tables they use.
    fast: fastlock::FastLocks,
}

/// Notes when something happened to `key`, in a map kept small: a page whose fault never came
/// (read ahead, given up) is forgotten with the rest once it holds 4,096.
fn stamp(map: &mut HashMap<PageKey, Instant>, key: PageKey) {
    if map.len() >= 4_096 {
        map.clear();
    }
    map.insert(key, Instant::now());
}

/// The most recent fault latencies, for percentiles.
#[derive(Default)]
struct Latencies {
    recent: std::collections::VecDeque<u32>,
    /// Every sample since the start (for `dsmctl stats --prometheus`).
    all: Option<dsm_proto::ctl::Histogram>,
}

impl Latencies {
    const KEEP: usize = 10_000;

    fn record(&mut self, d: Duration) {
        if self.recent.len() == Self::KEEP {
            self.recent.pop_front();
        }
        let us = d.as_micros().min(u128::from(u32::MAX)) as u32;
        self.recent.push_back(us);
        self.all
            .get_or_insert_with(dsm_proto::ctl::Histogram::new)
            .record(u64::from(us));
    }

    fn histogram(&self) -> dsm_proto::ctl::Histogram {
        self.all.clone().unwrap_or_default()
    }

    fn percentiles(&self) -> dsm_proto::ctl::Percentiles {
        let mut v: Vec<u32> = self.recent.iter().copied().collect();
        if v.is_empty() {
            return Default::default();
        }
        v.sort_unstable();
        let at = |q: f64| u64::from(v[((v.len() - 1) as f64 * q).round() as usize]);
        dsm_proto::ctl::Percentiles {
            count: v.len() as u64,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

impl Server {
    /// Binds the sockets and installs the signal handlers.
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        raise_map_count();
        note_halt_polling();
        let alone = config.peers.is_empty() && config.joins.is_empty();
        let replicating = config.replicas > 0 && !alone;
        let key = config.cluster_key().map_err(ServerError::Config)?;
        if key.is_none() && !(config.peers.is_empty() && config.joins.is_empty()) {
            warn!("--insecure: peer links are neither authenticated nor encrypted");
        }
        let poll = Poll::new().map_err(io_context("cannot create the event loop"))?;
        // The peer port first: if it is taken, fail before a socket file exists for clients to
        // find with nobody behind it.
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
        let mut listener = bind_unix(&config.socket)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(io_context("cannot register the Unix socket"))?;
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
        let me = config.node_id;
        let members = config.members();
        let incarnation = incarnation();
        let peers = Peers::new(
            Identity {
                node: me,
                cluster: config.cluster.clone(),
                manager: config.manager.as_str().into(),
                incarnation,
                key: key.clone(),
                formed: config.peers.is_empty() && config.joins.is_empty(),
                listen: config.advertise.or(config.listen),
            },
            &config
                .peers
                .iter()
                .map(|p| (p.node, p.addr))
                .collect::<Vec<_>>(),
            &config.joins,
        );
        let timing = Timing {
            tick_ms: 100,
            death_ms: death_ms(config.fault_timeout_ms),
            retry_ms: 500,
            timeout_ms: dir_timeout_ms(config.fault_timeout_ms),
        };
        Ok(Server {
            core: new_core(&config, members.clone(), incarnation),
            members: if config.joins.is_empty() {
                Members::new(
                    me,
                    incarnation,
                    &config.peers.iter().map(|p| p.node).collect::<Vec<_>>(),
                    timing,
                )
            } else {
                Members::joining(me, incarnation, timing)
            },
            incarnation,
            fatal: None,
            link_inc: BTreeMap::new(),
            held: BTreeMap::new(),
            unreachable: BTreeMap::new(),
            config,
            poll,
            listener,
            peer_listener,
            signals,
            conns: HashMap::new(),
            max_conns: connection_limit(),
            limit: Default::default(),
            silent: 0,
            hello_due: Default::default(),
            serving: HashSet::new(),
            next_token: FIRST_CONN,
            sessions: BTreeMap::new(),
            next_session: 1,
            store: Store::default(),
            peers,
            parked: HashMap::new(),
            next_request: 1,
            replicating,
            revocations: Revocations::new(),
            latency: Default::default(),
            hot: HashMap::new(),
            stages: Default::default(),
            asked_at: HashMap::new(),
            granted_at: HashMap::new(),
            started: Instant::now(),
            sync: Service::new(me, members.clone()),
            founders: members,
            releasing: HashMap::new(),
            replicas: Default::default(),
            snapshots: Default::default(),
            ahead_lost: (0, 0),
            next_release: 1,
            last_release: Instant::now(),
            tickets: HashMap::new(),
            // Tickets of one incarnation never look like another's (answers may outlive it).
            next_ticket: incarnation | 1,
            fast: fastlock::FastLocks::default(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Serves until SIGTERM or SIGINT, then removes the socket file.
    pub fn run(mut self) -> Result<(), ServerError> {
        info!(
            "dsmd {} node {} (incarnation {:#x}) of cluster `{}` ({}, {} manager) serving {}{}",
            env!("CARGO_PKG_VERSION"),
            self.config.node_id.0,
            self.incarnation,
            self.config.cluster,
            if self.config.joins.is_empty() {
                format!("{} nodes", self.config.members().len())
            } else {
                format!(
                    "joining through {}",
                    self.config
                        .joins
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            self.config.manager.as_str(),
            self.config.socket.display(),
            match self.config.listen {
                Some(a) => format!(", peers on {a}"),
                None => String::new(),
            }
        );
        if self.config.manager != dsm_core::ManagerKind::Dynamic {
            warn!(
                "--manager {}: a node's death loses the pages it owned or managed (they raise \
                 SIGBUS where touched); only --manager dynamic takes them over from surviving copies",
                self.config.manager.as_str()
            );
        }
        let mut events = Events::with_capacity(256);
        let mut due = Instant::now();
        let busy_poll = Duration::from_micros(self.config.poll_us);
        let mut awake_until = Instant::now();
        self.peers.tick(self.poll.registry(), Instant::now());
        'serve: loop {
            let now = Instant::now();
            // Asleep until something arrives or the next deadline (no periodic wake-up).
            let timeout = if now < awake_until {
                Duration::ZERO
            } else {
                self.until_sync_deadline()
                    .min(due.saturating_duration_since(now))
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io_context("event loop failed")(e));
            }
            if !events.is_empty() && !busy_poll.is_zero() {
                awake_until = Instant::now() + busy_poll;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    SIGNALS => {
                        if self.signalled() {
                            break 'serve;
                        }
                    }
                    PEER_LISTENER => {
                        if let Some(l) = &self.peer_listener {
                            self.peers.accept(self.poll.registry(), l);
                        }
                    }
                    token if Peers::owns(token) => {
                        let (store, core) = (&mut self.store, &self.core);
                        let (members, link_inc) = (&self.members, &self.link_inc);
                        let replicas = &mut self.replicas;
                        // A grant's page is stored only if the core will accept the grant (it
                        // asked for it) and it does not come from a dead member's daemon: a
                        // peer cannot write, or grow, a copy nobody asked for. (One from a
                        // daemon whose join has not committed here yet is stored and held.)
                        let mut sink = |from: NodeId, msg: &PeerMsg| {
                            let (key, wanted) = match *msg {
                                PeerMsg::Grant {
                                    key, write, epoch, ..
                                } => (key, core.expects_grant(key, write, epoch)),
                                PeerMsg::Replica {
                                    key,
                                    epoch,
                                    version,
                                } => (key, core.expects_replica(key, epoch, version)),
                                _ => return None,
                            };
                            let dead = link_inc.get(&from).is_none_or(|&i| {
                                members
                                    .incarnation_of(from)
                                    .is_some_and(|m| m.incarnation == i && !m.alive)
                            });
                            if dead || !wanted {
                                return None;
                            }
                            if let PeerMsg::Replica { .. } = msg {
                                // Kept apart from the node's copy, for a page of a segment the
                                // directory has (this node need not have opened it).
                                return replica_page_exists(members, key)
                                    .then(|| replicas.slot(key));
                            }
                            match store.incoming(key.segment, key.page) {
                                Ok(page) => page,
                                Err(e) => {
                                    warn!("cannot store page {} of {}: {e}", key.page, key.segment);
                                    None
                                }
                            }
                        };
                        let arrived = self.peers.on_event(
                            self.poll.registry(),
                            token,
                            event.is_readable(),
                            event.is_writable(),
                            &mut sink,
                        );
                        // Everything these messages make this node send goes out together: one
                        // writev per peer for a read's worth of requests, not one per request.
                        self.peers.begin_batch();
                        for (from, incoming) in arrived {
                            self.on_peer_message(from, incoming);
                        }
                        self.end_peer_batch();
                    }
                    token => self.on_event(token, event.is_readable(), event.is_writable()),
                }
            }
            self.sync_tick();
            if Instant::now() >= due {
                self.tick();
            }
            self.link_events();
            due = self.next_deadline().max(Instant::now() + MIN_SLEEP);
            if let Some(why) = self.fatal.take() {
                let _ = std::fs::remove_file(&self.config.socket);
                return Err(ServerError::Config(why));
            }
        }
        info!(
            "shutting down: {} segments, {} attached processes",
            self.store.iter().count(),
            self.sessions.len()
        );
        if let Err(e) = std::fs::remove_file(&self.config.socket) {
            warn!("cannot remove {}: {e}", self.config.socket.display());
        }
        Ok(())
    }

    /// When [`Server::tick`] next has something to do: Raft's next tick, a fault that times
    /// out, a link to ping, dial or drop, a local connection owing its hello, a home
    /// unreachable for long enough, the background flush.
    fn next_deadline(&mut self) -> Instant {
        // Connections that said hello (or went) leave the front of the queue.
        while let Some(t) = self.hello_due.front() {
            if self
                .conns
                .get(t)
                .is_some_and(|c| matches!(c.kind, Kind::New))
            {
                break;
            }
            self.hello_due.pop_front();
        }
        let at = |ms: u64| self.started + Duration::from_millis(ms);
        let raft = at(self.members.poll_timeout());
        let core = self.core.poll_timeout().map(at);
        let hello = self
            .hello_due
            .front()
            .and_then(|t| self.conns.get(t))
            .map(|c| c.opened + HELLO_TIMEOUT);
        let grace = Duration::from_millis(self.config.fault_timeout_ms);
        let fenced = self.core.fenced();
        let unreachable = self
            .unreachable
            .values()
            .filter(|(_, told)| !told)
            .map(|(since, _)| *since + if fenced { grace } else { grace * 3 })
            .min();
        let every = Duration::from_millis(self.config.replica_interval_ms);
        let flush = (self.config.replicas > 0 && !every.is_zero() && self.core.has_unreleased())
            .then_some(self.last_release + every);
        [
            core,
            self.peers.next_deadline(),
            hello,
            unreachable,
            flush,
            self.fast.poll_timeout().map(at),
        ]
        .into_iter()
        .flatten()
        .fold(raft, Instant::min)
    }

    fn tick(&mut self) {
        // Links due for a (re)try dial, a ping, a silence check or acknowledgements.
        self.peers.tick(self.poll.registry(), Instant::now());
        // Local connections that never said their hello.
        let silent: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.kind, Kind::New) && c.opened.elapsed() >= HELLO_TIMEOUT)
            .map(|(&t, _)| t)
            .collect();
        for token in silent {
            self.close(token, "no hello in time");
        }
        let now_ms = self.now_ms();
        self.link_events();
        let grace = Duration::from_millis(self.config.fault_timeout_ms);
        // A home that dies is taken over once the cluster agrees it is dead (the lock
        // service rebuilds its objects on the next founder); waits fail only where that
        // cannot come: this node is fenced, or no death was agreed long after.
        let fenced = self.core.fenced();
        let unreachable: Vec<NodeId> = self
            .unreachable
            .iter_mut()
            .filter(|(_, (since, told))| {
                !*told && since.elapsed() >= grace && (fenced || since.elapsed() >= grace * 3)
            })
            .map(|(&n, (_, told))| {
                *told = true;
                n
            })
            .collect();
        for node in unreachable {
            warn!(
                "{node} unreachable and not agreed dead (this node is fenced, or no death \
                 was agreed in {:?}): waits on locks homed there fail",
                grace * 3
            );
            self.home_unreachable(node);
        }
        self.members.handle(MemberInput::Tick { now_ms });
        self.drain_members();
        self.update_fence();
        self.flush_replicas();
        self.core.handle(Input::Tick { now_ms });
        self.drain_core();
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
                    // Connections still owing their hello are few at once: past the limit the
                    // oldest gives way, so a flood of silent ones cannot lock real programs out
                    // (theirs arrives within microseconds).
                    if self.silent >= MAX_SILENT {
                        // In accept order; those that said hello or went are skipped.
                        while let Some(oldest) = self.hello_due.pop_front() {
                            if self
                                .conns
                                .get(&oldest)
                                .is_some_and(|c| matches!(c.kind, Kind::New))
                            {
                                self.close(oldest, "too many connections without a hello");
                                break;
                            }
                        }
                    }
                    if self.conns.len() >= self.max_conns {
                        limited_warn!(
                            self.limit,
                            "too many local connections",
                            "refusing a local connection: {} are open (the limit follows this \
                             daemon's descriptor limit; raise it with ulimit -n or LimitNOFILE)",
                            self.conns.len()
                        );
                        continue;
                    }
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
                    self.silent += 1;
                    self.hello_due.push_back(token);
                    if self.hello_due.len() > 4 * MAX_SILENT {
                        let conns = &self.conns;
                        self.hello_due
                            .retain(|t| conns.get(t).is_some_and(|c| matches!(c.kind, Kind::New)));
                    }
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

    fn on_event(&mut self, token: Token, readable: bool, writable: bool) {
        if readable {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            let end = match conn.fill() {
                Ok(end) => end,
                // A process that exits with a revocation still unread in its socket resets the
                // connection: that is an exit, not an error.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => ReadEnd::Eof,
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
        if !self.serving.insert(token) {
            return;
        }
        loop {
            self.serve_frames_now(token);
            // A throttled connection is read again once what it had sent is served.
            let Some(conn) = self.conns.get_mut(&token) else {
                break;
            };
            if !conn.throttled || conn.busy || conn.frames.pending() >= MAX_BUFFERED / 2 {
                break;
            }
            conn.throttled = false;
            match conn.fill() {
                Ok(ReadEnd::Drained) => {}
                Ok(ReadEnd::Eof) => {
                    self.serving.remove(&token);
                    self.drop_conn(token);
                    return;
                }
                Err(e) => {
                    self.serving.remove(&token);
                    self.close(token, &format!("read failed: {e}"));
                    return;
                }
            }
        }
        self.serving.remove(&token);
    }

    fn serve_frames_now(&mut self, token: Token) {
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
                Kind::Channel { session, tid } => self.request(token, session, tid, &frame),
                Kind::Ctl => self.ctl(token, &frame),
                Kind::Session(session) => self.push_ack(session, &frame),
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
        let cred = self.conns.get(&token).map(|c| {
            crate::page_store::fdpass::peer_credentials(std::os::fd::AsFd::as_fd(&c.stream))
        });
        let (cred_pid, uid, gid) = match cred {
            Some(Ok(c)) => c,
            _ => return Err("cannot learn who the process is (SO_PEERCRED)".into()),
        };
        let (kind, session) = match hello.role {
            Role::Session { pid } => {
                let id = self.new_session_id();
                self.sessions.insert(
                    id,
                    Session {
                        pid,
                        token,
                        who: Caller {
                            uid,
                            gid,
                            groups: supplementary_groups(cred_pid),
                        },
                        cred_pid,
                        maps: BTreeSet::new(),
                        opened: BTreeSet::new(),
                        writable: BTreeSet::new(),
                        faults: 0,
                        used_sync: false,
                    },
                );
                info!("process {pid} attached (session {})", id.0);
                (Kind::Session(id), id)
            }
            Role::Channel { session, tid } => {
                let Some(s) = self.sessions.get(&session) else {
                    let reason = format!("unknown session {}", session.0);
                    warn!("refusing a channel of thread {tid}: {reason}");
                    return self.refuse(token, &reason);
                };
                // A channel speaks for its session's process only: another process (another
                // user) cannot borrow a session by naming its id.
                if s.cred_pid != cred_pid || s.who.uid != uid {
                    let reason = format!("session {} belongs to another process", session.0);
                    limited_warn!(
                        self.limit,
                        "foreign channel",
                        "refusing a channel: {reason}"
                    );
                    return self.refuse(token, &reason);
                }
                (Kind::Channel { session, tid }, session)
            }
            Role::Ctl => (Kind::Ctl, SessionId(0)),
        };
        if let Some(conn) = self.conns.get_mut(&token) {
            if matches!(conn.kind, Kind::New) {
                self.silent -= 1;
            }
            conn.kind = kind;
        }
        // A process waits for an answer this long before it takes the daemon for stopped: the
        // daemon's own timeouts (faults, directory requests and their cancellation) end first.
        let limit_ms = 2 * self.config.fault_timeout_ms + 2_000;
        let dir_limit_ms = dir_timeout_ms(self.config.fault_timeout_ms) + 3_000;
        self.send(
            token,
            &HelloReply::Welcome {
                node,
                session,
                limit_ms,
                dir_limit_ms,
                replicating: self.replicating,
            },
            None,
        );
        Ok(())
    }

    /// Who session `session`'s process is (cloned for a directory request; faults do not).
    fn who(&self, session: SessionId) -> Caller {
        // A session that is gone is nobody (never root, which Caller::default() would be).
        self.sessions.get(&session).map_or_else(
            || Caller {
                uid: u32::MAX,
                gid: u32::MAX,
                groups: Vec::new(),
            },
            |s| s.who.clone(),
        )
    }

    fn refuse(&mut self, token: Token, reason: &str) -> Result<(), String> {
        self.send(token, &HelloReply::Refused { reason }, None);
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.closing = true;
        }
        self.flush(token);
        Ok(())
    }

    // ---- client requests ----

    fn request(
        &mut self,
        token: Token,
        session: SessionId,
        tid: u32,
        frame: &[u8],
    ) -> Result<(), String> {
        let request: Request<'_> = frame::decode(frame).map_err(|e| e.to_string())?;
        let Some(s) = self.sessions.get(&session) else {
            return Err(format!("session {} has ended", session.0));
        };
        // A process touches a segment by id only if it opened it (or identified a descriptor
        // of it) or its user may open it anyway, and writes only if it may write: ids are not
        // capabilities. (A fork child is a new session of the same user.)
        if let Some((segment, write)) = request.touches() {
            let held = s.opened.contains(&segment) || s.maps.contains(&segment);
            let allowed = match self.store.get(segment) {
                None => Err(ShmError::Gone),
                Some(l) if s.who.permits(l.meta.uid, l.meta.gid, l.meta.mode, write) => Ok(()),
                Some(_) if held && (!write || s.writable.contains(&segment)) => Ok(()),
                Some(_) => Err(ShmError::PermissionDenied),
            };
            if let Err(e) = allowed {
                match request {
                    Request::Sync { op, wait, .. } if op.answered() || wait => {
                        let invalid = dsm_proto::sync::SyncResult::Invalid;
                        self.send(token, &Reply::Synced(invalid), None);
                    }
                    Request::Sync { .. } => {}
                    _ => self.send(token, &Reply::Failed(e), None),
                }
                return Ok(());
            }
        }
        let reply = match request {
            Request::Open { name, flags } => {
                let op = DirOp::Open {
                    name: name.to_owned(),
                    flags,
                    who: self.who(session),
                };
                self.propose_dir(op, Parked::Open(token, flags.write));
                return Ok(());
            }
            Request::Resize { segment, size } => {
                if self.store.get(segment).is_none() {
                    Reply::Failed(ShmError::Gone)
                } else {
                    self.propose_dir(DirOp::Resize { segment, size }, Parked::Resize(token));
                    return Ok(());
                }
            }
            Request::Unlink { name } => {
                let op = DirOp::Unlink {
                    name: name.to_owned(),
                    who: self.who(session),
                };
                self.propose_dir(op, Parked::Unlink(token));
                return Ok(());
            }
            Request::Map {
                segment,
                offset,
                len,
            } => match self.map(token, session, segment, offset, len) {
                Some(reply) => reply,
                None => return Ok(()),
            },
            Request::Table { segment } => match self.store.get(segment) {
                None => Reply::Failed(ShmError::Gone),
                Some(local) => match local.table.share() {
                    Ok(fd) => {
                        let len = local.table.len() as u64;
                        self.send(token, &Reply::Table { len }, Some(fd));
                        return Ok(());
                    }
                    Err(e) => {
                        warn!("cannot share a state table: {e}");
                        Reply::Failed(ShmError::NoMemory)
                    }
                },
            },
            Request::Locks { segment } => match self.share_lock_table(token, segment) {
                Some(reply) => reply,
                None => return Ok(()),
            },
            Request::Unmap { segment } => {
                let had = self
                    .sessions
                    .get_mut(&session)
                    .is_some_and(|s| s.maps.remove(&segment));
                if had {
                    self.unmap(session, segment);
                    Reply::Done
                } else {
                    Reply::Failed(ShmError::InvalidArgument)
                }
            }
            Request::Release { wait } => {
                // `msync` of DSM memory: a release point.
                if self.config.replicas == 0 {
                    if !wait {
                        return Ok(());
                    }
                    Reply::Done
                } else if wait {
                    if let Some(conn) = self.conns.get_mut(&token) {
                        conn.busy = true;
                    }
                    self.start_release(Some(AfterRelease::Answer(token)));
                    return Ok(());
                } else {
                    // Nothing waits for it: started only if there is something to replicate
                    // (a flood of them costs nothing then).
                    if self.core.has_unreleased() {
                        self.start_release(None);
                    }
                    return Ok(());
                }
            }
            Request::Sync { key, op, wait } => {
                if op.is_release() && self.config.replicas > 0 {
                    // A release point: what this node wrote goes to its replicas first.
                    self.release_then(token, session, tid, key, op, wait);
                } else {
                    self.sync_request(token, session, tid, key, op)?;
                }
                return Ok(());
            }
            Request::OpenId { segment, write } => {
                let op = DirOp::OpenId {
                    segment,
                    who: self.who(session),
                    write,
                };
                self.propose_dir(op, Parked::Open(token, write));
                return Ok(());
            }
            Request::Chmod {
                segment,
                mode,
                uid,
                gid,
            } => {
                let op = DirOp::Chmod {
                    segment,
                    who: self.who(session),
                    mode,
                    uid,
                    gid,
                };
                self.propose_dir(op, Parked::Done(token));
                return Ok(());
            }
            Request::UnlinkId { segment } => {
                self.propose_dir(
                    DirOp::UnlinkId {
                        segment,
                        who: self.who(session),
                    },
                    Parked::Unlink(token),
                );
                return Ok(());
            }
            Request::Identify { dev, ino } => {
                let who = self.who(session);
                // A descriptor's identity can be guessed: the caller must also be allowed to
                // open the segment, as if by its name.
                let found = self
                    .store
                    .iter()
                    .find(|l| l.memfd.identity().ok() == Some((dev, ino)))
                    .map(|l| (l.meta.id, l.meta.size, l.meta.base, l.meta.clone()));
                match found {
                    Some((_, _, _, m)) if !who.permits(m.uid, m.gid, m.mode, false) => {
                        Reply::Failed(ShmError::PermissionDenied)
                    }
                    Some((segment, size, base, m)) => {
                        if let Some(s) = self.sessions.get_mut(&session) {
                            s.opened.insert(segment);
                            if who.permits(m.uid, m.gid, m.mode, true) {
                                s.writable.insert(segment);
                            }
                        }
                        self.hold(session, segment);
                        Reply::Opened {
                            segment,
                            size,
                            base,
                        }
                    }
                    None => Reply::Failed(ShmError::NotFound),
                }
            }
            Request::Info => Reply::Info {
                node: self.config.node_id,
                nodes: self
                    .members
                    .members()
                    .values()
                    .filter(|m| m.alive)
                    .count()
                    .max(1) as u32,
            },
            Request::Counters => Reply::Counters(self.counters()),
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
                match self.store.get(segment) {
                    None => Reply::Failed(ShmError::Gone),
                    Some(seg) if page >= seg.pages() => Reply::Failed(ShmError::OutOfRange),
                    Some(seg) => {
                        let pages = seg.pages();
                        let key = PageKey { segment, page };
                        if self.hot.len() >= HOT_PAGES && !self.hot.contains_key(&key) {
                            self.hot.clear();
                        }
                        *self.hot.entry(key).or_default() += 1;
                        if let Some(conn) = self.conns.get_mut(&token) {
                            conn.busy = true;
                            conn.fault = Some((key, Instant::now()));
                        }
                        let now_ms = self.now_ms();
                        self.core.handle(Input::Fault {
                            id: FaultId(token.0 as u64),
                            key,
                            write,
                            pages,
                            now_ms,
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

    /// A process maps part of a segment. The node's first mapping asks the directory first (the
    /// base is fixed from then on): `None` while that answer is awaited.
    fn map(
        &mut self,
        token: Token,
        session: SessionId,
        segment: SegmentId,
        offset: u64,
        len: u64,
    ) -> Option<Reply> {
        let Some(local) = self.store.get(segment) else {
            return Some(Reply::Failed(ShmError::Gone));
        };
        if local.sessions.is_empty() {
            let parked = Parked::Map {
                token,
                session,
                segment,
                offset,
                len,
            };
            self.propose_dir(DirOp::Map { segment }, parked);
            return None;
        }
        Some(self.mapped(session, segment, offset, len))
    }

    /// The mapping, once the node's base is fixed.
    fn mapped(&mut self, session: SessionId, segment: SegmentId, offset: u64, len: u64) -> Reply {
        let Some(local) = self.store.get_mut(segment) else {
            return Reply::Failed(ShmError::Gone);
        };
        let Some(end) = offset.checked_add(len) else {
            return Reply::Failed(ShmError::InvalidArgument);
        };
        if len == 0 || !offset.is_multiple_of(PAGE_SIZE as u64) {
            return Reply::Failed(ShmError::InvalidArgument);
        }
        if end > local.meta.span {
            return Reply::Failed(ShmError::TooLarge);
        }
        let base = local.meta.base;
        local.sessions.insert(session);
        if let Some(s) = self.sessions.get_mut(&session) {
            s.maps.insert(segment);
        }
        self.hold(session, segment);
        Reply::Mapped { base }
    }

    /// `session` holds `segment` (opened or maps it); the first holder on this node attaches
    /// the node in the directory.
    fn hold(&mut self, session: SessionId, segment: SegmentId) {
        let Some(local) = self.store.get_mut(segment) else {
            return;
        };
        let first = local.holders.is_empty();
        local.holders.insert(session);
        if first {
            self.propose_dir(DirOp::Attach { segment }, Parked::Notice);
        }
    }

    /// `session` no longer holds `segment` unless it still opened or maps it; the last holder
    /// on this node detaches the node.
    fn release(&mut self, session: SessionId, segment: SegmentId) {
        if let Some(s) = self.sessions.get(&session) {
            if s.maps.contains(&segment) || s.opened.contains(&segment) {
                return;
            }
        }
        let Some(local) = self.store.get_mut(segment) else {
            return;
        };
        if local.holders.remove(&session) && local.holders.is_empty() {
            self.propose_dir(DirOp::Detach { segment }, Parked::Notice);
        }
    }

    fn unmap(&mut self, session: SessionId, segment: SegmentId) {
        self.stop_mapping(session, segment);
        self.release(session, segment);
        // Revocations already sent stay outstanding: the process's listener acknowledges every
        // one it receives (and the end of its session settles what it never will).
    }

    /// `session` maps `segment` no more; the node's last mapping tells the directory.
    fn stop_mapping(&mut self, session: SessionId, segment: SegmentId) {
        let Some(local) = self.store.get_mut(segment) else {
            return;
        };
        if local.sessions.remove(&session) && local.sessions.is_empty() {
            self.propose_dir(DirOp::Unmap { segment }, Parked::Notice);
        }
    }

    // ---- the directory ----

    /// Proposes a directory operation to the replicated log; `parked` is answered when it
    /// commits (or is cancelled).
    fn propose_dir(&mut self, op: DirOp, parked: Parked) {
        if let Parked::Open(t, _)
        | Parked::Resize(t)
        | Parked::Unlink(t)
        | Parked::Done(t)
        | Parked::Map { token: t, .. } = parked
        {
            if let Some(conn) = self.conns.get_mut(&t) {
                conn.busy = true;
            }
        }
        let id = self.next_request;
        self.next_request += 1;
        if !matches!(parked, Parked::Notice) {
            self.parked.insert(id, (parked, Instant::now()));
        }
        let now_ms = self.now_ms();
        self.members.handle(MemberInput::Propose {
            req: id,
            op,
            now_ms,
        });
        self.drain_members();
    }

    /// Carries out what membership asks: Raft messages out, answers to local requests,
    /// committed directory changes and deaths.
    fn drain_members(&mut self) {
        while let Some(output) = self.members.poll_output() {
            match output {
                MemberOutput::Send {
                    to,
                    incarnation,
                    bytes,
                } => self
                    .peers
                    .send_raft(self.poll.registry(), to, incarnation, bytes),
                MemberOutput::Reply { req, result } => {
                    if let Some((parked, since)) = self.parked.remove(&req) {
                        if result == Err(ShmError::TimedOut) {
                            self.log_no_quorum(since.elapsed());
                        }
                        self.complete(parked, result);
                    }
                }
                MemberOutput::News(msg) => self.directory_news(msg),
                MemberOutput::Joined { node, incarnation } => {
                    debug!("{node} (incarnation {incarnation:#x}) is a member");
                    if node == self.config.node_id {
                        self.take_founders();
                        self.recall_all();
                        self.sync.set_deposed(self.members.deposed());
                        let (deaths, died_at, joined_at, down) = self.members.history();
                        self.core.handle(Input::History {
                            deaths,
                            died_at,
                            joined_at,
                            down,
                        });
                        // Nodes that joined before this one (in the state it caught up
                        // from, not in log entries it applied) are members as much as the
                        // founders: without this, their messages would be refused.
                        let me = self.config.node_id;
                        let earlier: Vec<(NodeId, u64, Option<std::net::SocketAddr>)> = self
                            .members
                            .members()
                            .into_iter()
                            .filter(|(n, m)| m.alive && *n != me && !self.founders.contains(n))
                            .map(|(n, m)| (n, m.incarnation, m.addr))
                            .collect();
                        for (node, incarnation, addr) in earlier {
                            self.peers.add(node, addr);
                            self.core.handle(Input::PeerUp { node, incarnation });
                        }
                        self.drain_core();
                    } else {
                        // Where it listens, for a node this one never met (it joined).
                        let addr = self.members.incarnation_of(node).and_then(|m| m.addr);
                        self.peers.add(node, addr);
                        self.core.handle(Input::PeerUp { node, incarnation });
                        self.drain_core();
                        self.release_held(node);
                    }
                }
                MemberOutput::Died {
                    node,
                    incarnation,
                    survivors,
                } => {
                    warn!(
                        "{node} (incarnation {incarnation:#x}) is dead, as the cluster agreed: \
                         what its processes held is released, its pages with no other copy \
                         are lost"
                    );
                    // Its death is agreed: no "unreachable, not agreed dead" line for it.
                    self.unreachable.remove(&node);
                    if self.link_inc.get(&node) == Some(&incarnation) {
                        self.held.remove(&node);
                    }
                    let orphans: Vec<SegmentId> = self
                        .store
                        .iter()
                        .filter(|l| {
                            l.meta.id.creator() == node && l.meta.creator_incarnation == incarnation
                        })
                        .map(|l| l.meta.id)
                        .collect();
                    for segment in orphans {
                        self.core.handle(Input::Orphaned { segment });
                    }
                    self.core.handle(Input::PeerDown { node });
                    self.drain_core();
                    self.node_gone(node, &survivors);
                }
                MemberOutput::Expelled => {
                    self.fatal = Some(format!(
                        "the cluster declared this node ({}) dead while it was cut off: its \
                         pages may have been taken over, so it stops; start it again to rejoin \
                         as a new node",
                        self.config.node_id
                    ));
                }
                MemberOutput::Violation { from, what } => {
                    limited_warn!(self.limit, "raft violation", "{from}: {what}");
                }
            }
        }
        self.peers.set_formed(self.members.formed());
        self.update_replicating();
    }

    /// This node joined: the fixed and central managers' nodes and the lock service's homes
    /// are the cluster's founders, as its log says — not this node's own `--peer` list, which
    /// may differ (and is empty with `--join`). Nothing is shared before the join, so the
    /// coherence core starts again with them.
    fn take_founders(&mut self) {
        let founders = self.members.founders();
        if founders.is_empty() || founders == self.founders {
            return;
        }
        if self.config.joins.is_empty() {
            warn!(
                "this node's --peer list names nodes {:?} but the cluster was formed of {:?}: \
                 the cluster's is used",
                self.founders.iter().map(|n| n.0).collect::<Vec<_>>(),
                founders.iter().map(|n| n.0).collect::<Vec<_>>()
            );
        }
        if self.store.iter().next().is_some() {
            // Cannot be (segments come through the directory, after the join); were it so, this
            // node would disagree with the others on who manages what: it stops.
            self.fatal = Some(format!(
                "this node holds segments from before it joined, and its founders {:?} are not \
                 the cluster's {:?}: restart it",
                self.founders, founders
            ));
            return;
        }
        self.core = new_core(&self.config, founders.clone(), self.incarnation);
        self.recall_all();
        self.drain_sync();
        self.sync.set_homes(founders.clone());
        self.founders = founders;
    }

    /// Fences the core while the members this node cannot reach could form a majority without
    /// it (they may declare it dead and take its pages over): links go down after 3 s of
    /// silence, and the leader declares a death only `--fault-timeout-ms` after that, so the
    /// fence comes first (see docs/protocol.md, "Fencing").
    fn update_fence(&mut self) {
        if !self.members.formed() {
            return;
        }
        let me = self.config.node_id;
        let alive: Vec<(NodeId, u64)> = self
            .members
            .members()
            .into_iter()
            .filter(|(_, m)| m.alive)
            .map(|(n, m)| (n, m.incarnation))
            .collect();
        let unreachable: Vec<NodeId> = alive
            .iter()
            .filter(|&&(n, inc)| {
                n != me && !(self.peers.is_up(n) && self.link_inc.get(&n) == Some(&inc))
            })
            .map(|&(n, _)| n)
            .collect();
        // A node that hears no leader may be one the leader cannot reach (a link down one
        // way round the cluster): it may be declared dead as surely as one cut off. (Not in a
        // cluster of two: there no death can be agreed without both, so nothing is taken over.)
        let leaderless = self.members.leader().is_none() && alive.len() >= 3;
        let cut_off = unreachable.len() * 2 > alive.len();
        let fence = cut_off || leaderless;
        if fence == self.core.fenced() {
            return;
        }
        if fence {
            let why = if cut_off {
                format!(
                    "cut off from {} of {} members ({:?})",
                    unreachable.len(),
                    alive.len(),
                    unreachable
                )
            } else {
                "no Raft leader heard".to_string()
            };
            warn!(
                "fenced ({why}): the others may declare this node dead and take its pages over, so its \
                 processes stop writing, and reading pages others could change (they wait, or \
                 fail after {} ms) until it hears a majority again",
                self.config.fault_timeout_ms
            );
        } else {
            info!("a majority of the members is reachable again: writes go on");
        }
        self.core.handle(Input::Fence { on: fence });
        self.drain_core();
    }

    /// Says why a directory request failed: who could not be reached.
    fn log_no_quorum(&mut self, after: Duration) {
        let down: Vec<String> = self
            .peers
            .view()
            .iter()
            .filter(|p| p.up_since.is_none())
            .map(|p| match p.addr {
                Some(a) => format!("{} ({a})", p.node),
                None => p.node.to_string(),
            })
            .collect();
        let leader = self.members.leader();
        limited_warn!(
            self.limit,
            "no quorum",
            "a directory request did not commit in {after:.1?}: {}; unreachable: {}",
            match leader {
                Some(l) => format!("the leader is {l}"),
                None => "no leader (a majority of the members must be up and linked)".into(),
            },
            if down.is_empty() {
                "none".to_string()
            } else {
                down.join(", ")
            }
        );
    }

    /// What the links said since last asked: ups and downs go to membership; a mismatch
    /// stops a daemon that is in no cluster yet (it is the newcomer that does not fit).
    fn link_events(&mut self) {
        let events = self.peers.take_events();
        for (from, event) in events {
            self.on_peer_message(from, event);
        }
    }

    /// Takes the directory's word for a segment (see [`Store::learn`]); a segment whose
    /// creator's incarnation is dead is an orphan to the core (nobody owns its untouched pages).
    fn learn(&mut self, meta: SegmentMeta) -> io::Result<()> {
        let (id, creator, born) = (meta.id, meta.id.creator(), meta.creator_incarnation);
        let new = self.store.get(id).is_none();
        self.store.learn(meta)?;
        if new && !self.members.is_alive(creator, born) {
            self.core.handle(Input::Orphaned { segment: id });
        }
        Ok(())
    }

    /// A committed size change, move or removal.
    fn directory_news(&mut self, msg: DirMsg) {
        match msg {
            DirMsg::Sized { segment, size } => {
                if let Err(e) = self.store.resize(segment, size) {
                    warn!("cannot resize {segment} to {size}: {e}");
                }
            }
            DirMsg::Removed { segment } => {
                if self.store.remove(segment).is_some() {
                    debug!("forgot {segment}: removed cluster-wide");
                }
                self.core.handle(Input::SegmentRemoved { segment });
                self.replicas.remove_segment(segment);
                self.snapshots.remove_segment(segment);
                self.drain_core();
                self.forget_lock_table(segment);
                self.sync
                    .handle(dsm_core::SyncInput::SegmentRemoved { segment });
            }
            DirMsg::Moved(meta) => {
                let id = meta.id;
                if self.store.get(id).is_some() {
                    if let Err(e) = self.learn(meta) {
                        warn!("cannot follow {id} to its new address: {e}");
                    }
                }
            }
        }
    }

    fn complete(&mut self, parked: Parked, result: Result<SegmentMeta, ShmError>) {
        let (token, reply, fd) = match (parked, result) {
            (Parked::Notice, _) => return,
            (Parked::CtlRemove(t), result) => {
                let reply = match result {
                    Ok(meta) => {
                        if let Some(local) = self.store.get_mut(meta.id) {
                            local.unlinked = true;
                        }
                        CtlReply::Removed
                    }
                    Err(e) => CtlReply::Error(e.describe().to_string()),
                };
                self.send(t, &reply, None);
                return;
            }
            (Parked::Map { token, .. }, Err(e)) => (token, Reply::Failed(e), None),
            (
                Parked::Map {
                    token,
                    session,
                    segment,
                    offset,
                    len,
                },
                Ok(meta),
            ) => {
                let reply = match self.learn(meta) {
                    Ok(_) => self.mapped(session, segment, offset, len),
                    Err(e) => {
                        warn!("cannot follow {segment} to its address: {e}");
                        Reply::Failed(ShmError::NoMemory)
                    }
                };
                (token, reply, None)
            }
            (
                Parked::Open(t, _) | Parked::Resize(t) | Parked::Unlink(t) | Parked::Done(t),
                Err(e),
            ) => {
                debug!("directory request failed: {}", e.describe());
                (t, Reply::Failed(e), None)
            }
            (Parked::Unlink(t), Ok(meta)) => {
                if let Some(local) = self.store.get_mut(meta.id) {
                    local.unlinked = true;
                }
                (t, Reply::Done, None)
            }
            // A chmod/chown: every node applies the new metadata from the log.
            (Parked::Done(t), Ok(_)) => (t, Reply::Done, None),
            (Parked::Open(t, write), Ok(meta)) => match self.learn(meta.clone()) {
                Ok(_) => {
                    if let Some(Kind::Channel { session, .. }) = self.conns.get(&t).map(|c| c.kind)
                    {
                        if let Some(s) = self.sessions.get_mut(&session) {
                            s.opened.insert(meta.id);
                            if write {
                                s.writable.insert(meta.id);
                            }
                        }
                        self.hold(session, meta.id);
                    }
                    let local = self.store.get(meta.id).expect("just learned");
                    let reply = Reply::Opened {
                        segment: local.meta.id,
                        size: local.meta.size,
                        base: local.meta.base,
                    };
                    match local.memfd.share() {
                        Ok(fd) => (t, reply, Some(fd)),
                        Err(e) => {
                            warn!("cannot share a segment's memory: {e}");
                            (t, Reply::Failed(ShmError::NoMemory), None)
                        }
                    }
                }
                Err(e) => {
                    warn!("cannot create memory for a segment: {e}");
                    (t, Reply::Failed(ShmError::NoMemory), None)
                }
            },
            (Parked::Resize(t), Ok(meta)) => {
                let (size, base) = (meta.size, meta.base);
                match self.learn(meta) {
                    Ok(_) => (t, Reply::Resized { size, base }, None),
                    Err(e) => {
                        warn!("cannot resize a segment's memory: {e}");
                        (t, Reply::Failed(ShmError::NoMemory), None)
                    }
                }
            }
        };
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.busy = false;
            self.send(token, &reply, fd);
            self.serve_frames(token);
        }
    }

    // ---- peers ----

    /// Whether messages may be exchanged with `node`'s daemon now: its link reaches the
    /// incarnation that is a member (or is down: then nothing arrives, and what is queued goes
    /// only to the same incarnation).
    fn deliverable(&self, node: NodeId) -> bool {
        !self.peers.is_up(node)
            || self
                .link_inc
                .get(&node)
                .is_some_and(|&i| self.members.is_alive(node, i))
    }

    /// A peer's messages held while its join committed.
    fn release_held(&mut self, node: NodeId) {
        if !self.deliverable(node) {
            return;
        }
        for incoming in self.held.remove(&node).unwrap_or_default() {
            self.on_peer_message(node, incoming);
        }
    }

    fn on_peer_message(&mut self, from: NodeId, incoming: Incoming) {
        if matches!(incoming, Incoming::Coherence(_) | Incoming::Sync(_)) && !self.deliverable(from)
        {
            let held = self.held.entry(from).or_default();
            if held.len() >= MAX_HELD {
                limited_warn!(
                    self.limit,
                    "held overflow",
                    "{from} sent {MAX_HELD} messages before its join committed: dropping more"
                );
                return;
            }
            held.push_back(incoming);
            return;
        }
        match incoming {
            Incoming::Coherence(msg) => {
                debug!("from {from}: {msg:?}");
                let key = msg.key();
                let in_span = |span: u64| u64::from(key.page) < span / PAGE_SIZE as u64;
                let plausible = match self.store.get(key.segment) {
                    // A replica is kept for a page the directory has, as its bytes were (see
                    // the page sink): the core hears of it only then.
                    _ if matches!(msg, PeerMsg::Replica { .. }) => {
                        replica_page_exists(&self.members, key)
                    }
                    Some(local) => in_span(local.meta.span),
                    // A manager hears of pages of segments it never opened, and every live node
                    // is asked who holds a page whose owner died (it answers: not this one).
                    None => {
                        self.config.manager != dsm_core::ManagerKind::Dynamic
                            || (matches!(
                                msg,
                                PeerMsg::Locate { .. }
                                    | PeerMsg::Thaw { .. }
                                    | PeerMsg::Adopt { .. }
                                    | PeerMsg::Replica { .. }
                                    | PeerMsg::ReplicaAck { .. }
                            ) && self.members.with_directory(|d| {
                                d.get(key.segment).is_some_and(|m| in_span(m.span))
                            }))
                    }
                };
                if !plausible {
                    warn!("{from} sent {msg:?}, for a page this node cannot have: ignored");
                    return;
                }
                let ahead = matches!(msg, PeerMsg::Grant { .. }) && self.core.reading_ahead(key);
                if let PeerMsg::Grant { key, .. } = msg {
                    if self.asked_at.contains_key(&key) {
                        stamp(&mut self.granted_at, key);
                    }
                }
                self.core.handle(Input::Peer { from, msg });
                if ahead && self.core.page(key).access > dsm_proto::Access::None {
                    // A page read ahead, marked so before it is published just below: no
                    // process can have opened it (its entry was 0, and every revocation of
                    // its last copy has ended).
                    if let Some(local) = self.store.get(key.segment) {
                        local.table.mark_ahead(key.page);
                    }
                }
                // A page that arrived may be taken from the table (read-ahead, waiting readers).
                self.publish(key);
                self.drain_core();
            }
            Incoming::Raft(bytes) => {
                self.members.handle(MemberInput::Raft { from, bytes });
                self.drain_members();
            }
            Incoming::Sync(msg) => self.sync_from_peer(from, msg),
            Incoming::Up {
                incarnation,
                formed,
            } => {
                if self.link_inc.insert(from, incarnation) != Some(incarnation) {
                    self.held.remove(&from);
                }
                self.unreachable.remove(&from);
                let now_ms = self.now_ms();
                let addr = self.peers.addr_of(from);
                self.members.handle(MemberInput::LinkUp {
                    node: from,
                    incarnation,
                    formed,
                    addr,
                    now_ms,
                });
                self.drain_members();
            }
            Incoming::Down => {
                self.unreachable.insert(from, (Instant::now(), false));
                let now_ms = self.now_ms();
                self.members
                    .handle(MemberInput::LinkDown { node: from, now_ms });
                self.drain_members();
            }
            Incoming::Mismatch(why) => {
                if self.members.formed() {
                    limited_warn!(self.limit, "mismatch", "{why}");
                } else {
                    self.fatal = Some(format!(
                        "this node ({}, cluster `{}`, manager {}) cannot join: {why}",
                        self.config.node_id,
                        self.config.cluster,
                        self.config.manager.as_str()
                    ));
                }
            }
        }
    }

    // ---- the core ----

    /// Drains the core, then the revocations it asked for (which may answer the core), until
    /// neither has anything left to do.
    fn drain_core(&mut self) {
        loop {
            self.drain_core_once();
            if !self.drain_revocations() {
                return;
            }
        }
    }

    fn drain_core_once(&mut self) {
        // Everything the core says to peers in one drain goes out in one writev per peer.
        self.peers.begin_batch();
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Grant {
                    id,
                    key,
                    access,
                    waited,
                } => {
                    // Other local processes may now take this much without asking.
                    self.publish(key);
                    if let Some((_, since)) =
                        self.conns.get(&Token(id.0 as usize)).and_then(|c| c.fault)
                    {
                        self.latency[usize::from(waited)].record(since.elapsed());
                        let asked = self.asked_at.remove(&key);
                        let granted = self.granted_at.remove(&key);
                        if let (Some(asked), Some(granted)) = (asked, granted) {
                            if since <= asked && asked <= granted {
                                self.stages[0].record(asked - since);
                                self.stages[1].record(granted - asked);
                                self.stages[2].record(granted.elapsed());
                            }
                        }
                    }
                    let seq = self.revocations.seq();
                    self.answer_fault(id, Reply::Granted { access, seq });
                }
                Output::Fail { id, error } => {
                    let error = match error {
                        FaultError::UnknownSegment => ShmError::Gone,
                        FaultError::Lost => ShmError::Lost,
                        FaultError::TimedOut => {
                            self.log_timeout(id);
                            ShmError::TimedOut
                        }
                    };
                    self.answer_fault(id, Reply::Failed(error));
                }
                Output::Send { to, msg } => {
                    debug!("to {to}: {msg:?}");
                    if let PeerMsg::Replica { key, .. } = msg {
                        if self.core.checking(key) {
                            self.snapshot(key);
                        }
                    }
                    if !self.deliverable(to) {
                        // Meant for a daemon that has restarted since: it must not get it (the
                        // old one's death reaches the core soon).
                        continue;
                    }
                    if let PeerMsg::Request {
                        key,
                        requester,
                        hops: 0,
                        ..
                    } = msg
                    {
                        if requester == self.config.node_id {
                            stamp(&mut self.asked_at, key);
                        }
                    }
                    let frame = PeerFrame::Coherence(msg);
                    match msg {
                        PeerMsg::Grant { key, .. } | PeerMsg::Replica { key, .. } => self
                            .peers
                            .send_with_page(self.poll.registry(), to, &frame, key),
                        _ => self.peers.send(self.poll.registry(), to, &frame),
                    }
                }
                Output::Revoke { key, to } => self.revoke(key, to),
                Output::Released { id } => self.released(id),
                Output::Opened { key } => self.publish(key),
                Output::KeepReplica { key } => {
                    if let Ok(Some(page)) = self.store.page(key.segment, key.page) {
                        page.copy_to(self.replicas.slot(key));
                    }
                }
                Output::RestoreReplica { key } => self.restore_replica(key),
                Output::Violation { from, what } => warn!("protocol violation by {from}: {what}"),
            }
        }
        self.end_peer_batch();
    }

    /// Keeps the bytes `key`'s replica is sent with, while its writers may still store to it.
    fn snapshot(&mut self, key: PageKey) {
        if self.snapshots.existing(key).is_some() {
            return; // the same bytes, to more replica nodes
        }
        // (Nothing to keep, past the end of this node's copy: the replica goes as the page is
        // then, and the page counts as changed when the revocation ends.)
        if let Ok(Some(page)) = self.store.page(key.segment, key.page) {
            page.copy_to(self.snapshots.slot(key));
        }
    }

    /// Closes a batch of peer messages; the outermost sends them, each grant's page from this
    /// node's copy (a replica's from its snapshot, if it has one).
    fn end_peer_batch(&mut self) {
        let (store, snapshots) = (&mut self.store, &mut self.snapshots);
        let mut resolve = |key: PageKey| match snapshots
            .existing(key)
            .map_or_else(|| store.page(key.segment, key.page), |page| Ok(Some(page)))
        {
            Ok(Some(page)) => page,
            // Past the end of our copy (a shrink not yet followed everywhere): zeros.
            Ok(None) => Page::zeros(),
            Err(e) => {
                warn!(
                    "cannot map page {} of {}: {e}; sending zeros",
                    key.page, key.segment
                );
                Page::zeros()
            }
        };
        self.peers.end_batch(self.poll.registry(), &mut resolve);
    }

    /// This node takes a dead owner's page over from its replica: the replica's bytes become
    /// its copy (the segment is set up here from the directory if no process of this node
    /// opened it).
    fn restore_replica(&mut self, key: PageKey) {
        if self.store.get(key.segment).is_none() {
            let meta = self.members.with_directory(|d| d.get(key.segment).cloned());
            if let Some(meta) = meta {
                if let Err(e) = self.learn(meta) {
                    warn!("cannot set up {} to take a page over: {e}", key.segment);
                }
            }
        }
        let bytes = self.replicas.get(key).map(|b| b.to_vec());
        match (bytes, self.store.incoming(key.segment, key.page)) {
            (Some(bytes), Ok(Some(page))) => page.fill_from(&bytes),
            (_, Err(e)) => warn!("cannot restore page {} of {}: {e}", key.page, key.segment),
            _ => warn!(
                "no replica or copy of page {} of {} to take over",
                key.page, key.segment
            ),
        }
    }

    /// Publishes in the state table what local processes may take of a page without asking.
    fn publish(&self, key: PageKey) {
        if let Some(local) = self.store.get(key.segment) {
            local.table.set(key.page, self.core.grantable(key));
        }
    }

    fn log_timeout(&self, id: FaultId) {
        let Some((key, _)) = self.conns.get(&Token(id.0 as usize)).and_then(|c| c.fault) else {
            return;
        };
        let owner = self.core.page(key).probable_owner;
        let name = self
            .store
            .get(key.segment)
            .map_or_else(|| key.segment.to_string(), |l| l.display_name());
        warn!(
            "fault on page {} of {name} timed out after {} ms waiting for {owner} (link {}); the process gets SIGBUS",
            key.page,
            self.config.fault_timeout_ms,
            if self.peers.is_up(owner) { "up" } else { "down" }
        );
    }

    fn answer_fault(&mut self, id: FaultId, reply: Reply) {
        self.answer_waiting(Token(id.0 as usize), &reply);
    }

    /// Answers the request a channel waits on (a fault or a lock), then serves what it sent
    /// meanwhile.
    fn answer_waiting(&mut self, token: Token, reply: &Reply) {
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.busy = false;
            conn.fault = None;
            conn.sync_ticket = None;
            self.send(token, reply, None);
            self.serve_frames(token);
        }
    }

    /// Asks every local process that maps the segment to drop its access to the page (pushed
    /// at the end of this drain of the core, batched with the drain's other revocations: see
    /// `crates/core/src/revoke.rs`).
    fn revoke(&mut self, key: PageKey, to: dsm_proto::Access) {
        let processes: Vec<SessionId> = self
            .store
            .get(key.segment)
            .map(|l| l.sessions.iter().copied().collect())
            .unwrap_or_default();
        // Lower the table before any push goes out: a process that reads it after applying
        // the revocation must see the lower value (see shim/src/revoke.rs).
        self.publish(key);
        debug!("revoke {key:?} to {to:?}: waiting for sessions {processes:?}");
        self.revocations
            .handle(RevokeInput::Revoke { key, to, processes });
    }

    /// Sends the revocations' pushes and tells the core of pages no process holds any more;
    /// `true` if the core was told something (drain it again).
    fn drain_revocations(&mut self) -> bool {
        let mut told = false;
        while let Some(output) = self.revocations.poll_output() {
            match output {
                RevokeOutput::Push {
                    process,
                    segment,
                    page,
                    count,
                    access,
                    seq,
                } => {
                    let Some(token) = self.sessions.get(&process).map(|s| s.token) else {
                        continue;
                    };
                    let push = Push::Revoke {
                        segment,
                        page,
                        count,
                        access,
                        seq,
                    };
                    self.send(token, &push, None);
                }
                RevokeOutput::Revoked { key } => {
                    debug!("revoked {key:?}");
                    let sent = self.snapshots.take(key);
                    if self.core.checking(key) {
                        // The writers stopped: did one store after the replica's bytes were
                        // taken? (No bytes kept: assume so.)
                        let now = self.store.page(key.segment, key.page).ok().flatten();
                        let same = match (&sent, now) {
                            (Some(sent), Some(now)) => now.holds(&sent[..]),
                            _ => false,
                        };
                        if !same {
                            self.core.handle(Input::Rewritten { key });
                        }
                    }
                    if self.core.grantable(key) == dsm_proto::Access::None {
                        // Every process lost the page and acknowledged it: any mark one set
                        // is visible. Was it read ahead, and opened?
                        let mark = self
                            .store
                            .get(key.segment)
                            .map(|l| l.table.take_mark(key.page));
                        match mark {
                            Some(Mark::Ahead { opened: true }) => self.ahead_lost.0 += 1,
                            Some(Mark::Ahead { opened: false }) => self.ahead_lost.1 += 1,
                            _ => {}
                        }
                    }
                    self.core.handle(Input::Revoked { key });
                    told = true;
                }
                RevokeOutput::Violation { process, what } => {
                    if let Some(token) = self.sessions.get(&process).map(|s| s.token) {
                        self.close(token, &what);
                    }
                }
            }
        }
        told
    }

    /// A node alone (started with no `--peer` and no `--join`) has nowhere to replicate, and
    /// its processes' releases do not wait; once another node joined it, they do: every
    /// session is told.
    fn update_replicating(&mut self) {
        if self.replicating || self.config.replicas == 0 {
            return;
        }
        let others = self
            .members
            .members()
            .into_iter()
            .any(|(n, m)| m.alive && n != self.config.node_id);
        if !others {
            return;
        }
        self.replicating = true;
        info!("another node joined: releases wait for their replicas from now on");
        let tokens: Vec<Token> = self.sessions.values().map(|s| s.token).collect();
        for token in tokens {
            self.send(token, &Push::Replicating { on: true }, None);
        }
    }

    fn push_ack(&mut self, session: SessionId, frame: &[u8]) -> Result<(), String> {
        let PushAck::Revoked { seq } = frame::decode(frame).map_err(|e| e.to_string())?;
        self.revocations.handle(RevokeInput::Acked {
            process: session,
            seq,
        });
        self.drain_core();
        Ok(())
    }

    // ---- dsmctl ----

    fn ctl(&mut self, token: Token, frame: &[u8]) -> Result<(), String> {
        let request: CtlRequest = frame::decode(frame).map_err(|e| e.to_string())?;
        let reply = match request {
            CtlRequest::Status => CtlReply::Status(self.status()),
            CtlRequest::Pages { segment } => match self.pages(&segment) {
                Some(pages) => CtlReply::Pages(pages),
                None => CtlReply::Error(format!("no segment `{segment}` on this node")),
            },
            CtlRequest::Stats => CtlReply::Stats(Box::new(self.stats())),
            CtlRequest::Locks => CtlReply::Locks(self.locks()),
            CtlRequest::Segments => CtlReply::Segments(self.segments()),
            CtlRequest::Remove { name } => {
                let cred = self.conns.get(&token).map(|c| {
                    crate::page_store::fdpass::peer_credentials(std::os::fd::AsFd::as_fd(&c.stream))
                });
                let Some(Ok((pid, uid, gid))) = cred else {
                    return Err("cannot learn who asks (SO_PEERCRED)".into());
                };
                let who = Caller {
                    uid,
                    gid,
                    groups: supplementary_groups(pid),
                };
                let name = name.trim_start_matches('/').to_owned();
                self.propose_dir(DirOp::Unlink { name, who }, Parked::CtlRemove(token));
                return Ok(());
            }
        };
        self.send(token, &reply, None);
        Ok(())
    }

    /// Every segment of the cluster from the directory, with what this node holds of each.
    fn segments(&self) -> Vec<dsm_proto::ctl::ClusterSegment> {
        self.members.with_directory(|d| {
            d.listing()
                .map(|(meta, attached, unlinked)| {
                    let kind = if meta.name.starts_with("sysv:") {
                        "sysv"
                    } else if meta.name.starts_with("sem.") {
                        "semaphore"
                    } else {
                        "posix"
                    };
                    dsm_proto::ctl::ClusterSegment {
                        name: (!unlinked).then(|| format!("/{}", meta.name)),
                        kind: kind.into(),
                        id: meta.id.0,
                        size: meta.size,
                        uid: meta.uid,
                        gid: meta.gid,
                        mode: meta.mode,
                        attached: attached.iter().copied().collect(),
                        pages_here: self.store.get(meta.id).is_some().then(|| {
                            let (read, write) = self.core.access_counts(meta.id);
                            read + write
                        }),
                    }
                })
                .collect()
        })
    }

    /// A segment's pages as this node knows them: one it has open, or else any segment of the
    /// cluster (a replica node need not have opened what it keeps replicas of).
    fn pages(&self, wanted: &str) -> Option<dsm_proto::ctl::Pages> {
        let name = wanted.trim_start_matches('/');
        let id = u64::from_str_radix(wanted.trim_start_matches("0x"), 16).ok();
        let (segment, display, pages) = match self
            .store
            .iter()
            .find(|s| (!s.unlinked && s.meta.name == name) || Some(s.meta.id.0) == id)
        {
            Some(seg) => (seg.meta.id, seg.display_name(), seg.pages()),
            None => self.members.with_directory(|d| {
                d.segments()
                    .find(|m| (!m.name.is_empty() && m.name == name) || Some(m.id.0) == id)
                    .map(|m| {
                        let pages = m.size.div_ceil(PAGE_SIZE as u64) as u32;
                        (m.id, format!("/{}", m.name), pages)
                    })
            })?,
        };
        let me = self.config.node_id;
        let pages = (0..pages)
            .map(|page| {
                let key = PageKey { segment, page };
                let state = self.core.page(key);
                let owner = state.probable_owner == me;
                let repl = self.core.replication(key);
                dsm_proto::ctl::PageInfo {
                    page,
                    access: state.access,
                    local: state.local,
                    owner,
                    probable_owner: state.probable_owner.0,
                    copyset: if owner {
                        state.copyset.iter().map(|i| i as u32 + 1).collect()
                    } else {
                        Vec::new()
                    },
                    busy: self.core.busy(key).is_some(),
                    dirty: repl.dirty,
                    replicated: repl.sent.map(|(_, v)| v),
                    replicating: repl.under_way,
                    replica: repl.held,
                }
            })
            .collect();
        Some(dsm_proto::ctl::Pages {
            segment: display,
            id: segment.0,
            pages,
        })
    }

    fn stats(&self) -> dsm_proto::ctl::Stats {
        let s = self.core.stats();
        dsm_proto::ctl::Stats {
            node: self.config.node_id,
            manager: self.config.manager.as_str().into(),
            local_reads: s.local_reads,
            local_writes: s.local_writes,
            remote_reads: s.remote_reads,
            remote_writes: s.remote_writes,
            upgrades: s.upgrades,
            failed: s.failed,
            lost: s.lost,
            located: s.located,
            adopted: s.adopted,
            replicas_sent: s.replicas_sent,
            replicas_held: s.replicas_held,
            from_replica: s.from_replica,
            prefetched: s.prefetched,
            prefetch_opened: self.ahead_lost.0,
            prefetch_wasted: self.ahead_lost.1,
            prefetch_unopened: self.store.iter().map(|l| l.table.unopened_ahead()).sum(),
            forwarded: s.forwarded,
            invalidations_sent: s.invalidations_sent,
            pages_sent: s.pages_sent,
            pages_received: s.pages_received,
            messages_sent: s.messages_sent,
            revocations: s.revocations,
            sync_requests: self.sync.stats().requests,
            sync_served: self.sync.stats().served,
            sync_messages: self.sync.stats().messages,
            sync_delegations: self.sync.stats().delegations,
            sync_recalls: self.sync.stats().recalls,
            sync_objects: self.sync.objects() as u64,
            local_latency_us: self.latency[0].percentiles(),
            remote_latency_us: self.latency[1].percentiles(),
            remote_stages_us: [
                self.stages[0].percentiles(),
                self.stages[1].percentiles(),
                self.stages[2].percentiles(),
            ],
            local_histogram: self.latency[0].histogram(),
            remote_histogram: self.latency[1].histogram(),
            hot_pages: self.hot_pages(),
        }
    }

    /// The ten pages faulted on most.
    fn hot_pages(&self) -> Vec<dsm_proto::ctl::HotPage> {
        let mut hot: Vec<(&PageKey, &u64)> = self.hot.iter().collect();
        hot.sort_unstable_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        hot.into_iter()
            .take(10)
            .map(|(key, &faults)| dsm_proto::ctl::HotPage {
                segment: self
                    .store
                    .get(key.segment)
                    .map_or_else(|| key.segment.to_string(), |l| l.display_name()),
                page: key.page,
                faults,
            })
            .collect()
    }

    fn status(&self) -> Status {
        let segments = self
            .store
            .iter()
            .map(|seg| {
                let (readable, writable) = self.core.access_counts(seg.meta.id);
                SegmentStatus {
                    name: (!seg.unlinked).then(|| format!("/{}", seg.meta.name)),
                    id: seg.meta.id.0,
                    size: seg.meta.size,
                    base: seg.meta.base,
                    mode: seg.meta.mode,
                    pages: u64::from(seg.pages()),
                    resident: readable + writable,
                    readable,
                    writable,
                    mappings: seg.sessions.len() as u64,
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
                        self.store
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
            uptime_ms: self.now_ms(),
            listen: self
                .config
                .listen
                .map_or_else(String::new, |a| a.to_string()),
            socket: self.config.socket.display().to_string(),
            peers: self
                .peers
                .view()
                .into_iter()
                .map(|p| PeerStatus {
                    node: p.node,
                    addr: p.addr.map_or_else(String::new, |a| a.to_string()),
                    connected: p.up_since.is_some(),
                    up_for_ms: p.up_since.map(|t| t.elapsed().as_millis() as u64),
                    messages_out: p.stats.messages_out,
                    messages_in: p.stats.messages_in,
                    bytes_out: p.stats.bytes_out,
                    bytes_in: p.stats.bytes_in,
                    problem: p.problem.clone().unwrap_or_default(),
                })
                .collect(),
            segments,
            processes,
            incarnation: self.incarnation,
            members: self
                .members
                .members()
                .into_iter()
                .map(|(node, m)| {
                    let me = node == self.config.node_id;
                    MemberStatus {
                        node,
                        addr: if me {
                            self.config
                                .advertise
                                .or(self.config.listen)
                                .map_or_else(String::new, |a| a.to_string())
                        } else {
                            self.peers
                                .addr_of(node)
                                .or(m.addr)
                                .map_or_else(String::new, |a| a.to_string())
                        },
                        incarnation: m.incarnation,
                        state: if m.alive { "alive" } else { "dead" }.into(),
                        linked: me || self.peers.is_up(node),
                    }
                })
                .collect(),
            leader: self.members.leader(),
            term: self.members.term(),
            applied: self.members.applied(),
        }
    }

    // ---- local connections ----

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
            // The process exited: its end of the connection is gone.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                self.drop_conn(token);
                return;
            }
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
            let interest = crate::conn::interest(more);
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
            limited_warn!(
                self.limit,
                "closing local connection",
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
        if matches!(conn.kind, Kind::New) {
            self.silent -= 1;
        }
        match conn.kind {
            Kind::Session(id) => {
                // What the process sent on its channels before it ended (an unlock, a signal)
                // still counts, whichever socket's end this loop happened to see first.
                let channels: Vec<Token> = self
                    .conns
                    .iter()
                    .filter(
                        |(_, c)| matches!(c.kind, Kind::Channel { session, .. } if session == id),
                    )
                    .map(|(&t, _)| t)
                    .collect();
                for channel in channels {
                    self.on_event(channel, true, false);
                }
                self.end_session(id)
            }
            Kind::Channel { .. } => {
                if let Some(ticket) = conn.sync_ticket {
                    self.sync_cancel(ticket);
                }
            }
            Kind::New | Kind::Ctl => {}
        }
    }

    fn end_session(&mut self, id: SessionId) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        let released = session.maps.len();
        if self.config.replicas > 0 && self.core.has_unreleased() {
            // Exiting is a release point: what it wrote goes to the replica nodes.
            self.start_release(None);
        }
        for segment in session.maps.union(&session.opened) {
            self.stop_mapping(id, *segment);
            self.release(id, *segment);
        }
        // What it owed of revocations is settled.
        self.revocations.handle(RevokeInput::Gone { process: id });
        self.drain_core();
        if session.used_sync {
            self.sync_process_gone(id);
        }
        info!(
            "process {} detached (session {}): released its mappings of {released} segments",
            session.pid, id.0
        );
    }
}

/// The coherence core of this daemon, with the cluster's `founders`.
fn new_core(config: &Config, founders: Vec<NodeId>, incarnation: u64) -> Node {
    Node::new(dsm_core::Config {
        me: config.node_id,
        members: founders,
        manager: config.manager,
        fault_timeout_ms: config.fault_timeout_ms,
        readahead: config.readahead,
        replicas: config.replicas,
        incarnation,
    })
}

/// Whether a replica of `key` may be kept: its segment is in the directory and the page in
/// its span (the page sink and the core's input check alike, so the core records a replica
/// exactly when its bytes were stored).
fn replica_page_exists(members: &Members, key: PageKey) -> bool {
    members.with_directory(|d| {
        d.get(key.segment)
            .is_some_and(|m| u64::from(key.page) < m.span / PAGE_SIZE as u64)
    })
}

/// A number that differs each time a daemon starts.
fn incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 40)
}

fn describe(kind: Kind) -> String {
    match kind {
        Kind::New => "before its hello".into(),
        Kind::Session(s) => format!("session {}", s.0),
        Kind::Channel { session, tid } => format!("channel of session {} thread {tid}", session.0),
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

/// Local connections that have not said their hello, at most at once.
const MAX_SILENT: usize = 1024;

/// Pages whose faults `dsmctl top` counts at most (then the count starts again).
const HOT_PAGES: usize = 65_536;

/// How long a local connection may take to say its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// How many local connections to allow: the descriptor limit (raised to its hard limit) less
/// room for peers, memfds and the rest.
fn connection_limit() -> usize {
    let fds = usize::try_from(crate::page_store::raise_fd_limit()).unwrap_or(usize::MAX);
    (fds.saturating_sub(512) / 2).clamp(64, 65_536)
}

/// What `vm.max_map_count` should be at least: pages of one mapping with different protections
/// are separate kernel mappings, and the kernel's default (65,530) lets a process hold ~32k
/// scattered pages of a segment with different access; this lets it hold ~2 million
/// (`scripts/bench` figure 13a measures faults with a million held).
const MAP_COUNT_WANTED: u64 = 4_194_304;

/// Raises `vm.max_map_count` to [`MAP_COUNT_WANTED`] where this daemon may (root), and says
/// what it did; where it may not, says how.
fn raise_map_count() {
    const PATH: &str = "/proc/sys/vm/max_map_count";
    let Some(now) = std::fs::read_to_string(PATH)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    else {
        return;
    };
    if now >= MAP_COUNT_WANTED {
        return;
    }
    match std::fs::write(PATH, MAP_COUNT_WANTED.to_string()) {
        Ok(()) => info!(
            "raised vm.max_map_count from {now} to {MAP_COUNT_WANTED}: each page a process holds \
             with other access than its neighbours is a kernel mapping"
        ),
        Err(e) => warn!(
            "vm.max_map_count is {now} and this daemon cannot raise it ({e}): a process touching \
             more than ~{} scattered pages of a segment gets SIGBUS; as root: sysctl -w \
             vm.max_map_count={MAP_COUNT_WANTED}",
            now / 2
        ),
    }
}

/// Says so where this is a VM whose idle vCPUs halt at once (cpuidle-haltpoll with
/// `guest_halt_poll_ns` 0, a boot or module setting): each hop of a fault that wakes a daemon
/// or process sleeping on another CPU then costs a VM exit and entry, tens of microseconds
/// where the hop itself costs a few. Left as the operator set it: polling trades host CPU for
/// it (docs/operations.md, "Virtual machines").
fn note_halt_polling() {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let driver = read("/sys/devices/system/cpu/cpuidle/current_driver");
    let polls = read("/sys/module/haltpoll/parameters/guest_halt_poll_ns");
    if driver.trim() == "haltpoll" && polls.trim() == "0" {
        info!(
            "this VM halts an idle vCPU at once (haltpoll.guest_halt_poll_ns=0): every fault \
             hop that wakes another CPU costs a VM exit, tens of µs; with polling on (echo \
             200000 > /sys/module/haltpoll/parameters/guest_halt_poll_ns) remote faults take \
             about half as long (docs/operations.md, \"Virtual machines\")"
        );
    }
}

/// The supplementary groups of process `pid` (from `/proc`), at most [`Caller::MAX_GROUPS`];
/// none if they cannot be read (the primary group still counts).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .take(Caller::MAX_GROUPS)
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}
