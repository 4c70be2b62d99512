//! Per-connection limits and timeouts of the QUIC data plane.

use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

/// Limits and timeouts of [`QuicServer`](crate::QuicServer) and
/// [`QuicClient`](crate::QuicClient).
///
/// A zero `Duration` disables that timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicLimits {
    /// Requests (bidirectional streams) one peer may have open at once on one connection.
    /// Default 64.
    ///
    /// Enforced by QUIC flow control, so extra requests wait in the peer's `open_bi` instead of
    /// failing. A fill prefetches a window of segments (a player's buffer is 5–15 segments, and
    /// an edge fills several contents over one parent connection); 64 covers that while
    /// bounding server memory per connection to 64 × the stream receive window.
    pub max_concurrent_streams_per_connection: u32,
    /// A connection with no packet for this long is dead. Default 30 s.
    ///
    /// Also bounds the handshake with an unreachable peer. Long enough to ride out a short
    /// outage, short enough that a dead parent is replaced within a few heartbeats.
    pub max_idle_timeout: Duration,
    /// Interval of keep-alive packets on an otherwise idle connection. Default 5 s.
    ///
    /// Well under `max_idle_timeout` so one lost probe does not kill a connection, and under
    /// the 30 s UDP binding timeout of common NATs.
    pub keep_alive: Duration,
    /// Longest wait for a request (server) or for a response header (client). Default 10 s.
    ///
    /// A healthy peer answers in milliseconds; a segment that arrives later than an HLS target
    /// duration (typically 6 s) is no use to a viewer, so a retry elsewhere is better. Body
    /// transfer is not bounded by this (a 1 GiB fill takes as long as it takes).
    pub request_timeout: Duration,
}

impl Default for QuicLimits {
    fn default() -> Self {
        Self {
            max_concurrent_streams_per_connection: 64,
            max_idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl QuicLimits {
    /// Transport settings shared by both sides.
    fn transport(&self) -> TransportConfig {
        let mut t = TransportConfig::default();
        // In QUIC an idle timeout of 0 means "none", which matches "zero disables". Durations
        // beyond a VarInt of milliseconds (146 million years) are clamped, not rejected.
        let idle = IdleTimeout::try_from(self.max_idle_timeout)
            .unwrap_or_else(|_| IdleTimeout::from(VarInt::MAX));
        t.max_idle_timeout(Some(idle));
        t.keep_alive_interval((!self.keep_alive.is_zero()).then_some(self.keep_alive));
        // The protocol uses neither unidirectional streams nor datagrams: refuse them so a peer
        // cannot spend our memory on them.
        t.max_concurrent_uni_streams(VarInt::from_u32(0));
        t.datagram_receive_buffer_size(None);
        t
    }

    /// Server side: accepts up to `max_concurrent_streams_per_connection` requests at once.
    pub(crate) fn server_transport(&self) -> TransportConfig {
        let mut t = self.transport();
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_streams_per_connection));
        t
    }

    /// Client side: servers never open streams towards clients.
    pub(crate) fn client_transport(&self) -> TransportConfig {
        let mut t = self.transport();
        t.max_concurrent_bidi_streams(VarInt::from_u32(0));
        t
    }

    /// `request_timeout`, or `None` when disabled.
    pub(crate) fn request_timeout(&self) -> Option<Duration> {
        (!self.request_timeout.is_zero()).then_some(self.request_timeout)
    }
}
