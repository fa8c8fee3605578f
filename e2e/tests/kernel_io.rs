//! System calls, stdio and every other road to a segment's bytes (issue 9), across two nodes
//! whose second node's programs run as if on another host (own IPC and mount namespaces, an
//! empty `/dev/shm`).

use std::path::Path;

use dsm_e2e::{c_program, run, unique, Cluster, Outcome, Running, TempDir};

/// Runs `program` with `first` on node 1 and, meanwhile, with `second` on node 2 as if on
/// another host; both must succeed. Returns their outcomes.
fn across(c: &Cluster, program: &Path, first: &[&str], second: &[&str]) -> (Outcome, Outcome) {
    let mut one = c.node(1).command(program);
    one.args(first);
    let one = Running::start(one);
    let mut two = c.node(2).isolated_command(program);
    two.args(second);
    let two = run(two);
    let one = one.finish();
    two.assert_ok();
    one.assert_ok();
    (one, two)
}

#[test]
fn syscalls_and_stdio_on_dsm_memory_across_nodes() {
    let c = Cluster::start(2, &[]);
    let prog = c_program("kernel_io");
    let name = format!("/{}", unique("kio"));
    let dir = TempDir::new("kio");
    let dir = dir.0.to_str().expect("utf-8 temp dir").to_string();
    let (producer, consumer) = across(
        &c,
        &prog,
        &[&name, &dir, "producer"],
        &[&name, &dir, "consumer"],
    );
    assert!(
        consumer.stdout.contains("consumer done"),
        "{}",
        consumer.stdout
    );
    assert!(
        producer.stdout.contains("producer done"),
        "{}",
        producer.stdout
    );
}

#[test]
fn dsm_faults_and_syscalls_work_whatever_the_signal_mask() {
    use std::os::unix::process::ExitStatusExt;
    let c = Cluster::start(2, &[]);
    let prog = c_program("sigmask");
    let name = format!("/{}", unique("mask"));
    c.node(1).run(&prog, &[&name, "producer"]).assert_ok();
    let mut consumer = c.node(2).isolated_command(&prog);
    consumer.args([&name, "consumer"]);
    let out = run(consumer);
    out.assert_ok();
    assert!(out.stdout.contains("sigmask ok"), "{}", out.stdout);

    // A fault that is not a DSM fault, on a thread that blocks SIGSEGV: death, as without dsm.
    let mut foreign = c.node(2).isolated_command(&prog);
    foreign.args([&name, "foreign"]);
    let out = run(foreign);
    assert!(
        out.stdout.contains("about to fault"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // The shell in front of the program reports the signal as 128 + 11, or it is the signal.
    let died_of_segv = out.status.signal() == Some(libc::SIGSEGV)
        || out.status.code() == Some(128 + libc::SIGSEGV);
    assert!(died_of_segv, "{:?}\n{}", out.status, out.stderr);
}

#[test]
fn a_descriptor_passed_over_a_socket_or_inherited_across_exec_is_the_segment() {
    let c = Cluster::start(2, &[]);
    let prog = c_program("fdpass");
    let name = format!("/{}", unique("fdpass"));
    across(&c, &prog, &[&name, "producer"], &[&name, "sender"]);
}

#[test]
fn a_thousand_segments_in_one_process_stay_segments() {
    let c = Cluster::start(2, &[]);
    let prog = c_program("many");
    let prefix = format!("/{}", unique("many"));
    c.node(1)
        .run(&prog, &[&prefix, "create", "1000"])
        .assert_ok();
    let mut check = c.node(2).isolated_command(&prog);
    check.args([&prefix, "check", "1000"]);
    run(check).assert_ok();
}

#[test]
fn errno_and_descriptor_numbers_are_glibcs() {
    let c = Cluster::start(1, &[]);
    let prog = c_program("errnos");
    let plain = run({
        let mut cmd = std::process::Command::new(&prog);
        cmd.arg(format!("/{}", unique("errno-plain")));
        cmd
    });
    plain.assert_ok();
    let dsm = c
        .node(1)
        .run(&prog, &[&format!("/{}", unique("errno-dsm"))]);
    dsm.assert_ok();
    assert_eq!(
        dsm.stdout, plain.stdout,
        "with the shim (left) and without (right)\nstderr: {}",
        dsm.stderr
    );
}

#[test]
fn dev_shm_paths_are_the_segments() {
    let c = Cluster::start(2, &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/devshm.py");
    let script = script.to_str().expect("utf-8 path");
    let name = unique("devshm");
    let python = Path::new("python3");
    let (creator, _) = across(
        &c,
        python,
        &[script, &name, "creator"],
        &[script, &name, "path"],
    );
    assert!(creator.stdout.contains("creator ok"), "{}", creator.stdout);
}

#[test]
fn one_segment_mapped_twice_is_two_mappings() {
    let c = Cluster::start(2, &[]);
    let prog = c_program("twice");
    let name = format!("/{}", unique("twice"));
    across(&c, &prog, &[&name, "writer"], &[&name, "maps"]);
}

#[test]
fn sem_wait_interrupted_by_a_signal_returns_eintr() {
    let c = Cluster::start(2, &[]);
    let prog = c_program("sem_eintr");
    let name = format!("/{}", unique("semintr"));
    c.node(1).run(&prog, &[&name, "init"]).assert_ok();
    let mut waiter = c.node(2).isolated_command(&prog);
    waiter.args([&name, "wait"]);
    let out = run(waiter);
    out.assert_ok();
    assert!(out.stdout.contains("sem eintr ok"), "{}", out.stdout);
}

#[test]
fn sysv_shared_memory_across_nodes() {
    let c = Cluster::start(2, &[]);
    let prog = c_program("sysv");
    // A key of this test process's own, so parallel runs do not meet.
    let key = format!("{:#x}", 0x5000_0000u32 | (std::process::id() & 0xffff) << 8);
    across(&c, &prog, &[&key, "producer"], &[&key, "consumer"]);
}

#[test]
fn a_segment_grows_to_4_gib_after_shm_open() {
    let c = Cluster::start(2, &[]);
    let prog = c_program("grow");
    let name = format!("/{}", unique("grow"));
    across(&c, &prog, &[&name, "writer"], &[&name, "reader"]);
}
