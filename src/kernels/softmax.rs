//! `softmax`, `log_softmax` and `softmin` (a negative scale) over the rows of a matrix.

use super::small::{tile_chunk, TileJob, TileOp, SMALL_COLS};
use super::{
    exp_diff, finish_lse, load_tail_mapped, max_mapped, max_sum, merge_max_sum, Acc, Buf, Lse, Pre,
    Scale, SendPtr, BLOCK, SUM_RUN,
};
use crate::parallel::{
    chunk_rows, for_ranges, map_ranges, split_rows, SEGMENT, SPLIT_ROW_MIN_COLS,
};
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
    if !n.is_multiple_of(cols) {
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
            if self.mode == Mode::Softmax {
                // SAFETY: row `r` is in bounds and belongs to this task alone.
                unsafe { softmax_row(s, &self.p, self.src.add(off), self.dst.add(off), self.cols) };
                continue;
            }
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

/// Blocks in the longest row that is not split across threads (longer ones take `split_row`).
const MAX_ROW_BLOCKS: usize = SPLIT_ROW_MIN_COLS.div_ceil(BLOCK);

/// One softmax row with one `exp` per element: pass 1 goes block by block, finds the block's
/// maximum, writes `e = exp(p(x) - m_b)` (with `m_b` the running maximum) to `dst` and sums it;
/// pass 2 scales each block of `dst`, still in L2, by `exp(m_b - m) / Σ`. `src` may equal `dst`:
/// each block is read before it is written.
///
/// # Safety
/// `src`/`dst` valid for `len` (< `SPLIT_ROW_MIN_COLS`) elements and owned by the caller's task.
#[inline(always)]
unsafe fn softmax_row<T: Element, S: Simd<T>, P: Pre<T, S>>(
    s: S,
    p: &P,
    src: SendPtr<T>,
    dst: SendPtr<T>,
    len: usize,
) {
    let mut block_m = [T::NEG_INFINITY; MAX_ROW_BLOCKS];
    let mut m = T::NEG_INFINITY;
    let mut acc = Acc::default();
    let zero = s.splat(T::ZERO);
    for (bi, start) in (0..len).step_by(BLOCK).enumerate() {
        let n = BLOCK.min(len - start);
        let bm = max_mapped(s, p, src.slice(start, n));
        if bm > m {
            if m != T::NEG_INFINITY {
                acc.scale((m - bm).to_f64().exp());
            }
            m = bm;
        }
        block_m[bi] = m;
        let (bsrc, bdst) = (src.add(start), dst.add(start));
        if m == T::NEG_INFINITY {
            // Every element so far is -inf (or NaN): write 0; pass 2 turns the row into NaN if
            // it stays so, and keeps 0 otherwise.
            map_row!(T, S, s, bsrc, bdst, n, |_v, _i| zero);
            continue;
        }
        let neg_m = s.splat(-m);
        let l = S::LANES;
        let (mut run, mut count, mut block_sum) = (zero, 0, 0.0f64);
        let mut i = 0;
        while i + l <= n {
            let e = exp_diff(s, p.apply(s, s.load(bsrc.slice(i, l))), neg_m);
            s.store(std::slice::from_raw_parts_mut(bdst.0.add(i), l), e);
            run = s.add(run, e);
            count += 1;
            if count == SUM_RUN {
                block_sum += s.reduce_sum(run).to_f64();
                (run, count) = (zero, 0);
            }
            i += l;
        }
        if i < n {
            // Lanes past the tail hold -inf, so they add exp(-inf) = 0 to the sum.
            let y = load_tail_mapped(s, p, bsrc.slice(i, n - i), T::NEG_INFINITY);
            let e = exp_diff(s, y, neg_m);
            s.store_partial(std::slice::from_raw_parts_mut(bdst.0.add(i), n - i), e);
            run = s.add(run, e);
        }
        acc.add(block_sum + s.reduce_sum(run).to_f64());
    }
    let sum = acc.value();
    let inv = 1.0 / sum;
    let mf = m.to_f64();
    for (bi, start) in (0..len).step_by(BLOCK).enumerate() {
        let n = BLOCK.min(len - start);
        let f = s.splat(T::from_f64((block_m[bi].to_f64() - mf).exp() * inv));
        let d = dst.add(start);
        map_row!(T, S, s, d, d, n, |v, _i| s.mul(v, f));
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
