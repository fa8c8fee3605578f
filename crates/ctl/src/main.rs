//! `dsmctl`: asks a node's `dsmd` what it is doing and prints it, as tables for people or as
//! JSON for tools.

mod client;
mod prom;
mod table;
mod top;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dsm_proto::ctl::{
    ClusterSegment, CtlReply, CtlRequest, LockStatus, Pages, Percentiles, Stats, Status,
};

/// dsmctl — look inside a running dsm node.
///
/// Connects to the dsmd on this host (--socket, or DSM_SOCKET) and shows its state.
///
/// Examples:
///
///   dsmctl status
///   dsmctl peers
///   dsmctl members
///   dsmctl pages /mydata
///   dsmctl --socket /tmp/dsm/1.sock --json stats
///   dsmctl run -- ./my_program arg1 arg2
#[derive(Debug, Parser)]
#[command(version, about, long_about, verbatim_doc_comment)]
struct Cli {
    /// The daemon's Unix socket (as given to dsmd --socket).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "DSM_SOCKET",
        default_value = "/run/dsm/dsmd.sock"
    )]
    socket: PathBuf,

    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Node id, peers, segments (size, base address, pages resident/readable/writable) and
    /// attached processes.
    Status,
    /// Each peer: connected or not, since when, messages and bytes each way.
    Peers,
    /// The cluster's members as agreed (Raft): node, address, incarnation, alive or dead, and
    /// the leader.
    Members,
    /// Each page of a segment on this node: access, owner (or probable owner), copyset, and
    /// replicas: as the owner, the version last replicated and whether it was written since;
    /// as a replica node, the replica it keeps (any segment of the cluster, opened here or not).
    Pages {
        /// The segment: /name, name, or its id in hex.
        segment: String,
    },
    /// Faults by kind (served by this node's daemon, or needing a peer; read, write,
    /// upgrade; faults the state table answers in the process never reach the daemon and are
    /// not counted), requests forwarded,
    /// invalidations, page transfers, read-ahead (pages asked for; of those lost since, opened
    /// by a process or never: wasted), fault latency percentiles, and lock-service counters.
    ///
    /// With --prometheus: the Prometheus text format (counters, gauges, latency histograms,
    /// per-peer traffic; labelled with the node), e.g. for node_exporter's textfile collector:
    ///
    ///   dsmctl stats --prometheus > /var/lib/node_exporter/dsm.prom
    #[command(verbatim_doc_comment)]
    Stats {
        /// Print the Prometheus text exposition format.
        #[arg(long, conflicts_with = "json")]
        prometheus: bool,
    },
    /// The mutexes, conditions, barriers, rwlocks and semaphores this node is home to (the
    /// objects in segments it created): who holds each and how many wait. Ask every node to see
    /// them all.
    Locks,
    /// A live view of this node, refreshed every --interval-ms: faults per second by kind,
    /// page traffic, fault latency, bytes per second to and from each peer, the pages faulted
    /// on most, and lock waits. Ctrl-C ends it.
    Top {
        /// Refresh period.
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        interval_ms: u64,
        /// Stop after this many refreshes (default: until interrupted).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Every segment of the cluster (from the directory every node keeps): name, kind (posix,
    /// sysv, semaphore), size, owner, mode, the nodes where a process opened or maps it, and
    /// the pages this node holds of it. Like `ls -l /dev/shm` or `ipcs -m`, cluster-wide.
    Segments,
    /// Remove segments' names cluster-wide, as shm_unlink (or `rm /dev/shm/NAME`) would, with
    /// your permissions: the owner or root. The memory goes once no process maps it.
    ///
    ///   dsmctl rm /mydata /sem.ready
    #[command(verbatim_doc_comment)]
    Rm {
        /// Names (`/name` or `name`; a SysV segment is `/sysv:0xKEY`, a named semaphore
        /// `/sem.NAME`).
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Print a new cluster key (32 random bytes, in hex) for dsmd --key-file. Needs no daemon:
    ///
    ///   dsmctl keygen > /etc/dsm/cluster.key && chmod 600 /etc/dsm/cluster.key
    ///
    /// then copy the file to every node.
    #[command(verbatim_doc_comment)]
    Keygen,
    /// Run a program on this node's dsm: sets LD_PRELOAD to the libdsm.so installed beside
    /// dsmctl (../lib/libdsm.so, or libdsm.so in the same directory as in target/release) and
    /// DSM_SOCKET to --socket, checks that the daemon answers (waiting up to 3 s for one just
    /// started), then runs PROG in dsmctl's place
    /// (its exit status is the program's). Refuses to run it when no daemon answers: the
    /// program would otherwise share memory only on this host.
    ///
    ///   dsmctl run -- ./writer
    ///   dsmctl --socket /tmp/dsm/2.sock run -- python3 reader.py
    #[command(verbatim_doc_comment)]
    Run {
        /// The shim to preload, if not the one beside dsmctl.
        #[arg(long, value_name = "PATH", env = "DSM_LIB")]
        lib: Option<PathBuf>,
        /// The program and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, value_name = "PROG")]
        command: Vec<std::ffi::OsString>,
    },
}

/// The libdsm.so beside this dsmctl: `PREFIX/lib/libdsm.so` for `PREFIX/bin/dsmctl`, or in
/// the same directory (a cargo build's `target/release`).
fn find_lib() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find dsmctl's own path: {e}"))?;
    let dir = exe.parent().unwrap_or(std::path::Path::new("/"));
    let candidates = [dir.join("../lib/libdsm.so"), dir.join("libdsm.so")];
    candidates
        .iter()
        .find(|p| p.is_file())
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
        .ok_or_else(|| {
            format!(
                "no libdsm.so beside dsmctl (looked for {} and {}): pass --lib PATH or set DSM_LIB",
                candidates[0].display(),
                candidates[1].display()
            )
        })
}

/// `dsmctl run`: on success does not return (the program replaces dsmctl).
fn run(socket: &std::path::Path, lib: Option<PathBuf>, command: &[std::ffi::OsString]) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let lib = match lib.map_or_else(find_lib, Ok) {
        Ok(lib) if lib.is_file() => lib,
        Ok(lib) => {
            eprintln!("dsmctl run: {} is not a file", lib.display());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("dsmctl run: {e}");
            return ExitCode::from(2);
        }
    };
    // A daemon started just before (`dsmd … & dsmctl run …`) gets a moment to listen.
    let mut answer = client::ask(socket, &CtlRequest::Status);
    let started = std::time::Instant::now();
    while answer.is_err() && started.elapsed() < std::time::Duration::from_secs(3) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        answer = client::ask(socket, &CtlRequest::Status);
    }
    if let Err(e) = answer {
        eprintln!(
            "dsmctl run: {e}; not running {} (without a daemon it would share memory only on this host)",
            command[0].to_string_lossy()
        );
        return ExitCode::FAILURE;
    }
    let socket = socket
        .canonicalize()
        .unwrap_or_else(|_| socket.to_path_buf());
    let mut preload = lib.into_os_string();
    if let Some(before) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(before);
    }
    let e = std::process::Command::new(&command[0])
        .args(&command[1..])
        .env("LD_PRELOAD", preload)
        .env("DSM_SOCKET", socket)
        .exec();
    eprintln!(
        "dsmctl run: cannot run {}: {e}",
        command[0].to_string_lossy()
    );
    ExitCode::from(127)
}

/// 32 bytes from the kernel's random source, as 64 hex digits.
fn keygen() -> std::io::Result<String> {
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    Ok(key.iter().map(|b| format!("{b:02x}")).collect())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Run { lib, command } = &cli.command {
        return run(&cli.socket, lib.clone(), command);
    }
    if let Command::Top { interval_ms, count } = &cli.command {
        return match top::run(&cli.socket, *interval_ms, *count) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dsmctl top: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Rm { names } = &cli.command {
        let mut failed = false;
        for name in names {
            let request = CtlRequest::Remove { name: name.clone() };
            match client::ask(&cli.socket, &request) {
                Ok(CtlReply::Removed) => println!("removed {name}"),
                Ok(CtlReply::Error(e)) => {
                    eprintln!("dsmctl rm: {name}: {e}");
                    failed = true;
                }
                Ok(_) => {
                    eprintln!("dsmctl rm: {name}: unexpected answer");
                    failed = true;
                }
                Err(e) => {
                    eprintln!("dsmctl rm: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    if let Command::Keygen = cli.command {
        return match keygen() {
            Ok(key) => {
                println!("{key}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dsmctl: cannot read random bytes: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let request = match &cli.command {
        Command::Keygen | Command::Run { .. } | Command::Rm { .. } | Command::Top { .. } => {
            unreachable!("answered above")
        }
        Command::Segments => CtlRequest::Segments,
        Command::Status | Command::Peers | Command::Members => CtlRequest::Status,
        Command::Pages { segment } => CtlRequest::Pages {
            segment: segment.clone(),
        },
        Command::Stats { .. } => CtlRequest::Stats,
        Command::Locks => CtlRequest::Locks,
    };
    let reply = match client::ask(&cli.socket, &request) {
        Ok(reply) => reply,
        Err(e) => {
            eprintln!("dsmctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = |value: &dyn erased::Json| println!("{}", value.pretty());
    match (reply, &cli.command) {
        (CtlReply::Status(status), Command::Peers) => {
            if cli.json {
                json(&status.peers);
            } else {
                print_peers(&status);
            }
        }
        (CtlReply::Status(status), Command::Members) => {
            if cli.json {
                json(&serde_json::json!({
                    "leader": status.leader.map(|l| l.0),
                    "term": status.term,
                    "applied": status.applied,
                    "members": status.members,
                }));
            } else {
                print_members(&status);
            }
        }
        (CtlReply::Status(status), _) => {
            if cli.json {
                json(&status);
            } else {
                print_status(&status);
            }
        }
        (CtlReply::Pages(pages), _) => {
            if cli.json {
                json(&pages);
            } else {
                print_pages(&pages);
            }
        }
        (CtlReply::Stats(stats), Command::Stats { prometheus: true }) => {
            match client::ask(&cli.socket, &CtlRequest::Status) {
                Ok(CtlReply::Status(status)) => print!("{}", prom::render(&stats, &status)),
                Ok(_) => {
                    eprintln!("dsmctl: unexpected answer to a status request");
                    return ExitCode::FAILURE;
                }
                Err(e) => {
                    eprintln!("dsmctl: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        (CtlReply::Stats(stats), _) => {
            if cli.json {
                json(&stats);
            } else {
                print_stats(&stats);
            }
        }
        (CtlReply::Locks(locks), _) => {
            if cli.json {
                json(&locks);
            } else {
                print_locks(&locks);
            }
        }
        (CtlReply::Segments(segments), _) => {
            if cli.json {
                json(&segments);
            } else {
                print_segments(&segments);
            }
        }
        (CtlReply::Removed, _) => {}
        (CtlReply::Error(e), _) => {
            eprintln!("dsmctl: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// JSON output of any reply part.
mod erased {
    /// Something `--json` can print.
    pub trait Json {
        /// Pretty JSON.
        fn pretty(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn pretty(&self) -> String {
            serde_json::to_string_pretty(self).expect("serializable")
        }
    }
}

fn print_members(s: &Status) {
    match s.leader {
        Some(l) => println!(
            "leader: node {} (term {}, log index {})",
            l.0, s.term, s.applied
        ),
        None => println!(
            "leader: none known (term {}): a majority of the members must be up and linked",
            s.term
        ),
    }
    if s.members.is_empty() {
        println!("members: none yet (this node has not joined a cluster)");
        return;
    }
    let rows = s
        .members
        .iter()
        .map(|m| {
            vec![
                m.node.0.to_string(),
                m.addr.clone(),
                format!("{:#x}", m.incarnation),
                m.state.clone(),
                if m.node == s.node {
                    "this node".into()
                } else if m.linked {
                    "linked".into()
                } else {
                    "not linked".into()
                },
            ]
        })
        .collect();
    table::print(&["NODE", "ADDRESS", "INCARNATION", "STATE", "LINK"], rows);
}

fn print_peers(s: &Status) {
    if s.peers.is_empty() {
        println!("peers: none (one-node cluster)");
        return;
    }
    let rows = s
        .peers
        .iter()
        .map(|p| {
            vec![
                p.node.0.to_string(),
                p.addr.clone(),
                match p.up_for_ms {
                    Some(ms) => format!("up {}", table::duration(ms)),
                    None if p.problem.is_empty() => "down".into(),
                    None => format!("down: {}", p.problem),
                },
                p.messages_out.to_string(),
                p.messages_in.to_string(),
                table::bytes(p.bytes_out),
                table::bytes(p.bytes_in),
            ]
        })
        .collect();
    table::print(
        &[
            "PEER",
            "ADDRESS",
            "STATE",
            "MSGS OUT",
            "MSGS IN",
            "BYTES OUT",
            "BYTES IN",
        ],
        rows,
    );
}

fn print_pages(p: &Pages) {
    println!(
        "{} ({:#x}): {} pages",
        table::clean(&p.segment),
        p.id,
        p.pages.len()
    );
    let rows = p
        .pages
        .iter()
        .map(|g| {
            let copyset: Vec<String> = g.copyset.iter().map(u32::to_string).collect();
            vec![
                g.page.to_string(),
                g.access.to_string(),
                g.local.to_string(),
                if g.owner {
                    "this node".into()
                } else {
                    format!("node {} (probable)", g.probable_owner)
                },
                if copyset.is_empty() {
                    "-".into()
                } else {
                    copyset.join(",")
                },
                replication(g),
                if g.busy { "busy" } else { "" }.into(),
            ]
        })
        .collect();
    table::print(
        &[
            "PAGE", "ACCESS", "LOCAL", "OWNER", "COPYSET", "REPLICAS", "",
        ],
        rows,
    );
}

/// What a page's REPLICAS column says: as owner, the last version replicated from here (and
/// whether it is written since, or still on its way); as a replica node, what it keeps.
fn replication(g: &dsm_proto::ctl::PageInfo) -> String {
    let mut parts = Vec::new();
    if let Some(v) = g.replicated {
        parts.push(format!(
            "v{v} {}",
            if g.replicating { "sending" } else { "sent" }
        ));
    }
    if g.dirty {
        parts.push("written since".to_string());
    }
    if let Some((epoch, version)) = g.replica {
        parts.push(format!("keeps e{epoch} v{version}"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn print_segments(segments: &[ClusterSegment]) {
    if segments.is_empty() {
        println!("no segments in the cluster");
        return;
    }
    table::print(
        &[
            "NAME",
            "KIND",
            "SIZE",
            "OWNER",
            "MODE",
            "NODES",
            "PAGES HERE",
        ],
        segments
            .iter()
            .map(|s| {
                vec![
                    s.name
                        .clone()
                        .unwrap_or_else(|| format!("({:#x}, unlinked)", s.id)),
                    s.kind.clone(),
                    table::bytes(s.size),
                    format!("{}:{}", s.uid, s.gid),
                    format!("{:04o}", s.mode),
                    if s.attached.is_empty() {
                        "-".into()
                    } else {
                        s.attached
                            .iter()
                            .map(|n| n.0.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    },
                    s.pages_here.map_or("-".into(), |p| p.to_string()),
                ]
            })
            .collect(),
    );
}

fn print_locks(locks: &[LockStatus]) {
    if locks.is_empty() {
        println!("no synchronization object has state on this node");
        return;
    }
    table::print(
        &["OBJECT", "KIND", "HOLDERS", "WAITERS", "DETAIL"],
        locks
            .iter()
            .map(|l| {
                vec![
                    l.object.clone(),
                    l.kind.clone(),
                    if l.holders.is_empty() {
                        "-".into()
                    } else {
                        l.holders.join(", ")
                    },
                    l.waiters.to_string(),
                    l.detail.clone(),
                ]
            })
            .collect(),
    );
}

fn print_stats(s: &Stats) {
    println!("node {} · {} manager", s.node.0, s.manager);
    println!();
    table::print(
        &["FAULTS", "READ", "WRITE", "UPGRADE"],
        vec![
            vec![
                "served by this node".into(),
                s.local_reads.to_string(),
                s.local_writes.to_string(),
                "-".into(),
            ],
            vec![
                "remote".into(),
                s.remote_reads.to_string(),
                s.remote_writes.to_string(),
                s.upgrades.to_string(),
            ],
        ],
    );
    println!(
        "failed faults: {} (no surviving copy: {})",
        s.failed, s.lost
    );
    if s.located > 0 {
        println!(
            "pages whose owner died: located {}, taken over from a surviving copy {}",
            s.located, s.adopted
        );
    }
    if s.prefetched > 0 {
        println!(
            "read-ahead: pages asked for {}; lost since, opened by a process {}, never opened {} (wasted); held, not opened yet {}",
            s.prefetched, s.prefetch_opened, s.prefetch_wasted, s.prefetch_unopened
        );
    }
    if s.replicas_sent + s.replicas_held + s.from_replica > 0 {
        println!(
            "replicas: sent {}, held for other nodes {}, pages taken over from one here {}",
            s.replicas_sent, s.replicas_held, s.from_replica
        );
    }
    println!();
    table::print(
        &["MESSAGES", "COUNT"],
        vec![
            vec!["sent".into(), s.messages_sent.to_string()],
            vec!["requests forwarded".into(), s.forwarded.to_string()],
            vec![
                "invalidations sent".into(),
                s.invalidations_sent.to_string(),
            ],
            vec!["pages sent".into(), s.pages_sent.to_string()],
            vec!["pages received".into(), s.pages_received.to_string()],
            vec!["local revocations".into(), s.revocations.to_string()],
        ],
    );
    println!();
    table::print(
        &["LOCKS AND BARRIERS", "COUNT"],
        vec![
            vec!["requests".into(), s.sync_requests.to_string()],
            vec!["served as home".into(), s.sync_served.to_string()],
            vec!["messages sent".into(), s.sync_messages.to_string()],
            vec!["objects held here".into(), s.sync_objects.to_string()],
            vec![
                "mutexes delegated / taken back".into(),
                format!("{} / {}", s.sync_delegations, s.sync_recalls),
            ],
        ],
    );
    println!();
    let row = |label: &str, p: &Percentiles| {
        vec![
            label.to_string(),
            p.count.to_string(),
            p.p50.to_string(),
            p.p90.to_string(),
            p.p99.to_string(),
            p.max.to_string(),
        ]
    };
    table::print(
        &["FAULT LATENCY (µs)", "SAMPLES", "P50", "P90", "P99", "MAX"],
        vec![
            row("served at once", &s.local_latency_us),
            row("waited for a peer", &s.remote_latency_us),
            row("  read → asked a peer", &s.remote_stages_us[0]),
            row("  asked → grant came", &s.remote_stages_us[1]),
            row("  grant → answered", &s.remote_stages_us[2]),
        ],
    );
}

fn print_status(s: &Status) {
    println!(
        "node {} · dsmd {} · up {}",
        s.node.0,
        s.version,
        table::duration(s.uptime_ms)
    );
    let listen = if s.listen.is_empty() { "-" } else { &s.listen };
    println!(
        "socket {} · peers listen on {}",
        table::clean(&s.socket),
        table::clean(listen)
    );
    println!();
    print_peers(s);
    println!();
    if s.segments.is_empty() {
        println!("segments: none");
    } else {
        let rows = s
            .segments
            .iter()
            .map(|g| {
                vec![
                    g.name
                        .clone()
                        .unwrap_or_else(|| format!("({:#x}, unlinked)", g.id)),
                    table::bytes(g.size),
                    format!("{:#x}", g.base),
                    format!("{:04o}", g.mode),
                    g.pages.to_string(),
                    g.resident.to_string(),
                    g.readable.to_string(),
                    g.writable.to_string(),
                    g.mappings.to_string(),
                ]
            })
            .collect();
        table::print(
            &[
                "SEGMENT", "SIZE", "BASE", "MODE", "PAGES", "RESIDENT", "READ", "WRITE", "MAPS",
            ],
            rows,
        );
    }
    println!();
    if s.processes.is_empty() {
        println!("processes: none attached");
    } else {
        let rows = s
            .processes
            .iter()
            .map(|p| {
                vec![
                    p.pid.to_string(),
                    p.session.to_string(),
                    p.faults.to_string(),
                    if p.segments.is_empty() {
                        "-".into()
                    } else {
                        p.segments.join(",")
                    },
                ]
            })
            .collect();
        table::print(&["PID", "SESSION", "FAULTS", "SEGMENTS"], rows);
    }
}
