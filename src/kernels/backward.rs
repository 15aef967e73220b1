//! Vector-Jacobian products of `softmax` and `log_softmax` over the rows of a matrix: what an autograd
//! framework needs to use them as a layer.
//!
//! - softmax, given its output `y` and the upstream gradient `g`: `out = y · (g − Σ g·y)`;
//! - log_softmax, given its output `log_y`: `out = g − exp(log_y) · Σ g`.
//!
//! Each row is read twice while it sits in cache: pass 1 forms the row's reduction (`Σ g·y` or `Σ g`)
//! block by block with several vector accumulators and a compensated f64 sum of the block sums; pass 2
//! re-reads `g` and `y` and writes each output once. The output may be `g` or `y` itself (in place):
//! pass 2 loads both vectors into registers before it stores the result.

use std::ops::Range;

use super::driver::{self, Kernel, Rows};
use super::row::{Total, BLOCK};
use super::SendPtr;
use crate::simd::{Backend, Element, Simd};
use crate::KernelError;

/// Which vector-Jacobian product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vjp {
    /// `out = y · (g − Σ g·y)`; the second input is the softmax output `y`.
    Softmax,
    /// `out = g − exp(log_y) · Σ g`; the second input is the log-softmax output `log_y`.
    LogSoftmax,
}

/// Where `g`, `y` and the output are (some equal when in place).
type Ptrs<T> = (SendPtr<T>, SendPtr<T>, SendPtr<T>);

/// The two inputs (upstream gradient `g` and forward output `y`) and where the result goes.
pub enum VjpBuf<'a, T> {
    /// Read `g` and `y`, write `out` (all the same length).
    Separate {
        g: &'a [T],
        y: &'a [T],
        out: &'a mut [T],
    },
    /// Overwrite `g` with the result (`out=grad_output`).
    IntoGrad { g: &'a mut [T], y: &'a [T] },
    /// Overwrite `y` with the result (`out=y`).
    IntoY { g: &'a [T], y: &'a mut [T] },
    /// `g`, `y` and the output are one buffer.
    Same(&'a mut [T]),
}

impl<T> VjpBuf<'_, T> {
    /// Checks the three buffers hold rows of `cols` alike: their number and the `(g, y, out)`
    /// pointers, or `None` when there is nothing to do.
    pub(crate) fn matrix(&mut self, cols: usize) -> Result<Option<(usize, Ptrs<T>)>, KernelError> {
        let (ng, ny, no) = self.lens();
        if ng != ny || ng != no {
            return Err(KernelError::Shape(format!(
                "grad_output has {ng} elements, y has {ny}, out has {no}"
            )));
        }
        Ok(driver::matrix_rows(ng, cols)?.map(|rows| (rows, self.ptrs())))
    }

    fn lens(&self) -> (usize, usize, usize) {
        match self {
            VjpBuf::Separate { g, y, out } => (g.len(), y.len(), out.len()),
            VjpBuf::IntoGrad { g, y } => (g.len(), y.len(), g.len()),
            VjpBuf::IntoY { g, y } => (g.len(), y.len(), y.len()),
            VjpBuf::Same(b) => (b.len(), b.len(), b.len()),
        }
    }

    /// `(g, y, out)` as raw pointers (some equal when in place).
    fn ptrs(&mut self) -> Ptrs<T> {
        let ro = |s: &[T]| SendPtr(s.as_ptr() as *mut T);
        match self {
            VjpBuf::Separate { g, y, out } => (ro(g), ro(y), SendPtr(out.as_mut_ptr())),
            VjpBuf::IntoGrad { g, y } => {
                let p = g.as_mut_ptr();
                (SendPtr(p), ro(y), SendPtr(p))
            }
            VjpBuf::IntoY { g, y } => {
                let p = y.as_mut_ptr();
                (ro(g), SendPtr(p), SendPtr(p))
            }
            VjpBuf::Same(b) => {
                let p = b.as_mut_ptr();
                (SendPtr(p), SendPtr(p), SendPtr(p))
            }
        }
    }
}

/// Writes the vector-Jacobian product `kind` of each row of the `rows × cols` matrices in `buf`.
pub fn softmax_backward<T: Element>(
    backend: Backend,
    mut buf: VjpBuf<'_, T>,
    cols: usize,
    kind: Vjp,
) -> Result<(), KernelError> {
    let Some((rows, (g, y, dst))) = buf.matrix(cols)? else {
        return Ok(());
    };
    let k = Backward {
        g,
        y,
        dst,
        cols,
        kind,
    };
    driver::run(backend, &k, rows, cols);
    Ok(())
}

struct Backward<T> {
    g: SendPtr<T>,
    y: SendPtr<T>,
    dst: SendPtr<T>,
    cols: usize,
    kind: Vjp,
}

impl<T: Element> Backward<T> {
    /// Pass 1 on columns `seg` of row `r`.
    #[inline(always)]
    fn reduce_seg<S: Simd<T>>(&self, s: S, r: usize, seg: Range<usize>) -> f64 {
        let off = r * self.cols + seg.start;
        // SAFETY: the range is in bounds; nothing writes the row during pass 1, and the slices are
        // dropped before pass 2 touches the (possibly identical) destination.
        let (g, y) = unsafe { (self.g.slice(off, seg.len()), self.y.slice(off, seg.len())) };
        reduce(s, g, y, self.kind)
    }

    /// Pass 2 on columns `seg` of row `r`, which the caller's task owns.
    #[inline(always)]
    fn write_seg<S: Simd<T>>(&self, s: S, r: usize, seg: Range<usize>, red: T) {
        let off = r * self.cols + seg.start;
        let (g, y, dst) = (self.g.add(off), self.y.add(off), self.dst.add(off));
        // SAFETY: the range is in bounds and belongs to the caller's task alone.
        unsafe { write(s, g, y, dst, seg.len(), red, self.kind) }
    }
}

impl<T: Element> Rows<T> for Backward<T> {
    type Out = ();
    #[inline(always)]
    fn rows<S: Simd<T>>(&self, s: S, rows: Range<usize>) {
        for r in rows {
            let red = self.reduce_seg(s, r, 0..self.cols);
            self.write_seg(s, r, 0..self.cols, T::from_f64(red));
        }
    }
}

/// A split row: the reduction per segment, summed in order, then the segments written.
impl<T: Element> Kernel<T> for Backward<T> {
    const WRITES: bool = true;
    type Part = f64;
    type Fin = T;

    #[inline(always)]
    fn part<S: Simd<T>>(&self, s: S, row: usize, seg: Range<usize>) -> f64 {
        self.reduce_seg(s, row, seg)
    }

    fn finish(&self, _backend: Backend, _row: usize, parts: &[f64]) -> T {
        T::from_f64(Total::of(parts.iter().copied()))
    }

    #[inline(always)]
    fn write<S: Simd<T>>(&self, s: S, row: usize, seg: Range<usize>, _part: &f64, red: T) {
        self.write_seg(s, row, seg, red)
    }
}

/// Pass 1: `Σ g·y` (softmax) or `Σ g` (log-softmax) of a row or segment, in f64.
#[inline(always)]
fn reduce<T: Element, S: Simd<T>>(s: S, g: &[T], y: &[T], kind: Vjp) -> f64 {
    let mut acc = Total::default();
    for (gb, yb) in g.chunks(BLOCK).zip(y.chunks(BLOCK)) {
        let b = match kind {
            Vjp::Softmax => dot_block(s, gb, yb),
            Vjp::LogSoftmax => sum_block(s, gb),
        };
        acc.add(b.to_f64());
    }
    acc.value()
}

/// `Σ g·y` over one block, with four independent accumulators.
#[inline(always)]
fn dot_block<T: Element, S: Simd<T>>(s: S, g: &[T], y: &[T]) -> T {
    let l = S::LANES;
    let zero = s.splat(T::ZERO);
    let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
    let mut gq = g.chunks_exact(4 * l);
    let mut yq = y.chunks_exact(4 * l);
    for (gc, yc) in (&mut gq).zip(&mut yq) {
        a0 = s.mul_add(s.load(&gc[..l]), s.load(&yc[..l]), a0);
        a1 = s.mul_add(s.load(&gc[l..2 * l]), s.load(&yc[l..2 * l]), a1);
        a2 = s.mul_add(s.load(&gc[2 * l..3 * l]), s.load(&yc[2 * l..3 * l]), a2);
        a3 = s.mul_add(s.load(&gc[3 * l..]), s.load(&yc[3 * l..]), a3);
    }
    let mut gs = gq.remainder().chunks_exact(l);
    let mut ys = yq.remainder().chunks_exact(l);
    for (gc, yc) in (&mut gs).zip(&mut ys) {
        a0 = s.mul_add(s.load(gc), s.load(yc), a0);
    }
    let (gt, yt) = (gs.remainder(), ys.remainder());
    if !gt.is_empty() {
        let gv = s.load_partial(gt, T::ZERO);
        let yv = s.load_partial(yt, T::ZERO);
        a1 = s.mul_add(gv, yv, a1);
    }
    s.reduce_sum(s.add(s.add(a0, a1), s.add(a2, a3)))
}

/// `Σ g` over one block, with four independent accumulators.
#[inline(always)]
fn sum_block<T: Element, S: Simd<T>>(s: S, g: &[T]) -> T {
    let l = S::LANES;
    let zero = s.splat(T::ZERO);
    let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
    let mut gq = g.chunks_exact(4 * l);
    for gc in &mut gq {
        a0 = s.add(a0, s.load(&gc[..l]));
        a1 = s.add(a1, s.load(&gc[l..2 * l]));
        a2 = s.add(a2, s.load(&gc[2 * l..3 * l]));
        a3 = s.add(a3, s.load(&gc[3 * l..]));
    }
    let mut gs = gq.remainder().chunks_exact(l);
    for gc in &mut gs {
        a0 = s.add(a0, s.load(gc));
    }
    let gt = gs.remainder();
    if !gt.is_empty() {
        a1 = s.add(a1, s.load_partial(gt, T::ZERO));
    }
    s.reduce_sum(s.add(s.add(a0, a1), s.add(a2, a3)))
}

/// One vector of the output. A function, not a closure: closures are not compiled for the caller's
/// instruction set, so `exp` would not be inlined into them.
#[inline(always)]
fn vjp<T: Element, S: Simd<T>>(
    s: S,
    kind: Vjp,
    g: S::V,
    y: S::V,
    red: S::V,
    neg_red: S::V,
) -> S::V {
    match kind {
        Vjp::Softmax => s.mul(y, s.sub(g, red)),
        Vjp::LogSoftmax => s.mul_add(s.exp(y), neg_red, g),
    }
}

/// Pass 2: `dst = y·(g − red)` or `dst = g − exp(y)·red`. `dst` may equal `g` or `y`.
///
/// # Safety
/// `g`, `y` and `dst` must be valid for `len` elements, and nobody else may touch them meanwhile.
#[inline(always)]
unsafe fn write<T: Element, S: Simd<T>>(
    s: S,
    g: SendPtr<T>,
    y: SendPtr<T>,
    dst: SendPtr<T>,
    len: usize,
    red: T,
    kind: Vjp,
) {
    let l = S::LANES;
    let rv = s.splat(red);
    let neg_rv = s.splat(-red);
    // Both inputs are loaded into registers before the result is stored, so `dst` may be either;
    // short-lived slices keep every access bounds-checked.
    let mut i = 0;
    while i + l <= len {
        let r = vjp(
            s,
            kind,
            s.load(g.add(i).slice(0, l)),
            s.load(y.add(i).slice(0, l)),
            rv,
            neg_rv,
        );
        s.store(dst.add(i).slice_mut(l), r);
        i += l;
    }
    if i < len {
        let t = len - i;
        let gv = s.load_partial(g.add(i).slice(0, t), T::ZERO);
        let yv = s.load_partial(y.add(i).slice(0, t), T::ZERO);
        s.store_partial(dst.add(i).slice_mut(t), vjp(s, kind, gv, yv, rv, neg_rv));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f64> {
        crate::kernels::testing::data(n, seed, 2.0)
    }

    fn softmax_rows(x: &[f64], cols: usize) -> Vec<f64> {
        x.chunks(cols)
            .flat_map(|r| {
                let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = r.iter().map(|v| (v - m).exp()).sum();
                r.iter().map(move |v| (v - m).exp() / s).collect::<Vec<_>>()
            })
            .collect()
    }

    fn check<T: Element>(tol: f64) {
        for &cols in &[1usize, 3, 16, 17, 33, 2049, 5000] {
            let rows = 3;
            let g64 = data(rows * cols, cols as u64);
            let y64 = softmax_rows(&data(rows * cols, cols as u64 + 7), cols);
            let g: Vec<T> = g64.iter().map(|&v| T::from_f64(v)).collect();
            let y: Vec<T> = y64.iter().map(|&v| T::from_f64(v)).collect();
            for kind in [Vjp::Softmax, Vjp::LogSoftmax] {
                let second: Vec<T> = match kind {
                    Vjp::Softmax => y.clone(),
                    Vjp::LogSoftmax => y.iter().map(|v| T::from_f64(v.to_f64().ln())).collect(),
                };
                for b in Backend::supported() {
                    let mut out = vec![T::ZERO; rows * cols];
                    softmax_backward(
                        b,
                        VjpBuf::Separate {
                            g: &g,
                            y: &second,
                            out: &mut out,
                        },
                        cols,
                        kind,
                    )
                    .unwrap();
                    let mut inplace = g.clone();
                    softmax_backward(
                        b,
                        VjpBuf::IntoGrad {
                            g: &mut inplace,
                            y: &second,
                        },
                        cols,
                        kind,
                    )
                    .unwrap();
                    assert_eq!(
                        out.iter().map(|v| v.to_f64()).collect::<Vec<_>>(),
                        inplace.iter().map(|v| v.to_f64()).collect::<Vec<_>>()
                    );
                    for r in 0..rows {
                        let gr = crate::kernels::testing::row_f64(&g, r, cols);
                        let yr = crate::kernels::testing::row_f64(&second, r, cols);
                        let (red, mag): (f64, f64) = match kind {
                            Vjp::Softmax => (
                                gr.iter().zip(&yr).map(|(a, b)| a * b).sum(),
                                gr.iter().zip(&yr).map(|(a, b)| (a * b).abs()).sum(),
                            ),
                            Vjp::LogSoftmax => (gr.iter().sum(), gr.iter().map(|a| a.abs()).sum()),
                        };
                        for j in 0..cols {
                            let (want, scale) = match kind {
                                Vjp::Softmax => {
                                    (yr[j] * (gr[j] - red), yr[j] * (gr[j].abs() + mag))
                                }
                                Vjp::LogSoftmax => {
                                    let e = yr[j].exp();
                                    (gr[j] - e * red, gr[j].abs() + e * mag)
                                }
                            };
                            let got = out[r * cols + j].to_f64();
                            assert!(
                                (got - want).abs() <= tol * scale + 1e-300,
                                "{b:?} {kind:?} cols={cols} r={r} j={j}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn matches_f64_reference_on_every_backend() {
        check::<f32>(2e-6);
        check::<f64>(1e-14);
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let g = [0.0f64; 6];
        let y = [0.0f64; 5];
        let mut out = [0.0f64; 6];
        let r = softmax_backward(
            Backend::Scalar,
            VjpBuf::Separate {
                g: &g,
                y: &y,
                out: &mut out,
            },
            3,
            Vjp::Softmax,
        );
        assert!(matches!(r, Err(KernelError::Shape(_))));
    }
}
