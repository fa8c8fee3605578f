//! Bad input never crashes, grows or wedges a daemon (issue 10): clients that flood, pipeline or
//! never say hello; peers that send absurd pages; hundreds of silent connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use dsm_e2e::{attach, c_program, raw_client as raw, read_frame, unique, wait_for_line, Daemon};
use dsm_proto::client::{Reply, Request};
use dsm_proto::frame;
use dsm_proto::peer::{PageKey, PeerFrame, PeerMsg};
use dsm_proto::sync::{SyncKey, SyncOp};
use dsm_proto::{NodeId, SegmentId};

/// Whether a read says the daemon closed the connection (a read that timed out does not).
fn closed(read: std::io::Result<usize>) -> bool {
    match read {
        Ok(n) => n == 0,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// The daemon's resident memory, in KiB.
fn rss_kib(d: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// The daemon's open descriptors.
fn fds(d: &Daemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .count()
}

/// A program still gets its work done: a segment created, written and read back.
fn still_serves(d: &Daemon) {
    let name = format!("/{}", unique("alive"));
    let mut holder = d.spawn(&c_program("hold"), &[&name, "4096"]);
    wait_for_line(&mut holder, "ready");
    assert!(d.status()["segments"].as_array().is_some());
}

#[test]
fn a_channel_that_floods_while_it_waits_is_read_no_further() {
    let mut d = Daemon::start(1);
    let (_session, mut chan) = attach(&d);
    // A barrier of two that nobody else reaches: the channel waits for good.
    let wait = Request::Sync {
        key: SyncKey::Barrier(42),
        op: SyncOp::Barrier { count: 2 },
        wait: true,
    };
    chan.write_all(&frame::encode(&wait).unwrap()).unwrap();
    // Then it pipelines requests without end; its writes block once the daemon stops reading.
    let junk = frame::encode(&Request::Info).unwrap().repeat(64 * 1024);
    chan.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut sent = 0usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match chan.write(&junk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(
        Instant::now() < deadline,
        "the daemon read {sent} bytes from a waiting channel and kept reading"
    );
    let rss = rss_kib(&d);
    assert!(
        rss < 64 * 1024,
        "dsmd grew to {rss} KiB buffering a waiting channel's requests"
    );
    assert!(d.alive());
    still_serves(&d);
}

#[test]
fn pipelined_requests_are_served_without_recursion() {
    let mut d = Daemon::start(1);
    let (_session, chan) = attach(&d);
    // Each of these is answered through the directory (the registrar is this node): once, each
    // answer served the next request from inside itself, one stack frame deeper per request.
    let n = 200_000;
    let all = frame::encode(&Request::Unlink {
        name: "/nothing-here",
    })
    .unwrap()
    .repeat(n);
    let mut writer = chan.try_clone().unwrap();
    let sending = thread::spawn(move || writer.write_all(&all).unwrap());
    let mut reader = std::io::BufReader::new(chan);
    for i in 0..n {
        let body = read_frame(&mut reader);
        let reply: Reply = frame::decode(&body).unwrap();
        assert!(matches!(reply, Reply::Failed(_)), "reply {i}: {reply:?}");
    }
    sending.join().unwrap();
    assert!(d.alive());
}

#[test]
fn silent_connections_are_closed_and_limited_and_the_daemon_keeps_serving() {
    // Enough descriptors for this test's own connections.
    // SAFETY: plain rlimit calls with valid pointers.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let port = dsm_e2e::free_port();
    let key = dsm_e2e::Key::new();
    let mut d = Daemon::start_with(
        1,
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--key-file",
            &key.path.display().to_string(),
        ],
    );
    let before = fds(&d);
    // 19,000 silent local connections (this test's descriptor limit is about 20,000): at most
    // 1,024 are kept waiting for their hello, the oldest giving way, so programs still get in.
    let local: Vec<UnixStream> = (0..19_000).map(|_| raw(&d)).collect();
    let tcp: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    // Past the cap on connections waiting for their hello, peer connections are closed at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fds(&d) > before + 1024 + 64 + 8 {
        assert!(Instant::now() < deadline, "{} descriptors", fds(&d));
        thread::sleep(Duration::from_millis(50));
    }
    still_serves(&d);
    // And every silent one is closed within its hello timeout.
    for mut s in local {
        let mut buf = [0u8; 16];
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert!(
            closed(s.read(&mut buf)),
            "a silent local connection stayed open"
        );
    }
    for mut s in tcp {
        let mut buf = [0u8; 16];
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert!(
            closed(s.read(&mut buf)),
            "a silent peer connection stayed open"
        );
    }
    let rss = rss_kib(&d);
    assert!(
        rss < 64 * 1024,
        "dsmd at {rss} KiB after 19,300 silent connections"
    );
    assert!(d.alive());
}

#[test]
fn a_far_page_index_from_a_peer_under_a_fixed_manager_costs_nothing() {
    let (mut d, connect) = dsm_e2e::played_peer("fixed");
    let mut s = connect();
    let unknown = SegmentId::new(NodeId(1), 99);
    for page in [u32::MAX, u32::MAX - 1, 1 << 31] {
        let msg = PeerMsg::Invalidate {
            key: PageKey {
                segment: unknown,
                page,
            },
            new_owner: NodeId(1),
            epoch: 1,
        };
        s.write_all(&frame::encode(&PeerFrame::Coherence(msg)).unwrap())
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        assert!(d.alive(), "dsmd died:\n{}", d.log());
        thread::sleep(Duration::from_millis(50));
        if d.log().contains("InvalidateAck") || d.log().contains(&format!("{}", u32::MAX - 1)) {
            break;
        }
    }
    let rss = rss_kib(&d);
    assert!(
        rss < 64 * 1024,
        "dsmd grew to {rss} KiB for three far page indices"
    );
    assert!(d.alive());
}

#[test]
fn dsmctl_escapes_control_characters_from_clients() {
    let d = Daemon::start(1);
    // The name, as Python source: ESC [2J (clear the screen) and a carriage return in it.
    let name = format!("'evil\\x1b[2J\\r{}'", unique("esc"));
    let script = format!(
        "from multiprocessing import shared_memory as s, resource_tracker as r\n\
         m = s.SharedMemory(name={name}, create=True, size=4096)\n\
         r.unregister(m._name, 'shared_memory')\nm.close()"
    );
    let mut py = d.command(std::path::Path::new("python3"));
    py.args(["-c", &script]);
    dsm_e2e::run(py).assert_ok();
    let mut ctl = std::process::Command::new(&dsm_e2e::artifacts().dsmctl);
    ctl.arg("--socket").arg(&d.socket).arg("status");
    let out = dsm_e2e::run(ctl);
    out.assert_ok();
    assert!(out.stdout.contains("evil"), "{}", out.stdout);
    assert!(
        !out.stdout.contains('\x1b') && !out.stdout.contains('\r'),
        "raw control characters reached the terminal: {:?}",
        out.stdout
    );
    assert!(out.stdout.contains("\\u{1b}"), "{}", out.stdout);
}

/// A process that writes garbage over its segment's lock table (which it may write: it may
/// write the segment too) wedges no daemon: its own mutex is as broken as a glibc mutex whose
/// bytes it scribbled on, and the daemon goes on serving everyone.
#[test]
fn garbage_in_a_lock_table_wedges_no_daemon() {
    let d = Daemon::start(1);
    let name = format!("/{}", unique("scribble"));
    let out = dsm_e2e::run({
        let mut cmd = d.command(&c_program("locks"));
        cmd.args([name.as_str(), "0", "1", "scribble", "300"]);
        cmd
    });
    assert!(
        out.stdout.contains("scribbled"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    still_serves(&d);
}
