//! The command line: `run`, `demo`, `check-config`, `id`, `keygen`, `ingest`, `status`, and
//! the operator commands that talk to a running daemon ([`client`]).

mod backup;
mod client;
mod demo;
mod ha;
mod ledger;
mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http::Method;
use serde_json::json;

use crate::admin::api::ADMIN_SOCKET;
use crate::core::identity::Identity;
use crate::node::{self, Node};
use client::{call as admin_call, http_json, plugin_call};
pub use demo::{write_sample, SAMPLE_ID};
use mhc_transport::gossip::cert::{Area, NodeCertificate, SignedCertificate};
use mhc_transport::gossip::revocation;
pub use status::print_status;

/// Where `status`, `ingest` and other operator commands find the daemon when not told.
const DEFAULT_DATA_DIR: &str = "/var/lib/mhc";

/// mhc-node: the MHC distribution daemon (origin, edge, mesh, satellite-uplink).
#[derive(Debug, Parser)]
#[command(name = "mhc-node", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon with a configuration file.
    Run {
        /// The TOML configuration (see `systemd/examples/`).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start a local try-out: an origin serving a built-in sample stream, no config needed.
    Demo {
        /// Port of the viewer plane on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
    },
    /// Load and validate a configuration file, then exit (0 when valid).
    CheckConfig {
        /// The TOML configuration.
        file: PathBuf,
    },
    /// Print a complete, commented example configuration for a role.
    ExampleConfig {
        /// origin | edge | mesh | satellite-uplink
        role: mhc_config::Role,
    },
    /// Print the node's peer id and public key (creating the key on first use).
    Id {
        #[command(flatten)]
        target: KeyTarget,
    },
    /// Create a new ed25519 key file (a publisher or node key) and print its public key.
    Keygen {
        /// Where to write the key (mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Publish an HLS rendition (a folder with one media playlist and its segments) at the
    /// running origin.
    Ingest {
        /// Content id: lowercase letters, digits, `-` and `_`, up to 64.
        #[arg(long)]
        content_id: String,
        /// Title.
        #[arg(long)]
        title: String,
        /// Artist id (who the royalties go to).
        #[arg(long)]
        artist: String,
        /// `audio` or `video` (default: inferred from the segments).
        #[arg(long)]
        media_kind: Option<String>,
        /// RFC 6381 codecs, e.g. `avc1.64001f,mp4a.40.2`.
        #[arg(long)]
        codecs: Option<String>,
        #[command(flatten)]
        daemon: DaemonTarget,
        /// The rendition folder (or its playlist file).
        dir: PathBuf,
    },
    /// Fill a whole content into this node's store now (an edge or mesh node), from its parents.
    Prefetch {
        #[command(flatten)]
        daemon: DaemonTarget,
        /// Blobs fetched at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Content id.
        content_id: String,
    },
    /// Pin a content: a mesh node replicates its latest version and keeps it.
    Pin {
        #[command(flatten)]
        daemon: DaemonTarget,
        /// Content id.
        content_id: String,
    },
    /// Unpin a content.
    Unpin {
        #[command(flatten)]
        daemon: DaemonTarget,
        /// Content id.
        content_id: String,
    },
    /// Create an operator key (signs emergency commands; its public key goes into the nodes'
    /// `trust.operators`).
    OperatorKeygen {
        /// Where to write the key (mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a node certificate with an operator key: the node may join the cluster in this
    /// role, region and place, and advertise these viewer hosts.
    Enroll {
        /// The operator key file (from `mhc-node operator-keygen`; its public key is in the
        /// nodes' `trust.operators`).
        #[arg(long)]
        key: PathBuf,
        /// The node's public key, 64 hex characters (`mhc-node id` on the node prints it).
        #[arg(long)]
        node: String,
        /// origin | edge | mesh | satellite-uplink
        #[arg(long)]
        role: mhc_config::Role,
        /// The region the node must advertise (its configuration's `region`).
        #[arg(long)]
        region: String,
        /// Where the node may say it is, `LAT,LON` in degrees (its configuration's `location`).
        #[arg(long, value_parser = parse_lat_lon)]
        location: Option<(f64, f64)>,
        /// How far from `--location` it may be, km.
        #[arg(long, default_value_t = 50.0, requires = "location")]
        radius_km: f64,
        /// A viewer-plane host the node may advertise, `HOST` or `HOST:PORT` (repeatable); the
        /// first is what it advertises when its bound address is not among them.
        #[arg(long)]
        http: Vec<String>,
        /// Days the certificate is valid from now.
        #[arg(long, default_value_t = 365)]
        valid_days: u32,
        /// The certificate's serial number (default: the current time in ms, so each one the
        /// operator issues differs).
        #[arg(long)]
        serial: Option<u64>,
        /// Where to write the certificate (the node reads `data_dir/node.cert`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Revoke a node's key with an operator key: every member refuses it from then on, at
    /// every door, also after restarts. Sent to one node, which gossips it to the cluster.
    Revoke {
        /// The operator key file (its public key is in the nodes' `trust.operators`).
        #[arg(long)]
        key: PathBuf,
        /// The revoked node's public key, 64 hex characters.
        #[arg(long)]
        node: String,
        /// Why, for the other operators (at most 256 bytes).
        #[arg(long, default_value = "revoked by an operator")]
        reason: String,
        /// Send to this node's viewer plane (`http://host:port`, `POST /v1/revocations`)
        /// instead of the local daemon's admin socket.
        #[arg(long)]
        node_url: Option<String>,
        #[command(flatten)]
        daemon: DaemonTarget,
    },
    /// Switch the cluster into or out of emergency broadcast mode with a signed command.
    Emergency {
        #[command(subcommand)]
        action: EmergencyAction,
    },
    /// The origin's verified backups (restic repository format).
    Backup {
        #[command(subcommand)]
        action: backup::BackupAction,
    },
    /// The origin election (`[ha]`): a planned switchover to a standby.
    Ha {
        #[command(subcommand)]
        action: ha::HaAction,
    },
    /// The origin's verifiable ledger of credits and payouts.
    Ledger {
        #[command(subcommand)]
        action: LedgerAction,
    },
    /// Call an origin plugin's admin route: `mhc-node plugin royalty GET balances`.
    Plugin {
        #[command(flatten)]
        daemon: DaemonTarget,
        /// Plugin name (`royalty`, `ledger`, `label`).
        name: String,
        /// HTTP method: GET, POST or DELETE.
        method: String,
        /// Route and query after `/admin/plugins/<name>/`, e.g. `statement/artist-1/2026-11`.
        path: String,
        /// Request body from this file (`-` for stdin): JSON, or CSV for statement imports.
        #[arg(long)]
        body: Option<PathBuf>,
        /// Write the answer to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show the running node's view of itself, its content and the cluster.
    Status {
        #[command(flatten)]
        daemon: DaemonTarget,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `mhc-node ledger …`.
#[derive(Debug, Subcommand)]
pub enum LedgerAction {
    /// Recompute the log from its entries and check every signed tree head: at the running
    /// origin, or offline on an export file (no daemon).
    Verify {
        #[command(flatten)]
        daemon: DaemonTarget,
        /// Verify this JSON export instead of the daemon's ledger.
        #[arg(long)]
        export: Option<PathBuf>,
        /// With `--export`: the origin's public key (hex) the heads must be signed by.
        #[arg(long)]
        public_key: Option<String>,
        /// At the daemon: also check every confirmed anchor against the chain and the log.
        #[arg(long)]
        anchors: bool,
        /// With `--export`: check the export's anchors on the chain at this JSON-RPC URL.
        #[arg(long, requires = "export")]
        rpc_url: Option<String>,
        /// With `--rpc-url`: blocks an anchor needs on top of it (its own counted).
        #[arg(long, default_value_t = 2, requires = "rpc_url")]
        confirmations: u64,
        /// With `--rpc-url`: the anchor account (`0x…`) every anchor must be sent by, instead
        /// of the address the export names.
        #[arg(long, requires = "rpc_url")]
        anchor_address: Option<String>,
    },
    /// The ledger's anchors on chain: tree size, root, state (pending, submitted, confirmed,
    /// replaced), transaction and block.
    Anchors {
        #[command(flatten)]
        daemon: DaemonTarget,
        /// A JSON array of `{tree_size, root, state, tx_hash, block}`.
        #[arg(long)]
        json: bool,
    },
    /// Export entries as JSON (verifiable offline) or CSV.
    Export {
        #[command(flatten)]
        daemon: DaemonTarget,
        /// `json` or `csv`.
        #[arg(long, default_value = "json")]
        format: String,
        /// Entries recorded from this time (Unix ms) ...
        #[arg(long)]
        from_ms: Option<u64>,
        /// ... until this time (excluded).
        #[arg(long)]
        to_ms: Option<u64>,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Inclusion proof of one entry (JSON, with the signed tree head it proves against).
    Proof {
        #[command(flatten)]
        daemon: DaemonTarget,
        /// Entry index.
        index: u64,
        /// Tree size to prove against (default: the latest head).
        #[arg(long)]
        size: Option<u64>,
        /// Where to write it (default stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check an inclusion proof offline against an export: the entry is taken from the export,
    /// the tree head's signature checked with the export's public key.
    VerifyProof {
        /// A JSON export holding the entry.
        #[arg(long)]
        export: PathBuf,
        /// The proof (from `mhc-node ledger proof`).
        #[arg(long)]
        proof: PathBuf,
    },
}

/// `mhc-node emergency …`.
#[derive(Debug, Subcommand)]
pub enum EmergencyAction {
    /// Enter emergency mode: origins and edges stop serving viewers, mesh nodes and downlink
    /// receivers serve, the essential content is replicated and broadcast.
    Activate {
        #[command(flatten)]
        command: CommandTarget,
        /// Why (shown to operators).
        #[arg(long)]
        reason: String,
        /// Content that must stay available (repeatable).
        #[arg(long)]
        essential: Vec<String>,
    },
    /// Back to normal mode.
    Deactivate {
        #[command(flatten)]
        command: CommandTarget,
    },
}

/// Who signs an operator command and which node receives it.
#[derive(Debug, Args)]
pub struct CommandTarget {
    /// The operator key file (from `mhc-node operator-keygen`).
    #[arg(long)]
    key: PathBuf,
    /// Sequence number; default: above both the current time in ms and the node's last.
    #[arg(long)]
    seq: Option<u64>,
    /// Send to this node's viewer plane (`http://host:port`, `POST /v1/emergency`) instead
    /// of the local daemon's admin socket.
    #[arg(long)]
    node: Option<String>,
    #[command(flatten)]
    daemon: DaemonTarget,
}

/// Which node key `id` reads.
#[derive(Debug, Args)]
struct KeyTarget {
    /// The node's configuration file (its `data_dir/node.key`).
    #[arg(long, short, conflicts_with_all = ["data_dir", "key"])]
    config: Option<PathBuf>,
    /// The node's data directory.
    #[arg(long, conflicts_with = "key")]
    data_dir: Option<PathBuf>,
    /// A key file.
    #[arg(long)]
    key: Option<PathBuf>,
}

/// Which running daemon an operator command talks to.
#[derive(Debug, Args)]
pub struct DaemonTarget {
    /// The daemon's configuration file.
    #[arg(long, short, conflicts_with_all = ["data_dir", "admin_socket"])]
    config: Option<PathBuf>,
    /// The daemon's data directory.
    #[arg(long, conflicts_with = "admin_socket")]
    data_dir: Option<PathBuf>,
    /// The admin socket itself.
    #[arg(long)]
    admin_socket: Option<PathBuf>,
}

impl DaemonTarget {
    fn socket(&self) -> anyhow::Result<PathBuf> {
        if let Some(s) = &self.admin_socket {
            return Ok(s.clone());
        }
        if let Some(d) = &self.data_dir {
            return Ok(d.join(ADMIN_SOCKET));
        }
        if let Some(c) = &self.config {
            return Ok(mhc_config::load(c)?.data_dir.join(ADMIN_SOCKET));
        }
        Ok(Path::new(DEFAULT_DATA_DIR).join(ADMIN_SOCKET))
    }
}

const NO_COMMAND: &str = "mhc-node needs to be told what to do; it does not guess a role.
  mhc-node demo                      a local try-out with a built-in sample stream
  mhc-node run --config FILE         run a node (examples in systemd/examples/)
  mhc-node --help                    every command";

impl Cli {
    /// Runs the parsed command line.
    ///
    /// # Errors
    /// Whatever the command fails with, with context.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        run(self)
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Some(command) = cli.command else {
        eprintln!("{NO_COMMAND}");
        return Ok(ExitCode::from(2));
    };
    match command {
        Command::Run { config } => {
            let config = mhc_config::load(&config)?;
            runtime()?.block_on(async {
                let node = Node::start(config).await?;
                node::sd_notify("READY=1");
                wait_for_signal().await;
                node::sd_notify("STOPPING=1");
                node.shutdown().await;
                anyhow::Ok(())
            })?;
        }
        Command::Demo { http_port } => runtime()?.block_on(demo::run(http_port))?,
        Command::CheckConfig { file } => {
            let config = mhc_config::load(&file)?;
            if config.role == mhc_config::Role::Origin {
                crate::plugins::plugin_tables(&config)
                    .map_err(|e| anyhow::anyhow!("{}: {e:#}", file.display()))?;
            }
            println!(
                "{}: ok (role {}, data_dir {})",
                file.display(),
                config.role,
                config.data_dir.display()
            );
        }
        Command::ExampleConfig { role } => print!("{}", mhc_config::example_config(role)),
        Command::Id { target } => {
            let identity = match (&target.key, &target.data_dir, &target.config) {
                (Some(key), _, _) => Identity::load(key)?,
                (None, Some(dir), _) => load_or_create_in(dir)?,
                (None, None, Some(config)) => {
                    load_or_create_in(&mhc_config::load(config)?.data_dir)?
                }
                (None, None, None) => load_or_create_in(Path::new(DEFAULT_DATA_DIR))?,
            };
            println!("peer_id: {}", identity.peer_id());
            println!("public_key: {}", identity.public_key_hex());
        }
        Command::Keygen { out } => {
            let identity = Identity::generate()?;
            identity.write_new(&out)?;
            println!("wrote {}", out.display());
            println!("public_key: {}", identity.public_key_hex());
            println!("peer_id: {}", identity.peer_id());
        }
        Command::Ingest {
            content_id,
            title,
            artist,
            media_kind,
            codecs,
            daemon,
            dir,
        } => {
            let source = std::path::absolute(&dir)
                .with_context(|| format!("resolving {}", dir.display()))?;
            let socket = daemon.socket()?;
            let answer = runtime()?.block_on(admin_call(
                &socket,
                Method::POST,
                "/admin/ingest",
                Some(json!({
                    "content_id": content_id,
                    "title": title,
                    "artist_id": artist,
                    "media_kind": media_kind,
                    "codecs": codecs,
                    "source": source,
                })),
            ))?;
            println!(
                "{} {} v{}: {} segments, {} bytes, manifest {}",
                answer["outcome"].as_str().unwrap_or("?"),
                answer["content_id"].as_str().unwrap_or("?"),
                answer["version"],
                answer["segments"],
                answer["bytes"],
                answer["manifest_hash"].as_str().unwrap_or("?"),
            );
            println!("playlist: {}", answer["playlist"].as_str().unwrap_or("?"));
        }
        Command::Prefetch {
            daemon,
            concurrency,
            content_id,
        } => {
            let socket = daemon.socket()?;
            let answer = runtime()?.block_on(admin_call(
                &socket,
                Method::POST,
                "/admin/prefetch",
                Some(json!({ "content_id": content_id, "concurrency": concurrency })),
            ))?;
            let ms = answer["duration_ms"].as_u64().unwrap_or(0).max(1);
            let bytes = answer["bytes"].as_u64().unwrap_or(0);
            println!(
                "{} v{}: {} blobs ({} already held), {} bytes in {} ms ({:.0} MB/s)",
                answer["content_id"].as_str().unwrap_or("?"),
                answer["version"],
                answer["blobs"],
                answer["already_held"],
                bytes,
                ms,
                bytes as f64 / 1e6 / (ms as f64 / 1e3)
            );
        }
        command @ (Command::Pin { .. } | Command::Unpin { .. }) => {
            let (route, daemon, content_id) = match command {
                Command::Pin { daemon, content_id } => ("/admin/pin", daemon, content_id),
                Command::Unpin { daemon, content_id } => ("/admin/unpin", daemon, content_id),
                _ => unreachable!("matched Pin or Unpin"),
            };
            let socket = daemon.socket()?;
            let answer = runtime()?.block_on(admin_call(
                &socket,
                Method::POST,
                route,
                Some(json!({ "content_id": content_id })),
            ))?;
            println!(
                "{} {}{}",
                answer["content_id"].as_str().unwrap_or("?"),
                if answer["pinned"] == true {
                    "pinned"
                } else {
                    "unpinned"
                },
                if answer["changed"] == true {
                    ""
                } else {
                    " (unchanged)"
                }
            );
        }
        Command::OperatorKeygen { out } => {
            let identity = Identity::generate()?;
            identity.write_new(&out)?;
            println!("wrote {}", out.display());
            println!("operator public_key: {}", identity.public_key_hex());
            println!("add it to every node's trust.operators");
        }
        Command::Enroll {
            key,
            node,
            role,
            region,
            location,
            radius_km,
            http,
            valid_days,
            serial,
            out,
        } => {
            let operator = Identity::load(&key)
                .with_context(|| format!("reading the operator key {}", key.display()))?;
            let node_key = parse_node_key(&node)?;
            let now = mhc_clock::Clock::system().now_ms();
            // A few minutes of slack before now: a node whose clock runs behind accepts it too.
            let not_before_ms = now.saturating_sub(10 * 60 * 1000);
            let cert = NodeCertificate {
                node: node_key,
                role: crate::role::wire_role(role),
                region,
                area: location.map(|(lat, lon)| Area {
                    lat,
                    lon,
                    radius_km,
                }),
                http,
                not_before_ms,
                not_after_ms: now + u64::from(valid_days) * 86_400_000,
                serial: serial.unwrap_or(now),
                operator: [0; 32],
            };
            cert.check_bounds()
                .map_err(|e| anyhow::anyhow!("the certificate would not be accepted: {e}"))?;
            let signed = SignedCertificate::sign(cert, operator.signing_key());
            std::fs::write(&out, signed.encode())
                .with_context(|| format!("writing {}", out.display()))?;
            let c = &signed.certificate;
            println!("wrote {}", out.display());
            println!(
                "node {} enrolled as {} in region {:?}, serial {}, valid until {}",
                hex::encode(c.node),
                c.role.as_str(),
                c.region,
                c.serial,
                crate::core::enrollment::utc(c.not_after_ms)
            );
        }
        Command::Revoke {
            key,
            node,
            reason,
            node_url,
            daemon,
        } => {
            let operator = Identity::load(&key)
                .with_context(|| format!("reading the operator key {}", key.display()))?;
            let node_key = parse_node_key(&node)?;
            if reason.len() > revocation::MAX_REASON_BYTES {
                anyhow::bail!(
                    "--reason: {} bytes, at most {}",
                    reason.len(),
                    revocation::MAX_REASON_BYTES
                );
            }
            let now = mhc_clock::Clock::system().now_ms();
            let encoded =
                revocation::SignedRevocation::sign(node_key, reason, now, operator.signing_key())
                    .encode();
            let answer = runtime()?.block_on(deliver_signed(
                node_url.as_deref(),
                &daemon,
                ("/v1/revocations", "/admin/revoke", "revocation_hex"),
                encoded,
            ))?;
            println!(
                "node {} revoked{}; {} key(s) revoked in all",
                hex::encode(node_key),
                if answer["new"] == true {
                    ""
                } else {
                    " (it was already)"
                },
                answer["revoked_nodes"]
            );
        }
        Command::Emergency { action } => {
            let answer = runtime()?.block_on(send_emergency(action))?;
            println!(
                "applied: mode {} (seq {})",
                answer["mode"].as_str().unwrap_or("?"),
                answer["emergency"]["seq"]
            );
        }
        Command::Ledger { action } => return ledger::ledger_command(action),
        Command::Backup { action } => return backup::backup_command(action),
        Command::Ha { action } => return ha::ha_command(action),
        Command::Plugin {
            daemon,
            name,
            method,
            path,
            body,
            out,
        } => {
            let body = match body {
                Some(p) if p.as_os_str() == "-" => {
                    let mut b = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
                    b
                }
                Some(p) => std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
                None => Vec::new(),
            };
            let (status, bytes) = runtime()?.block_on(plugin_call(
                &daemon.socket()?,
                &method,
                &format!("/admin/plugins/{name}/{path}"),
                body,
            ))?;
            write_out(out.as_deref(), &bytes)?;
            if !status.is_success() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Status { daemon, json } => {
            let socket = daemon.socket()?;
            let answer =
                runtime()?.block_on(admin_call(&socket, Method::GET, "/admin/status", None))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print_status(&answer);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load_or_create_in(dir: &Path) -> anyhow::Result<Identity> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Identity::load_or_create(dir)
}

/// `LAT,LON` in degrees.
fn parse_lat_lon(s: &str) -> Result<(f64, f64), String> {
    let (lat, lon) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?}: expected LAT,LON"))?;
    let lat: f64 = lat
        .trim()
        .parse()
        .map_err(|e| format!("latitude {lat:?}: {e}"))?;
    let lon: f64 = lon
        .trim()
        .parse()
        .map_err(|e| format!("longitude {lon:?}: {e}"))?;
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(format!(
            "{s}: latitude in [-90, 90], longitude in [-180, 180]"
        ));
    }
    Ok((lat, lon))
}

/// Waits for ctrl-c or SIGTERM (systemd's stop signal).
pub async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A node public key given on the command line (`--node`).
fn parse_node_key(hex_key: &str) -> anyhow::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut key)
        .map_err(|e| anyhow::anyhow!("--node {hex_key}: not 64 hex characters: {e}"))?;
    Ok(key)
}

/// Signs an emergency command and delivers it to one node (which gossips it on).
async fn send_emergency(action: EmergencyAction) -> anyhow::Result<serde_json::Value> {
    use crate::core::emergency::{Action, SignedCommand};
    let (target, action) = match action {
        EmergencyAction::Activate {
            command,
            reason,
            essential,
        } => {
            for id in &essential {
                mhc_manifest::ContentId::new(id.clone())
                    .map_err(|e| anyhow::anyhow!("--essential {id}: {e}"))?;
            }
            (command, Action::Activate { reason, essential })
        }
        EmergencyAction::Deactivate { command } => (command, Action::Deactivate),
    };
    let key = Identity::load(&target.key)
        .with_context(|| format!("reading the operator key {}", target.key.display()))?;
    let current = match &target.node {
        Some(url) => http_json(url, Method::GET, "/v1/cluster", None).await?["self"]["emergency"]
            ["seq"]
            .as_u64(),
        None => admin_call(&target.daemon.socket()?, Method::GET, "/admin/status", None).await?
            ["emergency"]["seq"]
            .as_u64(),
    }
    .unwrap_or(0);
    let now = mhc_clock::Clock::system().now_ms();
    let seq = target.seq.unwrap_or_else(|| now.max(current + 1));
    let encoded = SignedCommand::sign(action, seq, now, key.signing_key()).encode();
    deliver_signed(
        target.node.as_deref(),
        &target.daemon,
        ("/v1/emergency", "/admin/emergency", "command_hex"),
        encoded,
    )
    .await
}

/// Delivers signed operator bytes to one node: raw to `routes.0` on the viewer plane at
/// `node_url`, or as `{routes.2: hex}` to `routes.1` on the daemon's admin socket.
async fn deliver_signed(
    node_url: Option<&str>,
    daemon: &DaemonTarget,
    routes: (&str, &str, &str),
    encoded: Vec<u8>,
) -> anyhow::Result<serde_json::Value> {
    let (http_path, admin_path, hex_field) = routes;
    match node_url {
        Some(url) => http_json(url, Method::POST, http_path, Some(Bytes::from(encoded))).await,
        None => {
            let mut body = serde_json::Map::new();
            body.insert(hex_field.to_owned(), hex::encode(encoded).into());
            admin_call(
                &daemon.socket()?,
                Method::POST,
                admin_path,
                Some(serde_json::Value::Object(body)),
            )
            .await
        }
    }
}

fn write_out(out: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match out {
        Some(p) => std::fs::write(p, bytes).with_context(|| format!("writing {}", p.display())),
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout();
            stdout.write_all(bytes)?;
            if !bytes.ends_with(b"\n") {
                stdout.write_all(b"\n")?;
            }
            Ok(())
        }
    }
}
