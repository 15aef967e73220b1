//! The cross-entropy family: loss, and the gradient in the same pass when asked.

use super::arrays::{array, borrow_err, cols, dispatch, output, with_buf, Float, Stored};
use super::convert::kind;
use super::run;
use super::LayoutError;
use crate::kernels::cross_entropy::{self as ce, CeOptions, Logits, Reduction, Target};
use crate::kernels::half;
use crate::{simd, KernelError};
use numpy::{PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

/// `(total loss, per-row losses for reduction "none", gradient when asked)`.
type CeResult<'py> = (f64, Option<Bound<'py, PyAny>>, Option<Bound<'py, PyAny>>);

fn parse_reduction(r: &str) -> PyResult<Reduction> {
    match r {
        "mean" => Ok(Reduction::Mean),
        "sum" => Ok(Reduction::Sum),
        "none" => Ok(Reduction::None),
        _ => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "reduction must be 'mean', 'sum' or 'none', got {r:?}"
        ))),
    }
}

/// The cross-entropy of logits over their last axis. `target` holds int64 class indices (one per
/// row, any shape with that many elements) or soft labels of the logits' shape and dtype; `weight`
/// is one value per class. With `want_grad` the gradient goes to `out` (which may be the logits) or
/// a new array. Returns `(total, losses, grad)`: `losses` (shape `logits.shape[:-1]`) only for
/// `reduction="none"`, whose total is their sum. `half`: the logits, soft labels and gradient hold
/// that half type's 16-bit words; weights and losses are float32.
#[pyfunction]
#[pyo3(signature = (logits, target, weight, ignore_index, label_smoothing, z_loss, softcap, reduction, want_grad, out=None, half=None))]
#[allow(clippy::too_many_arguments)]
pub(super) fn cross_entropy<'py>(
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
    half: Option<&str>,
) -> PyResult<CeResult<'py>> {
    let opts = CeOptions::<'_, ()> {
        weight: None,
        ignore_index,
        label_smoothing,
        z_loss,
        softcap,
        reduction: parse_reduction(reduction)?,
    };
    let grad = if want_grad { Some(out) } else { None };
    let b = simd::active();
    if let Some(k) = half.map(kind).transpose()? {
        let args = (logits, target, weight);
        return call::<u16, f32>(py, args, opts, grad, |x, shape, t, o, l| {
            half::cross_entropy(b, k, x, shape, t, o, l)
        });
    }
    dispatch!(logits, T => call::<T, T>(py, (logits, target, weight), opts, grad, |x, (r, c), t, o, l| {
        ce::cross_entropy(b, x, r, c, t, o, l)
    }))
}

/// The borrowed target: class indices or soft labels.
enum Labels<'py, T: Stored> {
    Hard(PyReadonlyArrayDyn<'py, i64>),
    Soft(PyReadonlyArrayDyn<'py, T>),
}

fn labels<'py, T: Stored>(
    target: &Bound<'py, PyAny>,
    logits: &Bound<'py, PyArrayDyn<T>>,
) -> PyResult<Labels<'py, T>> {
    let shape = logits.shape();
    if let Ok(t) = target.cast::<PyArrayDyn<i64>>() {
        if t.shape() != &shape[..shape.len() - 1] || !t.is_c_contiguous() {
            return Err(LayoutError::new_err(
                "class-index target must be a C-contiguous int64 array of the logits' shape \
                 without the class axis",
            ));
        }
        return Ok(Labels::Hard(t.try_readonly().map_err(borrow_err)?));
    }
    let t = array::<T>(target, "target")?;
    if t.shape() != shape {
        return Err(LayoutError::new_err(
            "soft-label target must have the logits' shape",
        ));
    }
    Ok(Labels::Soft(t.try_readonly().map_err(borrow_err)?))
}

/// Borrows the arrays (logits, gradient and soft labels stored as `X`, weights and per-row losses
/// as `W`) and runs `kernel` on them.
fn call<'py, X: Stored, W: Float>(
    py: Python<'py>,
    (logits, target, weight): (
        &Bound<'py, PyAny>,
        &Bound<'py, PyAny>,
        Option<&Bound<'py, PyAny>>,
    ),
    opts: CeOptions<'_, ()>,
    grad: Option<Option<&Bound<'py, PyAny>>>,
    // The kernel: logits (and where the gradient goes), `(rows, cols)`, target, options and
    // per-row losses; returns the reduced loss.
    kernel: impl FnOnce(
            Logits<'_, X>,
            (usize, usize),
            Target<'_, X>,
            &CeOptions<'_, W>,
            Option<&mut [W]>,
        ) -> Result<f64, KernelError>
        + Send,
) -> PyResult<CeResult<'py>> {
    let x = array::<X>(logits, "logits")?;
    let (n, c) = (x.len(), cols(x));
    let shape = x.shape();
    let batch = &shape[..shape.len() - 1];
    let rows = batch.iter().product::<usize>();
    // Borrow everything first; the kernel then runs without touching Python.
    let t = labels::<X>(target, x)?;
    let w = match weight {
        Some(w) => Some(
            array::<W>(w, "weight")?
                .try_readonly()
                .map_err(borrow_err)?,
        ),
        None => None,
    };
    let losses = match opts.reduction {
        Reduction::None => Some(output::<W>(py, batch, None, "losses")?),
        _ => None,
    };
    let g = match grad {
        Some(out) => Some(output::<X>(py, shape, out, "out")?),
        None => None,
    };
    let mut lw = match &losses {
        Some(l) => Some(l.try_readwrite().map_err(borrow_err)?),
        None => None,
    };
    let loss_slice = match &mut lw {
        Some(l) => Some(l.as_slice_mut().map_err(borrow_err)?),
        None => None,
    };
    let target = match &t {
        Labels::Hard(h) => Target::Hard(h.as_slice().map_err(borrow_err)?),
        Labels::Soft(s) => Target::Soft(s.as_slice().map_err(borrow_err)?),
    };
    let opts = CeOptions {
        weight: match &w {
            Some(w) => Some(w.as_slice().map_err(borrow_err)?),
            None => None,
        },
        ignore_index: opts.ignore_index,
        label_smoothing: opts.label_smoothing,
        z_loss: opts.z_loss,
        softcap: opts.softcap,
        reduction: opts.reduction,
    };
    let total = match &g {
        None => {
            let r = x.try_readonly().map_err(borrow_err)?;
            let xs = r.as_slice().map_err(borrow_err)?;
            run(py, n, || {
                kernel(Logits::Read(xs), (rows, c), target, &opts, loss_slice)
            })?
        }
        Some(g) => with_buf(x, g, |buf| {
            run(py, n, || {
                kernel(Logits::Grad(buf), (rows, c), target, &opts, loss_slice)
            })
        })?,
    };
    drop(lw);
    Ok((total, losses.map(|l| l.into_any()), g.map(|g| g.into_any())))
}
