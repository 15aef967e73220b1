//! The softmax family and its vector-Jacobian products, of float32/float64 arrays or of the 16-bit
//! words of half arrays (computed in float32 block by block, `kernels::half`).

use super::arrays::{array, cols, dispatch, output, same_memory, with_buf, Stored};
use super::convert::kind;
use super::run;
use crate::kernels::backward::{self as bw, Vjp, VjpBuf};
use crate::kernels::softmax::{self as sm, Mode};
use crate::kernels::{half, Buf};
use crate::{simd, KernelError};
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;

/// `softmax(x · scale)` (`log=True`: log-softmax) over the last axis, into `out` (which may be `x`)
/// or a new array; returns the result. `half`: the arrays hold that half type's 16-bit words.
#[pyfunction]
#[pyo3(signature = (x, out, scale, log, half=None))]
pub(super) fn softmax<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    out: Option<&Bound<'py, PyAny>>,
    scale: &Bound<'py, PyAny>,
    log: bool,
    half: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    let mode = if log { Mode::LogSoftmax } else { Mode::Softmax };
    // The scale stays float64 (and `1/T`'s remainder): carried into the exponent.
    let scale = super::scale_of(scale)?;
    if let Some(k) = half.map(kind).transpose()? {
        return rows::<u16>(py, x, out, |buf, c| {
            half::softmax(simd::active(), k, buf, c, scale.hi, mode)
        });
    }
    dispatch!(x, T => rows::<T>(py, x, out, |buf, c| {
        sm::softmax_scaled(simd::active(), buf, c, scale, mode)
    }))
}

/// Runs `kernel(buf, cols)` on `x` and `out` (which may be `x`; a new array when None) and returns
/// the result.
fn rows<'py, T: Stored>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    out: Option<&Bound<'py, PyAny>>,
    kernel: impl FnOnce(Buf<'_, T>, usize) -> Result<(), KernelError> + Send,
) -> PyResult<Bound<'py, PyAny>> {
    let x = array::<T>(x, "x")?;
    let o = output::<T>(py, x.shape(), out, "out")?;
    if x.len() > 0 {
        let c = cols(x);
        with_buf(x, &o, |buf| {
            let n = buf.len();
            run(py, n, || kernel(buf, c))
        })?;
    }
    Ok(o.into_any())
}

/// The vector-Jacobian product of softmax (`y · (g − Σ g·y)`) or, with `log=True`, of log-softmax
/// (`g − exp(y) · Σ g`, `y` the log-softmax output) over the last axis; `out` may be `g` or `y`.
/// `half`: as in `softmax`.
#[pyfunction]
#[pyo3(signature = (g, y, out, log, half=None))]
pub(super) fn softmax_backward<'py>(
    py: Python<'py>,
    g: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    out: Option<&Bound<'py, PyAny>>,
    log: bool,
    half: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    let vjp = if log { Vjp::LogSoftmax } else { Vjp::Softmax };
    if let Some(k) = half.map(kind).transpose()? {
        return vjp_rows::<u16>(py, (g, y, out), |buf, c| {
            half::softmax_backward(simd::active(), k, buf, c, vjp)
        });
    }
    dispatch!(g, T => vjp_rows::<T>(py, (g, y, out), |buf, c| {
        bw::softmax_backward(simd::active(), buf, c, vjp)
    }))
}

/// Runs `kernel(buf, cols)` on `g`, `y` (one shape) and `out` (which may be either; a new array
/// when None) and returns the result.
fn vjp_rows<'py, T: Stored>(
    py: Python<'py>,
    (g, y, out): (
        &Bound<'py, PyAny>,
        &Bound<'py, PyAny>,
        Option<&Bound<'py, PyAny>>,
    ),
    kernel: impl FnOnce(VjpBuf<'_, T>, usize) -> Result<(), KernelError> + Send,
) -> PyResult<Bound<'py, PyAny>> {
    let (g, y) = (array::<T>(g, "grad_output")?, array::<T>(y, "y")?);
    if g.shape() != y.shape() {
        return Err(super::LayoutError::new_err(format!(
            "grad_output {:?} and y {:?} must have one shape",
            g.shape(),
            y.shape()
        )));
    }
    let o = output::<T>(py, g.shape(), out, "out")?;
    if g.len() > 0 {
        let (n, c) = (g.len(), cols(g));
        write_vjp(g, y, &o, |buf| run(py, n, || kernel(buf, c)))?;
    }
    Ok(o.into_any())
}

/// Calls `go` with `g`, `y` and `o` as a [`VjpBuf`] (in place when `o` is `g` and/or `y`).
fn write_vjp<T: Stored>(
    g: &Bound<'_, PyArrayDyn<T>>,
    y: &Bound<'_, PyArrayDyn<T>>,
    o: &Bound<'_, PyArrayDyn<T>>,
    go: impl FnOnce(VjpBuf<'_, T>) -> PyResult<()>,
) -> PyResult<()> {
    use super::arrays::borrow_err as e;
    // In place when `out` is `g` and/or `y`; any other overlap is refused by `same_memory`.
    match (same_memory(g, o, "out")?, same_memory(y, o, "out")?) {
        (true, true) => {
            let mut w = o.try_readwrite().map_err(e)?;
            go(VjpBuf::Same(w.as_slice_mut().map_err(e)?))
        }
        (true, false) => {
            let r = y.try_readonly().map_err(e)?;
            let mut w = o.try_readwrite().map_err(e)?;
            let (y, g) = (r.as_slice().map_err(e)?, w.as_slice_mut().map_err(e)?);
            go(VjpBuf::IntoGrad { g, y })
        }
        (false, true) => {
            let r = g.try_readonly().map_err(e)?;
            let mut w = o.try_readwrite().map_err(e)?;
            let (g, y) = (r.as_slice().map_err(e)?, w.as_slice_mut().map_err(e)?);
            go(VjpBuf::IntoY { g, y })
        }
        (false, false) => {
            // `g` and `y` may be one array: read-only borrows can be taken twice.
            let (rg, ry) = (g.try_readonly().map_err(e)?, y.try_readonly().map_err(e)?);
            let (gs, ys) = (rg.as_slice().map_err(e)?, ry.as_slice().map_err(e)?);
            let mut w = o.try_readwrite().map_err(e)?;
            let out = w.as_slice_mut().map_err(e)?;
            go(VjpBuf::Separate { g: gs, y: ys, out })
        }
    }
}
