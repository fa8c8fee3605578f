//! Command line of `dsmd`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{CommandFactory, Parser};
use dsm_core::ManagerKind;
use dsm_proto::NodeId;

/// Default Unix socket clients and `dsmctl` connect to.
pub const DEFAULT_SOCKET: &str = "/run/dsm/dsmd.sock";

/// The config file read when no `--config` is given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/dsm/dsmd.toml";

/// dsmd — the dsm daemon. Run one per host.
///
/// It holds this host's copies of distributed shared memory pages and serves the processes that
/// run with LD_PRELOAD=libdsm.so: they connect to its Unix socket (--socket, or DSM_SOCKET on
/// their side). Logging goes to stderr; set RUST_LOG=debug to see every fault.
///
/// A one-node cluster:
///
///   dsmd --node-id 1 --socket /tmp/dsm/1.sock
///
/// Three hosts: every node lists the others, with the same --manager, --cluster and key.
///
///   host1$ dsmd --node-id 1 --listen 0.0.0.0:7700 --peer 2=10.0.0.2:7700 --peer 3=10.0.0.3:7700
///   host2$ dsmd --node-id 2 --listen 0.0.0.0:7700 --peer 1=10.0.0.1:7700 --peer 3=10.0.0.3:7700
///   host3$ dsmd --node-id 3 --listen 0.0.0.0:7700 --peer 1=10.0.0.1:7700 --peer 2=10.0.0.2:7700
///
/// (each with --key-file, the same on every host: see `dsmctl keygen`). A fourth host joins
/// the running cluster through any member:
///
///   host4$ dsmd --node-id 4 --listen 0.0.0.0:7700 --join 10.0.0.1:7700
///
/// The members keep the segment directory and membership on Raft: any majority serves it.
/// `dsmctl members` shows them; `dsmctl` shows what a node does.
///
/// Every flag can also be set in a TOML file (--config FILE, or /etc/dsm/dsmd.toml if it
/// exists), under the flag's name without the dashes; flags, and environment variables, win
/// over the file:
///
///   node-id = 1
///   listen = "0.0.0.0:7700"
///   peer = ["2=10.0.0.2:7700", "3=10.0.0.3:7700"]
///   key-file = "/etc/dsm/cluster.key"
#[derive(Debug, Parser)]
#[command(version, about, long_about, verbatim_doc_comment)]
pub struct Config {
    /// This node's id, unique in the cluster: 1 to 64.
    #[arg(long, value_name = "N", value_parser = parse_node_id)]
    pub node_id: NodeId,

    /// Address to accept peer daemons on (TCP), e.g. 0.0.0.0:7700. Needed once there are peers.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// A peer daemon, as ID=ADDR:PORT. Repeat for each peer; none (and no --join) means a
    /// one-node cluster. The nodes listed together form the cluster when all are up.
    #[arg(long = "peer", value_name = "ID=ADDR:PORT")]
    pub peers: Vec<PeerAddr>,

    /// Join a running cluster through any of its members, at ADDR:PORT (its --listen). The
    /// member tells this node where the others are; the cluster adds it once the leader
    /// reaches it. Repeat to name several members (the first to answer is used). Instead of
    /// --peer.
    #[arg(long = "join", value_name = "ADDR:PORT", conflicts_with = "peers")]
    pub joins: Vec<SocketAddr>,

    /// The address the other nodes reach this one at, if not --listen's (e.g. behind NAT). By
    /// default --listen's; if that is 0.0.0.0, the address this node's connections come from.
    #[arg(long, value_name = "ADDR:PORT")]
    pub advertise: Option<SocketAddr>,

    /// The cluster's name: daemons refuse peers of another cluster.
    #[arg(long, value_name = "NAME", default_value = "dsm")]
    pub cluster: String,

    /// How nodes find a page's owner: dynamic (Li & Hudak's dynamic distributed manager:
    /// probable owners), fixed (page p managed by node p mod N) or central (the lowest node id
    /// manages every page). Every node of a cluster must use the same. Only dynamic takes a
    /// dead node's pages over from surviving copies; under fixed and central, a page whose
    /// owner or manager died raises SIGBUS where it is touched (fixed and central are there to
    /// compare with).
    #[arg(long, value_name = "KIND", default_value = "dynamic", value_parser = parse_manager)]
    pub manager: ManagerKind,

    /// How long a peer may be unreachable before others act: a host whose link stays down for
    /// half of it (at least 1 s) is declared dead, its pages taken over from surviving copies; a
    /// fault still waiting for its page after twice this fails (the process gets SIGBUS and the
    /// log names the page and the peer).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub fault_timeout_ms: u64,

    /// Pages to read ahead of a sequential run of read faults (the window doubles with each
    /// fault of the run up to this); 0 turns read-ahead off. `dsmctl stats` counts the pages
    /// read ahead that no process opened.
    #[arg(long, value_name = "PAGES", default_value_t = 1024)]
    pub readahead: u32,

    /// Other nodes that get a copy of every page written on this node at each release point
    /// (a process-shared mutex or rwlock unlocked, a semaphore posted, a condition signalled,
    /// a barrier reached, a process exiting, and every --replica-interval-ms): the death of
    /// this host then loses no write released before it. 0 turns replication off (a dead
    /// host's pages with no copy elsewhere are lost: SIGBUS).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub replicas: u8,

    /// Replicate pages written since the last release at least this often, for programs that
    /// never release (0: only at release points).
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub replica_interval_ms: u64,

    /// After handling anything, keep polling for this many microseconds before sleeping: the
    /// next message of a burst then finds the daemon awake (a wake-up on another CPU costs tens
    /// of microseconds) at the price of CPU time. Worth it on hosts with a core to spare; 0 (the
    /// default) sleeps at once.
    #[arg(long, value_name = "US", default_value_t = 0)]
    pub poll_us: u64,

    /// The cluster key: a file of at least 32 secret bytes, mode 0600 (or 0400), the same on
    /// every node (make one with `dsmctl keygen`). Peer links are then authenticated and
    /// encrypted (Noise, pre-shared key); a peer without the key never links. Required once
    /// there are peers, unless --insecure.
    #[arg(long, value_name = "PATH", env = "DSM_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// Plain, unauthenticated peer links: anyone who reaches the port can read and forge
    /// memory. For benchmarks on a trusted loopback only.
    #[arg(long)]
    pub insecure: bool,

    /// Unix socket for local processes and dsmctl; its directory is created, the socket is mode
    /// 0660.
    #[arg(long, value_name = "PATH", env = "DSM_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// A TOML file of settings: each key a flag's name without the dashes (node-id = 7,
    /// peer = ["2=host:7700"], insecure = true). Flags and environment variables win over it.
    /// Without this, /etc/dsm/dsmd.toml is read if it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// dsmd's settings: the command line over the config file (see [`merge`]). Errors are for a
/// person, and mean exit status 2.
pub fn load() -> Result<Config, String> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let given = config_flag(&args);
    let path = given
        .clone()
        .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()));
    let args = match &path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
            merge(&args, &text, &|name| std::env::var_os(name).is_some())
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => args,
    };
    Config::try_parse_from(args).map_err(|e| {
        // clap says what is wrong (or prints --help) and exits; a setting may come from the file.
        if let Some(path) = path.filter(|_| e.use_stderr()) {
            eprintln!(
                "dsmd: settings from {} and the command line, together:",
                path.display()
            );
        }
        e.exit()
    })
}

/// The `--config FILE` (or `--config=FILE`) on a command line.
fn config_flag(args: &[std::ffi::OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// The command line `args` with the settings of the TOML `text` put before it, except those
/// the command line or the environment (`env_set(NAME)`) gives: each key is a flag's long
/// name; a boolean sets a switch, an array repeats a flag that takes several. An unknown key,
/// or a value of the wrong shape, is an error that names it.
pub fn merge(
    args: &[std::ffi::OsString],
    text: &str,
    env_set: &dyn Fn(&str) -> bool,
) -> Result<Vec<std::ffi::OsString>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let command = Config::command();
    let on_line = |long: &str| {
        args.iter().skip(1).any(|a| {
            let a = a.to_string_lossy();
            a == format!("--{long}") || a.starts_with(&format!("--{long}="))
        })
    };
    let mut from_file = Vec::new();
    for (key, value) in &table {
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
            .ok_or_else(|| {
                let keys: Vec<&str> = command
                    .get_arguments()
                    .filter_map(|a| a.get_long())
                    .filter(|l| *l != "config" && *l != "help" && *l != "version")
                    .collect();
                format!(
                    "unknown key `{key}` (the keys are dsmd's flags without the dashes: {})",
                    keys.join(", ")
                )
            })?;
        let env = arg.get_env().and_then(|e| e.to_str());
        if on_line(key) || env.is_some_and(env_set) {
            continue;
        }
        let switch = matches!(arg.get_action(), clap::ArgAction::SetTrue);
        let many = matches!(arg.get_action(), clap::ArgAction::Append);
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            other => Err(format!(
                "`{key}` takes a string or a number, not {}",
                other.type_str()
            )),
        };
        match value {
            toml::Value::Boolean(on) if switch => {
                if *on {
                    from_file.push(format!("--{key}").into());
                }
            }
            _ if switch => return Err(format!("`{key}` is a switch: true or false")),
            toml::Value::Array(items) if many => {
                for item in items {
                    from_file.push(format!("--{key}={}", scalar(item)?).into());
                }
            }
            toml::Value::Array(_) => return Err(format!("`{key}` takes one value, not a list")),
            v => from_file.push(format!("--{key}={}", scalar(v)?).into()),
        }
    }
    let mut merged = args[..1.min(args.len())].to_vec();
    merged.extend(from_file);
    merged.extend(args.iter().skip(1).cloned());
    Ok(merged)
}

impl Config {
    /// The cluster key from `--key-file` (`None` with no peers or `--insecure`), or why not: a
    /// message that says what to do.
    pub fn cluster_key(&self) -> Result<Option<crate::noise::Psk>, String> {
        use std::os::unix::fs::PermissionsExt;
        let Some(path) = &self.key_file else {
            if (self.peers.is_empty() && self.joins.is_empty()) || self.insecure {
                return Ok(None);
            }
            return Err(
                "a cluster with peers needs a cluster key, so that nothing but your daemons can \
                 read or write its memory: make one with `dsmctl keygen > /etc/dsm/cluster.key && \
                 chmod 600 /etc/dsm/cluster.key`, copy it to every node, and start each dsmd with \
                 --key-file /etc/dsm/cluster.key (or --insecure, for benchmarks on a trusted \
                 loopback only)"
                    .into(),
            );
        };
        if self.insecure {
            return Err("--insecure and --key-file contradict each other: give one".into());
        }
        let shown = path.display();
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("cannot read the key file {shown}: {e}"))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "the key file {shown} is readable by others (mode {:o}): chmod 600 {shown}",
                meta.permissions().mode() & 0o777
            ));
        }
        let contents =
            std::fs::read(path).map_err(|e| format!("cannot read the key file {shown}: {e}"))?;
        crate::noise::psk_of(&contents)
            .map(Some)
            .map_err(|e| format!("{shown}: {e}"))
    }
}

/// A `--peer` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// The peer's node id.
    pub node: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl FromStr for PeerAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, addr) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not ID=ADDR:PORT (e.g. 2=10.0.0.2:7700)"))?;
        Ok(PeerAddr {
            node: parse_node_id(id)?,
            addr: addr
                .parse()
                .map_err(|e| format!("`{addr}` is not an ADDR:PORT socket address: {e}"))?,
        })
    }
}

fn parse_manager(s: &str) -> Result<ManagerKind, String> {
    match s {
        "dynamic" => Ok(ManagerKind::Dynamic),
        "fixed" => Ok(ManagerKind::Fixed),
        "central" => Ok(ManagerKind::Central),
        _ => Err(format!(
            "`{s}` is not a manager: use dynamic, fixed or central"
        )),
    }
}

fn parse_node_id(s: &str) -> Result<NodeId, String> {
    match s.parse::<u32>() {
        Ok(n @ 1..=64) => Ok(NodeId(n)),
        _ => Err(format!(
            "`{s}` is not a node id (a number from 1 to 64: a cluster has at most 64 nodes)"
        )),
    }
}

impl Config {
    /// The nodes configured to form the cluster, this one included (just this one with
    /// `--join`: the cluster's founders come with its state).
    pub fn members(&self) -> Vec<NodeId> {
        let mut m: Vec<NodeId> = self.peers.iter().map(|p| p.node).collect();
        m.push(self.node_id);
        m.sort();
        m
    }

    /// Checks what clap cannot: peers are distinct and not this node.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for peer in &self.peers {
            if peer.node == self.node_id {
                return Err(format!(
                    "--peer {}={} names this node's own id; list only the other nodes",
                    peer.node.0, peer.addr
                ));
            }
            if !seen.insert(peer.node) {
                return Err(format!("--peer {} is given twice", peer.node.0));
            }
        }
        if self.peers.len() > 63 {
            return Err("a cluster has at most 64 nodes".into());
        }
        if !self.peers.is_empty() && self.listen.is_none() {
            return Err("--peer needs --listen ADDR:PORT so the peers can reach this node".into());
        }
        if !self.joins.is_empty() && self.listen.is_none() {
            return Err(
                "--join needs --listen ADDR:PORT so the cluster's members can reach this node"
                    .into(),
            );
        }
        if self
            .advertise
            .is_some_and(|a| a.ip().is_unspecified() || a.port() == 0)
        {
            return Err(
                "--advertise must be an address the others can dial (not 0.0.0.0, not port 0)"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_validate() {
        let c = Config::try_parse_from([
            "dsmd",
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:7701",
            "--peer",
            "2=127.0.0.1:7702",
        ])
        .unwrap();
        assert_eq!(c.peers[0].node, NodeId(2));
        assert!(c.validate().is_ok());
        assert!(Config::try_parse_from(["dsmd", "--node-id", "0"]).is_err());
        assert!(Config::try_parse_from(["dsmd", "--node-id", "1", "--peer", "2"]).is_err());
        let own = Config::try_parse_from([
            "dsmd",
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:1",
            "--peer",
            "1=127.0.0.1:2",
        ])
        .unwrap();
        assert!(own.validate().unwrap_err().contains("own id"));
        assert!(Config::try_parse_from(["dsmd", "--node-id", "65"]).is_err());
        let join =
            Config::try_parse_from(["dsmd", "--node-id", "4", "--join", "10.0.0.1:7700"]).unwrap();
        assert!(join.validate().unwrap_err().contains("--listen"));
        assert!(Config::try_parse_from([
            "dsmd",
            "--node-id",
            "4",
            "--join",
            "10.0.0.1:7700",
            "--peer",
            "1=10.0.0.1:7700"
        ])
        .is_err());
    }

    fn from_file(text: &str, line: &[&str], env: &[&str]) -> Result<Config, String> {
        let args: Vec<std::ffi::OsString> = std::iter::once("dsmd")
            .chain(line.iter().copied())
            .map(Into::into)
            .collect();
        let merged = merge(&args, text, &|name| env.contains(&name))?;
        Config::try_parse_from(merged).map_err(|e| e.to_string())
    }

    #[test]
    fn every_flag_has_a_key_in_the_config_file() {
        let c = from_file(
            r#"
            node-id = 7
            listen = "0.0.0.0:7700"
            peer = ["2=10.0.0.2:7700", "3=10.0.0.3:7700"]
            advertise = "10.0.0.1:7700"
            cluster = "prod"
            manager = "fixed"
            fault-timeout-ms = 2000
            readahead = 64
            replicas = 2
            replica-interval-ms = 50
            poll-us = 10
            key-file = "/etc/dsm/cluster.key"
            insecure = false
            socket = "/run/dsm/x.sock"
            "#,
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(c.node_id, NodeId(7));
        assert_eq!(c.listen, Some("0.0.0.0:7700".parse().unwrap()));
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.advertise, Some("10.0.0.1:7700".parse().unwrap()));
        assert_eq!(c.cluster, "prod");
        assert_eq!(c.manager, ManagerKind::Fixed);
        assert_eq!(
            (
                c.fault_timeout_ms,
                c.readahead,
                c.replicas,
                c.replica_interval_ms,
                c.poll_us
            ),
            (2000, 64, 2, 50, 10)
        );
        assert_eq!(c.key_file, Some(PathBuf::from("/etc/dsm/cluster.key")));
        assert!(!c.insecure);
        assert_eq!(c.socket, PathBuf::from("/run/dsm/x.sock"));
        let c = from_file(
            "node-id = 4\njoin = [\"10.0.0.1:7700\"]\ninsecure = true\n",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(c.joins.len(), 1);
        assert!(c.insecure);
    }

    #[test]
    fn flags_and_the_environment_win_over_the_file() {
        let text = "node-id = 7\nsocket = \"/a.sock\"\npeer = [\"2=10.0.0.2:7700\"]\n";
        let c = from_file(text, &["--node-id=8", "--peer", "3=10.0.0.3:7700"], &[]).unwrap();
        assert_eq!(c.node_id, NodeId(8));
        assert_eq!(
            c.peers.len(),
            1,
            "the command line's peers replace the file's"
        );
        assert_eq!(c.peers[0].node, NodeId(3));
        assert_eq!(c.socket, PathBuf::from("/a.sock"));
        // DSM_SOCKET set: the file's socket is not used (clap reads the variable itself).
        let merged = merge(&["dsmd".into()], text, &|name| name == "DSM_SOCKET").unwrap();
        assert!(!merged
            .iter()
            .any(|a| a.to_string_lossy().starts_with("--socket")));
    }

    #[test]
    fn a_wrong_key_or_shape_is_named() {
        let err = |text: &str| from_file(text, &[], &[]).unwrap_err();
        assert!(err("node-idd = 7").contains("unknown key `node-idd`"));
        assert!(err("config = \"x\"").contains("unknown key `config`"));
        assert!(err("node-id = 7\ninsecure = \"yes\"").contains("`insecure` is a switch"));
        assert!(err("node-id = [7]").contains("`node-id` takes one value"));
        assert!(err("node-id = 7\ncluster = 1.5").contains("`cluster` takes a string or a number"));
        assert!(
            err("node-id = ").contains("node-id"),
            "a TOML error says where"
        );
    }
}
