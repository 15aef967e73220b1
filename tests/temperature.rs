//! Temperatures on every instruction set this CPU has: softmax, log-softmax, softmin (a negative
//! scale) and logsumexp of `x · s`, float32 and float64, the scale given as a `T` (`softmax`) or as
//! a float64 (`softmax_scaled`), on the tile path (rows of at most 64), whole rows, split rows, sizes
//! that end in every SIMD tail, huge `|x|` (1e10 in float32, 1e300 in float64), and the special
//! values of docs/api.md §3 with `x · s` evaluated in the compute precision.

use fastsoftmax::simd::Element;
use fastsoftmax::{
    logsumexp, logsumexp_scaled, softmax, softmax_scaled, Backend, Buf, ExactScale, Mode,
};

mod common;
use common::{log_softmax_hi_lo, two_sum, Rng};

/// Temperatures (negative: softmin's scale `-1/T`); at 0.2446... a float32 `1/T` errs by 5.5e-8
/// relative, which moved outputs near 1e-30 by 3.9e-6 before the scale's own rounding was carried.
const TEMPS: [f64; 10] = [
    0.05,
    0.1,
    0.3,
    0.7,
    1.7,
    3.0,
    0.2446193054257848,
    -0.1,
    -0.7,
    -1.7,
];

/// How a kernel gets its scale, and the scale the reference uses.
#[derive(Clone, Copy, Debug)]
enum Entry {
    /// `softmax(…, scale: T)`: the scale is the `T` nearest `1/t`.
    TScale,
    /// `softmax_scaled(…, 1/t)`: the float64 `1/t` taken as exact.
    F64Scale,
    /// `softmax_scaled(…, ExactScale::of_temperature(t))`: `1/t` exactly (the reference divides).
    Temperature,
}

/// The scale `entry` hands the kernel for the (signed) temperature `t`, and the reference's
/// `(x - M) · s` as `hi + lo`.
fn scale_of<T: Element>(entry: Entry, t: f64) -> (ExactScale, impl Fn(f64, f64) -> (f64, f64)) {
    let s = match entry {
        Entry::TScale => T::from_f64(1.0 / t).to_f64().into(),
        Entry::F64Scale => (1.0 / t).into(),
        Entry::Temperature => ExactScale::of_temperature(t.abs(), t.signum()),
    };
    let diff = move |a: f64, b: f64| match entry {
        Entry::Temperature => {
            let h = a / t;
            (h, ((-h).mul_add(t, a) + b) / t)
        }
        _ => {
            let h = a * s.hi;
            (h, a.mul_add(s.hi, -h) + b * s.hi)
        }
    };
    (s, diff)
}

/// The float64 formula on one finite row, carried so that it is exact well below float64's bound:
/// log-softmax of `x · s` as `(hi, lo)` pairs and `logsumexp(x · s) / s` (`sign` that of `s`,
/// `diff(a, b)` the product `(a + b) · s` as `hi + lo`, `inv` the scale's reciprocal).
fn reference(
    row: &[f64],
    sign: f64,
    inv: f64,
    diff: impl Fn(f64, f64) -> (f64, f64),
) -> (Vec<(f64, f64)>, f64) {
    let pick = |a: f64, b: f64| if (b - a) * sign > 0.0 { b } else { a };
    let m = row.iter().copied().reduce(pick).unwrap();
    // (x - M)·s as hi + lo.
    let d: Vec<(f64, f64)> = row
        .iter()
        .map(|&v| {
            let (a, b) = two_sum(v, -m);
            diff(a, b)
        })
        .collect();
    let (out, ls) = log_softmax_hi_lo(&d);
    (out, m + ls * inv)
}

/// Softmax, log-softmax and logsumexp of the `rows × cols` matrix `x` at scale `sf`: through the
/// `T`-scale entries (`exact`) or the float64-scale ones.
fn run<T: Element>(b: Backend, x: &[T], cols: usize, sf: ExactScale, exact: bool) -> [Vec<f64>; 3] {
    let mut outs = [vec![T::ZERO; x.len()], vec![T::ZERO; x.len()]];
    for (out, mode) in outs.iter_mut().zip([Mode::Softmax, Mode::LogSoftmax]) {
        let buf = Buf::Separate { x, out };
        if exact {
            softmax(b, buf, cols, T::from_f64(sf.hi), mode).unwrap();
        } else {
            softmax_scaled(b, buf, cols, sf, mode).unwrap();
        }
    }
    let mut lse = vec![T::ZERO; x.len() / cols];
    if exact {
        logsumexp(b, x, cols, T::from_f64(sf.hi), &mut lse).unwrap();
    } else {
        logsumexp_scaled(b, x, cols, sf, &mut lse).unwrap();
    }
    let f = |v: &[T]| v.iter().map(|v| v.to_f64()).collect::<Vec<f64>>();
    [f(&outs[0]), f(&outs[1]), f(&lse)]
}

/// Checks every kernel on the finite matrix `x` at every temperature against [`reference`]:
/// softmax within `tol` relative for outputs >= 1e-30 (and never negative, nor far off below),
/// log-softmax and logsumexp within `tol · max(1, |ref|)`.
fn check<T: Element>(b: Backend, x: &[T], cols: usize, tol: f64, what: &str) {
    let close = |a: f64, r: f64| (a - r).abs() <= tol * r.abs().max(1.0);
    for t in TEMPS {
        for entry in [Entry::TScale, Entry::F64Scale, Entry::Temperature] {
            let (sf, diff) = scale_of::<T>(entry, t);
            let [sm, lsm, lse] = run(b, x, cols, sf, matches!(entry, Entry::TScale));
            let ctx = format!("{b:?} {what} {}x{cols} T={t} {entry:?}", x.len() / cols);
            let inv = if matches!(entry, Entry::Temperature) {
                t
            } else {
                1.0 / sf.hi
            };
            for (r, row) in x.chunks_exact(cols).enumerate() {
                let row: Vec<f64> = row.iter().map(|v| v.to_f64()).collect();
                let (rl, rlse) = reference(&row, t, inv, &diff);
                assert!(
                    close(lse[r], rlse),
                    "{ctx}: logsumexp[{r}] {}, ref {rlse}",
                    lse[r]
                );
                for (j, &(h, l)) in rl.iter().enumerate() {
                    let (p, lp) = (sm[r * cols + j], lsm[r * cols + j]);
                    let rp = h.exp() * (1.0 + l);
                    let err = (p - rp).abs();
                    let ok = if rp >= 1e-30 {
                        err <= tol * rp
                    } else {
                        err <= 2e-30 * tol + 1e-38
                    };
                    assert!(
                        ok && p >= 0.0,
                        "{ctx}: softmax[{r},{j}] {p}, ref {rp}, rel {:e}",
                        err / rp
                    );
                    assert!(
                        close(lp, h + l),
                        "{ctx}: log_softmax[{r},{j}] {lp}, ref {}",
                        h + l
                    );
                }
            }
        }
    }
}

/// Row lengths: tile path (<= 64) with every tail of 4, 8 and 16 lanes, whole rows across the
/// 2048-element blocks, and (release builds) a split row.
fn shapes() -> Vec<(usize, usize)> {
    let mut v = vec![
        (37, 1),
        (37, 7),
        (9, 31),
        (40, 64),
        (5, 65),
        (3, 1000),
        (2, 2049),
        (2, 4099),
    ];
    if !cfg!(debug_assertions) {
        v.push((1, 131_075));
    }
    v
}

fn random<T: Element>(rng: &mut Rng, n: usize, spread: f64, offset: f64) -> Vec<T> {
    (0..n)
        .map(|_| T::from_f64(offset + spread * rng.normal()))
        .collect()
}

/// Random matrices of every shape at `(spread, offset)` pairs, checked by [`check`].
fn check_random<T: Element>(seed: u64, tol: f64, data: &[(f64, f64)]) {
    let mut rng = Rng(seed);
    for b in Backend::supported() {
        for (rows, cols) in shapes() {
            for &(spread, offset) in data {
                let x: Vec<T> = random(&mut rng, rows * cols, spread, offset);
                check(b, &x, cols, tol, &format!("{offset} + {spread}·randn"));
            }
        }
    }
}

#[test]
fn float32_temperatures_keep_the_bounds() {
    check_random::<f32>(0x7E3A_11CE_5EED_0001, 2e-6, &[(3.0, 0.0), (1.0, 100.0)]);
}

#[test]
fn float64_temperatures_keep_the_bounds() {
    // At 1e4, x / T rounded in float64 would lose 2e-12: the difference comes first.
    check_random::<f64>(0x7E3A_11CE_5EED_0002, 1e-14, &[(3.0, 0.0), (3.0, 1e4)]);
}

/// Huge `|x|`: a rounded `x · s` is off by up to half an ulp of it (512 at 1e10 in float32), which
/// must not reach the exponents: ties give exactly `log 2`, neighbours a few ulp apart their exact
/// (mostly underflowing) probabilities, and nothing overflows.
fn check_huge<T: Element>(big: f64, ulp: f64, tol: f64) {
    let mut rng = Rng(0x7E3A_11CE_5EED_0003 ^ big.to_bits());
    for b in Backend::supported() {
        for t in TEMPS {
            let mut lsm = [T::ZERO; 2];
            let x = [T::from_f64(big); 2];
            softmax_scaled(
                b,
                Buf::Separate {
                    x: &x,
                    out: &mut lsm,
                },
                2,
                1.0 / t,
                Mode::LogSoftmax,
            )
            .unwrap();
            for v in lsm {
                let want = -std::f64::consts::LN_2;
                assert!((v.to_f64() - want).abs() <= tol, "{b:?} T={t}: {v:?}");
            }
        }
        for (rows, cols) in [(37, 5), (9, 64), (3, 1001), (2, 4099)] {
            for sign in [1.0, -1.0] {
                // Neighbours a few ulp apart (and a few of both signs far away).
                let x: Vec<T> = (0..rows * cols)
                    .map(|i| {
                        let k = (rng.next() * 7.0).floor() - 3.0;
                        let v = if i % 11 == 3 { -big } else { big + k * ulp };
                        T::from_f64(sign * v)
                    })
                    .collect();
                check(b, &x, cols, tol, &format!("±{big:e}"));
            }
        }
    }
}

#[test]
fn huge_inputs_with_a_temperature_do_not_overflow() {
    check_huge::<f32>(1e10, 1024.0, 2e-6);
    check_huge::<f64>(1e300, 1e300 * f64::EPSILON, 1e-14);
}

/// One row's expected special outputs with `y = x · s` rounded to `T` (docs/api.md §1: `x / T` is
/// `x · (1/T)` in the compute precision): `None` for a finite row, else `(softmax, lse)` for the
/// rows §3 names (NaN anywhere, `+inf`, only `-inf`).
fn special<T: Element>(row: &[T], s: T) -> Option<(f64, f64)> {
    let y: Vec<f64> = row.iter().map(|&v| (v * s).to_f64()).collect();
    if y.iter().any(|v| v.is_nan()) {
        Some((f64::NAN, f64::NAN))
    } else if y.contains(&f64::INFINITY) {
        Some((f64::NAN, f64::INFINITY))
    } else if y.iter().all(|&v| v == f64::NEG_INFINITY) {
        Some((f64::NAN, f64::NEG_INFINITY))
    } else {
        None
    }
}

/// The special values with a temperature on every path: NaN anywhere, `±inf` (softmin turns
/// `-inf` into the row's `+inf`), rows of only `-inf`, `x · s` overflowing `T` (a row holding an
/// infinity, as `x · (1/T)` evaluated in `T` says), and a `-inf` entry of a finite row.
fn check_specials<T: Element>(huge: f64) {
    let inf = f64::INFINITY;
    for b in Backend::supported() {
        let split: &[usize] = if cfg!(debug_assertions) {
            &[]
        } else {
            &[131_075]
        };
        for &cols in [5usize, 64, 1000, 4099].iter().chain(split) {
            for t in [1.0, 0.1, 0.7, -0.3] {
                let s = 1.0 / t;
                let base: Vec<f64> = (0..cols).map(|j| (j % 13) as f64 * 0.25 - 1.0).collect();
                let at = |pos: usize, v: f64| {
                    let mut r = base.clone();
                    r[pos] = v;
                    r
                };
                let rows: Vec<Vec<f64>> = vec![
                    at(cols / 2, f64::NAN),
                    at(cols - 1, inf),
                    at(0, -inf),
                    vec![-inf; cols],
                    vec![inf; cols],
                    at(cols / 3, huge),
                    at(cols / 3, -huge),
                    vec![-huge; cols],
                    vec![huge; cols],
                ];
                let x: Vec<T> = rows.concat().iter().map(|&v| T::from_f64(v)).collect();
                let [sm, lsm, lse] = run(b, &x, cols, s.into(), false);
                let hi = T::from_f64(s);
                for (r, row) in x.chunks_exact(cols).enumerate() {
                    let ctx = format!("{b:?} T={t} cols={cols} row {r}");
                    let got = &sm[r * cols..(r + 1) * cols];
                    let got_log = &lsm[r * cols..(r + 1) * cols];
                    let same = |a: f64, e: f64| a == e || (a.is_nan() && e.is_nan());
                    match special(row, hi) {
                        Some((p, l)) => {
                            assert!(got.iter().all(|&v| same(v, p)), "{ctx}: softmax {got:?}");
                            assert!(got_log.iter().all(|v| v.is_nan()), "{ctx}: log {got_log:?}");
                            // logsumexp is `lse(x·s) / s`: softmin's negative scale flips it.
                            let l = l / s;
                            assert!(same(lse[r], l), "{ctx}: logsumexp {} not {l}", lse[r]);
                        }
                        None => {
                            // Finite rows: entries whose x·s is -inf have probability 0.
                            let total: f64 = got.iter().sum();
                            assert!((total - 1.0).abs() < 1e-5, "{ctx}: sums to {total}");
                            for (j, &v) in row.iter().enumerate() {
                                if (v * hi).to_f64() == -inf {
                                    assert_eq!(got[j], 0.0, "{ctx}: softmax[{j}]");
                                    assert_eq!(got_log[j], -inf, "{ctx}: log_softmax[{j}]");
                                }
                            }
                            assert!(lse[r].is_finite(), "{ctx}: logsumexp {}", lse[r]);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn special_values_with_a_temperature() {
    // 1e38 · 10 overflows float32 (1e308 · 10 and · 3.3 float64): those rows hold an infinity.
    check_specials::<f32>(1e38);
    check_specials::<f64>(1e308);
}
