//! The only file that knows PyO3: borrow the arrays the Python layer prepared (C-contiguous 2-D,
//! dtype float32/float64), release the GIL around large kernels, map kernel errors to exceptions.
//! Validation of user input happens in `python/fastsoftmax/_api.py`; the checks here are the last
//! line of defence, so a wrong call can raise but never crash.

use crate::kernels::{backward as bw, entropy as ent};
use crate::kernels::{cross_entropy as ce, logsumexp as lse, softmax as sm, Buf};
use crate::simd::{self, Backend, Element};
use crate::KernelError;
use numpy::{
    IxDyn, PyArray1, PyArray2, PyArrayDyn, PyArrayMethods, PyReadonlyArray1, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;

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

/// Runs `f` without the GIL when the input is large.
fn run<R: Send>(py: Python<'_>, elems: usize, f: impl FnOnce() -> R + Send) -> R {
    if elems >= GIL_MIN_ELEMS {
        py.detach(f)
    } else {
        f()
    }
}

trait Float: Element + numpy::Element {}
impl Float for f32 {}
impl Float for f64 {}

fn cast2<'a, 'py, T: Float>(
    a: &'a Bound<'py, PyAny>,
    what: &str,
) -> PyResult<&'a Bound<'py, PyArray2<T>>> {
    let a = a.cast::<PyArray2<T>>().map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a 2-D {} array",
            std::any::type_name::<T>()
        ))
    })?;
    if !a.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{what} must be C-contiguous"
        )));
    }
    Ok(a)
}

fn cast1<'a, 'py, T: Float>(
    a: &'a Bound<'py, PyAny>,
    what: &str,
) -> PyResult<&'a Bound<'py, PyArray1<T>>> {
    let a = a.cast::<PyArray1<T>>().map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a 1-D {} array",
            std::any::type_name::<T>()
        ))
    })?;
    if !a.is_c_contiguous() {
        return Err(PyValueError::new_err(format!("{what} must be contiguous")));
    }
    Ok(a)
}

fn borrow_err(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("cannot use the array: {e}"))
}

/// Whether `x` is f32 (else f64); anything else is a `TypeError`.
fn is_f32(x: &Bound<'_, PyAny>) -> PyResult<bool> {
    if x.cast::<PyArray2<f32>>().is_ok() || x.cast::<PyArray1<f32>>().is_ok() {
        Ok(true)
    } else if x.cast::<PyArray2<f64>>().is_ok() || x.cast::<PyArray1<f64>>().is_ok() {
        Ok(false)
    } else {
        Err(PyTypeError::new_err(
            "expected a float32 or float64 NumPy array",
        ))
    }
}

/// Calls `f` with the input and output as a [`Buf`]: in place when they are the same memory.
fn with_buf<T: Float, R>(
    x: &Bound<'_, PyArray2<T>>,
    out: &Bound<'_, PyArray2<T>>,
    f: impl FnOnce(Buf<'_, T>) -> PyResult<R>,
) -> PyResult<R> {
    if x.shape() != out.shape() {
        return Err(PyValueError::new_err(format!(
            "out has shape {:?}, expected {:?}",
            out.shape(),
            x.shape()
        )));
    }
    if x.data() == out.data() {
        let mut w = out.try_readwrite().map_err(borrow_err)?;
        f(Buf::InPlace(w.as_slice_mut().map_err(borrow_err)?))
    } else {
        let r = x.try_readonly().map_err(borrow_err)?;
        let mut w = out.try_readwrite().map_err(borrow_err)?;
        f(Buf::Separate {
            x: r.as_slice().map_err(borrow_err)?,
            out: w.as_slice_mut().map_err(borrow_err)?,
        })
    }
}

fn softmax_t<T: Float>(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    scale: f64,
    mode: sm::Mode,
) -> PyResult<()> {
    let x = cast2::<T>(x, "x")?;
    let out = cast2::<T>(out, "out")?;
    let cols = x.shape()[1];
    let backend = simd::active();
    with_buf(x, out, |buf| {
        let n = buf.len();
        Ok(run(py, n, || {
            sm::softmax_scaled(backend, buf, cols, scale, mode)
        })?)
    })
}

/// `out = softmax(x · scale)` (`log=True`: log-softmax) over the rows of a C-contiguous 2-D array.
#[pyfunction]
fn softmax(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    scale: f64,
    log: bool,
) -> PyResult<()> {
    let mode = if log {
        sm::Mode::LogSoftmax
    } else {
        sm::Mode::Softmax
    };
    if is_f32(x)? {
        softmax_t::<f32>(py, x, out, scale, mode)
    } else {
        softmax_t::<f64>(py, x, out, scale, mode)
    }
}

fn logsumexp_t<T: Float>(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    scale: f64,
) -> PyResult<()> {
    let x = cast2::<T>(x, "x")?;
    let out = cast1::<T>(out, "out")?;
    let cols = x.shape()[1];
    let backend = simd::active();
    let r = x.try_readonly().map_err(borrow_err)?;
    let mut w = out.try_readwrite().map_err(borrow_err)?;
    let xs = r.as_slice().map_err(borrow_err)?;
    let os = w.as_slice_mut().map_err(borrow_err)?;
    Ok(run(py, xs.len(), || {
        lse::logsumexp_scaled(backend, xs, cols, scale, os)
    })?)
}

/// `out[r] = logsumexp(x[r] · scale) / scale` for each row of a C-contiguous 2-D array.
#[pyfunction]
fn logsumexp(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    scale: f64,
) -> PyResult<()> {
    if is_f32(x)? {
        logsumexp_t::<f32>(py, x, out, scale)
    } else {
        logsumexp_t::<f64>(py, x, out, scale)
    }
}

fn logsumexp_b_t<T: Float>(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    sign: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let x = cast2::<T>(x, "x")?;
    let b = cast2::<T>(b, "b")?;
    let out = cast1::<T>(out, "out")?;
    let sign = cast1::<T>(sign, "sign")?;
    let cols = x.shape()[1];
    let rx = x.try_readonly().map_err(borrow_err)?;
    let rb = b.try_readonly().map_err(borrow_err)?;
    let mut wo = out.try_readwrite().map_err(borrow_err)?;
    let mut ws = sign.try_readwrite().map_err(borrow_err)?;
    let (xs, bs) = (
        rx.as_slice().map_err(borrow_err)?,
        rb.as_slice().map_err(borrow_err)?,
    );
    let (os, ss) = (
        wo.as_slice_mut().map_err(borrow_err)?,
        ws.as_slice_mut().map_err(borrow_err)?,
    );
    Ok(run(py, xs.len(), || {
        lse::logsumexp_weighted(xs, bs, cols, os, ss)
    })?)
}

/// SciPy's weighted `logsumexp` per row: `out = log|Σ b·exp(x)|`, `sign = sign(Σ b·exp(x))`.
#[pyfunction]
fn logsumexp_b(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    sign: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if is_f32(x)? {
        logsumexp_b_t::<f32>(py, x, b, out, sign)
    } else {
        logsumexp_b_t::<f64>(py, x, b, out, sign)
    }
}

fn parse_reduction(r: &str) -> PyResult<ce::Reduction> {
    match r {
        "mean" => Ok(ce::Reduction::Mean),
        "sum" => Ok(ce::Reduction::Sum),
        "none" => Ok(ce::Reduction::None),
        _ => Err(PyValueError::new_err(format!(
            "reduction must be 'mean', 'sum' or 'none', got {r:?}"
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
fn cross_entropy_t<T: Float>(
    py: Python<'_>,
    logits: &Bound<'_, PyAny>,
    target: &Bound<'_, PyAny>,
    weight: Option<&Bound<'_, PyAny>>,
    opts: ce::CeOptions<'_, T>,
    grad: Option<&Bound<'_, PyAny>>,
    losses: Option<&Bound<'_, PyAny>>,
) -> PyResult<f64> {
    let x = cast2::<T>(logits, "logits")?;
    let (rows, cols) = (x.shape()[0], x.shape()[1]);
    let backend = simd::active();
    // Borrow everything first; the kernel then runs without touching Python.
    let hard: Option<PyReadonlyArray1<'_, i64>> = match target.cast::<PyArray1<i64>>() {
        Ok(t) => Some(t.try_readonly().map_err(borrow_err)?),
        Err(_) => None,
    };
    let soft = match &hard {
        Some(_) => None,
        None => Some(
            cast2::<T>(target, "target")?
                .try_readonly()
                .map_err(borrow_err)?,
        ),
    };
    let target = match (&hard, &soft) {
        (Some(h), _) => ce::Target::Hard(h.as_slice().map_err(borrow_err)?),
        (None, Some(s)) => ce::Target::Soft(s.as_slice().map_err(borrow_err)?),
        (None, None) => unreachable!(),
    };
    let w = match weight {
        Some(w) => Some(
            cast1::<T>(w, "weight")?
                .try_readonly()
                .map_err(borrow_err)?,
        ),
        None => None,
    };
    let opts = ce::CeOptions {
        weight: match &w {
            Some(w) => Some(w.as_slice().map_err(borrow_err)?),
            None => None,
        },
        ..opts
    };
    let mut lw = match losses {
        Some(l) => Some(
            cast1::<T>(l, "losses")?
                .try_readwrite()
                .map_err(borrow_err)?,
        ),
        None => None,
    };
    let loss_slice = match &mut lw {
        Some(l) => Some(l.as_slice_mut().map_err(borrow_err)?),
        None => None,
    };
    let n = rows * cols;
    match grad {
        None => {
            let r = x.try_readonly().map_err(borrow_err)?;
            let xs = r.as_slice().map_err(borrow_err)?;
            Ok(run(py, n, || {
                ce::cross_entropy(
                    backend,
                    ce::Logits::Read(xs),
                    rows,
                    cols,
                    target,
                    &opts,
                    loss_slice,
                )
            })?)
        }
        Some(g) => {
            let g = cast2::<T>(g, "out")?;
            with_buf(x, g, |buf| {
                Ok(run(py, n, || {
                    ce::cross_entropy(
                        backend,
                        ce::Logits::Grad(buf),
                        rows,
                        cols,
                        target,
                        &opts,
                        loss_slice,
                    )
                })?)
            })
        }
    }
}

/// The cross-entropy loss of C-contiguous 2-D logits (and its gradient into `grad` when given; `grad`
/// may be `logits` itself). Hard targets are int64 of shape (rows,), soft ones have the logits'
/// shape and dtype. Returns the reduced loss; with `reduction="none"` the per-row losses go to
/// `losses`.
#[pyfunction]
#[pyo3(signature = (logits, target, weight, ignore_index, label_smoothing, z_loss, softcap, reduction, grad=None, losses=None))]
#[allow(clippy::too_many_arguments)]
fn cross_entropy(
    py: Python<'_>,
    logits: &Bound<'_, PyAny>,
    target: &Bound<'_, PyAny>,
    weight: Option<&Bound<'_, PyAny>>,
    ignore_index: i64,
    label_smoothing: f64,
    z_loss: f64,
    softcap: Option<f64>,
    reduction: &str,
    grad: Option<&Bound<'_, PyAny>>,
    losses: Option<&Bound<'_, PyAny>>,
) -> PyResult<f64> {
    let reduction = parse_reduction(reduction)?;
    macro_rules! call {
        ($t:ty) => {
            cross_entropy_t::<$t>(
                py,
                logits,
                target,
                weight,
                ce::CeOptions {
                    weight: None,
                    ignore_index,
                    label_smoothing,
                    z_loss,
                    softcap,
                    reduction,
                },
                grad,
                losses,
            )
        };
    }
    if is_f32(logits)? {
        call!(f32)
    } else {
        call!(f64)
    }
}

fn backward_t<T: Float>(
    py: Python<'_>,
    g: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    kind: bw::Vjp,
) -> PyResult<()> {
    let g = cast2::<T>(g, "grad_output")?;
    let y = cast2::<T>(y, "y")?;
    let out = cast2::<T>(out, "out")?;
    if g.shape() != y.shape() || g.shape() != out.shape() {
        return Err(PyValueError::new_err(format!(
            "grad_output {:?}, y {:?} and out {:?} must have one shape",
            g.shape(),
            y.shape(),
            out.shape()
        )));
    }
    let cols = g.shape()[1];
    let n = g.len();
    let backend = simd::active();
    // In place when `out` is `g` and/or `y` (the same memory); any other overlap fails to borrow.
    let (to_g, to_y) = (out.data() == g.data(), out.data() == y.data());
    macro_rules! go {
        ($buf:expr) => {{
            let buf = $buf;
            Ok(run(py, n, || {
                bw::softmax_backward(backend, buf, cols, kind)
            })?)
        }};
    }
    match (to_g, to_y) {
        (true, true) => {
            let mut w = out.try_readwrite().map_err(borrow_err)?;
            go!(bw::VjpBuf::Same(w.as_slice_mut().map_err(borrow_err)?))
        }
        (true, false) => {
            let r = y.try_readonly().map_err(borrow_err)?;
            let mut w = out.try_readwrite().map_err(borrow_err)?;
            go!(bw::VjpBuf::IntoGrad {
                g: w.as_slice_mut().map_err(borrow_err)?,
                y: r.as_slice().map_err(borrow_err)?,
            })
        }
        (false, true) => {
            let r = g.try_readonly().map_err(borrow_err)?;
            let mut w = out.try_readwrite().map_err(borrow_err)?;
            go!(bw::VjpBuf::IntoY {
                g: r.as_slice().map_err(borrow_err)?,
                y: w.as_slice_mut().map_err(borrow_err)?,
            })
        }
        (false, false) => {
            let rg = g.try_readonly().map_err(borrow_err)?;
            let ry = y.try_readonly().map_err(borrow_err)?;
            let mut w = out.try_readwrite().map_err(borrow_err)?;
            go!(bw::VjpBuf::Separate {
                g: rg.as_slice().map_err(borrow_err)?,
                y: ry.as_slice().map_err(borrow_err)?,
                out: w.as_slice_mut().map_err(borrow_err)?,
            })
        }
    }
}

/// Vector-Jacobian product of softmax (`out = y·(g − Σ g·y)`) or, with `log=True`, of log-softmax
/// (`out = g − exp(y)·Σ g`, `y` the log-softmax output) over the rows of C-contiguous 2-D arrays of
/// one shape and dtype. `out` may be `g` or `y`.
#[pyfunction]
fn softmax_backward(
    py: Python<'_>,
    g: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    log: bool,
) -> PyResult<()> {
    let kind = if log {
        bw::Vjp::LogSoftmax
    } else {
        bw::Vjp::Softmax
    };
    if is_f32(g)? {
        backward_t::<f32>(py, g, y, out, kind)
    } else {
        backward_t::<f64>(py, g, y, out, kind)
    }
}

fn entropy_t<T: Float>(
    py: Python<'_>,
    p: &Bound<'_, PyAny>,
    q: Option<&Bound<'_, PyAny>>,
    out: &Bound<'_, PyAny>,
    input: ent::Input,
    scale: f64,
) -> PyResult<()> {
    let p = cast2::<T>(p, "p")?;
    let out = cast1::<T>(out, "out")?;
    let cols = p.shape()[1];
    let backend = simd::active();
    let rp = p.try_readonly().map_err(borrow_err)?;
    let rq = match q {
        Some(q) => {
            let q = cast2::<T>(q, "q")?;
            if q.shape() != p.shape() {
                return Err(PyValueError::new_err(format!(
                    "q has shape {:?}, p has {:?}",
                    q.shape(),
                    p.shape()
                )));
            }
            Some(q.try_readonly().map_err(borrow_err)?)
        }
        None => None,
    };
    let mut w = out.try_readwrite().map_err(borrow_err)?;
    let ps = rp.as_slice().map_err(borrow_err)?;
    let os = w.as_slice_mut().map_err(borrow_err)?;
    match &rq {
        None => Ok(run(py, ps.len(), || {
            ent::entropy(backend, ps, cols, input, scale, os)
        })?),
        Some(rq) => {
            let qs = rq.as_slice().map_err(borrow_err)?;
            Ok(run(py, ps.len(), || {
                ent::kl_divergence(backend, ps, qs, cols, input, scale, os)
            })?)
        }
    }
}

/// Per row of C-contiguous 2-D `p`: `out[r] = scale · H(p[r])`, or with `q` (same shape and dtype)
/// `out[r] = scale · KL(p[r] ‖ q[r])`; `from_logits` takes logits and uses their softmax.
#[pyfunction]
#[pyo3(signature = (p, q, out, from_logits, scale))]
fn entropy(
    py: Python<'_>,
    p: &Bound<'_, PyAny>,
    q: Option<&Bound<'_, PyAny>>,
    out: &Bound<'_, PyAny>,
    from_logits: bool,
    scale: f64,
) -> PyResult<()> {
    let input = if from_logits {
        ent::Input::Logits
    } else {
        ent::Input::Probs
    };
    if is_f32(p)? {
        entropy_t::<f32>(py, p, q, out, input, scale)
    } else {
        entropy_t::<f64>(py, p, q, out, input, scale)
    }
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

// ------------------------------------------------------------------------------------------------
// Fast paths for the common call (C-contiguous, aligned, native-order float32/float64 with the class
// axis last). They return `None` for anything else, and the Python layer then takes its general
// path; so a small call costs one native call and one allocation (T5: ≤ 3 µs on 64 × 10).

/// Whether `p` is aligned for `T` (NumPy allows misaligned arrays; slices may not be).
fn aligned<T>(p: *const T) -> bool {
    (p as usize).is_multiple_of(std::mem::align_of::<T>())
}

/// What the cross-entropy fast path returns: `(loss, grad)`, or `None` to take the general path.
type CeFast<'py> = Option<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)>;

/// Whether a kernel can read or write `a` in place: C-contiguous, aligned, at least 1-D and not empty.
fn usable<T: Float>(a: &Bound<'_, PyArrayDyn<T>>) -> bool {
    a.ndim() >= 1 && a.len() > 0 && a.is_c_contiguous() && aligned(a.data())
}

/// Whether two arrays' memory overlaps without being the very same buffer (then a temporary is needed).
fn partial_overlap<T: Float>(a: &Bound<'_, PyArrayDyn<T>>, b: &Bound<'_, PyArrayDyn<T>>) -> bool {
    let (pa, pb) = (a.data() as usize, b.data() as usize);
    let size = std::mem::size_of::<T>();
    pa != pb && pa < pb + b.len() * size && pb < pa + a.len() * size
}

/// The output array: a new C-order one, or `out` if a kernel can write it directly.
fn fast_out<'py, T: Float>(
    py: Python<'py>,
    x: &Bound<'py, PyArrayDyn<T>>,
    out: Option<&Bound<'py, PyAny>>,
) -> Option<Bound<'py, PyArrayDyn<T>>> {
    match out {
        // SAFETY: every element is written by the kernel before the array is returned.
        None => Some(unsafe { PyArrayDyn::<T>::new(py, IxDyn(x.shape()), false) }),
        Some(o) => {
            let o = o.cast::<PyArrayDyn<T>>().ok()?;
            if o.shape() != x.shape() || !usable(o) || partial_overlap(x, o) {
                return None;
            }
            Some(o.clone())
        }
    }
}

/// Runs `f` on `x` and `out` as a [`Buf`]; `None` when `out` cannot be written (read-only).
fn fast_buf<T: Float, R>(
    x: &Bound<'_, PyArrayDyn<T>>,
    out: &Bound<'_, PyArrayDyn<T>>,
    f: impl FnOnce(Buf<'_, T>) -> PyResult<R>,
) -> PyResult<Option<R>> {
    if x.data() == out.data() {
        let Ok(mut w) = out.try_readwrite() else {
            return Ok(None);
        };
        let Ok(s) = w.as_slice_mut() else {
            return Ok(None);
        };
        return f(Buf::InPlace(s)).map(Some);
    }
    let (Ok(r), Ok(mut w)) = (x.try_readonly(), out.try_readwrite()) else {
        return Ok(None);
    };
    let (Ok(xs), Ok(os)) = (r.as_slice(), w.as_slice_mut()) else {
        return Ok(None);
    };
    f(Buf::Separate { x: xs, out: os }).map(Some)
}

fn softmax_fast_t<'py, T: Float>(
    py: Python<'py>,
    x: &Bound<'py, PyArrayDyn<T>>,
    out: Option<&Bound<'py, PyAny>>,
    scale: f64,
    mode: sm::Mode,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if !usable(x) {
        return Ok(None);
    }
    let Some(o) = fast_out(py, x, out) else {
        return Ok(None);
    };
    let cols = *x.shape().last().expect("ndim >= 1");
    let backend = simd::active();
    let done = fast_buf(x, &o, |buf| {
        let n = buf.len();
        Ok(run(py, n, || {
            sm::softmax_scaled(backend, buf, cols, scale, mode)
        })?)
    })?;
    Ok(done.map(|_| o.into_any()))
}

/// `softmax(x · scale)` (or its log) over the last axis, or `None` when the arrays are not in the
/// layout the kernels read in place.
#[pyfunction]
#[pyo3(signature = (x, out, scale, log))]
fn softmax_fast<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    out: Option<&Bound<'py, PyAny>>,
    scale: f64,
    log: bool,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let mode = if log {
        sm::Mode::LogSoftmax
    } else {
        sm::Mode::Softmax
    };
    if let Ok(a) = x.cast::<PyArrayDyn<f32>>() {
        softmax_fast_t(py, a, out, scale, mode)
    } else if let Ok(a) = x.cast::<PyArrayDyn<f64>>() {
        softmax_fast_t(py, a, out, scale, mode)
    } else {
        Ok(None)
    }
}

fn logsumexp_fast_t<'py, T: Float>(
    py: Python<'py>,
    x: &Bound<'py, PyArrayDyn<T>>,
    scale: f64,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if !usable(x) {
        return Ok(None);
    }
    let shape = x.shape();
    let (batch, cols) = (&shape[..shape.len() - 1], shape[shape.len() - 1]);
    let o = match out {
        // SAFETY: the kernel writes every element.
        None => unsafe { PyArrayDyn::<T>::new(py, IxDyn(batch), false) },
        Some(o) => {
            let Ok(o) = o.cast::<PyArrayDyn<T>>() else {
                return Ok(None);
            };
            if o.shape() != batch || !o.is_c_contiguous() || !aligned(o.data()) {
                return Ok(None);
            }
            o.clone()
        }
    };
    let (Ok(r), Ok(mut w)) = (x.try_readonly(), o.try_readwrite()) else {
        return Ok(None);
    };
    let (Ok(xs), Ok(os)) = (r.as_slice(), w.as_slice_mut()) else {
        return Ok(None);
    };
    let backend = simd::active();
    run(py, xs.len(), || {
        lse::logsumexp_scaled(backend, xs, cols, scale, os)
    })?;
    drop(w);
    Ok(Some(o.into_any()))
}

/// `logsumexp(x · scale) / scale` over the last axis into `out` (or a new array), or `None` when
/// the arrays are not in the layout the kernel reads and writes in place (see `softmax_fast`).
#[pyfunction]
#[pyo3(signature = (x, scale, out=None))]
fn logsumexp_fast<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    scale: f64,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if let Ok(a) = x.cast::<PyArrayDyn<f32>>() {
        logsumexp_fast_t(py, a, scale, out)
    } else if let Ok(a) = x.cast::<PyArrayDyn<f64>>() {
        logsumexp_fast_t(py, a, scale, out)
    } else {
        Ok(None)
    }
}

#[allow(clippy::too_many_arguments)]
fn cross_entropy_fast_t<'py, T: Float>(
    py: Python<'py>,
    x: &Bound<'py, PyArrayDyn<T>>,
    target: &Bound<'py, PyAny>,
    weight: Option<&Bound<'py, PyAny>>,
    opts: ce::CeOptions<'_, T>,
    want_grad: bool,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<CeFast<'py>> {
    if x.ndim() != 2 || !usable(x) {
        return Ok(None);
    }
    let (rows, cols) = (x.shape()[0], x.shape()[1]);
    let Ok(t) = target.cast::<PyArray1<i64>>() else {
        return Ok(None);
    };
    if t.len() != rows || !t.is_c_contiguous() || !aligned(t.data()) {
        return Ok(None);
    }
    let w = match weight {
        None => None,
        Some(w) => {
            let Ok(w) = w.cast::<PyArray1<T>>() else {
                return Ok(None);
            };
            if !w.is_c_contiguous() || !aligned(w.data()) {
                return Ok(None);
            }
            Some(w.try_readonly().map_err(borrow_err)?)
        }
    };
    let Ok(tr) = t.try_readonly() else {
        return Ok(None);
    };
    let labels = tr.as_slice().map_err(borrow_err)?;
    let opts = ce::CeOptions {
        weight: match &w {
            Some(w) => Some(w.as_slice().map_err(borrow_err)?),
            None => None,
        },
        ..opts
    };
    let losses = if opts.reduction == ce::Reduction::None {
        // SAFETY: the kernel writes every row's loss.
        Some(unsafe { PyArray1::<T>::new(py, rows, false) })
    } else {
        None
    };
    let mut lw = match &losses {
        Some(l) => Some(l.try_readwrite().map_err(borrow_err)?),
        None => None,
    };
    let loss_slice = match &mut lw {
        Some(l) => Some(l.as_slice_mut().map_err(borrow_err)?),
        None => None,
    };
    let backend = simd::active();
    let target = ce::Target::Hard(labels);
    let n = rows * cols;
    let (total, grad) = if want_grad {
        let Some(g) = fast_out(py, x, out) else {
            return Ok(None);
        };
        let done = fast_buf(x, &g, |buf| {
            Ok(run(py, n, || {
                ce::cross_entropy(
                    backend,
                    ce::Logits::Grad(buf),
                    rows,
                    cols,
                    target,
                    &opts,
                    loss_slice,
                )
            })?)
        })?;
        match done {
            Some(total) => (total, Some(g.into_any())),
            None => return Ok(None),
        }
    } else {
        let r = x.try_readonly().map_err(borrow_err)?;
        let xs = r.as_slice().map_err(borrow_err)?;
        let total = run(py, n, || {
            ce::cross_entropy(
                backend,
                ce::Logits::Read(xs),
                rows,
                cols,
                target,
                &opts,
                loss_slice,
            )
        })?;
        (total, None)
    };
    drop(lw);
    let loss = match losses {
        Some(l) => l.into_any(),
        None => total.into_pyobject(py)?.into_any(),
    };
    Ok(Some((loss, grad)))
}

/// The cross-entropy of 2-D C-contiguous logits with int64 labels (and its gradient into `out` or a
/// new array when `want_grad`), or `None` for any other layout. Returns `(loss, grad or None)` where
/// the loss is a float (`"mean"`/`"sum"`) or an array of per-row losses (`"none"`).
#[pyfunction]
#[pyo3(signature = (logits, target, weight, ignore_index, label_smoothing, z_loss, softcap, reduction, want_grad, out=None))]
#[allow(clippy::too_many_arguments)]
fn cross_entropy_fast<'py>(
    py: Python<'py>,
    logits: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    weight: Option<&Bound<'py, PyAny>>,
    ignore_index: i64,
    label_smoothing: f64,
    z_loss: f64,
    softcap: Option<f64>,
    reduction: &str,
    want_grad: bool,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<CeFast<'py>> {
    let reduction = parse_reduction(reduction)?;
    macro_rules! call {
        ($x:expr) => {
            cross_entropy_fast_t(
                py,
                $x,
                target,
                weight,
                ce::CeOptions {
                    weight: None,
                    ignore_index,
                    label_smoothing,
                    z_loss,
                    softcap,
                    reduction,
                },
                want_grad,
                out,
            )
        };
    }
    if let Ok(a) = logits.cast::<PyArrayDyn<f32>>() {
        call!(a)
    } else if let Ok(a) = logits.cast::<PyArrayDyn<f64>>() {
        call!(a)
    } else {
        Ok(None)
    }
}

#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(softmax, m)?)?;
    m.add_function(wrap_pyfunction!(softmax_fast, m)?)?;
    m.add_function(wrap_pyfunction!(logsumexp_fast, m)?)?;
    m.add_function(wrap_pyfunction!(cross_entropy_fast, m)?)?;
    m.add_function(wrap_pyfunction!(logsumexp, m)?)?;
    m.add_function(wrap_pyfunction!(logsumexp_b, m)?)?;
    m.add_function(wrap_pyfunction!(cross_entropy, m)?)?;
    m.add_function(wrap_pyfunction!(softmax_backward, m)?)?;
    m.add_function(wrap_pyfunction!(entropy, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(simd_backend, m)?)?;
    m.add_function(wrap_pyfunction!(supported_backends, m)?)?;
    m.add_function(wrap_pyfunction!(_set_simd_backend, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
