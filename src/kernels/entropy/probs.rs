//! The probability paths of [`entropy`](super::entropy) and its KL divergence:
//! SciPy's `entr` and `rel_entr` per element, summed per row (see the family's module doc).

use std::ops::Range;

use super::WEIGHTED_VECTORS;
use crate::kernels::driver::{Kernel, PerRow, Rows};
use crate::kernels::row::Total;
use crate::simd::{Backend, Element, Simd};

/// Rows of probabilities `p` (and `q` for a divergence), `cols` each.
pub(super) struct Probs<'a, T> {
    pub p: &'a [T],
    pub q: Option<&'a [T]>,
    pub cols: usize,
    pub out: PerRow<T>,
}

impl<T: Element> Probs<'_, T> {
    /// `Σ entr(p)` or `Σ rel_entr(p, q)` over columns `seg` of row `r`.
    #[inline(always)]
    fn sum<S: Simd<T>>(&self, s: S, r: usize, seg: Range<usize>) -> f64 {
        let (start, end) = (r * self.cols + seg.start, r * self.cols + seg.end);
        match self.q {
            None => entr_sum(s, &self.p[start..end]),
            Some(q) => rel_entr_sum(s, &self.p[start..end], &q[start..end]),
        }
    }
}

impl<T: Element> Rows<T> for Probs<'_, T> {
    type Out = ();
    #[inline(always)]
    fn rows<S: Simd<T>>(&self, s: S, rows: Range<usize>) {
        // Plain loops, not iterator closures: closures are not compiled for the instruction set.
        for r in rows {
            let v = self.sum(s, r, 0..self.cols);
            // SAFETY: the driver hands row `r` to this task alone.
            unsafe { self.out.put(r, v) };
        }
    }
}

/// A split row: the sum per segment, added in order.
impl<T: Element> Kernel<T> for Probs<'_, T> {
    type Part = f64;
    type Fin = ();

    #[inline(always)]
    fn part<S: Simd<T>>(&self, s: S, row: usize, seg: Range<usize>) -> f64 {
        self.sum(s, row, seg)
    }

    fn finish(&self, _backend: Backend, row: usize, parts: &[f64]) {
        // SAFETY: split rows are finished one at a time, on the calling thread.
        unsafe { self.out.put(row, Total::of(parts.iter().copied())) };
    }
}

/// SciPy's `entr(p)`: `−p log p` for `p > 0`, 0 at 0, `−inf` for `p < 0`, NaN for NaN.
#[inline(always)]
pub(super) fn entr(p: f64) -> f64 {
    if p > 0.0 {
        -p * p.ln()
    } else if p == 0.0 {
        0.0
    } else if p < 0.0 {
        f64::NEG_INFINITY
    } else {
        f64::NAN
    }
}

/// SciPy's `rel_entr(p, q)`: `p log(p/q)` for `p, q > 0`, 0 for `p = 0, q ≥ 0`, `+inf` otherwise,
/// NaN when either is NaN.
#[inline(always)]
pub(super) fn rel_entr(p: f64, q: f64) -> f64 {
    if p.is_nan() || q.is_nan() {
        f64::NAN
    } else if p > 0.0 && q > 0.0 {
        p * (p / q).ln()
    } else if p == 0.0 && q >= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// `Σ entr(p)` in f64, element by element: the exact path for chunks with special entries.
pub(super) fn entr_exact<T: Element>(p: &[T]) -> f64 {
    let mut acc = Total::default();
    for v in p {
        acc.add(entr(v.to_f64()));
    }
    acc.value()
}

/// `Σ rel_entr(p, q)` in f64, element by element.
pub(super) fn rel_entr_exact<T: Element>(p: &[T], q: &[T]) -> f64 {
    let mut acc = Total::default();
    for (a, b) in p.iter().zip(q) {
        acc.add(rel_entr(a.to_f64(), b.to_f64()));
    }
    acc.value()
}

/// `−p·ln p` per lane, 0 where `p = 0` (NaN for `p < 0`: the caller falls back to [`entr_exact`]).
#[inline(always)]
fn entr_v<T: Element, S: Simd<T>>(s: S, p: S::V) -> S::V {
    let zero = s.splat(T::ZERO);
    s.select_eq(p, zero, zero, s.mul(s.sub(zero, p), s.ln(p)))
}

/// `p·ln(p/q)` per lane, 0 where `p = 0` (the caller has checked `p, q ≥ 0`).
#[inline(always)]
fn rel_entr_v<T: Element, S: Simd<T>>(s: S, p: S::V, q: S::V) -> S::V {
    let zero = s.splat(T::ZERO);
    s.select_eq(p, zero, zero, s.mul(p, s.ln(s.div(p, q))))
}

/// `Σ entr(p)`: vector terms in short partial sums (see the module doc), added in f64.
#[inline(always)]
fn entr_sum<T: Element, S: Simd<T>>(s: S, p: &[T]) -> f64 {
    let l = S::LANES;
    let zero = s.splat(T::ZERO);
    let mut acc = Total::default();
    for c in p.chunks(WEIGHTED_VECTORS * l) {
        let (mut a0, mut a1) = (zero, zero);
        let mut i = 0;
        while i + 2 * l <= c.len() {
            a0 = s.add(a0, entr_v(s, s.load(&c[i..i + l])));
            a1 = s.add(a1, entr_v(s, s.load(&c[i + l..i + 2 * l])));
            i += 2 * l;
        }
        if i + l <= c.len() {
            a0 = s.add(a0, entr_v(s, s.load(&c[i..i + l])));
            i += l;
        }
        if i < c.len() {
            // Padding lanes hold p = 0: they add 0.
            a1 = s.add(a1, entr_v(s, s.load_partial(&c[i..], T::ZERO)));
        }
        let v = s.reduce_sum(s.add(a0, a1)).to_f64();
        acc.add(if v.is_finite() { v } else { entr_exact(c) });
    }
    acc.value()
}

/// `Σ rel_entr(p, q)`, as [`entr_sum`]; a chunk holding an entry that is negative or NaN goes the
/// exact way.
#[inline(always)]
fn rel_entr_sum<T: Element, S: Simd<T>>(s: S, p: &[T], q: &[T]) -> f64 {
    let l = S::LANES;
    let zero = s.splat(T::ZERO);
    let mut acc = Total::default();
    let chunk = WEIGHTED_VECTORS * l;
    for (pc, qc) in p.chunks(chunk).zip(q.chunks(chunk)) {
        let mut ok = true;
        for (a, b) in pc.iter().zip(qc) {
            ok &= (*a >= T::ZERO) & (*b >= T::ZERO);
        }
        if !ok {
            acc.add(rel_entr_exact(pc, qc));
            continue;
        }
        let (mut a0, mut a1) = (zero, zero);
        let mut i = 0;
        while i + 2 * l <= pc.len() {
            let t0 = rel_entr_v(s, s.load(&pc[i..i + l]), s.load(&qc[i..i + l]));
            let t1 = rel_entr_v(
                s,
                s.load(&pc[i + l..i + 2 * l]),
                s.load(&qc[i + l..i + 2 * l]),
            );
            a0 = s.add(a0, t0);
            a1 = s.add(a1, t1);
            i += 2 * l;
        }
        if i + l <= pc.len() {
            a0 = s.add(
                a0,
                rel_entr_v(s, s.load(&pc[i..i + l]), s.load(&qc[i..i + l])),
            );
            i += l;
        }
        if i < pc.len() {
            // Padding lanes hold p = 0, q = 1: they add 0.
            let t = rel_entr_v(
                s,
                s.load_partial(&pc[i..], T::ZERO),
                s.load_partial(&qc[i..], T::ONE),
            );
            a1 = s.add(a1, t);
        }
        let v = s.reduce_sum(s.add(a0, a1)).to_f64();
        // Not finite: a q = 0, an overflow of p/q or of the float32 partial sums (the exact path
        // divides in f64).
        acc.add(if v.is_finite() {
            v
        } else {
            rel_entr_exact(pc, qc)
        });
    }
    acc.value()
}
