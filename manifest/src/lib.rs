//! Signed Merkle manifests of mhc content and HLS media playlists. No I/O.
//!
//! # Trust model
//!
//! - A publisher (origin) holds an Ed25519 key and signs one [`Manifest`] per content version;
//!   the signature covers [`MANIFEST_DOMAIN_TAG`] followed by the manifest's postcard bytes.
//! - Nodes accept a [`SignedManifest`] only if [`SignedManifest::verify`] succeeds: the
//!   publisher key is in the node's configured trusted set and the strict signature is valid.
//! - The manifest lists every segment's BLAKE3 hash and their Merkle root; a node checks each
//!   segment it stores or relays against that hash, so peers need not be trusted.
//! - A player that holds only the (signed) root checks one segment with the [`SegmentProof`]
//!   sent in the `X-Mhc-Merkle-Proof` header ([`verify_segment`]).
//! - Rendered playlists use relative URIs only, so any node can serve them unchanged.
//!
//! # Modules
//!
//! - content ids: [`ContentId`], [`Hash32`]
//! - Merkle tree and proofs: [`merkle_root`], [`SegmentProof`], [`verify_segment`]
//! - manifests: [`Manifest`], [`SignedManifest`] and their parts
//! - HLS playlists: [`parse_media_playlist`], [`render_media_playlist`]

mod hls;
mod id;
mod manifest;
mod merkle;
mod serde_hex;

pub use hls::{
    init_uri, parse_media_playlist, render_media_playlist, segment_uri, MediaPlaylist,
    PlaylistError, PlaylistSegment, PlaylistType, INIT_SEGMENT_URI, MAX_PLAYLIST_LINE_BYTES,
};
pub use id::{ContentId, Hash32, InvalidContentId, MAX_CONTENT_ID_LEN};
pub use manifest::{
    HlsParams, InitSegment, Manifest, ManifestError, MediaKind, SegmentFormat, SegmentInfo,
    SignedManifest, MANIFEST_DOMAIN_TAG, MANIFEST_FORMAT_VERSION, MAX_ARTIST_ID_BYTES,
    MAX_CODECS_BYTES, MAX_ENCODED_MANIFEST_BYTES, MAX_SEGMENTS, MAX_TITLE_BYTES,
};
pub use merkle::{
    merkle_root, verify_segment, Blake3Hasher, ProofError, SegmentProof, MAX_PROOF_HASHES,
    MERKLE_NODE_PREFIX,
};
