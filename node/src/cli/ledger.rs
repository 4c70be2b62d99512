//! `mhc-node ledger …`: the origin's verifiable ledger, at the running daemon or offline on an
//! export file.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::client::plugin_call;
use super::{runtime, write_out, LedgerAction};

pub(super) fn ledger_command(action: LedgerAction) -> anyhow::Result<ExitCode> {
    match action {
        LedgerAction::Verify {
            export: Some(path),
            public_key,
            rpc_url,
            confirmations,
            anchor_address,
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
                    match rpc_url {
                        Some(url) => verify_export_anchors(
                            &bytes,
                            &url,
                            confirmations,
                            anchor_address.as_deref(),
                        ),
                        None => Ok(ExitCode::SUCCESS),
                    }
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
        LedgerAction::Verify {
            daemon, anchors, ..
        } => {
            let socket = daemon.socket()?;
            let mut ok = verified_at_daemon(&socket, "/admin/plugins/ledger/verify")?;
            if anchors {
                ok &= verified_at_daemon(&socket, "/admin/plugins/ledger/anchors/verify")?;
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        LedgerAction::Anchors { daemon, json } => {
            let target = if json {
                "/admin/plugins/ledger/anchors"
            } else {
                "/admin/plugins/ledger/anchors?full"
            };
            let (status, bytes) =
                runtime()?.block_on(plugin_call(&daemon.socket()?, "GET", target, Vec::new()))?;
            if json || !status.is_success() {
                write_out(None, &bytes)?;
            } else {
                print_anchors(&bytes)?;
            }
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

/// `POST target` at the daemon, its answer printed; whether it said `"ok": true`.
fn verified_at_daemon(socket: &Path, target: &str) -> anyhow::Result<bool> {
    let (status, bytes) = runtime()?.block_on(plugin_call(socket, "POST", target, Vec::new()))?;
    write_out(None, &bytes)?;
    Ok(status.is_success()
        && serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| v["ok"] == true))
}

/// `ledger anchors` for people: one line per anchor transaction.
fn print_anchors(bytes: &[u8]) -> anyhow::Result<()> {
    let records: Vec<mhc_origin::ledger::AnchorRecord> =
        serde_json::from_slice(bytes).context("the daemon's answer")?;
    if records.is_empty() {
        println!("no anchors yet");
    }
    for r in records {
        println!(
            "size {:>8}  {:<9}  root {}  tx {}  block {}{}",
            r.tree_size,
            r.state.as_str(),
            hex::encode(r.root),
            r.tx_hash.as_deref().unwrap_or("-"),
            r.block.map_or("-".to_string(), |b| b.to_string()),
            r.gas_used.map_or(String::new(), |g| format!("  gas {g}")),
        );
    }
    Ok(())
}

/// `ledger verify --export F --rpc-url URL`: the export's anchors on the chain.
fn verify_export_anchors(
    bytes: &[u8],
    url: &str,
    confirmations: u64,
    address: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let rpc = mhc_chain::Rpc::new(url).map_err(|e| anyhow::anyhow!("--rpc-url: {e}"))?;
    let address = address
        .map(mhc_chain::evm::parse_address)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--anchor-address: {e}"))?;
    let checks = match runtime()?.block_on(mhc_chain::verify_export_anchors(
        bytes,
        &rpc,
        confirmations,
        address,
    )) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("anchor verification failed: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if checks.is_empty() {
        eprintln!("anchor verification failed: the export carries no confirmed anchors");
        return Ok(ExitCode::FAILURE);
    }
    if let Ok(doc) = mhc_origin::ledger::export_anchors(bytes) {
        if let Some(a) = doc.anchors.first() {
            println!(
                "anchor account {} on chain {}; the largest anchored tree size is {} of {}",
                address.map_or(a.address.clone(), |p| p.to_checksum(None)),
                a.chain_id,
                doc.anchors.iter().map(|a| a.tree_size).max().unwrap_or(0),
                doc.tree_size
            );
        }
    }
    let mut ok = true;
    for c in &checks {
        if c.problem.is_some() {
            ok = false;
            eprintln!("FAILED {}", c.describe());
        } else {
            println!(
                "ok: anchor of tree size {} (tx {}, block {}) is on chain and the log is consistent with it",
                c.tree_size,
                c.tx_hash,
                c.block.unwrap_or_default()
            );
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
