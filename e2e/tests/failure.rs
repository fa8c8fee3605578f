//! Hosts die and come back (issue: one agreed view of the cluster on Raft, never two writers,
//! never a hang). Real daemons, killed with SIGKILL and started again with the same node id;
//! the programs of nodes other than 1 run as if on other hosts.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use dsm_e2e::{
    c_program, outcome_of, unique, wait_for_line, wait_limited, Cluster, Daemon, Spawned,
};
use std::io::Write;

fn shm_name(label: &str) -> String {
    format!("/{}", unique(label))
}

/// The segments node `id` knows, as (name, id, base).
fn segments(c: &Cluster, id: usize) -> Vec<(String, u64, u64)> {
    c.node(id).status()["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("").to_owned(),
                s["id"].as_u64().unwrap(),
                s["base"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// `check ARGS…` on node `id` (as if on its own host).
fn check(c: &Cluster, id: usize, args: &[&str]) -> dsm_e2e::Outcome {
    let mut cmd = c.command(id, &c_program("check"));
    cmd.args(args);
    dsm_e2e::run(cmd)
}

/// Node `id` reads every word of the `release`/`hold` pattern in `name`: all `words` are intact.
fn assert_intact(c: &Cluster, id: usize, name: &str, words: usize) {
    let out = check(c, id, &[name, "keep"]);
    out.assert_ok();
    let want = format!("0 of {words} words wrong");
    assert!(out.stdout.contains(&want), "{}", out.stdout);
}

/// Starts `write_later NAME PAGE` on node `id` (it writes the page once) and waits until it has.
fn write_later(c: &Cluster, id: usize, name: &str, page: &str) -> Spawned {
    let mut cmd = c.command(id, &c_program("write_later"));
    cmd.args([name, page])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut writer = Spawned(cmd.spawn().unwrap());
    wait_for_line(&mut writer, "mapped");
    writer
}

/// Starts `hold NAME SIZE` on node `id` and waits for it to say it is ready.
fn hold(c: &Cluster, id: usize, name: &str, size: &str) -> Spawned {
    let mut cmd = c.command(id, &c_program("hold"));
    cmd.args([name, size])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut held = Spawned(cmd.spawn().unwrap());
    wait_for_line(&mut held, "ready");
    held
}

#[test]
fn the_directory_outlives_any_node_and_never_reuses_an_id() {
    let mut c = Cluster::start(3, &["--fault-timeout-ms", "2000"]);
    let a = shm_name("a");
    let _a_held = hold(&c, 2, &a, "65536");
    // Node 1 started the cluster (and likely leads it): it dies.
    c.kill(1);
    let started = Instant::now();
    let b = shm_name("b");
    let _b_held = hold(&c, 3, &b, "8192");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "shm_open took {took:?}");
    // It comes back with the same id: a new member, with the directory as it is.
    c.restart(1);
    c.wait_member(1, 1, "alive", Duration::from_secs(20));
    c.wait_member(3, 1, "alive", Duration::from_secs(20));
    let out = c.node(1).run(&c_program("check"), &[&a, "keep"]);
    out.assert_ok();
    let cc = shm_name("c");
    let _c_held = hold(&c, 1, &cc, "4096");
    let mut all = segments(&c, 1);
    all.extend(segments(&c, 3));
    let find = |n: &str| {
        all.iter()
            .find(|s| s.0.trim_start_matches('/') == n.trim_start_matches('/'))
            .unwrap_or_else(|| panic!("{n} not in {all:?}"))
            .clone()
    };
    let (sa, sb, sc) = (find(&a), find(&b), find(&cc));
    assert!(
        sa.1 != sb.1 && sa.1 != sc.1 && sb.1 != sc.1,
        "ids: {sa:?} {sb:?} {sc:?}"
    );
    assert!(
        sa.2 != sb.2 && sa.2 != sc.2 && sb.2 != sc.2,
        "addresses: {sa:?} {sb:?} {sc:?}"
    );
}

#[test]
fn a_dead_owners_pages_live_on_in_surviving_copies_and_its_restart_is_never_a_second_writer() {
    // Without replicas: what survives is what other nodes hold copies of (replicas are
    // `writes_released_before_a_host_dies_survive_on_its_replicas`).
    let mut c = Cluster::start(3, &["--fault-timeout-ms", "1500", "--replicas", "0"]);
    let s = shm_name("s");
    let only = shm_name("only");
    // Node 2 creates and writes ten pages; node 3 reads them all (read copies). Node 2 also
    // writes a segment nobody else reads.
    let held = hold(&c, 2, &s, "40960");
    let held_only = hold(&c, 2, &only, "8192");
    check(&c, 3, &[&s, "keep"]).assert_ok();
    c.kill(2);
    drop((held, held_only));
    c.wait_member(1, 2, "dead", Duration::from_secs(20));
    // A node that never had a copy reads the dead owner's pages: taken over from node 3's.
    check(&c, 1, &[&s, "keep"]).assert_ok();
    // Pages no other node held are gone, loudly and within the fault timeout.
    let started = Instant::now();
    let out = check(&c, 1, &[&only, "keep"]);
    assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{out:?}");
    // (As lost, once the death is agreed: not by running out of time asking nodes that never
    // opened the segment.)
    assert!(
        out.stderr.contains("no copy of the page survives"),
        "{out:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    c.restart(2);
    c.wait_member(2, 2, "alive", Duration::from_secs(20));
    c.wait_member(1, 2, "alive", Duration::from_secs(20));
    // The restarted node starts with nothing and takes pages only through the protocol: it
    // reads the current data, and its write is the one every node sees (never a second writer
    // beside node 3's or node 1's copies).
    check(&c, 2, &[&s, "keep"]).assert_ok();
    let writer = write_later(&c, 2, &s, "1");
    for node in [1, 3] {
        let out = check(&c, node, &[&s, "keep"]);
        assert!(
            out.stdout.contains("1 of 10240 words wrong"),
            "node {node} does not see node 2's write: {out:?}"
        );
    }
    drop(writer);
    // And a segment made now is new everywhere.
    let fresh = shm_name("fresh");
    let _f = hold(&c, 2, &fresh, "8192");
    check(&c, 3, &[&fresh, "keep"]).assert_ok();
}

#[test]
fn a_read_copy_holder_that_dies_fails_no_write_of_its_page() {
    let mut c = Cluster::start(3, &["--fault-timeout-ms", "2000"]);
    let s = shm_name("s");
    let _held = hold(&c, 1, &s, "8192");
    // Node 3 holds a read copy of both pages; then it dies.
    check(&c, 3, &[&s, "keep"]).assert_ok();
    c.kill(3);
    // Node 1's write must invalidate node 3's copy: it waits for node 3's death to be agreed
    // (half the fault timeout), then goes on — no SIGBUS.
    let started = Instant::now();
    let _writer = write_later(&c, 1, &s, "0");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // And the survivor that reads next sees that write.
    let out = check(&c, 2, &[&s, "keep"]);
    assert!(out.stdout.contains("1 of 2048 words wrong"), "{out:?}");
}

#[test]
fn a_second_daemon_with_a_live_node_id_is_refused_and_stops() {
    let c = Cluster::start(3, &[]);
    // Another daemon calling itself node 2 (it dials node 3, which knows node 2 is alive).
    let mut args = c.args[1].clone();
    let port = dsm_e2e::free_port();
    args[1] = format!("127.0.0.1:{port}");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = dsm_e2e::stopped_log(
        dsm_e2e::Daemon::try_start_with(2, &args),
        Duration::from_secs(15),
    );
    assert!(
        log.contains("node 2 is alive in this cluster") && log.contains("--node-id 2"),
        "{log}"
    );
    // The real node 2 is untouched.
    c.wait_member(1, 2, "alive", Duration::from_secs(5));
    c.wait_linked();
}

#[test]
fn a_stopped_daemon_holds_its_programs_no_longer_than_its_bound() {
    let d = Daemon::start_with(1, &["--fault-timeout-ms", "1000"]);
    let name = shm_name("stopped");
    let mut holder = d.spawn(&c_program("hold"), &[&name, "40960", "0"]);
    wait_for_line(&mut holder, "ready");
    let mut toucher = d.command(&c_program("touch_later"));
    toucher
        .args([name.as_str(), "3"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut toucher = Spawned(toucher.spawn().unwrap());
    wait_for_line(&mut toucher, "mapped");
    // SAFETY: signalling a child process we own.
    unsafe { libc::kill(d.pid() as i32, libc::SIGSTOP) };
    let started = Instant::now();
    toucher.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = wait_limited(
        &mut toucher,
        Duration::from_secs(30),
        "a fault, dsmd stopped",
    );
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status}");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(toucher.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("did not answer in time: it is stopped or wedged"),
        "{err}"
    );
    // A new program cannot even say hello: it is told, and gets an error, in bounded time.
    let started = Instant::now();
    let out = d.run(&c_program("check"), &[&name, "keep"]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("stopped or wedged"), "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(20));
    // SAFETY: as above.
    unsafe { libc::kill(d.pid() as i32, libc::SIGCONT) };
}

#[test]
fn connections_reset_under_load_lose_nothing() {
    let c = Cluster::start(2, &[]);
    let listen = c.node(2).status()["listen"].as_str().unwrap().to_owned();
    let port = listen.rsplit(':').next().unwrap().to_owned();
    let name = shm_name("reset");
    let prog = c_program("pingpong");
    let workers: Vec<dsm_e2e::Running> = [1, 2]
        .iter()
        .enumerate()
        .map(|(role, &node)| {
            let mut cmd = c.command(node, &prog);
            cmd.args([&name, &role.to_string(), "2", "3000"]);
            dsm_e2e::Running::start(cmd)
        })
        .collect();
    // Meanwhile the daemons' TCP connection is reset again and again (a message in flight on
    // it is lost with it): every turn must still see exactly the previous one.
    let mut resets = 0;
    let started = Instant::now();
    while resets < 15 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(150));
        let out = std::process::Command::new("ss")
            .args([
                "-K",
                "-t",
                "state",
                "established",
                "sport",
                "=",
                &format!(":{port}"),
            ])
            .output()
            .expect("run ss");
        assert!(out.status.success(), "{out:?}");
        if String::from_utf8_lossy(&out.stdout).lines().count() > 1 {
            resets += 1;
        }
    }
    for w in workers {
        w.finish().assert_ok();
    }
    assert!(resets > 0, "no connection was reset");
    let log = c.node(1).log();
    assert!(log.contains("link to node 2 lost"), "{log}");
}

/// Replicas at release points (`--replicas 1`, the default): node 2 writes 512 pages under a
/// process-shared mutex and unlocks it (or calls `msync(MS_SYNC)`); its daemon is SIGKILLed;
/// nodes 1 and 3 read every byte (taken over from the replicas, not SIGBUS). With
/// `--replicas 0` the same pages are lost. (The background flush is off: the release point
/// alone replicates.)
#[test]
fn writes_released_before_a_host_dies_survive_on_its_replicas() {
    for (replicas, how) in [
        ("1", "mutex"),
        ("1", "msync"),
        ("1", "async"),
        ("0", "mutex"),
    ] {
        let mut c = Cluster::start(
            3,
            &[
                "--fault-timeout-ms",
                "2000",
                "--replicas",
                replicas,
                "--replica-interval-ms",
                "0",
            ],
        );
        let name = shm_name("released");
        let mut cmd = c.command(2, &c_program("release"));
        cmd.args([name.as_str(), "512", how])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut writer = Spawned(cmd.spawn().unwrap());
        wait_for_line(&mut writer, "released");
        if how == "mutex" && replicas == "1" {
            // `dsmctl pages`: the owner sent version 1 of each page and wrote none since; the
            // replica node (the next by id) keeps it.
            let pages = c.node(2).json(&["pages", &name]);
            let first = &pages["pages"][0];
            assert_eq!(first["replicated"], 1, "{first}");
            assert_eq!(first["dirty"], false, "{first}");
            let kept = c.node(3).json(&["pages", &name]);
            assert_eq!(kept["pages"][0]["replica"][1], 1, "{kept}");
        }
        if how == "async" {
            // MS_ASYNC returned at once; the replication it started completes on its own.
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.node(3).json(&["stats"])["replicas_held"].as_u64() < Some(512) {
                assert!(Instant::now() < deadline, "MS_ASYNC replicated nothing");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        c.kill(2);
        drop(writer);
        for reader in [1, 3] {
            if replicas == "1" {
                let faults = |c: &Cluster| c.node(reader).json(&["stats"])["remote_reads"].as_u64();
                let before = faults(&c).unwrap();
                assert_intact(&c, reader, &name, 524_288);
                // The first reader takes the 512 pages over as it reads them in order: its
                // read-ahead locates a window of pages and then fetches them, so a fault
                // brings a window, not one page (it used to fault on every page).
                let took = faults(&c).unwrap() - before;
                assert!(
                    reader != 1 || took < 64,
                    "{took} remote faults to read 512 pages"
                );
            } else {
                let out = check(&c, reader, &[&name, "keep"]);
                assert_eq!(
                    out.status.signal(),
                    Some(libc::SIGBUS),
                    "without replicas the pages are lost: {}",
                    out.stderr
                );
            }
        }
        if replicas == "1" {
            let stats = c.node(3).json(&["stats"]);
            assert!(stats["replicas_held"].as_u64().unwrap() > 0, "{stats}");
        }
    }
}

/// A release's replica is sent as the page is when the daemon gets the release, while the
/// page's writers are stopped in parallel: a writer thread may store in between. Here one
/// thread stores to a page without pause while another releases it over and over; then the
/// writer stops, is joined, and a last release follows. Every value stored came before that
/// release, so after the host's death the survivors read the last one — on every page (a
/// round per page: the writer's last stores fall inside an earlier release's window in some).
#[test]
fn a_page_stored_to_during_its_release_is_replicated_as_last_written() {
    let mut c = Cluster::start(
        3,
        &["--fault-timeout-ms", "2000", "--replica-interval-ms", "0"],
    );
    let name = shm_name("race");
    let pages = 8;
    let mut cmd = c.command(2, &c_program("race_release"));
    cmd.args([name.as_str(), &pages.to_string(), "write"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut writer = Spawned(cmd.spawn().unwrap());
    let mut finals = Vec::new();
    {
        use std::io::BufRead;
        let out = std::io::BufReader::new(writer.0.stdout.as_mut().expect("piped"));
        for line in out.lines() {
            let line = line.expect("the writer's output");
            if line == "done" {
                break;
            }
            let words: Vec<&str> = line.split(' ').collect();
            assert_eq!(words[0], "final", "{line}");
            finals.push(words[2].to_owned());
        }
    }
    assert_eq!(finals.len(), pages, "{finals:?}");
    c.kill(2);
    drop(writer);
    let mut cmd = c.command(1, &c_program("race_release"));
    cmd.args([name.as_str(), &pages.to_string(), "read"]);
    let out = dsm_e2e::run(cmd);
    out.assert_ok();
    let read: Vec<String> = out
        .stdout
        .lines()
        .map(|l| l.split(' ').nth(2).unwrap_or("?").to_owned())
        .collect();
    assert_eq!(
        read, finals,
        "pages read after the death against the last values stored"
    );
}

/// The counter: processes on three nodes add to a counter under a robust
/// process-shared mutex; node 2's daemon (and its process) is SIGKILLed mid-run. The
/// survivors finish, and the final value is every increment whose unlock returned anywhere:
/// the survivors' and the dead process's (its log, written after each unlock returned — one
/// more may have been released before the kill reached the log).
#[test]
fn a_counter_under_a_mutex_keeps_every_released_increment_when_a_host_dies() {
    counter_survives_the_death_of(2);
}

/// The same with node 1 killed: it made the segment, so it was the mutex's home; the lock
/// service rebuilds the mutex on node 2 from its mirror and the survivors' claims.
#[test]
fn a_counter_under_a_mutex_keeps_every_released_increment_when_the_mutex_home_dies() {
    counter_survives_the_death_of(1);
}

fn counter_survives_the_death_of(victim: usize) {
    let mut c = Cluster::start(3, &["--fault-timeout-ms", "2000"]);
    let name = shm_name("durable");
    let dir = dsm_e2e::TempDir::new("durable");
    let log = |n: usize| dir.0.join(format!("{n}.log"));
    let spawn = |c: &Cluster, n: usize, iters: &str| {
        let mut cmd = c.command(n, &c_program("durable_counter"));
        cmd.args([
            name.as_str(),
            &(n - 1).to_string(),
            iters,
            log(n).to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        Spawned(cmd.spawn().unwrap())
    };
    let mut survivors = Vec::new();
    let mut dying = None;
    for n in 1..=3 {
        if n == victim {
            dying = Some(spawn(&c, n, "1000000"));
        } else {
            survivors.push(spawn(&c, n, "4000"));
        }
    }
    let logged = |n: usize| -> u64 {
        std::fs::read_to_string(log(n))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while logged(victim) < 300 {
        assert!(
            Instant::now() < deadline,
            "node {victim}'s process made no progress"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    c.kill(victim);
    drop(dying);
    let dead_done = logged(victim);
    let mut did = 0;
    for mut p in survivors {
        let out = outcome_of(&mut p, Duration::from_secs(120), "a survivor");
        assert!(out.status.success(), "{}", out.stderr);
        did += out
            .stdout
            .trim()
            .strip_prefix("did ")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{}", out.stdout));
    }
    let out = dsm_e2e::run({
        let mut cmd = c.command(3, &c_program("durable_counter"));
        cmd.args([name.as_str(), "read"]);
        cmd
    });
    out.assert_ok();
    let value: u64 = out
        .stdout
        .trim()
        .strip_prefix("counter ")
        .unwrap()
        .parse()
        .unwrap();
    if victim == 1 {
        let log = c.node(2).log();
        assert!(
            log.contains("objects homed at node 1 are served here now"),
            "{log}"
        );
    }
    let returned = did + dead_done;
    assert!(
        value == returned || value == returned + 1,
        "counter {value}, unlocks returned {returned} (survivors {did}, node {victim} {dead_done})"
    );
}

/// A semaphore homed on a host that dies mid-run (node 1 made its segment): node 2 posts 400
/// times, node 3 takes 400 times; node 1 is SIGKILLed halfway. Node 2 rebuilds the semaphore
/// from node 1's mirror and the survivors' claims: node 3 takes every post, and none is left
/// over (a post counted twice).
#[test]
fn a_semaphore_whose_home_dies_keeps_every_post() {
    let mut c = Cluster::start(3, &["--fault-timeout-ms", "2000"]);
    let name = shm_name("durable-sem");
    let spawn = |c: &Cluster, n: usize| {
        let mut cmd = c.command(n, &c_program("durable_sem"));
        cmd.args([name.as_str(), &(n - 1).to_string(), "400"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        Spawned(cmd.spawn().unwrap())
    };
    let mut home = spawn(&c, 1);
    wait_for_line(&mut home, "ready");
    let mut poster = spawn(&c, 2);
    let mut taker = spawn(&c, 3);
    wait_for_line(&mut taker, "halfway");
    c.kill(1);
    drop(home);
    for (p, want) in [
        (&mut poster, "posted 400"),
        (&mut taker, "took 400, none left"),
    ] {
        let out = outcome_of(p, Duration::from_secs(120), "a survivor");
        assert!(out.status.success(), "{out:?}");
        assert!(out.stdout.contains(want), "{out:?}");
    }
    let log = c.node(2).log();
    assert!(
        log.contains("objects homed at node 1 are served here now"),
        "{log}"
    );
}

/// A node started alone (no --peer, no --join) has nowhere to put replicas, so its processes'
/// releases do not wait for any; once others join it, the daemon tells its processes, and a
/// release made then survives the node's death.
#[test]
fn a_node_alone_replicates_once_others_join_it() {
    let mut c = Cluster::start(1, &["--fault-timeout-ms", "2000"]);
    let name = shm_name("alone");
    let mut cmd = c.command(1, &c_program("release"));
    cmd.args([name.as_str(), "256", "msync", "stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut writer = Spawned(cmd.spawn().unwrap());
    wait_for_line(&mut writer, "attached");
    let seed = c.node(1).status()["listen"].as_str().unwrap().to_owned();
    for id in [2, 3] {
        let [kf, key] = c.key.args();
        let args: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{}", dsm_e2e::free_port()),
            "--join".into(),
            seed.clone(),
            "--fault-timeout-ms".into(),
            "2000".into(),
            kf,
            key,
        ];
        let joiner = Daemon::start_with(id, &args.iter().map(String::as_str).collect::<Vec<_>>());
        c.nodes.push(joiner);
        c.args.push(args);
    }
    c.wait_linked();
    writer.stdin.take().unwrap().write_all(b"go\n").unwrap();
    wait_for_line(&mut writer, "released");
    assert!(
        c.node(1)
            .log()
            .contains("releases wait for their replicas from now on"),
        "{}",
        c.node(1).log()
    );
    c.kill(1);
    drop(writer);
    for reader in [2, 3] {
        assert_intact(&c, reader, &name, 262_144);
    }
}

/// The node holding a page's replica dies, then the page's owner (4 nodes, one replica each:
/// three survive the first death and can agree the second). Where another copy of the page
/// lives (node 1 read it), node 4 reads every released byte from it; where none does, the page
/// is lost and a read of it ends in SIGBUS once the death is agreed — never a hang.
#[test]
fn the_replica_holder_then_the_owner_dies() {
    for read_first in [true, false] {
        let mut c = Cluster::start(
            4,
            &["--fault-timeout-ms", "2000", "--replica-interval-ms", "0"],
        );
        let name = shm_name("twice");
        let mut cmd = c.command(2, &c_program("release"));
        cmd.args([name.as_str(), "64"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut writer = Spawned(cmd.spawn().unwrap());
        wait_for_line(&mut writer, "released");
        if read_first {
            check(&c, 1, &[&name, "keep"]).assert_ok();
        }
        // Node 3 holds node 2's replicas (the next node by id).
        assert!(
            c.node(3).json(&["stats"])["replicas_held"].as_u64() >= Some(64),
            "{}",
            c.node(3).json(&["stats"])
        );
        c.kill(3);
        c.wait_member(1, 3, "dead", Duration::from_secs(20));
        c.kill(2);
        drop(writer);
        let started = Instant::now();
        if read_first {
            assert_intact(&c, 4, &name, 65_536);
        } else {
            let out = check(&c, 4, &[&name, "keep"]);
            assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{}", out.stderr);
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{:?}",
                started.elapsed()
            );
        }
    }
}

/// A revocation the kernel refuses (lowering one page splits a mapping, and the process is at
/// `vm.max_map_count`; simulated with the shim's test hook, as the real limit is the whole
/// machine's) must not leave the page writable: the whole mapping is revoked instead, the
/// process says so once, and its next write faults and invalidates the reader's copy.
#[test]
fn a_revocation_the_kernel_refuses_never_leaves_a_page_writable() {
    let c = Cluster::start(2, &[]);
    let name = shm_name("refused");
    let _holder = hold(&c, 1, &name, "16384");
    let mut cmd = c.command(1, &c_program("write_later"));
    cmd.args([name.as_str(), "1"])
        .env("DSM_TEST_REVOKE_ENOMEM", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut writer = Spawned(cmd.spawn().unwrap());
    wait_for_line(&mut writer, "mapped");
    let read = |c: &Cluster| {
        let mut cmd = c.command(2, &c_program("touch_later"));
        cmd.args([name.as_str(), "1"]);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut reader = Spawned(cmd.spawn().unwrap());
        wait_for_line(&mut reader, "mapped");
        reader.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let out = outcome_of(&mut reader, Duration::from_secs(30), "the reader");
        assert!(out.status.success(), "{out:?}");
        out.stdout
    };
    // The reader's copy makes node 1 revoke the writer to read: that mprotect "fails".
    assert!(read(&c).contains("read 1"));
    writer
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"again\n")
        .unwrap();
    wait_for_line(&mut writer, "wrote 2");
    assert!(
        read(&c).contains("read 2"),
        "the write went unseen: the page stayed writable"
    );
    drop(writer.stdin.take());
    let out = outcome_of(&mut writer, Duration::from_secs(30), "the writer");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.contains("could not revoke one page"), "{out:?}");
}

/// A daemon whose `--peer` address is its own `--listen` address dials itself: it stops, and
/// says so, instead of blaming another daemon for its node id.
#[test]
fn a_daemon_whose_peer_address_is_its_own_says_so_and_stops() {
    let addr = format!("127.0.0.1:{}", dsm_e2e::free_port());
    let peer = format!("2={addr}");
    let log = dsm_e2e::stopped_log(
        Daemon::try_start_with(1, &["--insecure", "--listen", &addr, "--peer", &peer]),
        Duration::from_secs(15),
    );
    assert!(log.contains("dialled itself"), "{log}");
    assert!(!log.contains("two daemons cannot share"), "{log}");
}
