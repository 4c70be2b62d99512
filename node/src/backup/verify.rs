//! What a restored data directory is held to before anyone calls it a backup: every manifest's
//! signature, every blob's BLAKE3 against its manifest, the ledger recomputed against its signed
//! tree head, and the royalty balances recomputed from the postings. The first failure is
//! named; nothing is trusted because it came out of the repository intact.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context};
use ed25519_dalek::VerifyingKey;
use mhc_config::Config;
use mhc_manifest::{Hash32, SignedManifest};
use mhc_origin::ledger::Ledger;
use mhc_origin::royalty::{BalanceAudit, Royalty, RoyaltyConfig};
use serde::Serialize;

use super::image::ImageManifest;
use super::image::PUBLISHER_KEY_FILE;
use crate::core::catalog::MANIFESTS_TREE;
use crate::core::identity::{Identity, NODE_KEY_FILE};
use crate::core::store::blob_file;

/// What a verification covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Signed manifests checked.
    pub manifests: usize,
    /// Distinct blobs hashed.
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Ledger entries recomputed, up to the head the image names.
    pub ledger_entries: Option<u64>,
    /// Royalty postings replayed and balances compared.
    pub royalty: Option<BalanceAudit>,
}

/// Checks the data directory `dir` (restored from an image described by `image`) with the
/// trust and plugin settings of `config`.
///
/// # Errors
/// The first check that fails, named.
pub fn verify_data_dir(
    dir: &Path,
    image: &ImageManifest,
    config: &Config,
) -> anyhow::Result<Verified> {
    let identity = Identity::load(&dir.join(NODE_KEY_FILE)).context("the node key")?;
    if identity.public_key_hex() != image.public_key {
        bail!(
            "the node key is {}, the image says {}",
            identity.public_key_hex(),
            image.public_key
        );
    }
    // What signed the manifests and the ledger: the publisher key when the image holds one.
    let publisher = match dir.join(PUBLISHER_KEY_FILE) {
        p if p.exists() => Identity::load(&p).context("the publisher key")?,
        _ => Identity::from_seed(identity.signing_key().to_bytes()),
    };
    let mut trusted = vec![
        identity.signing_key().verifying_key(),
        publisher.signing_key().verifying_key(),
    ];
    for (i, key) in config.trust.publishers.iter().enumerate() {
        trusted.push(
            VerifyingKey::from_bytes(key)
                .map_err(|e| anyhow::anyhow!("trust.publishers[{i}]: {e}"))?,
        );
    }
    let db = crate::core::open_db(&dir.join("db"))?;

    // Manifests: each one signed by a trusted key, and exactly the versions the image lists.
    let mut held: BTreeMap<(String, u64), String> = BTreeMap::new();
    let mut blobs: BTreeMap<Hash32, (u64, String)> = BTreeMap::new();
    for item in db.open_tree(MANIFESTS_TREE)?.iter() {
        let (key, bytes) = item?;
        let name = String::from_utf8_lossy(&key).into_owned();
        let signed = SignedManifest::decode(&bytes)
            .with_context(|| format!("manifest {name}: does not decode"))?;
        signed
            .verify(&trusted)
            .with_context(|| format!("manifest {name}: signature"))?;
        let m = &signed.manifest;
        let what = format!("{} v{}", m.content_id, m.version);
        if let Some(init) = &m.hls.init {
            blobs.insert(init.hash, (init.size, format!("{what} init segment")));
        }
        for (i, s) in m.segments.iter().enumerate() {
            blobs
                .entry(s.hash)
                .or_insert_with(|| (s.size, format!("{what} segment {i}")));
        }
        held.insert(
            (m.content_id.to_string(), m.version),
            hex::encode(signed.manifest_hash()),
        );
    }
    let listed: BTreeMap<(String, u64), String> = image
        .contents
        .iter()
        .map(|c| ((c.id.clone(), c.version), c.manifest_hash.clone()))
        .collect();
    if let Some(((id, v), _)) = listed.iter().find(|(k, h)| held.get(*k) != Some(*h)) {
        bail!("manifest {id} v{v}: listed in the image, missing or different in the database");
    }
    if let Some(((id, v), _)) = held.iter().find(|(k, _)| !listed.contains_key(*k)) {
        bail!("manifest {id} v{v}: in the database, not listed in the image");
    }

    // Blobs: present, of the manifest's size, hashing to the manifest's BLAKE3.
    let mut blob_bytes = 0u64;
    for (hash, (size, what)) in &blobs {
        let path = blob_file(&dir.join("blobs"), hash);
        let actual =
            hash_file(&path).with_context(|| format!("blob {} ({what})", hex::encode(hash)))?;
        if actual.0 != *size || actual.1 != *hash {
            bail!(
                "blob {} ({what}): {} bytes hashing to {}, the manifest says {size} bytes",
                hex::encode(hash),
                actual.0,
                hex::encode(actual.1)
            );
        }
        blob_bytes += size;
    }

    // Ledger: every entry recomputed, every head's root and signature checked, and the latest
    // head the one the image recorded.
    let ledger_entries = match &image.ledger_head {
        None => None,
        Some(head) => {
            let ledger = Ledger::open(&db, publisher.signing_key().clone())
                .context("opening the restored ledger")?;
            let report = ledger.verify().context("ledger")?;
            let latest = report.latest.context("ledger: no signed tree head")?;
            if latest.size != head.size || latest.root != head.root {
                bail!(
                    "ledger: the latest signed head is size {} root {}, the image recorded size \
                     {} root {}",
                    latest.size,
                    hex::encode(latest.root),
                    head.size,
                    hex::encode(head.root)
                );
            }
            Some(report.entries.end)
        }
    };

    // Royalty: every balance recomputed from the postings.
    let royalty = match &config.plugins.royalty {
        None => None,
        Some(table) => {
            let settings: RoyaltyConfig = toml::Value::Table(table.clone())
                .try_into()
                .map_err(|e| anyhow::anyhow!("[plugins.royalty]: {e}"))?;
            let audit = Royalty::open(&db, settings)
                .context("opening the restored royalty books")?
                .audit()
                .context("royalty")?;
            if let Some(want) = image.royalty_postings {
                if audit.postings != want {
                    bail!(
                        "royalty: {} postings restored, the image recorded {want}",
                        audit.postings
                    );
                }
            }
            Some(audit)
        }
    };
    Ok(Verified {
        manifests: held.len(),
        blobs: blobs.len() as u64,
        blob_bytes,
        ledger_entries,
        royalty,
    })
}

/// Size and BLAKE3 of a file.
fn hash_file(path: &Path) -> anyhow::Result<(u64, Hash32)> {
    let file = File::open(path).with_context(|| format!("missing: {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(file)?;
    Ok((hasher.count(), *hasher.finalize().as_bytes()))
}
