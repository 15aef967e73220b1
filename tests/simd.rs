//! Every SIMD backend this CPU supports, method by method, against the standard library in `f64` and
//! the scalar backend. `cargo test --release` runs the exhaustive `f32` sweeps and the millions of
//! random `f64` inputs in full; a debug build (plain `cargo test`) samples them ([`SWEEP_STRIDE`],
//! [`RANDOM_SHARE`]) so it finishes in a couple of minutes.

use fastsoftmax::simd::{Backend, Element, Isa, Simd, WithSimd};
use rayon::prelude::*;

// ----------------------------------------------------------------------------------------------
// Jobs: the only way to reach a backend's methods is to run a `WithSimd` job on it.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Un {
    Exp,
    Tanh,
    Ln,
}

#[inline(always)]
fn apply<T: Element, S: Simd<T>>(s: S, op: Un, v: S::V) -> S::V {
    match op {
        Un::Exp => s.exp(v),
        Un::Tanh => s.tanh(v),
        Un::Ln => s.ln(v),
    }
}

/// `out = op(x)`, full vectors then one partial tail.
struct MapJob<'a, T> {
    op: Un,
    x: &'a [T],
    out: &'a mut [T],
}

impl<T: Element> WithSimd for MapJob<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) {
        let s = T::simd(s);
        let (x, out) = (self.x, self.out);
        assert_eq!(x.len(), out.len());
        let l = <T::Simd<S> as Simd<T>>::LANES;
        let mut xc = x.chunks_exact(l);
        let mut oc = out.chunks_exact_mut(l);
        for (a, o) in (&mut xc).zip(&mut oc) {
            s.store(o, apply(s, self.op, s.load(a)));
        }
        let (a, o) = (xc.remainder(), oc.into_remainder());
        if !a.is_empty() {
            s.store_partial(o, apply(s, self.op, s.load_partial(a, T::ZERO)));
        }
    }
}

fn map<T: Element>(b: Backend, op: Un, x: &[T]) -> Vec<T> {
    let mut out = vec![T::from_f64(-12345.0); x.len()];
    b.dispatch(MapJob {
        op,
        x,
        out: &mut out,
    });
    out
}

/// `(LANES for f32, LANES for f64)` of the backend the job runs on.
struct LanesJob;
impl WithSimd for LanesJob {
    type Output = (usize, usize);
    fn with_simd<S: Isa>(self, _s: S) -> (usize, usize) {
        (<S as Simd<f32>>::LANES, <S as Simd<f64>>::LANES)
    }
}

/// The element-wise binary/ternary operations, one output per operation.
const N_OPS: usize = 7;
struct ArithJob<'a, T> {
    a: &'a [T],
    b: &'a [T],
    c: &'a [T],
    out: &'a mut [Vec<T>; N_OPS],
}

impl<T: Element> WithSimd for ArithJob<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) {
        let s = T::simd(s);
        let l = <T::Simd<S> as Simd<T>>::LANES;
        let n = self.a.len();
        let mut i = 0;
        while i < n {
            let k = l.min(n - i);
            let ld = |x: &[T]| {
                if k == l {
                    s.load(&x[i..i + l])
                } else {
                    s.load_partial(&x[i..n], T::ONE)
                }
            };
            let (a, b, c) = (ld(self.a), ld(self.b), ld(self.c));
            let r = [
                s.add(a, b),
                s.sub(a, b),
                s.mul(a, b),
                s.div(a, b),
                s.mul_add(a, b, c),
                s.max(a, b),
                s.select_eq(a, b, c, s.splat(T::from_f64(-3.0))),
            ];
            for (o, v) in self.out.iter_mut().zip(r) {
                if k == l {
                    s.store(&mut o[i..i + l], v);
                } else {
                    s.store_partial(&mut o[i..n], v);
                }
            }
            i += k;
        }
    }
}

/// Per vector of `x` (the last one partial, padded with the identity): `(reduce_max, reduce_sum)`.
struct ReduceJob<'a, T> {
    x: &'a [T],
}

impl<T: Element> WithSimd for ReduceJob<'_, T> {
    type Output = Vec<(T, T)>;
    fn with_simd<S: Isa>(self, s: S) -> Vec<(T, T)> {
        let s = T::simd(s);
        let l = <T::Simd<S> as Simd<T>>::LANES;
        self.x
            .chunks(l)
            .map(|c| {
                let (vm, vs) = if c.len() == l {
                    (s.load(c), s.load(c))
                } else {
                    (
                        s.load_partial(c, T::NEG_INFINITY),
                        s.load_partial(c, T::ZERO),
                    )
                };
                (s.reduce_max(vm), s.reduce_sum(vs))
            })
            .collect()
    }
}

/// `load_partial` of `buf[g..g + len]` (returned through a full `store`) and `store_partial` of
/// `pattern` into the same slice.
struct PartialJob<'a, T> {
    buf: &'a mut [T],
    g: usize,
    len: usize,
    fill: T,
    pattern: &'a [T],
}

impl<T: Element> WithSimd for PartialJob<'_, T> {
    type Output = Vec<T>;
    fn with_simd<S: Isa>(self, s: S) -> Vec<T> {
        let s = T::simd(s);
        let l = <T::Simd<S> as Simd<T>>::LANES;
        let mut loaded = vec![T::from_f64(-999.0); l];
        let slice = &mut self.buf[self.g..self.g + self.len];
        let v = s.load_partial(slice, self.fill);
        s.store(&mut loaded, v);
        s.store_partial(slice, s.load(self.pattern));
        loaded
    }
}

fn lanes(b: Backend) -> (usize, usize) {
    b.dispatch(LanesJob)
}

/// The backends under test: every one the CPU supports.
fn backends() -> Vec<Backend> {
    let v = Backend::supported();
    assert_eq!(v.first(), Some(&Backend::Scalar));
    eprintln!("testing backends {:?}", v);
    v
}

// ----------------------------------------------------------------------------------------------
// How much of the input space a run covers.

/// Stride through the `f32` bit patterns of the sweeps: every float under `--release`; in a debug
/// build (unoptimised code is ~30x slower) a sample, every 61st of the patterns (a prime, so the
/// sample walks through every mantissa residue).
const SWEEP_STRIDE: u32 = if cfg!(debug_assertions) { 61 } else { 1 };

/// The random `f64` tests draw `1 / RANDOM_SHARE` of their inputs in a debug build (sampling, as
/// above); all of them under `--release`.
const RANDOM_SHARE: usize = if cfg!(debug_assertions) { 20 } else { 1 };

/// `n` random inputs, sampled in a debug build.
fn count(n: usize) -> usize {
    n / RANDOM_SHARE
}

// ----------------------------------------------------------------------------------------------
// Error measures.

const TWO_128: f64 = 3.402_823_669_209_385e38;

/// `|y - exact|` in units of the last place of `exact` as an `f32` (denormal spacing `2^-149` below
/// `2^-126`). `+inf` counts as `2^128` and `exact` is clamped there, so overflow is measured like any
/// other rounding.
fn ulp_f32(y: f32, exact: f64) -> f64 {
    if exact.is_nan() || y.is_nan() {
        return if exact.is_nan() && y.is_nan() {
            0.0
        } else {
            f64::INFINITY
        };
    }
    let clamp = |v: f64| v.clamp(-TWO_128, TWO_128);
    let (y, e) = (clamp(y as f64), clamp(exact));
    let ex = if e == 0.0 {
        -126
    } else {
        (((e.to_bits() >> 52) & 0x7ff) as i32 - 1023).max(-126)
    };
    let inv_ulp = f64::from_bits(((23 - ex + 1023) as u64) << 52);
    (y - e).abs() * inv_ulp
}

/// Distance between two `f64` in representable steps (`inf` is one step past `MAX`).
fn ulp_f64(y: f64, r: f64) -> f64 {
    if y.is_nan() || r.is_nan() {
        return if y.is_nan() && r.is_nan() {
            0.0
        } else {
            f64::INFINITY
        };
    }
    let ord = |v: f64| {
        let b = v.to_bits() as i64;
        if b < 0 {
            -(b & i64::MAX) as i128
        } else {
            b as i128
        }
    };
    (ord(y) - ord(r)).unsigned_abs() as f64
}

/// `e^x` in `f64`, with a cheap series where `std` would be wasted (`|x| < 2^-12`: error `< 2^-52`).
fn exp_ref(x: f64) -> f64 {
    if x.abs() < 2.44140625e-4 {
        1.0 + x * (1.0 + x * (0.5 + x * (1.0 / 6.0)))
    } else {
        x.exp()
    }
}

/// `tanh x` in `f64`, with a series for `|x| < 2^-10` (error `< 2^-56` relative).
fn tanh_ref(x: f64) -> f64 {
    if x.abs() < 9.765625e-4 {
        let y = x * x;
        x + x * y * (-1.0 / 3.0 + y * (2.0 / 15.0))
    } else {
        x.tanh()
    }
}

/// Environment variable that thins the exhaustive `f32` sweeps: every sweep's stride is multiplied
/// by it (default 1: every float). Under emulation (qemu-user, `make test-aarch64`) a full sweep
/// takes 7-11 minutes; an odd stride such as 61 still visits every exponent and, not being a power
/// of two, varies every mantissa bit.
const SWEEP_STRIDE_ENV: &str = "FASTSOFTMAX_SWEEP_STRIDE";

fn sweep_stride() -> u32 {
    match std::env::var(SWEEP_STRIDE_ENV) {
        Ok(v) => v
            .parse::<u32>()
            .ok()
            .filter(|&s| s >= 1)
            .unwrap_or_else(|| panic!("{SWEEP_STRIDE_ENV}={v:?}: expected an integer >= 1")),
        Err(_) => 1,
    }
}

/// Sweeps every `f32` whose bit pattern is in `lo..=hi` (one sign) with stride `step` (times
/// [`SWEEP_STRIDE`] and `FASTSOFTMAX_SWEEP_STRIDE`) through every vector backend; returns `(backend, max error, at x)`
/// for each.
fn sweep_f32(op: Un, lo: u32, hi: u32, step: u32) -> Vec<(Backend, f64, f32)> {
    let step = step.saturating_mul(sweep_stride());
    let reference = match op {
        Un::Exp => exp_ref,
        Un::Tanh => tanh_ref,
        Un::Ln => f64::ln,
    };
    let bs: Vec<Backend> = backends()
        .into_iter()
        .filter(|&b| b != Backend::Scalar)
        .collect();
    const CHUNK: u64 = 1 << 16;
    let (lo64, hi64, step) = (lo as u64, hi as u64 + 1, (step * SWEEP_STRIDE) as u64);
    let count = (hi64 - lo64).div_ceil(CHUNK * step);
    let none = || vec![(0.0f64, 0.0f32); bs.len()];
    let worst = (0..count)
        .into_par_iter()
        .map(|k| {
            let start = lo64 + k * CHUNK * step;
            let x: Vec<f32> = (0..CHUNK)
                .map(|i| start + i * step)
                .take_while(|&v| v < hi64)
                .map(|v| f32::from_bits(v as u32))
                .collect();
            let mut worst = none();
            if op == Un::Exp && x.iter().all(|v| v.abs() < EXP_ONE) {
                // e^x is within 2^-25 of 1, where the f32 spacing is 2^-24 (below) / 2^-23
                // (above): |y - 1| <= 1.5 * 2^-24 guarantees <= 2 ulp. A cheap check for the
                // 76% of the bit patterns that lie here.
                for (w, &b) in worst.iter_mut().zip(&bs) {
                    let y = map(b, op, &x);
                    let dev = y.iter().fold(0.0f32, |m, &v| m.max((v - 1.0).abs()));
                    if dev > 1.5 * EXP_ONE || dev.is_nan() {
                        *w = (f64::INFINITY, x[0]);
                    }
                }
                return worst;
            }
            let want: Vec<f64> = x.iter().map(|&v| reference(v as f64)).collect();
            for (w, &b) in worst.iter_mut().zip(&bs) {
                let y = map(b, op, &x);
                for i in 0..x.len() {
                    let e = ulp_f32(y[i], want[i]);
                    if e > w.0 || e.is_nan() {
                        *w = (e, x[i]);
                    }
                }
            }
            worst
        })
        .reduce(none, |a, b| {
            a.into_iter()
                .zip(b)
                .map(|(a, b)| {
                    if b.0 > a.0 || b.0.is_nan() || a.0.is_nan() {
                        b
                    } else {
                        a
                    }
                })
                .collect()
        });
    bs.into_iter()
        .zip(worst)
        .map(|(b, (e, x))| (b, e, x))
        .collect()
}

/// `2^-25`: below it in magnitude, `e^x` rounds to 1.
const EXP_ONE: f32 = 2.980_232_2e-8;

/// A small deterministic generator (SplitMix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// `±10^u`, `u` uniform in `[lo, hi)`.
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let v = 10f64.powf(self.uniform(lo, hi));
        if self.next() & 1 == 0 {
            v
        } else {
            -v
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Tests.

#[test]
fn detection_and_dispatch_agree() {
    #[cfg(target_arch = "x86_64")]
    {
        let f = |s: &str| match s {
            "avx512f" => is_x86_feature_detected!("avx512f"),
            "avx512bw" => is_x86_feature_detected!("avx512bw"),
            "avx512dq" => is_x86_feature_detected!("avx512dq"),
            "avx512vl" => is_x86_feature_detected!("avx512vl"),
            "avx2" => is_x86_feature_detected!("avx2"),
            "fma" => is_x86_feature_detected!("fma"),
            _ => unreachable!(),
        };
        let avx2 = f("avx2") && f("fma");
        let avx512 = avx2
            && ["avx512f", "avx512bw", "avx512dq", "avx512vl"]
                .iter()
                .all(|s| f(s));
        assert_eq!(Backend::Avx2.is_supported(), avx2);
        assert_eq!(Backend::Avx512.is_supported(), avx512);
        assert!(!Backend::Neon.is_supported());
    }
    #[cfg(target_arch = "aarch64")]
    assert_eq!(
        Backend::Neon.is_supported(),
        std::arch::is_aarch64_feature_detected!("neon")
    );
    for b in backends() {
        let expect = match b {
            Backend::Scalar => (1, 1),
            Backend::Neon => (4, 2),
            Backend::Avx2 => (8, 4),
            Backend::Avx512 => (16, 8),
        };
        assert_eq!(lanes(b), expect, "{b:?} ran on the wrong instruction set");
    }
}

#[test]
fn exp_f32_every_float() {
    // [-110, 90] covers the overflow (> 88.72) and the whole denormal and underflow range (< -87.34,
    // results vanish below -103.97).
    let pos = (0u32, 90f32.to_bits());
    let neg = (0x8000_0000u32, (-110f32).to_bits());
    // Scalar is std's `expf`: only the vector backends are swept.
    for (lo, hi) in [pos, neg] {
        for (b, err, at) in sweep_f32(Un::Exp, lo, hi, 1) {
            eprintln!("{b:?} exp f32 bits {lo:#x}..={hi:#x}: max {err:.3} ulp at {at:e}");
            assert!(err <= 2.0, "{b:?}: exp({at:e}) is {err} ulp off");
        }
    }
}

#[test]
fn exp_f64_random() {
    for b in backends() {
        let mut rng = Rng(0x5eed_0000 + b as u64);
        let mut x: Vec<f64> = (0..count(3_000_000))
            .map(|_| rng.uniform(-746.0, 710.0))
            .collect();
        x.extend((0..count(500_000)).map(|_| rng.uniform(-1.0, 1.0)));
        x.extend((0..count(500_000)).map(|_| rng.log_uniform(-300.0, 0.0)));
        x.extend((0..count(200_000)).map(|_| rng.uniform(-745.2, -707.0))); // denormal results
        x.extend((0..count(100_000)).map(|_| rng.uniform(709.0, 710.0))); // around overflow
        let y = map(b, Un::Exp, &x);
        let (mut worst, mut at) = (0.0f64, 0.0f64);
        for (&xi, &yi) in x.iter().zip(&y) {
            let e = ulp_f64(yi, xi.exp());
            if e > worst {
                (worst, at) = (e, xi);
            }
        }
        eprintln!("{b:?} exp f64: max {worst} ulp (vs std) at {at:e}");
        assert!(worst <= 2.0, "{b:?}: exp({at:e}) is {worst} ulp off");
    }
}

/// Inputs shared by the special-value tests, padded so every lane position is exercised.
fn specials<T: Element>() -> Vec<f64> {
    let mut v = vec![
        f64::NAN,
        f64::NEG_INFINITY,
        f64::INFINITY,
        0.0,
        -0.0,
        1.0,
        -1.0,
        1e30,
        -1e30,
        1e300,
        -1e300,
        1e-40,
        -1e-40,
        1e-310,
        -1e-310,
        88.0,
        89.0,
        -100.0,
        -104.0,
        -105.0,
        709.0,
        710.0,
        -744.0,
        -746.0,
        20.0,
        -20.0,
        0.5,
        -0.7,
    ];
    // Every special in every lane position: rotate the list a few times.
    let base = v.clone();
    for k in 1..17 {
        v.extend(base.iter().cycle().skip(k).take(base.len()));
    }
    v.into_iter().map(|x| T::from_f64(x).to_f64()).collect()
}

fn check_specials<T: Element>(b: Backend, max_ulp: fn(T, f64) -> f64) {
    let xs: Vec<T> = specials::<T>().into_iter().map(T::from_f64).collect();
    for (len, off) in [(xs.len(), 0), (xs.len() - 5, 3)] {
        let x = &xs[off..off + len];
        let e = map(b, Un::Exp, x);
        let t = map(b, Un::Tanh, x);
        for ((&xi, &ei), &ti) in x.iter().zip(&e).zip(&t) {
            let xf = xi.to_f64();
            let (ef, tf) = (ei.to_f64(), ti.to_f64());
            if xf.is_nan() {
                assert!(
                    ef.is_nan() && tf.is_nan(),
                    "{b:?}: exp/tanh(NaN) = {ef}/{tf}"
                );
                continue;
            }
            if xf == f64::NEG_INFINITY {
                assert!(ef == 0.0, "{b:?}: exp(-inf) = {ef}");
            }
            if xf == f64::INFINITY || xf >= 1e30 {
                assert!(ef == f64::INFINITY, "{b:?}: exp({xf}) = {ef}");
            }
            if xf <= -1e30 {
                assert!(ef == 0.0, "{b:?}: exp({xf}) = {ef}");
            }
            if xf == 0.0 {
                assert!(ef == 1.0, "{b:?}: exp({xf}) = {ef}");
                assert!(
                    tf == 0.0 && tf.is_sign_negative() == xf.is_sign_negative(),
                    "{b:?}: tanh({xf:?}) = {tf:?}"
                );
            }
            if xf.abs() >= 20.0 {
                assert!(tf == xf.signum(), "{b:?}: tanh({xf}) = {tf}");
            }
            assert!(
                max_ulp(ei, exp_ref(xf)) <= 2.0,
                "{b:?}: exp({xf:e}) = {ef:e}, want {:e}",
                exp_ref(xf)
            );
            assert!(
                max_ulp(ti, tanh_ref(xf)) <= 2.0,
                "{b:?}: tanh({xf:e}) = {tf:e}, want {:e}",
                tanh_ref(xf)
            );
        }
    }
}

#[test]
fn exp_tanh_special_values() {
    for b in backends() {
        check_specials::<f32>(b, ulp_f32);
        check_specials::<f64>(b, ulp_f64);
    }
}

#[test]
fn tanh_f32_every_float() {
    // Every float in [2^-12, 12] (beyond 9.01, tanh rounds to ±1), a stride through the tiny ones
    // (denormals included) and beyond 12 to ±1e6.
    let tiny = 2f32.powi(-12).to_bits();
    for (lo, hi, step) in [
        (tiny, 12f32.to_bits(), 1u32),
        (tiny | 0x8000_0000, (-12f32).to_bits(), 1),
        (0, tiny, 37),
        (0x8000_0000, tiny | 0x8000_0000, 37),
        (12f32.to_bits(), 1e6f32.to_bits(), 101),
        ((-12f32).to_bits(), (-1e6f32).to_bits(), 101),
    ] {
        for (b, err, at) in sweep_f32(Un::Tanh, lo, hi, step) {
            eprintln!("{b:?} tanh f32 bits {lo:#x}..={hi:#x}/{step}: max {err:.3} ulp at {at:e}");
            assert!(err <= 2.0, "{b:?}: tanh({at:e}) is {err} ulp off");
        }
    }
}

#[test]
fn tanh_f64_random() {
    for b in backends() {
        let mut rng = Rng(0x7a_0000 + b as u64);
        let mut x: Vec<f64> = (0..count(1_000_000))
            .map(|_| rng.uniform(-20.0, 20.0))
            .collect();
        x.extend((0..count(1_000_000)).map(|_| rng.uniform(-1.0, 1.0)));
        x.extend((0..count(300_000)).map(|_| rng.uniform(0.6, 0.65)));
        x.extend((0..count(500_000)).map(|_| rng.log_uniform(-300.0, 0.0)));
        x.extend((0..count(100_000)).map(|_| rng.log_uniform(1.0, 300.0)));
        let y = map(b, Un::Tanh, &x);
        let (mut worst, mut at) = (0.0f64, 0.0f64);
        for (&xi, &yi) in x.iter().zip(&y) {
            let e = ulp_f64(yi, xi.tanh());
            if e > worst {
                (worst, at) = (e, xi);
            }
        }
        eprintln!("{b:?} tanh f64: max {worst} ulp (vs std) at {at:e}");
        assert!(worst <= 3.0, "{b:?}: tanh({at:e}) is {worst} ulp off");
    }
}

#[test]
fn ln_f32_every_float() {
    // Every positive float: denormals, normals, up to MAX (`f64::ln` is the reference, < 1 ulp of
    // f64). Scalar is std's `lnf`: only the vector backends are swept.
    let (lo, hi) = (1u32, f32::MAX.to_bits());
    for (b, err, at) in sweep_f32(Un::Ln, lo, hi, 1) {
        eprintln!("{b:?} ln f32 bits {lo:#x}..={hi:#x}: max {err:.3} ulp at {at:e}");
        assert!(err <= 2.0, "{b:?}: ln({at:e}) is {err} ulp off");
    }
}

#[test]
fn ln_f64_random() {
    for b in backends() {
        let mut rng = Rng(0x1_0000 + b as u64);
        // Uniform bit patterns: every binade (denormals included) equally often.
        let mut x: Vec<f64> = (0..count(2_000_000))
            .map(|_| f64::from_bits(1 + rng.next() % (f64::MAX.to_bits() - 1)))
            .collect();
        x.extend((0..count(1_000_000)).map(|_| rng.uniform(0.5, 2.0)));
        x.extend((0..count(500_000)).map(|_| 1.0 + rng.log_uniform(-16.0, -3.0)));
        x.extend((0..count(500_000)).map(|_| rng.uniform(0.0, 100.0)));
        x.extend((0..count(500_000)).map(|_| f64::from_bits(1 + rng.next() % (1u64 << 52))));
        let y = map(b, Un::Ln, &x);
        let (mut worst, mut at) = (0.0f64, 0.0f64);
        for (&xi, &yi) in x.iter().zip(&y) {
            let e = ulp_f64(yi, xi.ln());
            if e > worst {
                (worst, at) = (e, xi);
            }
        }
        eprintln!("{b:?} ln f64: max {worst} ulp (vs std) at {at:e}");
        assert!(worst <= 2.0, "{b:?}: ln({at:e}) is {worst} ulp off");
    }
}

/// `ln` of the special values, in every lane position, against std (exactly for the specials).
fn check_ln_specials<T: Element>(b: Backend, max_ulp: fn(T, f64) -> f64) {
    let mut base: Vec<f64> = vec![
        f64::NAN,
        -f64::NAN,
        f64::NEG_INFINITY,
        f64::INFINITY,
        0.0,
        -0.0,
        1.0,
        -1.0,
        -1e-310,
        -1e-40,
        1e-310,
        1e-40,
        5e-324,
        1e-45,
        f64::MAX,
        f64::MIN_POSITIVE,
        f32::MAX as f64,
        f32::MIN_POSITIVE as f64,
        2.0,
        0.5,
        std::f64::consts::SQRT_2,
        std::f64::consts::FRAC_1_SQRT_2,
        std::f64::consts::E,
        1e30,
        1e300,
    ];
    base = base.into_iter().map(|x| T::from_f64(x).to_f64()).collect();
    let mut v = base.clone();
    for k in 1..17 {
        v.extend(base.iter().cycle().skip(k).take(base.len()));
    }
    let xs: Vec<T> = v.into_iter().map(T::from_f64).collect();
    for (len, off) in [(xs.len(), 0), (xs.len() - 5, 3)] {
        let x = &xs[off..off + len];
        let y = map(b, Un::Ln, x);
        for (&xi, &yi) in x.iter().zip(&y) {
            let (xf, yf) = (xi.to_f64(), yi.to_f64());
            let want = xf.ln();
            if want.is_nan() {
                assert!(yf.is_nan(), "{b:?}: ln({xf:e}) = {yf:e}, want NaN");
            } else if xf == 1.0 || want.is_infinite() {
                assert!(
                    yf == want && yf.to_bits() == want.to_bits(),
                    "{b:?}: ln({xf:?}) = {yf:?}, want {want:?}"
                );
            } else {
                assert!(
                    max_ulp(yi, want) <= 2.0,
                    "{b:?}: ln({xf:e}) = {yf:e}, want {want:e}"
                );
            }
        }
    }
}

#[test]
fn ln_special_values() {
    for b in backends() {
        check_ln_specials::<f32>(b, ulp_f32);
        check_ln_specials::<f64>(b, ulp_f64);
    }
}

fn check_arith<T: Element>(b: Backend, seed: u64) {
    let mut rng = Rng(seed);
    for n in [0usize, 1, 3, 7, 8, 15, 16, 17, 31, 33, 100, 1000] {
        let gen = |rng: &mut Rng| -> Vec<T> {
            (0..n)
                .map(|_| match rng.next() % 16 {
                    0 => T::NAN,
                    1 => T::INFINITY,
                    2 => T::NEG_INFINITY,
                    3 => T::ZERO,
                    _ => T::from_f64(rng.uniform(-1e3, 1e3)),
                })
                .collect()
        };
        let a = gen(&mut rng);
        let mut bb = gen(&mut rng);
        let c = gen(&mut rng);
        for i in 0..n {
            if rng.next().is_multiple_of(3) {
                bb[i] = a[i]; // equal lanes for select_eq
            }
        }
        let mut out: [Vec<T>; N_OPS] = std::array::from_fn(|_| vec![T::from_f64(-777.0); n]);
        b.dispatch(ArithJob {
            a: &a,
            b: &bb,
            c: &c,
            out: &mut out,
        });
        let same =
            |x: T, y: T| (x.is_nan() && y.is_nan()) || x.to_f64().to_bits() == y.to_f64().to_bits();
        for i in 0..n {
            let (x, y, z) = (a[i], bb[i], c[i]);
            let fused = T::from_f64(match std::mem::size_of::<T>() {
                4 => (x.to_f64() as f32).mul_add(y.to_f64() as f32, z.to_f64() as f32) as f64,
                _ => x.to_f64().mul_add(y.to_f64(), z.to_f64()),
            });
            let want = [
                x + y,
                x - y,
                x * y,
                x / y,
                fused,
                if x >= y { x } else { y },
                if x == y { z } else { T::from_f64(-3.0) },
            ];
            for (k, w) in want.iter().enumerate() {
                let got = out[k][i];
                let unfused = x * y + z;
                let ok = if k == 4 && b == Backend::Scalar {
                    // "fused where the instruction set has it"
                    same(got, *w) || same(got, unfused)
                } else if k == 5 && (x.is_nan() || y.is_nan()) {
                    // max: any NaN behaviour is allowed, but the result is one of the operands.
                    same(got, x) || same(got, y)
                } else {
                    same(got, *w) || (got.to_f64() == 0.0 && w.to_f64() == 0.0 && k == 5)
                };
                assert!(
                    ok,
                    "{b:?} n={n} op#{k}: ({x:?}, {y:?}, {z:?}) -> {got:?}, want {w:?}"
                );
            }
        }
    }
}

#[test]
fn arithmetic_matches_ieee() {
    for b in backends() {
        check_arith::<f32>(b, 1);
        check_arith::<f64>(b, 2);
    }
}

fn check_reduce<T: Element>(b: Backend, seed: u64) {
    let mut rng = Rng(seed);
    for n in [1usize, 2, 5, 8, 13, 16, 24, 40, 129] {
        // Small integers: every association of the sum is exact.
        let x: Vec<T> = (0..n)
            .map(|_| T::from_f64((rng.next() % 2001) as f64 - 1000.0))
            .collect();
        let got = b.dispatch(ReduceJob { x: &x });
        let l = match std::mem::size_of::<T>() {
            4 => lanes(b).0,
            _ => lanes(b).1,
        };
        assert_eq!(got.len(), n.div_ceil(l));
        for (c, (m, s)) in x.chunks(l).zip(got) {
            let want_max = c.iter().fold(f64::NEG_INFINITY, |a, v| a.max(v.to_f64()));
            let want_sum: f64 = c.iter().map(|v| v.to_f64()).sum();
            assert_eq!(m.to_f64(), want_max, "{b:?} reduce_max {c:?}");
            assert_eq!(s.to_f64(), want_sum, "{b:?} reduce_sum {c:?}");
        }
    }
    // A non-integer sum: any association, so within a few rounding errors.
    let x: Vec<T> = (0..4096)
        .map(|_| T::from_f64(rng.uniform(0.0, 1.0)))
        .collect();
    let got: f64 = b
        .dispatch(ReduceJob { x: &x })
        .iter()
        .map(|p| p.1.to_f64())
        .sum();
    let want: f64 = x.iter().map(|v| v.to_f64()).sum();
    let eps = if std::mem::size_of::<T>() == 4 {
        1e-6
    } else {
        1e-14
    };
    assert!(
        (got - want).abs() <= eps * want,
        "{b:?}: sum {got} vs {want}"
    );
}

#[test]
fn reductions() {
    for b in backends() {
        check_reduce::<f32>(b, 3);
        check_reduce::<f64>(b, 4);
    }
}

fn check_partial<T: Element>(b: Backend) {
    let l = match std::mem::size_of::<T>() {
        4 => lanes(b).0,
        _ => lanes(b).1,
    };
    let guard = T::from_f64(1234.5);
    let fill = T::from_f64(-7.0);
    let pattern: Vec<T> = (0..l).map(|i| T::from_f64(100.0 + i as f64)).collect();
    for len in 0..l {
        for g in [l, l + 1, 2 * l - 1] {
            let mut buf = vec![guard; len + 2 * g];
            for i in 0..len {
                buf[g + i] = T::from_f64(1.0 + i as f64);
            }
            let loaded = b.dispatch(PartialJob {
                buf: &mut buf,
                g,
                len,
                fill,
                pattern: &pattern,
            });
            for (i, v) in loaded.iter().enumerate() {
                let want = if i < len {
                    T::from_f64(1.0 + i as f64)
                } else {
                    fill
                };
                assert_eq!(
                    v.to_f64(),
                    want.to_f64(),
                    "{b:?} load_partial len {len} lane {i}"
                );
            }
            for (i, v) in buf.iter().enumerate() {
                let want = if (g..g + len).contains(&i) {
                    pattern[i - g]
                } else {
                    guard
                };
                assert_eq!(
                    v.to_f64(),
                    want.to_f64(),
                    "{b:?} store_partial len {len} at {i}"
                );
            }
        }
    }
}

#[test]
fn partial_load_store() {
    for b in backends() {
        check_partial::<f32>(b);
        check_partial::<f64>(b);
    }
}

#[test]
fn backends_agree_on_a_row() {
    // Same inputs through every backend's exp: within 2 ulp of each other's reference.
    let mut rng = Rng(9);
    let x: Vec<f32> = (0..10_001)
        .map(|_| rng.uniform(-90.0, 0.0) as f32)
        .collect();
    let want = map(Backend::Scalar, Un::Exp, &x);
    for b in backends() {
        let got = map(b, Un::Exp, &x);
        for i in 0..x.len() {
            assert!(
                ulp_f32(got[i], want[i] as f64) <= 2.5,
                "{b:?}: exp({}) = {} vs scalar {}",
                x[i],
                got[i],
                want[i]
            );
        }
    }
}

/// `load_strided` of `x` (returned through a full `store`) and `store_strided` of `pattern` into `out`.
struct StridedJob<'a, T> {
    x: &'a [T],
    out: &'a mut [T],
    stride: usize,
    pattern: &'a [T],
}

impl<T: Element> WithSimd for StridedJob<'_, T> {
    type Output = Vec<T>;
    fn with_simd<S: Isa>(self, s: S) -> Vec<T> {
        let s = T::simd(s);
        let l = <T::Simd<S> as Simd<T>>::LANES;
        let mut loaded = vec![T::ZERO; l];
        s.store(&mut loaded, s.load_strided(self.x, self.stride));
        s.store_strided(self.out, self.stride, s.load(self.pattern));
        loaded
    }
}

fn check_strided<T: Element>(b: Backend) {
    let l = match std::mem::size_of::<T>() {
        4 => lanes(b).0,
        _ => lanes(b).1,
    };
    let pattern: Vec<T> = (0..l).map(|i| T::from_f64(100.0 + i as f64)).collect();
    for stride in [1usize, 2, 3, 7, 100] {
        let n = (l - 1) * stride + 1;
        let x: Vec<T> = (0..n).map(|i| T::from_f64(i as f64)).collect();
        let mut out = vec![T::from_f64(-5.0); n];
        let loaded = b.dispatch(StridedJob {
            x: &x,
            out: &mut out,
            stride,
            pattern: &pattern,
        });
        for (i, v) in loaded.iter().enumerate() {
            assert_eq!(
                v.to_f64(),
                (i * stride) as f64,
                "{b:?} load_strided {stride} lane {i}"
            );
        }
        for (j, v) in out.iter().enumerate() {
            let want = if j % stride == 0 {
                100.0 + (j / stride) as f64
            } else {
                -5.0
            };
            assert_eq!(v.to_f64(), want, "{b:?} store_strided {stride} at {j}");
        }
        // One element short: must panic, not read or write past the slice.
        if l > 1 {
            let short = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut o = vec![T::ZERO; n - 1];
                b.dispatch(StridedJob {
                    x: &x[..n - 1],
                    out: &mut o,
                    stride,
                    pattern: &pattern,
                })
            }));
            assert!(
                short.is_err(),
                "{b:?}: strided access of a short slice did not panic"
            );
        }
    }
}

#[test]
fn strided_load_store() {
    for b in backends() {
        check_strided::<f32>(b);
        check_strided::<f64>(b);
    }
}
