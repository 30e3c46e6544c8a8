//! A tiny seeded PRNG (splitmix64), written here rather than taken from a crate so that the
//! sequence a seed produces never changes with a dependency upgrade: a seed printed by a
//! failing CI run replays the same operations forever.

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// A seed from the environment variable `var`, or from the clock.
pub fn seed_from_env(var: &str) -> u64 {
    if let Some(s) = std::env::var(var).ok().and_then(|v| v.trim().parse().ok()) {
        return s;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    now.as_secs() ^ u64::from(now.subsec_nanos())
}
