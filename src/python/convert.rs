//! float32 <-> half-type conversions for the Python layer (half inputs are computed in float32).

use super::arrays::borrow_err;
use super::{run, LayoutError};
use crate::convert::{self, Half};
use crate::KernelError;
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;

fn contiguous<'a, 'py, T: numpy::Element>(
    a: &'a Bound<'py, PyAny>,
    what: &str,
) -> PyResult<&'a Bound<'py, PyArrayDyn<T>>> {
    let a = a.cast::<PyArrayDyn<T>>().map_err(|_| {
        LayoutError::new_err(format!(
            "{what} must be a {} array",
            std::any::type_name::<T>()
        ))
    })?;
    if !a.is_c_contiguous() {
        return Err(LayoutError::new_err(format!("{what} must be C-contiguous")));
    }
    Ok(a)
}

/// The half type of the 16-bit words: bfloat16 or float16.
pub(super) fn kind(bf16: bool) -> Half {
    if bf16 {
        Half::BF16
    } else {
        Half::F16
    }
}

/// `dst[...] = src` converted: widened when `src` holds the uint16 words of float16 (or bfloat16)
/// and `dst` is float32, rounded to nearest even the other way round; same size, C-contiguous.
#[pyfunction]
pub(super) fn convert_half(
    py: Python<'_>,
    src: &Bound<'_, PyAny>,
    dst: &Bound<'_, PyAny>,
    bf16: bool,
) -> PyResult<()> {
    let (half, b) = (kind(bf16), crate::simd::active());
    if src.cast::<PyArrayDyn<u16>>().is_ok() {
        convert_into::<u16, f32>(py, src, dst, |s, d| convert::half_to_f32(b, s, d, half))
    } else {
        convert_into::<f32, u16>(py, src, dst, |s, d| convert::f32_to_half(b, s, d, half))
    }
}

/// `f(src, dst)` on the elements of two C-contiguous arrays, the GIL released when they are large.
fn convert_into<S: numpy::Element, D: numpy::Element>(
    py: Python<'_>,
    src: &Bound<'_, PyAny>,
    dst: &Bound<'_, PyAny>,
    f: impl FnOnce(&[S], &mut [D]) -> Result<(), KernelError> + Send,
) -> PyResult<()> {
    let s = contiguous::<S>(src, "src")?
        .try_readonly()
        .map_err(borrow_err)?;
    let mut d = contiguous::<D>(dst, "dst")?
        .try_readwrite()
        .map_err(borrow_err)?;
    let s = s.as_slice().map_err(borrow_err)?;
    let d = d.as_slice_mut().map_err(borrow_err)?;
    run(py, s.len(), || f(s, d))
}
