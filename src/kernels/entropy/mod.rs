//! Shannon entropy and Kullback–Leibler divergence per row, on probabilities or on logits.
//!
//! - `entropy`, probabilities: `H = −Σ p log p` with SciPy's `entr` convention per element (`0·log 0 =
//!   0`, `p < 0 → −inf`); no normalisation of `p`.
//! - `entropy`, logits `o`: `H[softmax(o)] = lse(o) − Σ p·o`, formed as `log_sum + Σ e_j (m − o_j) / sum`
//!   with `e_j = exp(o_j − m)`: two non-negative terms, so nothing cancels, and `log_sum` keeps
//!   SciPy's `log1p` refinement for float64 (a row with one dominant entry has a tiny entropy).
//! - `kl_divergence`, probabilities: `Σ p log(p/q)` with SciPy's `rel_entr` convention (`p = 0, q ≥ 0 →
//!   0`; `p > 0, q = 0 → +inf`; a negative entry → `+inf`).
//! - `kl_divergence`, logits `o`, `r`: `Σ p_o (log p_o − log q_r)` =
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

use super::backward::Total;
use super::softmax::FinishLse;
use super::{finish_lse, max_mapped, Lse, Scale, SendPtr};
use crate::parallel::{chunk_rows, for_ranges, map_ranges, split_rows, SEGMENT};
use crate::simd::{Backend, Element, Isa, Simd, WithSimd};
use crate::KernelError;

/// What the rows hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Probabilities (used as given, not renormalised).
    Probs,
    /// Logits: the distribution is their softmax.
    Logits,
}

/// `out[r] = scale · H(x[r, :])` for the `rows × cols` matrix `x` (`out.len()` rows). An empty row
/// (`cols == 0`) has entropy 0 (an empty sum).
pub fn entropy<T: Element>(
    backend: Backend,
    x: &[T],
    cols: usize,
    input: Input,
    scale: f64,
    out: &mut [T],
) -> Result<(), KernelError> {
    let rows = check_rows(x.len(), cols, out.len())?;
    run_rows(backend, rows, cols, out, scale, |range| Job {
        a: &x[range.start * cols..range.end * cols],
        b: None,
        cols,
        input,
    })
}

/// `out[r] = scale · KL(p[r, :] ‖ q[r, :])` for two `rows × cols` matrices. An empty row gives 0.
pub fn kl_divergence<T: Element>(
    backend: Backend,
    p: &[T],
    q: &[T],
    cols: usize,
    input: Input,
    scale: f64,
    out: &mut [T],
) -> Result<(), KernelError> {
    if p.len() != q.len() {
        return Err(KernelError::Shape(format!(
            "p has {} elements, q has {}",
            p.len(),
            q.len()
        )));
    }
    let rows = check_rows(p.len(), cols, out.len())?;
    run_rows(backend, rows, cols, out, scale, |range| Job {
        a: &p[range.start * cols..range.end * cols],
        b: Some(&q[range.start * cols..range.end * cols]),
        cols,
        input,
    })
}

fn check_rows(n: usize, cols: usize, out_len: usize) -> Result<usize, KernelError> {
    let rows = n.checked_div(cols).unwrap_or(out_len);
    if (cols == 0 && n != 0) || (cols != 0 && !n.is_multiple_of(cols)) || rows != out_len {
        return Err(KernelError::Shape(format!(
            "{n} elements in rows of {cols} do not match an output of {out_len} rows"
        )));
    }
    Ok(rows)
}

/// Runs the job of each range of rows (in parallel when large), or splits huge rows into segments.
fn run_rows<'a, T: Element>(
    backend: Backend,
    rows: usize,
    cols: usize,
    out: &mut [T],
    scale: f64,
    job: impl Fn(std::ops::Range<usize>) -> Job<'a, T> + Sync + Send,
) -> Result<(), KernelError> {
    if cols == 0 {
        out.fill(T::ZERO);
        return Ok(());
    }
    if split_rows(cols) {
        for (r, o) in out.iter_mut().enumerate() {
            *o = T::from_f64(split_row(backend, job(r..r + 1)) * scale);
        }
        return Ok(());
    }
    let out_ptr = SendPtr(out.as_mut_ptr());
    for_ranges(rows, chunk_rows(cols), rows * cols, |range| {
        // SAFETY: each task writes its own rows of `out`.
        let o = unsafe { out_ptr.add(range.start).slice_mut(range.len()) };
        let values = backend.dispatch(job(range));
        for (o, v) in o.iter_mut().zip(values) {
            *o = T::from_f64(v * scale);
        }
    });
    Ok(())
}

/// Rows of `a` (and `b` for a divergence), `cols` each.
struct Job<'a, T> {
    a: &'a [T],
    b: Option<&'a [T]>,
    cols: usize,
    input: Input,
}

impl<T: Element> WithSimd for Job<'_, T> {
    type Output = Vec<f64>;
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) -> Vec<f64> {
        let s = T::simd(s);
        // Plain loops, not iterator closures: closures are not compiled for the instruction set.
        let (cols, rows) = (self.cols, self.a.len() / self.cols);
        let mut out = Vec::with_capacity(rows);
        for i in 0..rows {
            let a = &self.a[i * cols..(i + 1) * cols];
            let v = match (self.b, self.input) {
                (None, Input::Probs) => entr_sum(s, a),
                (None, Input::Logits) => entropy_logits(s, a),
                (Some(b), Input::Probs) => rel_entr_sum(s, a, &b[i * cols..(i + 1) * cols]),
                (Some(b), Input::Logits) => kl_logits(s, a, &b[i * cols..(i + 1) * cols]),
            };
            out.push(v);
        }
        out
    }
}

/// SciPy's `entr(p)`: `−p log p` for `p > 0`, 0 at 0, `−inf` for `p < 0`, NaN for NaN.
#[inline(always)]
fn entr(p: f64) -> f64 {
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
fn rel_entr(p: f64, q: f64) -> f64 {
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
fn entr_exact<T: Element>(p: &[T]) -> f64 {
    let mut acc = Total::default();
    for v in p {
        acc.add(entr(v.to_f64()));
    }
    acc.value()
}

/// `Σ rel_entr(p, q)` in f64, element by element.
fn rel_entr_exact<T: Element>(p: &[T], q: &[T]) -> f64 {
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

/// The maxima of a logits row (pair); `None` when one is not finite: a row of only `-inf`, or
/// holding `+inf` or a NaN the maximum sees, has no softmax (API.md §3), so its entropy or
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
    let p = Scale(T::ONE);
    let Some((mo, _)) = maxima(max_mapped(s, &p, o), None) else {
        return f64::NAN;
    };
    let sums = weighted(s, o, None, mo, T::ZERO);
    finish_logits(finish_lse(s, &p, o, mo, sums.so), None, sums)
}

/// `KL(softmax(o) ‖ softmax(r))` of one row pair.
#[inline(always)]
fn kl_logits<T: Element, S: Simd<T>>(s: S, o: &[T], r: &[T]) -> f64 {
    let p = Scale(T::ONE);
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

/// Vectors per partial sum of [`weighted`] before it is added to the f64 totals: the terms of a
/// divergence have both signs, and the scalar backend adds one element at a time, so the float32
/// partial sums are kept short (16 vectors: 8 terms per accumulator lane) to keep their rounding far
/// below the 2e-6 bound; one horizontal sum per 16 vectors costs little next to the `exp`s.
const WEIGHTED_VECTORS: usize = 16;

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

/// One huge row (`job` holds exactly one): maxima, then sums per fixed segment in parallel, merged
/// in order.
fn split_row<T: Element>(backend: Backend, job: Job<'_, T>) -> f64 {
    let cols = job.cols;
    let sum_parts = |parts: Vec<f64>| {
        let mut acc = Total::default();
        for v in parts {
            acc.add(v);
        }
        acc.value()
    };
    let p = Scale(T::ONE);
    let max = |x: &[T]| {
        let parts = map_ranges(cols, SEGMENT, cols, |seg| {
            backend.dispatch(SegmentMax { x: &x[seg] })
        });
        let mut m = T::NEG_INFINITY;
        for v in parts {
            // NaN never wins here; the sums catch it.
            if v > m {
                m = v;
            }
        }
        m
    };
    match (job.b, job.input) {
        (q, Input::Probs) => sum_parts(map_ranges(cols, SEGMENT, cols, |seg| {
            backend.dispatch(ProbSum {
                p: &job.a[seg.clone()],
                q: q.map(|q| &q[seg]),
            })
        })),
        (r, Input::Logits) => {
            let o = job.a;
            let Some((mo, mr)) = maxima(max(o), r.map(max)) else {
                return f64::NAN;
            };
            let parts = map_ranges(cols, SEGMENT, cols, |seg| {
                backend.dispatch(Weighted {
                    o: &o[seg.clone()],
                    r: r.map(|r| &r[seg]),
                    mo,
                    mr,
                })
            });
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
            let lo = backend.dispatch(FinishLse {
                x: o,
                p,
                m: mo,
                sum: sums.so,
            });
            let lr = r.map(|x| {
                backend.dispatch(FinishLse {
                    x,
                    p,
                    m: mr,
                    sum: sums.sr,
                })
            });
            finish_logits(lo, lr, sums)
        }
    }
}

/// `Σ entr(p)` or `Σ rel_entr(p, q)` of a segment.
struct ProbSum<'a, T> {
    p: &'a [T],
    q: Option<&'a [T]>,
}

impl<T: Element> WithSimd for ProbSum<'_, T> {
    type Output = f64;
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) -> f64 {
        let s = T::simd(s);
        match self.q {
            None => entr_sum(s, self.p),
            Some(q) => rel_entr_sum(s, self.p, q),
        }
    }
}

struct SegmentMax<'a, T> {
    x: &'a [T],
}

impl<T: Element> WithSimd for SegmentMax<'_, T> {
    type Output = T;
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) -> T {
        max_mapped(T::simd(s), &Scale(T::ONE), self.x)
    }
}

struct Weighted<'a, T> {
    o: &'a [T],
    r: Option<&'a [T]>,
    mo: T,
    mr: T,
}

impl<T: Element> WithSimd for Weighted<'_, T> {
    type Output = Sums;
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) -> Sums {
        weighted(T::simd(s), self.o, self.r, self.mo, self.mr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f64> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64 * 8.0
                    - 4.0
            })
            .collect()
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
                let ow: Vec<f64> = o[i * cols..(i + 1) * cols]
                    .iter()
                    .map(|v| v.to_f64())
                    .collect();
                let rw: Vec<f64> = r[i * cols..(i + 1) * cols]
                    .iter()
                    .map(|v| v.to_f64())
                    .collect();
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
                entropy(b, &o, cols, Input::Logits, 1.0, &mut out).unwrap();
                cmp(&out, &h_ref, "H logits");
                kl_divergence(b, &o, &r, cols, Input::Logits, 1.0, &mut out).unwrap();
                cmp(&out, &kl_ref, "KL logits");
                entropy(b, &p, cols, Input::Probs, 1.0, &mut out).unwrap();
                cmp(&out, &hp_ref, "H probs");
                kl_divergence(b, &p, &q, cols, Input::Probs, 1.0, &mut out).unwrap();
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
                            entropy(b, &p, cols, Input::Probs, 1.0, &mut out).unwrap();
                            let got = out[0].to_f64();
                            let same = |g: f64, w: f64| {
                                (g.is_nan() && w.is_nan())
                                    || g == w
                                    || (g - w).abs() <= 1e-6 * w.abs().max(1e-30)
                            };
                            assert!(same(got, h_ref), "{b:?} H {p:?}: {got} vs {h_ref}");
                            kl_divergence(b, &p, &q, cols, Input::Probs, 1.0, &mut out).unwrap();
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
        entropy(Backend::Scalar, &[], 0, Input::Logits, 1.0, &mut out).unwrap();
        assert_eq!(out, [0.0, 0.0]);
        assert!(entropy(
            Backend::Scalar,
            &[0.0f64; 5],
            2,
            Input::Probs,
            1.0,
            &mut out
        )
        .is_err());
    }
}
