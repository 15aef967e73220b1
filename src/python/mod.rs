//! The only code that knows PyO3. One entry per operation, each taking C-contiguous N-D arrays and
//! reducing over their last axis (the Python layer moves and merges the reduced axes there); one
//! float32/float64 dispatch (`arrays::dispatch!`); the GIL released around large kernels; kernel errors
//! mapped to exceptions here.

mod arrays;
mod convert;
mod cross_entropy;
mod entropy;
mod logsumexp;
mod softmax;

use crate::simd::{self, Backend};
use crate::{ExactScale, KernelError};
use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyFloat;

pyo3::create_exception!(
    _native,
    LayoutError,
    PyValueError,
    "An array the kernels cannot read or write as it is (dtype, order, alignment, shape); the \
     Python layer then brings it to their layout."
);

/// Inputs of at least this many elements run with the GIL released. Below it, releasing and
/// re-taking the GIL (~0.2 µs, plus contention) is a noticeable share of a call that takes
/// microseconds; 16 Ki elements take ~5 µs.
const GIL_MIN_ELEMS: usize = 1 << 14;

impl From<KernelError> for PyErr {
    fn from(e: KernelError) -> PyErr {
        match e {
            KernelError::Shape(_) | KernelError::Value(_) => PyValueError::new_err(e.to_string()),
            KernelError::Label { .. } => PyIndexError::new_err(e.to_string()),
        }
    }
}

/// Runs the kernel call `f` without the GIL when the input is large. Every Python object must be
/// borrowed before (the closure only sees slices).
fn run<R: Send>(
    py: Python<'_>,
    elems: usize,
    f: impl FnOnce() -> Result<R, KernelError> + Send,
) -> PyResult<R> {
    let r = if elems >= GIL_MIN_ELEMS {
        py.detach(f)
    } else {
        f()
    };
    Ok(r?)
}

/// The scale the Python layer passes: a float, or for a temperature `T` a float that also carries
/// `temperature` (`_checks.InvTemperature`), whose exact reciprocal the kernels then use.
fn scale_of(scale: &Bound<'_, PyAny>) -> PyResult<ExactScale> {
    let hi: f64 = scale.extract()?;
    if scale.is_exact_instance_of::<PyFloat>() {
        return Ok(hi.into());
    }
    let Ok(t) = scale.getattr(pyo3::intern!(scale.py(), "temperature")) else {
        return Ok(hi.into());
    };
    let exact = ExactScale::of_temperature(t.extract()?, hi.signum());
    // Only a scale that is `±1/T` rounded gets `1/T`'s remainder.
    Ok(if exact.hi == hi { exact } else { hi.into() })
}

/// Sets the number of threads the kernels use.
#[pyfunction]
fn set_num_threads(n: i64) -> PyResult<()> {
    if n < 1 {
        return Err(PyValueError::new_err(format!(
            "the number of threads must be >= 1, got {n}"
        )));
    }
    crate::parallel::set_num_threads(n as usize);
    Ok(())
}

/// The number of threads the kernels use.
#[pyfunction]
fn get_num_threads() -> usize {
    crate::parallel::get_num_threads()
}

/// The instruction set the kernels run on now.
#[pyfunction]
fn simd_backend() -> &'static str {
    simd::active().name()
}

/// The instruction sets this CPU supports, lowest first.
#[pyfunction]
fn supported_backends() -> Vec<&'static str> {
    Backend::supported().iter().map(|b| b.name()).collect()
}

/// Forces an instruction set (for tests); `ValueError` if unknown or unsupported here.
#[pyfunction]
fn _set_simd_backend(name: &str) -> PyResult<()> {
    let b = Backend::from_name(name)
        .ok_or_else(|| PyValueError::new_err(format!("unknown instruction set {name:?}")))?;
    Ok(simd::set_active(b)?)
}

/// The extension module: one entry per operation (any stored type, half ones included), the
/// conversions, the thread and instruction-set controls.
#[pymodule(gil_used = false)]
mod _native {
    #[pymodule_export]
    use super::convert::convert_half;
    #[pymodule_export]
    use super::cross_entropy::cross_entropy;
    #[pymodule_export]
    use super::entropy::entropy;
    #[pymodule_export]
    use super::logsumexp::{logsumexp, logsumexp_b};
    #[pymodule_export]
    use super::softmax::{softmax, softmax_backward};
    #[pymodule_export]
    use super::{_set_simd_backend, get_num_threads, set_num_threads};
    #[pymodule_export]
    use super::{simd_backend, supported_backends, LayoutError};

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::PyModuleMethods;
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
