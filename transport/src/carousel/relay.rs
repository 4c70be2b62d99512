//! A UDP relay that loses and reorders datagrams on purpose: a test and benchmark tool that
//! stands in for a lossy satellite link between a carousel sender and its receivers.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often the relay thread looks at its stop flag (and releases held-back datagrams when
/// nothing arrives): short enough that dropping a relay is quick in tests.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What the relay does to the datagrams it forwards.
#[derive(Clone, Debug, PartialEq)]
pub struct RelayConfig {
    /// Chance, in percent, that a datagram is dropped. Default 0.
    pub loss_percent: f64,
    /// Chance, in percent, that a forwarded datagram is held back and sent after later ones.
    /// Default 0.
    pub reorder_percent: f64,
    /// A held-back datagram goes out after 1 to this many later datagrams have arrived (or
    /// when the input pauses for 10 ms). Default 8.
    pub reorder_max_delay: u32,
    /// Seed of the loss and reordering decisions; a seed and the order of arrivals fix them.
    /// Default 1.
    pub seed: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            loss_percent: 0.0,
            reorder_percent: 0.0,
            reorder_max_delay: 8,
            seed: 1,
        }
    }
}

/// Counters of a [`LossyRelay`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Bytes received (UDP payload).
    pub bytes_in: u64,
    /// Datagrams forwarded.
    pub datagrams_out: u64,
    /// Bytes forwarded (UDP payload).
    pub bytes_out: u64,
    /// Datagrams dropped on purpose.
    pub dropped: u64,
    /// Datagrams held back and sent out of order.
    pub reordered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    datagrams_in: AtomicU64,
    bytes_in: AtomicU64,
    datagrams_out: AtomicU64,
    bytes_out: AtomicU64,
    dropped: AtomicU64,
    reordered: AtomicU64,
}

/// A UDP relay on its own thread: every datagram arriving at [`LossyRelay::local_addr`] is
/// forwarded to the target, except those the seeded loss drops; some are held back and sent
/// after later ones. It stops when dropped.
///
/// A test and benchmark tool, not for production: it forwards anything from anyone.
///
/// # Examples
///
/// ```no_run
/// use mhc_transport::carousel::{LossyRelay, RelayConfig};
///
/// let receiver: std::net::SocketAddr = "127.0.0.1:4000".parse()?;
/// let config = RelayConfig { loss_percent: 20.0, reorder_percent: 5.0, ..RelayConfig::default() };
/// let relay = LossyRelay::start("127.0.0.1:0".parse()?, receiver, config)?;
/// // Point the sender at relay.local_addr().
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LossyRelay {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl LossyRelay {
    /// Binds `listen` (port 0 picks one) and starts forwarding to `target`.
    ///
    /// # Errors
    ///
    /// The socket errors of binding `listen`.
    pub fn start(
        listen: SocketAddr,
        target: SocketAddr,
        config: RelayConfig,
    ) -> io::Result<LossyRelay> {
        let socket = UdpSocket::bind(listen)?;
        socket.set_read_timeout(Some(POLL_INTERVAL))?;
        let local_addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let thread = {
            let stop = Arc::clone(&stop);
            let counters = Arc::clone(&counters);
            thread::Builder::new()
                .name("lossy-relay".into())
                .spawn(move || forward(&socket, target, &config, &stop, &counters))?
        };
        Ok(LossyRelay {
            local_addr,
            stop,
            counters,
            thread: Some(thread),
        })
    }

    /// The address datagrams should be sent to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        let c = &self.counters;
        RelayStats {
            datagrams_in: c.datagrams_in.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            datagrams_out: c.datagrams_out.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            reordered: c.reordered.load(Ordering::Relaxed),
        }
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread only fails by panicking, which a test would already have reported.
            let _ = thread.join();
        }
    }
}

/// `true` with probability `percent` / 100.
fn chance(rng: &mut fastrand::Rng, percent: f64) -> bool {
    rng.f64() * 100.0 < percent
}

/// The relay loop; `seq` counts arrivals and schedules held-back datagrams.
fn forward(
    socket: &UdpSocket,
    target: SocketAddr,
    config: &RelayConfig,
    stop: &AtomicBool,
    counters: &Counters,
) {
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let mut buf = vec![0u8; 65_536];
    let mut held: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut seq = 0u64;
    let send = |datagram: &[u8]| {
        // Send errors (no listener yet, buffer full) are just more loss on a test link.
        if socket.send_to(datagram, target).is_ok() {
            counters.datagrams_out.fetch_add(1, Ordering::Relaxed);
            counters
                .bytes_out
                .fetch_add(datagram.len() as u64, Ordering::Relaxed);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let len = match socket.recv_from(&mut buf) {
            Ok((len, _from)) => len,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                for (_, datagram) in held.drain(..) {
                    send(&datagram);
                }
                continue;
            }
            Err(_) => continue,
        };
        seq += 1;
        counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
        counters.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
        let datagram = &buf[..len];
        if chance(&mut rng, config.loss_percent) {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        } else if config.reorder_max_delay > 0 && chance(&mut rng, config.reorder_percent) {
            let delay = rng.u64(1..=u64::from(config.reorder_max_delay));
            held.push((seq + delay, datagram.to_vec()));
            counters.reordered.fetch_add(1, Ordering::Relaxed);
        } else {
            send(datagram);
        }
        let mut i = 0;
        while i < held.len() {
            if held[i].0 <= seq {
                let (_, datagram) = held.swap_remove(i);
                send(&datagram);
            } else {
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn forwards_drops_and_counts() {
        let sink = UdpSocket::bind(loopback()).unwrap();
        sink.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let config = RelayConfig {
            loss_percent: 30.0,
            reorder_percent: 20.0,
            reorder_max_delay: 4,
            seed: 7,
        };
        let relay = LossyRelay::start(loopback(), sink.local_addr().unwrap(), config).unwrap();
        // Read concurrently: hundreds of unread datagrams would overflow the sink's buffer.
        let reader = thread::spawn(move || {
            let mut received = Vec::new();
            let mut buf = [0u8; 16];
            while let Ok(len) = sink.recv(&mut buf) {
                received.push(u32::from_be_bytes(buf[..len].try_into().unwrap()));
            }
            received
        });
        let source = UdpSocket::bind(loopback()).unwrap();
        let total = 400u32;
        for i in 0..total {
            source
                .send_to(&i.to_be_bytes(), relay.local_addr())
                .unwrap();
            if i % 20 == 0 {
                thread::sleep(Duration::from_millis(1)); // stay within socket buffers
            }
        }
        let received = reader.join().unwrap(); // ends after 300 ms of silence
        let stats = relay.stats();
        assert_eq!(stats.datagrams_in, u64::from(total));
        assert_eq!(stats.bytes_in, 4 * u64::from(total));
        assert_eq!(stats.datagrams_in, stats.datagrams_out + stats.dropped);
        assert_eq!(received.len() as u64, stats.datagrams_out);
        assert!((80..160).contains(&stats.dropped), "{stats:?}");
        assert!(stats.reordered > 20, "{stats:?}");
        assert!(
            received.windows(2).any(|w| w[0] > w[1]),
            "some out of order"
        );
        drop(relay); // joins the thread
    }
}
