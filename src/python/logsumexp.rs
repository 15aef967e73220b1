//! `logsumexp`, plain and with SciPy's weights `b`, of float32/float64 arrays or of the 16-bit
//! words of half arrays (into float32 results).

use super::arrays::{array, cols, dispatch, output, overlaps, with_slice, with_slice_mut, Stored};
use super::convert::kind;
use super::run;
use crate::kernels::{half, logsumexp as lse};
use crate::simd::{self, Element};
use crate::KernelError;
use numpy::PyUntypedArrayMethods;
use pyo3::prelude::*;

/// `logsumexp(x · scale) / scale` over the last axis into `out` (shape `x.shape[:-1]`) or a new
/// array; returns the result. `half`: `x` holds that half type's 16-bit words, the result is
/// float32.
#[pyfunction]
#[pyo3(signature = (x, out, scale, half=None))]
pub(super) fn logsumexp<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    out: Option<&Bound<'py, PyAny>>,
    scale: &Bound<'py, PyAny>,
    half: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    let scale = super::scale_of(scale)?;
    if let Some(k) = half.map(kind).transpose()? {
        return per_row::<u16, f32>(py, x, out, |xs, c, os| {
            half::logsumexp(simd::active(), k, xs, c, scale.hi, os)
        });
    }
    dispatch!(x, T => per_row::<T, T>(py, x, out, |xs, c, os| {
        lse::logsumexp_scaled(simd::active(), xs, c, scale, os)
    }))
}

/// Runs `kernel(x, cols, out)` with `out` (shape `x.shape[:-1]`) given or new; returns it.
fn per_row<'py, T: Stored, O: Stored + Default>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    out: Option<&Bound<'py, PyAny>>,
    kernel: impl Fn(&[T], usize, &mut [O]) -> Result<(), KernelError> + Sync,
) -> PyResult<Bound<'py, PyAny>> {
    let x = array::<T>(x, "x")?;
    let shape = x.shape();
    let o = output::<O>(py, &shape[..shape.len() - 1], out, "out")?;
    let c = cols(x);
    if o.len() > 0 {
        let go = |xs: &[T], os: &mut [O]| run(py, xs.len(), || kernel(xs, c, os));
        if overlaps(x, &o) {
            // `out` lies inside `x`: the results go to a temporary first, so every row is read
            // before anything is written.
            let tmp = with_slice(x, |xs| {
                let mut t = vec![O::default(); o.len()];
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
}

/// SciPy's weighted logsumexp of `x' = x · scale` (the product rounded to `x`'s type) over the
/// last axis: `(log|Σ b·exp(x')|, sign(Σ b·exp(x')))`, two new arrays of shape `x.shape[:-1]`; `b`
/// has `x`'s shape and dtype. `half`: as in `logsumexp`, both results float32.
#[pyfunction]
#[pyo3(signature = (x, b, scale, half=None))]
pub(super) fn logsumexp_b<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    scale: f64,
    half: Option<&str>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    if let Some(k) = half.map(kind).transpose()? {
        let s = scale as f32;
        return weighted::<u16, f32>(py, (x, b), |xs, bs, c, outs| {
            half::logsumexp_weighted(simd::active(), k, (xs, bs), c, s, outs)
        });
    }
    dispatch!(x, T => weighted::<T, T>(py, (x, b), |xs, bs, c, (os, ss)| {
        lse::logsumexp_weighted(xs, bs, c, T::from_f64(scale), os, ss)
    }))
}

/// The two outputs of the weighted logsumexp.
type Pair<'a, O> = (&'a mut [O], &'a mut [O]);

/// Runs `kernel(x, b, cols, (res, sign))` into two new arrays of shape `x.shape[:-1]`.
fn weighted<'py, T: Stored, O: Stored>(
    py: Python<'py>,
    (x, b): (&Bound<'py, PyAny>, &Bound<'py, PyAny>),
    kernel: impl FnOnce(&[T], &[T], usize, Pair<'_, O>) -> Result<(), KernelError> + Send,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let (x, b) = (array::<T>(x, "x")?, array::<T>(b, "b")?);
    let shape = x.shape();
    let batch = &shape[..shape.len() - 1];
    let res = output::<O>(py, batch, None, "out")?;
    let sign = output::<O>(py, batch, None, "sign")?;
    if res.len() > 0 {
        let c = cols(x);
        with_slice(x, |xs| {
            with_slice(b, |bs| {
                with_slice_mut(&res, |os| {
                    with_slice_mut(&sign, |ss| {
                        run(py, xs.len(), || kernel(xs, bs, c, (os, ss)))
                    })
                })
            })
        })?;
    }
    Ok((res.into_any(), sign.into_any()))
}
