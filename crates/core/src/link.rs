//! One peer link's delivery and liveness, as a pure state machine: what the daemon's TCP
//! link to a peer does across connections, kept apart from the sockets so that the simulation
//! (`tests/links.rs`) drives the same code over connections that break, daemons that restart
//! and time that jumps.
//!
//! - **Nothing lost while both daemons live.** Every numbered message (coherence, lock, Raft)
//!   is kept, as the bytes written, until the peer acknowledges it ([`LinkInput::Send`],
//!   [`LinkInput::Acked`]). When a connection comes up, the peer's hello says how many of this
//!   daemon's messages it has; the rest go again, once, in order ([`LinkOutput::Resend`]).
//! - **Nothing for an old incarnation reaches a new one.** A peer that comes back as another
//!   incarnation gets none of what was kept for the old one ([`LinkOutput::Restarted`]); the
//!   counts start again.
//! - **Acknowledgements** go at most [`LinkTiming::ack_delay_ms`] after what they cover, or at
//!   once every [`LinkTiming::ack_every`] messages.
//! - **Failure detection.** A link with nothing written for [`LinkTiming::ping_every_ms`]
//!   pings; one with nothing heard for [`LinkTiming::silence_ms`] is declared down
//!   ([`LinkOutput::Silent`]: the driver closes the connection). Agreeing that a node is dead
//!   is the cluster's job (`members.rs`), not a link's.
//! - **Bounded.** At most [`LinkTiming::max_kept_bytes`] are kept: past that a message is
//!   neither kept nor sent ([`Link::has_room`]), so the numbers on both sides stay equal.
//!
//! Time is passed in (ms on the driver's clock); [`Link::poll_timeout`] says when the next
//! [`LinkInput::Tick`] has something to do.

use std::collections::VecDeque;
use std::sync::Arc;

/// A numbered message as written, shared between the link's keep and the driver's queue (a
/// message of a page is kept and sent without a second copy).
pub type Bytes = Arc<Vec<u8>>;

/// The link's timing and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTiming {
    /// Ping a link with nothing written for this long.
    pub ping_every_ms: u64,
    /// A link with nothing heard for this long is down.
    pub silence_ms: u64,
    /// Longest an acknowledgement waits for more messages to cover.
    pub ack_delay_ms: u64,
    /// Messages received between acknowledgements at most.
    pub ack_every: u64,
    /// Bytes kept for the peer at most.
    pub max_kept_bytes: usize,
}

impl Default for LinkTiming {
    fn default() -> LinkTiming {
        LinkTiming {
            ping_every_ms: 500,
            silence_ms: 3_000,
            ack_delay_ms: 100,
            ack_every: 256,
            max_kept_bytes: 64 << 20,
        }
    }
}

/// What the driver feeds in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkInput {
    /// A numbered message goes to the peer (`bytes`: exactly what is written, page included):
    /// kept until acknowledged. The driver writes it itself if the connection is up, and only
    /// if [`Link::has_room`] said so.
    Send {
        /// The message as written.
        bytes: Bytes,
        /// Now (ms).
        now_ms: u64,
    },
    /// A connection is up and the peer's hello accepted: its daemon is `incarnation`, and it
    /// has `received` of this daemon's numbered messages (`None`: it knew another incarnation
    /// of this daemon, or none).
    Up {
        /// The peer daemon's incarnation.
        incarnation: u64,
        /// How many of this daemon's messages it has.
        received: Option<u64>,
        /// Now (ms).
        now_ms: u64,
    },
    /// The connection is gone.
    Down,
    /// Something arrived from the peer; `numbered`: a numbered message (counted).
    Arrived {
        /// A numbered message (not a ping or acknowledgement).
        numbered: bool,
        /// Now (ms).
        now_ms: u64,
    },
    /// The peer has this daemon's numbered messages up to `count`.
    Acked {
        /// How many it has.
        count: u64,
    },
    /// Time passed.
    Tick {
        /// Now (ms).
        now_ms: u64,
    },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutput {
    /// Write these kept messages, in order: what the peer has not got (after [`LinkInput::Up`]).
    Resend(Vec<Bytes>),
    /// Write an acknowledgement of `count` numbered messages.
    Ack(u64),
    /// Write a ping.
    Ping,
    /// Nothing heard for the silence limit: close the connection (then [`LinkInput::Down`]).
    Silent,
    /// The peer came back as another incarnation: `dropped` messages kept for its old daemon
    /// are gone.
    Restarted {
        /// Messages dropped.
        dropped: usize,
    },
}

/// One peer link (see the module's documentation).
#[derive(Debug, Clone)]
pub struct Link {
    timing: LinkTiming,
    /// Numbered messages sent and not acknowledged, oldest first: the first is number
    /// `acked + 1`.
    kept: VecDeque<Bytes>,
    kept_bytes: usize,
    acked: u64,
    /// Numbered messages received from the peer's current daemon, and the count last
    /// acknowledged.
    received: u64,
    ack_sent: u64,
    acks_at_ms: u64,
    /// The peer daemon's incarnation, once greeted.
    incarnation: Option<u64>,
    up: bool,
    last_rx_ms: u64,
    last_tx_ms: u64,
    out: VecDeque<LinkOutput>,
}

impl Link {
    /// A link never connected.
    pub fn new(timing: LinkTiming) -> Link {
        Link {
            timing,
            kept: VecDeque::new(),
            kept_bytes: 0,
            acked: 0,
            received: 0,
            ack_sent: 0,
            acks_at_ms: 0,
            incarnation: None,
            up: false,
            last_rx_ms: 0,
            last_tx_ms: 0,
            out: VecDeque::new(),
        }
    }

    /// Whether a connection is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The peer daemon's incarnation, once greeted.
    pub fn incarnation(&self) -> Option<u64> {
        self.incarnation
    }

    /// How many numbered messages came from the peer's current daemon (its hello is told).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// When something last arrived from the peer (ms).
    pub fn last_heard_ms(&self) -> u64 {
        self.last_rx_ms
    }

    /// Messages kept for the peer, and their bytes.
    pub fn kept(&self) -> (usize, usize) {
        (self.kept.len(), self.kept_bytes)
    }

    /// Whether a message of `len` bytes can be kept (else it must be neither kept nor sent).
    pub fn has_room(&self, len: usize) -> bool {
        self.kept_bytes + len <= self.timing.max_kept_bytes
    }

    /// When the next [`LinkInput::Tick`] has something to do (ms); `None` while down.
    pub fn poll_timeout(&self) -> Option<u64> {
        if !self.up {
            return None;
        }
        let ping = self.last_tx_ms + self.timing.ping_every_ms;
        let silence = self.last_rx_ms + self.timing.silence_ms;
        let ack = if self.received > self.ack_sent {
            self.acks_at_ms + self.timing.ack_delay_ms
        } else {
            u64::MAX
        };
        Some(ping.min(silence).min(ack))
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<LinkOutput> {
        self.out.pop_front()
    }

    /// Feeds one input; drain [`Link::poll_output`] afterwards.
    pub fn handle(&mut self, input: LinkInput) {
        match input {
            LinkInput::Send { bytes, now_ms } => {
                if !self.has_room(bytes.len()) {
                    return;
                }
                self.kept_bytes += bytes.len();
                self.kept.push_back(bytes);
                self.last_tx_ms = self.last_tx_ms.max(now_ms);
            }
            LinkInput::Up {
                incarnation,
                received,
                now_ms,
            } => {
                if self.incarnation.is_some_and(|i| i != incarnation) {
                    // Nothing meant for the old daemon reaches the new one.
                    let dropped = self.kept.len();
                    self.kept.clear();
                    self.kept_bytes = 0;
                    self.acked = 0;
                    self.received = 0;
                    self.ack_sent = 0;
                    self.out.push_back(LinkOutput::Restarted { dropped });
                }
                // What the peer already has of ours is forgotten; the rest goes again.
                if let Some(count) = received {
                    self.forget_acked(count);
                }
                self.incarnation = Some(incarnation);
                self.up = true;
                self.last_rx_ms = now_ms;
                self.last_tx_ms = now_ms;
                self.acks_at_ms = now_ms;
                if !self.kept.is_empty() {
                    self.out
                        .push_back(LinkOutput::Resend(self.kept.iter().cloned().collect()));
                }
            }
            LinkInput::Down => self.up = false,
            LinkInput::Arrived { numbered, now_ms } => {
                self.last_rx_ms = self.last_rx_ms.max(now_ms);
                if numbered {
                    self.received += 1;
                    if self.received >= self.ack_sent + self.timing.ack_every {
                        self.ack(now_ms);
                    }
                }
            }
            LinkInput::Acked { count } => self.forget_acked(count),
            LinkInput::Tick { now_ms } => {
                if !self.up {
                    return;
                }
                if now_ms >= self.last_rx_ms + self.timing.silence_ms {
                    self.up = false;
                    self.out.push_back(LinkOutput::Silent);
                    return;
                }
                if self.received > self.ack_sent
                    && now_ms >= self.acks_at_ms + self.timing.ack_delay_ms
                {
                    self.ack(now_ms);
                }
                if now_ms >= self.last_tx_ms + self.timing.ping_every_ms {
                    self.last_tx_ms = now_ms;
                    self.out.push_back(LinkOutput::Ping);
                }
            }
        }
    }

    fn ack(&mut self, now_ms: u64) {
        self.ack_sent = self.received;
        self.acks_at_ms = now_ms;
        self.last_tx_ms = self.last_tx_ms.max(now_ms);
        self.out.push_back(LinkOutput::Ack(self.received));
    }

    /// The peer has our numbered messages up to `count`: they need not be kept any more.
    fn forget_acked(&mut self, count: u64) {
        let done = count.saturating_sub(self.acked).min(self.kept.len() as u64);
        for m in self.kept.drain(..done as usize) {
            self.kept_bytes -= m.len();
        }
        self.acked += done;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(l: &mut Link) -> Vec<LinkOutput> {
        std::iter::from_fn(|| l.poll_output()).collect()
    }

    #[test]
    fn what_the_peer_missed_goes_again_once_in_order() {
        let mut l = Link::new(LinkTiming::default());
        for i in 0..3u8 {
            l.handle(LinkInput::Send {
                bytes: vec![i].into(),
                now_ms: 0,
            });
        }
        l.handle(LinkInput::Up {
            incarnation: 7,
            received: Some(1),
            now_ms: 10,
        });
        assert_eq!(
            drain(&mut l),
            vec![LinkOutput::Resend(vec![vec![1].into(), vec![2].into()])]
        );
        l.handle(LinkInput::Acked { count: 3 });
        assert_eq!(l.kept(), (0, 0));
    }

    #[test]
    fn a_restarted_peer_gets_nothing_kept_for_its_old_daemon() {
        let mut l = Link::new(LinkTiming::default());
        l.handle(LinkInput::Up {
            incarnation: 1,
            received: None,
            now_ms: 0,
        });
        l.handle(LinkInput::Send {
            bytes: vec![9].into(),
            now_ms: 1,
        });
        l.handle(LinkInput::Down);
        l.handle(LinkInput::Up {
            incarnation: 2,
            received: None,
            now_ms: 5,
        });
        assert_eq!(drain(&mut l), vec![LinkOutput::Restarted { dropped: 1 }]);
    }

    #[test]
    fn pings_acknowledgements_and_silence_follow_the_clock() {
        let t = LinkTiming::default();
        let mut l = Link::new(t);
        l.handle(LinkInput::Up {
            incarnation: 1,
            received: None,
            now_ms: 0,
        });
        l.handle(LinkInput::Arrived {
            numbered: true,
            now_ms: 10,
        });
        assert_eq!(l.poll_timeout(), Some(t.ack_delay_ms));
        l.handle(LinkInput::Tick {
            now_ms: t.ack_delay_ms,
        });
        assert_eq!(drain(&mut l), vec![LinkOutput::Ack(1)]);
        l.handle(LinkInput::Tick {
            now_ms: t.ping_every_ms + t.ack_delay_ms,
        });
        assert_eq!(drain(&mut l), vec![LinkOutput::Ping]);
        l.handle(LinkInput::Tick {
            now_ms: 10 + t.silence_ms,
        });
        assert_eq!(drain(&mut l), vec![LinkOutput::Silent]);
        assert!(!l.is_up() && l.poll_timeout().is_none());
    }

    #[test]
    fn a_full_outbox_keeps_nothing_more() {
        let mut l = Link::new(LinkTiming {
            max_kept_bytes: 4,
            ..LinkTiming::default()
        });
        assert!(l.has_room(4));
        l.handle(LinkInput::Send {
            bytes: vec![0; 4].into(),
            now_ms: 0,
        });
        assert!(!l.has_room(1));
        l.handle(LinkInput::Send {
            bytes: vec![1].into(),
            now_ms: 0,
        });
        assert_eq!(l.kept(), (1, 4));
    }
}
