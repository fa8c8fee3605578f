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
