//! Configuration of `mhc-node`: the TOML file format, its defaults, and validation into
//! runtime types.
//!
//! # Contents
//!
//! - [`load`] / [`from_toml_str`]: read and validate a config file into a [`Config`].
//! - [`example_config`]: a complete, commented example for a [`Role`].
//! - Runtime types (validated): [`Config`], [`Role`], [`GeoPoint`], [`Listen`], [`Cluster`],
//!   [`Trust`], [`Cache`], [`Upstream`], [`Parent`], [`Geo`], [`Satellite`], [`Plugins`],
//!   [`HttpLimits`].
//! - File types (serde mirror of the TOML, unvalidated): [`ConfigFile`] and its `*Section`s;
//!   [`ConfigFile::validate`] turns one into a [`Config`].
//! - Errors: [`ConfigError`]; every error names the file, and field errors name the dotted
//!   field path (`cache.memory_mb`, `cluster.bootstrap[0]`, `plugins.royalty`).
//!
//! # File format
//!
//! Only `role` and `data_dir` are required; everything else has the default shown. Unknown keys
//! are errors (except inside `[plugins.*]`). Sizes: `memory_mb` is MiB (integer), `disk_gb` is
//! GiB (integer or fraction, > 0). Durations are milliseconds. Socket addresses are `ip:port`
//! (`"0.0.0.0:8080"`, `"[::]:8080"`; port 0 = any free port).
//!
//! Role-specific rules: `satellite-uplink` requires `satellite.uplink`; `[plugins.*]` tables are
//! only allowed for `origin`.
//!
//! This is exactly what `example_config(Role::Origin)` returns:
//!
//! ```toml
//! # mhc-node configuration for role "origin".
//! # Only `role` and `data_dir` are required; every other value shown is the default
//! # unless marked "example".
//!
//! # What this node does: origin | edge | mesh | satellite-uplink.
//! role = "origin"
//! # Persistent state (cache, keys, databases). A relative path is kept as given.
//! data_dir = "/var/lib/mhc/origin"
//! # Free-text region label used for routing and metrics.
//! region = "default"
//! # Position in degrees (lat in [-90, 90], lon in [-180, 180]); unset by default. Example:
//! # location = { lat = 52.37, lon = 4.90 }
//!
//! [listen]
//! # Viewer plane: HTTP over TCP.
//! http = "0.0.0.0:8080"
//! # Node data plane: QUIC over UDP.
//! quic = "0.0.0.0:4433"
//! # libp2p listen multiaddr.
//! p2p = "/ip4/0.0.0.0/tcp/4001"
//! # Mesh data plane: iroh over UDP (must not share a port with `quic`).
//! iroh = "0.0.0.0:4434"
//! # Membership and failure detection: SWIM over UDP (its own port).
//! swim = "0.0.0.0:4435"
//! # Viewer plane over TLS (HTTPS; HTTP/1.1 and HTTP/2); needs http.tls_cert and tls_key.
//! # "" = none. Example: https = "0.0.0.0:8443"
//! https = ""
//!
//! [cluster]
//! # libp2p multiaddrs of bootstrap peers, each ending in /p2p/<peer id>. Example:
//! # bootstrap = ["/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWExamplePeer"]
//! bootstrap = []
//! # Heartbeat period in milliseconds (>= 50).
//! heartbeat_interval_ms = 1000
//! # Missed heartbeats before a peer is suspected (>= 1).
//! suspect_after_missed = 3
//! # Missed heartbeats before a peer is declared dead (> suspect_after_missed).
//! dead_after_missed = 6
//!
//! [trust]
//! # ed25519 public keys (64 hex characters) whose signed manifests are accepted.
//! publishers = []
//! # ed25519 public keys (64 hex characters) allowed to operate this node; their node
//! # certificates admit members.
//! operators = []
//! # This node's certificate from an operator (`mhc-node enroll`); default: node.cert in data_dir.
//! # certificate = "/etc/mhc/node.cert"
//!
//! [cache]
//! # RAM tier in MiB (integer); 0 disables the RAM tier.
//! memory_mb = 256
//! # Disk tier in GiB; fractions allowed (e.g. 0.5), must be > 0.
//! disk_gb = 20
//!
//! [upstream]
//! # Parents to fetch from: "ip:port" or "<peer id>@ip:port". Example:
//! # parents = ["12D3KooWExamplePeer@203.0.113.10:4433"]
//! parents = []
//! # Time allowed to connect to a parent and exchange certificates, in milliseconds (>= 1).
//! connect_timeout_ms = 2000
//! # Time allowed for a parent's answer to start, and longest silence within a body, in
//! # milliseconds (>= 1). A parent that misses it is avoided for a while.
//! first_byte_timeout_ms = 5000
//! # Slowest body accepted from a parent, in KiB/s (>= 1).
//! min_body_rate_kib_s = 64
//!
//! [quic]
//! # QUIC data plane: connections held at once, in all (>= 1); past half of it, new clients
//! # must first prove their address.
//! max_connections = 1024
//! # ... from one IP address (IPv6: one /64), and for one node key (>= 1).
//! max_connections_per_address = 64
//! max_connections_per_peer = 8
//!
//! [mesh]
//! # Mesh peers always asked for content besides the members announcing it:
//! # "<peer id>@ip:port" of their listen.iroh. Example:
//! # peers = ["12D3KooWExamplePeer@203.0.113.11:4434"]
//! peers = []
//!
//! [geo]
//! # MaxMind .mmdb database for viewer geo-IP lookup; "" = none.
//! database = ""
//! # Reverse proxies whose forwarding headers are trusted: CIDRs or bare IPs. Example:
//! # trusted_proxies = ["10.0.0.0/8", "192.0.2.1"]
//! trusted_proxies = []
//!
//! [satellite]
//! # Where to send the broadcast, "udp://ip:port"; "" = none.
//! # Required for role satellite-uplink, ignored by other roles.
//! uplink = ""
//! # Uplink bandwidth in kbit/s (>= 8).
//! rate_kbps = 2000
//! # Repair (FEC) overhead in percent of the payload (0..=400).
//! repair_overhead_percent = 25
//! # Receive a broadcast on "udp://ip:port"; "" = none.
//! downlink = ""
//! # Where the broadcast may come from: CIDRs or IPs (at most 16); [] = any address.
//! # Example: downlink_sources = ["192.0.2.10"]
//! downlink_sources = []
//!
//! # Plugins (origin only): a [plugins.<name>] table enables that plugin; its keys are
//! # the plugin's settings. Uncomment to enable:
//! # [plugins.royalty]
//! # [plugins.ledger]
//!
//! [http]
//! # Viewer plane: maximum simultaneous connections (>= 1).
//! max_connections = 10000
//! # Time allowed for a client to send its request headers (and, on a new connection, its
//! # first bytes), in milliseconds (>= 1).
//! header_read_timeout_ms = 10000
//! # A connection with no request in flight for this long is closed, in milliseconds (>= 1).
//! idle_timeout_ms = 60000
//! # Time allowed for a whole request body, in milliseconds (>= 1).
//! body_read_timeout_ms = 30000
//! # HTTP/2 pings and TCP keepalive probes on idle connections, in milliseconds (>= 1000).
//! keepalive_interval_ms = 20000
//! # Maximum simultaneous connections from one client address (IPv6: its /64) (>= 1).
//! max_connections_per_client = 256
//! # Bearer token opening the plugins' admin routes on the viewer plane (>= 32 characters);
//! # "" = admin socket only. Accepted only over HTTPS or from a loopback address.
//! admin_token = ""
//! # PEM certificate chain and private key of listen.https (e.g. certbot's fullchain.pem and
//! # privkey.pem); re-read when they change. Example:
//! # tls_cert = "/etc/letsencrypt/live/edge1.example.net/fullchain.pem"
//! # tls_key = "/etc/letsencrypt/live/edge1.example.net/privkey.pem"
//! tls_cert = ""
//! tls_key = ""
//!
//! [reports]
//! # Play reports to the origin (royalty input): batch period in seconds (>= 1).
//! report_interval_s = 30
//! # Batches kept on disk while the origin is unreachable; the oldest are kept.
//! max_outbox_batches = 100000
//!
//! [backup]
//! # Origin only: hourly, daily and weekly snapshots in a restic repository, created on the
//! # first backup: a directory, or an S3 bucket as restic names it,
//! # "s3:http(s)://host[:port]/bucket[/prefix]", with AWS_ACCESS_KEY_ID and
//! # AWS_SECRET_ACCESS_KEY (and AWS_DEFAULT_REGION) in the daemon's environment.
//! # "" = no backups. `restic` lists, checks and restores them.
//! repository = ""
//! # A file whose first line is the repository password (required with repository).
//! password_file = ""
//! # Take the hourly, daily and weekly snapshots in the daemon; false leaves them to
//! # `mhc-node backup now --kind ...` from a timer.
//! schedule = true
//! # Days each kind of snapshot is kept (>= 1).
//! hourly_keep_days = 7
//! daily_keep_days = 7
//! weekly_keep_days = 30
//!
//! [ha]
//! # Origin only: origins sharing `name` elect a primary through an etcd lease; the others are
//! # standbys and refuse writes. [] = a lone origin.
//! etcd = []
//! name = "mhc-origin"
//! # Seconds; a primary that cannot renew the lease stops writing before it expires (2..=60).
//! lease_ttl_s = 5
//! # POST a JSON event here at every change of primary; "" = none.
//! notify_url = ""
//!
//! [origin]
//! # Origin only: the key file (`mhc-node keygen --out FILE`) that signs manifests and the
//! # ledger, shared by the origins of one [ha] cluster; "" = the node key.
//! publisher_key = ""
//! ```

mod error;
mod file;
mod runtime;
mod validate;

use std::path::Path;

pub use error::ConfigError;
pub use file::{
    default_region, BackupSection, CacheSection, ClusterSection, ConfigFile, GeoSection, HaSection,
    HttpSection, ListenSection, LocationSection, MeshSection, PluginsSection, QuicSection,
    ReportsSection, SatelliteSection, TrustSection, UpstreamSection,
};
pub use runtime::{
    Backup, BackupRetention, BackupTarget, Cache, Cluster, Config, Geo, GeoPoint, Ha, HttpLimits,
    Listen, Parent, ParseRoleError, Plugins, QuicCaps, Reports, Role, S3Location, Satellite,
    TlsFiles, Trust, Upstream,
};

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    from_toml_str(&text, path)
}

/// Parses and validates config text; `file` is only used in error messages.
pub fn from_toml_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
    // Syntax first, so that TOML errors are reported as such (with line/column) rather than
    // being attributed to whatever field serde was looking at.
    if let Err(e) = toml::from_str::<toml::Table>(text) {
        return Err(ConfigError::syntax(file, &e));
    }
    let raw: ConfigFile = serde_path_to_error::deserialize(toml::Deserializer::new(text))
        .map_err(|e| ConfigError::from_deserialize(e, file, text))?;
    raw.validate(file)
}

/// A complete, commented example config for `role` with `data_dir = "/var/lib/mhc/<role>"`.
///
/// All values are the defaults except `role`, `data_dir` and, for
/// [`Role::SatelliteUplink`], an example `satellite.uplink` of `"udp://127.0.0.1:5600"`
/// (that role requires one). Listen ports are the same for every role. The result always passes
/// [`from_toml_str`].
pub fn example_config(role: Role) -> String {
    let uplink = match role {
        Role::SatelliteUplink => "udp://127.0.0.1:5600",
        _ => "",
    };
    let uplink_comment = match role {
        Role::SatelliteUplink => {
            "# Where to send the broadcast, \"udp://ip:port\" (example value; required for this role)."
        }
        _ => {
            "# Where to send the broadcast, \"udp://ip:port\"; \"\" = none.\n\
             # Required for role satellite-uplink, ignored by other roles."
        }
    };
    let plugins = match role {
        Role::Origin => {
            "# Plugins (origin only): a [plugins.<name>] table enables that plugin; its keys are\n\
             # the plugin's settings. Uncomment to enable:\n\
             # [plugins.royalty]\n\
             # [plugins.ledger]"
        }
        _ => "# [plugins.*] tables are only allowed for role origin.",
    };
    EXAMPLE_TEMPLATE
        .replace("@ROLE@", role.as_str())
        .replace("@UPLINK_COMMENT@", uplink_comment)
        .replace("@UPLINK@", uplink)
        .replace("@PLUGINS@", plugins)
}

const EXAMPLE_TEMPLATE: &str = r#"# mhc-node configuration for role "@ROLE@".
# Only `role` and `data_dir` are required; every other value shown is the default
# unless marked "example".

# What this node does: origin | edge | mesh | satellite-uplink.
role = "@ROLE@"
# Persistent state (cache, keys, databases). A relative path is kept as given.
data_dir = "/var/lib/mhc/@ROLE@"
# Free-text region label used for routing and metrics.
region = "default"
# Position in degrees (lat in [-90, 90], lon in [-180, 180]); unset by default. Example:
# location = { lat = 52.37, lon = 4.90 }

[listen]
# Viewer plane: HTTP over TCP.
http = "0.0.0.0:8080"
# Node data plane: QUIC over UDP.
quic = "0.0.0.0:4433"
# libp2p listen multiaddr.
p2p = "/ip4/0.0.0.0/tcp/4001"
# Mesh data plane: iroh over UDP (must not share a port with `quic`).
iroh = "0.0.0.0:4434"
# Membership and failure detection: SWIM over UDP (its own port).
swim = "0.0.0.0:4435"
# Viewer plane over TLS (HTTPS; HTTP/1.1 and HTTP/2); needs http.tls_cert and tls_key.
# "" = none. Example: https = "0.0.0.0:8443"
https = ""

[cluster]
# libp2p multiaddrs of bootstrap peers, each ending in /p2p/<peer id>. Example:
# bootstrap = ["/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWExamplePeer"]
bootstrap = []
# Heartbeat period in milliseconds (>= 50).
heartbeat_interval_ms = 1000
# Missed heartbeats before a peer is suspected (>= 1).
suspect_after_missed = 3
# Missed heartbeats before a peer is declared dead (> suspect_after_missed).
dead_after_missed = 6

[trust]
# ed25519 public keys (64 hex characters) whose signed manifests are accepted.
publishers = []
# ed25519 public keys (64 hex characters) allowed to operate this node; their node
# certificates admit members.
operators = []
# This node's certificate from an operator (`mhc-node enroll`); default: node.cert in data_dir.
# certificate = "/etc/mhc/node.cert"

[cache]
# RAM tier in MiB (integer); 0 disables the RAM tier.
memory_mb = 256
# Disk tier in GiB; fractions allowed (e.g. 0.5), must be > 0.
disk_gb = 20

[upstream]
# Parents to fetch from: "ip:port" or "<peer id>@ip:port". Example:
# parents = ["12D3KooWExamplePeer@203.0.113.10:4433"]
parents = []
# Time allowed to connect to a parent and exchange certificates, in milliseconds (>= 1).
connect_timeout_ms = 2000
# Time allowed for a parent's answer to start, and longest silence within a body, in
# milliseconds (>= 1). A parent that misses it is avoided for a while.
first_byte_timeout_ms = 5000
# Slowest body accepted from a parent, in KiB/s (>= 1).
min_body_rate_kib_s = 64

[quic]
# QUIC data plane: connections held at once, in all (>= 1); past half of it, new clients
# must first prove their address.
max_connections = 1024
# ... from one IP address (IPv6: one /64), and for one node key (>= 1).
max_connections_per_address = 64
max_connections_per_peer = 8

[mesh]
# Mesh peers always asked for content besides the members announcing it:
# "<peer id>@ip:port" of their listen.iroh. Example:
# peers = ["12D3KooWExamplePeer@203.0.113.11:4434"]
peers = []

[geo]
# MaxMind .mmdb database for viewer geo-IP lookup; "" = none.
database = ""
# Reverse proxies whose forwarding headers are trusted: CIDRs or bare IPs. Example:
# trusted_proxies = ["10.0.0.0/8", "192.0.2.1"]
trusted_proxies = []

[satellite]
@UPLINK_COMMENT@
uplink = "@UPLINK@"
# Uplink bandwidth in kbit/s (>= 8).
rate_kbps = 2000
# Repair (FEC) overhead in percent of the payload (0..=400).
repair_overhead_percent = 25
# Receive a broadcast on "udp://ip:port"; "" = none.
downlink = ""
# Where the broadcast may come from: CIDRs or IPs (at most 16); [] = any address.
# Example: downlink_sources = ["192.0.2.10"]
downlink_sources = []

@PLUGINS@

[http]
# Viewer plane: maximum simultaneous connections (>= 1).
max_connections = 10000
# Time allowed for a client to send its request headers (and, on a new connection, its
# first bytes), in milliseconds (>= 1).
header_read_timeout_ms = 10000
# A connection with no request in flight for this long is closed, in milliseconds (>= 1).
idle_timeout_ms = 60000
# Time allowed for a whole request body, in milliseconds (>= 1).
body_read_timeout_ms = 30000
# HTTP/2 pings and TCP keepalive probes on idle connections, in milliseconds (>= 1000).
keepalive_interval_ms = 20000
# Maximum simultaneous connections from one client address (IPv6: its /64) (>= 1).
max_connections_per_client = 256
# Bearer token opening the plugins' admin routes on the viewer plane (>= 32 characters);
# "" = admin socket only. Accepted only over HTTPS or from a loopback address.
admin_token = ""
# PEM certificate chain and private key of listen.https (e.g. certbot's fullchain.pem and
# privkey.pem); re-read when they change. Example:
# tls_cert = "/etc/letsencrypt/live/edge1.example.net/fullchain.pem"
# tls_key = "/etc/letsencrypt/live/edge1.example.net/privkey.pem"
tls_cert = ""
tls_key = ""

[reports]
# Play reports to the origin (royalty input): batch period in seconds (>= 1).
report_interval_s = 30
# Batches kept on disk while the origin is unreachable; the oldest are kept.
max_outbox_batches = 100000

[backup]
# Origin only: hourly, daily and weekly snapshots in a restic repository, created on the
# first backup: a directory, or an S3 bucket as restic names it,
# "s3:http(s)://host[:port]/bucket[/prefix]", with AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY (and AWS_DEFAULT_REGION) in the daemon's environment.
# "" = no backups. `restic` lists, checks and restores them.
repository = ""
# A file whose first line is the repository password (required with repository).
password_file = ""
# Take the hourly, daily and weekly snapshots in the daemon; false leaves them to
# `mhc-node backup now --kind ...` from a timer.
schedule = true
# Days each kind of snapshot is kept (>= 1).
hourly_keep_days = 7
daily_keep_days = 7
weekly_keep_days = 30

[ha]
# Origin only: origins sharing `name` elect a primary through an etcd lease; the others are
# standbys and refuse writes. [] = a lone origin.
etcd = []
name = "mhc-origin"
# Seconds; a primary that cannot renew the lease stops writing before it expires (2..=60).
lease_ttl_s = 5
# POST a JSON event here at every change of primary; "" = none.
notify_url = ""

[origin]
# Origin only: the key file (`mhc-node keygen --out FILE`) that signs manifests and the
# ledger, shared by the origins of one [ha] cluster; "" = the node key.
publisher_key = ""
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    const FILE: &str = "/etc/mhc/node.toml";
    const KEY_A: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const KEY_B: &str = "3D4017C3E843895A92B70AA74D1B7EBC9C982CCF2EC4968CC0CD55F12AF4660C";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        from_toml_str(text, Path::new(FILE))
    }

    fn minimal(role: &str) -> String {
        format!("role = \"{role}\"\ndata_dir = \"/var/lib/mhc\"\n")
    }

    /// Minimal edge config plus `extra`; asserts the error names the file and `field`.
    fn field_err(extra: &str, field: &str) -> String {
        field_err_in(&format!("{}{extra}", minimal("edge")), field)
    }

    fn field_err_in(text: &str, field: &str) -> String {
        let err = parse(text).expect_err("config should be rejected");
        let shown = err.to_string();
        assert!(shown.contains(FILE), "missing file name: {shown}");
        assert!(
            shown.contains(&format!("field `{field}`")),
            "expected field `{field}` in: {shown}"
        );
        assert_eq!(err.field(), Some(field), "{shown}");
        shown
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(&minimal("edge")).unwrap();
        assert_eq!(c.role, Role::Edge);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/mhc"));
        assert_eq!(c.region, "default");
        assert_eq!(c.location, None);
        assert_eq!(c.listen.http, "0.0.0.0:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(c.listen.quic, "0.0.0.0:4433".parse::<SocketAddr>().unwrap());
        assert_eq!(c.listen.p2p, "/ip4/0.0.0.0/tcp/4001");
        assert_eq!(c.listen.iroh, "0.0.0.0:4434".parse::<SocketAddr>().unwrap());
        assert_eq!(c.listen.swim, "0.0.0.0:4435".parse::<SocketAddr>().unwrap());
        assert!(c.cluster.bootstrap.is_empty());
        assert_eq!(c.cluster.heartbeat_interval, Duration::from_millis(1000));
        assert_eq!(c.cluster.suspect_after_missed, 3);
        assert_eq!(c.cluster.dead_after_missed, 6);
        assert!(c.trust.publishers.is_empty() && c.trust.operators.is_empty());
        assert_eq!(c.cache.memory_bytes, 256 << 20);
        assert_eq!(c.cache.disk_bytes, 20 << 30);
        assert!(c.upstream.parents.is_empty());
        assert_eq!(c.geo.database, None);
        assert!(c.geo.trusted_proxies.is_empty());
        assert_eq!(c.satellite.uplink, None);
        assert_eq!(c.satellite.rate_kbps, 2000);
        assert_eq!(c.satellite.repair_overhead_percent, 25);
        assert_eq!(c.satellite.downlink, None);
        assert_eq!(c.plugins, Plugins::default());
        assert_eq!(c.http.max_connections, 10_000);
        assert_eq!(c.http.header_read_timeout, Duration::from_millis(10_000));
    }

    #[test]
    fn example_for_every_role_parses() {
        for role in Role::ALL {
            let text = example_config(role);
            let c = from_toml_str(&text, Path::new("example.toml"))
                .unwrap_or_else(|e| panic!("{role}: {e}\n{text}"));
            assert_eq!(c.role, role);
            assert_eq!(c.data_dir, PathBuf::from(format!("/var/lib/mhc/{role}")));
            for placeholder in ["@ROLE@", "@UPLINK@", "@UPLINK_COMMENT@", "@PLUGINS@"] {
                assert!(
                    !text.contains(placeholder),
                    "{role}: {placeholder} left in example"
                );
            }
            assert_eq!(c.satellite.uplink.is_some(), role == Role::SatelliteUplink);
        }
    }

    #[test]
    fn doc_example_is_origin_example() {
        let src = include_str!("lib.rs");
        let mut lines = src.lines().skip_while(|l| *l != "//! ```toml").skip(1);
        let mut doc = String::new();
        for line in lines.by_ref() {
            if line == "//! ```" {
                break;
            }
            let line = line.strip_prefix("//!").expect("doc line");
            doc.push_str(line.strip_prefix(' ').unwrap_or(line));
            doc.push('\n');
        }
        assert_eq!(doc, example_config(Role::Origin));
    }

    #[test]
    fn full_config_with_every_field() {
        let text = format!(
            r#"
role = "origin"
data_dir = "relative/dir"
region = "eu-west"
location = {{ lat = 52.37, lon = 4.90 }}

[listen]
http = "[::]:0"
quic = "127.0.0.1:4433"
p2p = "/ip6/::/udp/4001/quic-v1"
iroh = "127.0.0.1:0"

[cluster]
bootstrap = ["/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]
heartbeat_interval_ms = 50
suspect_after_missed = 1
dead_after_missed = 2

[trust]
publishers = ["{KEY_A}", "{KEY_B}"]
operators = ["{KEY_B}"]

[cache]
memory_mb = 0
disk_gb = 0.001

[upstream]
parents = ["10.0.0.1:4433", "12D3KooWabc@[2001:db8::1]:4433"]

[geo]
database = "/usr/share/GeoIP/GeoLite2-City.mmdb"
trusted_proxies = ["10.0.0.0/8", "192.0.2.1", "2001:db8::1"]

[satellite]
uplink = "udp://198.51.100.1:5000"
rate_kbps = 8
repair_overhead_percent = 400
downlink = "udp://[::]:5001"
downlink_sources = ["192.0.2.10", "2001:db8::/64"]

[plugins.royalty]
rate = 0.05
payees = ["a", "b"]
since = 2024-01-01T00:00:00Z

[plugins.ledger]

[http]
max_connections = 1
header_read_timeout_ms = 1
"#
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.role, Role::Origin);
        assert_eq!(c.data_dir, PathBuf::from("relative/dir"));
        assert_eq!(c.region, "eu-west");
        assert_eq!(
            c.location,
            Some(GeoPoint {
                lat: 52.37,
                lon: 4.90
            })
        );
        assert_eq!(c.listen.http, "[::]:0".parse::<SocketAddr>().unwrap());
        assert_eq!(c.listen.p2p, "/ip6/::/udp/4001/quic-v1");
        assert_eq!(c.cluster.bootstrap.len(), 1);
        assert_eq!(c.cluster.heartbeat_interval, Duration::from_millis(50));
        assert_eq!(c.trust.publishers.len(), 2);
        assert_eq!(c.trust.publishers[0][0], 0xd7);
        assert_eq!(c.trust.publishers[1][0], 0x3d);
        assert_eq!(c.trust.operators, vec![c.trust.publishers[1]]);
        assert_eq!(c.cache.memory_bytes, 0);
        assert_eq!(c.cache.disk_bytes, 1_073_742); // 0.001 GiB, rounded
        assert_eq!(
            c.upstream.parents,
            vec![
                Parent {
                    peer_id: None,
                    addr: "10.0.0.1:4433".parse().unwrap()
                },
                Parent {
                    peer_id: Some("12D3KooWabc".into()),
                    addr: "[2001:db8::1]:4433".parse().unwrap()
                },
            ]
        );
        assert_eq!(
            c.geo.database,
            Some(PathBuf::from("/usr/share/GeoIP/GeoLite2-City.mmdb"))
        );
        let proxies: Vec<String> = c
            .geo
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(proxies, ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::1/128"]);
        assert_eq!(
            c.satellite.uplink,
            Some("198.51.100.1:5000".parse().unwrap())
        );
        assert_eq!(c.satellite.downlink, Some("[::]:5001".parse().unwrap()));
        assert_eq!(
            c.satellite.downlink_sources,
            vec![
                "192.0.2.10/32".parse::<ipnet::IpNet>().unwrap(),
                "2001:db8::/64".parse().unwrap()
            ]
        );
        assert_eq!(c.satellite.rate_kbps, 8);
        assert_eq!(c.satellite.repair_overhead_percent, 400);
        let royalty = c.plugins.royalty.as_ref().unwrap();
        assert_eq!(royalty["rate"].as_float(), Some(0.05));
        assert!(royalty["since"].is_datetime());
        assert_eq!(c.plugins.ledger, Some(toml::Table::new()));
        assert_eq!(c.http.max_connections, 1);
        assert_eq!(c.http.header_read_timeout, Duration::from_millis(1));
    }

    #[test]
    fn load_reads_file_and_reports_missing_file() {
        let dir = std::env::temp_dir().join(format!("mhc-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(&path, example_config(Role::Mesh)).unwrap();
        let c = load(&path).unwrap();
        assert_eq!(c.role, Role::Mesh);

        std::fs::write(&path, "role = \"mesh\"\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("`data_dir`"),
            "{err}"
        );

        let missing = dir.join("absent.toml");
        let err = load(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("absent.toml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn syntax_error_keeps_line_info() {
        let err = parse("role = \"edge\"\ndata_dir = \"x\"\n[cache\nmemory_mb = 1\n").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
        let shown = err.to_string();
        assert!(shown.contains(FILE), "{shown}");
        assert!(shown.contains("line 3"), "{shown}");
        assert_eq!(err.field(), None);

        let err = parse("role = \"edge\"\nrole = \"mesh\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn missing_required_fields_are_named() {
        let s = field_err_in("data_dir = \"x\"\n", "role");
        assert!(s.contains("missing"), "{s}");
        let s = field_err_in("role = \"edge\"\n", "data_dir");
        assert!(s.contains("missing"), "{s}");
        field_err_in(
            "role = \"edge\"\ndata_dir = \"x\"\nlocation = { lat = 1.0 }\n",
            "location.lon",
        );
    }

    #[test]
    fn bad_top_level_fields() {
        let s = field_err_in("role = \"relay\"\ndata_dir = \"x\"\n", "role");
        assert!(s.contains("relay") && s.contains("satellite-uplink"), "{s}");
        field_err_in("role = 3\ndata_dir = \"x\"\n", "role");
        field_err_in("role = \"edge\"\ndata_dir = \"\"\n", "data_dir");
        field_err("region = \"\"\n", "region");
        field_err("location = { lat = 91.0, lon = 0.0 }\n", "location.lat");
        field_err("location = { lat = 0.0, lon = -180.5 }\n", "location.lon");
        field_err("location = { lat = nan, lon = 0.0 }\n", "location.lat");
    }

    #[test]
    fn unknown_fields_give_full_path() {
        let s = field_err("colour = \"blue\"\n", "colour");
        assert!(s.contains("unknown field; expected one of"), "{s}");
        assert!(s.contains("`data_dir`"), "{s}");

        let s = field_err("[cache]\nmemry_mb = 1\n", "cache.memry_mb");
        assert!(
            s.contains("unknown field; expected one of `memory_mb`, `disk_gb`"),
            "{s}"
        );

        field_err(
            "location = { lat = 1.0, lon = 2.0, alt = 3.0 }\n",
            "location.alt",
        );
        field_err("[plugins.telemetry]\n", "plugins.telemetry");
        field_err("[listen]\nhttp3 = \"0.0.0.0:443\"\n", "listen.http3");
    }

    #[test]
    fn publisher_key_is_an_origins_absolute_path() {
        let origin = minimal("origin");
        let ok = parse(&format!(
            "{origin}[origin]\npublisher_key = \"/etc/mhc/publisher.key\"\n"
        ))
        .unwrap();
        assert_eq!(
            ok.publisher_key,
            Some(PathBuf::from("/etc/mhc/publisher.key"))
        );
        assert_eq!(parse(&origin).unwrap().publisher_key, None);
        field_err_in(
            &format!("{origin}[origin]\npublisher_key = \"publisher.key\"\n"),
            "origin.publisher_key",
        );
        field_err("[origin]\npublisher_key = \"/k\"\n", "origin.publisher_key");
    }

    #[test]
    fn ha_settings_are_checked_field_by_field() {
        let origin = minimal("origin");
        let ok = parse(&format!(
            "{origin}[ha]\netcd = [\"http://127.0.0.1:2379\"]\nname = \"eu-origin\"\n"
        ))
        .unwrap();
        let ha = ok.ha.unwrap();
        assert_eq!(ha.name, "eu-origin");
        assert_eq!(ha.lease_ttl, Duration::from_secs(5));
        assert_eq!(ha.notify_url, None);
        assert_eq!(parse(&origin).unwrap().ha, None);
        for (body, field) in [
            ("etcd = [\"127.0.0.1:2379\"]\n", "ha.etcd[0]"),
            ("etcd = [\"http://a:1\", \"https://b:2\"]\n", "ha.etcd[1]"),
            ("etcd = [\"http://a:1\"]\nname = \"a b\"\n", "ha.name"),
            (
                "etcd = [\"http://a:1\"]\nlease_ttl_s = 1\n",
                "ha.lease_ttl_s",
            ),
            (
                "etcd = [\"http://a:1\"]\nnotify_url = \"ftp://x\"\n",
                "ha.notify_url",
            ),
            ("etcd = [\"http://a:1\"]\nttl = 5\n", "ha.ttl"),
        ] {
            field_err_in(&format!("{origin}[ha]\n{body}"), field);
        }
        field_err("[ha]\netcd = [\"http://a:1\"]\n", "ha.etcd");
    }

    #[test]
    fn backup_settings_are_checked_field_by_field() {
        let origin = minimal("origin");
        let ok = parse(&format!(
            "{origin}[backup]\nrepository = \"/var/backups/mhc\"\npassword_file = \"/etc/mhc/p\"\n\
             weekly_keep_days = 60\n"
        ))
        .unwrap();
        assert_eq!(
            ok.backup.repository,
            Some(BackupTarget::Local(PathBuf::from("/var/backups/mhc")))
        );
        assert_eq!(ok.backup.keep.weekly, Duration::from_secs(60 * 86_400));
        assert_eq!(ok.backup.keep.hourly, Duration::from_secs(7 * 86_400));
        assert_eq!(parse(&origin).unwrap().backup.repository, None);
        field_err_in(
            &format!("{origin}[backup]\nrepository = \"/r\"\n"),
            "backup.password_file",
        );
        field_err_in(
            &format!("{origin}[backup]\nrepository = \"/r\"\npassword_file = \"/p\"\ndaily_keep_days = 0\n"),
            "backup.daily_keep_days",
        );
        let s3 = |location: &str| {
            parse(&format!(
                "{origin}[backup]\nrepository = \"{location}\"\npassword_file = \"/p\"\n"
            ))
            .map(|c| c.backup.repository)
        };
        let at = |endpoint: &str, bucket: &str, prefix: &str| {
            Some(BackupTarget::S3(S3Location {
                endpoint: endpoint.into(),
                bucket: bucket.into(),
                prefix: prefix.into(),
            }))
        };
        assert_eq!(
            s3("s3:http://127.0.0.1:7480/mhc-backups/origin/a/").unwrap(),
            at("http://127.0.0.1:7480", "mhc-backups", "origin/a")
        );
        assert_eq!(
            s3("s3:s3.eu-west-1.amazonaws.com/bucket").unwrap(),
            at("https://s3.eu-west-1.amazonaws.com", "bucket", "")
        );
        assert_eq!(
            s3("s3:https://h/b.c-d/x").unwrap().unwrap().to_string(),
            "s3:https://h/b.c-d/x"
        );
        for bad in [
            "s3:http://h:9000/B",
            "s3:http://h:9000/",
            "s3:ftp://h/bucket",
            "s3:http:///bucket",
            "s3:http://h/bucket/../x",
            "s3:http://h/bucket/a//b",
            "s3:http://h:99999/bucket",
            "s3:http://k:s@h/bucket",
            "sftp:host:/srv/restic",
        ] {
            let err = s3(bad).unwrap_err().to_string();
            assert!(err.contains("backup.repository"), "{bad}: {err}");
        }
        field_err(
            "[backup]\nrepository = \"/r\"\npassword_file = \"/p\"\n",
            "backup.repository",
        );
        field_err("[backup]\nhourly_days = 3\n", "backup.hourly_days");
    }

    #[test]
    fn type_errors_give_path_and_position() {
        let s = field_err("[cache]\nmemory_mb = \"lots\"\n", "cache.memory_mb");
        assert!(s.contains("line 4"), "{s}");
        field_err("[cache]\nmemory_mb = -1\n", "cache.memory_mb");
        field_err("[cache]\nmemory_mb = 1.5\n", "cache.memory_mb");
        field_err("[cluster]\nbootstrap = [1]\n", "cluster.bootstrap[0]");
        field_err(
            "[cluster]\nbootstrap = \"/ip4/1.2.3.4\"\n",
            "cluster.bootstrap",
        );
        field_err("cache = 5\n", "cache");
        field_err(
            "[satellite]\nrate_kbps = 5000000000\n",
            "satellite.rate_kbps",
        );
    }

    #[test]
    fn bad_listen_addresses() {
        let s = field_err("[listen]\nhttp = \"localhost:8080\"\n", "listen.http");
        assert!(s.contains("localhost:8080"), "{s}");
        field_err("[listen]\nhttp = \"0.0.0.0\"\n", "listen.http");
        field_err("[listen]\nquic = \"0.0.0.0:70000\"\n", "listen.quic");
        field_err("[listen]\niroh = \"\"\n", "listen.iroh");
        field_err("[listen]\np2p = \"ip4/0.0.0.0/tcp/4001\"\n", "listen.p2p");
        field_err("[listen]\np2p = \"/\"\n", "listen.p2p");
        field_err("[listen]\niroh = \"0.0.0.0:4433\"\n", "listen.iroh");
        field_err("[listen]\nswim = \"0.0.0.0:4434\"\n", "listen.swim");
        field_err("[listen]\nswim = \"nowhere\"\n", "listen.swim");
        // Same TCP/UDP port number on different protocols is fine; port 0 never collides.
        parse(&format!(
            "{}[listen]\nhttp = \"0.0.0.0:4433\"\nquic = \"0.0.0.0:0\"\niroh = \"0.0.0.0:0\"\n",
            minimal("edge")
        ))
        .unwrap();
    }

    #[test]
    fn bad_cluster_settings() {
        field_err(
            "[cluster]\nbootstrap = [\"/ip4/1.2.3.4/tcp/4001\"]\n",
            "cluster.bootstrap[0]",
        );
        field_err(
            "[cluster]\nbootstrap = [\"/ip4/1.2.3.4/tcp/4001/p2p/12D3KooWa\", \"/p2p/12D3KooWa\"]\n",
            "cluster.bootstrap[1]",
        );
        field_err(
            "[cluster]\nbootstrap = [\"/ip4/1.2.3.4/tcp/4001/p2p/\"]\n",
            "cluster.bootstrap[0]",
        );
        field_err(
            "[cluster]\nheartbeat_interval_ms = 49\n",
            "cluster.heartbeat_interval_ms",
        );
        field_err(
            "[cluster]\nsuspect_after_missed = 0\n",
            "cluster.suspect_after_missed",
        );
        let s = field_err(
            "[cluster]\ndead_after_missed = 3\n",
            "cluster.dead_after_missed",
        );
        assert!(s.contains("suspect_after_missed"), "{s}");
    }

    #[test]
    fn bad_trust_keys() {
        let s = field_err(
            &format!("[trust]\npublishers = [\"{KEY_A}\", \"abcd\"]\n"),
            "trust.publishers[1]",
        );
        assert!(s.contains("64 hex"), "{s}");
        let not_hex = format!("{}zz", &KEY_A[..62]);
        field_err(
            &format!("[trust]\noperators = [\"{not_hex}\"]\n"),
            "trust.operators[0]",
        );
    }

    #[test]
    fn bad_cache_sizes() {
        field_err("[cache]\ndisk_gb = 0\n", "cache.disk_gb");
        field_err("[cache]\ndisk_gb = -1.5\n", "cache.disk_gb");
        field_err("[cache]\ndisk_gb = inf\n", "cache.disk_gb");
        field_err("[cache]\ndisk_gb = 1e300\n", "cache.disk_gb");
        field_err("[cache]\ndisk_gb = 1e-12\n", "cache.disk_gb");
        field_err("[cache]\ndisk_gb = \"20\"\n", "cache.disk_gb");
        field_err(
            "[cache]\nmemory_mb = 9223372036854775807\n",
            "cache.memory_mb",
        );
    }

    #[test]
    fn bad_upstream_parents() {
        field_err(
            "[upstream]\nparents = [\"parent.example:4433\"]\n",
            "upstream.parents[0]",
        );
        field_err(
            "[upstream]\nparents = [\"@10.0.0.1:4433\"]\n",
            "upstream.parents[0]",
        );
        field_err(
            "[upstream]\nparents = [\"10.0.0.1:4433\", \"id@10.0.0.1\"]\n",
            "upstream.parents[1]",
        );
        for field in [
            "connect_timeout_ms",
            "first_byte_timeout_ms",
            "min_body_rate_kib_s",
        ] {
            field_err(
                &format!("[upstream]\n{field} = 0\n"),
                &format!("upstream.{field}"),
            );
        }
        field_err(
            "[upstream]\nmin_body_rate_kib_s = 9223372036854775807\n",
            "upstream.min_body_rate_kib_s",
        );
    }

    #[test]
    fn https_needs_its_certificate_and_key_and_they_need_https() {
        let c = parse(&minimal("edge")).unwrap();
        assert_eq!((c.listen.https, c.http.tls), (None, None));
        let c = parse(&format!(
            "{}[listen]\nhttps = \"0.0.0.0:8443\"\n[http]\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n",
            minimal("edge")
        ))
        .unwrap();
        assert_eq!(c.listen.https, Some("0.0.0.0:8443".parse().unwrap()));
        assert_eq!(
            c.http.tls,
            Some(TlsFiles {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
        field_err("[listen]\nhttps = \"0.0.0.0:8443\"\n", "http.tls_cert");
        field_err(
            "[listen]\nhttps = \"0.0.0.0:8443\"\n[http]\ntls_cert = \"/c.pem\"\n",
            "http.tls_key",
        );
        field_err(
            "[http]\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n",
            "listen.https",
        );
        field_err("[listen]\nhttps = \"localhost:8443\"\n", "listen.https");
        field_err(
            "[listen]\nhttp = \"0.0.0.0:8443\"\nhttps = \"0.0.0.0:8443\"\n",
            "listen.https",
        );
    }

    #[test]
    fn quic_caps_default_and_must_be_positive() {
        let c = parse(&minimal("edge")).unwrap();
        assert_eq!(
            c.quic,
            QuicCaps {
                max_connections: 1024,
                max_connections_per_address: 64,
                max_connections_per_peer: 8,
            }
        );
        for field in [
            "max_connections",
            "max_connections_per_address",
            "max_connections_per_peer",
        ] {
            field_err(&format!("[quic]\n{field} = 0\n"), &format!("quic.{field}"));
        }
    }

    #[test]
    fn a_body_may_take_the_first_byte_allowance_plus_its_size_at_the_slowest_rate() {
        let c = parse(&format!(
            "{}[upstream]\nfirst_byte_timeout_ms = 1000\nmin_body_rate_kib_s = 512\n",
            minimal("edge")
        ))
        .unwrap();
        assert_eq!(c.upstream.min_body_rate, 512 * 1024);
        assert_eq!(c.upstream.body_deadline(2 << 20), Duration::from_secs(5));
    }

    #[test]
    fn bad_geo_settings() {
        field_err(
            "[geo]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
            "geo.trusted_proxies[0]",
        );
        field_err(
            "[geo]\ntrusted_proxies = [\"10.0.0.0/8\", \"proxy.local\"]\n",
            "geo.trusted_proxies[1]",
        );
    }

    #[test]
    fn satellite_rules() {
        let s = field_err_in(&minimal("satellite-uplink"), "satellite.uplink");
        assert!(s.contains("required"), "{s}");
        let ok = parse(&format!(
            "{}[satellite]\nuplink = \"udp://127.0.0.1:5000\"\n",
            minimal("satellite-uplink")
        ))
        .unwrap();
        assert_eq!(ok.role, Role::SatelliteUplink);
        assert_eq!(ok.satellite.uplink, Some("127.0.0.1:5000".parse().unwrap()));

        let s = field_err(
            "[satellite]\nuplink = \"127.0.0.1:5000\"\n",
            "satellite.uplink",
        );
        assert!(s.contains("udp://"), "{s}");
        field_err(
            "[satellite]\nuplink = \"udp://sat.example:5000\"\n",
            "satellite.uplink",
        );
        field_err(
            "[satellite]\ndownlink = \"tcp://0.0.0.0:5000\"\n",
            "satellite.downlink",
        );
        field_err(
            "[satellite]\ndownlink_sources = [\"192.0.2.1\", \"sat-receiver\"]\n",
            "satellite.downlink_sources[1]",
        );
        field_err(
            &format!(
                "[satellite]\ndownlink_sources = [{}]\n",
                vec!["\"192.0.2.1\""; 17].join(", ")
            ),
            "satellite.downlink_sources",
        );
        field_err("[satellite]\nrate_kbps = 7\n", "satellite.rate_kbps");
        field_err(
            "[satellite]\nrepair_overhead_percent = 401\n",
            "satellite.repair_overhead_percent",
        );
        // An uplink on another role is accepted (and ignored by that role).
        parse(&format!(
            "{}[satellite]\nuplink = \"udp://127.0.0.1:5000\"\n",
            minimal("edge")
        ))
        .unwrap();
    }

    #[test]
    fn plugins_only_on_origin() {
        for role in ["edge", "mesh", "satellite-uplink"] {
            let text = format!(
                "{}[satellite]\nuplink = \"udp://127.0.0.1:5000\"\n[plugins.royalty]\nx = 1\n",
                minimal(role)
            );
            let s = field_err_in(&text, "plugins.royalty");
            assert!(s.contains("origin"), "{s}");
        }
        field_err("[plugins.ledger]\n", "plugins.ledger");
        let c = parse(&format!("{}[plugins.royalty]\n", minimal("origin"))).unwrap();
        assert_eq!(c.plugins.royalty, Some(toml::Table::new()));
        assert_eq!(c.plugins.ledger, None);
    }

    #[test]
    fn bad_http_limits() {
        field_err("[http]\nmax_connections = 0\n", "http.max_connections");
        field_err(
            "[http]\nheader_read_timeout_ms = 0\n",
            "http.header_read_timeout_ms",
        );
        field_err("[http]\nmax_connection = 5\n", "http.max_connection");
        field_err("[http]\nidle_timeout_ms = 0\n", "http.idle_timeout_ms");
        field_err(
            "[http]\nbody_read_timeout_ms = 0\n",
            "http.body_read_timeout_ms",
        );
        field_err(
            "[http]\nkeepalive_interval_ms = 999\n",
            "http.keepalive_interval_ms",
        );
        field_err(
            "[http]\nmax_connections_per_client = 0\n",
            "http.max_connections_per_client",
        );
    }
}
