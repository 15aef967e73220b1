//! `logsumexp` over the rows of a matrix: one read of the input, one value per row; and SciPy's
//! weighted, signed `logsumexp` (a plain f64 path: for flexibility, not speed).

use std::ops::Range;

use super::driver::{self, Kernel, PerRow, Rows};
use super::row::{
    finish_lse, finish_lse_on, max_sum, merge_max_sum, with_scale, Acc, ExactScale, Pre, Scale,
};
use super::tile::{tile_rows, TileOp, REDUCE_TILE_COLS};
use super::SendPtr;
use crate::parallel::{chunk_rows, for_ranges};
use crate::simd::{Backend, Element, Simd};
use crate::KernelError;

/// `out[r] = logsumexp(x[r, :] · scale) / scale` for the `rows × cols` matrix `x`: with
/// `scale = 1/T` this is the smooth maximum `T · logsumexp(x / T)`.
pub fn logsumexp<T: Element>(
    backend: Backend,
    x: &[T],
    cols: usize,
    scale: T,
    out: &mut [T],
) -> Result<(), KernelError> {
    run(backend, x, cols, Scale::exact(scale), out)
}

/// [`logsumexp`] with a float64 `scale`, whose rounding to `T` is carried (as in
/// [`crate::kernels::softmax::softmax_scaled`]).
pub fn logsumexp_scaled<T: Element>(
    backend: Backend,
    x: &[T],
    cols: usize,
    scale: impl Into<ExactScale>,
    out: &mut [T],
) -> Result<(), KernelError> {
    run(backend, x, cols, Scale::of(scale.into()), out)
}

fn run<T: Element>(
    backend: Backend,
    x: &[T],
    cols: usize,
    scale: Scale<T>,
    out: &mut [T],
) -> Result<(), KernelError> {
    let rows = driver::reduced_rows(x.len(), cols, out.len())?;
    if cols == 0 {
        out.fill(T::NEG_INFINITY);
        return Ok(());
    }
    let k = LogSumExp {
        x,
        cols,
        scale,
        out: PerRow::new(out, 1.0 / scale.to_f64()),
    };
    driver::run(backend, &k, rows, cols);
    Ok(())
}

struct LogSumExp<'a, T> {
    x: &'a [T],
    cols: usize,
    scale: Scale<T>,
    /// One value per row, times `1 / scale` (which turns the log-sum-exp of `x · scale` back into
    /// `x`'s units).
    out: PerRow<T>,
}

impl<T: Element> LogSumExp<'_, T> {
    fn row(&self, r: usize) -> &[T] {
        &self.x[r * self.cols..(r + 1) * self.cols]
    }

    #[inline(always)]
    fn run<S: Simd<T>, P: Pre<T, S>>(&self, s: S, p: &P, rows: Range<usize>) {
        for r in rows {
            let x = self.row(r);
            let (m, sum) = max_sum(s, p, x);
            // SAFETY: the driver hands row `r` to this task alone.
            unsafe { self.out.put(r, finish_lse(s, p, x, m, sum).value()) };
        }
    }
}

impl<T: Element> Rows<T> for LogSumExp<'_, T> {
    type Out = ();
    #[inline(always)]
    fn rows<S: Simd<T>>(&self, s: S, rows: Range<usize>) {
        with_scale!(self.scale, |p| self.run(s, &p, rows))
    }
}

impl<T: Element> Kernel<T> for LogSumExp<'_, T> {
    const TILE_COLS: usize = REDUCE_TILE_COLS;
    type Part = (T, f64);
    type Fin = ();

    #[inline(always)]
    fn tile<S: Simd<T>>(&self, s: S, rows: Range<usize>) {
        let (src, cols) = (SendPtr(self.x.as_ptr() as *mut T), self.cols);
        let op = TileOp::Lse {
            unscale: self.out.factor(),
        };
        // SAFETY: the driver hands each task its own rows; the tile path only reads `x` and
        // writes those rows' entries of `out`.
        with_scale!(self.scale, |p| unsafe {
            tile_rows(s, &p, src, self.out.ptr(), rows, cols, op)
        })
    }

    #[inline(always)]
    fn part<S: Simd<T>>(&self, s: S, row: usize, seg: Range<usize>) -> (T, f64) {
        with_scale!(self.scale, |p| max_sum(s, &p, &self.row(row)[seg]))
    }

    fn finish(&self, backend: Backend, row: usize, parts: &[(T, f64)]) {
        let (m, sum) = merge_max_sum(parts, self.scale.abs());
        let lse = finish_lse_on(backend, self.row(row), self.scale, m, sum);
        // SAFETY: split rows are finished one at a time, on the calling thread.
        unsafe { self.out.put(row, lse.value()) };
    }
}

/// SciPy's `logsumexp(x', b=b, return_sign=True)` per row of `x' = x · scale` (each product
/// rounded to `T`, as a caller dividing by a temperature first would have it): `log |Σ b·exp(x')|`
/// and its sign. Elements with `b == 0` are left out entirely (even NaN or `+inf`); the largest term
/// is split off and `log1p` used, as SciPy does. `b` has the shape of `x` (the caller broadcasts).
pub fn logsumexp_weighted<T: Element>(
    x: &[T],
    b: &[T],
    cols: usize,
    scale: T,
    out: &mut [T],
    sign: &mut [T],
) -> Result<(), KernelError> {
    let rows = driver::reduced_rows(x.len(), cols, out.len())?;
    if b.len() != x.len() || sign.len() != rows {
        return Err(KernelError::Shape(format!(
            "b has {} elements and sign {} for {} elements in {rows} rows",
            b.len(),
            sign.len(),
            x.len()
        )));
    }
    if cols == 0 {
        out.fill(T::NEG_INFINITY);
        sign.fill(T::ZERO);
        return Ok(());
    }
    let chunk = chunk_rows(cols);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let sign_ptr = SendPtr(sign.as_mut_ptr());
    for_ranges(rows, chunk, x.len(), |range| {
        for r in range {
            let row = r * cols..(r + 1) * cols;
            let (l, sg) = weighted_row(&x[row.clone()], &b[row], scale);
            // SAFETY: row `r` of the outputs belongs to this task alone.
            unsafe {
                *out_ptr.add(r).0 = T::from_f64(l);
                *sign_ptr.add(r).0 = T::from_f64(sg);
            }
        }
    });
    Ok(())
}

/// One row of [`logsumexp_weighted`], in f64 (this path is for flexibility, not speed).
fn weighted_row<T: Element>(x_raw: &[T], b: &[T], scale: T) -> (f64, f64) {
    let x = |v: T| (v * scale).to_f64();
    let xs = || x_raw.iter().map(|&v| x(v));
    let mut imax = usize::MAX;
    let mut m = f64::NEG_INFINITY;
    let mut nan = false;
    for (i, (xi, &bi)) in xs().zip(b).enumerate() {
        let bi = bi.to_f64();
        if bi == 0.0 {
            continue;
        }
        if xi.is_nan() || bi.is_nan() {
            nan = true;
        } else if imax == usize::MAX || xi > m {
            m = xi;
            imax = i;
        }
    }
    if nan {
        return (f64::NAN, f64::NAN);
    }
    if imax == usize::MAX || m == f64::NEG_INFINITY {
        return (f64::NEG_INFINITY, 0.0);
    }
    if m == f64::INFINITY {
        // Only the +inf terms count: b·inf is ±inf, so weights of both signs make inf - inf = NaN
        // (as SciPy), whatever their magnitudes; weights of one sign give that sign's infinity.
        let (mut pos, mut neg) = (false, false);
        for (xi, bi) in xs().zip(b) {
            if xi == f64::INFINITY {
                pos |= bi.to_f64() > 0.0;
                neg |= bi.to_f64() < 0.0;
            }
        }
        return if pos == neg {
            (f64::NAN, f64::NAN)
        } else {
            (f64::INFINITY, if pos { 1.0 } else { -1.0 })
        };
    }
    let bmax = b[imax].to_f64();
    let mut rest = Acc::default();
    for (i, (xi, &bi)) in xs().zip(b).enumerate() {
        let bi = bi.to_f64();
        if i != imax && bi != 0.0 {
            rest.add(bi * (xi - m).exp());
        }
    }
    // log|bmax + rest| = log|bmax| + log|1 + r| with r = rest / bmax.
    let r = rest.value() / bmax;
    let (log1, s1) = if r > -1.0 {
        (r.ln_1p(), 1.0)
    } else if r < -1.0 {
        ((-1.0 - r).ln(), -1.0)
    } else {
        (f64::NEG_INFINITY, 0.0)
    };
    if s1 == 0.0 {
        return (f64::NEG_INFINITY, 0.0);
    }
    (m + bmax.abs().ln() + log1, bmax.signum() * s1)
}
