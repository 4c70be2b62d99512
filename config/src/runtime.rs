//! Validated runtime configuration types.
//!
//! Values of these types are produced by [`load`](crate::load) /
//! [`from_toml_str`](crate::from_toml_str) (or [`ConfigFile::validate`](crate::ConfigFile::validate))
//! and satisfy every rule documented on the file types; consumers do not need to re-check them.
//! All fields are public so tests can build or tweak a `Config` directly.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The fully validated node configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// What this node does.
    pub role: Role,
    /// Directory for persistent state, as given in the file (may be relative).
    pub data_dir: PathBuf,
    /// Free-text region label (non-empty).
    pub region: String,
    /// Geographic position, if configured.
    pub location: Option<GeoPoint>,
    /// Bind addresses.
    pub listen: Listen,
    /// Cluster membership settings.
    pub cluster: Cluster,
    /// Trusted keys.
    pub trust: Trust,
    /// Cache tier sizes.
    pub cache: Cache,
    /// Upstream parents.
    pub upstream: Upstream,
    /// QUIC server connection caps.
    pub quic: QuicCaps,
    /// Static mesh peers (`[mesh] peers`), each with its peer id.
    pub mesh_peers: Vec<Parent>,
    /// Geo-IP settings.
    pub geo: Geo,
    /// Satellite broadcast settings.
    pub satellite: Satellite,
    /// Enabled plugins (only ever non-empty for [`Role::Origin`]).
    pub plugins: Plugins,
    /// Viewer-plane limits.
    pub http: HttpLimits,
    /// Play reports.
    pub reports: Reports,
    /// The origin's backups.
    pub backup: Backup,
    /// The origin's election (`None`: a lone origin).
    pub ha: Option<Ha>,
    /// The key file that signs manifests and ledger heads (`None`: the node key).
    pub publisher_key: Option<PathBuf>,
}

/// Node role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Ingests and signs content; the root of distribution.
    Origin,
    /// Serves viewers from cache, pulling from parents.
    Edge,
    /// Peer-to-peer mesh node.
    Mesh,
    /// Pushes content over a one-way satellite link.
    SatelliteUplink,
}

impl Role {
    /// All roles, in documentation order.
    pub const ALL: [Role; 4] = [Role::Origin, Role::Edge, Role::Mesh, Role::SatelliteUplink];

    /// The config-file spelling: `"origin"`, `"edge"`, `"mesh"` or `"satellite-uplink"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Origin => "origin",
            Role::Edge => "edge",
            Role::Mesh => "mesh",
            Role::SatelliteUplink => "satellite-uplink",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ParseRoleError;

    /// Exact, case-sensitive match on [`Role::as_str`] spellings.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ParseRoleError {
                given: s.to_owned(),
            })
    }
}

/// Error from [`Role::from_str`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseRoleError {
    /// The rejected input.
    pub given: String,
}

impl fmt::Display for ParseRoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown role `{}`; expected one of `origin`, `edge`, `mesh`, `satellite-uplink`",
            self.given
        )
    }
}

impl std::error::Error for ParseRoleError {}

/// A geographic position in degrees (`lat` in `[-90, 90]`, `lon` in `[-180, 180]`, both finite).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
}

/// Bind addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Viewer plane, TCP.
    pub http: SocketAddr,
    /// Node data plane, UDP (QUIC).
    pub quic: SocketAddr,
    /// libp2p multiaddr (starts with `/`, no empty segments); parsed by the networking crate.
    pub p2p: String,
    /// Mesh data plane, UDP (iroh).
    pub iroh: SocketAddr,
    /// Membership and failure detection, UDP (SWIM).
    pub swim: SocketAddr,
    /// Viewer plane over TLS, if configured (then [`HttpLimits::tls`] is set).
    pub https: Option<SocketAddr>,
}

/// Cluster membership and failure detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Bootstrap multiaddrs, each ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<String>,
    /// Heartbeat period (at least 50 ms).
    pub heartbeat_interval: Duration,
    /// Missed heartbeats before a peer is suspected (>= 1).
    pub suspect_after_missed: u32,
    /// Missed heartbeats before a peer is dead (> `suspect_after_missed`).
    pub dead_after_missed: u32,
}

/// Trusted ed25519 public keys (raw 32-byte encodings, not yet checked to be valid points).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// Publisher keys.
    pub publishers: Vec<[u8; 32]>,
    /// Operator keys.
    pub operators: Vec<[u8; 32]>,
    /// This node's certificate file, if not `data_dir/node.cert`.
    pub certificate: Option<PathBuf>,
}

/// Cache tier sizes in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// RAM tier capacity (`memory_mb` × 2^20); 0 disables the RAM tier.
    pub memory_bytes: u64,
    /// Disk tier capacity (`disk_gb` × 2^30, rounded to the nearest byte); always > 0.
    pub disk_bytes: u64,
}

/// Upstream parents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Parents in configured order.
    pub parents: Vec<Parent>,
    /// Time allowed to connect to a parent and exchange certificates.
    pub connect_timeout: Duration,
    /// Time allowed for an answer to start, and longest silence within a body.
    pub first_byte_timeout: Duration,
    /// Slowest body accepted, in bytes per second (>= 1024).
    pub min_body_rate: u64,
}

impl Upstream {
    /// How long a body of `len` bytes may take: the first-byte allowance plus `len` at the
    /// slowest accepted rate.
    pub fn body_deadline(&self, len: u64) -> Duration {
        self.first_byte_timeout + Duration::from_secs_f64(len as f64 / self.min_body_rate as f64)
    }
}

/// One upstream parent: `"ip:port"` or `"<peer id>@ip:port"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    /// Expected libp2p peer id, if given (ASCII alphanumeric, not otherwise checked).
    pub peer_id: Option<String>,
    /// Address of the parent's data plane.
    pub addr: SocketAddr,
}

impl fmt::Display for Parent {
    /// Formats back into the config-file syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.peer_id {
            Some(id) => write!(f, "{id}@{}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// Geo-IP settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geo {
    /// MaxMind database path, if configured (not checked for existence here).
    pub database: Option<PathBuf>,
    /// Trusted reverse proxies (a bare IP became a /32 or /128 network).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Satellite broadcast settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Satellite {
    /// Destination of the broadcast (always `Some` for [`Role::SatelliteUplink`]).
    pub uplink: Option<SocketAddr>,
    /// Uplink bandwidth, kbit/s (>= 8).
    pub rate_kbps: u32,
    /// Repair (FEC) overhead in percent (0..=400).
    pub repair_overhead_percent: u32,
    /// Local address to receive a broadcast on.
    pub downlink: Option<SocketAddr>,
    /// Where the broadcast may come from (at most 16 networks); empty: any address.
    pub downlink_sources: Vec<ipnet::IpNet>,
}

/// Enabled plugins and their free-form settings. All are `None` unless the role is origin.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plugins {
    /// `[plugins.royalty]` contents, if enabled.
    pub royalty: Option<toml::Table>,
    /// `[plugins.ledger]` contents, if enabled.
    pub ledger: Option<toml::Table>,
    /// `[plugins.label]` contents, if enabled.
    pub label: Option<toml::Table>,
}

/// How many connections the QUIC data plane's server holds at once (each `>= 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicCaps {
    /// In all, handshakes included.
    pub max_connections: usize,
    /// From one IP address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// For one node key.
    pub max_connections_per_peer: usize,
}

/// Viewer-plane limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Maximum simultaneous viewer connections (>= 1).
    pub max_connections: usize,
    /// Time allowed for request headers to arrive (>= 1 ms).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Time allowed for a whole request body.
    pub body_read_timeout: Duration,
    /// HTTP/2 ping and TCP keepalive period.
    pub keepalive_interval: Duration,
    /// Maximum simultaneous connections from one client address (IPv6: its /64).
    pub max_connections_per_client: usize,
    /// Bearer token for the plugins' admin routes on the viewer plane, if enabled.
    pub admin_token: Option<String>,
    /// Certificate and key of `listen.https`, if configured.
    pub tls: Option<TlsFiles>,
}

/// The PEM files of the viewer plane's TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Play-report settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reports {
    /// Period of the signed batches.
    pub interval: Duration,
    /// Bound of the on-disk outbox, in batches.
    pub max_outbox_batches: u64,
}

/// Backup settings (`[backup]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// Where snapshots go; `None`: backups are off.
    pub repository: Option<BackupTarget>,
    /// The file holding the repository's password.
    pub password_file: PathBuf,
    /// Whether the daemon takes the scheduled snapshots itself.
    pub schedule: bool,
    /// How long snapshots of each kind are kept.
    pub keep: BackupRetention,
}

impl Default for Backup {
    fn default() -> Self {
        Backup {
            repository: None,
            password_file: PathBuf::new(),
            schedule: true,
            keep: BackupRetention::default(),
        }
    }
}

/// A restic repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupTarget {
    /// A directory on a local (or mounted) file system.
    Local(PathBuf),
    /// A bucket of an S3-compatible object store, as restic names it
    /// (`s3:http://host:port/bucket/prefix`); the credentials come from the environment.
    S3(S3Location),
}

/// Where in an S3-compatible object store a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The service's base URL, with its scheme (`https://` when the location gave none, as
    /// restic assumes): `http://127.0.0.1:7480`, `https://s3.eu-west-1.amazonaws.com`.
    pub endpoint: String,
    /// The bucket (created on the first backup when missing).
    pub bucket: String,
    /// The folder inside the bucket, without leading or trailing `/`; `""` for its root.
    pub prefix: String,
}

impl S3Location {
    /// Restic's spelling of it (`s3:` and the URL), what `restic -r` takes.
    pub fn restic_location(&self) -> String {
        let mut s = format!("s3:{}/{}", self.endpoint, self.bucket);
        if !self.prefix.is_empty() {
            s.push('/');
            s.push_str(&self.prefix);
        }
        s
    }
}

impl std::fmt::Display for BackupTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupTarget::Local(path) => write!(f, "{}", path.display()),
            BackupTarget::S3(s3) => f.write_str(&s3.restic_location()),
        }
    }
}

/// How long snapshots of each kind are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupRetention {
    /// Hourly snapshots.
    pub hourly: Duration,
    /// Daily snapshots.
    pub daily: Duration,
    /// Weekly snapshots.
    pub weekly: Duration,
}

impl Default for BackupRetention {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        BackupRetention {
            hourly: Duration::from_secs(7 * DAY),
            daily: Duration::from_secs(7 * DAY),
            weekly: Duration::from_secs(30 * DAY),
        }
    }
}

/// Election and failover settings (`[ha]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ha {
    /// etcd client URLs.
    pub etcd: Vec<String>,
    /// The cluster's name; the election key is derived from it.
    pub name: String,
    /// The lease's time to live.
    pub lease_ttl: Duration,
    /// Where changes of primary are POSTed, if anywhere.
    pub notify_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_round_trips() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            assert_eq!(role.to_string(), role.as_str());
        }
        assert_eq!(Role::SatelliteUplink.as_str(), "satellite-uplink");
    }

    #[test]
    fn role_parse_rejects_other_spellings() {
        for bad in ["", "Edge", "satellite_uplink", "satellite", " edge"] {
            let err = bad.parse::<Role>().unwrap_err();
            assert_eq!(err.given, bad);
            assert!(err.to_string().contains("satellite-uplink"), "{err}");
        }
    }

    #[test]
    fn parent_display_matches_file_syntax() {
        let p = Parent {
            peer_id: Some("12D3KooWabc".into()),
            addr: "[::1]:4433".parse().unwrap(),
        };
        assert_eq!(p.to_string(), "12D3KooWabc@[::1]:4433");
        let p = Parent {
            peer_id: None,
            addr: "10.0.0.1:4433".parse().unwrap(),
        };
        assert_eq!(p.to_string(), "10.0.0.1:4433");
    }
}
