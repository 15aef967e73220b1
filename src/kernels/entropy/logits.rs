//! The logits paths of [`entropy`](super::entropy) and its KL divergence: the
//! row's maximum (pass 1), then `Σ exp(o − m)` and the weighted sum in one more pass while the row is
//! in cache (see the family's module doc).

use std::ops::Range;

use super::WEIGHTED_VECTORS;
use crate::kernels::driver::{self, Kernel, PerRow, Rows, Segments};
use crate::kernels::row::{finish_lse, finish_lse_on, max_mapped, Lse, Scale, Total};
use crate::simd::{Backend, Element, Simd};

/// Rows of logits `o` (and `r` for a divergence), `cols` each.
pub(super) struct Logits<'a, T> {
    pub o: &'a [T],
    pub r: Option<&'a [T]>,
    pub cols: usize,
    pub out: PerRow<T>,
}

impl<'a, T: Element> Logits<'a, T> {
    /// Columns `seg` of row `row` of `o` and `r`.
    #[inline(always)]
    fn rows_of(&self, row: usize, seg: Range<usize>) -> (&'a [T], Option<&'a [T]>) {
        let (start, end) = (row * self.cols + seg.start, row * self.cols + seg.end);
        (&self.o[start..end], self.r.map(|r| &r[start..end]))
    }
}

impl<T: Element> Rows<T> for Logits<'_, T> {
    type Out = ();
    #[inline(always)]
    fn rows<S: Simd<T>>(&self, s: S, rows: Range<usize>) {
        // Plain loops, not iterator closures: closures are not compiled for the instruction set.
        for row in rows {
            let v = match self.rows_of(row, 0..self.cols) {
                (o, None) => entropy_logits(s, o),
                (o, Some(r)) => kl_logits(s, o, r),
            };
            // SAFETY: the driver hands row `row` to this task alone.
            unsafe { self.out.put(row, v) };
        }
    }
}

/// A split row: the maxima per segment, then (on the calling thread, which hands the segments out
/// again) the sums per segment given the row's maxima, merged in order.
impl<T: Element> Kernel<T> for Logits<'_, T> {
    /// The segment's maxima of `o` and `r` (`-inf` for `r` when there is none).
    type Part = (T, T);
    type Fin = ();

    #[inline(always)]
    fn part<S: Simd<T>>(&self, s: S, row: usize, seg: Range<usize>) -> (T, T) {
        let (o, r) = self.rows_of(row, seg);
        let mr = r.map_or(T::NEG_INFINITY, |r| max_mapped(s, &Scale::exact(T::ONE), r));
        (max_mapped(s, &Scale::exact(T::ONE), o), mr)
    }

    fn finish(&self, backend: Backend, row: usize, parts: &[(T, T)]) {
        let (mut mo, mut mr) = (T::NEG_INFINITY, T::NEG_INFINITY);
        for &(po, pr) in parts {
            // NaN never wins here; the sums catch it.
            if po > mo {
                mo = po;
            }
            if pr > mr {
                mr = pr;
            }
        }
        let (o, r) = self.rows_of(row, 0..self.cols);
        let v = match maxima(mo, r.map(|_| mr)) {
            None => f64::NAN,
            Some((mo, mr)) => {
                let parts = driver::map_segments(backend, self.cols, &Weighted { o, r, mo, mr });
                let mut tot = [Total::default(); 3];
                for part in parts {
                    tot[0].add(part.so);
                    tot[1].add(part.w);
                    tot[2].add(part.sr);
                }
                let sums = Sums {
                    so: tot[0].value(),
                    w: tot[1].value(),
                    sr: tot[2].value(),
                };
                let lo = finish_lse_on(backend, o, Scale::exact(T::ONE), mo, sums.so);
                let lr = r.map(|r| finish_lse_on(backend, r, Scale::exact(T::ONE), mr, sums.sr));
                finish_logits(lo, lr, sums)
            }
        };
        // SAFETY: split rows are finished one at a time, on the calling thread.
        unsafe { self.out.put(row, v) };
    }
}

/// [`weighted`] on a segment of a split row, given the row's maxima.
struct Weighted<'a, T> {
    o: &'a [T],
    r: Option<&'a [T]>,
    mo: T,
    mr: T,
}

impl<T: Element> Segments<T> for Weighted<'_, T> {
    type Out = Sums;
    #[inline(always)]
    fn segment<S: Simd<T>>(&self, s: S, seg: Range<usize>) -> Sums {
        weighted(
            s,
            &self.o[seg.clone()],
            self.r.map(|r| &r[seg]),
            self.mo,
            self.mr,
        )
    }
}

/// The maxima of a logits row (pair); `None` when one is not finite: a row of only `-inf`, or
/// holding `+inf` or a NaN the maximum sees, has no softmax (docs/api.md §3), so its entropy or
/// divergence is NaN.
#[inline(always)]
fn maxima<T: Element>(mo: T, mr: Option<T>) -> Option<(T, T)> {
    let fin = |m: T| m.to_f64().is_finite();
    match mr {
        None if fin(mo) => Some((mo, T::ZERO)),
        Some(mr) if fin(mo) && fin(mr) => Some((mo, mr)),
        _ => None,
    }
}

/// Finishes a logits row from its maxima and [`Sums`]: `H = log_sum + w / sum` (entropy) or
/// `KL = w / sum_o + (log_sum_r − log_sum_o)`. `finish` turns `(m, sum)` into an [`Lse`] (SciPy's
/// `log1p` refinement, NaN for a NaN anywhere in the row).
#[inline(always)]
fn finish_logits(lo: Lse, lr: Option<Lse>, sums: Sums) -> f64 {
    match lr {
        None => lo.log_sum + sums.w / sums.so,
        Some(lr) => sums.w / sums.so + (lr.log_sum - lo.log_sum),
    }
}

/// `H[softmax(o)]` of one row.
#[inline(always)]
fn entropy_logits<T: Element, S: Simd<T>>(s: S, o: &[T]) -> f64 {
    let p = Scale::exact(T::ONE);
    let Some((mo, _)) = maxima(max_mapped(s, &p, o), None) else {
        return f64::NAN;
    };
    let sums = weighted(s, o, None, mo, T::ZERO);
    finish_logits(finish_lse(s, &p, o, mo, sums.so), None, sums)
}

/// `KL(softmax(o) ‖ softmax(r))` of one row pair.
#[inline(always)]
fn kl_logits<T: Element, S: Simd<T>>(s: S, o: &[T], r: &[T]) -> f64 {
    let p = Scale::exact(T::ONE);
    let Some((mo, mr)) = maxima(max_mapped(s, &p, o), Some(max_mapped(s, &p, r))) else {
        return f64::NAN;
    };
    let sums = weighted(s, o, Some(r), mo, mr);
    let lo = finish_lse(s, &p, o, mo, sums.so);
    let lr = finish_lse(s, &p, r, mr, sums.sr);
    finish_logits(lo, Some(lr), sums)
}

/// The sums of one logits row (or segment): `so = Σ exp(o − mo)`, `w = Σ e_j d_j`, and for a
/// divergence `sr = Σ exp(r − mr)`.
#[derive(Clone, Copy, Default)]
struct Sums {
    so: f64,
    w: f64,
    sr: f64,
}

/// [`Sums`] over a row or segment, where `e_j = exp(o_j − mo)` and `d_j = mo − o_j` (entropy, `r`
/// absent) or `d_j = (o_j − mo) − (r_j − mr)` (divergence). Terms with `e_j = 0` add 0 to `w` whatever
/// `d_j` is (SciPy's `0 · log 0 = 0`). The exp-sums are formed here, in the same short partial sums,
/// rather than taken from the shared `max_sum` (whose block sums are longer).
#[inline(always)]
fn weighted<T: Element, S: Simd<T>>(s: S, o: &[T], r: Option<&[T]>, mo: T, mr: T) -> Sums {
    let l = S::LANES;
    let neg_mo = s.splat(-mo);
    let neg_mr = s.splat(-mr);
    let zero = s.splat(T::ZERO);
    let mut tot = [Total::default(); 3];
    let chunk = WEIGHTED_VECTORS * l;
    let mut start = 0;
    while start < o.len() {
        let end = (start + chunk).min(o.len());
        let ob = &o[start..end];
        let rb = r.map(|r| &r[start..end]);
        let mut a = [zero; 6];
        let mut i = 0;
        while i + 2 * l <= ob.len() {
            let r0 = load_opt(s, rb, i);
            let r1 = load_opt(s, rb, i + l);
            add3(
                s,
                &mut a,
                0,
                term(s, s.load(&ob[i..i + l]), r0, neg_mo, neg_mr),
            );
            add3(
                s,
                &mut a,
                1,
                term(s, s.load(&ob[i + l..i + 2 * l]), r1, neg_mo, neg_mr),
            );
            i += 2 * l;
        }
        if i + l <= ob.len() {
            let r0 = load_opt(s, rb, i);
            add3(
                s,
                &mut a,
                0,
                term(s, s.load(&ob[i..i + l]), r0, neg_mo, neg_mr),
            );
            i += l;
        }
        if i < ob.len() {
            // Lanes past the tail hold o = r = -inf: e = 0, so they add 0.
            let ov = s.load_partial(&ob[i..], T::NEG_INFINITY);
            let rv = match rb {
                Some(rb) => Some(s.load_partial(&rb[i..], T::NEG_INFINITY)),
                None => None,
            };
            add3(s, &mut a, 1, term(s, ov, rv, neg_mo, neg_mr));
        }
        for (k, t) in tot.iter_mut().enumerate() {
            t.add(s.reduce_sum(s.add(a[2 * k], a[2 * k + 1])).to_f64());
        }
        start = end;
    }
    Sums {
        so: tot[0].value(),
        w: tot[1].value(),
        sr: tot[2].value(),
    }
}

/// `x - m` with its rounding error (TwoSum): far from the maximum the float32 difference loses up to
/// half an ulp of |x - m|, which a divergence of nearly equal distributions would feel. These
/// helpers are functions, not closures: closures are not compiled for the caller's instruction set.
#[inline(always)]
fn diff<T: Element, S: Simd<T>>(s: S, x: S::V, neg_m: S::V) -> (S::V, S::V) {
    let d = s.add(x, neg_m);
    let bb = s.sub(d, x);
    let err = s.add(s.sub(x, s.sub(d, bb)), s.sub(neg_m, bb));
    // Infinite `x` makes `err` NaN; its difference is exact.
    (d, s.select_eq(err, err, err, s.splat(T::ZERO)))
}

/// `(e_o, e_o·d, e_r)` of one vector (see [`weighted`]).
#[inline(always)]
fn term<T: Element, S: Simd<T>>(
    s: S,
    ov: S::V,
    rv: Option<S::V>,
    neg_mo: S::V,
    neg_mr: S::V,
) -> (S::V, S::V, S::V) {
    let zero = s.splat(T::ZERO);
    let (d, err) = diff(s, ov, neg_mo);
    let e = s.exp(d);
    let (d, er) = match rv {
        None => (s.sub(s.sub(zero, d), err), zero),
        Some(rv) => {
            let (dr, err_r) = diff(s, rv, neg_mr);
            (s.add(s.sub(d, dr), s.sub(err, err_r)), s.exp(dr))
        }
    };
    (e, s.select_eq(e, zero, zero, s.mul(e, d)), er)
}

/// `r[i..i + LANES]` as a vector when there is an `r`.
#[inline(always)]
fn load_opt<T: Element, S: Simd<T>>(s: S, r: Option<&[T]>, i: usize) -> Option<S::V> {
    match r {
        Some(r) => Some(s.load(&r[i..i + S::LANES])),
        None => None,
    }
}

/// Adds a `term` to accumulator set `k` (0 or 1) of `a`: `a[k]` exp-sums of `o`, `a[k + 2]` the
/// weighted sums, `a[k + 4]` exp-sums of `r`.
#[inline(always)]
fn add3<T: Element, S: Simd<T>>(s: S, a: &mut [S::V; 6], k: usize, t: (S::V, S::V, S::V)) {
    a[k] = s.add(a[k], t.0);
    a[k + 2] = s.add(a[k + 2], t.1);
    a[k + 4] = s.add(a[k + 4], t.2);
}
