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
//! The logits paths are generic over the SIMD layer (pass 1: the row's `(max, Σ exp)`, pass 2 while
//! the row is in cache: the weighted sum). The probability paths need a logarithm, which the `Simd`
//! trait does not have: they compute each term in f64 with the standard library's `ln` (correct to
//! < 1 ulp; scalar for now), accumulating block sums with a compensated f64 sum.
//! Each result is multiplied by `scale` (`1 / ln(base)`, or 1 for nats).

use super::backward::Total;
use super::softmax::{FinishLse, SegmentStats};
use super::{finish_lse, max_sum, merge_max_sum, Lse, Scale, SendPtr, BLOCK};
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
    let rows = if cols == 0 { out_len } else { n / cols };
    if (cols == 0 && n != 0) || (cols != 0 && n % cols != 0) || rows != out_len {
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
        let rows = self.a.chunks_exact(self.cols);
        match (self.b, self.input) {
            (None, Input::Probs) => rows.map(|p| entr_sum(p)).collect(),
            (None, Input::Logits) => rows.map(|o| entropy_logits(s, o)).collect(),
            (Some(b), Input::Probs) => rows
                .zip(b.chunks_exact(self.cols))
                .map(|(p, q)| rel_entr_sum(p, q))
                .collect(),
            (Some(b), Input::Logits) => rows
                .zip(b.chunks_exact(self.cols))
                .map(|(o, r)| kl_logits(s, o, r))
                .collect(),
        }
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

/// `Σ entr(p)`: block sums in f64, added with compensation.
#[inline(always)]
fn entr_sum<T: Element>(p: &[T]) -> f64 {
    let mut acc = Total::default();
    for block in p.chunks(BLOCK) {
        acc.add(block.iter().map(|v| entr(v.to_f64())).sum());
    }
    acc.value()
}

/// `Σ rel_entr(p, q)`.
#[inline(always)]
fn rel_entr_sum<T: Element>(p: &[T], q: &[T]) -> f64 {
    let mut acc = Total::default();
    for (pb, qb) in p.chunks(BLOCK).zip(q.chunks(BLOCK)) {
        acc.add(
            pb.iter()
                .zip(qb)
                .map(|(a, b)| rel_entr(a.to_f64(), b.to_f64()))
                .sum(),
        );
    }
    acc.value()
}

/// A row's `(m, sum, Lse)` for a logits path.
#[inline(always)]
fn row_lse<T: Element, S: Simd<T>>(s: S, x: &[T]) -> (T, f64, Lse) {
    let p = Scale(T::ONE);
    let (m, sum) = max_sum(s, &p, x);
    (m, sum, finish_lse(s, &p, x, m, sum))
}

/// `H[softmax(o)]` of one row.
#[inline(always)]
fn entropy_logits<T: Element, S: Simd<T>>(s: S, o: &[T]) -> f64 {
    let (m, sum, lse) = row_lse(s, o);
    if !lse.m.is_finite() {
        // All -inf, a +inf or a NaN: the softmax is NaN (API.md §3), and so is its entropy.
        return f64::NAN;
    }
    lse.log_sum + weighted(s, o, None, m, T::ZERO) / sum
}

/// `KL(softmax(o) ‖ softmax(r))` of one row pair.
#[inline(always)]
fn kl_logits<T: Element, S: Simd<T>>(s: S, o: &[T], r: &[T]) -> f64 {
    let (mo, so, lo) = row_lse(s, o);
    let (mr, _, lr) = row_lse(s, r);
    if !lo.m.is_finite() || !lr.m.is_finite() {
        return f64::NAN;
    }
    weighted(s, o, Some(r), mo, mr) / so + (lr.log_sum - lo.log_sum)
}

/// Elements per vector partial sum of [`weighted`] before it is added to the f64 total: the terms of a
/// divergence have both signs, so the float32 vector sums are kept short (16 terms per lane with
/// AVX-512 float32) to keep their rounding far below the result's 2e-6 bound; one horizontal sum per
/// 256 elements costs nothing next to the `exp`.
const WEIGHTED_CHUNK: usize = 256;

/// `Σ e_j · d_j` over a row or segment, where `e_j = exp(o_j − mo)` and `d_j = mo − o_j` (entropy,
/// `r` absent) or `d_j = (o_j − mo) − (r_j − mr)` (divergence). Terms with `e_j = 0` add 0 whatever
/// `d_j` is (SciPy's `0 · log 0 = 0`).
#[inline(always)]
fn weighted<T: Element, S: Simd<T>>(s: S, o: &[T], r: Option<&[T]>, mo: T, mr: T) -> f64 {
    let l = S::LANES;
    let neg_mo = s.splat(-mo);
    let neg_mr = s.splat(-mr);
    let zero = s.splat(T::ZERO);
    // `x - m` with its rounding error (TwoSum): far from the maximum the float32 difference loses
    // up to half an ulp of |x - m|, which a divergence of nearly equal distributions would feel.
    let diff = |x: S::V, neg_m: S::V| {
        let d = s.add(x, neg_m);
        let bb = s.sub(d, x);
        let err = s.add(s.sub(x, s.sub(d, bb)), s.sub(neg_m, bb));
        // Infinite `x` makes `err` NaN; its difference is exact.
        (d, s.select_eq(err, err, err, zero))
    };
    let term = |ov: S::V, rv: Option<S::V>| {
        let (d, err) = diff(ov, neg_mo);
        let e = s.exp(d);
        let d = match rv {
            None => s.sub(s.sub(zero, d), err),
            Some(rv) => {
                let (dr, err_r) = diff(rv, neg_mr);
                s.add(s.sub(d, dr), s.sub(err, err_r))
            }
        };
        s.select_eq(e, zero, zero, s.mul(e, d))
    };
    let mut acc = Total::default();
    let mut start = 0;
    while start < o.len() {
        let end = (start + WEIGHTED_CHUNK).min(o.len());
        let ob = &o[start..end];
        let rb = r.map(|r| &r[start..end]);
        let (mut a0, mut a1) = (zero, zero);
        let mut i = 0;
        while i + 2 * l <= ob.len() {
            let r0 = rb.map(|rb| s.load(&rb[i..i + l]));
            let r1 = rb.map(|rb| s.load(&rb[i + l..i + 2 * l]));
            a0 = s.add(a0, term(s.load(&ob[i..i + l]), r0));
            a1 = s.add(a1, term(s.load(&ob[i + l..i + 2 * l]), r1));
            i += 2 * l;
        }
        while i + l <= ob.len() {
            let r0 = rb.map(|rb| s.load(&rb[i..i + l]));
            a0 = s.add(a0, term(s.load(&ob[i..i + l]), r0));
            i += l;
        }
        if i < ob.len() {
            // Lanes past the tail hold o = -inf: e = 0, so they add 0.
            let ov = s.load_partial(&ob[i..], T::NEG_INFINITY);
            let rv = rb.map(|rb| s.load_partial(&rb[i..], T::ZERO));
            a1 = s.add(a1, term(ov, rv));
        }
        acc.add(s.reduce_sum(s.add(a0, a1)).to_f64());
        start = end;
    }
    acc.value()
}

/// One huge row (`job` holds exactly one): statistics and weighted sums per fixed segment in
/// parallel, merged in order.
fn split_row<T: Element>(backend: Backend, job: Job<'_, T>) -> f64 {
    let cols = job.cols;
    let sum_parts = |parts: Vec<f64>| {
        let mut acc = Total::default();
        for v in parts {
            acc.add(v);
        }
        acc.value()
    };
    let stats = |x: &[T]| {
        let p = Scale(T::ONE);
        let parts = map_ranges(cols, SEGMENT, cols, |seg| {
            backend.dispatch(SegmentStats { x: &x[seg], p })
        });
        let (m, sum) = merge_max_sum(&parts);
        let lse = backend.dispatch(FinishLse { x, p, m, sum });
        (m, sum, lse)
    };
    match (job.b, job.input) {
        (None, Input::Probs) => {
            sum_parts(map_ranges(cols, SEGMENT, cols, |seg| entr_sum(&job.a[seg])))
        }
        (Some(q), Input::Probs) => sum_parts(map_ranges(cols, SEGMENT, cols, |seg| {
            rel_entr_sum(&job.a[seg.clone()], &q[seg])
        })),
        (None, Input::Logits) => {
            let (m, sum, lse) = stats(job.a);
            if !lse.m.is_finite() {
                return f64::NAN;
            }
            let w = sum_parts(map_ranges(cols, SEGMENT, cols, |seg| {
                backend.dispatch(Weighted {
                    o: &job.a[seg],
                    r: None,
                    mo: m,
                    mr: T::ZERO,
                })
            }));
            lse.log_sum + w / sum
        }
        (Some(r), Input::Logits) => {
            let (mo, so, lo) = stats(job.a);
            let (mr, _, lr) = stats(r);
            if !lo.m.is_finite() || !lr.m.is_finite() {
                return f64::NAN;
            }
            let w = sum_parts(map_ranges(cols, SEGMENT, cols, |seg| {
                backend.dispatch(Weighted {
                    o: &job.a[seg.clone()],
                    r: Some(&r[seg]),
                    mo,
                    mr,
                })
            }));
            w / so + (lr.log_sum - lo.log_sum)
        }
    }
}

struct Weighted<'a, T> {
    o: &'a [T],
    r: Option<&'a [T]>,
    mo: T,
    mr: T,
}

impl<T: Element> WithSimd for Weighted<'_, T> {
    type Output = f64;
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) -> f64 {
        weighted(T::simd(s), self.o, self.r, self.mo, self.mr)
    }
}
