//! Shannon entropy and Kullback–Leibler divergence per row, on probabilities or on logits.
//!
//! - `entropy`, probabilities: `H = −Σ p log p` with SciPy's `entr` convention per element (`0·log 0 =
//!   0`, `p < 0 → −inf`); no normalisation of `p`.
//! - `entropy`, logits `o`: `H[softmax(o)] = lse(o) − Σ p·o`, formed as `log_sum + Σ e_j (m − o_j) / sum`
//!   with `e_j = exp(o_j − m)`: two non-negative terms, so nothing cancels, and `log_sum` keeps
//!   SciPy's `log1p` refinement for float64 (a row with one dominant entry has a tiny entropy).
//! - with `q`, the KL divergence, probabilities: `Σ p log(p/q)` with SciPy's `rel_entr` convention (`p = 0, q ≥ 0 →
//!   0`; `p > 0, q = 0 → +inf`; a negative entry → `+inf`).
//! - with `q`, the KL divergence, logits `o`, `r`: `Σ p_o (log p_o − log q_r)` =
//!   `Σ e_j ((o_j − m_o) − (r_j − m_r)) / sum_o + (log_sum_r − log_sum_o)`.
//!
//! The logits paths are generic over the SIMD layer (pass 1: the row's maximum; pass 2 while the row
//! is in cache: `Σ exp(o − m)` and the weighted sum, in short float32 partial sums added in f64).
//! The probability paths use the vector `ln` (≤ 1 ulp on every backend) in the element type, in
//! short partial sums ([`WEIGHTED_VECTORS`] vectors) added in f64 with compensation. A chunk whose
//! vector sum is not finite, or that holds a negative or NaN entry (`rel_entr`), is recomputed
//! element by element in f64 ([`entr`], [`rel_entr`]), so SciPy's rules hold exactly (and a float32
//! `p/q` that overflows is redone in f64): the vector terms only need `0 · log 0 = 0` (a select).
//! Each result is multiplied by `scale` (`1 / ln(base)`, or 1 for nats).
//!
//! [`probs`] holds the probability paths, [`logits`] the logits paths.

mod logits;
mod probs;

use super::driver::{self, PerRow};
use crate::simd::{Backend, Element};
use crate::KernelError;

/// What the rows hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Probabilities (used as given, not renormalised).
    Probs,
    /// Logits: the distribution is their softmax.
    Logits,
}

/// `out[r] = scale · H(p[r, :])` for the `rows × cols` matrix `p` (`out.len()` rows), or with `q` (a
/// second `rows × cols` matrix) `scale · KL(p[r, :] ‖ q[r, :])`. An empty row (`cols == 0`) gives 0
/// (an empty sum).
pub fn entropy<T: Element>(
    backend: Backend,
    p: &[T],
    q: Option<&[T]>,
    cols: usize,
    input: Input,
    scale: f64,
    out: &mut [T],
) -> Result<(), KernelError> {
    if let Some(q) = q.filter(|q| q.len() != p.len()) {
        let msg = format!("p has {} elements, q has {}", p.len(), q.len());
        return Err(KernelError::Shape(msg));
    }
    let rows = driver::reduced_rows(p.len(), cols, out.len())?;
    run(backend, p, q, rows, cols, input, PerRow::new(out, scale));
    Ok(())
}

/// The rows of `a` (and `b` for a divergence), `cols` each, on the kernel of `input`.
fn run<T: Element>(
    backend: Backend,
    a: &[T],
    b: Option<&[T]>,
    rows: usize,
    cols: usize,
    input: Input,
    out: PerRow<T>,
) {
    if cols == 0 {
        for r in 0..rows {
            // SAFETY: nothing else runs; an empty sum is 0.
            unsafe { out.put(r, 0.0) };
        }
        return;
    }
    match input {
        Input::Probs => driver::run(
            backend,
            &probs::Probs {
                p: a,
                q: b,
                cols,
                out,
            },
            rows,
            cols,
        ),
        Input::Logits => driver::run(
            backend,
            &logits::Logits {
                o: a,
                r: b,
                cols,
                out,
            },
            rows,
            cols,
        ),
    }
}

/// Vectors per float32 partial sum before it is added to the f64 totals (both halves use it): the terms of a
/// divergence have both signs, and the scalar backend adds one element at a time, so the float32
/// partial sums are kept short (16 vectors: 8 terms per accumulator lane) to keep their rounding far
/// below the 2e-6 bound; one horizontal sum per 16 vectors costs little next to the `exp`s.
const WEIGHTED_VECTORS: usize = 16;

#[cfg(test)]
mod tests {
    use super::probs::{entr, entr_exact, rel_entr, rel_entr_exact};
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f64> {
        crate::kernels::testing::data(n, seed, 4.0)
    }

    fn log_softmax(r: &[f64]) -> Vec<f64> {
        let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let l = r.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        r.iter().map(|v| v - m - l).collect()
    }

    fn check<T: Element>(tol: f64) {
        for &cols in &[1usize, 2, 7, 16, 17, 33, 257, 2049, 4099] {
            let rows = 3;
            let o64 = data(rows * cols, cols as u64);
            let r64 = data(rows * cols, cols as u64 + 11);
            let o: Vec<T> = o64.iter().map(|&v| T::from_f64(v)).collect();
            let r: Vec<T> = r64.iter().map(|&v| T::from_f64(v)).collect();
            let (mut h_ref, mut kl_ref, mut hp_ref, mut klp_ref) = (vec![], vec![], vec![], vec![]);
            let mut p: Vec<T> = Vec::new();
            let mut q: Vec<T> = Vec::new();
            for i in 0..rows {
                let ow = crate::kernels::testing::row_f64(&o, i, cols);
                let rw = crate::kernels::testing::row_f64(&r, i, cols);
                let (lp, lq) = (log_softmax(&ow), log_softmax(&rw));
                h_ref.push(-lp.iter().map(|l| l.exp() * l).sum::<f64>());
                kl_ref.push(
                    lp.iter()
                        .zip(&lq)
                        .map(|(a, b)| a.exp() * (a - b))
                        .sum::<f64>(),
                );
                let pr: Vec<T> = lp.iter().map(|l| T::from_f64(l.exp())).collect();
                let qr: Vec<T> = lq.iter().map(|l| T::from_f64(l.exp())).collect();
                hp_ref.push(pr.iter().map(|v| entr(v.to_f64())).sum::<f64>());
                klp_ref.push(
                    pr.iter()
                        .zip(&qr)
                        .map(|(a, b)| rel_entr(a.to_f64(), b.to_f64()))
                        .sum::<f64>(),
                );
                p.extend(pr);
                q.extend(qr);
            }
            for b in Backend::supported() {
                let mut out = vec![T::ZERO; rows];
                let cmp = |got: &[T], want: &[f64], what: &str| {
                    for (g, w) in got.iter().zip(want) {
                        let g = g.to_f64();
                        assert!(
                            (g - w).abs() <= tol * w.abs().max(1.0),
                            "{b:?} {what} cols={cols}: {g} vs {w}"
                        );
                    }
                };
                entropy(b, &o, None, cols, Input::Logits, 1.0, &mut out).unwrap();
                cmp(&out, &h_ref, "H logits");
                entropy(b, &o, Some(&r), cols, Input::Logits, 1.0, &mut out).unwrap();
                cmp(&out, &kl_ref, "KL logits");
                entropy(b, &p, None, cols, Input::Probs, 1.0, &mut out).unwrap();
                cmp(&out, &hp_ref, "H probs");
                entropy(b, &p, Some(&q), cols, Input::Probs, 1.0, &mut out).unwrap();
                cmp(&out, &klp_ref, "KL probs");
            }
        }
    }

    #[test]
    fn matches_f64_reference_on_every_backend() {
        check::<f32>(2e-6);
        check::<f64>(1e-13);
    }

    /// Special entries (0, negative, NaN, inf, q = 0) at every position of rows of several lengths,
    /// on every backend: the result follows SciPy's element rules, as the f64 element-wise sum does.
    fn check_special_entries<T: Element>() {
        let specials = [0.0, -0.25, f64::NAN, f64::INFINITY, 1e-42, 0.0];
        for cols in [1usize, 5, 16, 37, 300] {
            for pos in [0, cols / 2, cols - 1] {
                for (k, &sp) in specials.iter().enumerate() {
                    for target in 0..3 {
                        // target 0: p has the special, 1: q has it, 2: p = 0.3 and q = special.
                        let mut p: Vec<T> = (0..cols)
                            .map(|j| T::from_f64((j as f64 + 1.0) / (cols * cols) as f64))
                            .collect();
                        let mut q: Vec<T> = p.iter().rev().cloned().collect();
                        match target {
                            0 => p[pos] = T::from_f64(sp),
                            1 => q[pos] = T::from_f64(sp),
                            _ => {
                                p[pos] = T::from_f64(0.3);
                                q[pos] = T::from_f64(if k == 5 { 0.0 } else { sp });
                            }
                        }
                        let h_ref = entr_exact(&p);
                        let kl_ref = rel_entr_exact(&p, &q);
                        for b in Backend::supported() {
                            let mut out = [T::ZERO];
                            entropy(b, &p, None, cols, Input::Probs, 1.0, &mut out).unwrap();
                            let got = out[0].to_f64();
                            let same = |g: f64, w: f64| {
                                (g.is_nan() && w.is_nan())
                                    || g == w
                                    || (g - w).abs() <= 1e-6 * w.abs().max(1e-30)
                            };
                            assert!(same(got, h_ref), "{b:?} H {p:?}: {got} vs {h_ref}");
                            entropy(b, &p, Some(&q), cols, Input::Probs, 1.0, &mut out).unwrap();
                            let got = out[0].to_f64();
                            assert!(same(got, kl_ref), "{b:?} KL {p:?} {q:?}: {got} vs {kl_ref}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn special_entries_on_every_backend() {
        check_special_entries::<f32>();
        check_special_entries::<f64>();
    }

    #[test]
    fn conventions() {
        assert_eq!(entr(0.0), 0.0);
        assert_eq!(entr(-1.0), f64::NEG_INFINITY);
        assert!(entr(f64::NAN).is_nan());
        assert_eq!(rel_entr(0.0, 0.0), 0.0);
        assert_eq!(rel_entr(1.0, 0.0), f64::INFINITY);
        assert_eq!(rel_entr(-1.0, 1.0), f64::INFINITY);
        assert!(rel_entr(f64::NAN, 1.0).is_nan());
        let mut out = [1.0f64; 2];
        entropy(Backend::Scalar, &[], None, 0, Input::Logits, 1.0, &mut out).unwrap();
        assert_eq!(out, [0.0, 0.0]);
        assert!(entropy(
            Backend::Scalar,
            &[0.0f64; 5],
            None,
            2,
            Input::Probs,
            1.0,
            &mut out
        )
        .is_err());
    }
}
