//! Synchronization across hosts: unmodified C and C++ (Boost.Interprocess) programs with
//! process-shared pthread objects in DSM memory, the dsm.h API, and the parallel examples, on
//! three dsmd.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dsm_e2e::{
    artifacts, c_program, c_program_with, unique, wait_for_line, wait_limited, Cluster, Outcome,
    Running, Spawned,
};

fn shm_name(label: &str) -> String {
    format!("/{}", unique(label))
}

fn all_ok(outcomes: &[Outcome]) {
    for o in outcomes {
        o.assert_ok();
    }
}

/// Runs `program NAME ROLE NPROCS args…` once per entry of `placement`.
fn run(c: &Cluster, program: &str, placement: &[usize], args: &[&str]) -> Vec<Outcome> {
    let name = shm_name(program.rsplit('/').next().unwrap());
    let n = placement.len().to_string();
    let out = c.run_all(&c_program(program), placement, |role| {
        let mut v = vec![name.clone(), role.to_string(), n.clone()];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    });
    all_ok(&out);
    out
}

#[test]
fn mutex_keeps_a_non_atomic_counter_exact_across_hosts() {
    let c = Cluster::start(3, &[]);
    let out = run(&c, "locks", &[1, 2, 3, 1, 2, 3], &["mutex", "300"]);
    for o in &out {
        assert!(
            o.stdout.contains("counter 1800 (want 1800)"),
            "{}",
            o.stdout
        );
    }
    // The waits went through the lock service, not a futex.
    let stats = c.node(2).json(&["stats"]);
    assert!(stats["sync_requests"].as_u64().unwrap() >= 600, "{stats}");
}

#[test]
fn condition_wakeups_cross_hosts_without_loss() {
    let c = Cluster::start(3, &[]);
    let out = run(&c, "locks", &[1, 2, 3], &["cond", "200"]);
    for o in &out {
        assert!(o.stdout.contains("turn 600 (want 600)"), "{}", o.stdout);
    }
}

#[test]
fn barrier_waits_for_a_late_process_every_round() {
    let c = Cluster::start(3, &[]);
    let out = run(&c, "locks", &[1, 2, 3], &["barrier", "64"]);
    for o in &out {
        assert!(o.stdout.contains("64 rounds, 0 bad"), "{}", o.stdout);
    }
}

#[test]
fn trylock_and_timedlock_across_hosts() {
    let c = Cluster::start(2, &[]);
    let out = run(&c, "locks", &[1, 2], &["timed"]);
    assert!(
        out[1].stdout.contains("trylock EBUSY, timedlock ETIMEDOUT"),
        "{}",
        out[1].stdout
    );
}

#[test]
fn robust_mutex_passes_on_when_its_holder_is_killed() {
    let c = Cluster::start(3, &[]);
    let program = c_program("locks");
    let name = shm_name("robust");
    // Killed when dropped, should the test fail half-way.
    let mut holder = Spawned(
        c.node(1)
            .command(&program)
            .args([&name, "0", "2", "robust"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut next = c.command(2, &program);
    next.args([&name, "1", "2", "robust"]);
    let next = Running::start(next);
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "holding");
    // The next locker is queued at the mutex's home by now (or soon); kill the holder.
    std::thread::sleep(Duration::from_millis(300));
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = next.finish();
    out.assert_ok();
    assert!(
        out.stdout.contains("first lock: EOWNERDEAD"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("second lock: ok"), "{}", out.stdout);
}

#[test]
fn explicit_api_linked_or_preloaded() {
    let c = Cluster::start(3, &[]);
    let weak = c_program_with("api", &["-DDSM_WEAK"]);
    let lib_dir = artifacts().libdsm.parent().unwrap().to_owned();
    let linked = c_program_with(
        "api",
        &[
            // The header the build installed next to the library.
            &format!("-I{}", lib_dir.display()),
            &format!("-L{}", lib_dir.display()),
            "-ldsm",
            &format!("-Wl,-rpath,{}", lib_dir.display()),
        ],
    );
    for (program, preload) in [(weak, true), (linked, false)] {
        let name = shm_name("api");
        let running: Vec<Running> = [1, 2, 3]
            .iter()
            .enumerate()
            .map(|(role, &node)| {
                let mut cmd = c.command(node, &program);
                if !preload {
                    cmd.env_remove("LD_PRELOAD");
                }
                cmd.args([&name, &role.to_string(), "3", "200"]);
                Running::start(cmd)
            })
            .collect();
        for (role, r) in running.into_iter().enumerate() {
            let out = r.finish();
            out.assert_ok();
            let want = format!(
                "role {role} on node {} of 3: counter 600 (want 600), 1 serial",
                role + 1
            );
            assert!(out.stdout.contains(&want), "{}", out.stdout);
        }
    }
    // Without the library, the weak build says so instead of crashing.
    let weak = c_program_with("api", &["-DDSM_WEAK"]);
    let mut cmd = std::process::Command::new(&weak);
    cmd.args(["/x", "0", "1", "1"]);
    let out = dsm_e2e::run(cmd);
    assert_eq!(out.status.code(), Some(3), "{}", out.stdout);
}

#[test]
fn examples_run_across_three_hosts_and_match_a_sequential_run() {
    let c = Cluster::start(3, &[]);
    let out = run(&c, "examples/jacobi", &[1, 2, 3], &["128", "30"]);
    assert!(
        out[0].stdout.contains("0 cells differ"),
        "{}",
        out[0].stdout
    );
    let out = run(&c, "examples/matmul", &[1, 2, 3], &["96"]);
    assert!(
        out[0].stdout.contains("0 entries differ"),
        "{}",
        out[0].stdout
    );
    let out = run(&c, "examples/workqueue", &[1, 2, 3, 3], &["1500"]);
    assert!(
        out[0]
            .stdout
            .contains("1500 items, 1500 consumed, 0 never consumed"),
        "{}",
        out[0].stdout
    );
    let out = run(&c, "examples/barrier_stress", &[1, 2, 3], &["200", "2"]);
    for o in &out {
        assert!(
            o.stdout
                .contains("0 early releases, 0 rounds without exactly one serial thread"),
            "{}",
            o.stdout
        );
        // Each example reports its cost from the daemon's counters.
        assert!(o.stdout.contains("lock/barrier requests"), "{}", o.stdout);
    }
}

#[test]
fn boost_interprocess_mutex_and_conditions_across_hosts() {
    let c = Cluster::start(3, &[]);
    let out = run(&c, "boost_queue", &[1, 2, 3], &["400"]);
    assert!(
        out[0]
            .stdout
            .contains("consumers took 400 items summing to 80200 (want 400 items, 80200)"),
        "{}",
        out[0].stdout
    );
}

#[test]
fn a_lock_whose_home_dies_in_a_two_node_cluster_fails_instead_of_hanging() {
    let mut c = Cluster::start(2, &["--fault-timeout-ms", "1000"]);
    let program = c_program("locks");
    let name = shm_name("homeless");
    // The segment (and so the mutex's home) is node 1's.
    let holder = Running::start({
        let mut cmd = c.node(1).command(&program);
        cmd.args([&name, "0", "2", "homeless"]);
        cmd
    });
    let mut waiter = Spawned(
        c.node(2)
            .command(&program)
            .args([&name, "1", "2", "homeless"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_line(&mut waiter, "waiting");
    std::thread::sleep(Duration::from_millis(200));
    // dsmctl locks on the home shows who holds the mutex and that one thread waits.
    let locks = c.node(1).json(&["locks"]);
    let mutex = locks
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "mutex")
        .unwrap_or_else(|| panic!("{locks}"));
    assert_eq!(mutex["waiters"], 1, "{locks}");
    assert!(
        mutex["holders"][0]
            .as_str()
            .unwrap()
            .starts_with("node 1 session"),
        "{locks}"
    );
    assert!(
        mutex["object"].as_str().unwrap().contains("homeless"),
        "{locks}"
    );
    drop(c.nodes.remove(0));
    drop(holder);
    let started = Instant::now();
    let status = wait_limited(&mut waiter, Duration::from_secs(30), "lock on a dead home");
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(waiter.stdout.as_mut().unwrap(), &mut rest).unwrap();
    assert!(rest.contains("lock returned ENOTRECOVERABLE"), "{rest}");
    // Two nodes cannot agree a death (no majority without the dead one): nothing is taken
    // over, and waits on node 1's objects fail once no death came in three fault timeouts.
    let log = c.nodes[0].log();
    assert!(log.contains("not agreed dead"), "{log}");
}

#[test]
fn a_waiter_killed_mid_wait_does_not_keep_the_lock() {
    let c = Cluster::start(3, &[]);
    let program = c_program("locks");
    let name = shm_name("abandon");
    let start = |node: usize, role: &str| {
        let mut cmd = c.command(node, &program);
        cmd.args([&name, role, "3", "abandon"]);
        cmd
    };
    let holder = Running::start(start(1, "0"));
    let mut doomed = start(2, "1");
    let mut doomed = Spawned(doomed.stdout(Stdio::piped()).spawn().unwrap());
    let last = Running::start(start(3, "2"));
    wait_for_line(&mut doomed, "waiting");
    std::thread::sleep(Duration::from_millis(100));
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let out = last.finish();
    out.assert_ok();
    assert!(out.stdout.contains("role 2 locked"), "{}", out.stdout);
    holder.finish().assert_ok();
}

#[test]
fn an_unlock_just_before_exit_is_not_lost() {
    let c = Cluster::start(2, &[]);
    let out = run(&c, "locks", &[1, 2], &["churn", "60"]);
    assert!(
        out[1]
            .stdout
            .contains("60 children, 0 saw a dead owner, last lock ok"),
        "{}",
        out[1].stdout
    );
}

#[test]
fn posix_semaphores_in_a_segment_work_across_hosts() {
    let c = Cluster::start(3, &[]);
    let out = run(&c, "semaphore", &[1, 2, 3], &["300"]);
    assert!(
        out[0].stdout.contains(
            "trywait EAGAIN, timedwait ETIMEDOUT; consumers took 300 items summing to 45150 (want 45150); 8 slots free"
        ),
        "{}",
        out[0].stdout
    );
}

#[test]
fn named_semaphores_bounce_between_hosts() {
    let c = Cluster::start(2, &[]);
    let program = c_program("named_sem");
    let name = shm_name("named");
    let out = c.run_all(&program, &[1, 2], |role| {
        vec![name.clone(), role.to_string(), "200".into()]
    });
    all_ok(&out);
    for (role, o) in out.iter().enumerate() {
        let want = format!("role {role}: 200 rounds, values 0 0");
        assert!(o.stdout.contains(&want), "{}", o.stdout);
    }
    // The semaphores were distributed segments, and sem_unlink removed them.
    let status = c.node(2).status();
    assert_eq!(
        status["segments"].as_array().map(Vec::len),
        Some(0),
        "{status}"
    );
}

#[test]
fn python_multiprocessing_locks_go_through_the_lock_service() {
    let d = dsm_e2e::Daemon::start(1);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/c/mp_lock.py");
    for method in ["fork", "spawn"] {
        let mut cmd = d.command(std::path::Path::new("python3"));
        cmd.args([script, method, "200"]);
        let out = dsm_e2e::run(cmd);
        out.assert_ok();
        assert!(
            out.stdout
                .contains(&format!("{method}: counter 800 (want 800)")),
            "{}",
            out.stdout
        );
    }
    let stats = d.json(&["stats"]);
    assert!(stats["sync_requests"].as_u64().unwrap() >= 1600, "{stats}");
    // The locks' segments were unlinked and unmapped: their state went with them.
    assert_eq!(stats["sync_objects"], 0, "{stats}");
}

#[test]
fn rwlock_readers_never_see_a_half_written_pair() {
    let c = Cluster::start(3, &[]);
    let out = run(&c, "locks", &[1, 2, 3, 2, 3], &["rwlock", "150"]);
    for o in &out {
        assert!(
            o.stdout.contains("150 rounds, 0 torn reads, pair 150/150"),
            "{}",
            o.stdout
        );
    }
}

#[test]
fn a_timed_condition_wait_times_out_holding_its_mutex() {
    let c = Cluster::start(2, &[]);
    let out = run(&c, "locks", &[1, 2], &["condtime"]);
    assert!(
        out[1].stdout.contains("timedwait ETIMEDOUT"),
        "{}",
        out[1].stdout
    );
    assert!(
        out[0]
            .stdout
            .contains("trylock while the waiter holds it: EBUSY"),
        "{}",
        out[0].stdout
    );
}

/// A mutex only its home node's processes use is delegated to them: locked and unlocked with a
/// compare-and-swap, no request. Its semantics stay: an error-checking one still says EDEADLK
/// and EPERM, a recursive one counts and says EPERM to an unlock too many, and a process that
/// exits holding one leaves it locked (its hold is handed to the lock service when the process
/// ends, as any holder's).
#[test]
fn a_mutex_only_its_home_uses_is_locked_without_the_daemon() {
    for replicas in ["0", "1"] {
        let c = Cluster::start(2, &["--replicas", replicas]);
        let before = c.node(1).json(&["stats"])["sync_requests"]
            .as_u64()
            .unwrap();
        let out = run(&c, "locks", &[1], &["fastpath", "20000"]);
        assert!(
            out[0].stdout.contains("fastpath ok, counter 20000"),
            "{}",
            out[0].stdout
        );
        let stats = c.node(1).json(&["stats"]);
        assert!(stats["sync_delegations"].as_u64().unwrap() >= 1, "{stats}");
        if replicas == "0" {
            // 20,000 pairs, next to no request: the fast path took them.
            let requests = stats["sync_requests"].as_u64().unwrap() - before;
            assert!(
                requests < 100,
                "{requests} requests for 20,000 lock+unlock pairs"
            );
        }
        // The child's hold, taken on the fast path, is the lock service's now (as a process's
        // that ended): `dsmctl locks` names it, not the fast path.
        let locks = c.node(1).ctl(&["locks"]);
        locks.assert_ok();
        assert!(
            locks.stdout.contains("session") && !locks.stdout.contains("fast path"),
            "{}",
            locks.stdout
        );
    }
}

/// Processes on the home node take the mutex on the fast path while a process on another
/// node contends for it: every time it asks, the home takes the mutex back and hands it on in
/// order. The non-atomic counter under it stays exact.
#[test]
fn a_delegated_mutex_is_taken_back_when_another_node_wants_it() {
    let c = Cluster::start(2, &["--replicas", "0"]);
    let out = run(&c, "locks", &[1, 1, 2], &["mutex", "3000"]);
    for o in &out {
        assert!(
            o.stdout.contains("counter 9000 (want 9000)"),
            "{}",
            o.stdout
        );
    }
    let stats = c.node(1).json(&["stats"]);
    assert!(stats["sync_delegations"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["sync_recalls"].as_u64().unwrap() >= 1, "{stats}");
    // Only the home keeps a lock table: node 2's process asked for one and was told no.
    assert_eq!(lock_tables(c.node(1)), 1);
    assert_eq!(lock_tables(c.node(2)), 0);
}

/// The lock tables a daemon holds open: memfds whose name ends in `:locks` (the segment's
/// own, `dsm:NAME`, may contain it too: this program's segment is named after it).
fn lock_tables(d: &dsm_e2e::Daemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| {
            let t = t.to_string_lossy();
            t.starts_with("/memfd:dsm:") && t.trim_end_matches(" (deleted)").ends_with(":locks")
        })
        .count()
}

/// The same with a recursive mutex taken twice each time: the home's threads count their nested
/// locks themselves; when the home takes the mutex back it holds it once for its thread, whose
/// last unlock goes to the home.
#[test]
fn a_delegated_recursive_mutex_is_taken_back_holding_its_count() {
    let c = Cluster::start(2, &["--replicas", "0"]);
    let out = run(&c, "locks", &[1, 1, 2], &["rmutex", "2000"]);
    for o in &out {
        assert!(
            o.stdout.contains("counter 6000 (want 6000)"),
            "{}",
            o.stdout
        );
    }
    let stats = c.node(1).json(&["stats"]);
    assert!(stats["sync_delegations"].as_u64().unwrap() >= 1, "{stats}");
}
