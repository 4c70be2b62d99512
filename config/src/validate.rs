//! Semantic validation: [`ConfigFile`] → [`Config`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ConfigError;
use crate::file::{
    BackupSection, CacheSection, ClusterSection, ConfigFile, GeoSection, HaSection, HttpSection,
    ListenSection, LocationSection, MeshSection, OriginSection, PluginsSection, QuicSection,
    ReportsSection, SatelliteSection, TrustSection, UpstreamSection,
};
use crate::runtime::{
    Backup, BackupRetention, BackupTarget, Cache, Cluster, Config, Geo, GeoPoint, Ha, HttpLimits,
    Listen, Parent, Plugins, QuicCaps, Reports, Role, S3Location, Satellite, TlsFiles, Trust,
    Upstream,
};

const MIB: u64 = 1 << 20;
/// Most `satellite.downlink_sources` entries.
const MAX_DOWNLINK_SOURCES: usize = 16;
const GIB: f64 = (1u64 << 30) as f64;

/// Minimum `cluster.heartbeat_interval_ms`.
const MIN_HEARTBEAT_MS: u64 = 50;
/// Minimum `satellite.rate_kbps`.
const MIN_RATE_KBPS: u32 = 8;
/// Maximum `satellite.repair_overhead_percent`.
const MAX_REPAIR_PERCENT: u32 = 400;

type Result<T> = std::result::Result<T, ConfigError>;

/// Carries the file name so each check can build a [`ConfigError::Field`].
struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::field_error(self.file, field, problem)
    }
}

impl ConfigFile {
    /// Checks every rule and converts to the runtime [`Config`]. `file` is only used in error
    /// messages. Stops at the first problem, checking fields in file order.
    pub fn validate(self, file: &Path) -> Result<Config> {
        let cx = Ctx { file };
        let role: Role = self
            .role
            .parse()
            .map_err(|e| cx.err("role", format!("{e}")))?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(cx.err("data_dir", "must not be empty"));
        }
        if self.region.trim().is_empty() {
            return Err(cx.err("region", "must not be empty"));
        }
        let location = self.location.map(|l| location(&cx, l)).transpose()?;
        let listen = listen(&cx, self.listen)?;
        let cluster = cluster(&cx, self.cluster)?;
        let trust = trust(&cx, self.trust)?;
        let cache = cache(&cx, self.cache)?;
        let upstream = upstream(&cx, self.upstream)?;
        let quic = quic(&cx, self.quic)?;
        let mesh_peers = mesh_peers(&cx, self.mesh)?;
        let geo = geo(&cx, self.geo)?;
        let satellite = satellite(&cx, self.satellite, role)?;
        let plugins = plugins(&cx, self.plugins, role)?;
        let http = http(&cx, self.http, listen.https)?;
        let reports = reports(&cx, self.reports)?;
        let backup = backup(&cx, self.backup, role)?;
        let ha = ha(&cx, self.ha, role)?;
        let publisher_key = publisher_key(&cx, self.origin, role)?;
        Ok(Config {
            role,
            data_dir: self.data_dir,
            region: self.region,
            location,
            listen,
            cluster,
            trust,
            cache,
            upstream,
            quic,
            mesh_peers,
            geo,
            satellite,
            plugins,
            http,
            reports,
            backup,
            ha,
            publisher_key,
        })
    }
}

fn location(cx: &Ctx<'_>, l: LocationSection) -> Result<GeoPoint> {
    if !(l.lat.is_finite() && (-90.0..=90.0).contains(&l.lat)) {
        return Err(cx.err(
            "location.lat",
            format!("{} is out of range; expected degrees in [-90, 90]", l.lat),
        ));
    }
    if !(l.lon.is_finite() && (-180.0..=180.0).contains(&l.lon)) {
        return Err(cx.err(
            "location.lon",
            format!("{} is out of range; expected degrees in [-180, 180]", l.lon),
        ));
    }
    Ok(GeoPoint {
        lat: l.lat,
        lon: l.lon,
    })
}

fn socket_addr(cx: &Ctx<'_>, field: &str, s: &str) -> Result<SocketAddr> {
    s.parse().map_err(|_| {
        cx.err(
            field,
            format!(
                "`{s}` is not a socket address; expected ip:port such as \"0.0.0.0:8080\" or \"[::]:8080\""
            ),
        )
    })
}

/// Two UDP sockets would collide if they use the same non-zero port on overlapping addresses.
fn udp_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn listen(cx: &Ctx<'_>, l: ListenSection) -> Result<Listen> {
    let http = socket_addr(cx, "listen.http", &l.http)?;
    let quic = socket_addr(cx, "listen.quic", &l.quic)?;
    if !is_multiaddr_like(&l.p2p) {
        return Err(cx.err(
            "listen.p2p",
            format!(
                "`{}` is not a multiaddr; expected e.g. \"/ip4/0.0.0.0/tcp/4001\"",
                l.p2p
            ),
        ));
    }
    let iroh = socket_addr(cx, "listen.iroh", &l.iroh)?;
    let swim = socket_addr(cx, "listen.swim", &l.swim)?;
    let https = if l.https.is_empty() {
        None
    } else {
        let https = socket_addr(cx, "listen.https", &l.https)?;
        if https == http && https.port() != 0 {
            return Err(cx.err(
                "listen.https",
                format!("{https} is also listen.http; HTTP and HTTPS need distinct ports"),
            ));
        }
        Some(https)
    };
    if udp_overlap(quic, iroh) {
        return Err(cx.err(
            "listen.iroh",
            format!(
                "{iroh} collides with listen.quic ({quic}); both are UDP and need distinct ports"
            ),
        ));
    }
    for (name, other) in [("listen.quic", quic), ("listen.iroh", iroh)] {
        if udp_overlap(swim, other) {
            return Err(cx.err(
                "listen.swim",
                format!(
                    "{swim} collides with {name} ({other}); both are UDP and need distinct ports"
                ),
            ));
        }
    }
    Ok(Listen {
        http,
        quic,
        p2p: l.p2p,
        iroh,
        swim,
        https,
    })
}

/// Starts with `/`, has at least one segment, no empty segments and no whitespace.
fn is_multiaddr_like(s: &str) -> bool {
    match s.strip_prefix('/') {
        Some(rest) => {
            !rest.is_empty()
                && !s.chars().any(char::is_whitespace)
                && rest.split('/').all(|seg| !seg.is_empty())
        }
        None => false,
    }
}

/// libp2p peer ids are base58btc or multibase (base32) text: ASCII alphanumerics.
fn is_peer_id_like(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn cluster(cx: &Ctx<'_>, c: ClusterSection) -> Result<Cluster> {
    for (i, addr) in c.bootstrap.iter().enumerate() {
        let segments: Vec<&str> = addr.split('/').collect();
        // "/ip4/1.2.3.4/tcp/1/p2p/ID" → ["", "ip4", ..., "p2p", "ID"]
        let ok = is_multiaddr_like(addr)
            && segments.len() >= 4
            && segments[segments.len() - 2] == "p2p"
            && is_peer_id_like(segments[segments.len() - 1]);
        if !ok {
            return Err(cx.err(
                format!("cluster.bootstrap[{i}]"),
                format!(
                    "`{addr}` is not a bootstrap multiaddr; expected an address ending in \
                     /p2p/<peer id>, e.g. \"/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...\""
                ),
            ));
        }
    }
    if c.heartbeat_interval_ms < MIN_HEARTBEAT_MS {
        return Err(cx.err(
            "cluster.heartbeat_interval_ms",
            format!(
                "{} is too small; must be at least {MIN_HEARTBEAT_MS} (milliseconds)",
                c.heartbeat_interval_ms
            ),
        ));
    }
    if c.suspect_after_missed < 1 {
        return Err(cx.err("cluster.suspect_after_missed", "must be at least 1"));
    }
    if c.dead_after_missed <= c.suspect_after_missed {
        return Err(cx.err(
            "cluster.dead_after_missed",
            format!(
                "{} must be greater than cluster.suspect_after_missed ({})",
                c.dead_after_missed, c.suspect_after_missed
            ),
        ));
    }
    Ok(Cluster {
        bootstrap: c.bootstrap,
        heartbeat_interval: Duration::from_millis(c.heartbeat_interval_ms),
        suspect_after_missed: c.suspect_after_missed,
        dead_after_missed: c.dead_after_missed,
    })
}

fn public_keys(cx: &Ctx<'_>, field: &str, keys: &[String]) -> Result<Vec<[u8; 32]>> {
    keys.iter()
        .enumerate()
        .map(|(i, key)| {
            let bad = |why: String| cx.err(format!("{field}[{i}]"), why);
            if key.len() != 64 {
                return Err(bad(format!(
                    "expected an ed25519 public key as 64 hex characters, got {} characters",
                    key.chars().count()
                )));
            }
            let mut out = [0u8; 32];
            hex::decode_to_slice(key, &mut out)
                .map_err(|e| bad(format!("`{key}` is not valid hex: {e}")))?;
            Ok(out)
        })
        .collect()
}

fn trust(cx: &Ctx<'_>, t: TrustSection) -> Result<Trust> {
    Ok(Trust {
        publishers: public_keys(cx, "trust.publishers", &t.publishers)?,
        operators: public_keys(cx, "trust.operators", &t.operators)?,
        certificate: match t.certificate {
            Some(path) if path.is_empty() => {
                return Err(cx.err(
                    "trust.certificate",
                    "must not be empty (leave it out for data_dir/node.cert)",
                ))
            }
            path => path.map(PathBuf::from),
        },
    })
}

fn cache(cx: &Ctx<'_>, c: CacheSection) -> Result<Cache> {
    let memory_bytes = c.memory_mb.checked_mul(MIB).ok_or_else(|| {
        cx.err(
            "cache.memory_mb",
            format!("{} MiB does not fit in 64 bits of bytes", c.memory_mb),
        )
    })?;
    if !(c.disk_gb.is_finite() && c.disk_gb > 0.0) {
        return Err(cx.err(
            "cache.disk_gb",
            format!(
                "{} is invalid; must be a number greater than 0 (GiB)",
                c.disk_gb
            ),
        ));
    }
    let bytes = (c.disk_gb * GIB).round();
    // u64::MAX as f64 rounds up to 2^64, so `>=` rejects everything that would saturate.
    if bytes >= u64::MAX as f64 {
        return Err(cx.err(
            "cache.disk_gb",
            format!("{} GiB does not fit in 64 bits of bytes", c.disk_gb),
        ));
    }
    if bytes < 1.0 {
        return Err(cx.err(
            "cache.disk_gb",
            format!(
                "{} GiB is less than one byte; must be greater than 0",
                c.disk_gb
            ),
        ));
    }
    Ok(Cache {
        memory_bytes,
        // In range (checked above), so the cast is exact for the rounded integer value.
        disk_bytes: bytes as u64,
    })
}

fn upstream(cx: &Ctx<'_>, u: UpstreamSection) -> Result<Upstream> {
    let parents = u
        .parents
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let field = format!("upstream.parents[{i}]");
            let (peer_id, addr) = match p.split_once('@') {
                Some((id, addr)) => {
                    if !is_peer_id_like(id) {
                        return Err(cx.err(
                            field,
                            format!("`{p}`: peer id before `@` must be a non-empty libp2p peer id"),
                        ));
                    }
                    (Some(id.to_owned()), addr)
                }
                None => (None, p.as_str()),
            };
            let addr: SocketAddr = addr.parse().map_err(|_| {
                cx.err(
                    &field,
                    format!("`{p}` is not a parent; expected \"ip:port\" or \"<peer id>@ip:port\""),
                )
            })?;
            Ok(Parent { peer_id, addr })
        })
        .collect::<Result<Vec<_>>>()?;
    for (field, value) in [
        ("upstream.connect_timeout_ms", u.connect_timeout_ms),
        ("upstream.first_byte_timeout_ms", u.first_byte_timeout_ms),
        ("upstream.min_body_rate_kib_s", u.min_body_rate_kib_s),
    ] {
        if value == 0 {
            return Err(cx.err(field, "must be at least 1"));
        }
    }
    let min_body_rate = u.min_body_rate_kib_s.checked_mul(1024).ok_or_else(|| {
        cx.err(
            "upstream.min_body_rate_kib_s",
            "is too large (at most 2^54 KiB/s)",
        )
    })?;
    Ok(Upstream {
        parents,
        connect_timeout: Duration::from_millis(u.connect_timeout_ms),
        first_byte_timeout: Duration::from_millis(u.first_byte_timeout_ms),
        min_body_rate,
    })
}

fn quic(cx: &Ctx<'_>, q: QuicSection) -> Result<QuicCaps> {
    for (field, value) in [
        ("quic.max_connections", q.max_connections),
        (
            "quic.max_connections_per_address",
            q.max_connections_per_address,
        ),
        ("quic.max_connections_per_peer", q.max_connections_per_peer),
    ] {
        if value == 0 {
            return Err(cx.err(field, "must be at least 1"));
        }
    }
    Ok(QuicCaps {
        max_connections: q.max_connections,
        max_connections_per_address: q.max_connections_per_address,
        max_connections_per_peer: q.max_connections_per_peer,
    })
}

fn mesh_peers(cx: &Ctx<'_>, m: MeshSection) -> Result<Vec<Parent>> {
    m.peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let field = format!("mesh.peers[{i}]");
            let bad = || {
                cx.err(
                    &field,
                    format!("`{p}` is not a mesh peer; expected \"<peer id>@ip:port\""),
                )
            };
            let (id, addr) = p.split_once('@').ok_or_else(bad)?;
            if !is_peer_id_like(id) {
                return Err(bad());
            }
            let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
            Ok(Parent {
                peer_id: Some(id.to_owned()),
                addr,
            })
        })
        .collect()
}

/// A list of CIDRs or bare IP addresses (`field[i]` named in errors).
fn networks(cx: &Ctx<'_>, field: &str, list: &[String]) -> Result<Vec<ipnet::IpNet>> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    cx.err(
                        format!("{field}[{i}]"),
                        format!(
                            "`{s}` is not a CIDR or IP address; expected e.g. \"10.0.0.0/8\" or \"192.0.2.1\""
                        ),
                    )
                })
        })
        .collect()
}

fn geo(cx: &Ctx<'_>, g: GeoSection) -> Result<Geo> {
    let database = (!g.database.is_empty()).then(|| PathBuf::from(g.database));
    let trusted_proxies = networks(cx, "geo.trusted_proxies", &g.trusted_proxies)?;
    Ok(Geo {
        database,
        trusted_proxies,
    })
}

fn udp_addr(cx: &Ctx<'_>, field: &str, s: &str) -> Result<Option<SocketAddr>> {
    if s.is_empty() {
        return Ok(None);
    }
    let rest = s.strip_prefix("udp://").ok_or_else(|| {
        cx.err(
            field,
            format!("`{s}` must start with `udp://`, e.g. \"udp://203.0.113.5:5000\" (or be \"\" for none)"),
        )
    })?;
    rest.parse().map(Some).map_err(|_| {
        cx.err(
            field,
            format!("`{s}` is not udp://ip:port, e.g. \"udp://203.0.113.5:5000\""),
        )
    })
}

fn satellite(cx: &Ctx<'_>, s: SatelliteSection, role: Role) -> Result<Satellite> {
    let uplink = udp_addr(cx, "satellite.uplink", &s.uplink)?;
    if role == Role::SatelliteUplink && uplink.is_none() {
        return Err(cx.err(
            "satellite.uplink",
            "required for role `satellite-uplink`; set e.g. uplink = \"udp://203.0.113.5:5000\"",
        ));
    }
    if s.rate_kbps < MIN_RATE_KBPS {
        return Err(cx.err(
            "satellite.rate_kbps",
            format!(
                "{} is too small; must be at least {MIN_RATE_KBPS} (kbit/s)",
                s.rate_kbps
            ),
        ));
    }
    if s.repair_overhead_percent > MAX_REPAIR_PERCENT {
        return Err(cx.err(
            "satellite.repair_overhead_percent",
            format!(
                "{} is too large; must be in 0..={MAX_REPAIR_PERCENT} (percent)",
                s.repair_overhead_percent
            ),
        ));
    }
    let downlink = udp_addr(cx, "satellite.downlink", &s.downlink)?;
    let downlink_sources = networks(cx, "satellite.downlink_sources", &s.downlink_sources)?;
    if downlink_sources.len() > MAX_DOWNLINK_SOURCES {
        return Err(cx.err(
            "satellite.downlink_sources",
            format!(
                "{} entries; at most {MAX_DOWNLINK_SOURCES} (each source gets its own share of \
                 the receiver's memory)",
                downlink_sources.len()
            ),
        ));
    }
    Ok(Satellite {
        uplink,
        rate_kbps: s.rate_kbps,
        repair_overhead_percent: s.repair_overhead_percent,
        downlink,
        downlink_sources,
    })
}

fn plugins(cx: &Ctx<'_>, p: PluginsSection, role: Role) -> Result<Plugins> {
    if role != Role::Origin {
        for (name, present) in [
            ("royalty", p.royalty.is_some()),
            ("ledger", p.ledger.is_some()),
            ("label", p.label.is_some()),
        ] {
            if present {
                return Err(cx.err(
                    format!("plugins.{name}"),
                    format!(
                        "plugins are only available on role `origin` (this node is `{role}`); \
                         remove the [plugins.{name}] table"
                    ),
                ));
            }
        }
    }
    Ok(Plugins {
        royalty: p.royalty,
        ledger: p.ledger,
        label: p.label,
    })
}

fn http(cx: &Ctx<'_>, h: HttpSection, https: Option<SocketAddr>) -> Result<HttpLimits> {
    if h.max_connections == 0 {
        return Err(cx.err("http.max_connections", "must be at least 1"));
    }
    if h.header_read_timeout_ms == 0 {
        return Err(cx.err(
            "http.header_read_timeout_ms",
            "must be at least 1 (milliseconds)",
        ));
    }
    for (field, ms) in [
        ("http.idle_timeout_ms", h.idle_timeout_ms),
        ("http.body_read_timeout_ms", h.body_read_timeout_ms),
    ] {
        if ms == 0 {
            return Err(cx.err(field, "must be at least 1 (milliseconds)"));
        }
    }
    if h.keepalive_interval_ms < 1000 {
        return Err(cx.err(
            "http.keepalive_interval_ms",
            "must be at least 1000 (milliseconds)",
        ));
    }
    if h.max_connections_per_client == 0 {
        return Err(cx.err("http.max_connections_per_client", "must be at least 1"));
    }
    let admin_token =
        match h.admin_token.as_str() {
            "" => None,
            t if t.len() < 32 || !t.bytes().all(|b| b.is_ascii_graphic()) => return Err(cx.err(
                "http.admin_token",
                "must be at least 32 printable characters (e.g. `openssl rand -hex 32`), or empty",
            )),
            t => Some(t.to_owned()),
        };
    let tls = match (h.tls_cert.is_empty(), h.tls_key.is_empty(), https) {
        (true, true, None) => None,
        (false, false, Some(_)) => Some(TlsFiles {
            cert: PathBuf::from(h.tls_cert),
            key: PathBuf::from(h.tls_key),
        }),
        (true, _, Some(_)) => {
            return Err(cx.err(
                "http.tls_cert",
                "required with listen.https: the PEM certificate chain (e.g. fullchain.pem)",
            ))
        }
        (false, true, Some(_)) => {
            return Err(cx.err(
                "http.tls_key",
                "required with listen.https: the PEM private key (e.g. privkey.pem)",
            ))
        }
        (_, _, None) => {
            return Err(cx.err(
                "listen.https",
                "http.tls_cert and http.tls_key are set but listen.https is not; set it \
                 (e.g. \"0.0.0.0:8443\") or remove them",
            ))
        }
    };
    Ok(HttpLimits {
        max_connections: h.max_connections,
        header_read_timeout: Duration::from_millis(h.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(h.idle_timeout_ms),
        body_read_timeout: Duration::from_millis(h.body_read_timeout_ms),
        keepalive_interval: Duration::from_millis(h.keepalive_interval_ms),
        max_connections_per_client: h.max_connections_per_client,
        admin_token,
        tls,
    })
}

fn reports(cx: &Ctx<'_>, r: ReportsSection) -> Result<Reports> {
    if r.report_interval_s == 0 {
        return Err(cx.err("reports.report_interval_s", "must be at least 1 (seconds)"));
    }
    if r.max_outbox_batches == 0 {
        return Err(cx.err("reports.max_outbox_batches", "must be at least 1"));
    }
    Ok(Reports {
        interval: Duration::from_secs(r.report_interval_s),
        max_outbox_batches: r.max_outbox_batches,
    })
}

fn backup(cx: &Ctx<'_>, b: BackupSection, role: Role) -> Result<Backup> {
    let days = |field: &str, d: u32| {
        if d == 0 {
            Err(cx.err(format!("backup.{field}"), "must be at least 1 (days)"))
        } else {
            Ok(Duration::from_secs(u64::from(d) * 86_400))
        }
    };
    let keep = BackupRetention {
        hourly: days("hourly_keep_days", b.hourly_keep_days)?,
        daily: days("daily_keep_days", b.daily_keep_days)?,
        weekly: days("weekly_keep_days", b.weekly_keep_days)?,
    };
    let repository = b.repository.trim();
    if repository.is_empty() {
        return Ok(Backup {
            repository: None,
            password_file: b.password_file,
            schedule: b.schedule,
            keep,
        });
    }
    if role != Role::Origin {
        return Err(cx.err(
            "backup.repository",
            format!(
                "backups are taken by an origin (what an {role} holds is fetched again from it); \
                 leave it \"\" for this role"
            ),
        ));
    }
    let target = backup_target(cx, repository)?;
    if b.password_file.as_os_str().is_empty() {
        return Err(cx.err(
            "backup.password_file",
            "required with backup.repository (a file whose first line is the password)",
        ));
    }
    Ok(Backup {
        repository: Some(target),
        password_file: b.password_file,
        schedule: b.schedule,
        keep,
    })
}

/// A repository location as restic spells it: a directory, or `s3:` and the service's URL,
/// bucket and folder (`s3:http://host:port/bucket/prefix`; no scheme means `https://`).
fn backup_target(cx: &Ctx<'_>, repository: &str) -> Result<BackupTarget> {
    const FIELD: &str = "backup.repository";
    let Some((scheme, rest)) = repository.split_once(':') else {
        return Ok(BackupTarget::Local(PathBuf::from(repository)));
    };
    if scheme.is_empty() || scheme.contains('/') {
        return Ok(BackupTarget::Local(PathBuf::from(repository)));
    }
    if scheme != "s3" {
        return Err(cx.err(
            FIELD,
            format!(
                "{scheme:?} repositories are not supported; give a directory (a local or \
                 mounted file system) or s3:http(s)://host[:port]/bucket[/prefix]"
            ),
        ));
    }
    let (endpoint_scheme, rest) = match rest.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        Some((other, _)) => {
            return Err(cx.err(
                FIELD,
                format!("s3 over {other:?}: the service is reached over http or https"),
            ))
        }
        None => ("https", rest),
    };
    let mut parts = rest.splitn(3, '/');
    let host = parts.next().unwrap_or_default();
    let bucket = parts.next().unwrap_or_default();
    let prefix = parts.next().unwrap_or_default().trim_matches('/');
    // host, host:port, [IPv6] or [IPv6]:port; a port is 1..=65535.
    let port = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((_, "")) => Ok(None),
            Some((_, after)) => after.strip_prefix(':').map(Some).ok_or(()),
            None => Err(()),
        },
        None => Ok(host.split_once(':').map(|(_, p)| p)),
    };
    let port_ok = port.is_ok_and(|p| p.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0)));
    if host.is_empty() || host.contains(['@', '?', '#', ' ']) || !port_ok {
        return Err(cx.err(
            FIELD,
            // The host is not echoed: it may hold credentials (`key:secret@host`).
            "expected a host[:port] (s3:http(s)://host[:port]/bucket[/prefix]; credentials \
             come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, not the location)",
        ));
    }
    // S3's bucket naming rules: 3 to 63 lowercase letters, digits, dots and hyphens, starting
    // and ending with a letter or digit.
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !bucket_ok {
        return Err(cx.err(
            FIELD,
            format!(
                "bucket {bucket:?}: 3 to 63 lowercase letters, digits, '.' and '-' \
                 (s3:http(s)://host[:port]/bucket[/prefix])"
            ),
        ));
    }
    if prefix
        .split('/')
        .any(|p| p == "." || p == ".." || (p.is_empty() && !prefix.is_empty()))
        || prefix.contains(['?', '#', '\\'])
    {
        return Err(cx.err(
            FIELD,
            format!(
                "folder {prefix:?} inside the bucket: no '.', '..', empty parts, '?', '#' or '\\'"
            ),
        ));
    }
    Ok(BackupTarget::S3(S3Location {
        endpoint: format!("{endpoint_scheme}://{host}"),
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
    }))
}

fn publisher_key(cx: &Ctx<'_>, o: OriginSection, role: Role) -> Result<Option<PathBuf>> {
    if o.publisher_key.as_os_str().is_empty() {
        return Ok(None);
    }
    if role != Role::Origin {
        return Err(cx.err(
            "origin.publisher_key",
            format!("only an origin signs manifests; leave it \"\" for an {role}"),
        ));
    }
    if !o.publisher_key.is_absolute() {
        return Err(cx.err(
            "origin.publisher_key",
            format!(
                "{}: give an absolute path (the daemon's working directory is not the config's)",
                o.publisher_key.display()
            ),
        ));
    }
    Ok(Some(o.publisher_key))
}

fn ha(cx: &Ctx<'_>, h: HaSection, role: Role) -> Result<Option<Ha>> {
    if h.etcd.is_empty() {
        return Ok(None);
    }
    if role != Role::Origin {
        return Err(cx.err(
            "ha.etcd",
            format!("only origins elect a primary; leave it empty for an {role}"),
        ));
    }
    for (i, url) in h.etcd.iter().enumerate() {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(cx.err(
                format!("ha.etcd[{i}]"),
                format!("{url:?} is not an etcd client URL; expected http://host:port"),
            ));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
            return Err(cx.err(
                format!("ha.etcd[{i}]"),
                format!("{url:?} is not an etcd client URL; expected http://host:port"),
            ));
        }
    }
    let name = h.name.trim();
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid_name {
        return Err(cx.err(
            "ha.name",
            format!("{name:?}: expected 1 to 64 of [A-Za-z0-9._-]"),
        ));
    }
    if !(2..=60).contains(&h.lease_ttl_s) {
        return Err(cx.err(
            "ha.lease_ttl_s",
            format!(
                "{} is out of range; expected 2 to 60 (seconds)",
                h.lease_ttl_s
            ),
        ));
    }
    let notify_url = h.notify_url.trim();
    if !notify_url.is_empty() && !notify_url.starts_with("http://") {
        return Err(cx.err(
            "ha.notify_url",
            format!("{notify_url:?}: expected an http:// URL or \"\""),
        ));
    }
    Ok(Some(Ha {
        etcd: h.etcd,
        name: name.to_owned(),
        lease_ttl: Duration::from_secs(h.lease_ttl_s),
        notify_url: (!notify_url.is_empty()).then(|| notify_url.to_owned()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiaddr_shape() {
        assert!(is_multiaddr_like("/ip4/0.0.0.0/tcp/4001"));
        assert!(is_multiaddr_like("/ip6/::/udp/4001/quic-v1"));
        assert!(!is_multiaddr_like("ip4/0.0.0.0/tcp/4001"));
        assert!(!is_multiaddr_like("/"));
        assert!(!is_multiaddr_like("/ip4//tcp/1"));
        assert!(!is_multiaddr_like("/ip4/1.2.3.4/tcp/1/"));
        assert!(!is_multiaddr_like("/ip4/1.2.3.4 /tcp/1"));
    }

    #[test]
    fn udp_overlap_rules() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(udp_overlap(a("0.0.0.0:1"), a("127.0.0.1:1")));
        assert!(udp_overlap(a("10.0.0.1:1"), a("10.0.0.1:1")));
        assert!(!udp_overlap(a("10.0.0.1:1"), a("10.0.0.2:1")));
        assert!(!udp_overlap(a("0.0.0.0:0"), a("0.0.0.0:0")));
        assert!(!udp_overlap(a("0.0.0.0:1"), a("0.0.0.0:2")));
    }
}
