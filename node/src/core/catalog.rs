//! The catalog: every verified signed manifest this node holds, persisted in sled and kept in
//! memory ready to serve (encoded bytes, rendered playlist, header values, Merkle tree).
//!
//! Only manifests that verify against the trusted publishers enter it, and manifests read back
//! from disk at start are verified again: a tampered database is refused, not served.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use http::HeaderValue;
use mhc_manifest::{
    render_media_playlist, Blake3Hasher, ContentId, Hash32, Manifest, ManifestError, SignedManifest,
};
use parking_lot::RwLock;
use rs_merkle::MerkleTree;

/// sled tree of manifests: key `content_id ‖ 0x00 ‖ version (u64 big-endian)`, value the encoded
/// signed manifest. Big-endian versions sort numerically, so the last key of a prefix is the
/// latest version.
pub(crate) const MANIFESTS_TREE: &str = "manifests";

/// One published version, with everything the viewer plane needs precomputed.
#[derive(Debug)]
pub struct Published {
    /// The verified signed manifest.
    pub signed: SignedManifest,
    /// Its postcard encoding (served as `application/vnd.mhc.manifest`).
    pub encoded: Bytes,
    /// BLAKE3 of `encoded`, hex.
    pub hash_hex: String,
    /// `ETag` of the manifest: its quoted hash.
    pub etag: HeaderValue,
    /// The HLS media playlist rendered from the manifest.
    pub playlist: Bytes,
    /// `ETag` of the playlist: the manifest hash with a suffix (the playlist is a function of
    /// the manifest).
    pub playlist_etag: HeaderValue,
    /// `X-Mhc-Merkle-Root` value.
    pub root_hex: HeaderValue,
    tree: ProofTree,
    segment_headers: Vec<OnceLock<SegmentHeaders>>,
    init_headers: Option<SegmentHeaders>,
}

/// The Merkle tree of a manifest's segment hashes, kept so a proof costs O(log n).
struct ProofTree(MerkleTree<Blake3Hasher>);

impl std::fmt::Debug for ProofTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProofTree({} leaves)", self.0.leaves_len())
    }
}

/// Header values of one segment, computed on first use.
#[derive(Debug, Clone)]
pub struct SegmentHeaders {
    /// Quoted BLAKE3 hex.
    pub etag: HeaderValue,
    /// BLAKE3 hex.
    pub hash_hex: HeaderValue,
    /// Inclusion proof hex (empty for the init segment, which the signature covers directly).
    pub proof_hex: HeaderValue,
    /// `i/n`.
    pub index: HeaderValue,
}

impl Published {
    /// Precomputes what the viewer plane needs of a verified manifest.
    pub fn new(signed: SignedManifest) -> Self {
        let encoded = Bytes::from(signed.encode());
        let hash_hex = hex::encode(blake3::hash(&encoded).as_bytes());
        let manifest = &signed.manifest;
        let leaves: Vec<[u8; 32]> = manifest.segments.iter().map(|s| s.hash).collect();
        let tree = ProofTree(MerkleTree::<Blake3Hasher>::from_leaves(&leaves));
        let playlist = Bytes::from(render_media_playlist(manifest));
        let header = |s: String| HeaderValue::from_str(&s).expect("hex is a valid header value");
        let init_headers = manifest.hls.init.as_ref().map(|init| {
            let hex = hex::encode(init.hash);
            SegmentHeaders {
                etag: header(format!("\"{hex}\"")),
                hash_hex: header(hex),
                proof_hex: HeaderValue::from_static(""),
                index: HeaderValue::from_static("init"),
            }
        });
        Self {
            etag: header(format!("\"{hash_hex}\"")),
            playlist_etag: header(format!("\"{hash_hex}-m3u8\"")),
            root_hex: header(hex::encode(manifest.merkle_root)),
            segment_headers: (0..leaves.len()).map(|_| OnceLock::new()).collect(),
            init_headers,
            tree,
            playlist,
            hash_hex,
            encoded,
            signed,
        }
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.signed.manifest
    }

    /// Header values of segment `index` (which must be in range).
    pub fn segment_headers(&self, index: usize) -> &SegmentHeaders {
        self.segment_headers[index].get_or_init(|| {
            let hash = hex::encode(self.manifest().segments[index].hash);
            let proof = hex::encode(self.tree.0.proof(&[index]).to_bytes());
            let header =
                |s: String| HeaderValue::from_str(&s).expect("hex is a valid header value");
            SegmentHeaders {
                etag: header(format!("\"{hash}\"")),
                hash_hex: header(hash),
                proof_hex: header(proof),
                index: header(format!("{index}/{}", self.segment_headers.len())),
            }
        })
    }

    /// The Merkle proof of segment `index` (sibling hashes, bottom-up), O(log n).
    pub fn proof_hashes(&self, index: usize) -> Vec<[u8; 32]> {
        self.tree.0.proof(&[index]).proof_hashes().to_vec()
    }

    /// Header values of the init segment, if the rendition has one.
    pub fn init_headers(&self) -> Option<&SegmentHeaders> {
        self.init_headers.as_ref()
    }

    /// Bytes of the version's init and media segments.
    pub fn blob_bytes(&self) -> u64 {
        let m = self.manifest();
        m.segments.iter().map(|s| s.size).sum::<u64>() + m.hls.init.as_ref().map_or(0, |i| i.size)
    }
}

#[derive(Debug, Default)]
struct Versions {
    all: BTreeMap<u64, Arc<Published>>,
}

impl Versions {
    fn latest(&self) -> Option<&Arc<Published>> {
        self.all.values().next_back()
    }
}

/// Why a manifest was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Signature or publisher check failed.
    #[error("manifest rejected: {0}")]
    Rejected(#[from] ManifestError),
    /// Not newer than what is held.
    #[error("manifest {id} version {version} is not newer than the held version {held}")]
    Stale {
        /// Content id.
        id: String,
        /// Offered version.
        version: u64,
        /// Held version.
        held: u64,
    },
    /// The database failed before the manifest was written.
    #[error("catalog database: {0}")]
    Db(#[from] sled::Error),
    /// The manifest was written but not flushed. It was taken out again, but sled's background
    /// flush may have persisted it already, so the blobs it names must stay.
    #[error("catalog database: the manifest was written but not flushed: {0}")]
    Unflushed(#[source] sled::Error),
}

/// Verified manifests, persisted and in memory.
#[derive(Debug)]
pub struct Catalog {
    manifests: sled::Tree,
    trusted: Vec<VerifyingKey>,
    contents: RwLock<HashMap<ContentId, Versions>>,
    /// Every blob (init segment, segment) some held manifest names: whether a blob belongs
    /// to held content is a lookup, not a scan of every manifest.
    blobs: RwLock<HashSet<Hash32>>,
}

/// The blobs `manifest` names.
fn named_blobs(manifest: &Manifest) -> impl Iterator<Item = Hash32> + '_ {
    let init = manifest.hls.init.iter().map(|i| i.hash);
    init.chain(manifest.segments.iter().map(|s| s.hash))
}

impl Catalog {
    /// Loads the catalog from `db`, re-verifying every stored manifest against `trusted`.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn open(db: &sled::Db, trusted: Vec<VerifyingKey>) -> anyhow::Result<Self> {
        let manifests = db
            .open_tree(MANIFESTS_TREE)
            .context("opening manifests tree")?;
        let mut contents: HashMap<ContentId, Versions> = HashMap::new();
        let mut blobs = HashSet::new();
        for entry in manifests.iter() {
            let (key, value) = entry.context("reading manifests tree")?;
            let signed =
                match SignedManifest::decode(&value).and_then(|s| s.verify(&trusted).map(|()| s)) {
                    Ok(signed) => signed,
                    Err(err) => {
                        tracing::error!(
                            key = %String::from_utf8_lossy(&key),
                            error = %err,
                            "stored manifest fails verification; not loaded"
                        );
                        continue;
                    }
                };
            let id = signed.manifest.content_id.clone();
            let version = signed.manifest.version;
            blobs.extend(named_blobs(&signed.manifest));
            contents
                .entry(id)
                .or_default()
                .all
                .insert(version, Arc::new(Published::new(signed)));
        }
        Ok(Self {
            manifests,
            trusted,
            contents: RwLock::new(contents),
            blobs: RwLock::new(blobs),
        })
    }

    /// Forgets every stored version that `keep` refuses (given its key, as the manifests tree
    /// holds it, and the version), on disk and in memory; returns them. What a standby does with versions its primary
    /// never had (a former primary's writes that no standby acknowledged): serving them would
    /// hand edges versions the new primary will publish differently.
    ///
    /// # Errors
    /// sled fails (what was forgotten before stays forgotten).
    pub fn retain(
        &self,
        keep: impl Fn(&[u8], &Published) -> bool,
    ) -> sled::Result<Vec<(ContentId, u64)>> {
        let doomed: Vec<(ContentId, u64)> = {
            let contents = self.contents.read();
            contents
                .iter()
                .flat_map(|(id, v)| v.all.iter().map(move |(ver, p)| (id, *ver, p)))
                .filter(|(id, ver, p)| !keep(&key(id, *ver), p))
                .map(|(id, ver, _)| (id.clone(), ver))
                .collect()
        };
        if doomed.is_empty() {
            return Ok(doomed);
        }
        for (id, version) in &doomed {
            self.manifests.remove(key(id, *version))?;
        }
        super::flush(&self.manifests)?;
        let mut contents = self.contents.write();
        for (id, version) in &doomed {
            if let Some(v) = contents.get_mut(id) {
                v.all.remove(version);
                if v.all.is_empty() {
                    contents.remove(id);
                }
            }
        }
        let blobs = contents
            .values()
            .flat_map(|v| v.all.values())
            .flat_map(|p| named_blobs(p.manifest()).collect::<Vec<_>>())
            .collect();
        drop(contents);
        *self.blobs.write() = blobs;
        Ok(doomed)
    }

    /// The publisher keys this catalog trusts.
    pub fn trusted(&self) -> &[VerifyingKey] {
        &self.trusted
    }

    /// Verifies and durably stores a manifest newer than any held for its id.
    ///
    /// The write is flushed to disk before this returns, so an acknowledged publish survives a
    /// crash.
    ///
    /// # Errors
    /// [`CatalogError`].
    pub fn publish(&self, signed: SignedManifest) -> Result<Arc<Published>, CatalogError> {
        signed.verify(&self.trusted)?;
        let id = signed.manifest.content_id.clone();
        let version = signed.manifest.version;
        if let Some(held) = self.latest(&id) {
            if held.manifest().version >= version {
                return Err(CatalogError::Stale {
                    id: id.to_string(),
                    version,
                    held: held.manifest().version,
                });
            }
        }
        let published = Arc::new(Published::new(signed));
        let key = key(&id, version);
        self.manifests.insert(&key, published.encoded.as_ref())?;
        if let Err(err) = super::flush(&self.manifests) {
            let _ = self.manifests.remove(&key);
            return Err(CatalogError::Unflushed(err));
        }
        self.blobs.write().extend(named_blobs(published.manifest()));
        self.contents
            .write()
            .entry(id)
            .or_default()
            .all
            .insert(version, Arc::clone(&published));
        Ok(published)
    }

    /// The latest version of a content.
    pub fn latest(&self, id: &ContentId) -> Option<Arc<Published>> {
        self.contents
            .read()
            .get(id)
            .and_then(|v| v.latest().cloned())
    }

    /// A given version of a content.
    pub fn version(&self, id: &ContentId, version: u64) -> Option<Arc<Published>> {
        self.contents
            .read()
            .get(id)
            .and_then(|v| v.all.get(&version).cloned())
    }

    /// The longest segment duration (ms) and the largest segment size (bytes) over every
    /// version of a content: what one served segment can at most account for.
    pub fn segment_bounds(&self, id: &str) -> Option<(u64, u64)> {
        let id = ContentId::new(id).ok()?;
        let contents = self.contents.read();
        let segments = contents
            .get(&id)?
            .all
            .values()
            .flat_map(|p| p.manifest().segments.iter());
        segments.fold(None, |most, s| {
            let (d, z) = most.unwrap_or((0, 0));
            Some((d.max(u64::from(s.duration_ms)), z.max(s.size)))
        })
    }

    /// The latest version of every content, sorted by id.
    pub fn list(&self) -> Vec<Arc<Published>> {
        let mut all: Vec<_> = self
            .contents
            .read()
            .values()
            .filter_map(|v| v.latest().cloned())
            .collect();
        all.sort_by(|a, b| a.manifest().content_id.cmp(&b.manifest().content_id));
        all
    }

    /// Every held version of every content, by id then version.
    pub fn all_versions(&self) -> Vec<Arc<Published>> {
        let mut all: Vec<_> = self
            .contents
            .read()
            .values()
            .flat_map(|v| v.all.values().cloned())
            .collect();
        all.sort_by(|a, b| {
            let (a, b) = (a.manifest(), b.manifest());
            (&a.content_id, a.version).cmp(&(&b.content_id, b.version))
        });
        all
    }

    /// Whether some held manifest (of any version) names the blob `hash`.
    pub fn names_blob(&self, hash: &Hash32) -> bool {
        self.blobs.read().contains(hash)
    }

    /// Number of content ids held.
    pub fn len(&self) -> usize {
        self.contents.read().len()
    }

    /// Whether the catalog is empty.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn key(id: &ContentId, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.as_str().len() + 9);
    key.extend_from_slice(id.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use mhc_manifest::{HlsParams, MediaKind, SegmentFormat, SegmentInfo};

    use super::*;

    fn manifest(id: &str, version: u64) -> Manifest {
        let segments = (0..3u8)
            .map(|i| SegmentInfo {
                duration_ms: 2000,
                size: 10,
                hash: *blake3::hash(&[i; 10]).as_bytes(),
            })
            .collect();
        let hls = HlsParams {
            target_duration_s: 2,
            segment_format: SegmentFormat::Ts,
            codecs: None,
            bandwidth_bps: 40,
            average_bandwidth_bps: 40,
            init: None,
        };
        Manifest::new(
            ContentId::new(id).unwrap(),
            version,
            "t",
            "a",
            MediaKind::Video,
            hls,
            segments,
        )
        .unwrap()
    }

    fn db() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::core::open_db(&dir.path().join("db")).unwrap();
        (dir, db)
    }

    #[test]
    fn only_trusted_publishers_and_newer_versions_enter() {
        let (_dir, db) = db();
        let ours = SigningKey::from_bytes(&[1; 32]);
        let theirs = SigningKey::from_bytes(&[2; 32]);
        let catalog = Catalog::open(&db, vec![ours.verifying_key()]).unwrap();

        let err = catalog.publish(manifest("a", 1).sign(&theirs)).unwrap_err();
        assert!(err.to_string().contains("not a trusted key"), "{err}");
        assert!(catalog.latest(&ContentId::new("a").unwrap()).is_none());

        let mut forged = manifest("a", 1).sign(&ours);
        forged.manifest.title = "changed after signing".into();
        assert!(catalog.publish(forged).is_err());

        catalog.publish(manifest("a", 1).sign(&ours)).unwrap();
        catalog.publish(manifest("a", 2).sign(&ours)).unwrap();
        let stale = catalog.publish(manifest("a", 2).sign(&ours)).unwrap_err();
        assert!(
            matches!(stale, CatalogError::Stale { held: 2, .. }),
            "{stale}"
        );
        let id = ContentId::new("a").unwrap();
        assert_eq!(catalog.latest(&id).unwrap().manifest().version, 2);
        assert_eq!(catalog.version(&id, 1).unwrap().manifest().version, 1);
    }

    #[test]
    fn the_blob_index_names_what_held_manifests_name_also_after_reopening() {
        let (_dir, db) = db();
        let ours = SigningKey::from_bytes(&[1; 32]);
        let theirs = SigningKey::from_bytes(&[2; 32]);
        let catalog = Catalog::open(&db, vec![ours.verifying_key()]).unwrap();
        let segment = *blake3::hash(&[1u8; 10]).as_bytes();
        assert!(!catalog.names_blob(&segment));
        assert!(catalog.publish(manifest("a", 1).sign(&theirs)).is_err());
        assert!(
            !catalog.names_blob(&segment),
            "a refused manifest names nothing"
        );
        catalog.publish(manifest("a", 1).sign(&ours)).unwrap();
        assert!(catalog.names_blob(&segment));
        assert!(!catalog.names_blob(blake3::hash(b"other").as_bytes()));
        drop(catalog);
        let catalog = Catalog::open(&db, vec![ours.verifying_key()]).unwrap();
        assert!(catalog.names_blob(&segment));
    }

    #[test]
    fn reopening_reverifies_and_skips_tampered_entries() {
        let (_dir, db) = db();
        let ours = SigningKey::from_bytes(&[1; 32]);
        let catalog = Catalog::open(&db, vec![ours.verifying_key()]).unwrap();
        catalog.publish(manifest("good", 1).sign(&ours)).unwrap();
        catalog.publish(manifest("bad", 1).sign(&ours)).unwrap();
        drop(catalog);

        // Flip one byte of the stored "bad" manifest, as bit-rot or an attacker with disk access.
        let tree = db.open_tree(MANIFESTS_TREE).unwrap();
        let key = key(&ContentId::new("bad").unwrap(), 1);
        let mut value = tree.get(&key).unwrap().unwrap().to_vec();
        let last = value.len() - 1;
        value[last] ^= 0x80;
        tree.insert(&key, value).unwrap();

        let catalog = Catalog::open(&db, vec![ours.verifying_key()]).unwrap();
        assert!(catalog.latest(&ContentId::new("good").unwrap()).is_some());
        assert!(catalog.latest(&ContentId::new("bad").unwrap()).is_none());

        // A node that stops trusting the publisher stops serving its manifests.
        let other = SigningKey::from_bytes(&[3; 32]);
        let catalog = Catalog::open(&db, vec![other.verifying_key()]).unwrap();
        assert!(catalog.is_empty());
    }

    #[test]
    fn proof_headers_verify_against_the_root() {
        let (_dir, db) = db();
        let key = SigningKey::from_bytes(&[1; 32]);
        let catalog = Catalog::open(&db, vec![key.verifying_key()]).unwrap();
        let p = catalog.publish(manifest("a", 1).sign(&key)).unwrap();
        let m = p.manifest();
        for i in 0..3 {
            let h = p.segment_headers(i);
            assert!(mhc_manifest::verify_segment(
                &m.merkle_root,
                i,
                3,
                &m.segments[i].hash,
                h.proof_hex.to_str().unwrap()
            ));
            assert_eq!(h.index.to_str().unwrap(), format!("{i}/3"));
        }
    }
}
