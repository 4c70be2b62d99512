//! `mhc-node backup …`: `now` asks the running origin for a snapshot over its admin socket;
//! `list`, `verify` and `restore` read the repository directly (no daemon needed: a restore is
//! what an operator runs on a new machine).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use http::Method;
use serde_json::json;

use super::client::call as admin_call;
use super::runtime;
use crate::admin::api::ADMIN_SOCKET;
use crate::backup::{restore_snapshot, verify_snapshot, Repo, SnapshotInfo, Verified};

/// `mhc-node backup …`.
#[derive(Debug, Subcommand)]
pub enum BackupAction {
    /// Take a snapshot now at the running origin; prints its id.
    Now {
        /// The origin's configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// hourly | daily | weekly (kept for that kind's window; a daily one is verified
        /// right away); default: a manual snapshot, kept until forgotten by hand.
        #[arg(long)]
        kind: Option<String>,
    },
    /// List the snapshots in the repository, oldest first.
    List {
        /// The origin's configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Read back a snapshot's packs, restore it into a scratch folder and check every
    /// signature, blob hash, ledger head and balance; names the first thing that fails.
    Verify {
        /// The origin's configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Snapshot id (or a unique prefix); default the latest.
        #[arg(long, default_value = "latest")]
        snapshot: String,
    },
    /// Restore a snapshot into a new data directory that `mhc-node run` starts from, and
    /// verify it.
    Restore {
        /// The configuration of the origin being restored (its repository, password and
        /// trust settings).
        #[arg(long, short)]
        config: PathBuf,
        /// Snapshot id (or a unique prefix), or `latest`.
        #[arg(long)]
        snapshot: String,
        /// The new data directory (must not exist or be empty).
        #[arg(long)]
        to: PathBuf,
    },
}

/// Runs one `backup` command.
///
/// # Errors
/// The configuration, the repository or the daemon fails (named).
pub fn backup_command(action: BackupAction) -> anyhow::Result<ExitCode> {
    match action {
        BackupAction::Now { config, kind } => {
            let config = mhc_config::load(&config)?;
            let socket = config.data_dir.join(ADMIN_SOCKET);
            let answer = runtime()?.block_on(admin_call(
                &socket,
                Method::POST,
                "/admin/backup",
                Some(json!({ "kind": kind })),
            ))?;
            println!("{}", answer["snapshot"]["id"].as_str().unwrap_or("?"));
            eprintln!(
                "{} contents, {} blobs, {} bytes added, {:.1} s{}",
                answer["contents"],
                answer["blobs"],
                answer["snapshot"]["bytes_added"],
                answer["seconds"].as_f64().unwrap_or(0.0),
                if answer["verified"].is_null() {
                    ""
                } else {
                    "; verified"
                }
            );
        }
        BackupAction::List { config, json } => {
            let config = mhc_config::load(&config)?;
            let snapshots = Repo::open(&config.backup, false)?.snapshots()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&snapshots)?);
            } else {
                print_table(&snapshots);
            }
        }
        BackupAction::Verify { config, snapshot } => {
            let config = mhc_config::load(&config)?;
            let clock = mhc_clock::Clock::system();
            let (snap, verified) = verify_snapshot(&config, &snapshot, &clock)?;
            println!("snapshot {} ({}) verified", &snap.id[..8], snap.time);
            print_verified(&verified);
        }
        BackupAction::Restore {
            config,
            snapshot,
            to,
        } => {
            let config = mhc_config::load(&config)?;
            let clock = mhc_clock::Clock::system();
            let (snap, verified) = restore_snapshot(&config, &snapshot, &to, &clock)?;
            println!(
                "snapshot {} ({}) restored into {} and verified",
                &snap.id[..8],
                snap.time,
                to.display()
            );
            print_verified(&verified);
            println!(
                "start it with data_dir = {:?} in its configuration",
                to.display().to_string()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(snapshots: &[SnapshotInfo]) {
    println!(
        "{:<10} {:<25} {:<22} {:>8} {:>14}",
        "ID", "TIME", "KINDS", "FILES", "ADDED"
    );
    for s in snapshots {
        let kinds: Vec<&str> = s.kinds.iter().map(|k| k.as_str()).collect();
        println!(
            "{:<10} {:<25} {:<22} {:>8} {:>14}",
            &s.id[..8],
            s.time,
            kinds.join(","),
            s.files,
            s.bytes_added
        );
    }
}

fn print_verified(v: &Verified) {
    println!(
        "  {} signed manifests, {} blobs ({} bytes) hashed",
        v.manifests, v.blobs, v.blob_bytes
    );
    if let Some(n) = v.ledger_entries {
        println!("  ledger: {n} entries recomputed, latest signed head matches");
    }
    if let Some(r) = &v.royalty {
        println!(
            "  royalty: {} postings replayed, {} balances equal",
            r.postings, r.balances
        );
    }
}
