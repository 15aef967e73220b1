//! `softmax`, `log_softmax` and `softmin` (a negative scale) over the rows of a matrix.

use super::small::{tile_chunk, TileJob, TileOp, SMALL_COLS};
use super::{exp_diff, finish_lse, max_sum, merge_max_sum, Buf, Lse, Pre, Scale, SendPtr};
use crate::parallel::{chunk_rows, for_ranges, map_ranges, split_rows, SEGMENT};
use crate::simd::{Backend, Element, Isa, Simd, WithSimd};
use crate::KernelError;

/// What the output holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `exp(x·s - m) / Σ exp(x·s - m)`
    Softmax,
    /// `(x·s - m) - log Σ exp(x·s - m)`
    LogSoftmax,
}

/// Writes `softmax(x · scale)` (or its log) of each row of the `rows × cols` matrix in `buf`.
/// `scale` is `1/T` for temperature `T`, `-1/T` for softmin.
pub fn softmax<T: Element>(
    backend: Backend,
    mut buf: Buf<'_, T>,
    cols: usize,
    scale: T,
    mode: Mode,
) -> Result<(), KernelError> {
    buf.check()?;
    let n = buf.len();
    if cols == 0 || n == 0 {
        return Ok(());
    }
    if n % cols != 0 {
        return Err(KernelError::Shape(format!(
            "{n} elements do not form rows of {cols}"
        )));
    }
    let rows = n / cols;
    let (src, dst) = buf.ptrs();
    let p = Scale(scale);
    if cols <= SMALL_COLS {
        let op = match mode {
            Mode::Softmax => TileOp::Softmax,
            Mode::LogSoftmax => TileOp::LogSoftmax,
        };
        for_ranges(rows, tile_chunk(cols), n, |rows| {
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
        for r in 0..rows {
            split_row(backend, src.add(r * cols), dst.add(r * cols), cols, p, mode);
        }
        return Ok(());
    }
    for_ranges(rows, chunk_rows(cols), n, |range| {
        backend.dispatch(Rows {
            src,
            dst,
            cols,
            rows: range,
            p,
            mode,
        })
    });
    Ok(())
}

struct Rows<T> {
    src: SendPtr<T>,
    dst: SendPtr<T>,
    cols: usize,
    rows: std::ops::Range<usize>,
    p: Scale<T>,
    mode: Mode,
}

impl<T: Element> WithSimd for Rows<T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) {
        let s = T::simd(s);
        for r in self.rows {
            let off = r * self.cols;
            // SAFETY: row `r` is in bounds and belongs to this task alone; the read-only slice is
            // dropped before the write pass touches the (possibly identical) destination.
            let (m, sum) = max_sum(s, &self.p, unsafe { self.src.slice(off, self.cols) });
            let x = unsafe { self.src.slice(off, self.cols) };
            let stat = match self.mode {
                Mode::Softmax => T::from_f64(1.0 / sum),
                Mode::LogSoftmax => {
                    T::from_f64(finish_lse(s, &self.p, x, m, sum).log_sum_for_log_softmax())
                }
            };
            unsafe {
                write_row(
                    s,
                    &self.p,
                    self.src.add(off),
                    self.dst.add(off),
                    self.cols,
                    m,
                    stat,
                    self.mode,
                )
            };
        }
    }
}

/// Pass 2: `dst = exp(p(src) - m) · inv_sum` or `dst = (p(src) - m) - log_sum`. `src` may equal `dst`.
///
/// # Safety
/// `src` and `dst` must be valid for `len` elements, and nobody else may touch them meanwhile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn write_row<T: Element, S: Simd<T>, P: Pre<T, S>>(
    s: S,
    p: &P,
    src: SendPtr<T>,
    dst: SendPtr<T>,
    len: usize,
    m: T,
    stat: T,
    mode: Mode,
) {
    let neg_m = s.splat(-m);
    let sv = s.splat(stat);
    // No closures here: a closure is a function of its own that does not inherit the caller's
    // `#[target_feature]`s, so vector intrinsics inside it would not inline.
    match mode {
        Mode::Softmax => map_row!(T, S, s, src, dst, len, |v, _i| s
            .mul(exp_diff(s, p.apply(s, v), neg_m), sv)),
        Mode::LogSoftmax => map_row!(T, S, s, src, dst, len, |v, _i| s
            .sub(s.add(p.apply(s, v), neg_m), sv)),
    }
}

/// A row long enough to split: `(max, sum)` per fixed segment in parallel, merged in order, then the
/// segments written in parallel.
fn split_row<T: Element>(
    backend: Backend,
    src: SendPtr<T>,
    dst: SendPtr<T>,
    cols: usize,
    p: Scale<T>,
    mode: Mode,
) {
    let parts = map_ranges(cols, SEGMENT, cols, |seg| {
        backend.dispatch(SegmentStats {
            // SAFETY: the segment is in bounds; nothing writes the row during this pass.
            x: unsafe { src.add(seg.start).slice(0, seg.len()) },
            p,
        })
    });
    let (m, sum) = merge_max_sum(&parts);
    let stat = match mode {
        Mode::Softmax => T::from_f64(1.0 / sum),
        Mode::LogSoftmax => {
            // SAFETY: as above; the write pass has not started.
            let x = unsafe { src.slice(0, cols) };
            T::from_f64(
                backend
                    .dispatch(FinishLse { x, p, m, sum })
                    .log_sum_for_log_softmax(),
            )
        }
    };
    for_ranges(cols, SEGMENT, cols, |seg| {
        backend.dispatch(SegmentWrite {
            src: src.add(seg.start),
            dst: dst.add(seg.start),
            len: seg.len(),
            p,
            m,
            stat,
            mode,
        })
    });
}

pub(crate) struct SegmentStats<'a, T> {
    pub x: &'a [T],
    pub p: Scale<T>,
}

impl<T: Element> WithSimd for SegmentStats<'_, T> {
    type Output = (T, f64);
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) -> (T, f64) {
        max_sum(T::simd(s), &self.p, self.x)
    }
}

pub(crate) struct FinishLse<'a, T> {
    pub x: &'a [T],
    pub p: Scale<T>,
    pub m: T,
    pub sum: f64,
}

impl<T: Element> WithSimd for FinishLse<'_, T> {
    type Output = Lse;
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) -> Lse {
        finish_lse(T::simd(s), &self.p, self.x, self.m, self.sum)
    }
}

struct SegmentWrite<T> {
    src: SendPtr<T>,
    dst: SendPtr<T>,
    len: usize,
    p: Scale<T>,
    m: T,
    stat: T,
    mode: Mode,
}

impl<T: Element> WithSimd for SegmentWrite<T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) {
        // SAFETY: each segment is written by one task only.
        unsafe {
            write_row(
                T::simd(s),
                &self.p,
                self.src,
                self.dst,
                self.len,
                self.m,
                self.stat,
                self.mode,
            )
        }
    }
}
