//! Tiny rows (`cols <= SMALL_COLS`, e.g. 1,000,000 × 10): the per-row work of the row kernels (a few
//! reductions across a vector, scalar bookkeeping) would cost more than the row itself. Instead a
//! tile of `LANES` rows is transposed into a column-major scratch, so each vector holds one column of
//! `LANES` rows and every row reduction becomes a lane-wise vector operation: no horizontal
//! reductions, no scalar `exp`/`log`, no per-row branches.

use super::row::{exp_diff_mapped, finish_lse, max_sum, Pre, MAX_LANES};
use super::SendPtr;
use crate::simd::{Element, Simd};

/// The longest rows a tile holds (the scratch size). At 64 columns a row is 4 AVX-512 vectors, and
/// the row kernels' fixed cost per row (two horizontal reductions and a scalar `exp`, ~15 ns) is
/// about as large as the row's own work. Each kernel takes tiles up to its own length below.
pub const SMALL_COLS: usize = 64;

/// Softmax and log-softmax take tiles up to this length. Measured on Zen 4 (2 threads, 16 M
/// elements, ns per row tiles / rows): 40 columns 19 / 25, 48 columns 28 / 25, 64 columns 43 / 26.
pub const SOFTMAX_TILE_COLS: usize = 40;

/// Logsumexp and the cross-entropy family take tiles up to this length. Measured as above:
/// logsumexp 56 columns 19.6 / 19.4, 64 columns 25 / 19; cross-entropy 56 columns 19 / 24,
/// 64 columns 27 / 24 (with the gradient 35 / 40 and 42 / 40).
pub const REDUCE_TILE_COLS: usize = 56;

/// The tile limit of a kernel without a tile path (backward, entropy, weighted logsumexp, the
/// soft-capped cross-entropy).
pub const NO_TILES: usize = 0;

/// A tile's column-major scratch, aligned to a cache line so each column vector is one line (the
/// stack's offset otherwise varies from process to process, and a misaligned scratch costs ~10%).
#[repr(C, align(64))]
pub(crate) struct Scratch<T>(pub [T; SMALL_COLS * MAX_LANES]);

impl<T: Element> Scratch<T> {
    pub fn new() -> Self {
        Self([T::ZERO; SMALL_COLS * MAX_LANES])
    }
}

/// What a tile computes.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum TileOp {
    Softmax,
    LogSoftmax,
    /// One value per row into `out[row]`, scaled by `unscale` (the temperature).
    Lse {
        unscale: f64,
    },
}

/// Processes rows `rows` of the `cols`-wide matrix at `src` (cols <= SMALL_COLS), writing `dst`
/// (softmax/log-softmax: same shape; logsumexp: one value per row).
///
/// # Safety
/// `src`/`dst` valid for those rows; the rows belong to the caller's task; `src` may equal `dst`.
#[inline(always)]
pub(crate) unsafe fn tile_rows<T: Element, S: Simd<T>, P: Pre<T, S>>(
    s: S,
    p: &P,
    src: SendPtr<T>,
    dst: SendPtr<T>,
    rows: std::ops::Range<usize>,
    cols: usize,
    op: TileOp,
) {
    let l = S::LANES;
    debug_assert!(cols <= SMALL_COLS && cols > 0);
    let mut scratch = Scratch::new();
    let buf = &mut scratch.0;
    let mut r0 = rows.start;
    while r0 < rows.end {
        let k = l.min(rows.end - r0);
        load_tile(s, src, r0, k, cols, buf);
        let scratch = &mut buf[..cols * l];
        let m = p.clamp_max_v(s, column_max(s, p, scratch));
        // An all -inf row gives NaN here (-inf - -inf), which is its softmax and log-softmax;
        // logsumexp fixes such rows below.
        let pk = p.peak(s, m);
        let mut sum = s.splat(T::ZERO);
        if op == TileOp::Softmax {
            // One exp per element: keep exp(y - m) in the scratch and scale it afterwards.
            for col in scratch.chunks_exact_mut(l) {
                let e = exp_diff_mapped(s, p, s.load(col), &pk);
                sum = s.add(sum, e);
                s.store(col, e);
            }
        } else {
            for col in scratch.chunks_exact(l) {
                sum = s.add(sum, s.exp(p.sub_max(s, s.load(col), &pk)));
            }
        }
        match op {
            TileOp::Softmax | TileOp::LogSoftmax => {
                let scale = if op == TileOp::Softmax {
                    Some(s.recip(sum))
                } else {
                    let log_sum = s.ln(sum);
                    for col in scratch.chunks_exact_mut(l) {
                        let d = p.sub_max(s, s.load(col), &pk);
                        s.store(col, s.sub(d, log_sum));
                    }
                    None
                };
                store_tile(s, buf, dst, r0, k, cols, scale);
            }
            TileOp::Lse { unscale } => {
                let lse = p.max_plus(s, m, s.ln(sum));
                // The common case as one vector store: a full tile, every maximum finite
                // (`m - m == 0`), no refinement, no temperature to undo.
                if k == l && !T::REFINE_LSE && unscale == 1.0 {
                    let zero = s.splat(T::ZERO);
                    let finite = s.select_eq(s.sub(m, m), zero, s.splat(T::ONE), zero);
                    if s.reduce_sum(finite).to_f64() == l as f64 {
                        s.store(dst.add(r0).slice_mut(l), lse);
                        r0 += k;
                        continue;
                    }
                }
                let (mut mb, mut sb, mut lb) = (
                    [T::ZERO; MAX_LANES],
                    [T::ZERO; MAX_LANES],
                    [T::ZERO; MAX_LANES],
                );
                s.store(&mut mb[..l], m);
                s.store(&mut sb[..l], sum);
                s.store(&mut lb[..l], lse);
                for r in 0..k {
                    let (mr, sr) = (mb[r], sb[r]);
                    let v = if mr.to_f64().is_finite() && !(T::REFINE_LSE && sr.to_f64() < 2.0) {
                        lb[r].to_f64()
                    } else {
                        // Rare: infinite maxima, NaN, or float64's log1p refinement.
                        let row = src.slice((r0 + r) * cols, cols);
                        let (m1, s1) = max_sum(s, p, row);
                        finish_lse(s, p, row, m1, s1).value()
                    };
                    *dst.0.add(r0 + r) = T::from_f64(v * unscale);
                }
            }
        }
        r0 += k;
    }
}

/// The lane-wise maximum of `p(column)` over the columns of a tile's `scratch`, in two independent
/// chains: the columns were just stored, so each load waits on a store.
#[inline(always)]
pub(crate) fn column_max<T: Element, S: Simd<T>, P: Pre<T, S>>(s: S, p: &P, scratch: &[T]) -> S::V {
    let l = S::LANES;
    let (mut m, mut m2) = (s.splat(T::NEG_INFINITY), s.splat(T::NEG_INFINITY));
    let mut pairs = scratch.chunks_exact(2 * l);
    for pair in &mut pairs {
        m = s.max(m, p.apply(s, s.load(pair)));
        m2 = s.max(m2, p.apply(s, s.load(&pair[l..])));
    }
    if !pairs.remainder().is_empty() {
        m = s.max(m, p.apply(s, s.load(pairs.remainder())));
    }
    s.max(m, m2)
}

/// Transposes rows `r0..r0 + k` (`k <= LANES`) of the `cols`-wide matrix at `src` into the
/// column-major `scratch` (`scratch[j * LANES + r] = x[r0 + r, j]`; `SMALL_COLS * MAX_LANES`
/// elements, room for the padding columns of [`Simd::tile_in`]); the lanes of absent rows are 0.
///
/// # Safety
/// The rows are in bounds and not written by anyone else meanwhile.
#[inline(always)]
pub(crate) unsafe fn load_tile<T: Element, S: Simd<T>>(
    s: S,
    src: SendPtr<T>,
    r0: usize,
    k: usize,
    cols: usize,
    scratch: &mut [T],
) {
    let l = S::LANES;
    let tile = src.slice(r0 * cols, k * cols);
    if k == l {
        s.tile_in(tile, cols, scratch);
        return;
    }
    for (r, row) in tile.chunks_exact(cols).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            scratch[j * l + r] = v;
        }
    }
    for j in 0..cols {
        scratch[j * l + k..(j + 1) * l].fill(T::ZERO);
    }
}

/// The inverse of [`load_tile`]: rows `r0..r0 + k` of the `cols`-wide matrix at `dst` from the
/// column-major `scratch` (the whole buffer [`load_tile`] filled), each column times `scale` if
/// given.
///
/// # Safety
/// The rows are in bounds and belong to the caller's task.
#[inline(always)]
pub(crate) unsafe fn store_tile<T: Element, S: Simd<T>>(
    s: S,
    scratch: &[T],
    dst: SendPtr<T>,
    r0: usize,
    k: usize,
    cols: usize,
    scale: Option<S::V>,
) {
    let l = S::LANES;
    let out = std::slice::from_raw_parts_mut(dst.0.add(r0 * cols), k * cols);
    if k == l {
        s.tile_out(scratch, cols, out, scale);
        return;
    }
    let mut lanes = [T::ONE; MAX_LANES];
    if let Some(v) = scale {
        s.store(&mut lanes, v);
    }
    for (r, row) in out.chunks_exact_mut(cols).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = scratch[j * l + r] * lanes[r];
        }
    }
}

/// Rows per parallel task on the tile path: the usual grain, in whole tiles of the widest vector.
pub(crate) fn tile_chunk(cols: usize) -> usize {
    (crate::parallel::chunk_rows(cols) / MAX_LANES).max(1) * MAX_LANES
}
