//! Harness for the end-to-end tests: starts real `dsmd` processes, compiles the C programs in
//! `e2e/c/` with the system `cc`, and runs them under `LD_PRELOAD=libdsm.so`.
//!
//! The binaries under test are the ones next to the test executable (`target/<profile>/`), so
//! build the workspace first: `scripts/test` does.
//! Every program runs under a time limit: a hang fails the test instead of stalling the suite.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long any one program may run before the test calls it hung.
pub const PROGRAM_LIMIT: Duration = Duration::from_secs(120);

/// Paths of the built binaries under test.
#[derive(Debug)]
pub struct Artifacts {
    /// The daemon.
    pub dsmd: PathBuf,
    /// The control tool.
    pub dsmctl: PathBuf,
    /// The preload library.
    pub libdsm: PathBuf,
}

/// The binaries of the profile this test was built with.
pub fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps/<test>");
        let a = Artifacts {
            dsmd: profile_dir.join("dsmd"),
            dsmctl: profile_dir.join("dsmctl"),
            libdsm: profile_dir.join("libdsm.so"),
        };
        for p in [&a.dsmd, &a.dsmctl, &a.libdsm] {
            assert!(
                p.exists(),
                "{} is missing: build the workspace before the end-to-end tests (scripts/test does)",
                p.display()
            );
        }
        a
    })
}

/// A unique name for this process and call: segments, directories.
pub fn unique(label: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{label}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under the system temp dir.
    pub fn new(label: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(&format!("dsm-e2e-{label}")));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles a C (or C++) program once per test process and returns the executable: `name` is a
/// file of `e2e/c/` (`"fork"`) or a path from the workspace root (`"examples/writer"`), without
/// its `.c` or `.cpp`.
pub fn c_program(name: &str) -> PathBuf {
    c_program_with(name, &[])
}

/// [`c_program`] with extra compiler arguments (`-l`, `-D`…), built apart from other variants.
/// `dsm.h` is on the include path.
pub fn c_program_with(name: &str, extra: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    static DIR: OnceLock<TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| TempDir::new("bin"));
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let variant = format!("{name}{}", extra.join(""));
    if let Some(p) = built.get(&variant) {
        return p.clone();
    }
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR"));
    let base = if name.contains('/') {
        e2e.parent().expect("workspace root").join(name)
    } else {
        e2e.join("c").join(name)
    };
    // C, or C++ where a .cpp file of that name exists.
    let cpp = base.with_extension("cpp");
    let (src, compiler) = if cpp.exists() {
        (cpp, "c++")
    } else {
        (base.with_extension("c"), "cc")
    };
    let out = dir
        .0
        .join(format!("{}{}", name.replace('/', "_"), built.len()));
    let include = e2e.parent().expect("workspace root").join("shim/include");
    let result = Command::new(compiler)
        .args(["-O2", "-g", "-pthread", "-Wall"])
        // The caller's -I is searched before the source tree's header; libraries go after the
        // source (the linker drops a library nothing before it needed).
        .args(extra.iter().filter(|a| a.starts_with("-I")))
        .arg("-I")
        .arg(&include)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .args(extra.iter().filter(|a| !a.starts_with("-I")))
        .output()
        .unwrap_or_else(|e| panic!("run {compiler} (is it installed?): {e}"));
    assert!(
        result.status.success(),
        "{compiler} {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    built.insert(variant, out.clone());
    out
}

/// A running `dsmd`, stopped (SIGKILL) when dropped unless [`Daemon::stop`] was called.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// Its Unix socket.
    pub socket: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Daemon {
    /// Starts a one-node daemon and waits until it accepts connections.
    pub fn start(node: u32) -> Daemon {
        Daemon::start_with(node, &[])
    }

    /// Starts a daemon with extra arguments.
    pub fn start_with(node: u32, extra: &[&str]) -> Daemon {
        Daemon::try_start_with(node, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a daemon with extra arguments; `Err` with its log if it exits at start.
    pub fn try_start_with(node: u32, extra: &[&str]) -> Result<Daemon, String> {
        Daemon::try_start_in(None, node, extra)
    }

    /// Starts a daemon in network namespace `netns` (as another host: its own addresses and
    /// links), or in this one.
    pub fn try_start_in(netns: Option<&str>, node: u32, extra: &[&str]) -> Result<Daemon, String> {
        let dir = TempDir::new("node");
        let socket = dir.0.join("dsmd.sock");
        let log = dir.0.join("dsmd.log");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&artifacts().dsmd);
                c
            }
            None => Command::new(&artifacts().dsmd),
        };
        let child = cmd
            .arg("--node-id")
            .arg(node.to_string())
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("start dsmd");
        let mut daemon = Daemon {
            child: Some(child),
            socket,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&daemon.socket).is_err() {
            if let Some(status) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!(
                    "dsmd exited at start ({status}):\n{}",
                    daemon.log()
                ));
            }
            assert!(
                Instant::now() < deadline,
                "dsmd did not start:\n{}",
                daemon.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
        Ok(daemon)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Waits (at most `limit`) for it to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        wait_limited(child, limit, "dsmd to exit")
    }

    /// Sends SIGTERM and waits for it to exit.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: signalling a child process we own.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        wait_limited(&mut child, Duration::from_secs(10), "dsmd after SIGTERM")
    }

    /// A program run against this daemon.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("LD_PRELOAD", &artifacts().libdsm)
            .env("DSM_SOCKET", &self.socket);
        cmd
    }

    /// A program run against this daemon as if on another host: in its own IPC and mount
    /// namespaces with an empty tmpfs on `/dev/shm`, so nothing it shares can go through this
    /// machine's `/dev/shm` or SysV IPC, only through the daemons.
    pub fn isolated_command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--ipc",
            "--mount",
            "--",
            "sh",
            "-c",
            "mount -t tmpfs -o size=64m dsm-e2e /dev/shm && LD_PRELOAD=\"$DSM_E2E_PRELOAD\" exec \"$0\" \"$@\"",
        ])
        .arg(program)
        .env("DSM_E2E_PRELOAD", &artifacts().libdsm)
        .env("DSM_SOCKET", &self.socket);
        cmd
    }

    /// Starts a program against this daemon, its stdout piped; killed when the guard drops.
    pub fn spawn(&self, program: &Path, args: &[&str]) -> Spawned {
        let child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Spawned(child)
    }

    /// Runs a program against this daemon to completion (within [`PROGRAM_LIMIT`]).
    pub fn run(&self, program: &Path, args: &[&str]) -> Outcome {
        let mut cmd = self.command(program);
        cmd.args(args);
        run(cmd)
    }

    /// `dsmctl --json status`, parsed.
    pub fn status(&self) -> serde_json::Value {
        self.json(&["status"])
    }

    /// `dsmctl ARGS…` against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Outcome {
        let mut cmd = Command::new(&artifacts().dsmctl);
        cmd.arg("--socket").arg(&self.socket).args(args);
        run(cmd)
    }

    /// `dsmctl --json ARGS…`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let args: Vec<&str> = std::iter::once("--json")
            .chain(args.iter().copied())
            .collect();
        let out = self.ctl(&args);
        assert!(
            out.status.success(),
            "dsmctl {args:?} failed: {}",
            out.stderr
        );
        serde_json::from_str(&out.stdout).expect("dsmctl --json prints JSON")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running program, killed when dropped (so a failing test leaves nothing behind).
#[derive(Debug)]
pub struct Spawned(pub Child);

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a finished program did.
#[derive(Debug)]
pub struct Outcome {
    /// How it ended.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl Outcome {
    /// Panics with the program's output unless it exited 0.
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.status.success(),
            "program failed ({:?}, signal {:?})\nstdout:\n{}\nstderr:\n{}",
            self.status.code(),
            self.status.signal(),
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `cmd` to completion within [`PROGRAM_LIMIT`], capturing its output.
pub fn run(cmd: Command) -> Outcome {
    Running::start(cmd).finish()
}

/// A program started with its output captured, to be finished with [`Running::finish`].
#[derive(Debug)]
pub struct Running {
    child: Spawned,
    what: String,
    stdout: thread::JoinHandle<String>,
    stderr: thread::JoinHandle<String>,
}

impl Running {
    /// Starts `cmd` with stdout and stderr captured.
    pub fn start(mut cmd: Command) -> Running {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stdout = drain(child.stdout.take().unwrap());
        let stderr = drain(child.stderr.take().unwrap());
        Running {
            child: Spawned(child),
            what,
            stdout,
            stderr,
        }
    }

    /// Waits (within [`PROGRAM_LIMIT`]) and returns what it did.
    pub fn finish(mut self) -> Outcome {
        let status = wait_limited(&mut self.child, PROGRAM_LIMIT, &self.what);
        Outcome {
            status,
            stdout: self.stdout.join().unwrap(),
            stderr: self.stderr.join().unwrap(),
        }
    }
}

/// Waits for `child` (within `limit`, see [`wait_limited`]) and reads what is left on its piped
/// stdout and stderr.
pub fn outcome_of(child: &mut Child, limit: Duration, what: &str) -> Outcome {
    let status = wait_limited(child, limit, what);
    let read = |pipe: Option<&mut dyn Read>| {
        let mut text = String::new();
        if let Some(p) = pipe {
            let _ = p.read_to_string(&mut text);
        }
        text
    };
    let stdout = read(child.stdout.as_mut().map(|p| p as &mut dyn Read));
    let stderr = read(child.stderr.as_mut().map(|p| p as &mut dyn Read));
    Outcome {
        status,
        stdout,
        stderr,
    }
}

/// The log of a daemon that does not fit and must stop: it exits at start, or soon after
/// (within `limit`) with status 1.
pub fn stopped_log(started: Result<Daemon, String>, limit: Duration) -> String {
    match started {
        Err(log) => log,
        Ok(mut d) => {
            let exit = d.wait_exit(limit);
            assert_eq!(exit.code(), Some(1), "{}", d.log());
            d.log()
        }
    }
}

/// Several daemons on loopback, each with its own socket: a cluster on one machine.
#[derive(Debug)]
pub struct Cluster {
    /// The nodes, node id `i + 1` at index `i`.
    pub nodes: Vec<Daemon>,
    /// The cluster key file every node was given (`--key-file`), unless `--insecure`.
    pub key: Key,
    /// Each node's arguments (beyond its id and socket), to start it again.
    pub args: Vec<Vec<String>>,
}

/// A fresh cluster key in a file of its own (mode 0600), removed when dropped.
#[derive(Debug)]
pub struct Key {
    /// The key file.
    pub path: PathBuf,
    _dir: TempDir,
}

impl Key {
    /// A new random key, as `dsmctl keygen` makes one.
    pub fn new() -> Key {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("key");
        let path = dir.0.join("cluster.key");
        let out = Command::new(&artifacts().dsmctl)
            .arg("keygen")
            .output()
            .expect("dsmctl keygen");
        assert!(out.status.success(), "dsmctl keygen failed");
        std::fs::write(&path, &out.stdout).expect("write the key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Key { path, _dir: dir }
    }

    /// `--key-file PATH`, for a daemon that joins.
    pub fn args(&self) -> [String; 2] {
        ["--key-file".into(), self.path.display().to_string()]
    }
}

impl Default for Key {
    fn default() -> Key {
        Key::new()
    }
}

/// A loopback port free a moment ago (another test's connection may take it meanwhile:
/// [`Cluster::start`] retries).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n) and waits until every link is up.
    ///
    /// A listening port chosen free can be taken before its daemon binds it (another test's
    /// outgoing connection gets it as its local port): then the cluster starts again on new ports.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        for _ in 0..4 {
            match Cluster::try_start(n, extra) {
                Ok(c) => return c,
                Err(e) if e.contains("Address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        Cluster::try_start(n, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start(n: usize, extra: &[&str]) -> Result<Cluster, String> {
        let key = Key::new();
        let keyed = !extra.contains(&"--insecure");
        // Distinct: a port freed by one free_port() call can come back from the next, and a
        // node given another's port dials itself.
        let mut ports: Vec<u16> = Vec::with_capacity(n);
        while ports.len() < n {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let all_args: Vec<Vec<String>> = (0..n)
            .map(|i| {
                let mut args: Vec<String> =
                    vec!["--listen".into(), format!("127.0.0.1:{}", ports[i])];
                for (j, port) in ports.iter().enumerate() {
                    if j != i {
                        args.push("--peer".into());
                        args.push(format!("{}=127.0.0.1:{port}", j + 1));
                    }
                }
                args.extend(extra.iter().map(|s| s.to_string()));
                if keyed {
                    args.extend(key.args());
                }
                args
            })
            .collect();
        let nodes: Vec<Daemon> = all_args
            .iter()
            .enumerate()
            .map(|(i, args)| {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Daemon::try_start_with(i as u32 + 1, &args)
            })
            .collect::<Result<_, _>>()?;
        let cluster = Cluster {
            nodes,
            key,
            args: all_args,
        };
        cluster.wait_linked();
        Ok(cluster)
    }

    /// Waits until every node reports every peer connected, and every node a member (alive,
    /// as committed) with a leader known.
    pub fn wait_linked(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &self.nodes {
            loop {
                let status = node.status();
                let peers = status["peers"].as_array().expect("peers");
                let members = status["members"].as_array().expect("members");
                let alive = members.iter().filter(|m| m["state"] == "alive").count();
                if peers.iter().all(|p| p["connected"] == true)
                    && alive == self.nodes.len()
                    && !status["leader"].is_null()
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "links not up: {status}\n{}",
                    node.log()
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// A program run against node `id`: node 1's as it is, every other node's as if on another
    /// host (own IPC and mount namespaces, an empty `/dev/shm`; [`Daemon::isolated_command`]), so
    /// that nothing can be shared except through the daemons.
    pub fn command(&self, id: usize, program: &Path) -> Command {
        if id == 1 {
            self.node(1).command(program)
        } else {
            self.node(id).isolated_command(program)
        }
    }

    /// Node `id` (1-based, as its node id).
    pub fn node(&self, id: usize) -> &Daemon {
        &self.nodes[id - 1]
    }

    /// Kills node `id`'s daemon (SIGKILL, as a host dies); it stays in `nodes` until
    /// [`Cluster::restart`] replaces it.
    pub fn kill(&mut self, id: usize) {
        let d = &mut self.nodes[id - 1];
        if let Some(mut child) = d.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `id` again with its arguments: a new incarnation with the same node id.
    pub fn restart(&mut self, id: usize) {
        let args: Vec<&str> = self.args[id - 1].iter().map(String::as_str).collect();
        self.nodes[id - 1] = Daemon::start_with(id as u32, &args);
    }

    /// Waits until node `at` reports node `id` as `state` ("alive" or "dead") in the agreed
    /// membership (and, for "alive", with a leader known); returns the time it took.
    pub fn wait_member(&self, at: usize, id: usize, state: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let status = self.node(at).status();
            let member = status["members"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["node"] == id as u64).cloned());
            let ok = member.is_some_and(|m| {
                m["state"] == state
                    && (state != "alive" || (m["linked"] == true && !status["leader"].is_null()))
            });
            if ok {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "node {at} never saw node {id} {state}: {status}\n{}",
                self.node(at).log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs one process per entry of `placement` (a node id), all at once, with `args(role)`,
    /// and returns their outcomes in role order.
    pub fn run_all(
        &self,
        program: &Path,
        placement: &[usize],
        args: impl Fn(usize) -> Vec<String>,
    ) -> Vec<Outcome> {
        let running: Vec<Running> = placement
            .iter()
            .enumerate()
            .map(|(role, &node)| {
                let mut cmd = self.command(node, program);
                cmd.args(args(role));
                Running::start(cmd)
            })
            .collect();
        running.into_iter().map(Running::finish).collect()
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// Waits for `child`, killing it and failing the test if it outlives `limit`.
pub fn wait_limited(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}: hung");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Reads lines from a child's stdout until one equals `want` (within a limit).
pub fn wait_for_line(child: &mut Child, want: &str) {
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = Instant::now() + PROGRAM_LIMIT;
    loop {
        assert!(Instant::now() < deadline, "no line {want:?} in time");
        match stdout.read(&mut byte) {
            Ok(0) => panic!("program closed stdout before printing {want:?}"),
            Ok(_) if byte[0] == b'\n' => {
                if String::from_utf8_lossy(&line) == want {
                    return;
                }
                line.clear();
            }
            Ok(_) => line.push(byte[0]),
            Err(e) => panic!("reading program output: {e}"),
        }
    }
}

/// A raw connection to `d`'s socket, reads timing out after 10 s (for tests that speak the
/// protocol by hand).
pub fn raw_client(d: &Daemon) -> std::os::unix::net::UnixStream {
    let s = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect to dsmd");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s
}

/// Hosts on one machine: network namespaces joined by veth links to a bridge, so that a host's
/// link can be cut (`ip link set … down`) and healed. Removed when dropped.
pub struct Netns {
    /// The namespaces, host `i + 1` at index `i`.
    pub names: Vec<String>,
    bridge: String,
    veths: Vec<String>,
    subnet: u32,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// `n` hosts, 10.231.X.1 … 10.231.X.n.
    pub fn new(n: usize) -> Netns {
        // Unique among this machine's test processes, and among the tests of this one (they
        // run on threads of one process).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = (std::process::id() % 1000) * 10 + seq % 10;
        let subnet = (std::process::id() + seq * 37) % 250;
        let bridge = format!("dsmbr{tag}");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["link", "set", &bridge, "up"]);
        let mut names = Vec::new();
        let mut veths = Vec::new();
        for i in 1..=n {
            let ns = format!("dsm{tag}h{i}");
            let veth = format!("dsmv{tag}h{i}");
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip(&["link", "set", &veth, "master", &bridge, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.231.{subnet}.{i}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            names.push(ns);
            veths.push(veth);
        }
        Netns {
            names,
            bridge,
            veths,
            subnet,
        }
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("10.231.{}.{i}", self.subnet)
    }

    /// Cuts host `i` off from every other (its link to the bridge goes down).
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.veths[i - 1], "down"]);
    }

    /// Heals host `i`'s link.
    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.veths[i - 1], "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// One frame's payload from `s`.
pub fn read_frame(s: &mut impl Read) -> Vec<u8> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).expect("a frame header");
    let mut body = vec![0u8; u32::from_le_bytes(header) as usize];
    s.read_exact(&mut body).expect("a frame body");
    body
}

/// A session and one channel of it, speaking the protocol by hand.
pub fn attach(
    d: &Daemon,
) -> (
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixStream,
) {
    use dsm_proto::frame;
    use dsm_proto::hello::{Hello, HelloReply, Role};
    use std::io::Write;
    let mut session = raw_client(d);
    session
        .write_all(&frame::encode(&Hello::new(Role::Session { pid: 1 })).unwrap())
        .unwrap();
    let body = read_frame(&mut session);
    let welcome: HelloReply<'_> = frame::decode(&body).unwrap();
    let HelloReply::Welcome { session: id, .. } = welcome else {
        panic!("refused: {welcome:?}");
    };
    let mut chan = raw_client(d);
    let hello = Hello::new(Role::Channel {
        session: id,
        tid: 2,
    });
    chan.write_all(&frame::encode(&hello).unwrap()).unwrap();
    read_frame(&mut chan);
    (session, chan)
}

/// Node 2 of a plain (`--insecure`) two-node cluster whose node 1 is the test itself, with
/// `manager`: the daemon, and a function that connects to it as node 1 and says node 1's hello.
/// For tests of the core's validation of peer messages, below the link's authentication.
pub fn played_peer(manager: &str) -> (Daemon, impl Fn() -> std::net::TcpStream) {
    use dsm_proto::peer::{PeerFrame, PeerHello};
    use dsm_proto::{frame, NodeId, MAGIC, PROTOCOL_VERSION};
    use std::io::Write;
    let (fake, port) = (free_port(), free_port());
    // Node 2 waits for node 1 to dial it.
    let d = Daemon::start_with(
        2,
        &[
            "--manager",
            manager,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--peer",
            &format!("1=127.0.0.1:{fake}"),
            "--insecure",
        ],
    );
    let hello = frame::encode(&PeerFrame::Hello(PeerHello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        cluster: "dsm".into(),
        node: NodeId(1),
        manager: manager.into(),
        incarnation: 1,
        formed: false,
        peer_incarnation: 0,
        received: 0,
        listen: None,
        roster: Vec::new(),
    }))
    .expect("hello encodes");
    let connect = move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        s.write_all(&hello).expect("hello");
        s
    };
    (d, connect)
}
