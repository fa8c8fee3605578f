//! `dsmctl top`: a live view of one node, from successive `stats`, `status` and `locks`
//! answers (rates are the differences between two of them).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use dsm_proto::ctl::{CtlReply, CtlRequest, LockStatus, Stats, Status};

use crate::{client, table};

/// One sample of the node.
struct Sample {
    at: Instant,
    stats: Stats,
    status: Status,
    locks: Vec<LockStatus>,
}

fn sample(socket: &Path) -> Result<Sample, String> {
    let stats = match client::ask(socket, &CtlRequest::Stats)? {
        CtlReply::Stats(s) => *s,
        other => return Err(format!("unexpected answer: {other:?}")),
    };
    let status = match client::ask(socket, &CtlRequest::Status)? {
        CtlReply::Status(s) => s,
        other => return Err(format!("unexpected answer: {other:?}")),
    };
    let locks = match client::ask(socket, &CtlRequest::Locks)? {
        CtlReply::Locks(l) => l,
        other => return Err(format!("unexpected answer: {other:?}")),
    };
    Ok(Sample {
        at: Instant::now(),
        stats,
        status,
        locks,
    })
}

/// Refreshes every `interval_ms` until interrupted, or `count` times.
pub fn run(socket: &Path, interval_ms: u64, count: Option<u64>) -> Result<(), String> {
    let interval = Duration::from_millis(interval_ms.max(100));
    let clear = std::io::stdout().is_terminal();
    let mut before = sample(socket)?;
    let mut shown = 0;
    while count.is_none_or(|n| shown < n) {
        std::thread::sleep(interval);
        let now = sample(socket)?;
        let mut out = String::new();
        if clear {
            out.push_str("\x1b[H\x1b[2J");
        }
        render(&mut out, &before, &now);
        print!("{out}");
        let _ = std::io::stdout().flush();
        before = now;
        shown += 1;
    }
    Ok(())
}

fn render(out: &mut String, a: &Sample, b: &Sample) {
    use std::fmt::Write as _;
    let secs = (b.at - a.at).as_secs_f64().max(1e-3);
    let rate = |x: u64, y: u64| format!("{:.0}", y.saturating_sub(x) as f64 / secs);
    let (s, t) = (&a.stats, &b.stats);
    let _ = writeln!(
        out,
        "node {} · {} manager · up {} · {} processes · {} segments · every {:.1} s",
        t.node.0,
        t.manager,
        table::duration(b.status.uptime_ms),
        b.status.processes.len(),
        b.status.segments.len(),
        secs
    );
    let _ = writeln!(out);
    let mut rows = vec![
        vec![
            "served here".into(),
            rate(s.local_reads, t.local_reads),
            rate(s.local_writes, t.local_writes),
            "-".into(),
        ],
        vec![
            "from a peer".into(),
            rate(s.remote_reads, t.remote_reads),
            rate(s.remote_writes, t.remote_writes),
            rate(s.upgrades, t.upgrades),
        ],
    ];
    rows.push(vec![
        "failed".into(),
        rate(s.failed, t.failed),
        "".into(),
        "".into(),
    ]);
    out.push_str(&table::render(
        &["FAULTS/S", "READ", "WRITE", "UPGRADE"],
        rows,
    ));
    let _ = writeln!(
        out,
        "pages in/s {}, out/s {}, invalidations/s {}, revocations/s {}; remote fault p50 {} µs, p99 {} µs",
        rate(s.pages_received, t.pages_received),
        rate(s.pages_sent, t.pages_sent),
        rate(s.invalidations_sent, t.invalidations_sent),
        rate(s.revocations, t.revocations),
        t.remote_latency_us.p50,
        t.remote_latency_us.p99
    );
    let _ = writeln!(out);
    if b.status.peers.is_empty() {
        let _ = writeln!(out, "peers: none");
    } else {
        let rows = b
            .status
            .peers
            .iter()
            .map(|p| {
                let old = a.status.peers.iter().find(|q| q.node == p.node);
                let (out_b, in_b) =
                    old.map_or((p.bytes_out, p.bytes_in), |q| (q.bytes_out, q.bytes_in));
                vec![
                    p.node.0.to_string(),
                    if p.connected {
                        "up".into()
                    } else {
                        "down".into()
                    },
                    format!(
                        "{}/s",
                        table::bytes(((p.bytes_out - out_b.min(p.bytes_out)) as f64 / secs) as u64)
                    ),
                    format!(
                        "{}/s",
                        table::bytes(((p.bytes_in - in_b.min(p.bytes_in)) as f64 / secs) as u64)
                    ),
                ]
            })
            .collect();
        out.push_str(&table::render(&["PEER", "LINK", "OUT", "IN"], rows));
    }
    let _ = writeln!(out);
    let hot: Vec<Vec<String>> = t
        .hot_pages
        .iter()
        .map(|h| {
            // A page that was not among the previous sample's ten (or whose count started
            // again) has no rate to show: its faults before this interval are unknown.
            let per_s = s
                .hot_pages
                .iter()
                .find(|o| o.segment == h.segment && o.page == h.page)
                .filter(|o| o.faults <= h.faults)
                .map_or_else(|| "-".into(), |o| rate(o.faults, h.faults));
            vec![
                h.segment.clone(),
                h.page.to_string(),
                per_s,
                h.faults.to_string(),
            ]
        })
        .collect();
    if hot.is_empty() {
        let _ = writeln!(out, "hottest pages: no fault has reached the daemon yet");
    } else {
        out.push_str(&table::render(
            &["HOTTEST PAGES", "PAGE", "FAULTS/S", "FAULTS"],
            hot,
        ));
    }
    let _ = writeln!(out);
    let waiting: Vec<&LockStatus> = b.locks.iter().filter(|l| l.waiters > 0).collect();
    let _ = writeln!(
        out,
        "locks homed here: {} with state, {} threads waiting on {} of them; lock requests/s {}",
        b.locks.len(),
        waiting.iter().map(|l| l.waiters).sum::<u64>(),
        waiting.len(),
        rate(s.sync_requests, t.sync_requests)
    );
}
