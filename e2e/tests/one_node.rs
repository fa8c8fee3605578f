//! One host, end to end: a real dsmd, real C (and Python) programs under LD_PRELOAD.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use dsm_e2e::{attach, c_program, unique, wait_for_line, wait_limited, Daemon};
use dsm_proto::client::Request;
use dsm_proto::frame;
use dsm_proto::hello::{Hello, Role};
use dsm_proto::SegmentId;

fn shm_name(label: &str) -> String {
    format!("/{}", unique(label))
}

#[test]
fn writer_and_reader_share_a_segment() {
    let d = Daemon::start(1);
    let name = shm_name("wr");
    let writer = d.run(&c_program("examples/writer"), &[&name, "1000000"]);
    writer.assert_ok();
    let status = d.status();
    let seg = &status["segments"][0];
    assert_eq!(seg["name"], name.as_str());
    assert_eq!(seg["size"], 1_000_000);
    assert_eq!(seg["pages"], 245);
    assert_eq!(seg["resident"], 245, "the writer touched every page");
    let base = seg["base"].as_u64().unwrap();
    assert!(
        writer.stdout.contains(&format!("{base:#x}")),
        "writer mapped at the daemon's base address: {}",
        writer.stdout
    );
    let reader = d.run(&c_program("examples/reader"), &[&name]);
    reader.assert_ok();
    assert!(
        reader.stdout.contains("hello from the writer"),
        "{}",
        reader.stdout
    );
    assert!(
        reader.stdout.contains(" 0 words wrong"),
        "{}",
        reader.stdout
    );
    assert!(
        reader.stdout.contains(&format!("{base:#x}")),
        "same address in every process"
    );
    assert_eq!(
        d.status()["segments"].as_array().unwrap().len(),
        0,
        "reader unlinked it"
    );
}

#[test]
fn live_processes_see_each_others_stores() {
    let d = Daemon::start(1);
    let name = shm_name("live");
    let prog = c_program("sharing");
    let mut first = d.spawn(&prog, &[&name, "0", "2000"]);
    let second = d.run(&prog, &[&name, "1", "2000"]);
    second.assert_ok();
    let status = wait_limited(&mut first, Duration::from_secs(60), "sharing role 0");
    assert!(status.success(), "role 0 failed: {status}");
}

#[test]
fn fork_child_shares_and_faults_on_its_own() {
    let d = Daemon::start(1);
    let out = d.run(&c_program("fork"), &[&shm_name("fork")]);
    out.assert_ok();
    assert!(
        out.stdout.contains("parent sees 4321 and 5678"),
        "{}",
        out.stdout
    );
}

#[test]
fn many_threads_fault_at_once() {
    let d = Daemon::start(1);
    let out = d.run(&c_program("threads"), &[&shm_name("threads")]);
    out.assert_ok();
    assert!(out.stdout.contains("failures 0"), "{}", out.stdout);
}

#[test]
fn posix_semantics_hold() {
    let d = Daemon::start(1);
    let out = d.run(&c_program("lifecycle"), &[&shm_name("life")]);
    out.assert_ok();
    assert!(out.stdout.contains("0 failures"), "{}", out.stdout);
    assert!(d.status()["segments"].as_array().unwrap().is_empty());
}

#[test]
fn foreign_segfault_without_handler_kills_with_sigsegv() {
    let d = Daemon::start(1);
    let out = d.run(&c_program("segv"), &[&shm_name("segv"), "none"]);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{out:?}");
    assert!(!out.stdout.contains("not reached"));
}

#[test]
fn foreign_segfault_reaches_the_programs_handler() {
    let d = Daemon::start(1);
    let out = d.run(&c_program("segv"), &[&shm_name("segv"), "sigaction"]);
    assert_eq!(out.status.code(), Some(42), "{out:?}");
    assert!(out.stdout.contains("caught 11 at 0x10"), "{}", out.stdout);

    let out = d.run(&c_program("segv"), &[&shm_name("segv"), "early"]);
    assert_eq!(
        out.status.code(),
        Some(43),
        "handler installed before the shim's: {out:?}"
    );

    let out = d.run(&c_program("segv"), &[&shm_name("segv"), "longjmp"]);
    out.assert_ok();
    assert!(out.stdout.contains("caught 2, mem 9"), "{}", out.stdout);
}

#[test]
fn sigkilled_writer_loses_nothing() {
    let d = Daemon::start(1);
    let name = shm_name("kill");
    let size = (256 * 4096 + 123).to_string();
    let mut holder = d.spawn(&c_program("hold"), &[&name, &size]);
    wait_for_line(&mut holder, "ready");
    let status = d.status();
    assert_eq!(status["processes"].as_array().unwrap().len(), 1);
    // One fault per page: a first write is recognised as a write, never read-then-write.
    assert_eq!(status["processes"][0]["faults"], 257, "{status}");
    assert_eq!(status["segments"][0]["pages"], 257);
    holder.kill().unwrap();
    let status = wait_limited(&mut holder, Duration::from_secs(10), "killed holder");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let out = d.run(&c_program("check"), &[&name, "unlink"]);
    out.assert_ok();
    assert!(out.stdout.starts_with("0 of "), "{}", out.stdout);
    let status = d.status();
    assert!(
        status["processes"].as_array().unwrap().is_empty(),
        "{status}"
    );
    assert!(
        status["segments"].as_array().unwrap().is_empty(),
        "{status}"
    );
}

#[test]
fn unreachable_daemon_fails_shm_open_promptly() {
    let d = Daemon::start(1);
    let mut cmd = d.command(&c_program("connect_fail"));
    cmd.env("DSM_SOCKET", "/nonexistent/dsmd.sock")
        .arg(shm_name("nope"));
    let out = dsm_e2e::run(cmd);
    out.assert_ok();
    assert!(
        out.stderr
            .contains("cannot reach dsmd at /nonexistent/dsmd.sock"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("errno=111"), "{}", out.stdout);
    assert_eq!(
        out.stderr.matches("cannot reach dsmd").count(),
        1,
        "said once: {}",
        out.stderr
    );
}

#[test]
fn access_past_the_end_raises_sigbus() {
    let d = Daemon::start(1);
    let out = d.run(&c_program("bus"), &[&shm_name("bus")]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(
        out.stdout.contains("SIGBUS 7 code 2"),
        "BUS_ADRERR: {}",
        out.stdout
    );
    assert!(out.stderr.contains("beyond the end"), "{}", out.stderr);
}

#[test]
fn dsm_shm_selects_which_names_are_distributed() {
    let d = Daemon::start(1);
    let local = shm_name("local");
    let mut cmd = d.command(&c_program("examples/writer"));
    cmd.env("DSM_SHM", "dsm-*").args([local.as_str(), "8192"]);
    dsm_e2e::run(cmd).assert_ok();
    let dev_shm = std::path::Path::new("/dev/shm").join(&local[1..]);
    assert!(dev_shm.exists(), "a name outside DSM_SHM goes to /dev/shm");
    std::fs::remove_file(&dev_shm).unwrap();
    assert!(d.status()["segments"].as_array().unwrap().is_empty());

    let distributed = format!("/dsm-{}", unique("x"));
    let mut cmd = d.command(&c_program("examples/writer"));
    cmd.env("DSM_SHM", "other,dsm-*")
        .args([distributed.as_str(), "8192"]);
    dsm_e2e::run(cmd).assert_ok();
    assert!(!std::path::Path::new("/dev/shm")
        .join(&distributed[1..])
        .exists());
    assert_eq!(d.status()["segments"][0]["name"], distributed.as_str());
}

#[test]
fn python_shared_memory_works_unmodified() {
    let d = Daemon::start(1);
    let name = unique("py");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/c/shared_memory.py");
    let python = std::path::Path::new("python3");
    let mut cmd = d.command(python);
    cmd.args([script, "create", &name]);
    dsm_e2e::run(cmd).assert_ok();
    assert_eq!(
        d.status()["segments"][0]["name"],
        format!("/{name}").as_str()
    );
    let mut cmd = d.command(python);
    cmd.args([script, "attach", &name]);
    let out = dsm_e2e::run(cmd);
    out.assert_ok();
    assert!(out.stdout.contains("helloworld"), "{}", out.stdout);
    assert!(d.status()["segments"].as_array().unwrap().is_empty());
}

/// Connects and, optionally, introduces itself as a fresh session's channel.
fn raw(d: &Daemon) -> UnixStream {
    dsm_e2e::raw_client(d)
}

fn expect_closed(mut s: UnixStream) {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) => panic!("daemon kept a bad connection open: {e}"),
        }
    }
}

#[test]
fn malformed_frames_close_one_connection_and_nothing_else() {
    let mut d = Daemon::start(1);
    let name = shm_name("bad");

    // A process that stays attached through all of it.
    let mut holder = d.spawn(&c_program("hold"), &[&name, "65536"]);
    wait_for_line(&mut holder, "ready");

    // Garbage instead of a hello.
    let mut s = raw(&d);
    s.write_all(b"\x05\0\0\0GET / HTTP/1.1\r\n").unwrap();
    expect_closed(s);

    // A length prefix far over the limit.
    let mut s = raw(&d);
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    expect_closed(s);

    // A wrong protocol version gets a reason, then the close.
    let mut s = raw(&d);
    let mut hello = Hello::new(Role::Ctl);
    hello.version = 999;
    s.write_all(&frame::encode(&hello).unwrap()).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert!(String::from_utf8_lossy(&reply).contains("protocol version 999"));

    // A channel for a session that does not exist.
    let mut s = raw(&d);
    let hello = Hello::new(Role::Channel {
        session: dsm_proto::SessionId(12345),
        tid: 1,
    });
    s.write_all(&frame::encode(&hello).unwrap()).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert!(String::from_utf8_lossy(&reply).contains("unknown session"));

    // A good session's channel that sends a request then garbage; one that vanishes in the
    // middle of a frame; one that sends a fault and vanishes before the reply.
    let fault = frame::encode(&Request::Fault {
        segment: SegmentId(77),
        page: 0,
        write: true,
    })
    .unwrap();
    let garbage = [&fault[..], b"\x03\0\0\0\xff\xff\xff"].concat();
    let partial = b"\x40\0\0\0\x05".to_vec();
    for (bytes, wait_for_close) in [(garbage, true), (partial, false), (fault.clone(), false)] {
        let (session, mut chan) = attach(&d);
        chan.write_all(&bytes).unwrap();
        if wait_for_close {
            expect_closed(chan);
        } else {
            drop(chan);
        }
        drop(session);
    }

    // A client that sends a request and disappears before reading the reply.
    let mut s = raw(&d);
    s.write_all(&frame::encode(&Hello::new(Role::Ctl)).unwrap())
        .unwrap();
    s.write_all(&frame::encode(&dsm_proto::ctl::CtlRequest::Status).unwrap())
        .unwrap();
    drop(s);

    std::thread::sleep(Duration::from_millis(200));
    assert!(d.alive(), "daemon died:\n{}", d.log());
    let log = d.log();
    assert!(
        log.contains("malformed frame"),
        "a log line names the bad frame:\n{log}"
    );
    assert!(log.contains("exceeds the limit"), "{log}");
    assert!(log.contains("closed mid-frame"), "{log}");

    // Nothing was lost: the holder's data is intact and the daemon serves new programs.
    let out = d.run(&c_program("check"), &[&name]);
    out.assert_ok();
    assert_eq!(d.status()["segments"][0]["name"], name.as_str());
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let d = Daemon::start(1);
    let socket = d.socket.clone();
    let status = d.stop();
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "socket file removed");
}

#[test]
fn second_daemon_on_the_same_socket_is_refused() {
    let d = Daemon::start(1);
    let out = dsm_e2e::run({
        let mut cmd = std::process::Command::new(&dsm_e2e::artifacts().dsmd);
        cmd.args(["--node-id", "2", "--socket"]).arg(&d.socket);
        cmd
    });
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("another dsmd is already serving"),
        "{}",
        out.stderr
    );
    assert!(d.socket.exists(), "the first daemon's socket is untouched");
}

#[test]
fn boost_interprocess_works_unmodified() {
    let d = Daemon::start(1);
    let name = unique("boost");
    let prog = c_program("boost_map");
    let out = d.run(&prog, &[&name, "create", "500"]);
    out.assert_ok();
    assert!(out.stdout.contains("created 500 entries"), "{}", out.stdout);
    assert_eq!(
        d.status()["segments"][0]["name"],
        format!("/{name}").as_str()
    );
    let out = d.run(&prog, &[&name, "check", "500"]);
    out.assert_ok();
    assert!(
        out.stdout.contains("checked 500 entries, 0 bad"),
        "{}",
        out.stdout
    );
    assert!(d.status()["segments"].as_array().unwrap().is_empty());
}

#[test]
fn python_multiprocessing_children_and_spawned_programs_share_memory() {
    let d = Daemon::start(1);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/c");
    let mut cmd = d.command(std::path::Path::new("python3"));
    cmd.args([
        format!("{dir}/mp_children.py"),
        unique("pymp"),
        format!("{dir}/mp_check.py"),
    ]);
    let out = dsm_e2e::run(cmd);
    out.assert_ok();
    assert!(
        out.stdout.contains("spawned: parent child forked"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("exit codes 0 0 ok"), "{}", out.stdout);
    assert!(d.status()["segments"].as_array().unwrap().is_empty());
}

/// Pages the node held stay usable by processes that map them (the node's copy outlives the
/// daemon, and no other node can take them without it); any other fault gets SIGBUS.
#[test]
fn a_fault_after_the_daemon_died_raises_sigbus_not_a_hang() {
    use std::io::Write as _;
    let d = Daemon::start(1);
    let name = shm_name("orphan");
    // Pages 0-3 are written (held by the node); page 5 never is.
    let mut holder = d.spawn(&c_program("hold"), &[&name, "40960", "16384"]);
    wait_for_line(&mut holder, "ready");
    let mut toucher = d.command(&c_program("touch_later"));
    toucher
        .args([name.as_str(), "5"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut toucher = dsm_e2e::Spawned(toucher.spawn().unwrap());
    wait_for_line(&mut toucher, "mapped");
    drop(d); // SIGKILL: the daemon is gone, its socket file left behind
    toucher.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = wait_limited(
        &mut toucher,
        Duration::from_secs(30),
        "fault with no daemon",
    );
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status}");
    let mut err = String::new();
    std::io::Read::read_to_string(toucher.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("raising SIGBUS"), "{err}");
}

#[test]
fn many_short_lived_threads_do_not_leak_descriptors() {
    let d = Daemon::start(1);
    let out = d.run(&c_program("thread_churn"), &[&shm_name("churn"), "1500"]);
    out.assert_ok();
    assert!(
        out.stdout.contains("1500 threads, 0 bad pages"),
        "{}",
        out.stdout
    );
    let fds: usize = out
        .stdout
        .split(", ")
        .last()
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a descriptor count");
    // stdio, the segment, the session, a channel or two, the directory handle.
    assert!(
        fds < 16,
        "{fds} descriptors after 1500 threads: {}",
        out.stdout
    );
}

#[test]
fn a_signal_handler_faulting_mid_request_does_not_corrupt_the_channel() {
    let d = Daemon::start(1);
    let out = d.run(&c_program("reentry"), &[&shm_name("reentry"), "2000"]);
    out.assert_ok();
    assert!(
        out.stdout.contains("2000 opens, 0 failed"),
        "{}",
        out.stdout
    );
    // One thread uses one channel; every further one is a one-off connection made by the fault
    // handler because the thread's own channel was busy with the interrupted request.
    let one_offs = d
        .log()
        .matches("connection closed (channel")
        .count()
        .saturating_sub(1);
    assert!(
        one_offs > 0,
        "the handler never found the channel busy: the test proved nothing"
    );
}

/// dsmd raises `vm.max_map_count` (each page a process holds with other access than its
/// neighbours is a kernel mapping) where it may, and says how where it may not.
#[test]
fn dsmd_raises_vm_max_map_count_or_says_how() {
    let d = Daemon::start(1);
    let now: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if now < 4_194_304 {
        let log = d.log();
        assert!(
            log.contains("sysctl -w vm.max_map_count=4194304"),
            "{now}: {log}"
        );
    }
}

/// The daemon's loop sleeps until its next deadline: idle and alone it wakes for Raft's tick
/// (10 times a second), not on a 50 ms period as it did. (Counted from its main thread's
/// voluntary context switches.)
#[test]
fn an_idle_daemon_sleeps_until_its_next_deadline() {
    let d = Daemon::start(1);
    let switches = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    // Settled: its start (and the Raft election of a node alone) is over.
    std::thread::sleep(Duration::from_millis(300));
    let (before, since) = (switches(), std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let per_second = (switches() - before) as f64 / since.elapsed().as_secs_f64();
    assert!(
        per_second < 16.0,
        "{per_second:.1} wake-ups a second idle (10 expected)"
    );
}

/// `dsmctl run -- PROG` runs a program on the node's dsm (the shim beside dsmctl, the daemon's
/// socket), passes its arguments and exit status through, and refuses to start it when no
/// daemon answers (it would share memory only on this host).
#[test]
fn dsmctl_run_starts_a_program_on_dsm_and_refuses_without_a_daemon() {
    let d = Daemon::start(1);
    let name = unique("run");
    let script = segment_left_behind(&name);
    let dsmctl = |socket: &std::path::Path, args: &[&str]| {
        std::process::Command::new(&dsm_e2e::artifacts().dsmctl)
            .arg("--socket")
            .arg(socket)
            .arg("run")
            .arg("--")
            .args(args)
            .env_remove("LD_PRELOAD")
            .output()
            .unwrap()
    };
    let out = dsmctl(&d.socket, &["python3", "-c", &script, "5"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The segment it made is the daemon's: the program ran on dsm.
    assert_has_segment(&d, &name);
    // No daemon: not started, and the line says why.
    let missing = d.socket.with_extension("gone");
    let out = dsmctl(&missing, &["true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach dsmd") && stderr.contains("not running true"),
        "{stderr}"
    );
}

/// `dsmd --config FILE` takes its settings from a TOML file, flags win over it, and a key it
/// does not know stops it (exit 2) with a line naming the key.
#[test]
fn dsmd_reads_a_config_file_and_names_a_wrong_key() {
    let dir = dsm_e2e::TempDir::new("config");
    let socket = dir.0.join("d.sock");
    let file = dir.0.join("dsmd.toml");
    std::fs::write(
        &file,
        format!(
            "node-id = 7\nsocket = \"{}\"\ncluster = \"from-file\"\nmanager = \"central\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let start = |extra: &[&str]| {
        std::process::Command::new(&dsm_e2e::artifacts().dsmd)
            .arg("--config")
            .arg(&file)
            .args(extra)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let stats = || {
        let out = std::process::Command::new(&dsm_e2e::artifacts().dsmctl)
            .arg("--socket")
            .arg(&socket)
            .args(["--json", "stats"])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap())
    };
    let wait_stats = || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = stats() {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "dsmd did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut d = start(&[]);
    let s = wait_stats();
    assert_eq!(
        (s["node"].as_u64(), s["manager"].as_str()),
        (Some(7), Some("central"))
    );
    d.kill().unwrap();
    d.wait().unwrap();
    let _ = std::fs::remove_file(&socket);
    let mut d = start(&["--node-id", "9"]);
    assert_eq!(wait_stats()["node"].as_u64(), Some(9), "the flag wins");
    d.kill().unwrap();
    d.wait().unwrap();
    std::fs::write(&file, "node-id = 7\nreplica = 2\n").unwrap();
    let out = std::process::Command::new(&dsm_e2e::artifacts().dsmd)
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown key `replica`"), "{stderr}");
}

/// A Python program that makes the segment `name`, leaves it behind (Python's resource
/// tracker would unlink it at exit) and exits with the status its first argument gives.
fn segment_left_behind(name: &str) -> String {
    format!(
        "import sys\nfrom multiprocessing import shared_memory, resource_tracker\n\
         s = shared_memory.SharedMemory(create=True, size=4096, name='{name}')\n\
         s.buf[0] = 42\n\
         resource_tracker.unregister(s._name, 'shared_memory')\n\
         sys.exit(int(sys.argv[1]))\n"
    )
}

/// The daemon `d` holds the segment `/name`.
fn assert_has_segment(d: &Daemon, name: &str) {
    let status = d.json(&["status"]);
    let names: Vec<&str> = status["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(names.contains(&format!("/{name}").as_str()), "{names:?}");
}

/// `scripts/install --prefix DIR` puts a self-contained dsm there: its dsmd runs from its
/// example config, its `dsmctl run` finds its own libdsm.so, and `--uninstall` removes it.
#[test]
fn an_install_into_a_prefix_runs_a_program_with_its_own_dsmctl() {
    let prefix = dsm_e2e::TempDir::new("prefix");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("--prefix")
        .arg(&prefix.0)
        .arg("--no-build")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = [
        "bin/dsmd",
        "bin/dsmctl",
        "lib/libdsm.so",
        "include/dsm.h",
        "lib/systemd/system/dsmd.service",
        "lib/sysctl.d/90-dsm.conf",
        "etc/dsm/dsmd.toml",
    ];
    for f in files {
        assert!(prefix.0.join(f).is_file(), "{f} not installed");
    }
    let unit = std::fs::read_to_string(prefix.0.join("lib/systemd/system/dsmd.service")).unwrap();
    assert!(
        unit.contains(&format!(
            "ExecStart={}/bin/dsmd --config",
            prefix.0.display()
        )),
        "{unit}"
    );
    // The installed daemon from the installed example config (its socket moved by a flag).
    let socket = prefix.0.join("dsmd.sock");
    let mut dsmd = std::process::Command::new(prefix.0.join("bin/dsmd"))
        .arg("--config")
        .arg(prefix.0.join("etc/dsm/dsmd.toml"))
        .arg("--socket")
        .arg(&socket)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let name = unique("installed");
    let out = std::process::Command::new(prefix.0.join("bin/dsmctl"))
        .arg("--socket")
        .arg(&socket)
        .args([
            "run",
            "--",
            "python3",
            "-c",
            &segment_left_behind(&name),
            "0",
        ])
        .env_remove("LD_PRELOAD")
        .env_remove("DSM_LIB")
        .output()
        .unwrap();
    let shown = std::process::Command::new(prefix.0.join("bin/dsmctl"))
        .arg("--socket")
        .arg(&socket)
        .arg("status")
        .output()
        .unwrap();
    dsmd.kill().unwrap();
    dsmd.wait().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains(&format!("/{name}")), "{shown}");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("--prefix")
        .arg(&prefix.0)
        .arg("--uninstall")
        .output()
        .unwrap();
    assert!(out.status.success());
    for f in &files[..6] {
        assert!(!prefix.0.join(f).exists(), "{f} left behind");
    }
}

/// README's one-host example, run as printed (in a shell at the repository's root; the
/// daemon it starts in the background is stopped afterwards), all but its first line,
/// `cargo build --release`, which the suite did before testing (run from inside a test, it
/// would rebuild binaries other tests are running).
#[test]
fn the_readme_one_host_example_runs_as_printed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("One host:\n\n```sh\n")
        .expect("README's one-host example");
    let block = &readme[start..];
    let block = &block[block.find("```sh\n").unwrap() + 6..];
    let block = &block[..block.find("```").unwrap()];
    assert!(
        block.contains("dsmctl --socket /tmp/dsm/1.sock run -- ./reader"),
        "{block}"
    );
    let block = block
        .strip_prefix("cargo build --release\n")
        .expect("the example starts with the build");
    // A daemon left from an earlier run would hold the socket.
    let _ = std::fs::remove_file("/tmp/dsm/1.sock");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -e\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n{block}"
        ))
        .current_dir(&root)
        .env_remove("LD_PRELOAD")
        .env_remove("DSM_SOCKET")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 words wrong"), "{stdout}");
}
