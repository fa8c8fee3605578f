//! `dsmctl`: asks a node's `dsmd` what it is doing and prints it, as tables for people or as
//! JSON for tools.

mod client;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dsm_proto::ctl::{CtlReply, CtlRequest, Status};

/// dsmctl — look inside a running dsm node.
///
/// Connects to the dsmd on this host (--socket, or DSM_SOCKET) and shows its state.
///
/// Examples:
///
///   dsmctl status
///   dsmctl --socket /tmp/dsm/1.sock --json status
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let request = match cli.command {
        Command::Status => CtlRequest::Status,
    };
    let reply = match client::ask(&cli.socket, &request) {
        Ok(reply) => reply,
        Err(e) => {
            eprintln!("dsmctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match reply {
        CtlReply::Status(status) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).expect("serializable")
                );
            } else {
                print_status(&status);
            }
            ExitCode::SUCCESS
        }
        CtlReply::Error(e) => {
            eprintln!("dsmctl: dsmd answered: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_status(s: &Status) {
    println!(
        "node {} · dsmd {} · up {}",
        s.node.0,
        s.version,
        table::duration(s.uptime_ms)
    );
    let listen = if s.listen.is_empty() { "-" } else { &s.listen };
    println!("socket {} · peers listen on {listen}", s.socket);
    if s.peers.is_empty() {
        println!("peers: none (one-node cluster)");
    } else {
        let rows = s
            .peers
            .iter()
            .map(|p| {
                vec![
                    p.node.0.to_string(),
                    p.addr.clone(),
                    if p.connected { "connected" } else { "down" }.into(),
                ]
            })
            .collect();
        println!();
        table::print(&["PEER", "ADDRESS", "STATE"], rows);
    }
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
