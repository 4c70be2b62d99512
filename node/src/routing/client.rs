//! The client's address: the TCP peer, or what trusted proxies say in `X-Forwarded-For`.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Most `X-Forwarded-For` entries looked at, right to left: a proxy chain is a handful of hops;
/// a longer list is treated as malformed rather than walked without bound.
pub const MAX_FORWARDED_HOPS: usize = 32;

/// Where the client address of a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrSource {
    /// The TCP peer; no `X-Forwarded-For` was sent.
    Peer,
    /// The TCP peer is a trusted proxy but sent no `X-Forwarded-For`.
    TrustedPeerWithoutHeader,
    /// The TCP peer is not a trusted proxy: its `X-Forwarded-For` was ignored.
    UntrustedForwardedFor,
    /// The right-most `X-Forwarded-For` entry that is not a trusted proxy.
    ForwardedFor,
    /// Every `X-Forwarded-For` entry is a trusted proxy: the left-most one.
    ForwardedForAllTrusted,
    /// The trusted proxy's `X-Forwarded-For` could not be read: the TCP peer is used.
    MalformedForwardedFor(&'static str),
}

impl AddrSource {
    /// Whether the address was taken from `X-Forwarded-For`.
    pub fn is_forwarded(self) -> bool {
        matches!(self, Self::ForwardedFor | Self::ForwardedForAllTrusted)
    }
}

impl fmt::Display for AddrSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Peer => f.write_str("connection peer (no X-Forwarded-For)"),
            Self::TrustedPeerWithoutHeader => {
                f.write_str("connection peer (a trusted proxy, but it sent no X-Forwarded-For)")
            }
            Self::UntrustedForwardedFor => f.write_str(
                "connection peer: X-Forwarded-For ignored, the peer is not in geo.trusted_proxies",
            ),
            Self::ForwardedFor => f.write_str(
                "X-Forwarded-For from a trusted proxy: the right-most address that is not a \
                 trusted proxy",
            ),
            Self::ForwardedForAllTrusted => f.write_str(
                "X-Forwarded-For from a trusted proxy: every address in it is a trusted proxy, \
                 so the left-most one",
            ),
            Self::MalformedForwardedFor(why) => write!(
                f,
                "connection peer: the trusted proxy's X-Forwarded-For is malformed ({why}) and \
                 was ignored"
            ),
        }
    }
}

/// The address a request is routed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client address used.
    pub ip: IpAddr,
    /// The TCP peer of the request.
    pub peer: IpAddr,
    /// How `ip` was chosen.
    pub source: AddrSource,
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// One `X-Forwarded-For` entry: an IPv4 or IPv6 address, optionally bracketed or with a port
/// (`1.2.3.4:80`, `[2001:db8::1]:443`), as some proxies write them.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = entry.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// The client address of a request from TCP peer `peer` whose `X-Forwarded-For` header lines
/// are `forwarded_for` (in the order received; several lines form one list).
///
/// The header is believed only when `peer` is inside `trusted`. Then the list is walked from the
/// right, skipping trusted proxies; the first other address is the client. An entry that is not
/// an address, met before that, makes the whole header malformed: the peer is used and
/// [`AddrSource::MalformedForwardedFor`] says why. Entries left of the client are never
/// parsed (the client wrote them). IPv4-mapped IPv6 addresses count as IPv4.
///
/// # Examples
/// ```
/// use mhc_node::{resolve_client, AddrSource};
/// let trusted = ["10.0.0.0/8".parse().unwrap()];
/// let peer = "10.0.0.2".parse().unwrap();
/// let header: &[u8] = b"203.0.113.9, 198.51.100.7, 10.0.0.1";
/// let c = resolve_client(peer, [header], &trusted);
/// assert_eq!(c.ip.to_string(), "198.51.100.7");
/// assert_eq!(c.source, AddrSource::ForwardedFor);
/// ```
pub fn resolve_client<'h, I>(peer: IpAddr, forwarded_for: I, trusted: &[IpNet]) -> ClientAddr
where
    I: IntoIterator<Item = &'h [u8]>,
    I::IntoIter: DoubleEndedIterator,
{
    let peer = peer.to_canonical();
    let mut lines = forwarded_for.into_iter().peekable();
    let from_peer = |source| ClientAddr {
        ip: peer,
        peer,
        source,
    };
    if !is_trusted(peer, trusted) {
        return from_peer(if lines.peek().is_some() {
            AddrSource::UntrustedForwardedFor
        } else {
            AddrSource::Peer
        });
    }
    if lines.peek().is_none() {
        return from_peer(AddrSource::TrustedPeerWithoutHeader);
    }
    let mut hops = 0;
    let mut leftmost = None;
    for line in lines.rev() {
        let Ok(line) = std::str::from_utf8(line) else {
            return from_peer(AddrSource::MalformedForwardedFor("not ASCII text"));
        };
        for entry in line.rsplit(',') {
            hops += 1;
            if hops > MAX_FORWARDED_HOPS {
                return from_peer(AddrSource::MalformedForwardedFor("more than 32 entries"));
            }
            let Some(ip) = parse_forwarded_entry(entry) else {
                let why = if entry.trim().is_empty() {
                    "an empty entry"
                } else {
                    "an entry is not an IP address"
                };
                return from_peer(AddrSource::MalformedForwardedFor(why));
            };
            let ip = ip.to_canonical();
            if !is_trusted(ip, trusted) {
                return ClientAddr {
                    ip,
                    peer,
                    source: AddrSource::ForwardedFor,
                };
            }
            leftmost = Some(ip);
        }
    }
    match leftmost {
        Some(ip) => ClientAddr {
            ip,
            peer,
            source: AddrSource::ForwardedForAllTrusted,
        },
        // Unreachable in practice (a line always yields at least one entry), kept total.
        None => from_peer(AddrSource::MalformedForwardedFor("no entry")),
    }
}
