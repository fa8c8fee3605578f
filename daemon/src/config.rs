//! Command line of `dsmd`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Parser;
use dsm_core::ManagerKind;
use dsm_proto::NodeId;

/// Default Unix socket clients and `dsmctl` connect to.
pub const DEFAULT_SOCKET: &str = "/run/dsm/dsmd.sock";

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
    /// fault of the run up to this); 0 turns read-ahead off.
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
}
