//! Names and fixed values of the viewer plane's HTTP headers: the wire contract players and
//! CDNs in front of a node see.

/// BLAKE3 of the segment body, lowercase hex.
pub const X_MHC_SEGMENT_HASH: &str = "x-mhc-segment-hash";
/// Signed Merkle root of the manifest the segment belongs to, lowercase hex.
pub const X_MHC_MERKLE_ROOT: &str = "x-mhc-merkle-root";
/// Inclusion proof of the segment under that root: concatenated 32-byte hashes, lowercase hex.
pub const X_MHC_MERKLE_PROOF: &str = "x-mhc-merkle-proof";
/// Index of the segment in the manifest (0-based) and the manifest's segment count, `i/n`.
pub const X_MHC_SEGMENT_INDEX: &str = "x-mhc-segment-index";
/// Manifest version the response was served from.
pub const X_MHC_CONTENT_VERSION: &str = "x-mhc-content-version";

/// `Cache-Control` of content-addressed bodies (segments, a manifest fetched by version):
/// their URL never names other bytes, so caches may keep them for a year without revalidating.
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of "latest" documents (playlists, manifests, listings): a new version can be
/// published at any time; a short lifetime plus an `ETag` keeps revalidation cheap.
pub const CACHE_SHORT: &str = "public, max-age=5";
/// `Cache-Control` of answers that must not be cached (routing, cluster view, metrics, errors).
pub const CACHE_NONE: &str = "no-store";

/// Response headers a browser player (hls.js) is allowed to read cross-origin.
pub const CORS_EXPOSE_HEADERS: &str = "content-length, content-range, etag, x-mhc-segment-hash, \
     x-mhc-merkle-root, x-mhc-merkle-proof, x-mhc-segment-index, x-mhc-content-version";
/// Request headers a browser player may send cross-origin.
pub const CORS_ALLOW_HEADERS: &str = "range, if-none-match, if-range";
/// Methods of the viewer plane.
pub const ALLOW_METHODS: &str = "GET, HEAD, OPTIONS";
/// How long a browser may cache a preflight answer, in seconds.
pub const CORS_MAX_AGE_S: &str = "86400";

/// `Content-Type` of an HLS playlist.
pub const CONTENT_TYPE_M3U8: &str = "application/vnd.apple.mpegurl";
/// `Content-Type` of a postcard-encoded signed manifest.
pub const CONTENT_TYPE_MANIFEST: &str = "application/vnd.mhc.manifest";
/// `Content-Type` of an fMP4 initialisation segment.
pub const CONTENT_TYPE_INIT_MP4: &str = "video/mp4";
