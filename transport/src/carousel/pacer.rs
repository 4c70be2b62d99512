//! A token bucket that spaces datagrams at a bit rate, with the clock passed in.

use std::time::{Duration, Instant};

use super::config_error::ConfigError;

/// Bytes of IPv4 (20) and UDP (8) header around every datagram, counted against the rate
/// because the link carries them too. (IPv6 adds 20 more; counting the IPv4 figure keeps the
/// pacer simple and errs by under 2 % on full-size datagrams.)
pub const UDP_IPV4_OVERHEAD: usize = 28;

/// Fixed-point scale of the bucket: token amounts are bits × 10⁹, so that a refill of
/// `rate (bit/s) × elapsed (ns)` is an exact integer and the pacer is deterministic.
const SCALE: i128 = 1_000_000_000;

/// A token bucket at `rate_kbps` (1 kbit/s = 1000 bit/s) holding up to `burst_bytes` of
/// credit, in the generic cell rate algorithm's form: a datagram may leave as soon as the
/// bucket is not in debt, and its cost (datagram length + [`UDP_IPV4_OVERHEAD`], in bits) is
/// then taken, possibly putting the bucket into debt that later datagrams wait out.
///
/// Nothing here sleeps or reads the clock: the caller passes `now`, so tests drive it with
/// virtual time and the socket layer with `Instant::now()`.
///
/// A burst is therefore at most `burst_bytes` plus one datagram, and over any long interval
/// the rate is exact. Timer granularity (tokio sleeps in whole milliseconds) makes the sender
/// wake late; credit of a few milliseconds of traffic lets it catch up in the next burst
/// instead of losing throughput.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate_bps: u64,
    capacity: i128,
    tokens: i128,
    last: Instant,
}

impl Pacer {
    /// A pacer starting at `now` with a full bucket.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for `rate_kbps == 0`.
    pub fn new(rate_kbps: u32, burst_bytes: u32, now: Instant) -> Result<Pacer, ConfigError> {
        if rate_kbps == 0 {
            return Err(ConfigError::new("rate_kbps", "must be above 0"));
        }
        let capacity = i128::from(burst_bytes) * 8 * SCALE;
        Ok(Pacer {
            rate_bps: u64::from(rate_kbps) * 1000,
            capacity,
            tokens: capacity,
            last: now,
        })
    }

    /// The rate in kbit/s.
    pub fn rate_kbps(&self) -> u32 {
        (self.rate_bps / 1000) as u32
    }

    /// Bits a datagram of `datagram_len` bytes costs on the wire.
    pub fn wire_bits(datagram_len: usize) -> u64 {
        (datagram_len as u64 + UDP_IPV4_OVERHEAD as u64) * 8
    }

    /// Books a datagram of `datagram_len` bytes that the caller will send at `now` + the
    /// returned delay (zero: send immediately). Call it once per datagram, in order, with a
    /// `now` no earlier than the previous call's `now` plus its delay; an earlier `now` is
    /// treated as no time having passed.
    pub fn reserve(&mut self, now: Instant, datagram_len: usize) -> Duration {
        self.refill(now);
        let rate = i128::from(self.rate_bps);
        let wait = if self.tokens < 0 {
            // Ceiling division: never wake before the debt is paid.
            let ns = (-self.tokens + rate - 1) / rate;
            Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
        } else {
            Duration::ZERO
        };
        self.tokens -= i128::from(Self::wire_bits(datagram_len)) * SCALE;
        wait
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        let added = i128::try_from(elapsed.as_nanos())
            .unwrap_or(i128::MAX / 2)
            .saturating_mul(i128::from(self.rate_bps));
        self.tokens = self.tokens.saturating_add(added).min(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1222 + 28 bytes = 10 000 bits: 10 ms each at 1000 kbit/s.
    const LEN: usize = 1222;

    /// Sends `n` datagrams as early as the pacer allows; returns their send times.
    fn run(pacer: &mut Pacer, start: Instant, n: usize) -> Vec<Duration> {
        let mut now = start;
        (0..n)
            .map(|_| {
                now += pacer.reserve(now, LEN);
                now - start
            })
            .collect()
    }

    #[test]
    fn spaces_datagrams_at_the_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(1000, 0, start).unwrap();
        let times = run(&mut pacer, start, 100);
        for (i, t) in times.iter().enumerate() {
            assert_eq!(*t, Duration::from_millis(10 * i as u64));
        }
    }

    #[test]
    fn burst_then_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(1000, 12_500, start).unwrap();
        let times = run(&mut pacer, start, 20);
        // 12 500 bytes of credit = 10 datagrams, plus the one that may overdraw.
        assert!(times[..11].iter().all(|t| t.is_zero()));
        assert_eq!(times[11], Duration::from_millis(10));
        assert_eq!(times[19], Duration::from_millis(90));
    }

    #[test]
    fn idle_time_does_not_build_more_than_the_burst() {
        let start = Instant::now();
        let mut pacer = Pacer::new(1000, 12_500, start).unwrap();
        run(&mut pacer, start, 11);
        let later = start + Duration::from_secs(3600);
        let times = run(&mut pacer, later, 12);
        assert!(times[..11].iter().all(|t| t.is_zero()));
        assert_eq!(times[11], Duration::from_millis(10));
    }

    #[test]
    fn late_wakeups_are_caught_up_within_the_burst() {
        // A sender that always wakes 1 ms late still averages the full rate when the bucket
        // holds more than a millisecond of traffic.
        let start = Instant::now();
        let mut pacer = Pacer::new(10_000, 12_500, start).unwrap(); // 1 ms per datagram
        let mut now = start;
        for _ in 0..10_000 {
            let wait = pacer.reserve(now, LEN);
            if !wait.is_zero() {
                now += wait + Duration::from_millis(1);
            }
        }
        let elapsed = now - start;
        assert!(elapsed <= Duration::from_millis(10_000), "{elapsed:?}");
        assert!(elapsed >= Duration::from_millis(9_980), "{elapsed:?}");
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let start = Instant::now() + Duration::from_secs(10);
        let mut pacer = Pacer::new(1000, 0, start).unwrap();
        assert_eq!(pacer.reserve(start, LEN), Duration::ZERO);
        let wait = pacer.reserve(start - Duration::from_secs(5), LEN);
        assert_eq!(wait, Duration::from_millis(10));
    }

    #[test]
    fn rejects_zero_rate() {
        assert_eq!(
            Pacer::new(0, 0, Instant::now()).unwrap_err().field,
            "rate_kbps"
        );
        assert_eq!(Pacer::new(5, 0, Instant::now()).unwrap().rate_kbps(), 5);
        assert_eq!(Pacer::wire_bits(1226), 10_032);
    }
}
