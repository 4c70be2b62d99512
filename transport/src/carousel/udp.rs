//! The socket layer: tokio UDP around the sans-I/O [`Carousel`], [`Pacer`] and [`Assembler`].

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::config_error::ConfigError;
use super::pacer::{Pacer, UDP_IPV4_OVERHEAD};
use super::packet::MAX_DATAGRAM_LEN;
use super::receiver::{Assembler, Event};
use super::sender::Carousel;

/// Receive buffer: the largest UDP datagram, so that an oversized one is seen whole (and
/// rejected by its length) instead of silently truncated into something plausible.
const RECV_BUFFER_LEN: usize = 65_536;

/// Errors of the socket layer.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    /// The address is not `udp://host:port`.
    #[error("invalid UDP address {url:?}: {reason}")]
    Url {
        /// The text given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Name resolution failed or gave no address.
    #[error("could not resolve {host}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// A socket call failed; `action` says which.
    #[error("UDP socket error while {action}: {source}")]
    Io {
        /// What was being done, e.g. `"joining the multicast group"`.
        action: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A [`SenderOptions`] field is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

fn io_error(action: &'static str) -> impl FnOnce(io::Error) -> UdpError {
    move |source| UdpError::Io { action, source }
}

/// A carousel address: `udp://host:port`, where host is an IPv4 address, a bracketed IPv6
/// address or a DNS name, and may be a multicast group.
///
/// # Examples
///
/// ```
/// use mhc_transport::carousel::UdpUrl;
///
/// let url: UdpUrl = "udp://239.1.2.3:5004".parse()?;
/// assert_eq!(url.socket_addr(), Some("239.1.2.3:5004".parse()?));
/// assert!("udp://[ff15::1]:5004".parse::<UdpUrl>().is_ok());
/// assert!("http://239.1.2.3:5004".parse::<UdpUrl>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UdpUrl {
    host: String,
    port: u16,
}

impl UdpUrl {
    /// The host: an IP address (without brackets) or a name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address, when the host is an IP literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }

    /// The address, resolving a host name with the system resolver (first answer wins).
    ///
    /// # Errors
    ///
    /// [`UdpError::Resolve`] when resolution fails or finds nothing.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is lost by dropping the future.
    pub async fn resolve(&self) -> Result<SocketAddr, UdpError> {
        if let Some(addr) = self.socket_addr() {
            return Ok(addr);
        }
        let resolve_error = |source| UdpError::Resolve {
            host: self.host.clone(),
            source,
        };
        let mut addrs = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(resolve_error)?;
        addrs
            .next()
            .ok_or_else(|| resolve_error(io::Error::other("no address")))
    }
}

impl FromStr for UdpUrl {
    type Err = UdpError;

    fn from_str(url: &str) -> Result<UdpUrl, UdpError> {
        let invalid = |reason| UdpError::Url {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("udp://")
            .ok_or_else(|| invalid("must start with udp://"))?;
        if rest.contains(['/', '?', '#', '@']) {
            return Err(invalid(
                "only udp://host:port is allowed (no path, query or user)",
            ));
        }
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (ip, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("unclosed [ in IPv6 address"))?;
            ip.parse::<Ipv6Addr>()
                .map_err(|_| invalid("bad IPv6 address in brackets"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| invalid("missing :port"))?;
            (ip, port)
        } else {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| invalid("missing :port"))?;
            if host.contains(':') {
                return Err(invalid("IPv6 addresses must be in brackets"));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        let port: u16 = port.parse().map_err(|_| invalid("bad port number"))?;
        if port == 0 {
            return Err(invalid("port 0 is not an address"));
        }
        Ok(UdpUrl {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for UdpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "udp://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "udp://{}:{}", self.host, self.port)
        }
    }
}

/// Settings of [`bind_sender`] and [`run_sender`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderOptions {
    /// Send rate in kbit/s (1 kbit = 1000 bits), counting datagrams plus 28 bytes of IPv4/UDP
    /// header each. Required; must be above 0. Default 10 000 (10 Mbit/s).
    pub rate_kbps: u32,
    /// Credit of the token bucket, in milliseconds of traffic at `rate_kbps` (at least two
    /// full datagrams): lets the sender catch up after waking late, since timers tick in whole
    /// milliseconds. Default 10.
    pub burst_ms: u32,
    /// IPv4 multicast TTL (routers to cross + 1). Default 8: enough to reach an uplink a few
    /// routers away while staying inside a site. Unused for unicast and IPv6 targets.
    pub multicast_ttl: u32,
    /// Whether multicast datagrams are looped back to receivers on the sending host. Default
    /// true, so that a single-host setup works.
    pub multicast_loop: bool,
    /// How long to wait before looking again when the carousel is empty. Default 100.
    pub idle_poll_ms: u64,
}

impl Default for SenderOptions {
    fn default() -> Self {
        SenderOptions {
            rate_kbps: 10_000,
            burst_ms: 10,
            multicast_ttl: 8,
            multicast_loop: true,
            idle_poll_ms: 100,
        }
    }
}

impl SenderOptions {
    /// Token-bucket credit in bytes.
    fn burst_bytes(&self) -> u32 {
        let bytes_per_ms = u64::from(self.rate_kbps) / 8;
        let min = 2 * (MAX_DATAGRAM_LEN + UDP_IPV4_OVERHEAD) as u64;
        (bytes_per_ms * u64::from(self.burst_ms))
            .max(min)
            .min(u64::from(u32::MAX)) as u32
    }
}

/// Counters of a [`run_sender`] loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Cycles started (empty ones not counted).
    pub cycles: u64,
    /// Datagrams sent.
    pub datagrams: u64,
    /// Bytes sent (UDP payload).
    pub bytes: u64,
    /// Datagrams the OS refused to send (each counted as lost).
    pub send_errors: u64,
}

/// Binds a socket for sending to `target`: an ephemeral port on the unspecified address of
/// the target's family, with TTL and loopback set from `options` when the target is an IPv4
/// multicast group (and loopback for IPv6 groups; the IPv6 hop limit stays the OS default,
/// 1, as neither std nor tokio can set it).
///
/// # Errors
///
/// [`UdpError::Io`] when binding or setting an option fails.
///
/// # Cancel safety
///
/// Cancel safe: a dropped future leaves nothing behind.
pub async fn bind_sender(
    target: SocketAddr,
    options: &SenderOptions,
) -> Result<UdpSocket, UdpError> {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(io_error("binding the sender socket"))?;
    match target.ip() {
        IpAddr::V4(ip) if ip.is_multicast() => {
            socket
                .set_multicast_ttl_v4(options.multicast_ttl)
                .map_err(io_error("setting the multicast TTL"))?;
            socket
                .set_multicast_loop_v4(options.multicast_loop)
                .map_err(io_error("setting multicast loopback"))?;
        }
        IpAddr::V6(ip) if ip.is_multicast() => {
            socket
                .set_multicast_loop_v6(options.multicast_loop)
                .map_err(io_error("setting multicast loopback"))?;
        }
        _ => {}
    }
    Ok(socket)
}

/// Sends carousel cycles to `target` forever, paced at `options.rate_kbps`, until `shutdown`
/// completes; returns the counters then.
///
/// Each cycle starts by locking `carousel` just long enough to call
/// [`Carousel::next_cycle`]; objects added or removed meanwhile take effect in the next
/// cycle. Send errors (no route, full buffers) are counted and logged, not fatal: the link
/// may come back and the carousel repeats anyway.
///
/// # Errors
///
/// [`UdpError::Config`] for `options.rate_kbps == 0`.
///
/// # Cancel safety
///
/// Cancel safe, though resolving `shutdown` is the orderly way to stop: dropping the future
/// only abandons the current cycle, which receivers make up from the next one.
pub async fn run_sender(
    socket: &UdpSocket,
    target: SocketAddr,
    carousel: Arc<Mutex<Carousel>>,
    options: &SenderOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<SenderStats, UdpError> {
    let mut pacer = Pacer::new(options.rate_kbps, options.burst_bytes(), Instant::now())?;
    let idle = Duration::from_millis(options.idle_poll_ms);
    let mut stats = SenderStats::default();
    let mut datagram = Vec::with_capacity(MAX_DATAGRAM_LEN);
    tokio::pin!(shutdown);
    loop {
        let mut cycle = carousel.lock().next_cycle();
        if cycle.is_empty() {
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(stats),
                () = tokio::time::sleep(idle) => continue,
            }
        }
        stats.cycles += 1;
        debug!(
            cycle = cycle.number(),
            datagrams = cycle.remaining(),
            "carousel cycle started"
        );
        while cycle.next_into(&mut datagram) {
            let wait = pacer.reserve(Instant::now(), datagram.len());
            if wait.is_zero() {
                if shutdown.as_mut().now_or_never().is_some() {
                    return Ok(stats);
                }
            } else {
                tokio::select! {
                    biased;
                    () = &mut shutdown => return Ok(stats),
                    () = tokio::time::sleep(wait) => {}
                }
            }
            match socket.send_to(&datagram, target).await {
                Ok(_) => {
                    stats.datagrams += 1;
                    stats.bytes += datagram.len() as u64;
                }
                Err(err) => {
                    stats.send_errors += 1;
                    // Logging every failure would flood the journal during an outage;
                    // doubling intervals still show it is ongoing.
                    if stats.send_errors.is_power_of_two() {
                        warn!(%target, errors = stats.send_errors, "carousel send failed: {err:#}");
                    }
                }
            }
        }
    }
}

/// Binds a socket to receive a carousel at `addr`. For a multicast group, binds the
/// unspecified address of its family on the group's port and joins the group on the default
/// interface; otherwise binds `addr` itself (port 0 picks one).
///
/// # Errors
///
/// [`UdpError::Io`] when binding or joining fails (joining fails, for example, on a host
/// without a multicast route).
///
/// # Cancel safety
///
/// Cancel safe: a dropped future leaves nothing behind.
pub async fn bind_receiver(addr: SocketAddr) -> Result<UdpSocket, UdpError> {
    match addr.ip() {
        IpAddr::V4(group) if group.is_multicast() => {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, addr.port()))
                .await
                .map_err(io_error("binding the receiver socket"))?;
            socket
                .join_multicast_v4(group, Ipv4Addr::UNSPECIFIED)
                .map_err(io_error("joining the multicast group"))?;
            Ok(socket)
        }
        IpAddr::V6(group) if group.is_multicast() => {
            let socket = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, addr.port()))
                .await
                .map_err(io_error("binding the receiver socket"))?;
            socket
                .join_multicast_v6(&group, 0)
                .map_err(io_error("joining the multicast group"))?;
            Ok(socket)
        }
        _ => UdpSocket::bind(addr)
            .await
            .map_err(io_error("binding the receiver socket")),
    }
}

/// Receives datagrams on `socket`, feeds each to the assembler `route` names for its sender
/// (none: the datagram is dropped) and sends the assemblers' events on `events`, until
/// `shutdown` completes or the event receiver is dropped.
///
/// `route` is how a receiver accepts only the addresses its broadcast may come from and keeps
/// each source's objects in progress apart, so datagrams from one source (or forged with its
/// address) cannot evict another's. Malformed datagrams are counted by their assembler and
/// otherwise ignored. Assemblers are behind a mutex so the caller can read
/// [`Assembler::incomplete`] and the stats meanwhile; one is locked once per datagram. Decoding happens on this task (see [`Assembler`]), so
/// give it a runtime thread that may be busy for a few milliseconds at a time.
///
/// # Errors
///
/// [`UdpError::Io`] when receiving fails (which, for a bound UDP socket, means it is
/// unusable).
///
/// # Cancel safety
///
/// Cancel safe: an event is either sent or still in the assembler's past; dropping the future
/// loses at most the datagram being handled, like any UDP loss.
pub async fn run_receiver(
    socket: &UdpSocket,
    route: impl Fn(SocketAddr) -> Option<Arc<Mutex<Assembler>>>,
    events: mpsc::Sender<Event>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), UdpError> {
    let mut buf = vec![0u8; RECV_BUFFER_LEN];
    tokio::pin!(shutdown);
    loop {
        let (len, from) = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            received = socket.recv_from(&mut buf) => {
                received.map_err(io_error("receiving a datagram"))?
            }
        };
        let Some(assembler) = route(from) else {
            continue;
        };
        let result = assembler.lock().push(&buf[..len]);
        match result {
            Ok(None) => {}
            Ok(Some(event)) => {
                tokio::select! {
                    biased;
                    () = &mut shutdown => return Ok(()),
                    sent = events.send(event) => if sent.is_err() { return Ok(()) },
                }
            }
            Err(err) => debug!("carousel datagram dropped: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_udp_urls() {
        let url: UdpUrl = "udp://239.255.0.1:5004".parse().unwrap();
        assert_eq!((url.host(), url.port()), ("239.255.0.1", 5004));
        assert_eq!(url.to_string(), "udp://239.255.0.1:5004");
        let url: UdpUrl = "udp://[ff15::1]:6000".parse().unwrap();
        assert_eq!(url.socket_addr(), Some("[ff15::1]:6000".parse().unwrap()));
        assert_eq!(url.to_string(), "udp://[ff15::1]:6000");
        let url: UdpUrl = "udp://uplink.example:7000".parse().unwrap();
        assert_eq!(url.socket_addr(), None);
        assert_eq!(url.host(), "uplink.example");
    }

    #[test]
    fn rejects_bad_urls_with_a_reason() {
        for (url, reason) in [
            ("239.1.1.1:5004", "must start with udp://"),
            ("udp://239.1.1.1", "missing :port"),
            ("udp://239.1.1.1:0", "port 0 is not an address"),
            ("udp://239.1.1.1:70000", "bad port number"),
            ("udp://:5004", "missing host"),
            ("udp://ff15::1:5004", "IPv6 addresses must be in brackets"),
            ("udp://[ff15::1:5004", "unclosed [ in IPv6 address"),
            ("udp://[zz]:5004", "bad IPv6 address in brackets"),
            (
                "udp://h:1/x",
                "only udp://host:port is allowed (no path, query or user)",
            ),
        ] {
            match url.parse::<UdpUrl>() {
                Err(UdpError::Url { reason: got, .. }) => assert_eq!(got, reason, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        let err = "udp://x".parse::<UdpUrl>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid UDP address \"udp://x\": missing :port"
        );
    }

    #[tokio::test]
    async fn resolves_literals_and_localhost() -> Result<(), UdpError> {
        let url: UdpUrl = "udp://127.0.0.1:9".parse()?;
        assert_eq!(url.resolve().await?, "127.0.0.1:9".parse().unwrap());
        let url: UdpUrl = "udp://localhost:9".parse()?;
        assert!(url.resolve().await?.ip().is_loopback());
        Ok(())
    }

    #[test]
    fn burst_has_a_floor_of_two_datagrams() {
        let slow = SenderOptions {
            rate_kbps: 8,
            ..SenderOptions::default()
        };
        assert_eq!(slow.burst_bytes(), 2 * 1260);
        let fast = SenderOptions::default();
        assert_eq!(fast.burst_bytes(), 12_500);
    }
}
