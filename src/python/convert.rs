//! float32 <-> half-type conversions for the Python layer, and the half types' names.

use super::arrays::{array, borrow_err, Stored};
use super::run;
use crate::convert::{self, Half};
use crate::KernelError;
use numpy::{PyArrayDyn, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// The half type named by the entries' `half=` argument (their arrays hold its 16-bit words).
pub(super) fn kind(name: &str) -> PyResult<Half> {
    match name {
        "float16" => Ok(Half::F16),
        "bfloat16" => Ok(Half::BF16),
        _ => Err(PyValueError::new_err(format!(
            "half must be 'float16' or 'bfloat16', got {name:?}"
        ))),
    }
}

/// `dst[...] = src` converted: widened when `src` holds the uint16 words of float16 (or bfloat16)
/// and `dst` is float32, rounded to nearest even the other way round; `half` names the type. Both
/// of one size, aligned and C-contiguous, at least 1-D.
#[pyfunction]
pub(super) fn convert_half(
    py: Python<'_>,
    src: &Bound<'_, PyAny>,
    dst: &Bound<'_, PyAny>,
    half: &str,
) -> PyResult<()> {
    let (half, b) = (kind(half)?, crate::simd::active());
    if src.cast::<PyArrayDyn<u16>>().is_ok() {
        convert_into::<u16, f32>(py, src, dst, |s, d| convert::half_to_f32(b, s, d, half))
    } else {
        convert_into::<f32, u16>(py, src, dst, |s, d| convert::f32_to_half(b, s, d, half))
    }
}

/// `f(src, dst)` on the elements of two C-contiguous arrays, the GIL released when they are large.
fn convert_into<S: Stored, D: Stored>(
    py: Python<'_>,
    src: &Bound<'_, PyAny>,
    dst: &Bound<'_, PyAny>,
    f: impl FnOnce(&[S], &mut [D]) -> Result<(), KernelError> + Send,
) -> PyResult<()> {
    let s = array::<S>(src, "src")?.try_readonly().map_err(borrow_err)?;
    let mut d = array::<D>(dst, "dst")?
        .try_readwrite()
        .map_err(borrow_err)?;
    let s = s.as_slice().map_err(borrow_err)?;
    let d = d.as_slice_mut().map_err(borrow_err)?;
    run(py, s.len(), || f(s, d))
}
