//! The command line: `run`, `demo`, `check-config`, `id`, `keygen`, `ingest`, `status`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http::Method;
use serde_json::json;

use crate::admin::{self, ADMIN_SOCKET};
use crate::identity::Identity;
use crate::{daemon, demo};

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
    /// Switch the cluster into or out of emergency broadcast mode with a signed command.
    Emergency {
        #[command(subcommand)]
        action: EmergencyAction,
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
        /// Plugin name (`royalty`, `ledger`).
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

/// Runs the parsed command line.
///
/// # Errors
/// Whatever the command fails with, with context.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Some(command) = cli.command else {
        eprintln!("{NO_COMMAND}");
        return Ok(ExitCode::from(2));
    };
    match command {
        Command::Run { config } => {
            let config = mhc_config::load(&config)?;
            runtime()?.block_on(async {
                let node = daemon::start(config).await?;
                daemon::sd_notify("READY=1");
                crate::wait_for_signal().await;
                daemon::sd_notify("STOPPING=1");
                node.shutdown().await;
                anyhow::Ok(())
            })?;
        }
        Command::Demo { http_port } => runtime()?.block_on(demo::run(http_port))?,
        Command::CheckConfig { file } => {
            let config = mhc_config::load(&file)?;
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
            let answer = runtime()?.block_on(admin::call(
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
            let answer = runtime()?.block_on(admin::call(
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
            let answer = runtime()?.block_on(admin::call(
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
        Command::Emergency { action } => {
            let answer = runtime()?.block_on(send_emergency(action))?;
            println!(
                "applied: mode {} (seq {})",
                answer["mode"].as_str().unwrap_or("?"),
                answer["emergency"]["seq"]
            );
        }
        Command::Ledger { action } => return ledger_command(action),
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
                runtime()?.block_on(admin::call(&socket, Method::GET, "/admin/status", None))?;
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Prints the admin status answer as tables (members, then contents).
pub fn print_status(v: &serde_json::Value) {
    let me = &v["self"];
    let s = |x: &serde_json::Value| match x {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    println!("mode: {}", s(&v["mode"]));
    println!(
        "{:<54} {:<17} {:<10} {:<7} {:<22} {:>6}",
        "PEER", "ROLE", "REGION", "STATE", "HTTP", "CONNS"
    );
    let mut rows = vec![me.clone()];
    if let Some(members) = v["members"].as_array() {
        rows.extend(members.iter().cloned());
    }
    for m in rows {
        println!(
            "{:<54} {:<17} {:<10} {:<7} {:<22} {:>6}",
            s(&m["peer_id"]),
            s(&m["role"]),
            s(&m["region"]),
            s(&m["state"]),
            s(&m["addrs"]["http"]),
            s(&m["load"]["connections_open"]),
        );
    }
    if let Some(contents) = v["contents"].as_array() {
        println!();
        println!(
            "{:<32} {:>7} {:>9} {:>12}  TITLE",
            "CONTENT", "VERSION", "SEGMENTS", "BYTES"
        );
        for c in contents {
            println!(
                "{:<32} {:>7} {:>9} {:>12}  {}",
                s(&c["id"]),
                s(&c["version"]),
                s(&c["segments"]),
                s(&c["bytes"]),
                s(&c["title"])
            );
        }
    }
}

/// Signs an emergency command and delivers it to one node (which gossips it on).
async fn send_emergency(action: EmergencyAction) -> anyhow::Result<serde_json::Value> {
    use crate::emergency::{now_ms, Action, SignedCommand};
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
        None => admin::call(&target.daemon.socket()?, Method::GET, "/admin/status", None).await?
            ["emergency"]["seq"]
            .as_u64(),
    }
    .unwrap_or(0);
    let now = now_ms();
    let seq = target.seq.unwrap_or_else(|| now.max(current + 1));
    let encoded = SignedCommand::sign(action, seq, now, key.signing_key()).encode();
    match &target.node {
        Some(url) => {
            http_json(
                url,
                Method::POST,
                "/v1/emergency",
                Some(Bytes::from(encoded)),
            )
            .await
        }
        None => {
            admin::call(
                &target.daemon.socket()?,
                Method::POST,
                "/admin/emergency",
                Some(json!({ "command_hex": hex::encode(encoded) })),
            )
            .await
        }
    }
}

/// One HTTP/1.1 request to a node's viewer plane (`http://host:port`), JSON answer.
async fn http_json(
    base: &str,
    method: Method,
    path: &str,
    body: Option<Bytes>,
) -> anyhow::Result<serde_json::Value> {
    use http_body_util::{BodyExt, Full};
    let authority = base
        .strip_prefix("http://")
        .with_context(|| format!("--node {base}: expected http://host:port"))?
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/vnd.mhc.emergency")
        .body(Full::new(body.unwrap_or_default()))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("answer is not JSON: {}", String::from_utf8_lossy(&bytes)))?;
    if !status.is_success() {
        anyhow::bail!(
            "{status}: {}",
            value["error"].as_str().unwrap_or("unknown error")
        );
    }
    Ok(value)
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

/// One raw request on the admin socket (plugin routes answer JSON, CSV or files).
async fn plugin_call(
    socket: &Path,
    method: &str,
    target: &str,
    body: Vec<u8>,
) -> anyhow::Result<(http::StatusCode, Vec<u8>)> {
    let (status, bytes) =
        admin::call_raw(socket, method, target, "application/octet-stream", body).await?;
    Ok((status, bytes.to_vec()))
}

fn ledger_command(action: LedgerAction) -> anyhow::Result<ExitCode> {
    match action {
        LedgerAction::Verify {
            export: Some(path),
            public_key,
            ..
        } => {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let key = public_key
                .map(|k| -> anyhow::Result<[u8; 32]> {
                    hex::decode(&k)
                        .ok()
                        .and_then(|v| v.try_into().ok())
                        .context("--public-key: 64 hex digits")
                })
                .transpose()?;
            match mhc_origin::ledger::verify_export(&bytes, key) {
                Ok(report) => {
                    println!(
                        "ok: entries {}..{} and {} signed tree heads verified (public key {})",
                        report.entries.start,
                        report.entries.end,
                        report.heads,
                        hex::encode(report.public_key)
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    eprintln!("verification failed: {err}");
                    if let Some(index) = err.entry() {
                        eprintln!("first bad entry: {index}");
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        LedgerAction::Verify { daemon, .. } => {
            let (status, bytes) = runtime()?.block_on(plugin_call(
                &daemon.socket()?,
                "POST",
                "/admin/plugins/ledger/verify",
                Vec::new(),
            ))?;
            write_out(None, &bytes)?;
            Ok(if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        LedgerAction::Export {
            daemon,
            format,
            from_ms,
            to_ms,
            out,
        } => {
            let mut target = format!("/admin/plugins/ledger/export?format={format}");
            if let Some(f) = from_ms {
                target.push_str(&format!("&from_ms={f}"));
            }
            if let Some(t) = to_ms {
                target.push_str(&format!("&to_ms={t}"));
            }
            let (status, bytes) =
                runtime()?.block_on(plugin_call(&daemon.socket()?, "GET", &target, Vec::new()))?;
            if !status.is_success() {
                write_out(None, &bytes)?;
                return Ok(ExitCode::FAILURE);
            }
            write_out(Some(&out), &bytes)?;
            println!("wrote {} ({} bytes)", out.display(), bytes.len());
            Ok(ExitCode::SUCCESS)
        }
        LedgerAction::Proof {
            daemon,
            index,
            size,
            out,
        } => {
            let target = match size {
                Some(s) => format!("/admin/plugins/ledger/inclusion/{index}?size={s}"),
                None => format!("/admin/plugins/ledger/inclusion/{index}"),
            };
            let (status, bytes) =
                runtime()?.block_on(plugin_call(&daemon.socket()?, "GET", &target, Vec::new()))?;
            write_out(out.as_deref().filter(|_| status.is_success()), &bytes)?;
            Ok(if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        LedgerAction::VerifyProof { export, proof } => {
            match verify_proof_offline(&export, &proof) {
                Ok(summary) => {
                    println!("ok: {summary}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    eprintln!("proof does not verify: {err:#}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// Verifies an inclusion proof with nothing but an export: the entry comes from the export,
/// the tree head must be signed by the export's key, the proof must lead from the entry's leaf
/// to that head's root.
fn verify_proof_offline(export: &Path, proof: &Path) -> anyhow::Result<String> {
    use mhc_origin::ledger::{verify_entry_inclusion, ExportedEntry, SignedTreeHead};
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(export)?)
        .with_context(|| format!("{} is not a JSON export", export.display()))?;
    let p: serde_json::Value = serde_json::from_slice(&std::fs::read(proof)?)
        .with_context(|| format!("{} is not a proof", proof.display()))?;
    let key: [u8; 32] = hex::decode(
        doc["public_key"]
            .as_str()
            .context("export has no public_key")?,
    )
    .ok()
    .and_then(|v| v.try_into().ok())
    .context("export public_key is not 32 bytes of hex")?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key)?;
    let index = p["index"].as_u64().context("proof has no index")?;
    let head: SignedTreeHead =
        serde_json::from_value(p["head"].clone()).context("proof has no signed head")?;
    head.verify(&key)
        .map_err(|_| anyhow::anyhow!("the tree head is not signed by the export's key"))?;
    let hashes: Vec<[u8; 32]> = p["proof"]
        .as_array()
        .context("proof has no hashes")?
        .iter()
        .map(|h| {
            h.as_str()
                .and_then(|h| hex::decode(h).ok())
                .and_then(|v| v.try_into().ok())
                .context("proof hash is not 32 bytes of hex")
        })
        .collect::<anyhow::Result<_>>()?;
    let exported: ExportedEntry = doc["entries"]
        .as_array()
        .context("export has no entries")?
        .iter()
        .find(|e| e["index"].as_u64() == Some(index))
        .cloned()
        .map(serde_json::from_value)
        .transpose()?
        .with_context(|| format!("entry {index} is not in the export"))?;
    let entry = exported.to_entry();
    verify_entry_inclusion(&entry, head.size, &hashes, &head.root)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(format!(
        "entry {index} ({} {} {} to {}) is in the log of size {} whose signed root is {}",
        entry.kind.as_str(),
        entry.amount_minor,
        entry.currency,
        entry.account,
        head.size,
        hex::encode(head.root)
    ))
}
