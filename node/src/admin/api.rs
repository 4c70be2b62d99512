//! The admin API's wire types: the socket's name and the JSON bodies of its routes, shared by
//! the daemon's server and the CLI's client.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// File name of the admin socket inside `data_dir`.
pub const ADMIN_SOCKET: &str = "admin.sock";

/// `POST /admin/ingest` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestCommand {
    /// Content id (slug).
    pub content_id: String,
    /// Title.
    pub title: String,
    /// Artist id.
    pub artist_id: String,
    /// `audio` or `video`; inferred when absent.
    pub media_kind: Option<String>,
    /// RFC 6381 codecs string, if known.
    pub codecs: Option<String>,
    /// Absolute path of the rendition folder or playlist, as the daemon sees it.
    pub source: PathBuf,
}

/// `POST /admin/prefetch` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrefetchCommand {
    /// Content id.
    pub content_id: String,
    /// Blobs fetched at once (default 4).
    pub concurrency: Option<usize>,
}

/// `POST /admin/backup` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupCommand {
    /// `hourly`, `daily`, `weekly`; absent: a manual snapshot, kept until forgotten by hand.
    #[serde(default)]
    pub kind: Option<String>,
}

/// `POST /admin/pin` and `/admin/unpin` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinCommand {
    /// Content id.
    pub content_id: String,
}

/// `POST /admin/emergency` body: an encoded signed operator command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmergencyBody {
    /// The command's wire bytes, hex.
    pub command_hex: String,
}

/// `POST /admin/revoke` body: an encoded signed revocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeBody {
    /// The revocation's wire bytes, hex.
    pub revocation_hex: String,
}
