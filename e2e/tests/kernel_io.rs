//! System calls, stdio and every other road to a segment's bytes (issue 9), across two nodes
//! whose second node's programs run as if on another host (own IPC and mount namespaces, an
//! empty `/dev/shm`).

use dsm_e2e::{c_program, run, unique, Cluster, Running, TempDir};

#[test]
fn syscalls_and_stdio_on_dsm_memory_across_nodes() {
    let c = Cluster::start(2, &[]);
    let prog = c_program("kernel_io");
    let name = format!("/{}", unique("kio"));
    let dir = TempDir::new("kio");
    let dir = dir.0.to_str().expect("utf-8 temp dir").to_string();
    let mut producer = c.node(1).command(&prog);
    producer.args([&name, &dir, "producer"]);
    let producer = Running::start(producer);
    let mut consumer = c.node(2).isolated_command(&prog);
    consumer.args([&name, &dir, "consumer"]);
    let consumer = run(consumer);
    let producer = producer.finish();
    consumer.assert_ok();
    producer.assert_ok();
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
    let mut producer = c.node(1).command(&prog);
    producer.args([&name, "producer"]);
    let producer = Running::start(producer);
    let mut sender = c.node(2).isolated_command(&prog);
    sender.args([&name, "sender"]);
    let sender = run(sender);
    let producer = producer.finish();
    sender.assert_ok();
    producer.assert_ok();
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
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("c/devshm.py");
    let script = script.to_str().expect("utf-8 path");
    let name = unique("devshm");
    let python = std::path::Path::new("python3");
    let mut creator = c.node(1).command(python);
    creator.args([script, &name, "creator"]);
    let creator = Running::start(creator);
    let mut reader = c.node(2).isolated_command(python);
    reader.args([script, &name, "path"]);
    let reader = run(reader);
    let creator = creator.finish();
    reader.assert_ok();
    creator.assert_ok();
    assert!(creator.stdout.contains("creator ok"), "{}", creator.stdout);
}

#[test]
fn one_segment_mapped_twice_is_two_mappings() {
    let c = Cluster::start(2, &[]);
    let prog = c_program("twice");
    let name = format!("/{}", unique("twice"));
    let mut writer = c.node(1).command(&prog);
    writer.args([&name, "writer"]);
    let writer = Running::start(writer);
    let mut maps = c.node(2).isolated_command(&prog);
    maps.args([&name, "maps"]);
    let maps = run(maps);
    let writer = writer.finish();
    maps.assert_ok();
    writer.assert_ok();
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
    let mut producer = c.node(1).command(&prog);
    producer.args([&key, "producer"]);
    let producer = Running::start(producer);
    let mut consumer = c.node(2).isolated_command(&prog);
    consumer.args([&key, "consumer"]);
    let consumer = run(consumer);
    let producer = producer.finish();
    consumer.assert_ok();
    producer.assert_ok();
}

#[test]
fn a_segment_grows_to_4_gib_after_shm_open() {
    let c = Cluster::start(2, &[]);
    let prog = c_program("grow");
    let name = format!("/{}", unique("grow"));
    let mut writer = c.node(1).command(&prog);
    writer.args([&name, "writer"]);
    let writer = Running::start(writer);
    let mut reader = c.node(2).isolated_command(&prog);
    reader.args([&name, "reader"]);
    let reader = run(reader);
    let writer = writer.finish();
    reader.assert_ok();
    writer.assert_ok();
}
