//! Entropy and KL divergence, of probabilities or of logits.

use super::arrays::{array, cols, dispatch, output, with_slice, with_slice_mut};
use super::run;
use super::LayoutError;
use crate::kernels::entropy::{self as ent, Input};
use crate::simd;
use numpy::PyUntypedArrayMethods;
use pyo3::prelude::*;

/// Over the last axis: `scale · H(p)`, or with `q` (same shape and dtype) `scale · KL(p ‖ q)`;
/// `from_logits` takes logits and uses their softmax. Returns a new array of shape `p.shape[:-1]`.
#[pyfunction]
#[pyo3(signature = (p, q, from_logits, scale))]
pub(super) fn entropy<'py>(
    py: Python<'py>,
    p: &Bound<'py, PyAny>,
    q: Option<&Bound<'py, PyAny>>,
    from_logits: bool,
    scale: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let input = if from_logits {
        Input::Logits
    } else {
        Input::Probs
    };
    dispatch!(p, T => {
        let p = array::<T>(p, "p")?;
        let shape = p.shape();
        let o = output::<T>(py, &shape[..shape.len() - 1], None, "out")?;
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
            let job = |qs: Option<&[T]>| {
                with_slice_mut(&o, |os| {
                    run(py, ps.len(), || ent::entropy(simd::active(), ps, qs, c, input, scale, os))
                })
            };
            match q {
                None => job(None),
                Some(q) => with_slice(q, |qs| job(Some(qs))),
            }
        })?;
        Ok(o.into_any())
    })
}
