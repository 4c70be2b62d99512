//! The per-version content manifest, its signed envelope and their binary encoding.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::id::{ContentId, Hash32};
use crate::merkle::{merkle_root, ProofError, SegmentProof};
use crate::serde_hex;

/// Domain tag prefixed to the postcard bytes of a [`Manifest`] before signing.
pub const MANIFEST_DOMAIN_TAG: &[u8] = b"mhc-manifest-v1";
/// First byte of [`SignedManifest::encode`] output.
pub const MANIFEST_FORMAT_VERSION: u8 = 1;
/// Maximum number of segments in one manifest.
pub const MAX_SEGMENTS: usize = 100_000;
/// Maximum size of an encoded [`SignedManifest`] accepted by [`SignedManifest::decode`].
pub const MAX_ENCODED_MANIFEST_BYTES: usize = 8 * 1024 * 1024;
/// Maximum length of [`Manifest::title`] in bytes.
pub const MAX_TITLE_BYTES: usize = 256;
/// Maximum length of [`Manifest::artist_id`] in bytes.
pub const MAX_ARTIST_ID_BYTES: usize = 128;
/// Maximum length of [`HlsParams::codecs`] in bytes.
pub const MAX_CODECS_BYTES: usize = 128;

/// Why a manifest is malformed, undecodable or untrusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The manifest lists no segments.
    #[error("manifest has no segments")]
    NoSegments,
    /// More than [`MAX_SEGMENTS`] segments.
    #[error("manifest has {count} segments; at most {MAX_SEGMENTS} allowed")]
    TooManySegments {
        /// Number of segments found.
        count: usize,
    },
    /// The title is empty.
    #[error("title is empty")]
    EmptyTitle,
    /// The title is longer than [`MAX_TITLE_BYTES`].
    #[error("title is {len} bytes long; at most {MAX_TITLE_BYTES} allowed")]
    TitleTooLong {
        /// Title length in bytes.
        len: usize,
    },
    /// The artist id is empty or longer than [`MAX_ARTIST_ID_BYTES`].
    #[error("artist_id is {len} bytes long; must be 1..={MAX_ARTIST_ID_BYTES}")]
    BadArtistId {
        /// Artist id length in bytes.
        len: usize,
    },
    /// The codecs string is empty or longer than [`MAX_CODECS_BYTES`].
    #[error("codecs is {len} bytes long; must be 1..={MAX_CODECS_BYTES} when present")]
    BadCodecsLength {
        /// Codecs length in bytes.
        len: usize,
    },
    /// The codecs string holds a character that cannot go in a quoted HLS attribute.
    #[error("codecs contains {found:?} at byte {position}; only printable ASCII without '\"' is allowed")]
    BadCodecsChar {
        /// The offending character.
        found: char,
        /// Its byte offset.
        position: usize,
    },
    /// Version 0 is reserved.
    #[error("version must be at least 1")]
    ZeroVersion,
    /// The HLS target duration is 0.
    #[error("target duration must be at least 1 s")]
    ZeroTargetDuration,
    /// A segment's duration, rounded to whole seconds, exceeds the target duration.
    #[error(
        "segment {index}: duration {duration_ms} ms exceeds target duration {target_duration_s} s"
    )]
    SegmentTooLong {
        /// Zero-based segment index.
        index: usize,
        /// The segment's duration.
        duration_ms: u32,
        /// The manifest's target duration.
        target_duration_s: u32,
    },
    /// The stored Merkle root is not the root of the segment hashes.
    #[error("merkle_root {stored} does not match the segment hashes (expected {computed})")]
    MerkleRootMismatch {
        /// Hex of the stored root.
        stored: String,
        /// Hex of the root computed from the segments.
        computed: String,
    },
    /// fMP4 content without an init segment.
    #[error("segment format fmp4 requires an init segment")]
    MissingInit,
    /// An init segment on a format that has none.
    #[error("segment format {format:?} must not have an init segment")]
    UnexpectedInit {
        /// The segment format.
        format: SegmentFormat,
    },
    /// Decoding was given no bytes.
    #[error("encoded manifest is empty")]
    EmptyInput,
    /// The leading format byte is not [`MANIFEST_FORMAT_VERSION`].
    #[error("unsupported manifest format version {found} (expected {MANIFEST_FORMAT_VERSION})")]
    UnsupportedFormatVersion {
        /// The version byte found.
        found: u8,
    },
    /// The input exceeds [`MAX_ENCODED_MANIFEST_BYTES`].
    #[error("encoded manifest is {size} bytes; at most {MAX_ENCODED_MANIFEST_BYTES} allowed")]
    TooLarge {
        /// Input size in bytes.
        size: usize,
    },
    /// The postcard body could not be decoded.
    #[error("malformed manifest encoding: {0}")]
    Malformed(String),
    /// Bytes remain after the postcard body.
    #[error("{count} trailing bytes after the encoded manifest")]
    TrailingBytes {
        /// Number of unconsumed bytes.
        count: usize,
    },
    /// The body decodes but is not the canonical encoding of what it decodes to.
    #[error("manifest encoding is not canonical")]
    NonCanonical,
    /// The publisher key is not among the trusted keys.
    #[error("manifest publisher {publisher_hex} is not a trusted key")]
    UntrustedPublisher {
        /// Hex of the publisher's public key.
        publisher_hex: String,
    },
    /// The signature does not verify under the publisher key.
    #[error("manifest signature is invalid")]
    BadSignature,
    /// A Merkle proof could not be produced.
    #[error(transparent)]
    Proof(#[from] ProofError),
}

/// What kind of media the content is.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// Audio only.
    Audio,
    /// Video (possibly with audio).
    Video,
}

/// Container format of the media segments.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum SegmentFormat {
    /// MPEG-2 transport stream (`.ts`).
    Ts,
    /// Fragmented MP4 (`.m4s`, with an init segment).
    Fmp4,
    /// Packed ADTS AAC audio (`.aac`).
    Aac,
}

impl SegmentFormat {
    /// File extension of a segment, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Ts => "ts",
            Self::Fmp4 => "m4s",
            Self::Aac => "aac",
        }
    }

    /// HTTP `Content-Type` of a segment.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Ts => "video/mp2t",
            Self::Fmp4 => "video/iso.segment",
            Self::Aac => "audio/aac",
        }
    }

    /// The format whose [`extension`](Self::extension) is `ext` (without the dot).
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext {
            "ts" => Some(Self::Ts),
            "m4s" => Some(Self::Fmp4),
            "aac" => Some(Self::Aac),
            _ => None,
        }
    }

    /// Whether this format uses an init segment (`EXT-X-MAP`).
    pub fn has_init(self) -> bool {
        matches!(self, Self::Fmp4)
    }
}

/// One media segment: its duration, size and BLAKE3 hash (a Merkle leaf).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Duration in milliseconds.
    pub duration_ms: u32,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 hash of the segment bytes.
    #[serde(with = "serde_hex")]
    pub hash: Hash32,
}

/// The fMP4 initialization segment (`EXT-X-MAP`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InitSegment {
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 hash of the init segment bytes.
    #[serde(with = "serde_hex")]
    pub hash: Hash32,
}

/// Parameters needed to render the HLS media playlist and master-playlist entry.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HlsParams {
    /// `EXT-X-TARGETDURATION` in seconds.
    pub target_duration_s: u32,
    /// Container format of the segments.
    pub segment_format: SegmentFormat,
    /// RFC 6381 `CODECS` value, if known.
    pub codecs: Option<String>,
    /// Peak bandwidth (`BANDWIDTH`) in bits per second.
    pub bandwidth_bps: u64,
    /// Average bandwidth (`AVERAGE-BANDWIDTH`) in bits per second.
    pub average_bandwidth_bps: u64,
    /// The init segment; present iff the format is fMP4.
    pub init: Option<InitSegment>,
}

/// Everything a node needs to serve and verify one version of one piece of content.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Content slug.
    pub content_id: ContentId,
    /// Content version, starting at 1; higher supersedes lower.
    pub version: u64,
    /// Human-readable title.
    pub title: String,
    /// Publisher-defined artist identifier.
    pub artist_id: String,
    /// Audio or video.
    pub media_kind: MediaKind,
    /// HLS parameters.
    pub hls: HlsParams,
    /// Segments in playback order.
    pub segments: Vec<SegmentInfo>,
    /// Merkle root over the segment hashes.
    #[serde(with = "serde_hex")]
    pub merkle_root: Hash32,
    /// Ed25519 public key of the signer (all zero until signed).
    #[serde(with = "serde_hex")]
    pub publisher: Hash32,
}

/// A [`Manifest`] with the publisher's Ed25519 signature over [`Manifest::signing_bytes`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    /// The signed manifest.
    pub manifest: Manifest,
    /// Ed25519 signature.
    #[serde(with = "serde_hex")]
    pub signature: [u8; 64],
}

impl Manifest {
    /// Builds a manifest, computing the Merkle root from the segment hashes.
    ///
    /// The publisher stays zeroed until [`sign`](Self::sign).
    ///
    /// # Errors
    ///
    /// Any [`validate`](Self::validate) failure.
    pub fn new(
        content_id: ContentId,
        version: u64,
        title: impl Into<String>,
        artist_id: impl Into<String>,
        media_kind: MediaKind,
        hls: HlsParams,
        segments: Vec<SegmentInfo>,
    ) -> Result<Self, ManifestError> {
        if segments.is_empty() {
            return Err(ManifestError::NoSegments);
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(ManifestError::TooManySegments {
                count: segments.len(),
            });
        }
        let merkle_root = merkle_root(&leaf_hashes(&segments)).unwrap_or_default();
        let manifest = Self {
            content_id,
            version,
            title: title.into(),
            artist_id: artist_id.into(),
            media_kind,
            hls,
            segments,
            merkle_root,
            publisher: [0; 32],
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the structural rules (not the signature).
    ///
    /// # Errors
    ///
    /// The first rule broken: segment count `1..=MAX_SEGMENTS`, title `1..=256` bytes,
    /// artist_id `1..=128` bytes, codecs `1..=128` printable-ASCII bytes without `"`,
    /// version ≥ 1, target duration ≥ 1 s and ≥ every segment duration rounded to the nearest
    /// second, Merkle root matching the segments, init present iff the format is fMP4.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let count = self.segments.len();
        if count == 0 {
            return Err(ManifestError::NoSegments);
        }
        if count > MAX_SEGMENTS {
            return Err(ManifestError::TooManySegments { count });
        }
        if self.title.is_empty() {
            return Err(ManifestError::EmptyTitle);
        }
        if self.title.len() > MAX_TITLE_BYTES {
            return Err(ManifestError::TitleTooLong {
                len: self.title.len(),
            });
        }
        if self.artist_id.is_empty() || self.artist_id.len() > MAX_ARTIST_ID_BYTES {
            return Err(ManifestError::BadArtistId {
                len: self.artist_id.len(),
            });
        }
        if let Some(codecs) = &self.hls.codecs {
            if codecs.is_empty() || codecs.len() > MAX_CODECS_BYTES {
                return Err(ManifestError::BadCodecsLength { len: codecs.len() });
            }
            if let Some((position, found)) = codecs
                .char_indices()
                .find(|&(_, c)| !(' '..='~').contains(&c) || c == '"')
            {
                return Err(ManifestError::BadCodecsChar { found, position });
            }
        }
        if self.version == 0 {
            return Err(ManifestError::ZeroVersion);
        }
        let target_duration_s = self.hls.target_duration_s;
        if target_duration_s == 0 {
            return Err(ManifestError::ZeroTargetDuration);
        }
        for (index, seg) in self.segments.iter().enumerate() {
            // RFC 8216 §4.3.3.1: EXTINF rounded to the nearest integer must be <= target.
            let rounded_s = (u64::from(seg.duration_ms) + 500) / 1000;
            if rounded_s > u64::from(target_duration_s) {
                return Err(ManifestError::SegmentTooLong {
                    index,
                    duration_ms: seg.duration_ms,
                    target_duration_s,
                });
            }
        }
        let format = self.hls.segment_format;
        match (format.has_init(), &self.hls.init) {
            (true, None) => return Err(ManifestError::MissingInit),
            (false, Some(_)) => return Err(ManifestError::UnexpectedInit { format }),
            _ => {}
        }
        let computed = merkle_root(&self.leaf_hashes()).unwrap_or_default();
        if computed != self.merkle_root {
            return Err(ManifestError::MerkleRootMismatch {
                stored: hex::encode(self.merkle_root),
                computed: hex::encode(computed),
            });
        }
        Ok(())
    }

    /// The segment hashes in order (the Merkle leaves).
    pub fn leaf_hashes(&self) -> Vec<Hash32> {
        leaf_hashes(&self.segments)
    }

    /// The bytes the publisher signs: `MANIFEST_DOMAIN_TAG ‖ postcard(self)`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        postcard::to_extend(self, MANIFEST_DOMAIN_TAG.to_vec())
            .expect("postcard serialization of a Manifest cannot fail")
    }

    /// Sets the publisher to `key`'s public key and signs [`signing_bytes`](Self::signing_bytes).
    pub fn sign(mut self, key: &SigningKey) -> SignedManifest {
        self.publisher = key.verifying_key().to_bytes();
        let signature = key.sign(&self.signing_bytes()).to_bytes();
        SignedManifest {
            manifest: self,
            signature,
        }
    }

    /// Merkle inclusion proof for segment `index`.
    ///
    /// # Errors
    ///
    /// [`ManifestError::Proof`] if `index` is out of range.
    pub fn segment_proof(&self, index: usize) -> Result<SegmentProof, ManifestError> {
        Ok(SegmentProof::for_index(&self.leaf_hashes(), index)?)
    }

    /// Sum of the segment durations in milliseconds.
    pub fn total_duration_ms(&self) -> u64 {
        self.segments.iter().map(|s| u64::from(s.duration_ms)).sum()
    }

    /// Sum of the segment sizes plus the init segment size, in bytes (saturating).
    pub fn total_bytes(&self) -> u64 {
        let init = self.hls.init.as_ref().map_or(0, |i| i.size);
        self.segments
            .iter()
            .fold(init, |acc, s| acc.saturating_add(s.size))
    }
}

fn leaf_hashes(segments: &[SegmentInfo]) -> Vec<Hash32> {
    segments.iter().map(|s| s.hash).collect()
}

impl SignedManifest {
    /// Binary form: `[MANIFEST_FORMAT_VERSION] ‖ postcard(self)`.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_extend(self, vec![MANIFEST_FORMAT_VERSION])
            .expect("postcard serialization of a SignedManifest cannot fail")
    }

    /// Parses [`encode`](Self::encode) output and checks its structure (not its signature).
    ///
    /// # Errors
    ///
    /// Empty input, input over [`MAX_ENCODED_MANIFEST_BYTES`], an unknown format version,
    /// malformed, trailing or non-canonical postcard, or any [`Manifest::validate`] failure.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        let (&version, body) = bytes.split_first().ok_or(ManifestError::EmptyInput)?;
        if bytes.len() > MAX_ENCODED_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge { size: bytes.len() });
        }
        if version != MANIFEST_FORMAT_VERSION {
            return Err(ManifestError::UnsupportedFormatVersion { found: version });
        }
        let (signed, rest): (Self, _) =
            postcard::take_from_bytes(body).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(ManifestError::TrailingBytes { count: rest.len() });
        }
        // One signed manifest has exactly one encoding, so manifest_hash is unique to it.
        if signed.encode() != bytes {
            return Err(ManifestError::NonCanonical);
        }
        signed.manifest.validate()?;
        Ok(signed)
    }

    /// Checks that the publisher is trusted, the signature is valid (strict Ed25519) and
    /// the manifest is structurally valid.
    ///
    /// # Errors
    ///
    /// [`ManifestError::UntrustedPublisher`] if the publisher is not in `trusted`,
    /// [`ManifestError::BadSignature`] if the signature does not verify, or any
    /// [`Manifest::validate`] failure.
    pub fn verify(&self, trusted: &[VerifyingKey]) -> Result<(), ManifestError> {
        let key = trusted
            .iter()
            .find(|k| k.as_bytes() == &self.manifest.publisher)
            .ok_or_else(|| ManifestError::UntrustedPublisher {
                publisher_hex: hex::encode(self.manifest.publisher),
            })?;
        let signature = Signature::from_bytes(&self.signature);
        key.verify_strict(&self.manifest.signing_bytes(), &signature)
            .map_err(|_| ManifestError::BadSignature)?;
        self.manifest.validate()
    }

    /// BLAKE3 of [`encode`](Self::encode): identifies this exact signed manifest.
    pub fn manifest_hash(&self) -> Hash32 {
        *blake3::hash(&self.encode()).as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(i: u32, duration_ms: u32) -> SegmentInfo {
        SegmentInfo {
            duration_ms,
            size: 1000 + u64::from(i),
            hash: *blake3::hash(&i.to_le_bytes()).as_bytes(),
        }
    }

    fn hls_ts() -> HlsParams {
        HlsParams {
            target_duration_s: 2,
            segment_format: SegmentFormat::Ts,
            codecs: Some("mp4a.40.2".into()),
            bandwidth_bps: 200_000,
            average_bandwidth_bps: 128_000,
            init: None,
        }
    }

    fn hls_fmp4() -> HlsParams {
        HlsParams {
            segment_format: SegmentFormat::Fmp4,
            codecs: Some("avc1.64001f,mp4a.40.2".into()),
            init: Some(InitSegment {
                size: 800,
                hash: [9; 32],
            }),
            ..hls_ts()
        }
    }

    fn manifest(n: u32) -> Manifest {
        Manifest::new(
            ContentId::new("song-1").unwrap(),
            1,
            "A Song",
            "artist-7",
            MediaKind::Audio,
            hls_ts(),
            (0..n).map(|i| seg(i, 2000)).collect(),
        )
        .unwrap()
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn new_computes_root_and_totals() {
        let m = manifest(3);
        assert_eq!(m.merkle_root, merkle_root(&m.leaf_hashes()).unwrap());
        assert_eq!(m.publisher, [0; 32]);
        assert_eq!(m.total_duration_ms(), 6000);
        assert_eq!(m.total_bytes(), 1000 + 1001 + 1002);
        let mut f = m.clone();
        f.hls = hls_fmp4();
        f.validate().unwrap();
        assert_eq!(f.total_bytes(), 3003 + 800);
    }

    #[test]
    fn segment_proofs_verify_against_root() {
        let m = manifest(5);
        for i in 0..5 {
            let p = m.segment_proof(i).unwrap();
            assert!(p.verify(&m.merkle_root, i, &m.segments[i].hash, 5));
        }
        assert!(matches!(
            m.segment_proof(5),
            Err(ManifestError::Proof(ProofError::IndexOutOfRange {
                index: 5,
                total: 5
            }))
        ));
    }

    #[test]
    fn sign_verify_roundtrip() {
        let k = key(1);
        let signed = manifest(3).sign(&k);
        assert_eq!(signed.manifest.publisher, k.verifying_key().to_bytes());
        signed.verify(&[k.verifying_key()]).unwrap();
        signed
            .verify(&[key(2).verifying_key(), k.verifying_key()])
            .unwrap();
        let decoded = SignedManifest::decode(&signed.encode()).unwrap();
        assert_eq!(decoded, signed);
        decoded.verify(&[k.verifying_key()]).unwrap();
        assert_eq!(decoded.manifest_hash(), signed.manifest_hash());
    }

    #[test]
    fn signing_bytes_are_tagged_postcard() {
        let m = manifest(1);
        let b = m.signing_bytes();
        assert!(b.starts_with(MANIFEST_DOMAIN_TAG));
        assert_eq!(
            &b[MANIFEST_DOMAIN_TAG.len()..],
            &postcard::to_allocvec(&m).unwrap()[..]
        );
    }

    #[test]
    fn untrusted_publisher_rejected() {
        let signed = manifest(2).sign(&key(1));
        let err = signed.verify(&[key(2).verifying_key()]).unwrap_err();
        assert_eq!(
            err,
            ManifestError::UntrustedPublisher {
                publisher_hex: hex::encode(key(1).verifying_key().to_bytes())
            }
        );
        assert!(matches!(
            signed.verify(&[]),
            Err(ManifestError::UntrustedPublisher { .. })
        ));
    }

    #[test]
    fn tampering_breaks_signature() {
        let k = key(1);
        let trusted = [k.verifying_key()];
        let mut signed = manifest(2).sign(&k);
        signed.manifest.title.push('!');
        assert_eq!(signed.verify(&trusted), Err(ManifestError::BadSignature));

        // Re-pointing the publisher at another trusted key does not help.
        let k2 = key(2);
        let mut signed = manifest(2).sign(&k);
        signed.manifest.publisher = k2.verifying_key().to_bytes();
        assert_eq!(
            signed.verify(&[k.verifying_key(), k2.verifying_key()]),
            Err(ManifestError::BadSignature)
        );

        let mut signed = manifest(2).sign(&k);
        signed.signature[10] ^= 1;
        assert_eq!(signed.verify(&trusted), Err(ManifestError::BadSignature));
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let k = key(3);
        let trusted = [k.verifying_key()];
        let encoded = manifest(2).sign(&k).encode();
        for pos in 0..encoded.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = encoded.clone();
                bad[pos] ^= mask;
                let accepted = SignedManifest::decode(&bad)
                    .and_then(|s| s.verify(&trusted))
                    .is_ok();
                assert!(!accepted, "flip {mask:#x} at byte {pos} accepted");
            }
        }
        // Truncations never panic and are rejected.
        for len in 0..encoded.len() {
            assert!(SignedManifest::decode(&encoded[..len]).is_err());
        }
    }

    #[test]
    fn encode_layout() {
        let signed = manifest(4).sign(&key(1));
        let enc = signed.encode();
        assert_eq!(enc[0], MANIFEST_FORMAT_VERSION);
        assert_eq!(&enc[1..], &postcard::to_allocvec(&signed).unwrap()[..]);
        // Hashes are raw 32-byte tuples: 4 segments, root, publisher, 64-byte signature.
        assert!(
            enc.len() < 4 * (32 + 8) + 32 + 32 + 64 + 80,
            "{}",
            enc.len()
        );
        assert_eq!(
            signed.manifest_hash(),
            *blake3::hash(&signed.encode()).as_bytes()
        );
    }

    #[test]
    fn decode_rejections() {
        let signed = manifest(2).sign(&key(1));
        let enc = signed.encode();

        assert_eq!(SignedManifest::decode(&[]), Err(ManifestError::EmptyInput));

        let mut v2 = enc.clone();
        v2[0] = 2;
        assert_eq!(
            SignedManifest::decode(&v2),
            Err(ManifestError::UnsupportedFormatVersion { found: 2 })
        );

        let mut trailing = enc.clone();
        trailing.push(0);
        assert_eq!(
            SignedManifest::decode(&trailing),
            Err(ManifestError::TrailingBytes { count: 1 })
        );

        let big = vec![1u8; MAX_ENCODED_MANIFEST_BYTES + 1];
        assert_eq!(
            SignedManifest::decode(&big),
            Err(ManifestError::TooLarge {
                size: MAX_ENCODED_MANIFEST_BYTES + 1
            })
        );

        assert!(matches!(
            SignedManifest::decode(&[1, 0xff, 0xff]),
            Err(ManifestError::Malformed(_))
        ));

        // Structurally invalid but well-formed: decode runs validate().
        let mut invalid = signed.clone();
        invalid.manifest.version = 0;
        assert_eq!(
            SignedManifest::decode(&invalid.encode()),
            Err(ManifestError::ZeroVersion)
        );
    }

    #[test]
    fn non_canonical_varint_rejected() {
        // version = 1 is encoded as the single varint byte 0x01 right after the content id;
        // re-encode it as the overlong 0x81 0x00 and fix nothing else.
        let signed = manifest(1).sign(&key(1));
        let enc = signed.encode();
        let id_len = signed.manifest.content_id.as_str().len();
        let version_pos = 1 + 1 + id_len;
        assert_eq!(enc[version_pos], 1);
        let mut overlong = enc[..version_pos].to_vec();
        overlong.extend_from_slice(&[0x81, 0x00]);
        overlong.extend_from_slice(&enc[version_pos + 1..]);
        // postcard itself accepts overlong varints; the canonical re-encoding check does not.
        assert_eq!(
            SignedManifest::decode(&overlong),
            Err(ManifestError::NonCanonical)
        );
    }

    #[test]
    fn json_shows_hex() {
        let signed = manifest(1).sign(&key(1));
        let v: serde_json::Value = serde_json::to_value(&signed).unwrap();
        let m = &v["manifest"];
        assert_eq!(m["content_id"], "song-1");
        assert_eq!(m["media_kind"], "audio");
        assert_eq!(m["hls"]["segment_format"], "ts");
        assert_eq!(m["merkle_root"], hex::encode(signed.manifest.merkle_root));
        assert_eq!(m["publisher"], hex::encode(signed.manifest.publisher));
        assert_eq!(
            m["segments"][0]["hash"],
            hex::encode(signed.manifest.segments[0].hash)
        );
        assert_eq!(v["signature"], hex::encode(signed.signature));
        let back: SignedManifest = serde_json::from_value(v).unwrap();
        assert_eq!(back, signed);
    }

    fn expect_invalid(f: impl FnOnce(&mut Manifest), expected: ManifestError) {
        let mut m = manifest(3);
        f(&mut m);
        assert_eq!(m.validate(), Err(expected.clone()));
        let err = expected.to_string();
        assert!(!err.is_empty());
    }

    #[test]
    fn validation_rules() {
        expect_invalid(
            |m| {
                m.segments.clear();
            },
            ManifestError::NoSegments,
        );
        expect_invalid(|m| m.title.clear(), ManifestError::EmptyTitle);
        expect_invalid(
            |m| m.title = "x".repeat(257),
            ManifestError::TitleTooLong { len: 257 },
        );
        expect_invalid(
            |m| m.artist_id.clear(),
            ManifestError::BadArtistId { len: 0 },
        );
        expect_invalid(
            |m| m.artist_id = "a".repeat(129),
            ManifestError::BadArtistId { len: 129 },
        );
        expect_invalid(
            |m| m.hls.codecs = Some("a".repeat(129)),
            ManifestError::BadCodecsLength { len: 129 },
        );
        expect_invalid(
            |m| m.hls.codecs = Some(String::new()),
            ManifestError::BadCodecsLength { len: 0 },
        );
        expect_invalid(
            |m| m.hls.codecs = Some("mp4a\",x".into()),
            ManifestError::BadCodecsChar {
                found: '"',
                position: 4,
            },
        );
        expect_invalid(
            |m| m.hls.codecs = Some("mp4a\n".into()),
            ManifestError::BadCodecsChar {
                found: '\n',
                position: 4,
            },
        );
        expect_invalid(|m| m.version = 0, ManifestError::ZeroVersion);
        expect_invalid(
            |m| m.hls.target_duration_s = 0,
            ManifestError::ZeroTargetDuration,
        );
        expect_invalid(
            |m| {
                m.hls.init = Some(InitSegment {
                    size: 1,
                    hash: [0; 32],
                })
            },
            ManifestError::UnexpectedInit {
                format: SegmentFormat::Ts,
            },
        );
        expect_invalid(
            |m| m.hls.segment_format = SegmentFormat::Fmp4,
            ManifestError::MissingInit,
        );
        expect_invalid(
            |m| {
                m.hls.segment_format = SegmentFormat::Aac;
                m.hls.init = Some(InitSegment {
                    size: 1,
                    hash: [0; 32],
                });
            },
            ManifestError::UnexpectedInit {
                format: SegmentFormat::Aac,
            },
        );
        let m = manifest(3);
        let computed = hex::encode(m.merkle_root);
        expect_invalid(
            |m| m.segments[1].hash[0] ^= 1,
            ManifestError::MerkleRootMismatch {
                stored: computed.clone(),
                computed: hex::encode(
                    merkle_root(
                        &m.segments
                            .iter()
                            .enumerate()
                            .map(|(i, s)| {
                                let mut h = s.hash;
                                if i == 1 {
                                    h[0] ^= 1;
                                }
                                h
                            })
                            .collect::<Vec<_>>(),
                    )
                    .unwrap(),
                ),
            },
        );
        expect_invalid(
            |m| m.merkle_root = [0; 32],
            ManifestError::MerkleRootMismatch {
                stored: hex::encode([0u8; 32]),
                computed,
            },
        );
    }

    #[test]
    fn segment_duration_vs_target() {
        let err = ManifestError::SegmentTooLong {
            index: 3,
            duration_ms: 4200,
            target_duration_s: 2,
        };
        assert_eq!(
            err.to_string(),
            "segment 3: duration 4200 ms exceeds target duration 2 s"
        );
        expect_invalid(|m| m.segments[2].duration_ms = 4200, {
            ManifestError::SegmentTooLong {
                index: 2,
                duration_ms: 4200,
                target_duration_s: 2,
            }
        });
        // 2.499 s rounds to 2 (allowed); 2.5 s rounds to 3 (rejected).
        let mut m = manifest(3);
        m.segments[0].duration_ms = 2499;
        m.validate().unwrap();
        m.segments[0].duration_ms = 2500;
        assert!(matches!(
            m.validate(),
            Err(ManifestError::SegmentTooLong { index: 0, .. })
        ));
    }

    #[test]
    fn too_many_segments() {
        let segs = vec![seg(0, 1000); MAX_SEGMENTS + 1];
        let err = Manifest::new(
            ContentId::new("x").unwrap(),
            1,
            "t",
            "a",
            MediaKind::Video,
            hls_ts(),
            segs,
        )
        .unwrap_err();
        assert_eq!(
            err,
            ManifestError::TooManySegments {
                count: MAX_SEGMENTS + 1
            }
        );
        assert_eq!(
            Manifest::new(
                ContentId::new("x").unwrap(),
                1,
                "t",
                "a",
                MediaKind::Video,
                hls_ts(),
                vec![],
            ),
            Err(ManifestError::NoSegments)
        );
    }

    #[test]
    fn segment_format_helpers() {
        for f in [SegmentFormat::Ts, SegmentFormat::Fmp4, SegmentFormat::Aac] {
            assert_eq!(SegmentFormat::from_extension(f.extension()), Some(f));
        }
        assert_eq!(SegmentFormat::Fmp4.extension(), "m4s");
        assert_eq!(SegmentFormat::Ts.content_type(), "video/mp2t");
        assert_eq!(SegmentFormat::Fmp4.content_type(), "video/iso.segment");
        assert_eq!(SegmentFormat::Aac.content_type(), "audio/aac");
        assert_eq!(SegmentFormat::from_extension("mp4"), None);
        assert_eq!(SegmentFormat::from_extension("TS"), None);
    }
}
