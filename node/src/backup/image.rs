//! The backup image: an origin's state at one point in time as plain files, which is what a
//! snapshot holds (and what `restic restore` gives back):
//!
//! ```text
//! mhc-backup/
//!   mhc-backup.json         what is inside (contents, trees, blobs, ledger head, postings)
//!   node.key                the node key (mode 0600)
//!   publisher.key           `origin.publisher_key`, when it is not the node key (mode 0600)
//!   db/<hex name>.tree      every sled tree, exported while the write gate was paused
//!   blobs/<hh>/<hash>       every blob a held manifest names, laid out as in the blob store
//! ```
//!
//! A tree file is `MHCTREE1`, then `(u32 key length, key, u32 value length, value)` records
//! (lengths big-endian), then `u32::MAX`, the record count (u64) and the BLAKE3 of every byte
//! before it, so a damaged file is refused before anything of it is stored.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{bail, Context};
use mhc_manifest::Hash32;
use mhc_origin::ledger::SignedTreeHead;
use serde::{Deserialize, Serialize};

use crate::core::identity::{Identity, NODE_KEY_FILE};

/// The publisher key's file in an image (and in a data directory restored from one).
pub const PUBLISHER_KEY_FILE: &str = "publisher.key";
use crate::core::store::blob_file;
use crate::core::Core;
use crate::plugins::PluginFacts;

/// The folder every snapshot holds (restic shows it as `/mhc-backup`).
pub const IMAGE_DIR: &str = "mhc-backup";
/// The image's description.
pub const MANIFEST_FILE: &str = "mhc-backup.json";
/// The version of this layout.
pub const FORMAT: u32 = 1;

const TREE_MAGIC: &[u8; 8] = b"MHCTREE1";
const END_OF_RECORDS: u32 = u32::MAX;
/// Longest key or value a tree file may hold (sled's own values are far smaller here; the bound
/// keeps a damaged length from allocating the machine's memory).
const MAX_RECORD: u32 = 256 << 20;

/// What one image holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageManifest {
    /// [`FORMAT`].
    pub format: u32,
    /// When the export was taken, Unix milliseconds (the node's clock).
    pub created_ms: u64,
    /// The node's peer id.
    pub node: String,
    /// The node's public key, hex.
    pub public_key: String,
    /// The node's region.
    pub region: String,
    /// Every version of every content held, by id then version.
    pub contents: Vec<ContentFacts>,
    /// Every sled tree.
    pub trees: Vec<TreeFacts>,
    /// Distinct blobs.
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// The ledger's latest signed tree head (ledger plugin enabled).
    pub ledger_head: Option<SignedTreeHead>,
    /// Royalty postings booked (royalty plugin enabled).
    pub royalty_postings: Option<u64>,
}

/// One version of one content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentFacts {
    /// Content id.
    pub id: String,
    /// Version.
    pub version: u64,
    /// BLAKE3 of the signed manifest, hex.
    pub manifest_hash: String,
    /// Media segments.
    pub segments: usize,
    /// Bytes of its blobs (init and segments).
    pub bytes: u64,
}

/// One exported sled tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeFacts {
    /// The tree's name, hex (sled names are bytes).
    pub name: String,
    /// Records.
    pub entries: u64,
    /// BLAKE3 of the tree file, hex.
    pub blake3: String,
}

/// Writes the image of `core` into `dir` (which must not exist), pausing the origin's writes
/// while the database is exported and the blobs are linked; `plugin_facts` is read in the
/// same pause.
///
/// # Errors
/// A file cannot be written, a blob named by the catalog is missing from the store.
pub fn export(
    core: &Core,
    dir: &Path,
    plugin_facts: impl FnOnce() -> PluginFacts,
) -> anyhow::Result<ImageManifest> {
    fs::create_dir_all(dir.join("db")).with_context(|| format!("creating {}", dir.display()))?;
    fs::create_dir(dir.join("blobs"))?;
    let disk = core.store.disk();
    let mut manifest = {
        let _paused = core.writes.pause();
        let created_ms = core.clock.now_ms();
        let mut trees = Vec::new();
        let mut names = core.db.tree_names();
        names.sort();
        for name in names {
            let tree = core.db.open_tree(&name)?;
            let file = dir.join("db").join(tree_file_name(&name));
            let (entries, hash) = write_tree(&tree, &file)
                .with_context(|| format!("exporting tree {}", String::from_utf8_lossy(&name)))?;
            trees.push(TreeFacts {
                name: hex::encode(&name),
                entries,
                blake3: hex::encode(hash),
            });
        }
        let mut contents = Vec::new();
        let mut blobs: BTreeSet<Hash32> = BTreeSet::new();
        for published in core.catalog.all_versions() {
            let m = published.manifest();
            let named: Vec<(Hash32, u64)> = m
                .hls
                .init
                .iter()
                .map(|i| (i.hash, i.size))
                .chain(m.segments.iter().map(|s| (s.hash, s.size)))
                .collect();
            contents.push(ContentFacts {
                id: m.content_id.to_string(),
                version: m.version,
                manifest_hash: hex::encode(published.signed.manifest_hash()),
                segments: m.segments.len(),
                bytes: named.iter().map(|(_, size)| size).sum(),
            });
            blobs.extend(named.into_iter().map(|(hash, _)| hash));
        }
        let mut blob_bytes = 0u64;
        for hash in &blobs {
            let from = disk.blob_path(hash);
            let to = blob_file(&dir.join("blobs"), hash);
            blob_bytes += link_or_copy(&from, &to)
                .with_context(|| format!("taking blob {} into the image", hex::encode(hash)))?;
        }
        let facts = plugin_facts();
        ImageManifest {
            format: FORMAT,
            created_ms,
            node: core.identity.peer_id().to_string(),
            public_key: core.identity.public_key_hex(),
            region: core.config.region.clone(),
            contents,
            trees,
            blobs: blobs.len() as u64,
            blob_bytes,
            ledger_head: facts.ledger_head,
            royalty_postings: facts.royalty_postings,
        }
    };
    manifest
        .contents
        .sort_by(|a, b| (&a.id, a.version).cmp(&(&b.id, b.version)));
    core.identity
        .write_new(&dir.join(NODE_KEY_FILE))
        .context("writing the node key into the image")?;
    if core.publisher != *core.identity.signing_key() {
        Identity::from_seed(core.publisher.to_bytes())
            .write_new(&dir.join(PUBLISHER_KEY_FILE))
            .context("writing the publisher key into the image")?;
    }
    write_manifest(dir, &manifest)?;
    Ok(manifest)
}

/// Reads an image's description.
///
/// # Errors
/// Missing, unreadable or not an image of a format this build reads.
pub fn read_manifest(dir: &Path) -> anyhow::Result<ImageManifest> {
    let path = dir.join(MANIFEST_FILE);
    let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: ImageManifest =
        serde_json::from_slice(&text).with_context(|| format!("{}", path.display()))?;
    if manifest.format != FORMAT {
        bail!(
            "{}: image format {} (this build reads {FORMAT})",
            path.display(),
            manifest.format
        );
    }
    Ok(manifest)
}

fn write_manifest(dir: &Path, manifest: &ImageManifest) -> anyhow::Result<()> {
    let path = dir.join(MANIFEST_FILE);
    let mut json = serde_json::to_vec_pretty(manifest)?;
    json.push(b'\n');
    fs::write(&path, json).with_context(|| format!("writing {}", path.display()))
}

/// Turns an image into a data directory `to` that `mhc-node run` starts from: the database
/// rebuilt from the tree files (each checked against its hash first), the blobs moved into
/// the blob store's layout, the node key. The image is consumed (its blobs are moved).
///
/// The restored incarnation is moved past the present time in seconds: peers remember the
/// lost node's last incarnation, which the image may be behind, and ignore heartbeats older
/// than it.
///
/// # Errors
/// `to` holds something already; a tree file is damaged (named); a file cannot be written.
pub fn install(image: &Path, to: &Path, now_ms: u64) -> anyhow::Result<ImageManifest> {
    let manifest = read_manifest(image)?;
    if to.exists() && fs::read_dir(to)?.next().is_some() {
        bail!(
            "{} is not empty: restore into a new directory",
            to.display()
        );
    }
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for tree in &manifest.trees {
        let name = hex::decode(&tree.name).context("a tree name in the image")?;
        let file = image.join("db").join(tree_file_name(&name));
        let (entries, hash) = check_tree_file(&file)?;
        if hex::encode(hash) != tree.blake3 || entries != tree.entries {
            bail!(
                "{}: holds {entries} records hashing to {}, the image says {} records hashing \
                 to {}",
                file.display(),
                hex::encode(hash),
                tree.entries,
                tree.blake3
            );
        }
    }
    {
        let db = crate::core::open_db(&to.join("db"))?;
        for tree in &manifest.trees {
            let name = hex::decode(&tree.name)?;
            let file = image.join("db").join(tree_file_name(&name));
            let target = db.open_tree(&name)?;
            read_tree(&file, |k, v| {
                target.insert(k, v)?;
                Ok(())
            })?;
        }
        crate::core::restore_incarnation(&db, now_ms / 1000)?;
        // ISRCs and UPCs issued after the backup are not in it: the label skips past them.
        mhc_label::store::mark_restored(&db, now_ms)?;
        db.flush()?;
    }
    let from_blobs = image.join("blobs");
    let to_blobs = to.join("blobs");
    for shard in fs::read_dir(&from_blobs)? {
        let shard = shard?;
        let target = to_blobs.join(shard.file_name());
        fs::create_dir_all(&target)?;
        for blob in fs::read_dir(shard.path())? {
            let blob = blob?;
            fs::rename(blob.path(), target.join(blob.file_name()))?;
        }
    }
    fs::copy(image.join(NODE_KEY_FILE), to.join(NODE_KEY_FILE))?;
    if image.join(PUBLISHER_KEY_FILE).exists() {
        fs::copy(image.join(PUBLISHER_KEY_FILE), to.join(PUBLISHER_KEY_FILE))?;
    }
    Identity::load(&to.join(NODE_KEY_FILE)).context("the restored node key")?;
    write_manifest(to, &manifest)?;
    Ok(manifest)
}

fn tree_file_name(name: &[u8]) -> String {
    format!("{}.tree", hex::encode(name))
}

/// Hard-links `from` to `to` (blob files are immutable once named), copying where the two are
/// on different file systems; returns the size.
fn link_or_copy(from: &Path, to: &Path) -> io::Result<u64> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::hard_link(from, to) {
        Ok(()) => Ok(fs::metadata(to)?.len()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => fs::copy(from, to),
        Err(e) => Err(e),
    }
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_tree(tree: &sled::Tree, path: &Path) -> anyhow::Result<(u64, [u8; 32])> {
    let mut out = Hashing {
        inner: BufWriter::new(File::create(path)?),
        hasher: blake3::Hasher::new(),
    };
    out.write_all(TREE_MAGIC)?;
    let mut entries = 0u64;
    for item in tree.iter() {
        let (k, v) = item?;
        for part in [k.as_ref(), v.as_ref()] {
            let len = u32::try_from(part.len())
                .ok()
                .filter(|l| *l <= MAX_RECORD)
                .context("a record larger than a tree file holds")?;
            out.write_all(&len.to_be_bytes())?;
            out.write_all(part)?;
        }
        entries += 1;
    }
    out.write_all(&END_OF_RECORDS.to_be_bytes())?;
    out.write_all(&entries.to_be_bytes())?;
    let hash = *out.hasher.finalize().as_bytes();
    let mut file = out.inner;
    file.write_all(&hash)?;
    file.into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .sync_all()?;
    Ok((entries, hash))
}

/// Checks a tree file's structure and trailing hash without keeping its records; returns the
/// record count and the hash.
fn check_tree_file(path: &Path) -> anyhow::Result<(u64, [u8; 32])> {
    read_tree(path, |_, _| Ok(()))
}

/// Reads the records of a tree file in order, then checks its trailer. `each` sees records
/// before the hash is checked, so callers that store them check the file first.
fn read_tree(
    path: &Path,
    mut each: impl FnMut(&[u8], &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<(u64, [u8; 32])> {
    let damaged = |what: &str| anyhow::anyhow!("{}: damaged tree file ({what})", path.display());
    let mut input =
        BufReader::new(File::open(path).with_context(|| format!("{}", path.display()))?);
    let mut hasher = blake3::Hasher::new();
    let mut read = |buf: &mut [u8], hasher: &mut blake3::Hasher| -> anyhow::Result<()> {
        input.read_exact(buf).map_err(|_| damaged("cut short"))?;
        hasher.update(buf);
        Ok(())
    };
    let mut magic = [0u8; 8];
    read(&mut magic, &mut hasher)?;
    if &magic != TREE_MAGIC {
        return Err(damaged("not a tree file"));
    }
    let mut entries = 0u64;
    let (mut key, mut value) = (Vec::new(), Vec::new());
    loop {
        let mut len = [0u8; 4];
        read(&mut len, &mut hasher)?;
        let len = u32::from_be_bytes(len);
        if len == END_OF_RECORDS {
            break;
        }
        if len > MAX_RECORD {
            return Err(damaged("record length out of range"));
        }
        key.resize(len as usize, 0);
        read(&mut key, &mut hasher)?;
        let mut vlen = [0u8; 4];
        read(&mut vlen, &mut hasher)?;
        let vlen = u32::from_be_bytes(vlen);
        if vlen > MAX_RECORD {
            return Err(damaged("record length out of range"));
        }
        value.resize(vlen as usize, 0);
        read(&mut value, &mut hasher)?;
        each(&key, &value)?;
        entries += 1;
    }
    let mut count = [0u8; 8];
    read(&mut count, &mut hasher)?;
    if u64::from_be_bytes(count) != entries {
        return Err(damaged("record count"));
    }
    let hash = *hasher.finalize().as_bytes();
    let mut stored = [0u8; 32];
    input
        .read_exact(&mut stored)
        .map_err(|_| damaged("cut short"))?;
    if stored != hash {
        return Err(damaged("hash mismatch"));
    }
    if input.read(&mut [0u8; 1])? != 0 {
        return Err(damaged("bytes after the end"));
    }
    Ok((entries, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(dir: &Path, n: u32) -> sled::Tree {
        let db = sled::Config::new()
            .path(dir.join("db"))
            .temporary(true)
            .open()
            .unwrap();
        let tree = db.open_tree("t").unwrap();
        for i in 0..n {
            tree.insert(i.to_be_bytes(), vec![i as u8; (i % 7) as usize])
                .unwrap();
        }
        tree
    }

    #[test]
    fn a_tree_file_reads_back_record_for_record() {
        let dir = tempfile::tempdir().unwrap();
        let tree = tree_with(dir.path(), 100);
        let file = dir.path().join("t.tree");
        let (entries, hash) = write_tree(&tree, &file).unwrap();
        assert_eq!(entries, 100);
        let mut back = Vec::new();
        let (n, h) = read_tree(&file, |k, v| {
            back.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!((n, h), (entries, hash));
        let want: Vec<_> = tree
            .iter()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect();
        assert_eq!(back, want);
    }

    #[test]
    fn any_flipped_byte_of_a_tree_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tree = tree_with(dir.path(), 20);
        let file = dir.path().join("t.tree");
        write_tree(&tree, &file).unwrap();
        let good = fs::read(&file).unwrap();
        for i in (0..good.len()).step_by(5) {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            fs::write(&file, &bad).unwrap();
            let err = check_tree_file(&file).unwrap_err().to_string();
            assert!(err.contains("damaged tree file"), "byte {i}: {err}");
        }
        fs::write(&file, &good[..good.len() - 1]).unwrap();
        assert!(check_tree_file(&file).is_err());
    }
}
