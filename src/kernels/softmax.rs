//! `softmax`, `log_softmax` and `softmin` (a negative scale) over the rows of a matrix.

use super::small::{tile_chunk, TileJob, TileOp, SMALL_COLS};
use super::{
    exp_diff, finish_lse, load_tail_mapped, max_mapped, max_sum, merge_max_sum, Acc, Buf, Lse, One,
    Pre, Scale, SendPtr, BLOCK, SUM_RUN,
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
            let (rs, rd) = (src.add(r * cols), dst.add(r * cols));
            match mode {
                Mode::Softmax => split_softmax_row(backend, rs, rd, cols, p),
                Mode::LogSoftmax => split_log_softmax_row(backend, rs, rd, cols, p),
            }
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
        if self.p.0 == T::ONE {
            self.run(s, One)
        } else {
            let p = self.p;
            self.run(s, p)
        }
    }
}

impl<T: Element> Rows<T> {
    #[inline(always)]
    fn run<S: Simd<T>, P: Pre<T, S>>(self, s: S, p: P) {
        for r in self.rows {
            let off = r * self.cols;
            let (src, dst) = (self.src.add(off), self.dst.add(off));
            if self.mode == Mode::Softmax {
                // SAFETY: row `r` is in bounds and belongs to this task alone.
                unsafe { softmax_row(s, &p, src, dst, self.cols) };
                continue;
            }
            // SAFETY: row `r` is in bounds and belongs to this task alone; the read-only slice is
            // dropped before the write pass touches the (possibly identical) destination.
            let x = unsafe { src.slice(0, self.cols) };
            let (m, sum) = max_sum(s, &p, x);
            let log_sum = T::from_f64(finish_lse(s, &p, x, m, sum).log_sum_for_log_softmax());
            unsafe { write_log_softmax(s, &p, src, dst, self.cols, m, log_sum) };
        }
    }
}

/// Log-softmax pass 2: `dst = (p(src) - m) - log_sum`. `src` may equal `dst`.
///
/// # Safety
/// `src` and `dst` must be valid for `len` elements, and nobody else may touch them meanwhile.
#[inline(always)]
unsafe fn write_log_softmax<T: Element, S: Simd<T>, P: Pre<T, S>>(
    s: S,
    p: &P,
    src: SendPtr<T>,
    dst: SendPtr<T>,
    len: usize,
    m: T,
    log_sum: T,
) {
    let neg_m = s.splat(-m);
    let ls = s.splat(log_sum);
    // `map_row!` rather than a closure: a closure is a function of its own that does not inherit
    // the caller's `#[target_feature]`s, so vector intrinsics inside it would not inline.
    map_row!(T, S, s, src, dst, len, |v, _i| s
        .sub(s.add(p.apply(s, v), neg_m), ls));
}

/// Blocks in the longest row that is not split across threads (longer ones are split in segments).
const MAX_ROW_BLOCKS: usize = SPLIT_ROW_MIN_COLS.div_ceil(BLOCK);

/// One softmax row with one `exp` per element: [`exp_pass`], then [`scale_pass`] while the row is
/// still in L2.
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
    let (m, sum) = exp_pass(s, p, src, dst, len, &mut block_m);
    scale_pass(s, dst, len, &block_m, m, 1.0 / sum);
}

/// Softmax pass 1 over `len` elements: block by block, find the block's maximum, write
/// `e = exp(p(x) - m_b)` (`m_b` the running maximum, recorded in `block_m`) to `dst` and sum it.
/// Returns the final `(m, Σ exp(p(x) - m))`. `src` may equal `dst`: a block is read before it is
/// written.
///
/// # Safety
/// `src`/`dst` valid for `len` elements and owned by the caller's task; `block_m` holds at least
/// `len.div_ceil(BLOCK)` entries.
#[inline(always)]
unsafe fn exp_pass<T: Element, S: Simd<T>, P: Pre<T, S>>(
    s: S,
    p: &P,
    src: SendPtr<T>,
    dst: SendPtr<T>,
    len: usize,
    block_m: &mut [T],
) -> (T, f64) {
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
    (m, acc.value())
}

/// Softmax pass 2: scales each block of `dst` by `exp(m_b - m) · inv_sum`.
///
/// # Safety
/// `dst` valid for `len` elements and owned by the caller's task.
#[inline(always)]
unsafe fn scale_pass<T: Element, S: Simd<T>>(
    s: S,
    dst: SendPtr<T>,
    len: usize,
    block_m: &[T],
    m: T,
    inv_sum: f64,
) {
    let mf = m.to_f64();
    for (bi, start) in (0..len).step_by(BLOCK).enumerate() {
        let n = BLOCK.min(len - start);
        let f = s.splat(T::from_f64((block_m[bi].to_f64() - mf).exp() * inv_sum));
        let d = dst.add(start);
        map_row!(T, S, s, d, d, n, |v, _i| s.mul(v, f));
    }
}

/// Blocks per segment of a split row.
const SEGMENT_BLOCKS: usize = SEGMENT.div_ceil(BLOCK);

/// Pass 1 of softmax on one segment of a split row.
struct SegmentExp<T> {
    src: SendPtr<T>,
    dst: SendPtr<T>,
    len: usize,
    p: Scale<T>,
}

impl<T: Element> WithSimd for SegmentExp<T> {
    type Output = (T, f64, [T; SEGMENT_BLOCKS]);
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) -> Self::Output {
        let mut block_m = [T::NEG_INFINITY; SEGMENT_BLOCKS];
        // SAFETY: each segment belongs to one task.
        let (m, sum) = unsafe {
            exp_pass(
                T::simd(s),
                &self.p,
                self.src,
                self.dst,
                self.len,
                &mut block_m,
            )
        };
        (m, sum, block_m)
    }
}

/// Pass 2 of softmax on one segment of a split row.
struct SegmentScale<T> {
    dst: SendPtr<T>,
    len: usize,
    block_m: [T; SEGMENT_BLOCKS],
    m: T,
    inv_sum: f64,
}

impl<T: Element> WithSimd for SegmentScale<T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) {
        // SAFETY: each segment belongs to one task.
        unsafe {
            scale_pass(
                T::simd(s),
                self.dst,
                self.len,
                &self.block_m,
                self.m,
                self.inv_sum,
            )
        }
    }
}

/// A softmax row long enough to split: pass 1 per fixed segment in parallel (each writes its
/// exponentials), the segments' `(max, sum)` merged in order, then pass 2 per segment in parallel.
fn split_softmax_row<T: Element>(
    backend: Backend,
    src: SendPtr<T>,
    dst: SendPtr<T>,
    cols: usize,
    p: Scale<T>,
) {
    let parts = map_ranges(cols, SEGMENT, cols, |seg| {
        backend.dispatch(SegmentExp {
            src: src.add(seg.start),
            dst: dst.add(seg.start),
            len: seg.len(),
            p,
        })
    });
    let stats: Vec<(T, f64)> = parts.iter().map(|&(m, sum, _)| (m, sum)).collect();
    let (m, sum) = merge_max_sum(&stats);
    let inv_sum = 1.0 / sum;
    for_ranges(cols, SEGMENT, cols, |seg| {
        backend.dispatch(SegmentScale {
            dst: dst.add(seg.start),
            len: seg.len(),
            block_m: parts[seg.start / SEGMENT].2,
            m,
            inv_sum,
        })
    });
}

/// A log-softmax row long enough to split: `(max, sum)` per fixed segment in parallel, merged in
/// order, then the segments written in parallel.
fn split_log_softmax_row<T: Element>(
    backend: Backend,
    src: SendPtr<T>,
    dst: SendPtr<T>,
    cols: usize,
    p: Scale<T>,
) {
    let parts = map_ranges(cols, SEGMENT, cols, |seg| {
        backend.dispatch(SegmentStats {
            // SAFETY: the segment is in bounds; nothing writes the row during this pass.
            x: unsafe { src.add(seg.start).slice(0, seg.len()) },
            p,
        })
    });
    let (m, sum) = merge_max_sum(&parts);
    // SAFETY: as above; the write pass has not started.
    let x = unsafe { src.slice(0, cols) };
    let log_sum = T::from_f64(
        backend
            .dispatch(FinishLse { x, p, m, sum })
            .log_sum_for_log_softmax(),
    );
    for_ranges(cols, SEGMENT, cols, |seg| {
        backend.dispatch(SegmentWrite {
            src: src.add(seg.start),
            dst: dst.add(seg.start),
            len: seg.len(),
            p,
            m,
            log_sum,
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
    log_sum: T,
}

impl<T: Element> WithSimd for SegmentWrite<T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) {
        // SAFETY: each segment is written by one task only.
        unsafe {
            write_log_softmax(
                T::simd(s),
                &self.p,
                self.src,
                self.dst,
                self.len,
                self.m,
                self.log_sum,
            )
        }
    }
}
