//! A tiny deterministic random number generator (SplitMix64).
//!
//! The layered test set must be byte-for-byte reproducible from a seed, on every machine
//! and with every compiler, so the generator is spelled out here rather than taken from a
//! crate whose algorithm may change between versions.

/// SplitMix64 (Steele, Lea, Flood 2014): 64 bits of state, good enough statistics for
/// picking names, sizes and offsets.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator derived from this seed and a label, so independent parts of the test
    /// set do not shift when one of them changes.
    pub fn derive(seed: u64, label: &str) -> Self {
        let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
        for b in label.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Log-normal with the given median and shape, clamped to `lo..=hi`: the usual shape
    /// of file sizes in a distribution's root filesystem.
    pub fn lognormal(&mut self, median: f64, sigma: f64, lo: u64, hi: u64) -> u64 {
        // Box-Muller; 1 - unit() is in (0, 1] so ln() is finite.
        let (u1, u2) = (1.0 - self.unit(), self.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        ((median.ln() + sigma * z).exp() as u64).clamp(lo, hi)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Fill `buf` with pseudo-random bytes (file contents).
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = Rng::derive(7, "t");
        let mut b = Rng::derive(7, "t");
        for _ in 0..1000 {
            let (x, y) = (a.range(3, 9), b.range(3, 9));
            assert_eq!(x, y);
            assert!((3..=9).contains(&x));
        }
        assert_ne!(
            Rng::derive(1, "a").next_u64(),
            Rng::derive(1, "b").next_u64()
        );
        let s = Rng::derive(1, "t").lognormal(2000.0, 1.5, 10, 100);
        assert!((10..=100).contains(&s));
    }
}
