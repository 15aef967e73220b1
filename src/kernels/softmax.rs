//! `softmax`, `log_softmax` and `softmin` (a negative scale) over the rows of a matrix.

use std::ops::Range;

use super::driver::{self, Kernel, Rows};
use super::row::{
    exp_diff_mapped, exp_hi_lo, finish_lse, finish_lse_on, load_tail, map_row, max_mapped, max_sum,
    merge_max_sum, next_max, rescale, two_sum, with_scale, Acc, ExactScale, Pre, Scale, Tail,
    BLOCK, SUM_RUN,
};
use super::tile::{tile_rows, TileOp, SOFTMAX_TILE_COLS};
use super::{Buf, SendPtr};
use crate::parallel::{SEGMENT, SPLIT_ROW_MIN_COLS};
use crate::simd::{Backend, Element, Simd};
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
    buf: Buf<'_, T>,
    cols: usize,
    scale: T,
    mode: Mode,
) -> Result<(), KernelError> {
    run(backend, buf, cols, Scale::exact(scale), mode)
}

/// [`softmax`] with a float64 `scale` (e.g. `1/T` of a float64 temperature): the exponents carry
/// the scale's rounding to `T` as well as their own (docs/api.md §4 holds at any temperature).
pub fn softmax_scaled<T: Element>(
    backend: Backend,
    buf: Buf<'_, T>,
    cols: usize,
    scale: impl Into<ExactScale>,
    mode: Mode,
) -> Result<(), KernelError> {
    run(backend, buf, cols, Scale::of(scale.into()), mode)
}

fn run<T: Element>(
    backend: Backend,
    mut buf: Buf<'_, T>,
    cols: usize,
    scale: Scale<T>,
    mode: Mode,
) -> Result<(), KernelError> {
    let Some((rows, src, dst)) = buf.matrix(cols)? else {
        return Ok(());
    };
    let k = Softmax {
        src,
        dst,
        cols,
        scale,
        mode,
    };
    driver::run(backend, &k, rows, cols);
    Ok(())
}

struct Softmax<T> {
    src: SendPtr<T>,
    dst: SendPtr<T>,
    cols: usize,
    scale: Scale<T>,
    mode: Mode,
}

impl<T: Element> Rows<T> for Softmax<T> {
    type Out = ();
    #[inline(always)]
    fn rows<S: Simd<T>>(&self, s: S, rows: Range<usize>) {
        with_scale!(self.scale, |p| self.run(s, &p, rows))
    }
}

impl<T: Element> Softmax<T> {
    #[inline(always)]
    fn run<S: Simd<T>, P: Pre<T, S>>(&self, s: S, p: &P, rows: Range<usize>) {
        for r in rows {
            let off = r * self.cols;
            let (src, dst) = (self.src.add(off), self.dst.add(off));
            if self.mode == Mode::Softmax {
                // SAFETY: row `r` is in bounds and belongs to this task alone.
                unsafe { softmax_row(s, p, src, dst, self.cols) };
                continue;
            }
            // SAFETY: row `r` is in bounds and belongs to this task alone; the read-only slice is
            // dropped before the write pass touches the (possibly identical) destination.
            let x = unsafe { src.slice(0, self.cols) };
            let (m, sum) = max_sum(s, p, x);
            let log_sum = T::from_f64(finish_lse(s, p, x, m, sum).log_sum_for_log_softmax());
            unsafe { write_log_softmax(s, p, src, dst, self.cols, m, log_sum) };
        }
    }
}

/// Pass 1 on a segment of a split row: its `(max, sum)` and, for softmax (which writes its
/// exponentials in pass 1), the running maximum each block's exponentials were taken against.
struct Part<T> {
    m: T,
    sum: f64,
    block_m: [T; SEGMENT_BLOCKS],
}

/// A split row: softmax writes `exp(p(x) - m_b)` per segment in pass 1 and rescales it in pass 2 by
/// `exp(m_b - m) / sum`; log-softmax finds `(max, sum)` per segment, then writes
/// `(p(x) - m) - log_sum` per segment.
impl<T: Element> Kernel<T> for Softmax<T> {
    const TILE_COLS: usize = SOFTMAX_TILE_COLS;
    const WRITES: bool = true;
    type Part = Part<T>;
    /// `(m, 1 / sum)` for softmax, `(m, log_sum)` for log-softmax.
    type Fin = (T, f64);

    #[inline(always)]
    fn tile<S: Simd<T>>(&self, s: S, rows: Range<usize>) {
        let op = match self.mode {
            Mode::Softmax => TileOp::Softmax,
            Mode::LogSoftmax => TileOp::LogSoftmax,
        };
        let (src, dst, cols) = (self.src, self.dst, self.cols);
        // SAFETY: the driver hands each task its own rows of the buffers.
        with_scale!(self.scale, |p| unsafe {
            tile_rows(s, &p, src, dst, rows, cols, op)
        })
    }

    #[inline(always)]
    fn part<S: Simd<T>>(&self, s: S, row: usize, seg: Range<usize>) -> Part<T> {
        let off = row * self.cols + seg.start;
        let (src, dst) = (self.src.add(off), self.dst.add(off));
        let mut block_m = [T::NEG_INFINITY; SEGMENT_BLOCKS];
        let (m, sum) = match self.mode {
            // SAFETY: each segment belongs to one task.
            Mode::Softmax => with_scale!(self.scale, |p| unsafe {
                exp_pass(s, &p, src, dst, seg.len(), &mut block_m)
            }),
            // SAFETY: the segment is in bounds; nothing writes the row during this pass.
            Mode::LogSoftmax => with_scale!(self.scale, |p| max_sum(s, &p, unsafe {
                src.slice(0, seg.len())
            })),
        };
        Part { m, sum, block_m }
    }

    fn finish(&self, backend: Backend, row: usize, parts: &[Part<T>]) -> (T, f64) {
        let stats: Vec<(T, f64)> = parts.iter().map(|p| (p.m, p.sum)).collect();
        let (m, sum) = merge_max_sum(&stats, self.scale.abs());
        match self.mode {
            Mode::Softmax => (m, 1.0 / sum),
            Mode::LogSoftmax => {
                // SAFETY: the row is in bounds; the write pass has not started.
                let x = unsafe { self.src.slice(row * self.cols, self.cols) };
                let lse = finish_lse_on(backend, x, self.scale, m, sum);
                (m, lse.log_sum_for_log_softmax())
            }
        }
    }

    #[inline(always)]
    fn write<S: Simd<T>>(
        &self,
        s: S,
        row: usize,
        seg: Range<usize>,
        part: &Part<T>,
        (m, f): (T, f64),
    ) {
        let off = row * self.cols + seg.start;
        let (src, dst) = (self.src.add(off), self.dst.add(off));
        // SAFETY: each segment is written by one task only.
        match self.mode {
            Mode::Softmax => unsafe {
                scale_pass(s, dst, seg.len(), &part.block_m, m, f, self.scale.abs())
            },
            Mode::LogSoftmax => with_scale!(self.scale, |p| unsafe {
                write_log_softmax(s, &p, src, dst, seg.len(), m, T::from_f64(f))
            }),
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
    let pk = p.peak(s, s.splat(m));
    let ls = s.splat(log_sum);
    // `map_row!` rather than a closure: a closure is a function of its own that does not inherit
    // the caller's `#[target_feature]`s, so vector intrinsics inside it would not inline.
    map_row!(T, S, s, src, dst, len, |v, _i| s
        .sub(p.sub_max(s, v, &pk), ls));
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
    scale_pass(s, dst, len, &block_m, m, 1.0 / sum, p.factor());
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
        let block = src.slice(start, n);
        // A NaN makes `m` NaN: then every exponential, the sum and pass 2's factors are NaN.
        let summed = next_max(&mut m, &mut acc, max_mapped(s, p, block), block, p.factor());
        block_m[bi] = m;
        let (bsrc, bdst) = (src.add(start), dst.add(start));
        if !summed {
            // Every element so far is -inf (or NaN): write 0; pass 2 turns the row into NaN if
            // it stays so, and keeps 0 otherwise.
            map_row!(T, S, s, bsrc, bdst, n, |_v, _i| zero);
            continue;
        }
        let pk = p.peak(s, s.splat(m));
        let l = S::LANES;
        let (mut run, mut count, mut block_sum) = (zero, 0, 0.0f64);
        let mut i = 0;
        while i + l <= n {
            let e = exp_diff_mapped(s, p, s.load(bsrc.slice(i, l)), &pk);
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
            // Lanes past the tail have the key -inf, so they add exp(-inf) = 0 to the sum.
            // A `match`, not closures: a closure is compiled without the caller's target
            // features, so its intrinsics become calls (this tail cost ~120 ns a row that way).
            let e = match load_tail(s, p, bsrc.slice(i, n - i)) {
                Tail::Raw(v) => exp_diff_mapped(s, p, v, &pk),
                Tail::Key(k) => exp_hi_lo(s, two_sum(s, k, pk.neg_k)),
            };
            s.store_partial(std::slice::from_raw_parts_mut(bdst.0.add(i), n - i), e);
            run = s.add(run, e);
        }
        acc.add(block_sum + s.reduce_sum(run).to_f64());
    }
    (m, acc.value())
}

/// Softmax pass 2: scales each block of `dst` by `exp((m_b - m) · f) · inv_sum` (`f` the map's
/// [`Pre::factor`]: the maxima are keys).
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
    f: (f64, f64),
) {
    for (bi, start) in (0..len).step_by(BLOCK).enumerate() {
        let n = BLOCK.min(len - start);
        let f = s.splat(T::from_f64(rescale(block_m[bi], m, f) * inv_sum));
        let d = dst.add(start);
        map_row!(T, S, s, d, d, n, |v, _i| s.mul(v, f));
    }
}

/// Blocks per segment of a split row.
const SEGMENT_BLOCKS: usize = SEGMENT.div_ceil(BLOCK);
