//! Many hosts on one machine: three dsmd on loopback, each with its own socket, unmodified C
//! programs under LD_PRELOAD, one or more per node.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dsm_e2e::{c_program, unique, wait_for_line, wait_limited, Cluster, Outcome};

fn shm_name(label: &str) -> String {
    format!("/{}", unique(label))
}

fn all_ok(outcomes: &[Outcome]) {
    for o in outcomes {
        o.assert_ok();
    }
}

/// Two processes on each of three nodes, every process a role.
const TWO_PER_NODE: [usize; 6] = [1, 2, 3, 1, 2, 3];

fn list_and_counter(manager: &str) {
    let c = Cluster::start(3, &["--manager", manager]);
    let name = shm_name("list");
    let out = c.run_all(&c_program("list"), &[1, 2, 3], |role| {
        vec![name.clone(), role.to_string(), "3".into(), "40".into()]
    });
    all_ok(&out);
    for o in &out {
        assert!(o.stdout.contains("walked 120 items, 0 bad"), "{}", o.stdout);
    }
    let name = shm_name("counter");
    let out = c.run_all(&c_program("counter"), &TWO_PER_NODE, |role| {
        vec![name.clone(), role.to_string(), "6".into(), "1000".into()]
    });
    all_ok(&out);
    for o in &out {
        assert!(o.stdout.contains("sees 6000 (want 6000)"), "{}", o.stdout);
    }
    // dsmctl's views tell the story: node 2 got pages from its peers, and knows who owns them.
    let stats = c.node(2).json(&["stats"]);
    assert_eq!(stats["manager"], manager);
    assert!(stats["pages_received"].as_u64().unwrap() > 0, "{stats}");
    assert!(
        stats["remote_latency_us"]["count"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert_eq!(stats["failed"], 0);
    let peers = c.node(2).json(&["peers"]);
    assert!(
        peers
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["messages_in"].as_u64().unwrap() > 0),
        "{peers}"
    );
    let pages = c.node(3).json(&["pages", &name]);
    let owners: Vec<bool> = pages["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["owner"] == true)
        .collect();
    assert_eq!(owners.len(), 1, "{pages}");
    // The segment is the same everywhere: one name, one base address, one size.
    let bases: Vec<u64> = c
        .nodes
        .iter()
        .map(|n| {
            n.status()["segments"][0]["base"]
                .as_u64()
                .expect("a segment")
        })
        .collect();
    assert!(bases.windows(2).all(|w| w[0] == w[1]), "{bases:?}");
}

#[test]
fn linked_list_and_atomic_counter_dynamic_manager() {
    list_and_counter("dynamic");
}

#[test]
fn linked_list_and_atomic_counter_fixed_manager() {
    list_and_counter("fixed");
}

#[test]
fn linked_list_and_atomic_counter_central_manager() {
    list_and_counter("central");
}

#[test]
fn litmus_tests_never_show_a_forbidden_outcome() {
    let c = Cluster::start(3, &[]);
    for (test, placement, iters) in [
        ("sb", &[1usize, 2][..], "400"),
        ("mp", &[2, 3][..], "400"),
        ("iriw", &[1, 2, 3, 1][..], "250"),
    ] {
        let name = shm_name(test);
        let out = c.run_all(&c_program("litmus"), placement, |role| {
            vec![test.into(), name.clone(), role.to_string(), iters.into()]
        });
        all_ok(&out);
        assert!(out[0].stdout.contains("forbidden 0"), "{}", out[0].stdout);
    }
}

#[test]
fn a_page_written_in_turn_by_every_node() {
    let c = Cluster::start(3, &[]);
    let name = shm_name("pingpong");
    let out = c.run_all(&c_program("pingpong"), &[1, 2, 3], |role| {
        vec![name.clone(), role.to_string(), "3".into(), "150".into()]
    });
    all_ok(&out);
}

#[test]
fn segments_are_cluster_wide() {
    let c = Cluster::start(3, &[]);
    let name = shm_name("wide");
    c.node(1)
        .run(&c_program("examples/writer"), &[&name, "100000"])
        .assert_ok();
    // O_CREAT|O_EXCL is exclusive across the cluster.
    let out = dsm_e2e::run({
        let mut cmd = c.command(2, &c_program("fork"));
        cmd.arg(&name);
        cmd
    });
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("File exists"), "{}", out.stderr);
    // Any node sees the same segment, same size, same data.
    let out = dsm_e2e::run({
        let mut cmd = c.command(3, &c_program("check"));
        cmd.args([&name, "keep", "8"]);
        cmd
    });
    out.assert_ok();
    // shm_unlink on one node removes the name everywhere.
    c.node(2)
        .run(&c_program("examples/reader"), &[&name])
        .assert_ok();
    let out = c.node(1).run(&c_program("check"), &[&name, "keep", "8"]);
    assert!(out.stderr.contains("No such file"), "{out:?}");
    for node in &c.nodes {
        assert!(node.status()["segments"].as_array().unwrap().is_empty());
    }
}

#[test]
fn a_fault_on_a_dead_peer_raises_sigbus_in_bounded_time() {
    let mut c = Cluster::start(2, &["--fault-timeout-ms", "1000"]);
    let name = shm_name("dead");
    let mut holder = c.node(1).spawn(&c_program("hold"), &[&name, "40960"]);
    wait_for_line(&mut holder, "ready");
    let mut toucher = c.command(2, &c_program("touch_later"));
    toucher
        .args([name.as_str(), "3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut toucher = dsm_e2e::Spawned(toucher.spawn().unwrap());
    wait_for_line(&mut toucher, "mapped");
    // Node 1 holds every page and dies.
    drop(c.nodes.remove(0));
    drop(holder);
    let started = Instant::now();
    toucher.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = wait_limited(
        &mut toucher,
        Duration::from_secs(30),
        "fault on a dead peer",
    );
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let log = c.nodes[0].log();
    assert!(
        log.contains("timed out after 1000 ms waiting for node 1 (link down)"),
        "{log}"
    );
}

#[test]
fn peers_of_another_cluster_are_refused() {
    let a = Cluster::start(1, &[]);
    let listen = a.node(1).status()["listen"].as_str().unwrap().to_owned();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // A daemon of another cluster that takes the existing node for its peer (and, having the
    // lower id, dials it).
    let [kf, key] = a.key.args();
    let stranger = dsm_e2e::Daemon::try_start_with(
        1,
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--peer",
            &format!("2={listen}"),
            "--cluster",
            "other",
            &kf,
            &key,
        ],
    );
    // The newcomer, in no cluster yet, stops (at once, or soon after it started serving) with
    // a message naming both sides; the running node refuses it and goes on.
    let log = dsm_e2e::stopped_log(stranger, Duration::from_secs(10));
    assert!(
        log.contains("exit status: 1") || !log.contains("dsmd exited at start"),
        "{log}"
    );
    assert!(log.contains("refused this node"), "{log}");
    assert!(
        log.contains("cluster `other` (this node is in `dsm`)")
            && log.contains("this node (node 1, cluster `other`"),
        "{log}"
    );
    assert!(
        a.node(1).log().contains("refusing peer connection"),
        "{}",
        a.node(1).log()
    );
    assert_eq!(a.node(1).status()["members"][0]["state"], "alive");
}

#[test]
fn a_restarted_peer_links_up_again() {
    let mut c = Cluster::start(2, &[]);
    let listen = c.node(2).status()["listen"].as_str().unwrap().to_owned();
    let node1 = c.node(1).status()["listen"].as_str().unwrap().to_owned();
    drop(c.nodes.remove(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.node(1).status()["peers"][0]["connected"] == true {
        assert!(Instant::now() < deadline, "node 1 never noticed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        c.node(1).log().contains("link to node 2 at"),
        "{}",
        c.node(1).log()
    );
    let back = dsm_e2e::Daemon::start_with(
        2,
        &[
            "--listen",
            &listen,
            "--peer",
            &format!("1={node1}"),
            "--key-file",
            &c.key.path.display().to_string(),
        ],
    );
    c.nodes.push(back);
    c.wait_linked();
    // And it works: a segment made on the restarted node is read on the other.
    let name = shm_name("again");
    c.node(2)
        .run(&c_program("examples/writer"), &[&name, "20000"])
        .assert_ok();
    c.node(1)
        .run(&c_program("examples/reader"), &[&name])
        .assert_ok();
}

#[test]
fn bad_peer_input_closes_one_link_and_nothing_else() {
    use dsm_proto::frame;
    use dsm_proto::peer::{NodeSet, PageKey, PeerFrame, PeerMsg};
    use dsm_proto::{NodeId, SegmentId};
    use std::io::Read;

    // Node 2 expects node 1 to dial it; the test plays node 1.
    let (mut d, connect) = dsm_e2e::played_peer("dynamic");
    let seg = SegmentId::new(NodeId(2), 1);
    let key = |page| PageKey { segment: seg, page };
    // A request for a page no segment can have, and a grant nobody asked for.
    let mut s = connect();
    let absurd = PeerMsg::Request {
        key: key(u32::MAX),
        write: true,
        requester: NodeId(1),
        seq: 1,
        incarnation: 1,
        hops: 0,
    };
    s.write_all(&frame::encode(&PeerFrame::Coherence(absurd)).unwrap())
        .unwrap();
    let grant = PeerMsg::Grant {
        key: key(0),
        write: true,
        copyset: NodeSet::EMPTY,
        epoch: 0,
        deaths: 0,
    };
    let mut bytes = frame::encode(&PeerFrame::Coherence(grant)).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    s.write_all(&bytes).unwrap();
    // Then garbage: the link is closed.
    s.write_all(b"\x04\0\0\0\xff\xff\xff\xff").unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    // An oversized frame on a fresh link: closed too.
    let mut s = connect();
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    let _ = s.read_to_end(&mut sink);

    std::thread::sleep(Duration::from_millis(200));
    assert!(d.alive(), "daemon died:\n{}", d.log());
    let log = d.log();
    assert!(log.contains("for a page this node cannot have"), "{log}");
    assert!(log.contains("closing link to node 1"), "{log}");
    assert!(log.contains("exceeds the limit"), "{log}");
    // Still serving: dsmctl answers, and a program gets a clear, bounded error (node 1 was
    // the fake peer: no cluster, so no directory).
    assert_eq!(d.status()["node"], 2);
    let started = Instant::now();
    let out = d.run(&c_program("examples/writer"), &[&shm_name("after"), "8192"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("No route to host"), "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        d.log().contains("a directory request did not commit")
            && d.log().contains("unreachable: node 1"),
        "{}",
        d.log()
    );
}

#[test]
fn boost_interprocess_map_built_on_one_node_read_on_another() {
    let c = Cluster::start(2, &[]);
    let name = unique("boost");
    let prog = c_program("boost_map");
    c.node(1).run(&prog, &[&name, "create", "2000"]).assert_ok();
    let out = dsm_e2e::run({
        let mut cmd = c.command(2, &prog);
        cmd.args([&name, "check", "2000"]);
        cmd
    });
    out.assert_ok();
    assert!(
        out.stdout.contains("checked 2000 entries, 0 bad"),
        "{}",
        out.stdout
    );
}

#[test]
fn threads_of_processes_on_two_nodes_share_one_counter() {
    let c = Cluster::start(2, &[]);
    let name = shm_name("tcount");
    // Two processes per node, four threads each.
    let out = c.run_all(&c_program("threaded_counter"), &[1, 2, 1, 2], |role| {
        vec![
            name.clone(),
            role.to_string(),
            "4".into(),
            "4".into(),
            "2000".into(),
        ]
    });
    all_ok(&out);
    for o in &out {
        assert!(
            o.stdout.contains("sees 32000 (want 32000), 0 bad slots"),
            "{}",
            o.stdout
        );
    }
}

#[test]
fn python_shared_memory_across_nodes() {
    let c = Cluster::start(2, &[]);
    let name = unique("py");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/c/shared_memory.py");
    let python = std::path::Path::new("python3");
    let mut cmd = c.node(1).command(python);
    cmd.args([script, "create", &name]);
    dsm_e2e::run(cmd).assert_ok();
    let mut cmd = c.command(2, python);
    cmd.args([script, "attach", &name]);
    let out = dsm_e2e::run(cmd);
    out.assert_ok();
    assert!(out.stdout.contains("helloworld"), "{}", out.stdout);
}

/// `dsmd --join`: a fourth host joins a running cluster knowing one member's address (not
/// the lowest id's), is linked by every member, sees memory written before it came and shares
/// locks and pages with everyone; a joiner of another cluster is refused and says why.
#[test]
fn a_node_joins_a_running_cluster_through_one_member() {
    let mut c = Cluster::start(3, &[]);
    let before = shm_name("before");
    c.command(3, &c_program("examples/writer"))
        .args([&before, "20000"])
        .status()
        .map(|s| assert!(s.success()))
        .unwrap();
    let seed = c.node(2).status()["listen"].as_str().unwrap().to_owned();
    let [kf, key] = c.key.args();
    let args: Vec<String> = vec![
        "--listen".into(),
        format!("127.0.0.1:{}", dsm_e2e::free_port()),
        "--join".into(),
        seed.clone(),
        kf.clone(),
        key.clone(),
    ];
    let joiner =
        dsm_e2e::Daemon::start_with(4, &args.iter().map(String::as_str).collect::<Vec<_>>());
    c.nodes.push(joiner);
    c.args.push(args);
    // Every member links to it (nodes 1 to 3 dial the address the log gives them) and agrees
    // it is alive; it knows them all.
    c.wait_linked();
    let members = c.node(4).status()["members"].as_array().unwrap().clone();
    assert_eq!(members.len(), 4, "{members:?}");
    assert!(
        c.node(1).log().contains("node 4") && c.node(4).log().contains("joining through"),
        "{}",
        c.node(4).log()
    );
    // Memory from before it joined, read on it as on another host; memory it makes, read on
    // node 1.
    let mut read = c.command(4, &c_program("examples/reader"));
    read.arg(&before);
    dsm_e2e::run(read).assert_ok();
    let made = shm_name("made");
    let mut write = c.command(4, &c_program("examples/writer"));
    write.args([&made, "20000"]);
    dsm_e2e::run(write).assert_ok();
    c.node(1)
        .run(&c_program("examples/reader"), &[&made])
        .assert_ok();
    // A process-shared mutex and pages shared by all four nodes: the counter is exact.
    let name = shm_name("counter");
    let out = c.run_all(&c_program("counter"), &[1, 2, 3, 4], |role| {
        vec![name.clone(), role.to_string(), "4".into(), "500".into()]
    });
    all_ok(&out);
    for o in &out {
        assert!(o.stdout.contains("sees 2000 (want 2000)"), "{}", o.stdout);
    }
    // Killed and started again the same way, it rejoins as a new incarnation.
    c.kill(4);
    c.wait_member(1, 4, "dead", Duration::from_secs(20));
    c.restart(4);
    c.wait_linked();
    let again = shm_name("again");
    c.node(1)
        .run(&c_program("examples/writer"), &[&again, "20000"])
        .assert_ok();
    let mut read = c.command(4, &c_program("examples/reader"));
    read.arg(&again);
    dsm_e2e::run(read).assert_ok();
    // A joiner of another cluster stops with a line naming both sides.
    let other = dsm_e2e::Daemon::try_start_with(
        5,
        &[
            "--listen",
            &format!("127.0.0.1:{}", dsm_e2e::free_port()),
            "--join",
            &seed,
            "--cluster",
            "other",
            &kf,
            &key,
        ],
    );
    let log = dsm_e2e::stopped_log(other, Duration::from_secs(10));
    assert!(
        log.contains("cluster `other`") && log.contains("`dsm`"),
        "{log}"
    );
}

/// `dsmctl stats --prometheus` is read by a real Prometheus parser (python3-prometheus-client):
/// counters, the fault latency histogram with remote faults in it, and per-peer traffic.
#[test]
fn stats_in_the_prometheus_format_parse_and_count_remote_faults() {
    let c = after_remote_reads("prom");
    let out = c.node(2).ctl(&["stats", "--prometheus"]);
    out.assert_ok();
    // Debian's python3 has the parser (CI installs python3-prometheus-client).
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let parse = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
fams = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
lat = fams["dsm_fault_latency_seconds"]
count = {s.labels["kind"]: s.value for s in lat.samples if s.name.endswith("_count")}
inf = {s.labels["kind"]: s.value for s in lat.samples if s.labels.get("le") == "+Inf"}
peers = [s.labels["peer"] for s in fams["dsm_peer_bytes"].samples]
print(json.dumps({"type": lat.type, "count": count, "inf": inf, "peers": peers,
                  "remote_reads": [s.value for s in fams["dsm_faults"].samples
                                   if s.labels["kind"] == "remote_read"]}))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", parse])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(out.stdout.as_bytes())
        .unwrap();
    let parsed = child.wait_with_output().unwrap();
    assert!(
        parsed.status.success(),
        "the parser refused it: {}\n{}",
        String::from_utf8_lossy(&parsed.stderr),
        out.stdout
    );
    let v: serde_json::Value = serde_json::from_slice(&parsed.stdout).unwrap();
    assert_eq!(v["type"], "histogram", "{v}");
    assert!(v["count"]["remote"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["count"]["remote"], v["inf"]["remote"], "{v}");
    assert!(v["remote_reads"][0].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["peers"], serde_json::json!(["1", "1"]), "{v}");
}

/// `dsmctl segments` on any node lists the cluster's segments from the directory; `dsmctl rm`
/// on another node removes a name everywhere.
#[test]
fn dsmctl_segments_lists_the_cluster_and_rm_removes_everywhere() {
    let c = Cluster::start(2, &[]);
    let name = shm_name("listed");
    c.node(1)
        .run(&c_program("examples/writer"), &[&name, "100000"])
        .assert_ok();
    let listed = c.node(2).json(&["segments"]);
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} not in {listed}"))
        .clone();
    assert_eq!(entry["kind"], "posix", "{entry}");
    assert_eq!(entry["size"], 100000, "{entry}");
    assert!(
        entry["pages_here"].is_null(),
        "node 2 holds none of it: {entry}"
    );
    c.node(2).ctl(&["rm", &name]).assert_ok();
    for node in &c.nodes {
        let listed = node.json(&["segments"]);
        assert!(
            !listed
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["name"] == name.as_str()),
            "{listed}"
        );
    }
    let out = c.node(1).run(&c_program("check"), &[&name, "keep", "8"]);
    assert!(out.stderr.contains("No such file"), "{out:?}");
}

/// `dsmctl top` shows a node's fault rates, its peers' traffic and its hottest pages.
#[test]
fn dsmctl_top_shows_rates_peers_and_hot_pages() {
    let c = after_remote_reads("top");
    let out = c
        .node(2)
        .ctl(&["top", "--count", "1", "--interval-ms", "200"]);
    out.assert_ok();
    for want in [
        "FAULTS/S",
        "from a peer",
        "PEER",
        "HOTTEST PAGES",
        "locks homed here",
    ] {
        assert!(out.stdout.contains(want), "{want} missing:\n{}", out.stdout);
    }
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("1 ") && l.contains("up")),
        "peer 1 up:\n{}",
        out.stdout
    );
}

/// A 2-node cluster where node 2 read (remotely) a segment node 1 wrote, then unlinked it.
fn after_remote_reads(label: &str) -> Cluster {
    let c = Cluster::start(2, &[]);
    let name = shm_name(label);
    c.node(1)
        .run(&c_program("examples/writer"), &[&name, "100000"])
        .assert_ok();
    c.node(2)
        .run(&c_program("examples/reader"), &[&name])
        .assert_ok();
    c
}

/// `dsmctl stats` counts the pages read ahead that no process opened: a reader that stops
/// after one page leaves the page read ahead of it unopened, wasted once the writer takes it
/// back; a reader that reads to the end wastes none.
#[test]
fn dsmctl_stats_counts_pages_read_ahead_for_nothing() {
    let c = Cluster::start(2, &[]);
    let name = shm_name("ahead");
    let prefix = c_program("prefix");
    let run = |node: usize, args: &[&str]| {
        let mut cmd = c.command(node, &prefix);
        cmd.args(args);
        dsm_e2e::run(cmd).assert_ok();
    };
    let until = |what: &str, want: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stats = c.node(2).json(&["stats"]);
            if want(&stats) {
                return stats;
            }
            assert!(Instant::now() < deadline, "{what}: {stats}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let n = |s: &serde_json::Value, k: &str| s[k].as_u64().unwrap();
    run(1, &["write", &name, "1024"]);
    // Page 0 is read; page 1 is asked for ahead of the reader, which is gone by then.
    run(2, &["read", &name, "1"]);
    until("page 1 read ahead, unopened", &|s| {
        n(s, "prefetched") == 1 && n(s, "prefetch_unopened") == 1
    });
    run(1, &["write", &name, "1024"]);
    until("page 1 lost unopened", &|s| {
        n(s, "prefetch_wasted") == 1 && n(s, "prefetch_unopened") == 0
    });
    // A reader of every page opens everything read ahead of it.
    run(2, &["read", &name, "1024"]);
    let read = c.node(2).json(&["stats"]);
    assert!(n(&read, "prefetched") > 900, "{read}");
    run(1, &["write", &name, "1024"]);
    let lost = until("the read-ahead lost, opened", &|s| {
        n(s, "prefetch_unopened") == 0 && n(s, "prefetch_opened") > 900
    });
    assert_eq!(n(&lost, "prefetch_wasted"), 1, "{lost}");
    let table = c.node(2).ctl(&["stats"]);
    assert!(
        table.stdout.contains("never opened 1 (wasted)"),
        "{}",
        table.stdout
    );
}
