//! Plain serde mirror of the TOML file, before validation.
//!
//! These types accept anything that is well-typed; the semantic checks (address syntax, ranges,
//! role-specific rules) happen in [`ConfigFile::validate`](crate::ConfigFile::validate), which
//! turns a [`ConfigFile`] into a runtime [`Config`](crate::Config).
//!
//! Every section table is optional and every field inside a section has a default, so a minimal
//! file only needs `role` and `data_dir`. Unknown keys are rejected everywhere except inside
//! `[plugins.*]` tables, whose contents are free-form.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole config file (top level of the TOML document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a TOML document with the mhc-node config"
)]
pub struct ConfigFile {
    /// Node role: `"origin"`, `"edge"`, `"mesh"` or `"satellite-uplink"`. Required, no default.
    pub role: String,
    /// Directory for persistent state (cache, keys, databases). Required, no default.
    /// A relative path is kept as given (relative to the daemon's working directory).
    pub data_dir: PathBuf,
    /// Free-text region label used for routing and metrics. Default `"default"`; must not be empty.
    #[serde(default = "default_region")]
    pub region: String,
    /// Geographic position of the node in degrees. Default: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<LocationSection>,
    /// `[listen]`: bind addresses.
    #[serde(default)]
    pub listen: ListenSection,
    /// `[cluster]`: membership and failure detection.
    #[serde(default)]
    pub cluster: ClusterSection,
    /// `[trust]`: accepted publisher and operator keys.
    #[serde(default)]
    pub trust: TrustSection,
    /// `[cache]`: cache tier sizes.
    #[serde(default)]
    pub cache: CacheSection,
    /// `[upstream]`: where this node fetches from.
    #[serde(default)]
    pub upstream: UpstreamSection,
    /// `[quic]`: limits of the QUIC data plane's server.
    #[serde(default)]
    pub quic: QuicSection,
    /// `[mesh]`: mesh data plane peers.
    #[serde(default)]
    pub mesh: MeshSection,
    /// `[geo]`: geo-IP lookup.
    #[serde(default)]
    pub geo: GeoSection,
    /// `[satellite]`: broadcast uplink / downlink.
    #[serde(default)]
    pub satellite: SatelliteSection,
    /// `[plugins]`: optional origin plugins.
    #[serde(default)]
    pub plugins: PluginsSection,
    /// `[http]`: viewer-plane limits.
    #[serde(default)]
    pub http: HttpSection,
    /// `[reports]`: play reports to the origin.
    #[serde(default)]
    pub reports: ReportsSection,
    /// `[backup]`: the origin's verified backups.
    #[serde(default)]
    pub backup: BackupSection,
    /// `[ha]`: a standby origin and failover on etcd.
    #[serde(default)]
    pub ha: HaSection,
    /// `[origin]`: what only an origin has.
    #[serde(default)]
    pub origin: OriginSection,
}

/// Default for [`ConfigFile::region`]: `"default"`.
pub fn default_region() -> String {
    "default".to_owned()
}

/// `location = { lat = .., lon = .. }`. Both fields are required when the table is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table `{ lat = <degrees>, lon = <degrees> }`"
)]
pub struct LocationSection {
    /// Latitude in degrees, `-90.0..=90.0`. No default.
    pub lat: f64,
    /// Longitude in degrees, `-180.0..=180.0`. No default.
    pub lon: f64,
}

/// `[listen]`: bind addresses, all `"ip:port"` strings except `p2p`. Port 0 means "any free port".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [listen] table")]
pub struct ListenSection {
    /// Viewer plane (HTTP over TCP). Default `"0.0.0.0:8080"`.
    pub http: String,
    /// Node data plane (QUIC over UDP). Default `"0.0.0.0:4433"`.
    pub quic: String,
    /// libp2p listen multiaddr; must start with `/`. Default `"/ip4/0.0.0.0/tcp/4001"`.
    pub p2p: String,
    /// Mesh data plane (iroh, UDP). Default `"0.0.0.0:4434"`.
    pub iroh: String,
    /// Membership and failure detection (SWIM, UDP). Default `"0.0.0.0:4435"`.
    pub swim: String,
    /// Viewer plane over TLS (HTTPS, HTTP/1.1 and HTTP/2 by ALPN); needs `http.tls_cert` and
    /// `http.tls_key`. Default `""`: none.
    pub https: String,
}

impl Default for ListenSection {
    fn default() -> Self {
        ListenSection {
            http: "0.0.0.0:8080".to_owned(),
            quic: "0.0.0.0:4433".to_owned(),
            p2p: "/ip4/0.0.0.0/tcp/4001".to_owned(),
            iroh: "0.0.0.0:4434".to_owned(),
            swim: "0.0.0.0:4435".to_owned(),
            https: String::new(),
        }
    }
}

/// `[cluster]`: libp2p bootstrap and heartbeat-based failure detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [cluster] table")]
pub struct ClusterSection {
    /// libp2p multiaddrs of bootstrap peers, each ending in `/p2p/<peer id>`. Default `[]`.
    pub bootstrap: Vec<String>,
    /// Heartbeat period in milliseconds, `>= 50`. Default `1000`.
    pub heartbeat_interval_ms: u64,
    /// Missed heartbeats before a peer is suspected, `>= 1`. Default `3`.
    pub suspect_after_missed: u32,
    /// Missed heartbeats before a peer is declared dead, `> suspect_after_missed`. Default `6`.
    pub dead_after_missed: u32,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            bootstrap: Vec::new(),
            heartbeat_interval_ms: 1000,
            suspect_after_missed: 3,
            dead_after_missed: 6,
        }
    }
}

/// `[trust]`: ed25519 public keys as 64 hex characters (either case).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [trust] table")]
pub struct TrustSection {
    /// Keys whose signed manifests are accepted. Default `[]`.
    pub publishers: Vec<String>,
    /// Keys allowed to operate (administer) this node, and whose node certificates admit
    /// members. Default `[]`.
    pub operators: Vec<String>,
    /// This node's certificate (`mhc-node enroll`). Default: `node.cert` in `data_dir`.
    pub certificate: Option<String>,
}

/// `[cache]`: cache tier sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [cache] table")]
pub struct CacheSection {
    /// RAM tier size in MiB (2^20 bytes), integer; `0` disables the RAM tier. Default `256`.
    pub memory_mb: u64,
    /// Disk tier size in GiB (2^30 bytes); integer or float, `> 0` (e.g. `0.001` in tests).
    /// Default `20`.
    pub disk_gb: f64,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            memory_mb: 256,
            disk_gb: 20.0,
        }
    }
}

/// `[upstream]`: parent nodes this node pulls content from, and how long it waits for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "an [upstream] table")]
pub struct UpstreamSection {
    /// `"ip:port"` or `"<peer id>@ip:port"` (the address must be a socket address). Default `[]`.
    pub parents: Vec<String>,
    /// Time allowed to connect to a parent and exchange certificates with it, in
    /// milliseconds, `>= 1`. Default `2000`.
    pub connect_timeout_ms: u64,
    /// Time allowed for a parent's answer to start, and longest silence in the middle of a
    /// body, in milliseconds, `>= 1`. Default `5000`.
    pub first_byte_timeout_ms: u64,
    /// Slowest body accepted from a parent, in KiB per second, `>= 1`: a body of `n` KiB must
    /// arrive within `first_byte_timeout_ms` + `n / min_body_rate_kib_s` seconds. Default `64`.
    pub min_body_rate_kib_s: u64,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection {
            parents: Vec::new(),
            connect_timeout_ms: 2_000,
            first_byte_timeout_ms: 5_000,
            min_body_rate_kib_s: 64,
        }
    }
}

/// `[quic]`: how many connections the QUIC data plane's server holds, so no client or set of
/// clients can exhaust it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [quic] table")]
pub struct QuicSection {
    /// Connections held at once, handshakes included, `>= 1`. Default `1024`.
    pub max_connections: usize,
    /// Connections held at once from one IP address (IPv6: one /64), `>= 1`. Default `64`.
    pub max_connections_per_address: usize,
    /// Connections held at once for one node key, `>= 1`. Default `8`.
    pub max_connections_per_peer: usize,
}

impl Default for QuicSection {
    fn default() -> Self {
        QuicSection {
            max_connections: 1024,
            max_connections_per_address: 64,
            max_connections_per_peer: 8,
        }
    }
}

/// `[mesh]`: the mesh data plane (iroh-blobs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [mesh] table")]
pub struct MeshSection {
    /// Mesh peers always asked for content, besides the members that announce it:
    /// `"<peer id>@ip:port"` of their `listen.iroh`. Default `[]`.
    pub peers: Vec<String>,
}

/// `[geo]`: geo-IP lookup of viewers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [geo] table")]
pub struct GeoSection {
    /// Path to a MaxMind `.mmdb` database; `""` means none. Default `""`.
    pub database: String,
    /// Reverse proxies whose forwarding headers are believed: CIDRs such as `"10.0.0.0/8"`;
    /// a bare IP means `/32` (IPv4) or `/128` (IPv6). Default `[]`.
    pub trusted_proxies: Vec<String>,
}

/// `[satellite]`: one-way broadcast with forward error correction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [satellite] table")]
pub struct SatelliteSection {
    /// `"udp://ip:port"` to send the broadcast to; `""` means none. Required (non-empty) for
    /// role `satellite-uplink`, ignored by other roles. Default `""`.
    pub uplink: String,
    /// Uplink bandwidth in kilobits per second, `>= 8`. Default `2000`.
    pub rate_kbps: u32,
    /// Extra repair (FEC) data in percent of the payload, `0..=400`. Default `25`.
    pub repair_overhead_percent: u32,
    /// `"udp://ip:port"` to receive a broadcast on; `""` means none. Default `""`.
    pub downlink: String,
    /// Addresses the broadcast may come from (the satellite receiver's, as seen by this
    /// host): CIDRs or bare IPs, at most 16. Datagrams from elsewhere are dropped, and each
    /// entry has its own objects in progress. Default `[]`: any address (a warning at start).
    pub downlink_sources: Vec<String>,
}

impl Default for SatelliteSection {
    fn default() -> Self {
        SatelliteSection {
            uplink: String::new(),
            rate_kbps: 2000,
            repair_overhead_percent: 25,
            downlink: String::new(),
            downlink_sources: Vec::new(),
        }
    }
}

/// `[plugins]`: origin-only plugins. The presence of a `[plugins.<name>]` table enables that
/// plugin; its contents are passed through unvalidated. Default: none enabled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [plugins] table")]
pub struct PluginsSection {
    /// `[plugins.royalty]`: royalty accounting. Default: absent (disabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub royalty: Option<toml::Table>,
    /// `[plugins.ledger]`: ledger. Default: absent (disabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<toml::Table>,
    /// `[plugins.label]`: label delivery to DSPs. Default: absent (disabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<toml::Table>,
}

/// `[http]`: viewer-plane limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "an [http] table")]
pub struct HttpSection {
    /// Maximum simultaneous viewer connections, `>= 1`. Default `10000`.
    pub max_connections: usize,
    /// Time allowed for a client to send its request headers, in milliseconds, `>= 1`.
    /// Default `10000`.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed, in milliseconds,
    /// `>= 1` (HTTP/1.1 keep-alive and HTTP/2 alike). Default `60000`.
    pub idle_timeout_ms: u64,
    /// Time allowed for a whole request body to arrive, in milliseconds, `>= 1`.
    /// Default `30000`.
    pub body_read_timeout_ms: u64,
    /// Period of HTTP/2 pings and of TCP keepalive probes on idle connections; a peer that
    /// answers neither within another period is dropped. Milliseconds, `>= 1000`.
    /// Default `20000`.
    pub keepalive_interval_ms: u64,
    /// Maximum simultaneous connections from one client address (an IPv6 client's /64),
    /// `>= 1`. Default `256`.
    pub max_connections_per_client: usize,
    /// Bearer token that opens the origin plugins' admin routes on the viewer plane
    /// (`/admin/plugins/...` with `Authorization: Bearer <token>`); at least 32 characters.
    /// Default `""`: those routes exist on the admin socket only.
    pub admin_token: String,
    /// PEM certificate chain (leaf first) of `listen.https`, e.g. certbot's `fullchain.pem`.
    /// Re-read when the file changes. Default `""`.
    pub tls_cert: String,
    /// PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1), e.g. certbot's `privkey.pem`.
    /// Default `""`.
    pub tls_key: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            max_connections: 10_000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            body_read_timeout_ms: 30_000,
            keepalive_interval_ms: 20_000,
            max_connections_per_client: 256,
            admin_token: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

/// `[reports]`: play reports, the origin's royalty input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [reports] table")]
pub struct ReportsSection {
    /// How often a serving node turns what it served into a signed batch for the origin, in
    /// seconds, `>= 1`. Default `30`.
    pub report_interval_s: u64,
    /// Batches kept on disk while the origin cannot be reached, `>= 1`; when full, the oldest
    /// are kept and new ones are counted and dropped. Default `100000`.
    pub max_outbox_batches: u64,
}

impl Default for ReportsSection {
    fn default() -> Self {
        ReportsSection {
            report_interval_s: 30,
            max_outbox_batches: 100_000,
        }
    }
}

/// `[backup]`: hourly, daily and weekly snapshots of an origin's state in a restic repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [backup] table")]
pub struct BackupSection {
    /// The restic repository (created on the first backup): a directory, or
    /// `s3:http(s)://host[:port]/bucket[/prefix]` with the credentials in the environment.
    /// `""` = no backups. Default `""`.
    pub repository: String,
    /// A file whose first line is the repository's password (restic's `--password-file`).
    /// Required with `repository`. Default `""`.
    pub password_file: PathBuf,
    /// Whether the daemon takes the hourly, daily and weekly snapshots itself; `false` leaves
    /// them to `mhc-node backup now --kind ...` (a systemd timer, cron). Default `true`.
    pub schedule: bool,
    /// How long hourly snapshots are kept, in days, `>= 1`. Default `7`.
    pub hourly_keep_days: u32,
    /// How long daily snapshots are kept, in days, `>= 1`. Default `7`.
    pub daily_keep_days: u32,
    /// How long weekly snapshots are kept, in days, `>= 1`. Default `30`.
    pub weekly_keep_days: u32,
}

impl Default for BackupSection {
    fn default() -> Self {
        BackupSection {
            repository: String::new(),
            password_file: PathBuf::new(),
            schedule: true,
            hourly_keep_days: 7,
            daily_keep_days: 7,
            weekly_keep_days: 30,
        }
    }
}

/// `[origin]`: settings of the origin role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "an [origin] table")]
pub struct OriginSection {
    /// The key file (`mhc-node keygen --out FILE`) that signs manifests and the ledger's tree
    /// heads, shared by the origins of one `[ha]` cluster so that what one signed stays valid
    /// after another takes over. `""` = the node key. Default `""`.
    pub publisher_key: PathBuf,
}

/// `[ha]`: origins that share a name elect their primary through an etcd lease; the others are
/// standbys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "an [ha] table")]
pub struct HaSection {
    /// etcd client URLs (`http://host:port`). Empty = a lone origin, no election. Default `[]`.
    pub etcd: Vec<String>,
    /// The name the origins of one cluster share (the election's key). Default `"mhc-origin"`.
    pub name: String,
    /// The lease's time to live, in seconds, `2..=60`: a primary that cannot renew it stops
    /// writing before it can expire, and a standby takes over after it has. Default `5`.
    pub lease_ttl_s: u64,
    /// Where a JSON event is POSTed at every change of primary this node sees. `""` = none.
    /// Default `""`.
    pub notify_url: String,
}

impl Default for HaSection {
    fn default() -> Self {
        HaSection {
            etcd: Vec::new(),
            name: "mhc-origin".to_owned(),
            lease_ttl_s: 5,
            notify_url: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_defaults_match_contract() {
        let l = ListenSection::default();
        assert_eq!(l.http, "0.0.0.0:8080");
        assert_eq!(l.quic, "0.0.0.0:4433");
        assert_eq!(l.p2p, "/ip4/0.0.0.0/tcp/4001");
        assert_eq!(l.iroh, "0.0.0.0:4434");
        assert_eq!(l.swim, "0.0.0.0:4435");

        let c = ClusterSection::default();
        assert!(c.bootstrap.is_empty());
        assert_eq!(c.heartbeat_interval_ms, 1000);
        assert_eq!(c.suspect_after_missed, 3);
        assert_eq!(c.dead_after_missed, 6);

        assert_eq!(
            TrustSection::default(),
            TrustSection {
                publishers: vec![],
                operators: vec![],
                certificate: None,
            }
        );

        let cache = CacheSection::default();
        assert_eq!(cache.memory_mb, 256);
        assert_eq!(cache.disk_gb, 20.0);

        assert!(UpstreamSection::default().parents.is_empty());
        assert_eq!(GeoSection::default().database, "");
        assert!(GeoSection::default().trusted_proxies.is_empty());

        let s = SatelliteSection::default();
        assert_eq!(s.uplink, "");
        assert_eq!(s.rate_kbps, 2000);
        assert_eq!(s.repair_overhead_percent, 25);
        assert_eq!(s.downlink, "");

        let p = PluginsSection::default();
        assert!(p.royalty.is_none() && p.ledger.is_none() && p.label.is_none());

        let h = HttpSection::default();
        assert_eq!(h.max_connections, 10_000);
        assert_eq!(h.header_read_timeout_ms, 10_000);

        assert_eq!(default_region(), "default");
    }

    #[test]
    fn minimal_file_fills_defaults() {
        let f: ConfigFile = toml::from_str("role = \"edge\"\ndata_dir = \"x\"\n").unwrap();
        assert_eq!(f.role, "edge");
        assert_eq!(f.data_dir, PathBuf::from("x"));
        assert_eq!(f.region, "default");
        assert!(f.location.is_none());
        assert_eq!(f.listen, ListenSection::default());
        assert_eq!(f.cluster, ClusterSection::default());
        assert_eq!(f.cache, CacheSection::default());
        assert_eq!(f.satellite, SatelliteSection::default());
        assert_eq!(f.http, HttpSection::default());
    }

    #[test]
    fn partial_section_keeps_other_defaults() {
        let f: ConfigFile = toml::from_str(
            "role = \"edge\"\ndata_dir = \"x\"\n[cluster]\nsuspect_after_missed = 4\n",
        )
        .unwrap();
        assert_eq!(f.cluster.suspect_after_missed, 4);
        assert_eq!(f.cluster.dead_after_missed, 6);
        assert_eq!(f.cluster.heartbeat_interval_ms, 1000);
    }

    #[test]
    fn disk_gb_accepts_integer_and_float() {
        let f: ConfigFile =
            toml::from_str("role = \"edge\"\ndata_dir = \"x\"\n[cache]\ndisk_gb = 3\n").unwrap();
        assert_eq!(f.cache.disk_gb, 3.0);
        let f: ConfigFile =
            toml::from_str("role = \"edge\"\ndata_dir = \"x\"\n[cache]\ndisk_gb = 0.001\n")
                .unwrap();
        assert_eq!(f.cache.disk_gb, 0.001);
    }

    #[test]
    fn file_round_trips_through_serialize() {
        let f: ConfigFile = toml::from_str(
            "role = \"origin\"\ndata_dir = \"x\"\nlocation = { lat = 1.5, lon = 2 }\n\
             [plugins.royalty]\nrate = 3\n",
        )
        .unwrap();
        let text = toml::to_string(&f).unwrap();
        let back: ConfigFile = toml::from_str(&text).unwrap();
        assert_eq!(f, back);
    }
}
