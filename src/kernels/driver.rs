//! The outline every kernel family follows, written once: check the shape, then pick the path from
//! the row length alone (so results never depend on the thread count):
//!
//! - tiny rows (`cols <= SMALL_COLS`, kernels that have a tile path): tiles of rows transposed so a
//!   vector holds one column ([`super::tile`]), ranges of whole tiles in parallel;
//! - huge rows (`cols >= SPLIT_ROW_MIN_COLS`): each row on its own, split into fixed segments:
//!   pass 1 per segment in parallel ([`Kernel::part`]), the parts merged in order and the row
//!   finished on the calling thread ([`Kernel::finish`]), then pass 2 per segment in parallel
//!   ([`Kernel::write`]) for kernels that write a row-shaped output;
//! - every other row length: ranges of whole rows in parallel ([`Rows::rows`]).
//!
//! A family implements [`Rows`] (and [`Kernel`] when it can split a row) for a small struct that
//! holds its inputs and outputs (raw pointers where the output may alias the input); the driver
//! hands out the work. Its contract, which the kernels' raw-pointer accesses rely on: every range it
//! passes is in bounds of the `rows × cols` matrix, each row (or segment of a split row) goes to one
//! task only, and pass 2 of a split row starts after its pass 1 and finish are done. Each piece of work runs inside
//! [`Backend::dispatch`], so the family's `#[inline(always)]` methods are compiled for the chosen
//! instruction set: the jobs here are structs because a closure would not be.

use std::marker::PhantomData;
use std::ops::Range;

use super::tile::{tile_chunk, NO_TILES, SMALL_COLS};
use super::SendPtr;
use crate::parallel::{chunk_rows, for_ranges, map_ranges, split_rows, SEGMENT};
use crate::simd::{Backend, Element, Isa, Simd, WithSimd};
use crate::KernelError;

/// The rows of a matrix of `n` elements whose output has the input's shape; `None` when there is
/// nothing to do (no rows, or rows of no columns).
pub(crate) fn matrix_rows(n: usize, cols: usize) -> Result<Option<usize>, KernelError> {
    if cols == 0 || n == 0 {
        return Ok(None);
    }
    if !n.is_multiple_of(cols) {
        return Err(KernelError::Shape(format!(
            "{n} elements do not form rows of {cols}"
        )));
    }
    Ok(Some(n / cols))
}

/// The rows of a matrix of `n` elements reduced to one value per row into an output of `out_len`
/// (rows of no columns are allowed: `out_len` empty rows).
pub(crate) fn reduced_rows(n: usize, cols: usize, out_len: usize) -> Result<usize, KernelError> {
    let rows = n.checked_div(cols).unwrap_or(out_len);
    if (cols == 0 && n != 0) || !n.is_multiple_of(cols.max(1)) || rows != out_len {
        return Err(KernelError::Shape(format!(
            "{n} elements in rows of {cols} do not match an output of {out_len} rows"
        )));
    }
    Ok(rows)
}

/// The output of a reduction: one value per row, `factor · v` stored as `T`.
pub(crate) struct PerRow<T> {
    out: SendPtr<T>,
    len: usize,
    factor: f64,
}

impl<T: Element> PerRow<T> {
    pub(crate) fn new(out: &mut [T], factor: f64) -> Self {
        PerRow {
            out: SendPtr(out.as_mut_ptr()),
            len: out.len(),
            factor,
        }
    }

    /// The raw destination (the tile path writes it itself).
    pub(crate) fn ptr(&self) -> SendPtr<T> {
        self.out
    }

    pub(crate) fn factor(&self) -> f64 {
        self.factor
    }

    /// Stores row `r`'s value `factor · v`.
    ///
    /// # Safety
    /// `r` is a row of the matrix (`r < out.len()`) that belongs to the caller's task (the driver
    /// hands each row to one task).
    #[inline(always)]
    pub(crate) unsafe fn put(&self, r: usize, v: f64) {
        debug_assert!(r < self.len);
        *self.out.0.add(r) = T::from_f64(v * self.factor);
    }
}

/// A kernel's work on whole rows, on one thread; the driver hands out the ranges.
pub(crate) trait Rows<T: Element>: Sync {
    /// What a range of rows gives back (`()` for kernels that only write).
    type Out: Send;
    fn rows<S: Simd<T>>(&self, s: S, rows: Range<usize>) -> Self::Out;
}

/// A kernel that [`run`] can also send down the tile path and split across threads.
pub(crate) trait Kernel<T: Element>: Rows<T, Out = ()> {
    /// Rows of at most this many columns (at most `SMALL_COLS`) take [`Kernel::tile`].
    const TILE_COLS: usize = NO_TILES;
    /// Whether a split row has a pass 2 ([`Kernel::write`]).
    const WRITES: bool = false;
    /// Pass 1's result on one segment of a split row.
    type Part: Send + Sync;
    /// What the finished row hands to pass 2.
    type Fin: Copy + Send + Sync;

    /// Rows of at most `TILE_COLS` columns, a range of whole tiles.
    fn tile<S: Simd<T>>(&self, _s: S, _rows: Range<usize>) {
        unreachable!("the kernel has no tile path")
    }
    /// Pass 1 on columns `seg` of row `row`.
    fn part<S: Simd<T>>(&self, s: S, row: usize, seg: Range<usize>) -> Self::Part;
    /// Merges the parts of row `row` (in order) and finishes it, on the calling thread: a reduction
    /// writes its value here; it may dispatch further vector work itself.
    fn finish(&self, backend: Backend, row: usize, parts: &[Self::Part]) -> Self::Fin;
    /// Pass 2 on columns `seg` of row `row` (when `WRITES`).
    fn write<S: Simd<T>>(
        &self,
        _s: S,
        _row: usize,
        _seg: Range<usize>,
        _part: &Self::Part,
        _fin: Self::Fin,
    ) {
        unreachable!("the kernel has no pass 2")
    }
}

/// A kernel's work on one segment of a row (or of anything split in fixed segments).
pub(crate) trait Segments<T: Element>: Sync {
    type Out: Send;
    fn segment<S: Simd<T>>(&self, s: S, seg: Range<usize>) -> Self::Out;
}

/// Whether rows of `cols` take the tile path of a kernel that takes tiles up to `tile_cols` columns.
pub(crate) fn takes_tiles(cols: usize, tile_cols: usize) -> bool {
    cols <= tile_cols.min(SMALL_COLS)
}

/// Rows per task for rows of `cols` in a kernel that takes tiles up to `tile_cols` columns: whole
/// tiles on the tile path, else the row path's grain. The half-precision blocks use it too, so each
/// block is one float32 task.
pub(crate) fn task_rows(cols: usize, tile_cols: usize) -> usize {
    if takes_tiles(cols, tile_cols) {
        tile_chunk(cols)
    } else {
        chunk_rows(cols)
    }
}

/// Runs kernel `k` over a `rows × cols` matrix (`cols > 0`), on the path the shape picks.
pub(crate) fn run<T: Element, K: Kernel<T>>(backend: Backend, k: &K, rows: usize, cols: usize) {
    debug_assert!(cols > 0, "the caller handles rows of no columns");
    if takes_tiles(cols, K::TILE_COLS) {
        for_ranges(rows, task_rows(cols, K::TILE_COLS), rows * cols, |range| {
            backend.dispatch(RowsJob::new(&Tiles(k), range))
        });
    } else if split_rows(cols) {
        for row in 0..rows {
            let parts = map_segments(backend, cols, &PartOf { k, row });
            let fin = k.finish(backend, row, &parts);
            if K::WRITES {
                let parts = &parts;
                map_segments(backend, cols, &WriteOf { k, row, parts, fin });
            }
        }
    } else {
        map_rows(backend, k, rows, cols);
    }
}

/// Ranges of whole rows of `cols` in parallel (when the matrix is large); the ranges' results in
/// order.
pub(crate) fn map_rows<T: Element, K: Rows<T>>(
    backend: Backend,
    k: &K,
    rows: usize,
    cols: usize,
) -> Vec<K::Out> {
    map_ranges(rows, chunk_rows(cols), rows * cols, |range| {
        backend.dispatch(RowsJob::new(k, range))
    })
}

/// Ranges of whole tiles of rows of `cols <= SMALL_COLS` in parallel (the tile path of a kernel
/// that gives back a value per range); the ranges' results in order.
pub(crate) fn map_tiles<T: Element, K: Rows<T>>(
    backend: Backend,
    k: &K,
    rows: usize,
    cols: usize,
) -> Vec<K::Out> {
    debug_assert!(cols <= SMALL_COLS);
    map_ranges(rows, tile_chunk(cols), rows * cols, |range| {
        backend.dispatch(RowsJob::new(k, range))
    })
}

/// `f` on each fixed segment of `0..len` in parallel; the results in order.
pub(crate) fn map_segments<T: Element, F: Segments<T>>(
    backend: Backend,
    len: usize,
    f: &F,
) -> Vec<F::Out> {
    map_ranges(len, SEGMENT, len, |seg| {
        backend.dispatch(SegmentJob {
            f,
            seg,
            t: PhantomData,
        })
    })
}

/// The tile path of a kernel, as whole-row work.
struct Tiles<'a, K>(&'a K);

impl<T: Element, K: Kernel<T>> Rows<T> for Tiles<'_, K> {
    type Out = ();
    #[inline(always)]
    fn rows<S: Simd<T>>(&self, s: S, rows: Range<usize>) {
        self.0.tile(s, rows)
    }
}

/// Pass 1 of split row `row`.
struct PartOf<'a, K> {
    k: &'a K,
    row: usize,
}

impl<T: Element, K: Kernel<T>> Segments<T> for PartOf<'_, K> {
    type Out = K::Part;
    #[inline(always)]
    fn segment<S: Simd<T>>(&self, s: S, seg: Range<usize>) -> K::Part {
        self.k.part(s, self.row, seg)
    }
}

/// Pass 2 of split row `row`.
struct WriteOf<'a, K, P, F> {
    k: &'a K,
    row: usize,
    parts: &'a [P],
    fin: F,
}

impl<T: Element, K: Kernel<T>> Segments<T> for WriteOf<'_, K, K::Part, K::Fin> {
    type Out = ();
    #[inline(always)]
    fn segment<S: Simd<T>>(&self, s: S, seg: Range<usize>) {
        let part = &self.parts[seg.start / SEGMENT];
        self.k.write(s, self.row, seg, part, self.fin)
    }
}

struct RowsJob<'a, T, K> {
    k: &'a K,
    rows: Range<usize>,
    t: PhantomData<T>,
}

impl<'a, T, K> RowsJob<'a, T, K> {
    fn new(k: &'a K, rows: Range<usize>) -> Self {
        RowsJob {
            k,
            rows,
            t: PhantomData,
        }
    }
}

impl<T: Element, K: Rows<T>> WithSimd for RowsJob<'_, T, K> {
    type Output = K::Out;
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) -> K::Out {
        self.k.rows(T::simd(s), self.rows)
    }
}

struct SegmentJob<'a, T, F> {
    f: &'a F,
    seg: Range<usize>,
    t: PhantomData<T>,
}

impl<T: Element, F: Segments<T>> WithSimd for SegmentJob<'_, T, F> {
    type Output = F::Out;
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) -> F::Out {
        self.f.segment(T::simd(s), self.seg)
    }
}
