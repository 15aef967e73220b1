//! Entropy and KL divergence, of probabilities or of logits: float32/float64 arrays, or the 16-bit
//! words of half arrays (into float32 results).

use super::arrays::{array, cols, dispatch, output, with_slice, with_slice_mut, Stored};
use super::convert::kind;
use super::{run, LayoutError};
use crate::kernels::entropy::{self as ent, Input};
use crate::kernels::half;
use crate::{simd, KernelError};
use numpy::PyUntypedArrayMethods;
use pyo3::prelude::*;

/// Over the last axis: `scale · H(p)`, or with `q` (same shape and dtype) `scale · KL(p ‖ q)`;
/// `from_logits` takes logits and uses their softmax. Returns a new array of shape `p.shape[:-1]`
/// (float32 for `half`, the half type whose 16-bit words `p` and `q` hold).
#[pyfunction]
#[pyo3(signature = (p, q, from_logits, scale, half=None))]
pub(super) fn entropy<'py>(
    py: Python<'py>,
    p: &Bound<'py, PyAny>,
    q: Option<&Bound<'py, PyAny>>,
    from_logits: bool,
    scale: f64,
    half: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    let input = if from_logits {
        Input::Logits
    } else {
        Input::Probs
    };
    if let Some(k) = half.map(kind).transpose()? {
        return per_row::<u16, f32>(py, (p, q), |ps, qs, c, os| {
            half::entropy(simd::active(), k, (ps, qs), c, (input, scale), os)
        });
    }
    dispatch!(p, T => per_row::<T, T>(py, (p, q), |ps, qs, c, os| {
        ent::entropy(simd::active(), ps, qs, c, input, scale, os)
    }))
}

/// Runs `kernel(p, q, cols, out)` into a new array of shape `p.shape[:-1]`.
fn per_row<'py, T: Stored, O: Stored>(
    py: Python<'py>,
    (p, q): (&Bound<'py, PyAny>, Option<&Bound<'py, PyAny>>),
    kernel: impl FnOnce(&[T], Option<&[T]>, usize, &mut [O]) -> Result<(), KernelError> + Send,
) -> PyResult<Bound<'py, PyAny>> {
    let p = array::<T>(p, "p")?;
    let shape = p.shape();
    let o = output::<O>(py, &shape[..shape.len() - 1], None, "out")?;
    if o.len() == 0 {
        return Ok(o.into_any());
    }
    let q = q.map(|q| array::<T>(q, "q")).transpose()?;
    if let Some(q) = q.as_ref().filter(|q| q.shape() != p.shape()) {
        let msg = format!("q has shape {:?}, p has {:?}", q.shape(), p.shape());
        return Err(LayoutError::new_err(msg));
    }
    let c = cols(p);
    with_slice(p, |ps| {
        let job =
            |qs: Option<&[T]>| with_slice_mut(&o, |os| run(py, ps.len(), || kernel(ps, qs, c, os)));
        match q {
            None => job(None),
            Some(q) => with_slice(q, |qs| job(Some(qs))),
        }
    })?;
    Ok(o.into_any())
}
