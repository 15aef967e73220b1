//! Borrowing NumPy arrays for the kernels: the layout checks, output allocation, in-place detection
//! and the one float32/float64 dispatch. The Python layer brings every array to the layout asked for
//! here (C-contiguous, aligned, native-order float32/float64, the reduced axis last). An array that
//! is not raises `LayoutError` (a `ValueError`): the Python layer tries the common call first and
//! makes the layout when it gets one. Nothing crashes.

use super::LayoutError;
use crate::kernels::Buf;
use crate::simd::Element;
use numpy::{IxDyn, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;

/// The element types the layout helpers below borrow: the floats, and the 16-bit words of the half
/// types (which reach the kernels as `uint16` views).
pub(crate) trait Stored: numpy::Element + Copy {}
impl<T: numpy::Element + Copy> Stored for T {}

/// The element types the kernels take from NumPy.
pub(crate) trait Float: Element + Stored {}
impl Float for f32 {}
impl Float for f64 {}

/// Runs `$body` with the type alias `$T` set to `f32` or `f64` after the dtype of the array `$x`;
/// any other dtype is a `LayoutError`. The body is compiled once per type.
macro_rules! dispatch {
    ($x:expr, $T:ident => $body:expr) => {{
        use numpy::PyArrayDyn;
        if $x.cast::<PyArrayDyn<f32>>().is_ok() {
            type $T = f32;
            $body
        } else if $x.cast::<PyArrayDyn<f64>>().is_ok() {
            type $T = f64;
            $body
        } else {
            Err($crate::python::arrays::dtype_error($x))
        }
    }};
}
pub(crate) use dispatch;

pub(crate) fn dtype_error(x: &Bound<'_, PyAny>) -> PyErr {
    LayoutError::new_err(format!(
        "expected a native-order float32 or float64 NumPy array, got {}",
        x.get_type()
    ))
}

pub(crate) fn borrow_err(e: impl std::fmt::Display) -> PyErr {
    LayoutError::new_err(format!("cannot use the array: {e}"))
}

/// Whether `p` is aligned for `T` (NumPy allows misaligned arrays; Rust slices may not be).
fn aligned<T>(p: *const T) -> bool {
    (p as usize).is_multiple_of(std::mem::align_of::<T>())
}

/// `a` as an array the kernels can read in place: `T`, C-contiguous, aligned, at least 1-D.
pub(crate) fn array<'a, 'py, T: Stored>(
    a: &'a Bound<'py, PyAny>,
    what: &str,
) -> PyResult<&'a Bound<'py, PyArrayDyn<T>>> {
    let a = a.cast::<PyArrayDyn<T>>().map_err(|_| {
        LayoutError::new_err(format!(
            "{what} must be a {} array like the other inputs",
            std::any::type_name::<T>()
        ))
    })?;
    if a.ndim() == 0 || !a.is_c_contiguous() || !aligned(a.data()) {
        return Err(LayoutError::new_err(format!(
            "{what} must be an aligned C-contiguous array of at least one dimension"
        )));
    }
    Ok(a)
}

/// The length of the last (reduced) axis.
pub(crate) fn cols<T: Stored>(a: &Bound<'_, PyArrayDyn<T>>) -> usize {
    *a.shape().last().expect("arrays are at least 1-D")
}

/// The result array of `shape`: `out` when given (checked), else a new one the kernel fills.
pub(crate) fn output<'py, T: Stored>(
    py: Python<'py>,
    shape: &[usize],
    out: Option<&Bound<'py, PyAny>>,
    what: &str,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    match out {
        // SAFETY: every element is written by the kernel before the array is returned.
        None => Ok(unsafe { PyArrayDyn::<T>::new(py, IxDyn(shape), false) }),
        Some(o) => {
            let o = o
                .cast::<PyArrayDyn<T>>()
                .map_err(|_| LayoutError::new_err(format!("{what} must have the inputs' dtype")))?;
            if o.shape() != shape || !o.is_c_contiguous() || !aligned(o.data()) {
                return Err(LayoutError::new_err(format!(
                    "{what} must be an aligned C-contiguous array of shape {shape:?}, got {:?}",
                    o.shape()
                )));
            }
            Ok(o.clone())
        }
    }
}

/// Whether `out` is the very memory of `x` (in place). Memory shared any other way cannot be
/// written while `x` is read, so it is refused; the Python layer goes through a temporary then.
pub(crate) fn same_memory<T: Stored>(
    x: &Bound<'_, PyArrayDyn<T>>,
    out: &Bound<'_, PyArrayDyn<T>>,
    what: &str,
) -> PyResult<bool> {
    let size = std::mem::size_of::<T>();
    let (px, po) = (x.data() as usize, out.data() as usize);
    if px == po && x.len() == out.len() {
        return Ok(true);
    }
    if px < po + out.len() * size && po < px + x.len() * size {
        return Err(LayoutError::new_err(format!(
            "{what} overlaps an input without being that input"
        )));
    }
    Ok(false)
}

/// Whether two arrays' memory overlaps at all.
pub(crate) fn overlaps<A: Stored, B: Stored>(
    a: &Bound<'_, PyArrayDyn<A>>,
    b: &Bound<'_, PyArrayDyn<B>>,
) -> bool {
    let (pa, pb) = (a.data() as usize, b.data() as usize);
    pa < pb + b.len() * std::mem::size_of::<B>() && pb < pa + a.len() * std::mem::size_of::<A>()
}

/// Whether two arrays' memory overlaps without being the very same buffer.
fn partial_overlap<T: Stored>(a: &Bound<'_, PyArrayDyn<T>>, b: &Bound<'_, PyArrayDyn<T>>) -> bool {
    overlaps(a, b) && !(a.data() == b.data() && a.len() == b.len())
}

/// Calls `f` with `x` and `out` as a [`Buf`]: in place when they are the same memory, from a
/// copy of `x` when they overlap otherwise (so any `out` gives the answer of a separate one).
pub(crate) fn with_buf<T: Stored, R>(
    x: &Bound<'_, PyArrayDyn<T>>,
    out: &Bound<'_, PyArrayDyn<T>>,
    f: impl FnOnce(Buf<'_, T>) -> PyResult<R>,
) -> PyResult<R> {
    if partial_overlap(x, out) {
        let copy = with_slice(x, |xs| Ok(xs.to_vec()))?;
        let mut w = out.try_readwrite().map_err(borrow_err)?;
        let out = w.as_slice_mut().map_err(borrow_err)?;
        return f(Buf::Separate { x: &copy, out });
    }
    if same_memory(x, out, "out")? {
        let mut w = out.try_readwrite().map_err(borrow_err)?;
        return f(Buf::InPlace(w.as_slice_mut().map_err(borrow_err)?));
    }
    let r = x.try_readonly().map_err(borrow_err)?;
    let mut w = out.try_readwrite().map_err(borrow_err)?;
    f(Buf::Separate {
        x: r.as_slice().map_err(borrow_err)?,
        out: w.as_slice_mut().map_err(borrow_err)?,
    })
}

/// Calls `f` with `a`'s elements, read-only.
pub(crate) fn with_slice<T: Stored, R>(
    a: &Bound<'_, PyArrayDyn<T>>,
    f: impl FnOnce(&[T]) -> PyResult<R>,
) -> PyResult<R> {
    let r = a.try_readonly().map_err(borrow_err)?;
    f(r.as_slice().map_err(borrow_err)?)
}

/// Calls `f` with `a`'s elements, writable.
pub(crate) fn with_slice_mut<T: Stored, R>(
    a: &Bound<'_, PyArrayDyn<T>>,
    f: impl FnOnce(&mut [T]) -> PyResult<R>,
) -> PyResult<R> {
    let mut w = a.try_readwrite().map_err(borrow_err)?;
    f(w.as_slice_mut().map_err(borrow_err)?)
}
