//! `logsumexp` over the rows of a matrix: one read of the input, one value per row.

use super::small::{tile_chunk, TileJob, TileOp, SMALL_COLS};
use super::softmax::{FinishLse, SegmentStats};
use super::SendPtr;
use super::{finish_lse, max_sum, merge_max_sum, Acc, One, Pre, Scale};
use crate::parallel::{chunk_rows, for_ranges, map_ranges, split_rows, SEGMENT};
use crate::simd::{Backend, Element, Isa, Simd, WithSimd};
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
    let rows = check_rows(x.len(), cols, out.len())?;
    let p = Scale(scale);
    let unscale = 1.0 / scale.to_f64();
    if cols == 0 {
        out.fill(T::NEG_INFINITY);
        return Ok(());
    }
    if cols <= SMALL_COLS {
        let (src, dst) = (SendPtr(x.as_ptr() as *mut T), SendPtr(out.as_mut_ptr()));
        let op = TileOp::Lse { unscale };
        for_ranges(rows, tile_chunk(cols), x.len(), |rows| {
            backend.dispatch(TileJob {
                src,
                dst,
                rows,
                cols,
                scale,
                op,
            })
        });
        return Ok(());
    }
    if split_rows(cols) {
        for (r, o) in out.iter_mut().enumerate() {
            let row = &x[r * cols..(r + 1) * cols];
            let parts = map_ranges(cols, SEGMENT, cols, |seg| {
                backend.dispatch(SegmentStats { x: &row[seg], p })
            });
            let (m, sum) = merge_max_sum(&parts);
            let lse = backend.dispatch(FinishLse { x: row, p, m, sum });
            *o = T::from_f64(lse.value() * unscale);
        }
        return Ok(());
    }
    let chunk = chunk_rows(cols);
    let out_ptr = SendPtr(out.as_mut_ptr());
    for_ranges(rows, chunk, x.len(), |range| {
        // SAFETY: each task writes its own rows of `out`.
        let o = unsafe { out_ptr.add(range.start).slice_mut(range.len()) };
        backend.dispatch(Rows {
            x: &x[range.start * cols..range.end * cols],
            cols,
            p,
            unscale,
            out: o,
        })
    });
    Ok(())
}

fn check_rows(n: usize, cols: usize, out_len: usize) -> Result<usize, KernelError> {
    let rows = n.checked_div(cols).unwrap_or(out_len);
    if (cols == 0 && n != 0) || !n.is_multiple_of(cols.max(1)) || rows != out_len {
        return Err(KernelError::Shape(format!(
            "{n} elements in rows of {cols} do not match an output of {out_len} rows"
        )));
    }
    Ok(rows)
}

struct Rows<'a, T> {
    x: &'a [T],
    cols: usize,
    p: Scale<T>,
    unscale: f64,
    out: &'a mut [T],
}

impl<T: Element> WithSimd for Rows<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) {
        let s = T::simd(s);
        if self.p.0 == T::ONE {
            self.run(s, One)
        } else {
            let p = self.p;
            self.run(s, p)
        }
    }
}

impl<T: Element> Rows<'_, T> {
    #[inline(always)]
    fn run<S: Simd<T>, P: Pre<T, S>>(self, s: S, p: P) {
        for (row, o) in self.x.chunks_exact(self.cols).zip(self.out.iter_mut()) {
            let (m, sum) = max_sum(s, &p, row);
            *o = T::from_f64(finish_lse(s, &p, row, m, sum).value() * self.unscale);
        }
    }
}

/// SciPy's `logsumexp(x, b=b, return_sign=True)` per row: `log |Σ b·exp(x)|` and its sign. Elements
/// with `b == 0` are left out entirely (even NaN or `+inf`); the largest term is split off and
/// `log1p` used, as SciPy does. `b` has the shape of `x` (the caller broadcasts).
pub fn logsumexp_weighted<T: Element>(
    x: &[T],
    b: &[T],
    cols: usize,
    out: &mut [T],
    sign: &mut [T],
) -> Result<(), KernelError> {
    let rows = check_rows(x.len(), cols, out.len())?;
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
    let out_ptr = super::SendPtr(out.as_mut_ptr());
    let sign_ptr = super::SendPtr(sign.as_mut_ptr());
    for_ranges(rows, chunk, x.len(), |range| {
        for r in range {
            let (l, sg) = weighted_row(&x[r * cols..(r + 1) * cols], &b[r * cols..(r + 1) * cols]);
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
fn weighted_row<T: Element>(x: &[T], b: &[T]) -> (f64, f64) {
    let mut imax = usize::MAX;
    let mut m = f64::NEG_INFINITY;
    let mut nan = false;
    for (i, (&xi, &bi)) in x.iter().zip(b).enumerate() {
        let (xi, bi) = (xi.to_f64(), bi.to_f64());
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
        // Only the +inf terms count; their weights decide the sign (opposite signs cancel to NaN).
        let bsum: f64 = x
            .iter()
            .zip(b)
            .filter(|(xi, _)| xi.to_f64() == f64::INFINITY)
            .map(|(_, bi)| bi.to_f64())
            .sum();
        return if bsum == 0.0 || bsum.is_nan() {
            (f64::NAN, f64::NAN)
        } else {
            (f64::INFINITY, bsum.signum())
        };
    }
    let bmax = b[imax].to_f64();
    let mut rest = Acc::default();
    for (i, (&xi, &bi)) in x.iter().zip(b).enumerate() {
        let bi = bi.to_f64();
        if i != imax && bi != 0.0 {
            rest.add(bi * (xi.to_f64() - m).exp());
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
