//! Helpers shared by the Rust integration tests (each test file includes this module).
#![allow(dead_code)] // Each test file uses a part.

/// A small deterministic generator (xorshift64*), so the tests need no crates.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-300), self.next());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// `(a + b, error)` exactly (TwoSum).
pub fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let t = a + b;
    let bb = t - a;
    (t, (a - (t - bb)) + (b - bb))
}

/// Log-softmax of exponents given as `(hi, lo)` pairs, as pairs again (so `exp` of one is good to
/// ~1e-16 even at `|hi| ≈ 69`), and `log Σ exp(d)`. The sum is compensated: a plain one over 131k
/// terms errs by ~4e-14, past float64's bound.
pub fn log_softmax_hi_lo(d: &[(f64, f64)]) -> (Vec<(f64, f64)>, f64) {
    let (mut sum, mut comp) = (0.0, 0.0);
    for &(h, l) in d {
        let (t, e) = two_sum(sum, h.exp() * (1.0 + l));
        (sum, comp) = (t, comp + e);
    }
    let ls = (sum + comp).ln();
    let out = d
        .iter()
        .map(|&(h, l)| {
            let (h2, l2) = two_sum(h, -ls);
            (h2, l + l2)
        })
        .collect();
    (out, ls)
}
