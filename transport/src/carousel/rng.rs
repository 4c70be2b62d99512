//! A tiny seeded PRNG for the relay, tests and benchmarks.

/// SplitMix64 (Steele, Lea and Flood, 2014): a 64-bit state, one multiply-xorshift chain per
/// output, and good enough statistics for simulating packet loss. Deterministic for a seed.
///
/// Not cryptographic: never use it for keys, nonces or anything an adversary may predict.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator; the same seed gives the same sequence.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform value in `0..n` (0 when `n` is 0), by Lemire's multiply-shift; the bias is
    /// below n / 2⁶⁴, irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniform value in `[0, 1)`, from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `true` with probability `percent` / 100.
    pub fn chance(&mut self, percent: f64) -> bool {
        self.next_f64() * 100.0 < percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_deterministic_and_reference_correct() {
        // First output for seed 0, from the reference implementation.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
        let a: Vec<u64> = (0..5)
            .scan(SplitMix64::new(42), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..5)
            .scan(SplitMix64::new(42), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn ranges_hold_and_chance_is_roughly_fair() {
        let mut rng = SplitMix64::new(1);
        assert_eq!(rng.below(0), 0);
        let mut hits = 0;
        for _ in 0..100_000 {
            assert!(rng.below(7) < 7);
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
            if rng.chance(20.0) {
                hits += 1;
            }
        }
        assert!((19_000..21_000).contains(&hits), "{hits}");
    }
}
