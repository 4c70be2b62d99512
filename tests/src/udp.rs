//! UDP helpers for broadcast-plane tests.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A loopback UDP port that is free now (bound and released; another process could take it
/// before it is used, which on a test machine does not happen in practice).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("binding a loopback UDP socket")
        .port()
}

/// Copies every datagram arriving at its socket to each target: the footprint of a satellite,
/// for receivers on one host that cannot share a multicast port. Stops when dropped.
#[derive(Debug)]
pub struct FanOut {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl FanOut {
    /// Starts forwarding to `targets` from a fresh loopback port.
    pub fn start(targets: Vec<SocketAddr>) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("binding the fan-out socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("setting a read timeout");
        let addr = socket.local_addr().expect("fan-out address");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    for t in &targets {
                        let _ = socket.send_to(&buf[..n], t);
                    }
                }
            }
        });
        Self { addr, stop }
    }

    /// Where to send the datagrams.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FanOut {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
