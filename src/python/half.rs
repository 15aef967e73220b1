//! The half-precision entries: float16/bfloat16 arrays handed over as their 16-bit words (the
//! Python layer passes `.view(numpy.uint16)` and says which type they hold), computed in float32
//! block by block (`kernels::half`): one pass over the 16-bit words. Row-shaped results are written
//! as 16-bit words into `out`; per-row results come back as new float32 arrays (small), which the
//! Python layer rounds to the result dtype.

use super::arrays::{array, cols, output, with_buf, with_slice, with_slice_mut};
use super::convert::kind;
use super::softmax::write_vjp;
use super::{run, LayoutError};
use crate::kernels::backward::Vjp;
use crate::kernels::entropy::Input;
use crate::kernels::half;
use crate::kernels::softmax::Mode;
use crate::simd;
use numpy::{PyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

/// A float32 NumPy array.
type F32s<'py> = Bound<'py, PyArrayDyn<f32>>;

/// A new float32 array shaped like `x` without its last axis.
fn per_row<'py>(py: Python<'py>, x: &Bound<'py, PyArrayDyn<u16>>) -> PyResult<F32s<'py>> {
    let shape = x.shape();
    output::<f32>(py, &shape[..shape.len() - 1], None, "out")
}

/// `softmax(x · scale)` (`log=True`: log-softmax) over the last axis of the half array `x` (bfloat16
/// when `bf16`) into `out` (its shape and type; may be `x` itself).
#[pyfunction]
pub(super) fn half_softmax(
    py: Python<'_>,
    bf16: bool,
    x: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    scale: f64,
    log: bool,
) -> PyResult<()> {
    let mode = if log { Mode::LogSoftmax } else { Mode::Softmax };
    let x = array::<u16>(x, "x")?;
    let o = output::<u16>(py, x.shape(), Some(out), "out")?;
    if x.len() == 0 {
        return Ok(());
    }
    let c = cols(x);
    with_buf(x, &o, |buf| {
        let n = buf.len();
        run(py, n, || {
            half::softmax(simd::active(), kind(bf16), buf, c, scale, mode)
        })
    })
}

/// The vector-Jacobian product of softmax (or log-softmax) of half arrays `g` and `y` (one shape
/// and type) into `out` (which may be `g` or `y`).
#[pyfunction]
pub(super) fn half_softmax_backward(
    py: Python<'_>,
    bf16: bool,
    log: bool,
    g: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let vjp = if log { Vjp::LogSoftmax } else { Vjp::Softmax };
    let (g, y) = (array::<u16>(g, "grad_output")?, array::<u16>(y, "y")?);
    if g.shape() != y.shape() {
        return Err(LayoutError::new_err(
            "grad_output and y must have one shape",
        ));
    }
    let o = output::<u16>(py, g.shape(), Some(out), "out")?;
    if g.len() == 0 {
        return Ok(());
    }
    let (n, c) = (g.len(), cols(g));
    write_vjp(g, y, &o, |buf| {
        run(py, n, || {
            half::softmax_backward(simd::active(), kind(bf16), buf, c, vjp)
        })
    })
}

/// `logsumexp(x · scale) / scale` over the last axis of the half array `x`, as a new float32 array.
#[pyfunction]
pub(super) fn half_logsumexp<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    scale: f64,
    bf16: bool,
) -> PyResult<F32s<'py>> {
    let x = array::<u16>(x, "x")?;
    let o = per_row(py, x)?;
    let c = cols(x);
    with_slice(x, |xs| {
        with_slice_mut(&o, |os| {
            run(py, xs.len(), || {
                half::logsumexp(simd::active(), kind(bf16), xs, c, scale, os)
            })
        })
    })?;
    Ok(o)
}

/// SciPy's weighted logsumexp of `x · scale` (the product rounded to float32) with weights `b`
/// (half arrays of one shape and type) over the last axis: new float32 arrays `(log|Σ|, sign)`.
#[pyfunction]
pub(super) fn half_logsumexp_b<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    scale: f32,
    bf16: bool,
) -> PyResult<(F32s<'py>, F32s<'py>)> {
    let (x, b) = (array::<u16>(x, "x")?, array::<u16>(b, "b")?);
    let (res, sign) = (per_row(py, x)?, per_row(py, x)?);
    let c = cols(x);
    with_slice(x, |xs| {
        with_slice(b, |bs| {
            with_slice_mut(&res, |os| {
                with_slice_mut(&sign, |ss| {
                    run(py, xs.len(), || {
                        let k = kind(bf16);
                        half::logsumexp_weighted(simd::active(), k, (xs, bs), c, scale, (os, ss))
                    })
                })
            })
        })
    })?;
    Ok((res, sign))
}

/// `scale · H(p)`, or with `q` `scale · KL(p ‖ q)`, over the last axis of half arrays (of one shape
/// and type; `from_logits`: of their softmax), as a new float32 array.
#[pyfunction]
#[pyo3(signature = (p, q, from_logits, scale, bf16))]
pub(super) fn half_entropy<'py>(
    py: Python<'py>,
    p: &Bound<'py, PyAny>,
    q: Option<&Bound<'py, PyAny>>,
    from_logits: bool,
    scale: f64,
    bf16: bool,
) -> PyResult<F32s<'py>> {
    let input = if from_logits {
        Input::Logits
    } else {
        Input::Probs
    };
    let p = array::<u16>(p, "p")?;
    let q = q.map(|q| array::<u16>(q, "q")).transpose()?;
    let o = per_row(py, p)?;
    let c = cols(p);
    let go = |ps: &[u16], qs: Option<&[u16]>| {
        with_slice_mut(&o, |os| {
            run(py, ps.len(), || {
                let k = kind(bf16);
                half::entropy(simd::active(), k, (ps, qs), c, (input, scale), os)
            })
        })
    };
    with_slice(p, |ps| match q {
        None => go(ps, None),
        Some(q) => with_slice(q, |qs| go(ps, Some(qs))),
    })?;
    Ok(o)
}
