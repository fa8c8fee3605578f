//! Peers prove the cluster key (issue 10): links are authenticated and encrypted with it; a
//! daemon without it, or with another, never links and says why; impostors at the peer port
//! leave the real link and a running workload intact.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use dsm_e2e::{artifacts, c_program, free_port, run, unique, Cluster, Daemon, Key, Running};
use dsm_proto::frame;
use dsm_proto::peer::{PeerFrame, PeerHello};
use dsm_proto::{NodeId, MAGIC, PROTOCOL_VERSION};

/// dsmd's exit and what it said, started with `args`.
fn refused_start(args: &[&str]) -> (bool, String) {
    let dir = dsm_e2e::TempDir::new("refused");
    let out = Command::new(&artifacts().dsmd)
        .args(["--node-id", "1", "--socket"])
        .arg(dir.0.join("s.sock"))
        .args(args)
        .output()
        .expect("run dsmd");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_daemon_with_peers_needs_a_key_it_keeps_secret() {
    let peer = format!("2=127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let (ok, said) = refused_start(&["--listen", &listen, "--peer", &peer]);
    assert!(!ok && said.contains("dsmctl keygen"), "{said}");

    let key = Key::new();
    std::fs::set_permissions(&key.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = key.path.display().to_string();
    let (ok, said) = refused_start(&["--listen", &listen, "--peer", &peer, "--key-file", &path]);
    assert!(!ok && said.contains("chmod 600"), "{said}");

    std::fs::set_permissions(&key.path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key.path, "too short\n").unwrap();
    let (ok, said) = refused_start(&["--listen", &listen, "--peer", &peer, "--key-file", &path]);
    assert!(!ok && said.contains("at least 32"), "{said}");
}

#[test]
fn daemons_with_different_keys_never_link_and_say_why() {
    let (p1, p2) = (free_port(), free_port());
    let (k1, k2) = (Key::new(), Key::new());
    let start = |node: u32, me: u16, other: u16, key: &Key| {
        let [kf, kp] = key.args();
        Daemon::start_with(
            node,
            &[
                "--listen",
                &format!("127.0.0.1:{me}"),
                "--peer",
                &format!("{}=127.0.0.1:{other}", 3 - node),
                &kf,
                &kp,
            ],
        )
    };
    let two = start(2, p2, p1, &k2);
    // Node 1 dials node 2 and cannot complete the handshake: in no cluster yet, it is the one
    // that does not fit, and it stops, saying why and naming node 2.
    let [kf, kp] = k1.args();
    let one = Daemon::try_start_with(
        1,
        &[
            "--listen",
            &format!("127.0.0.1:{p1}"),
            "--peer",
            &format!("2=127.0.0.1:{p2}"),
            &kf,
            &kp,
        ],
    );
    let log = dsm_e2e::stopped_log(one, Duration::from_secs(10));
    assert!(
        log.contains("cannot join") && log.contains("a different cluster key"),
        "{log}"
    );
    assert!(log.contains(&format!("node 2 at 127.0.0.1:{p2}")), "{log}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !two.log().contains("refusing peer connection") {
        assert!(Instant::now() < deadline, "{}", two.log());
        thread::sleep(Duration::from_millis(20));
    }
    // Node 2 goes on, and shows the link down.
    let mut ctl = Command::new(&artifacts().dsmctl);
    ctl.arg("--socket").arg(&two.socket).arg("peers");
    let out = run(ctl);
    assert!(out.stdout.contains("down"), "{}", out.stdout);
    assert_eq!(two.json(&["peers"])[0]["connected"], false);
}

#[test]
fn impostors_at_the_peer_port_leave_the_link_and_the_work_intact() {
    let c = Cluster::start(2, &[]);
    let listen = c.node(2).status()["listen"].as_str().unwrap().to_owned();
    let up_before = c.node(2).json(&["peers"])[0]["up_for_ms"]
        .as_u64()
        .expect("up");
    let name = format!("/{}", unique("victim"));
    let prog = c_program("pingpong");
    let workers: Vec<Running> = [1, 2]
        .iter()
        .enumerate()
        .map(|(role, &node)| {
            let mut cmd = c.command(node, &prog);
            cmd.args([&name, &role.to_string(), "2", "400"]);
            Running::start(cmd)
        })
        .collect();
    // Meanwhile: garbage, and plain hellos claiming to be node 1 (which dials node 2), many times.
    let impostor = PeerFrame::Hello(PeerHello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        cluster: "dsm".into(),
        node: NodeId(1),
        manager: "dynamic".into(),
        incarnation: 7,
        formed: true,
        peer_incarnation: 0,
        received: 0,
        listen: None,
        roster: Vec::new(),
    });
    let hello = frame::encode(&impostor).unwrap();
    for i in 0..60 {
        if let Ok(mut s) = TcpStream::connect(&listen) {
            let bytes: &[u8] = if i % 2 == 0 {
                &hello
            } else {
                b"\x00\x10GET / HTTP/1.1\r\n\r\n"
            };
            let _ = s.write_all(bytes);
        }
    }
    for w in workers {
        w.finish().assert_ok();
    }
    let peers = c.node(2).json(&["peers"]);
    assert_eq!(peers[0]["connected"], true, "{peers}");
    let up_after = peers[0]["up_for_ms"].as_u64().expect("still up");
    assert!(up_after >= up_before, "the real link was replaced: {peers}");
    assert!(
        !c.node(2).log().contains("replaced by a new connection"),
        "{}",
        c.node(2).log()
    );
}
