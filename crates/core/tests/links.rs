//! Seeded simulation of one peer link ([`Link`], the code the daemon runs) between two
//! daemons, over connections that break at any time (everything in flight lost), come back,
//! go silent, and daemons that restart as new incarnations; time jumps between steps.
//!
//! Each daemon sends numbered messages addressed to the incarnation of the peer its link
//! knows (none before the first connection). Checked at every delivery: nothing addressed to
//! another incarnation arrives; from one incarnation of the sender, messages arrive in the
//! order sent, each once, with no gap. At the end, after the link is healed and quiet: every
//! message addressed to a daemon that still lives has arrived, and nothing is kept any more.

use std::collections::VecDeque;

mod common;

use common::Rng;
use dsm_core::{Link, LinkInput, LinkOutput, LinkTiming};

#[derive(Debug, Clone)]
enum Frame {
    Msg(Vec<u8>),
    Ack(u64),
    Ping,
}

struct End {
    incarnation: u64,
    link: Link,
    next_id: u64,
    /// Everything this incarnation sent: (id, the peer incarnation its link knew).
    sent: Vec<(u64, Option<u64>)>,
    /// The first incarnation of the peer this incarnation met.
    first_met: Option<u64>,
    /// Per sender incarnation, the ids delivered here, in order.
    delivered: Vec<(u64, Vec<u64>)>,
}

impl End {
    fn new(incarnation: u64) -> End {
        End {
            incarnation,
            link: Link::new(LinkTiming::default()),
            next_id: 1,
            sent: Vec::new(),
            first_met: None,
            delivered: Vec::new(),
        }
    }
}

fn encode(from: u64, to: Option<u64>, id: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(24);
    b.extend_from_slice(&from.to_le_bytes());
    b.extend_from_slice(&to.unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&id.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> (u64, Option<u64>, u64) {
    let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
    let to = word(1);
    (word(0), (to != 0).then_some(to), word(2))
}

struct Sim {
    ends: [End; 2],
    /// The connection: frames in flight each way ([0]: from end 0 to end 1).
    conn: Option<[VecDeque<Frame>; 2]>,
    now_ms: u64,
    next_incarnation: u64,
    rng: Rng,
    stats: [u64; 4],
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim {
            ends: [End::new(1), End::new(2)],
            conn: None,
            now_ms: 0,
            next_incarnation: 3,
            rng: Rng::new(seed),
            stats: [0; 4],
        }
    }

    /// Handles what end `s`'s link asks for.
    fn drain(&mut self, s: usize) {
        while let Some(out) = self.ends[s].link.poll_output() {
            match out {
                LinkOutput::Resend(all) => {
                    if let Some(conn) = &mut self.conn {
                        conn[s].extend(all.into_iter().map(|m| Frame::Msg(m.to_vec())));
                        self.stats[2] += 1;
                    }
                }
                LinkOutput::Ack(n) => {
                    if let Some(conn) = &mut self.conn {
                        conn[s].push_back(Frame::Ack(n));
                    }
                }
                LinkOutput::Ping => {
                    if let Some(conn) = &mut self.conn {
                        conn[s].push_back(Frame::Ping);
                    }
                }
                LinkOutput::Silent => self.cut(),
                LinkOutput::Restarted { .. } => {}
            }
        }
    }

    fn cut(&mut self) {
        if self.conn.take().is_some() {
            for s in 0..2 {
                self.ends[s].link.handle(LinkInput::Down);
                self.drain(s);
            }
        }
    }

    fn connect(&mut self) {
        if self.conn.is_some() {
            return;
        }
        self.conn = Some([VecDeque::new(), VecDeque::new()]);
        self.stats[1] += 1;
        // The hellos: each says its incarnation, and how many of the other's messages it has
        // if it knew the other's current incarnation.
        let hello = |me: &End, other: &End| {
            let received =
                (me.link.incarnation() == Some(other.incarnation)).then_some(me.link.received());
            (me.incarnation, received)
        };
        let hellos = [
            hello(&self.ends[0], &self.ends[1]),
            hello(&self.ends[1], &self.ends[0]),
        ];
        for s in 0..2 {
            let (incarnation, received) = hellos[1 - s];
            let end = &mut self.ends[s];
            end.first_met.get_or_insert(incarnation);
            end.link.handle(LinkInput::Up {
                incarnation,
                received,
                now_ms: self.now_ms,
            });
            self.drain(s);
        }
    }

    fn send(&mut self, s: usize) {
        let end = &mut self.ends[s];
        let id = end.next_id;
        end.next_id += 1;
        let to = end.link.incarnation();
        let bytes = encode(end.incarnation, to, id);
        assert!(end.link.has_room(bytes.len()));
        end.sent.push((id, to));
        end.link.handle(LinkInput::Send {
            bytes: bytes.clone().into(),
            now_ms: self.now_ms,
        });
        if end.link.is_up() {
            if let Some(conn) = &mut self.conn {
                conn[s].push_back(Frame::Msg(bytes));
            }
        }
        self.drain(s);
    }

    /// Delivers the next frame from end `s` to the other.
    fn deliver(&mut self, s: usize) -> Result<(), String> {
        let Some(frame) = self.conn.as_mut().and_then(|c| c[s].pop_front()) else {
            return Ok(());
        };
        let r = 1 - s;
        let now_ms = self.now_ms;
        let end = &mut self.ends[r];
        match frame {
            Frame::Msg(bytes) => {
                let (from, to, id) = decode(&bytes);
                if to.is_some_and(|t| t != end.incarnation) {
                    return Err(format!(
                        "incarnation {} got message {id} of {from} meant for {to:?}",
                        end.incarnation
                    ));
                }
                if end.link.incarnation() != Some(from) {
                    return Err(format!(
                        "message of {from} on a link to {:?}",
                        end.link.incarnation()
                    ));
                }
                match end.delivered.last_mut() {
                    Some((f, ids)) if *f == from => {
                        let last = *ids.last().expect("not empty");
                        if id != last + 1 {
                            return Err(format!(
                                "{} got message {id} of {from} after {last}",
                                end.incarnation
                            ));
                        }
                        ids.push(id);
                    }
                    _ => end.delivered.push((from, vec![id])),
                }
                self.stats[0] += 1;
                end.link.handle(LinkInput::Arrived {
                    numbered: true,
                    now_ms,
                });
            }
            Frame::Ack(count) => {
                end.link.handle(LinkInput::Arrived {
                    numbered: false,
                    now_ms,
                });
                end.link.handle(LinkInput::Acked { count });
            }
            Frame::Ping => end.link.handle(LinkInput::Arrived {
                numbered: false,
                now_ms,
            }),
        }
        self.drain(r);
        Ok(())
    }

    fn tick(&mut self, s: usize) {
        self.ends[s].link.handle(LinkInput::Tick {
            now_ms: self.now_ms,
        });
        self.drain(s);
    }

    fn restart(&mut self, s: usize) {
        self.cut();
        self.ends[s] = End::new(self.next_incarnation);
        self.next_incarnation += 1;
        self.stats[3] += 1;
    }

    fn step(&mut self) -> Result<(), String> {
        let s = self.rng.below(2);
        match self.rng.below(100) {
            0..=29 => self.send(s),
            30..=69 => self.deliver(s)?,
            70..=74 => self.cut(),
            75..=84 => self.connect(),
            85..=97 => {
                // Mostly short steps; now and then long enough for a ping or for silence.
                self.now_ms += match self.rng.below(10) {
                    0 => 3_500,
                    1..=3 => 600,
                    _ => self.rng.below(150) as u64,
                };
                self.tick(s);
            }
            _ => self.restart(s),
        }
        Ok(())
    }

    /// Heal and let everything settle, then check that nothing addressed to a live daemon
    /// was lost.
    fn settle(&mut self) -> Result<(), String> {
        for _ in 0..4 {
            self.connect();
            while self
                .conn
                .as_ref()
                .is_some_and(|c| !c[0].is_empty() || !c[1].is_empty())
            {
                self.deliver(0)?;
                self.deliver(1)?;
            }
            self.now_ms += 200;
            self.tick(0);
            self.tick(1);
        }
        for r in 0..2 {
            let s = 1 - r;
            let (sender, receiver) = (&self.ends[s], &self.ends[r]);
            let expected: Vec<u64> = sender
                .sent
                .iter()
                .filter(|(_, to)| match to {
                    Some(t) => *t == receiver.incarnation,
                    None => sender.first_met == Some(receiver.incarnation),
                })
                .map(|&(id, _)| id)
                .collect();
            let got: Vec<u64> = receiver
                .delivered
                .iter()
                .filter(|(f, _)| *f == sender.incarnation)
                .flat_map(|(_, ids)| ids.iter().copied())
                .collect();
            if got != expected {
                return Err(format!(
                    "{} got {got:?} of {}, which sent it {expected:?}",
                    receiver.incarnation, sender.incarnation
                ));
            }
            if sender.link.kept().0 != 0 {
                return Err(format!(
                    "{} still keeps {:?}",
                    sender.incarnation,
                    sender.link.kept()
                ));
            }
        }
        Ok(())
    }
}

#[test]
fn nothing_lost_duplicated_or_misdelivered_across_breaks_and_restarts() {
    let mut totals = [0u64; 4];
    for seed in 0..300 {
        let mut sim = Sim::new(seed);
        for _ in 0..2_000 {
            if let Err(e) = sim.step() {
                panic!("seed {seed}: {e}");
            }
        }
        if let Err(e) = sim.settle() {
            panic!("seed {seed}: {e}");
        }
        for (t, s) in totals.iter_mut().zip(sim.stats) {
            *t += s;
        }
    }
    println!(
        "delivered {}, connections {}, resends {}, restarts {}",
        totals[0], totals[1], totals[2], totals[3]
    );
    assert!(totals.iter().all(|&t| t > 100), "{totals:?}");
}
