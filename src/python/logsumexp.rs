//! `logsumexp`, plain and with SciPy's weights `b`.

use super::arrays::{array, cols, dispatch, output, overlaps, with_slice, with_slice_mut};
use super::run;
use crate::kernels::logsumexp as lse;
use crate::simd;
use crate::simd::Element;
use numpy::PyUntypedArrayMethods;
use pyo3::prelude::*;

/// `logsumexp(x · scale) / scale` over the last axis into `out` (shape `x.shape[:-1]`) or a new
/// array; returns the result.
#[pyfunction]
#[pyo3(signature = (x, out, scale))]
pub(super) fn logsumexp<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    out: Option<&Bound<'py, PyAny>>,
    scale: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let scale = super::scale_of(scale)?;
    dispatch!(x, T => {
        let x = array::<T>(x, "x")?;
        let shape = x.shape();
        let o = output::<T>(py, &shape[..shape.len() - 1], out, "out")?;
        let c = cols(x);
        if o.len() > 0 {
            let go = |xs: &[T], os: &mut [T]| {
                run(py, xs.len(), || {
                    lse::logsumexp_scaled(simd::active(), xs, c, scale, os)
                })
            };
            if overlaps(x, &o) {
                // `out` lies inside `x`: the results go to a temporary first, so every row is read
                // before anything is written.
                let tmp = with_slice(x, |xs| {
                    let mut t = vec![T::ZERO; o.len()];
                    go(xs, &mut t).map(|_| t)
                })?;
                with_slice_mut(&o, |os| {
                    os.copy_from_slice(&tmp);
                    Ok(())
                })?;
            } else {
                with_slice(x, |xs| with_slice_mut(&o, |os| go(xs, os)))?;
            }
        }
        Ok(o.into_any())
    })
}

/// SciPy's weighted logsumexp over the last axis: `(log|Σ b·exp(x)|, sign(Σ b·exp(x)))`, two new
/// arrays of shape `x.shape[:-1]`; `b` has `x`'s shape and dtype.
#[pyfunction]
pub(super) fn logsumexp_b<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    dispatch!(x, T => {
        let x = array::<T>(x, "x")?;
        let b = array::<T>(b, "b")?;
        let shape = x.shape();
        let batch = &shape[..shape.len() - 1];
        let res: Bound<'py, PyArrayDyn<T>> = output(py, batch, None, "out")?;
        let sign: Bound<'py, PyArrayDyn<T>> = output(py, batch, None, "sign")?;
        if res.len() > 0 {
            let c = cols(x);
            with_slice(x, |xs| {
                with_slice(b, |bs| {
                    with_slice_mut(&res, |os| {
                        with_slice_mut(&sign, |ss| {
                            run(py, xs.len(), || lse::logsumexp_weighted(xs, bs, c, os, ss))
                        })
                    })
                })
            })?;
        }
        Ok((res.into_any(), sign.into_any()))
    })
}
