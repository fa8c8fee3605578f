//! A host cut off from the others, as a real network would do it: three daemons in their own
//! network namespaces, joined by veth links to a bridge; one host's link goes down for longer
//! than the failure timeout, then comes back.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dsm_e2e::{
    c_program, unique, wait_for_line, wait_limited, Cluster, Daemon, Key, Netns, Spawned,
};

const PORT: u16 = 7700;

fn args(net: &Netns, key: &Key, i: usize) -> Vec<String> {
    let mut a = vec![
        "--listen".to_string(),
        format!("{}:{PORT}", net.addr(i)),
        "--fault-timeout-ms".into(),
        "2000".into(),
    ];
    for j in 1..=3 {
        if j != i {
            a.push("--peer".into());
            a.push(format!("{j}={}:{PORT}", net.addr(j)));
        }
    }
    a.extend(key.args());
    a
}

fn start(net: &Netns, key: &Key, i: usize) -> Daemon {
    let a = args(net, key, i);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    Daemon::try_start_in(Some(&net.names[i - 1]), i as u32, &a).unwrap_or_else(|e| panic!("{e}"))
}

/// The timestamp of the first log line containing `what` (env_logger's RFC 3339 stamps sort
/// as text).
fn stamp(log: &str, what: &str) -> Option<String> {
    log.lines()
        .find(|l| l.contains(what))
        .and_then(|l| l.strip_prefix('['))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned)
}

fn wait_log(d: &Daemon, what: &str, limit: Duration) {
    let started = Instant::now();
    while !d.log().contains(what) {
        assert!(
            started.elapsed() < limit,
            "no \"{what}\" in {limit:?}:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_host_cut_off_stops_writing_before_the_others_declare_it_dead_and_rejoins_as_new() {
    let net = Netns::new(3);
    let key = Key::new();
    let nodes: Vec<Daemon> = (1..=3).map(|i| start(&net, &key, i)).collect();
    let all_args = (1..=3).map(|i| args(&net, &key, i)).collect();
    let mut c = Cluster {
        nodes,
        key,
        args: all_args,
    };
    c.wait_linked();
    // Host 3 creates a segment and a process there keeps writing a page of it.
    let p = format!("/{}", unique("p"));
    let mut held = c.command(3, &c_program("hold"));
    held.args([p.as_str(), "8192"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut held = Spawned(held.spawn().unwrap());
    wait_for_line(&mut held, "ready");
    let mut writer = c.command(3, &c_program("write_later"));
    writer
        .args([p.as_str(), "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut writer = Spawned(writer.spawn().unwrap());
    wait_for_line(&mut writer, "mapped");

    // What `hold` and `write_later` wrote reaches host 1 (the replica node after host 3) by
    // the background flush (`--replica-interval-ms`), before the cut: host 3 shows page 1
    // replicated and not written since (`dsmctl pages`), host 1 holds both pages' replicas.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = c.node(3).json(&["pages", &p])["pages"][1].clone();
        let flushed = page["replicated"].as_u64() >= Some(1)
            && page["dirty"] == false
            && page["replicating"] == false;
        let held = c.node(1).json(&["stats"])["replicas_held"].as_u64() >= Some(2);
        if flushed && held {
            break;
        }
        assert!(Instant::now() < deadline, "no replicas on host 1: {page}");
        std::thread::sleep(Duration::from_millis(20));
    }
    net.cut(3);
    let cut_at = Instant::now();
    // Host 3 fences itself; hosts 1 and 2 then agree it is dead.
    // (It hears no leader, or finds the others unreachable, whichever it notices first.)
    wait_log(c.node(3), "fenced (", Duration::from_secs(15));
    let detect = c.wait_member(1, 3, "dead", Duration::from_secs(30));
    let fenced = stamp(&c.node(3).log(), "fenced (").unwrap();
    let died = stamp(&c.node(1).log(), "is dead, as the cluster agreed").unwrap();
    assert!(
        fenced < died,
        "host 3 fenced at {fenced}, declared dead at {died}"
    );
    eprintln!(
        "cut to agreed death: {:?} ({detect:?} after the wait began)",
        cut_at.elapsed()
    );
    // Cut off, host 3's process cannot write: its write waits, then fails.
    writer
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"again\n")
        .unwrap();
    let status = wait_limited(
        &mut writer,
        Duration::from_secs(30),
        "a write while cut off",
    );
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status}");
    // The majority goes on: new segments, and the cut-off host's pages are taken over from
    // their replicas: what it wrote before the flush, not a byte lost — `hold`'s pattern, and
    // the one word `write_later` added to (so 1 word differs from the pattern).
    let r = format!("/{}", unique("r"));
    let started = Instant::now();
    let mut fresh = c.command(1, &c_program("hold"));
    fresh
        .args([r.as_str(), "8192"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut fresh = Spawned(fresh.spawn().unwrap());
    wait_for_line(&mut fresh, "ready");
    assert!(started.elapsed() < Duration::from_secs(10));
    let out = c
        .command(2, &c_program("check"))
        .args([&p, "keep"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 of 2048 words wrong"),
        "{out:?}"
    );

    // Healed, host 3 hears it was declared dead and stops; started again it joins as new.
    net.heal(3);
    let exit = c.nodes[2].wait_exit(Duration::from_secs(30));
    assert_eq!(exit.code(), Some(1), "{}", c.node(3).log());
    assert!(
        c.node(3).log().contains("declared this node (node 3) dead"),
        "{}",
        c.node(3).log()
    );
    drop(held);
    c.nodes[2] = start(&net, &c.key, 3);
    c.wait_member(1, 3, "alive", Duration::from_secs(30));
    c.wait_member(3, 3, "alive", Duration::from_secs(30));
    let out = c
        .command(3, &c_program("check"))
        .args([&r, "keep"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A fourth host joins through host 3 with `--listen 0.0.0.0:PORT`: the members learn where to
/// reach it from the address its connection comes from, dial it there across the bridge, and
/// it reads what host 2 wrote.
#[test]
fn a_host_listening_on_every_address_joins_and_is_reached_where_it_connects_from() {
    let net = Netns::new(4);
    let key = Key::new();
    let nodes: Vec<Daemon> = (1..=3).map(|i| start(&net, &key, i)).collect();
    let mut all_args: Vec<Vec<String>> = (1..=3).map(|i| args(&net, &key, i)).collect();
    let mut joiner_args = vec![
        "--listen".to_string(),
        format!("0.0.0.0:{PORT}"),
        "--join".into(),
        format!("{}:{PORT}", net.addr(3)),
    ];
    joiner_args.extend(key.args());
    let mut c = Cluster {
        nodes,
        key,
        args: Vec::new(),
    };
    c.wait_linked();
    let name = format!("/{}", unique("joined"));
    let mut write = c.command(2, &c_program("examples/writer"));
    write.args([name.as_str(), "50000"]);
    dsm_e2e::run(write).assert_ok();
    let a: Vec<&str> = joiner_args.iter().map(String::as_str).collect();
    let joiner = Daemon::try_start_in(Some(&net.names[3]), 4, &a).unwrap_or_else(|e| panic!("{e}"));
    c.nodes.push(joiner);
    all_args.push(joiner_args);
    c.args = all_args;
    c.wait_linked();
    let want = format!("{}:{PORT}", net.addr(4));
    for i in 1..=3 {
        let members = c.node(i).status()["members"].clone();
        let four = members
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["node"] == 4)
            .cloned()
            .unwrap_or_default();
        assert_eq!(four["addr"], want.as_str(), "node {i}: {members}");
    }
    let mut read = c.command(4, &c_program("examples/reader"));
    read.arg(&name);
    dsm_e2e::run(read).assert_ok();
}
