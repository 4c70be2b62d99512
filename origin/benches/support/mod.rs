//! What the origin's benchmarks share.

/// xorshift64*: seeded, so every run picks the same values.
pub struct Rng(pub u64);

impl Rng {
    /// The next value, below `bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}
