//! `dsmctl stats --prometheus`: a node's counters, gauges and latency histograms in the
//! Prometheus text exposition format (version 0.0.4), for a monitoring system to scrape (for
//! instance through node_exporter's textfile collector, or a cron job writing a file).

use std::fmt::Write;

use dsm_proto::ctl::{Histogram, Stats, Status};

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    /// One sample: `labels` as (name, value) pairs.
    fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(
            self.out,
            "{}{suffix}{{{}}} {value}",
            self.name,
            labels.join(",")
        );
    }
}

/// Starts a family with its `# HELP` and `# TYPE` lines.
fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(
        out,
        "# HELP {name} {}",
        help.replace('\\', "\\\\").replace('\n', "\\n")
    );
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

/// A label value, escaped as the format asks.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition of one node.
pub fn render(stats: &Stats, status: &Status) -> String {
    let mut out = String::new();
    let node = stats.node.0.to_string();
    let n: &str = &node;

    let mut f = family(
        &mut out,
        "dsm_faults_total",
        "counter",
        "Page faults served, by kind: local (no peer needed) or remote, read or write; upgrade: a write to a page held read-only.",
    );
    for (kind, v) in [
        ("local_read", stats.local_reads),
        ("local_write", stats.local_writes),
        ("remote_read", stats.remote_reads),
        ("remote_write", stats.remote_writes),
        ("upgrade", stats.upgrades),
    ] {
        f.sample("", &[("node", n), ("kind", kind)], v);
    }
    let counters: [(&'static str, &str, u64); 20] = [
        (
            "dsm_faults_failed_total",
            "Faults that failed (the process got SIGBUS).",
            stats.failed,
        ),
        (
            "dsm_faults_lost_total",
            "Of the failed faults, those on a page no copy of which survived a node's death.",
            stats.lost,
        ),
        (
            "dsm_pages_located_total",
            "Pages looked for among the live nodes (their owner died).",
            stats.located,
        ),
        (
            "dsm_pages_adopted_total",
            "Pages whose owner died taken over from a surviving copy, as decided here.",
            stats.adopted,
        ),
        (
            "dsm_replicas_sent_total",
            "Replicas sent at release points.",
            stats.replicas_sent,
        ),
        (
            "dsm_pages_from_replica_total",
            "Pages taken over here from a replica.",
            stats.from_replica,
        ),
        (
            "dsm_pages_prefetched_total",
            "Pages asked for ahead of a sequential reader (read-ahead).",
            stats.prefetched,
        ),
        (
            "dsm_prefetches_opened_total",
            "Pages read ahead, since lost by this node, that a local process had opened.",
            stats.prefetch_opened,
        ),
        (
            "dsm_prefetches_wasted_total",
            "Pages read ahead, since lost by this node, that no local process opened.",
            stats.prefetch_wasted,
        ),
        (
            "dsm_requests_forwarded_total",
            "Page requests passed on to another node.",
            stats.forwarded,
        ),
        (
            "dsm_invalidations_sent_total",
            "Invalidations sent.",
            stats.invalidations_sent,
        ),
        (
            "dsm_pages_sent_total",
            "Pages sent to peers.",
            stats.pages_sent,
        ),
        (
            "dsm_pages_received_total",
            "Pages received from peers.",
            stats.pages_received,
        ),
        (
            "dsm_messages_sent_total",
            "Coherence messages sent to peers.",
            stats.messages_sent,
        ),
        (
            "dsm_revocations_total",
            "Revocations of local processes' access.",
            stats.revocations,
        ),
        (
            "dsm_sync_requests_total",
            "Lock, condition, barrier and allocation requests of local processes.",
            stats.sync_requests,
        ),
        (
            "dsm_sync_served_total",
            "Lock-service operations applied here as an object's home.",
            stats.sync_served,
        ),
        (
            "dsm_sync_messages_total",
            "Lock-service messages sent to peers.",
            stats.sync_messages,
        ),
        (
            "dsm_sync_delegations_total",
            "Mutexes homed here delegated to this node's processes (their fast path).",
            stats.sync_delegations,
        ),
        (
            "dsm_sync_recalls_total",
            "Delegated mutexes taken back.",
            stats.sync_recalls,
        ),
    ];
    for (name, help, v) in counters {
        family(&mut out, name, "counter", help).sample("", &[("node", n)], v);
    }

    let gauges: [(&'static str, &str, u64); 6] = [
        (
            "dsm_prefetches_unopened",
            "Pages read ahead that this node holds and no local process opened yet.",
            stats.prefetch_unopened,
        ),
        (
            "dsm_replicas_held",
            "Replicas this node holds of pages owned elsewhere.",
            stats.replicas_held,
        ),
        (
            "dsm_sync_objects",
            "Synchronization objects this node is home to that hold state.",
            stats.sync_objects,
        ),
        (
            "dsm_segments",
            "Segments this node holds.",
            status.segments.len() as u64,
        ),
        (
            "dsm_processes",
            "Local processes attached.",
            status.processes.len() as u64,
        ),
        (
            "dsm_uptime_seconds",
            "Seconds since this daemon started.",
            status.uptime_ms / 1000,
        ),
    ];
    for (name, help, v) in gauges {
        family(&mut out, name, "gauge", help).sample("", &[("node", n)], v);
    }

    let mut f = family(
        &mut out,
        "dsm_fault_latency_seconds",
        "histogram",
        "Time from a fault reaching the daemon to its answer, since the daemon started: local (no peer needed) or remote.",
    );
    for (kind, h) in [
        ("local", &stats.local_histogram),
        ("remote", &stats.remote_histogram),
    ] {
        histogram(&mut f, &[("node", n), ("kind", kind)], h);
    }

    let mut f = family(
        &mut out,
        "dsm_peer_up",
        "gauge",
        "Whether the link to a peer is up (1) or not (0).",
    );
    for p in &status.peers {
        let peer = p.node.0.to_string();
        f.sample("", &[("node", n), ("peer", &peer)], u8::from(p.connected));
    }
    for (name, help, pick) in [
        (
            "dsm_peer_messages_total",
            "Messages exchanged with a peer, by direction.",
            (|p: &dsm_proto::ctl::PeerStatus| (p.messages_out, p.messages_in))
                as fn(&dsm_proto::ctl::PeerStatus) -> (u64, u64),
        ),
        (
            "dsm_peer_bytes_total",
            "Bytes exchanged with a peer, by direction.",
            |p| (p.bytes_out, p.bytes_in),
        ),
    ] {
        let mut f = family(&mut out, name, "counter", help);
        for p in &status.peers {
            let peer = p.node.0.to_string();
            let (sent, received) = pick(p);
            f.sample(
                "",
                &[("node", n), ("peer", &peer), ("direction", "out")],
                sent,
            );
            f.sample(
                "",
                &[("node", n), ("peer", &peer), ("direction", "in")],
                received,
            );
        }
    }
    out
}

/// A histogram's `_bucket`, `_sum` and `_count` samples (seconds).
fn histogram(f: &mut Family<'_>, labels: &[(&str, &str)], h: &Histogram) {
    let h = if h.bounds_us.is_empty() {
        Histogram::new()
    } else {
        h.clone()
    };
    for (bound, n) in h.bounds_us.iter().zip(&h.cumulative) {
        let le = format!("{}", *bound as f64 / 1e6);
        let mut l = labels.to_vec();
        l.push(("le", &le));
        f.sample("_bucket", &l, n);
    }
    let mut l = labels.to_vec();
    l.push(("le", "+Inf"));
    f.sample("_bucket", &l, h.count);
    f.sample("_sum", labels, h.sum_us as f64 / 1e6);
    f.sample("_count", labels, h.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_histogram_is_cumulative_and_ends_at_inf() {
        let mut h = Histogram::new();
        h.record(3);
        h.record(70);
        h.record(20_000_000);
        let mut out = String::new();
        let mut f = family(&mut out, "x_seconds", "histogram", "x");
        histogram(&mut f, &[("node", "1")], &h);
        assert!(
            out.contains("x_seconds_bucket{node=\"1\",le=\"0.000005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{node=\"1\",le=\"0.0001\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{node=\"1\",le=\"10\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{node=\"1\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{node=\"1\"} 3\n"), "{out}");
    }
}
