//! Connections to the other daemons: one TCP connection per pair of nodes (the lower id dials
//! the higher), so messages between two nodes arrive in the order they were sent — the one
//! ordering the protocol relies on.
//!
//! A link says hello both ways (protocol version, cluster name, node id, manager) and refuses a
//! mismatch with a reason logged on both sides. The dialer retries with backoff.
//!
//! Links are made as nodes are learned: the configured `--peer`s; a node that dials this one
//! (it joins, and says in its hello where it listens); the members another node's hello lists
//! (its roster); the members the Raft log names. A daemon started with `--join` dials its
//! seeds (members' addresses, node ids unknown) until one answers: that connection becomes
//! the link to the member behind it, and its roster gives the rest.
//!
//! Nothing is lost with a connection while both daemons live: every coherence, lock-service
//! and Raft message is numbered and kept (page included) until the peer acknowledges it
//! (`PeerFrame::Ack`, at most 100 ms or 256 messages after what they cover); a new
//! connection's hello says how many the peer received from this daemon, and the rest go again,
//! in order, once. Messages kept for a daemon that has restarted since are dropped: nothing
//! meant for it reaches its successor. A link pings when it has written nothing for 500 ms
//! and is down when it has heard nothing for 3 s. That policy is `dsm_core::link` (simulated
//! in `crates/core/tests/links.rs`); this file moves its bytes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dsm_core::link::Bytes;
use dsm_core::{LinkInput, LinkOutput, LinkTiming};
use dsm_proto::frame::{self, FrameBuffer, MAX_PEER_FRAME};

use crate::noise::{Psk, Records};
use dsm_proto::peer::{PageKey, PeerFrame, PeerHello, PeerMsg};
use dsm_proto::sync::SyncMsg;
use dsm_proto::{NodeId, MAGIC, PAGE_SIZE, PROTOCOL_VERSION};
use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::page_store::{fdpass, Page};
use std::os::fd::AsFd;

/// Tokens at and above this belong to peer connections.
pub const FIRST_PEER_TOKEN: usize = 1 << 40;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Bytes a link may hold for a peer that is down before it starts dropping messages.
const MAX_OUTBOX: usize = 64 * 1024 * 1024;
/// Frames a connected link may have waiting for the socket: a peer that stops reading is
/// dropped (its link goes down, as if cut) rather than let its queue grow.
const MAX_UNSENT_FRAMES: usize = 16 * 1024;
/// Connections that have not said their hello yet, at most; more are closed at once.
const MAX_STRANGERS: usize = 64;
/// How long a connection may take to say its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// A link with nothing to send for this long sends a ping.
const PING_EVERY: Duration = Duration::from_millis(500);
/// A link that hears nothing (not even a ping) for this long is taken down: the daemon behind
/// it is stopped or its host unreachable, even if TCP has not noticed.
const SILENCE: Duration = Duration::from_secs(3);
/// A newcomer claiming the node id of a link that was heard from this recently is a second
/// daemon with that id, not a restart.
const ALIVE_WITHIN: Duration = Duration::from_millis(1500);
/// Messages received between acknowledgements at most (besides those [`ACK_DELAY`] after).
const ACK_EVERY: u64 = 256;
/// Longest an acknowledgement waits for more messages to cover (one Raft tick: owed
/// acknowledgements go out with the tick, not on a wake-up of their own).
const ACK_DELAY: Duration = Duration::from_millis(100);

/// A message from a peer.
#[derive(Debug)]
pub enum Incoming {
    /// Coherence (a grant's page is already stored, through the page sink).
    Coherence(PeerMsg),
    /// Membership and directory traffic (a Raft message).
    Raft(Vec<u8>),
    /// Lock-service traffic.
    Sync(SyncMsg),
    /// The link is up, to this daemon (a different incarnation than before means the old one
    /// died: nothing queued for it was delivered to this one). Comes before its messages.
    Up {
        /// The peer daemon's incarnation.
        incarnation: u64,
        /// Whether it is in a running cluster.
        formed: bool,
    },
    /// The link went down.
    Down,
    /// This node and that one cannot be in one cluster (name, manager, version, key, or a node
    /// id another live daemon has): why, naming both sides.
    Mismatch(String),
}

/// A message ready to write: its frame, and the page that follows a grant.
type Outgoing = (Vec<u8>, Option<Page>);

/// Where the page after a grant from a node goes: the daemon's mapping of the node's copy
/// (`None`: not taken, drop the bytes).
pub type PageSink<'a> = dyn FnMut(NodeId, &PeerMsg) -> Option<Page> + 'a;

/// What the daemon must know about its own side of every hello.
#[derive(Debug, Clone)]
pub struct Identity {
    /// This node.
    pub node: NodeId,
    /// The cluster's name.
    pub cluster: String,
    /// The manager algorithm's name.
    pub manager: String,
    /// This daemon's incarnation (see [`PeerHello::incarnation`]).
    pub incarnation: u64,
    /// The cluster key; `None` only with `--insecure` (plain links).
    pub key: Option<Psk>,
    /// Whether this node is in a running cluster (said in the hello).
    pub formed: bool,
    /// Where this node's peers reach it (`--advertise`, else `--listen`), if it listens.
    pub listen: Option<SocketAddr>,
}

/// Counters for one link.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkStats {
    /// Messages sent.
    pub messages_out: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
}

struct Conn {
    stream: TcpStream,
    token: Token,
    frames: FrameBuffer,
    /// A grant whose page has not fully arrived yet.
    awaiting_page: Option<PeerMsg>,
    out: VecDeque<Bytes>,
    sent: usize,
    want_write: bool,
    connected: bool,
    /// The peer's hello arrived and was accepted.
    greeted: bool,
    /// Close once `out` is flushed (after a refusal).
    closing: bool,
    /// When it was opened (a stranger that stays silent is closed after [`HELLO_TIMEOUT`]).
    opened: Instant,
    /// The record layer of a keyed link (`None`: plain, `--insecure`). With it, `out` holds
    /// plaintext messages, sealed one at a time as they go out.
    crypto: Option<Records>,
    /// Records to write as they are, before any message (the handshake's), and how much of the
    /// first is written.
    raw_out: VecDeque<Vec<u8>>,
    raw_sent: usize,
    /// Records of `out`'s first messages, sealed together to go out in one write (`sent` of
    /// it written), and where each message's records end.
    sealed: Vec<u8>,
    sealed_ends: VecDeque<usize>,
}

impl Conn {
    fn new(stream: TcpStream, token: Token, connected: bool) -> Conn {
        Conn {
            stream,
            token,
            frames: FrameBuffer::new(MAX_PEER_FRAME),
            awaiting_page: None,
            out: VecDeque::new(),
            sent: 0,
            want_write: false,
            connected,
            greeted: false,
            closing: false,
            opened: Instant::now(),
            crypto: None,
            raw_out: VecDeque::new(),
            raw_sent: 0,
            sealed: Vec::new(),
            sealed_ends: VecDeque::new(),
        }
    }
}

struct Link {
    /// Where the peer listens (`None`: not known yet — a node named in a copyset before its
    /// join reached this node's log; messages wait for it as for a link that is down).
    addr: Option<SocketAddr>,
    dials: bool,
    conn: Option<Conn>,
    /// Delivery across connections, acknowledgements, pings and silence
    /// (`dsm_core::link`).
    state: dsm_core::Link,
    backoff: Duration,
    retry_at: Instant,
    up_since: Option<Instant>,
    /// The peer daemon's incarnation, once greeted.
    incarnation: Option<u64>,
    failures: u32,
    stats: LinkStats,
    /// Why the link is not up, if it is not (for `dsmctl peers`).
    problem: Option<String>,
}

impl Link {
    fn new(addr: Option<SocketAddr>, dials: bool) -> Link {
        let now = Instant::now();
        Link {
            addr,
            dials,
            conn: None,
            state: dsm_core::Link::new(LinkTiming {
                ping_every_ms: PING_EVERY.as_millis() as u64,
                silence_ms: SILENCE.as_millis() as u64,
                ack_delay_ms: ACK_DELAY.as_millis() as u64,
                ack_every: ACK_EVERY,
                max_kept_bytes: MAX_OUTBOX,
            }),
            backoff: FIRST_BACKOFF,
            retry_at: now,
            up_since: None,
            incarnation: None,
            failures: 0,
            stats: LinkStats::default(),
            problem: None,
        }
    }
}

/// A member to join through (`--join`): an address, its node id unknown until it answers.
struct Seed {
    addr: SocketAddr,
    conn: Option<Conn>,
    retry_at: Instant,
    backoff: Duration,
    /// It is this very node, or refused this one for good: never dialled again.
    done: bool,
}

/// All links of this node.
pub struct Peers {
    me: Identity,
    /// Where the links' clock starts.
    clock: Instant,
    links: BTreeMap<NodeId, Link>,
    seeds: Vec<Seed>,
    /// Seeds' connections, by token.
    seed_tokens: HashMap<Token, usize>,
    /// Accepted connections whose hello has not arrived.
    strangers: HashMap<Token, Conn>,
    limit: crate::ratelimit::RateLimit,
    tokens: HashMap<Token, NodeId>,
    next_token: usize,
    /// Messages of the open batch: (peer, frame, page to send after it).
    batch: Vec<(NodeId, Vec<u8>, Option<PageKey>)>,
    batch_depth: u32,
    /// Links that came up or went down outside [`Peers::on_event`], for the daemon.
    events: Vec<(NodeId, Incoming)>,
}

/// A peer's state for `dsmctl peers`.
#[derive(Debug, Clone)]
pub struct PeerView {
    /// The peer.
    pub node: NodeId,
    /// Its address, if known.
    pub addr: Option<SocketAddr>,
    /// Up since, if up.
    pub up_since: Option<Instant>,
    /// Counters.
    pub stats: LinkStats,
    /// Why it is not linked, if it is not and the reason is known.
    pub problem: Option<String>,
}

impl Peers {
    /// Links to `peers`, none connected yet; `seeds` are members to join through (`--join`).
    pub fn new(me: Identity, peers: &[(NodeId, SocketAddr)], seeds: &[SocketAddr]) -> Peers {
        let now = Instant::now();
        let links = peers
            .iter()
            .map(|&(node, addr)| (node, Link::new(Some(addr), me.node < node)))
            .collect();
        let seeds = seeds
            .iter()
            .map(|&addr| Seed {
                addr,
                conn: None,
                retry_at: now,
                backoff: FIRST_BACKOFF,
                done: false,
            })
            .collect();
        Peers {
            me,
            links,
            seeds,
            seed_tokens: HashMap::new(),
            strangers: HashMap::new(),
            limit: Default::default(),
            tokens: HashMap::new(),
            next_token: FIRST_PEER_TOKEN,
            batch: Vec::new(),
            batch_depth: 0,
            events: Vec::new(),
            clock: Instant::now(),
        }
    }

    /// Now on the links' clock (ms), as `dsm_core::Link` counts time.
    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// An instant on the links' clock.
    fn at(&self, ms: u64) -> Instant {
        self.clock + Duration::from_millis(ms)
    }

    /// What happened to links since last asked (ups, downs, mismatches), in order.
    pub fn take_events(&mut self) -> Vec<(NodeId, Incoming)> {
        std::mem::take(&mut self.events)
    }

    /// Says in later hellos whether this node is in a running cluster.
    pub fn set_formed(&mut self, formed: bool) {
        self.me.formed = formed;
    }

    /// A member learned (from the log, a hello's roster, or its own hello): a link to it,
    /// dialled by the lower node id, once its address is known. Node ids outside 1 to 64 are
    /// not members'.
    pub fn add(&mut self, node: NodeId, addr: Option<SocketAddr>) {
        if node == self.me.node || !(1..=64).contains(&node.0) {
            return;
        }
        let dials = self.me.node < node;
        let link = self
            .links
            .entry(node)
            .or_insert_with(|| Link::new(None, dials));
        if let Some(addr) = addr {
            if link.addr != Some(addr) {
                if link.addr.is_some() {
                    info!("{node} is at {addr} now");
                }
                link.addr = Some(addr);
                link.retry_at = Instant::now();
            }
        }
    }

    /// Where `node` listens, if known.
    pub fn addr_of(&self, node: NodeId) -> Option<SocketAddr> {
        self.links.get(&node).and_then(|l| l.addr)
    }

    /// Sends a Raft message to `to` if its link is up to daemon `incarnation`; otherwise drops
    /// it (Raft sends again; a message for an old incarnation must never reach a new one).
    pub fn send_raft(&mut self, registry: &Registry, to: NodeId, incarnation: u64, bytes: Vec<u8>) {
        let up = self
            .links
            .get(&to)
            .is_some_and(|l| l.up_since.is_some() && l.incarnation == Some(incarnation));
        if up {
            self.push(registry, to, &PeerFrame::Raft(bytes), None);
        }
    }

    /// Whether `token` is one of ours.
    pub fn owns(token: Token) -> bool {
        token.0 >= FIRST_PEER_TOKEN
    }

    /// Whether the link to `node` is up.
    pub fn is_up(&self, node: NodeId) -> bool {
        self.links.get(&node).is_some_and(|l| l.up_since.is_some())
    }

    /// Every link, for status.
    pub fn view(&self) -> Vec<PeerView> {
        self.links
            .iter()
            .map(|(&node, l)| PeerView {
                node,
                addr: l.addr,
                up_since: l.up_since,
                stats: l.stats,
                problem: l.problem.clone(),
            })
            .collect()
    }

    fn hello(&self, to: NodeId) -> Vec<u8> {
        let link = self.links.get(&to);
        let roster = self
            .links
            .iter()
            .filter(|&(&n, _)| n != to)
            .filter_map(|(&n, l)| Some((n, l.addr?)))
            .collect();
        frame::encode(&PeerFrame::Hello(PeerHello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            cluster: self.me.cluster.clone(),
            node: self.me.node,
            manager: self.me.manager.clone(),
            incarnation: self.me.incarnation,
            formed: self.me.formed,
            peer_incarnation: link.and_then(|l| l.incarnation).unwrap_or(0),
            received: link.map_or(0, |l| l.state.received()),
            listen: self.me.listen,
            roster,
        }))
        .expect("hello encodes")
    }

    /// Sends a frame to `to` (at once, unless a batch is open: then with the batch).
    pub fn send(&mut self, registry: &Registry, to: NodeId, msg: &PeerFrame) {
        self.push(registry, to, msg, None);
    }

    /// Sends a grant's frame followed by the page `key` of this node's copy. Only inside a
    /// batch: the page is found when the batch goes out.
    pub fn send_with_page(
        &mut self,
        registry: &Registry,
        to: NodeId,
        msg: &PeerFrame,
        key: PageKey,
    ) {
        debug_assert!(self.batch_depth > 0, "pages go out with a batch");
        self.push(registry, to, msg, Some(key));
    }

    fn push(&mut self, registry: &Registry, to: NodeId, msg: &PeerFrame, page: Option<PageKey>) {
        let bytes = match frame::encode(msg) {
            Ok(b) => b,
            Err(e) => {
                warn!("cannot encode a message for {to}: {e}");
                return;
            }
        };
        if !self.links.contains_key(&to) {
            // A member this node has not linked to yet (its join is not in this node's log
            // yet): the message waits for the link, as for one that is down.
            self.add(to, None);
        }
        let Some(link) = self.links.get_mut(&to) else {
            warn!("no link to {to}: not a member of this cluster");
            return;
        };
        link.stats.messages_out += 1;
        link.stats.bytes_out += (bytes.len() + page.map_or(0, |_| PAGE_SIZE)) as u64;
        if self.batch_depth > 0 {
            self.batch.push((to, bytes, page));
        } else {
            self.write_now(registry, to, vec![(bytes, None)], true);
        }
    }

    /// Opens a batch: messages wait until the matching [`Peers::end_batch`], then go out with
    /// one `writev` per peer. Batches nest; the outermost end sends.
    pub fn begin_batch(&mut self) {
        self.batch_depth += 1;
    }

    /// Closes a batch; the outermost sends everything, finding each page through `resolve`.
    pub fn end_batch(&mut self, registry: &Registry, resolve: &mut dyn FnMut(PageKey) -> Page) {
        self.batch_depth -= 1;
        if self.batch_depth > 0 || self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let mut per_peer: BTreeMap<NodeId, Vec<Outgoing>> = BTreeMap::new();
        for (to, bytes, key) in batch {
            per_peer
                .entry(to)
                .or_default()
                .push((bytes, key.map(&mut *resolve)));
        }
        for (to, messages) in per_peer {
            self.write_now(registry, to, messages, true);
        }
    }

    /// Writes messages to `to` now if its link is up and idle; whatever the socket does not
    /// take (or all, if the link is busy or down) waits in its queue. Each message is made flat
    /// once (frame and page in one buffer): the link keeps that buffer until acknowledged and
    /// the queue shares it, so a page is copied out of its mapping once.
    fn write_now(
        &mut self,
        registry: &Registry,
        to: NodeId,
        messages: Vec<Outgoing>,
        numbered: bool,
    ) {
        let now_ms = self.now_ms();
        let Some(link) = self.links.get_mut(&to) else {
            return;
        };
        let mut flat: Vec<Bytes> = Vec::with_capacity(messages.len());
        for (bytes, page) in messages {
            let all = match page {
                None => bytes,
                Some(page) => {
                    let mut all = Vec::with_capacity(bytes.len() + PAGE_SIZE);
                    all.extend_from_slice(&bytes);
                    page.append_to(&mut all);
                    all
                }
            };
            let all = Bytes::new(all);
            if numbered {
                // Kept until acknowledged (see the module's comment). One that cannot be kept
                // is not sent either: every message the peer counts is one we can send again,
                // so the numbers on both sides stay the same.
                if !link.state.has_room(all.len()) {
                    limited_warn!(
                        self.limit,
                        "unacked overflow",
                        "{to} has not acknowledged {} MiB of messages (down or stuck): \
                         dropping a message for it",
                        MAX_OUTBOX >> 20
                    );
                    continue;
                }
                link.state.handle(LinkInput::Send {
                    bytes: all.clone(),
                    now_ms,
                });
            }
            flat.push(all);
        }
        let Some(conn) = link.conn.as_mut().filter(|c| c.greeted) else {
            // Down: the numbered ones go when it is up again.
            return;
        };
        let mut rest = flat.into_iter();
        let mut failure = None;
        if conn.out.is_empty() && conn.connected && conn.crypto.is_none() {
            'writing: loop {
                let chunk: Vec<Bytes> = rest.by_ref().take(fdpass::BATCH_MESSAGES).collect();
                if chunk.is_empty() {
                    break;
                }
                let mut written = match fdpass::send_batch(conn.stream.as_fd(), &chunk) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => {
                        failure = Some(e);
                        0
                    }
                };
                // Queue what the socket did not take, the first message from where it stopped.
                let mut chunk = chunk.into_iter();
                for m in chunk.by_ref() {
                    if written >= m.len() {
                        written -= m.len();
                        continue;
                    }
                    conn.sent = written;
                    conn.out.push_back(m);
                    conn.out.extend(chunk);
                    break 'writing;
                }
            }
        }
        conn.out.extend(rest);
        if let Some(e) = failure {
            self.drop_conn(registry, to, &format!("write failed: {e}"));
            return;
        }
        if conn.out.len() > MAX_UNSENT_FRAMES {
            self.drop_conn(registry, to, "it does not read what it is sent");
            return;
        }
        self.flush(registry, to);
    }

    /// When [`Peers::tick`] next has something to do: a silent stranger to close, a link to
    /// ping, to drop as silent or to dial again, acknowledgements owed (sent at most
    /// [`ACK_DELAY`] after what they acknowledge, or at once every [`ACK_EVERY`] messages).
    pub fn next_deadline(&self) -> Option<Instant> {
        let strangers = self.strangers.values().map(|c| c.opened + HELLO_TIMEOUT);
        let links = self.links.values().flat_map(|l| {
            let timed = l.state.poll_timeout().map(|ms| self.at(ms));
            let dial = (l.dials && l.addr.is_some() && l.conn.is_none()).then_some(l.retry_at);
            [timed, dial].into_iter().flatten()
        });
        let joining = !self.me.formed && !self.links.values().any(|l| l.up_since.is_some());
        let seeds = self
            .seeds
            .iter()
            .filter(|s| joining && !s.done && s.conn.is_none())
            .map(|s| s.retry_at);
        strangers.chain(links).chain(seeds).min()
    }

    /// Dials the peers that are due for a (re)try, and closes connections that never said
    /// their hello.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        let silent: Vec<Token> = self
            .strangers
            .iter()
            .filter(|(_, c)| now.duration_since(c.opened) >= HELLO_TIMEOUT)
            .map(|(&t, _)| t)
            .collect();
        for token in silent {
            if let Some(mut conn) = self.strangers.remove(&token) {
                let _ = registry.deregister(&mut conn.stream);
                limited_warn!(
                    self.limit,
                    "silent peer connection",
                    "closed a peer connection that sent no hello in {HELLO_TIMEOUT:?}"
                );
            }
        }
        // Each link's pings, acknowledgements and silence (`dsm_core::link`).
        let now_ms = self.now_ms();
        let nodes: Vec<NodeId> = self.links.keys().copied().collect();
        for node in nodes {
            if let Some(link) = self.links.get_mut(&node) {
                link.state.handle(LinkInput::Tick { now_ms });
            }
            self.link_outputs(registry, node);
        }
        let due: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(_, l)| l.dials && l.addr.is_some() && l.conn.is_none() && l.retry_at <= now)
            .map(|(&n, _)| n)
            .collect();
        for node in due {
            self.dial(registry, node);
        }
        // Joining (`--join`): the seeds are dialled until a link is up.
        let joining = !self.me.formed && !self.links.values().any(|l| l.up_since.is_some());
        if joining {
            for i in 0..self.seeds.len() {
                let seed = &self.seeds[i];
                if !seed.done && seed.conn.is_none() && seed.retry_at <= now {
                    self.dial_seed(registry, i);
                }
            }
        }
    }

    /// Opens a connection to seed `i` and says hello (to a node it does not know yet).
    fn dial_seed(&mut self, registry: &Registry, i: usize) {
        let hello = self.hello(self.me.node);
        let addr = self.seeds[i].addr;
        match self.open(registry, addr, hello, &addr) {
            Ok(Some(conn)) => {
                self.seed_tokens.insert(conn.token, i);
                self.seeds[i].conn = Some(conn);
            }
            Ok(None) => {}
            Err(why) => Self::seed_failed(&mut self.seeds[i], &why),
        }
    }

    /// Connects to `addr` (`what` names it in the log) and queues `hello` — the handshake's
    /// first record on a keyed link. `Err`: the connection failed (retry later); `Ok(None)`:
    /// it could not be set up here (logged).
    fn open(
        &mut self,
        registry: &Registry,
        addr: SocketAddr,
        hello: Vec<u8>,
        what: &dyn std::fmt::Display,
    ) -> Result<Option<Conn>, String> {
        let token = Token(self.next_token);
        self.next_token += 1;
        let mut stream =
            TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        if let Err(e) =
            registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            warn!("cannot register a connection to {what}: {e}");
            return Ok(None);
        }
        let mut conn = Conn::new(stream, token, false);
        match &self.me.key {
            Some(psk) => match Records::initiator(psk, &hello) {
                Ok((records, first)) => {
                    conn.crypto = Some(records);
                    conn.raw_out.push_back(first);
                }
                Err(e) => {
                    warn!("cannot start a handshake with {what}: {e}");
                    return Ok(None);
                }
            },
            None => conn.out.push_back(hello.into()),
        }
        conn.want_write = true;
        Ok(Some(conn))
    }

    fn seed_failed(seed: &mut Seed, why: &str) {
        if seed.backoff == FIRST_BACKOFF {
            warn!("joining through {}: {why}; retrying", seed.addr);
        } else {
            debug!("joining through {}: {why}", seed.addr);
        }
        seed.retry_at = Instant::now() + seed.backoff;
        seed.backoff = (seed.backoff * 2).min(MAX_BACKOFF);
    }

    fn drop_seed(&mut self, registry: &Registry, i: usize, why: &str) {
        let seed = &mut self.seeds[i];
        if let Some(mut conn) = seed.conn.take() {
            let _ = registry.deregister(&mut conn.stream);
            self.seed_tokens.remove(&conn.token);
            if conn.connected && conn.crypto.as_ref().is_some_and(|r| !r.is_transport()) {
                seed.done = true;
                let why = format!(
                    "the member at {} closed the connection during the handshake: a different \
                     cluster key, or not a dsm daemon",
                    seed.addr
                );
                self.events.push((self.me.node, Incoming::Mismatch(why)));
            }
        }
        if !self.seeds[i].done {
            Self::seed_failed(&mut self.seeds[i], why);
        }
    }

    /// Readiness of a seed's connection: connected, writable, or its answer arrived.
    fn on_seed(
        &mut self,
        registry: &Registry,
        i: usize,
        readable: bool,
        arrived: &mut Vec<(NodeId, Incoming)>,
        sink: &mut PageSink<'_>,
    ) {
        let addr = self.seeds[i].addr;
        let Some(conn) = self.seeds[i].conn.as_mut() else {
            return;
        };
        match finish_connect(conn) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                self.drop_seed(registry, i, &format!("cannot connect to {addr}: {e}"));
                return;
            }
        }
        if let Err(e) = flush_conn(registry, conn) {
            self.drop_seed(registry, i, &format!("write failed: {e}"));
            return;
        }
        if !readable {
            return;
        }
        let eof = match fill(conn) {
            Ok((eof, _)) => eof,
            Err(e) => {
                self.drop_seed(registry, i, &format!("read failed: {e}"));
                return;
            }
        };
        let first = match conn.frames.pop() {
            Ok(Some(payload)) => frame::decode::<PeerFrame>(&payload).map_err(|e| e.to_string()),
            Ok(None) if eof => Err("closed before its hello".into()),
            Ok(None) => return,
            Err(e) => Err(e.to_string()),
        };
        let hello = match first {
            Ok(PeerFrame::Hello(h)) => h,
            Ok(PeerFrame::Refused { reason, fatal }) => {
                if fatal {
                    let why = format!("the member at {addr} refused this node: {reason}");
                    self.events.push((self.me.node, Incoming::Mismatch(why)));
                    self.seeds[i].done = true;
                }
                self.drop_seed(registry, i, &format!("refused: {reason}"));
                return;
            }
            Ok(_) => {
                self.drop_seed(registry, i, "a message before the hello");
                return;
            }
            Err(why) => {
                self.drop_seed(registry, i, &why);
                return;
            }
        };
        if let Err(why) = self.check_hello(&hello) {
            let why = format!("the member at {addr} ({}) runs {why}", hello.node);
            self.events
                .push((self.me.node, Incoming::Mismatch(why.clone())));
            self.drop_seed(registry, i, &why);
            return;
        }
        if hello.node == self.me.node {
            warn!("--join {addr} is this node itself: not dialled again");
            self.seeds[i].done = true;
            self.drop_seed(registry, i, "it is this node");
            return;
        }
        // The seed is `hello.node`: its connection becomes that link's.
        let node = hello.node;
        self.add(node, Some(addr));
        let mut conn = self.seeds[i].conn.take().expect("checked");
        self.seed_tokens.remove(&conn.token);
        self.seeds[i].backoff = FIRST_BACKOFF;
        if self.links[&node].conn.is_some() {
            let _ = registry.deregister(&mut conn.stream);
            return;
        }
        self.tokens.insert(conn.token, node);
        self.links.get_mut(&node).expect("added").conn = Some(conn);
        self.greeted(registry, node, &hello, arrived);
        if let Err(why) = self.parse(registry, node, arrived, sink) {
            self.refuse(registry, node, &why, false);
        }
    }

    /// Acknowledges what arrived from each peer, where more than `threshold` messages since the
    /// last acknowledgement.
    /// Does what link `node`'s state asks: resend what the peer missed, acknowledge, ping,
    /// drop a silent connection.
    fn link_outputs(&mut self, registry: &Registry, node: NodeId) {
        loop {
            let Some(link) = self.links.get_mut(&node) else {
                return;
            };
            let Some(output) = link.state.poll_output() else {
                return;
            };
            match output {
                LinkOutput::Resend(kept) => {
                    if let Some(conn) = link.conn.as_mut().filter(|c| c.greeted) {
                        conn.out.extend(kept);
                    }
                }
                LinkOutput::Ack(count) => {
                    let ack = frame::encode(&PeerFrame::Ack(count)).expect("encodes");
                    self.write_now(registry, node, vec![(ack, None)], false);
                }
                LinkOutput::Ping => {
                    let ping = frame::encode(&PeerFrame::Ping).expect("encodes");
                    self.write_now(registry, node, vec![(ping, None)], false);
                }
                LinkOutput::Silent => self.drop_conn(
                    registry,
                    node,
                    &format!(
                        "nothing heard for {SILENCE:?} (its daemon is stopped or its host unreachable)"
                    ),
                ),
                LinkOutput::Restarted { dropped } => {
                    if dropped > 0 {
                        info!("{node} restarted: {dropped} messages kept for its old daemon dropped");
                    }
                }
            }
        }
    }

    fn dial(&mut self, registry: &Registry, node: NodeId) {
        let hello = self.hello(node);
        let Some(addr) = self.links.get(&node).and_then(|l| l.addr) else {
            return;
        };
        let opened = self.open(registry, addr, hello, &node);
        let link = self.links.get_mut(&node).expect("known");
        match opened {
            Ok(Some(conn)) => {
                self.tokens.insert(conn.token, node);
                link.conn = Some(conn);
            }
            Ok(None) => {}
            Err(why) => Self::failed(link, node, &why),
        }
    }

    fn failed(link: &mut Link, node: NodeId, why: &str) {
        link.problem = Some(why.to_owned());
        if link.failures == 0 {
            warn!("{node}: {why}; retrying");
        } else {
            debug!("{node}: {why}");
        }
        link.failures += 1;
        link.retry_at = Instant::now() + link.backoff;
        link.backoff = (link.backoff * 2).min(MAX_BACKOFF);
    }

    /// Accepts every pending connection on the listener.
    pub fn accept(&mut self, registry: &Registry, listener: &TcpListener) {
        loop {
            match listener.accept() {
                Ok((mut stream, addr)) => {
                    if self.strangers.len() >= MAX_STRANGERS {
                        // The oldest stranger gives way: a real peer's handshake comes at once.
                        let oldest = self
                            .strangers
                            .iter()
                            .min_by_key(|(_, c)| c.opened)
                            .map(|(&t, _)| t);
                        if let Some(mut old) = oldest.and_then(|t| self.strangers.remove(&t)) {
                            let _ = registry.deregister(&mut old.stream);
                        }
                        limited_warn!(
                            self.limit,
                            "too many strangers",
                            "{MAX_STRANGERS} peer connections were waiting for their hello: closed \
                             the oldest for one from {addr}"
                        );
                    }
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
                        warn!("cannot register a peer connection from {addr}: {e}");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    debug!("peer connection from {addr}");
                    let mut conn = Conn::new(stream, token, true);
                    if let Some(psk) = &self.me.key {
                        match Records::responder(psk) {
                            Ok(r) => conn.crypto = Some(r),
                            Err(e) => {
                                warn!("cannot answer a handshake: {e}");
                                continue;
                            }
                        }
                    }
                    self.strangers.insert(token, conn);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("cannot accept a peer connection: {e}");
                    return;
                }
            }
        }
    }

    /// Handles readiness of a peer connection; returns what arrived, in order.
    pub fn on_event(
        &mut self,
        registry: &Registry,
        token: Token,
        readable: bool,
        writable: bool,
        sink: &mut PageSink<'_>,
    ) -> Vec<(NodeId, Incoming)> {
        let mut arrived = Vec::new();
        if let Some(&node) = self.tokens.get(&token) {
            if writable {
                self.on_writable(registry, node);
            }
            if readable {
                self.on_readable(registry, node, &mut arrived, sink);
            }
        } else if let Some(&i) = self.seed_tokens.get(&token) {
            self.on_seed(registry, i, readable, &mut arrived, sink);
        } else if self.strangers.contains_key(&token) && readable {
            self.on_stranger(registry, token, &mut arrived, sink);
        }
        arrived
    }

    fn on_writable(&mut self, registry: &Registry, node: NodeId) {
        let Some(link) = self.links.get_mut(&node) else {
            return;
        };
        let Some(conn) = &mut link.conn else { return };
        match finish_connect(conn) {
            Ok(true) => self.flush(registry, node),
            Ok(false) => {}
            Err(e) => {
                let why = format!("cannot connect to {}: {e}", shown(link.addr));
                self.drop_conn(registry, node, &why);
            }
        }
    }

    fn on_readable(
        &mut self,
        registry: &Registry,
        node: NodeId,
        arrived: &mut Vec<(NodeId, Incoming)>,
        sink: &mut PageSink<'_>,
    ) {
        let now_ms = self.now_ms();
        let link = self.links.get_mut(&node).expect("token maps to a link");
        let Some(conn) = &mut link.conn else { return };
        let (eof, read) = match fill(conn) {
            Ok(r) => r,
            Err(e) => {
                self.drop_conn(registry, node, &format!("read failed: {e}"));
                return;
            }
        };
        link.stats.bytes_in += read as u64;
        if read > 0 {
            link.state.handle(LinkInput::Arrived {
                numbered: false,
                now_ms,
            });
        }
        if let Err(why) = self.parse(registry, node, arrived, sink) {
            self.refuse(registry, node, &why, false);
            return;
        }
        self.link_outputs(registry, node);
        if eof {
            self.drop_conn(registry, node, "closed by peer");
        }
    }

    /// Takes every complete frame a link's connection has buffered.
    fn parse(
        &mut self,
        registry: &Registry,
        node: NodeId,
        arrived: &mut Vec<(NodeId, Incoming)>,
        sink: &mut PageSink<'_>,
    ) -> Result<(), String> {
        let now_ms = self.now_ms();
        loop {
            let link = self.links.get_mut(&node).expect("known");
            let Some(conn) = &mut link.conn else {
                return Ok(());
            };
            if let Some(msg) = conn.awaiting_page {
                let stored = conn.frames.take_raw(PAGE_SIZE, |bytes| {
                    if let Some(page) = sink(node, &msg) {
                        page.fill_from(bytes);
                    }
                });
                if !stored {
                    return Ok(());
                }
                conn.awaiting_page = None;
                link.stats.messages_in += 1;
                link.state.handle(LinkInput::Arrived {
                    numbered: true,
                    now_ms,
                });
                arrived.push((node, Incoming::Coherence(msg)));
                continue;
            }
            let Some(payload) = conn.frames.pop().map_err(|e| e.to_string())? else {
                return Ok(());
            };
            let frame: PeerFrame = frame::decode(&payload).map_err(|e| e.to_string())?;
            let greeted = conn.greeted;
            match frame {
                PeerFrame::Hello(hello) if !greeted => {
                    if hello.node != node {
                        return Err(format!(
                            "expected node {} but node {} answered",
                            node.0, hello.node.0
                        ));
                    }
                    if let Err(why) = self.check_hello(&hello) {
                        self.events
                            .push((node, Incoming::Mismatch(format!("{node} runs {why}"))));
                        self.refuse(registry, node, &why, true);
                        return Ok(());
                    }
                    self.greeted(registry, node, &hello, arrived);
                }
                PeerFrame::Refused { reason, fatal } => {
                    link.failures = link.failures.max(1);
                    link.backoff = MAX_BACKOFF;
                    warn!("{node} refused this node: {reason}");
                    link.problem = Some(format!("refused by {node}: {reason}"));
                    if fatal {
                        let why = format!("{node} refused this node: {reason}");
                        self.events.push((node, Incoming::Mismatch(why)));
                    }
                    self.drop_conn(registry, node, "refused");
                    return Ok(());
                }
                _ if !greeted => return Err("a message before the hello".into()),
                PeerFrame::Hello(_) => return Err("a second hello".into()),
                PeerFrame::Coherence(msg @ (PeerMsg::Grant { .. } | PeerMsg::Replica { .. })) => {
                    conn.awaiting_page = Some(msg);
                }
                PeerFrame::Coherence(msg) => {
                    link.stats.messages_in += 1;
                    link.state.handle(LinkInput::Arrived {
                        numbered: true,
                        now_ms,
                    });
                    arrived.push((node, Incoming::Coherence(msg)));
                }
                PeerFrame::Raft(bytes) => {
                    link.stats.messages_in += 1;
                    link.state.handle(LinkInput::Arrived {
                        numbered: true,
                        now_ms,
                    });
                    arrived.push((node, Incoming::Raft(bytes)));
                }
                PeerFrame::Ping => {}
                PeerFrame::Ack(count) => link.state.handle(LinkInput::Acked { count }),
                PeerFrame::Sync(msg) => {
                    link.stats.messages_in += 1;
                    link.state.handle(LinkInput::Arrived {
                        numbered: true,
                        now_ms,
                    });
                    arrived.push((node, Incoming::Sync(msg)));
                }
            }
        }
    }

    fn check_hello(&self, hello: &PeerHello) -> Result<(), String> {
        if hello.magic != MAGIC {
            return Err("not a dsm daemon (wrong magic)".into());
        }
        if hello.version != PROTOCOL_VERSION {
            return Err(format!(
                "protocol version {} (this node speaks {PROTOCOL_VERSION}): run the same dsm version on every node",
                hello.version
            ));
        }
        if hello.cluster != self.me.cluster {
            return Err(format!(
                "cluster `{}` (this node is in `{}`): check --cluster on both nodes",
                hello.cluster, self.me.cluster
            ));
        }
        if hello.manager != self.me.manager {
            return Err(format!(
                "manager `{}` (this node runs `{}`): every node needs the same --manager",
                hello.manager, self.me.manager
            ));
        }
        Ok(())
    }

    fn greeted(
        &mut self,
        registry: &Registry,
        node: NodeId,
        hello: &PeerHello,
        arrived: &mut Vec<(NodeId, Incoming)>,
    ) {
        for &(member, addr) in &hello.roster {
            if self.links.get(&member).is_none_or(|l| l.addr.is_none()) {
                self.add(member, Some(addr));
            }
        }
        let (incarnation, formed) = (hello.incarnation, hello.formed);
        let me = self.me.incarnation;
        let now_ms = self.now_ms();
        let link = self.links.get_mut(&node).expect("known");
        arrived.push((
            node,
            Incoming::Up {
                incarnation,
                formed,
            },
        ));
        link.incarnation = Some(incarnation);
        link.problem = None;
        link.conn.as_mut().expect("connected").greeted = true;
        // What the peer already has of ours is forgotten; the rest goes again, in order (and
        // nothing kept for an old daemon reaches a new one): `dsm_core::link`.
        link.state.handle(LinkInput::Up {
            incarnation,
            received: (hello.peer_incarnation == me).then_some(hello.received),
            now_ms,
        });
        link.up_since = Some(Instant::now());
        link.backoff = FIRST_BACKOFF;
        link.failures = 0;
        info!("link to {node} at {} is up", shown(link.addr));
        self.link_outputs(registry, node);
        self.flush(registry, node);
    }

    fn on_stranger(
        &mut self,
        registry: &Registry,
        token: Token,
        arrived: &mut Vec<(NodeId, Incoming)>,
        sink: &mut PageSink<'_>,
    ) {
        let conn = self.strangers.get_mut(&token).expect("checked");
        let mut broken = None;
        let eof = match fill(conn) {
            Ok((eof, _)) => eof,
            Err(e) => {
                broken = Some(e.to_string());
                true
            }
        };
        let hello = match conn.frames.pop() {
            Ok(Some(payload)) => match frame::decode::<PeerFrame>(&payload) {
                Ok(PeerFrame::Hello(h)) => Ok(h),
                Ok(_) => Err("a message before the hello".to_string()),
                Err(e) => Err(format!("bad hello: {e}")),
            },
            Ok(None) if eof => Err(broken.unwrap_or_else(|| "closed before its hello".into())),
            Ok(None) => return,
            Err(e) => Err(e.to_string()),
        };
        let mut conn = self.strangers.remove(&token).expect("checked");
        let peer = conn
            .stream
            .peer_addr()
            .map_or("?".into(), |a| a.to_string());
        // Whether a refusal is one the newcomer cannot cure by waiting.
        let mut fatal = false;
        let verdict = hello.and_then(|h| {
            if let Err(why) = self.check_hello(&h) {
                fatal = true;
                return Err(why);
            }
            if h.node == self.me.node && h.incarnation == self.me.incarnation {
                fatal = true;
                return Err(format!(
                    "this daemon (node {}) dialled itself: an address given for a peer \
                     (--peer) reaches this daemon's own --listen address",
                    h.node.0
                ));
            }
            if h.node == self.me.node {
                fatal = true;
                return Err(format!(
                    "node {} is this node's id: two daemons cannot share --node-id {}",
                    h.node.0, h.node.0
                ));
            }
            match self.links.get(&h.node) {
                None if h.listen.is_none() => Err(format!(
                    "node {} is not a member here (no --peer for it), and gave no --listen \
                     address to be reached at",
                    h.node.0
                )),
                None if !(1..=64).contains(&h.node.0) => {
                    fatal = true;
                    Err(format!("node id {} is not 1 to 64", h.node.0))
                }
                None => Ok(h),
                Some(l) if l.dials && l.addr.is_some() => Err(format!(
                    "node {} should wait for this node ({}) to dial it",
                    h.node.0, self.me.node.0
                )),
                Some(l)
                    if l.up_since.is_some()
                        && l.incarnation != Some(h.incarnation)
                        && self.now_ms()
                            < l.state.last_heard_ms() + ALIVE_WITHIN.as_millis() as u64 =>
                {
                    fatal = true;
                    Err(format!(
                        "node {} is alive in this cluster (another daemon, incarnation {:#x}, \
                         linked to node {} since {:.0?} ago): two daemons cannot share \
                         --node-id {}",
                        h.node.0,
                        l.incarnation.unwrap_or(0),
                        self.me.node.0,
                        l.up_since.map_or(Duration::ZERO, |t| t.elapsed()),
                        h.node.0
                    ))
                }
                Some(_) => Ok(h),
            }
        });
        match verdict {
            Ok(peer_hello) => {
                let node = peer_hello.node;
                // A node not met before (it joins) is reached where it says it listens; an
                // unspecified IP there means the one it connects from.
                let said = peer_hello.listen.map(|mut a| {
                    if a.ip().is_unspecified() {
                        if let Ok(from) = conn.stream.peer_addr() {
                            a.set_ip(from.ip());
                        }
                    }
                    a
                });
                if self.links.get(&node).is_none_or(|l| l.addr.is_none()) {
                    self.add(node, said);
                }
                let hello = self.hello(node);
                if let Some(records) = &mut conn.crypto {
                    match records.reply(&hello) {
                        Ok(answer) => conn.raw_out.push_back(answer),
                        Err(e) => {
                            limited_warn!(self.limit, "refused peer", "refusing peer {peer}: {e}");
                            let _ = registry.deregister(&mut conn.stream);
                            return;
                        }
                    }
                } else {
                    conn.out.push_back(hello.into());
                }
                if self.links[&node].conn.is_some() {
                    self.drop_conn(registry, node, "replaced by a new connection");
                }
                self.tokens.insert(token, node);
                self.links.get_mut(&node).expect("known").conn = Some(conn);
                self.greeted(registry, node, &peer_hello, arrived);
                // Frames that came with the hello.
                if let Err(why) = self.parse(registry, node, arrived, sink) {
                    self.refuse(registry, node, &why, false);
                }
            }
            Err(reason) => {
                limited_warn!(
                    self.limit,
                    "refused peer",
                    "refusing peer connection from {peer}: {reason}"
                );
                let refusal =
                    frame::encode(&PeerFrame::Refused { reason, fatal }).expect("encodes");
                // A keyed dialer that proved the key learns why: the refusal is the answer.
                let bytes = match &mut conn.crypto {
                    None => Some(refusal),
                    Some(r) if !r.is_transport() => r.reply(&refusal).ok(),
                    Some(_) => None,
                };
                if let Some(bytes) = bytes {
                    let _ = conn.stream.write(&bytes);
                }
                let _ = registry.deregister(&mut conn.stream);
            }
        }
    }

    fn refuse(&mut self, registry: &Registry, node: NodeId, reason: &str, fatal: bool) {
        warn!("closing link to {node}: {reason}");
        if let Some(link) = self.links.get_mut(&node) {
            link.problem = Some(reason.to_owned());
        }
        if let Some(conn) = self.links.get_mut(&node).and_then(|l| l.conn.as_mut()) {
            let refusal = frame::encode(&PeerFrame::Refused {
                reason: reason.to_owned(),
                fatal,
            })
            .expect("encodes");
            conn.out.clear();
            conn.sealed.clear();
            conn.sealed_ends.clear();
            conn.sent = 0;
            conn.out.push_back(refusal.into());
            conn.closing = true;
        }
        self.flush(registry, node);
        self.drop_conn(registry, node, reason);
    }

    fn flush(&mut self, registry: &Registry, node: NodeId) {
        let Some(link) = self.links.get_mut(&node) else {
            return;
        };
        let Some(conn) = &mut link.conn else { return };
        if let Err(e) = flush_conn(registry, conn) {
            self.drop_conn(registry, node, &format!("write failed: {e}"));
        }
    }

    fn drop_conn(&mut self, registry: &Registry, node: NodeId, why: &str) {
        let Some(link) = self.links.get_mut(&node) else {
            return;
        };
        let Some(mut conn) = link.conn.take() else {
            return;
        };
        let _ = registry.deregister(&mut conn.stream);
        self.tokens.remove(&conn.token);
        link.state.handle(LinkInput::Down);
        if let Some(since) = link.up_since.take() {
            warn!("link to {node} lost after {:.1?}: {why}", since.elapsed());
            self.events.push((node, Incoming::Down));
            // What the peer did not acknowledge is kept (`dsm_core::link`) and goes again, from
            // where the peer says it stopped, on the next connection.
            link.retry_at = Instant::now();
        } else if link.dials {
            let why = if conn.connected && conn.crypto.as_ref().is_some_and(|r| !r.is_transport()) {
                let why = format!(
                    "{why} during the handshake: a different cluster key, or not a dsm daemon"
                );
                self.events.push((
                    node,
                    Incoming::Mismatch(format!("{node} at {}: {why}", shown(link.addr))),
                ));
                why
            } else {
                why.to_owned()
            };
            Self::failed(link, node, &why);
        }
    }
}

/// Whether a dialled connection is established (`Ok(false)`: still connecting), marking it so.
fn finish_connect(conn: &mut Conn) -> io::Result<bool> {
    if conn.connected {
        return Ok(true);
    }
    if let Some(e) = conn.stream.take_error()? {
        return Err(e);
    }
    if conn.stream.peer_addr().is_err() {
        return Ok(false);
    }
    conn.connected = true;
    let _ = conn.stream.set_nodelay(true);
    Ok(true)
}

/// Writes what a connection can take now, and asks for writability while more waits.
fn flush_conn(registry: &Registry, conn: &mut Conn) -> io::Result<()> {
    if !conn.connected {
        return Ok(());
    }
    if conn.crypto.is_some() {
        flush_sealed(conn)?;
    }
    while let Some(front) = conn.out.front().filter(|_| conn.crypto.is_none()) {
        match conn.stream.write(&front[conn.sent..]) {
            Ok(n) => {
                conn.sent += n;
                if conn.sent == front.len() {
                    conn.out.pop_front();
                    conn.sent = 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let more = !conn.out.is_empty() || !conn.raw_out.is_empty();
    if more != conn.want_write {
        conn.want_write = more;
        let interest = crate::conn::interest(more);
        let token = conn.token;
        registry.reregister(&mut conn.stream, token, interest)?;
    }
    Ok(())
}

/// An address for the log, `?` if unknown.
fn shown(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "?".into(), |a| a.to_string())
}

/// Reads everything available; returns (end of stream, bytes read).
fn fill(conn: &mut Conn) -> io::Result<(bool, usize)> {
    thread_local! {
        // Read into once allocated: a fresh zeroed buffer per read cost a 64 KiB memset on
        // every message that woke the loop.
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 * 1024]);
    }
    BUF.with_borrow_mut(|buf| fill_with(conn, buf))
}

fn fill_with(conn: &mut Conn, buf: &mut [u8]) -> io::Result<(bool, usize)> {
    let mut total = 0;
    loop {
        match conn.stream.read(buf) {
            Ok(0) => return Ok((true, total)),
            Ok(n) => {
                total += n;
                match &mut conn.crypto {
                    None => conn.frames.push(&buf[..n]),
                    // Decrypted straight into the frame buffer (no plaintext buffer per read).
                    Some(records) => conn
                        .frames
                        .append_with(|plain| records.open(&buf[..n], plain))
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((false, total)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Most bytes sealed for one write.
const SEAL_BATCH: usize = 256 * 1024;

/// Writes what a keyed connection has: handshake records first, then its messages, sealed a
/// batch at a time into one buffer for one write; a message leaves `out` once its records are
/// written whole.
fn flush_sealed(conn: &mut Conn) -> io::Result<()> {
    while let Some(front) = conn.raw_out.front() {
        match conn.stream.write(&front[conn.raw_sent..]) {
            Ok(n) => {
                conn.raw_sent += n;
                if conn.raw_sent == front.len() {
                    conn.raw_out.pop_front();
                    conn.raw_sent = 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    loop {
        if conn.sealed.is_empty() {
            let records = conn.crypto.as_mut().expect("keyed");
            if !records.is_transport() {
                return Ok(());
            }
            for m in conn.out.iter() {
                if conn.sealed.len() >= SEAL_BATCH {
                    break;
                }
                records
                    .seal_into(m, &mut conn.sealed)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
                conn.sealed_ends.push_back(conn.sealed.len());
            }
            if conn.sealed.is_empty() {
                return Ok(());
            }
            conn.sent = 0;
        }
        match conn.stream.write(&conn.sealed[conn.sent..]) {
            Ok(n) => {
                conn.sent += n;
                while conn
                    .sealed_ends
                    .front()
                    .is_some_and(|&end| end <= conn.sent)
                {
                    conn.sealed_ends.pop_front();
                    conn.out.pop_front();
                }
                if conn.sent == conn.sealed.len() {
                    conn.sealed.clear();
                    conn.sent = 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
