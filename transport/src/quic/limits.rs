//! Per-connection limits and timeouts of the QUIC data plane.

use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::proto::MAX_REQUEST_BYTES;

/// What a server buffers per request stream: one request frame (its 4-byte length prefix and
/// at most [`MAX_REQUEST_BYTES`]), rounded up to a KiB. A client sends nothing else on a
/// stream, so a peer that withholds a byte of every stream pins at most this much per stream.
const REQUEST_STREAM_WINDOW: u32 = (MAX_REQUEST_BYTES as u32 + 4).div_ceil(1024) * 1024;

/// What a client buffers per connection of bodies not yet read, over all its streams. A fill
/// reads as fast as it hashes and writes, so this only bounds a parent that sends out of
/// order; 64 MiB is 32 windows of quinn's default 1.25 MB stream window (`bench/fill.sh` runs
/// 8 fills at a time over one connection).
const BODY_CONNECTION_WINDOW: u32 = 64 << 20;

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
    /// Connections a server holds at once, handshakes included. Default 1,024.
    ///
    /// Each costs at most `max_concurrent_streams_per_connection` request windows of 5 KiB
    /// (320 KiB at the default) plus quinn's own state, so the default bounds what peers can
    /// pin in receive buffers to about 330 MB however they behave; beyond half of it, new
    /// clients must first prove their address (a QUIC retry), so spoofed handshakes cannot
    /// fill the table.
    pub max_connections: usize,
    /// Connections a server holds from one IP address (IPv6: one /64) at once. Default 64.
    ///
    /// A node talks to another over one connection; 64 leaves room for many nodes behind one
    /// NAT or on one host (test clusters on loopback) while keeping one host from taking the
    /// whole table.
    pub max_connections_per_address: usize,
    /// Connections a server holds for one proven peer id at once. Default 8.
    ///
    /// A node's filler keeps one connection per parent; 8 covers reconnects whose old
    /// connection has not timed out yet.
    pub max_connections_per_peer: usize,
}

impl Default for QuicLimits {
    fn default() -> Self {
        Self {
            max_concurrent_streams_per_connection: 64,
            max_idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_address: 64,
            max_connections_per_peer: 8,
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

    /// Server side: accepts up to `max_concurrent_streams_per_connection` requests at once,
    /// each with a receive window of one request, and a connection window of all of them
    /// (quinn's defaults, 1.25 MB per stream and no connection bound, would let a peer that
    /// withholds one byte per stream pin ~80 MB per connection).
    pub(crate) fn server_transport(&self) -> TransportConfig {
        let mut t = self.transport();
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_streams_per_connection));
        t.stream_receive_window(VarInt::from_u32(REQUEST_STREAM_WINDOW));
        t.receive_window(VarInt::from_u32(self.request_connection_window()));
        t
    }

    /// Client side: servers never open streams towards clients; bodies not yet read are
    /// bounded per connection.
    pub(crate) fn client_transport(&self) -> TransportConfig {
        let mut t = self.transport();
        t.max_concurrent_bidi_streams(VarInt::from_u32(0));
        t.receive_window(VarInt::from_u32(BODY_CONNECTION_WINDOW));
        t
    }

    /// The server's receive window of one connection: a request window per stream it admits.
    pub fn request_connection_window(&self) -> u32 {
        self.max_concurrent_streams_per_connection
            .saturating_mul(REQUEST_STREAM_WINDOW)
    }

    /// `request_timeout`, or `None` when disabled.
    pub(crate) fn request_timeout(&self) -> Option<Duration> {
        (!self.request_timeout.is_zero()).then_some(self.request_timeout)
    }
}
