//! float32 <-> half-type conversions for the Python layer (half inputs are computed in float32).

use super::arrays::borrow_err;
use super::{run, LayoutError};
use crate::convert::{self, Half};
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

/// `dst[...] = src` widened: `src` the uint16 words of float16 (or bfloat16), `dst` float32 of the
/// same size; both C-contiguous.
#[pyfunction]
pub(super) fn half_to_f32(
    py: Python<'_>,
    src: &Bound<'_, PyAny>,
    dst: &Bound<'_, PyAny>,
    bf16: bool,
) -> PyResult<()> {
    let s = contiguous::<u16>(src, "src")?
        .try_readonly()
        .map_err(borrow_err)?;
    let mut d = contiguous::<f32>(dst, "dst")?
        .try_readwrite()
        .map_err(borrow_err)?;
    let (s, d) = (
        s.as_slice().map_err(borrow_err)?,
        d.as_slice_mut().map_err(borrow_err)?,
    );
    run(py, s.len(), || {
        convert::half_to_f32(crate::simd::active(), s, d, kind(bf16))
    })
}

/// `dst[...] = src` rounded to nearest even: `src` float32, `dst` the uint16 words of float16 (or
/// bfloat16) of the same size; both C-contiguous.
#[pyfunction]
pub(super) fn f32_to_half(
    py: Python<'_>,
    src: &Bound<'_, PyAny>,
    dst: &Bound<'_, PyAny>,
    bf16: bool,
) -> PyResult<()> {
    let s = contiguous::<f32>(src, "src")?
        .try_readonly()
        .map_err(borrow_err)?;
    let mut d = contiguous::<u16>(dst, "dst")?
        .try_readwrite()
        .map_err(borrow_err)?;
    let (s, d) = (
        s.as_slice().map_err(borrow_err)?,
        d.as_slice_mut().map_err(borrow_err)?,
    );
    run(py, s.len(), || {
        convert::f32_to_half(crate::simd::active(), s, d, kind(bf16))
    })
}
