//! The plan of a cross-entropy call: the options checked and, for class labels, the label pre-pass
//! (every label in range, `Σ w_y` and the count of counted rows), so the reduction's factors are
//! known before the first row is read.

use super::{CeOptions, Reduction, Target};
use crate::kernels::row::Acc;
use crate::kernels::SendPtr;
use crate::parallel::{map_ranges, GRAIN_ELEMS};
use crate::simd::{Backend, Element, Isa, WithSimd};
use crate::KernelError;

/// What the label pre-pass and the options decide before any row is read.
pub(crate) struct Plan {
    /// Factor of the main loss term and its gradient (1/Σw_y for "mean").
    pub(super) r_main: f64,
    /// Factor of the z-loss term and its gradient (1/counted rows for "mean").
    pub(super) r_z: f64,
    /// `Σ_c w_c` (C without weights).
    pub(super) w_total: f64,
    cols: usize,
}

impl Plan {
    /// Checks the options, the labels (of any element type: only soft labels' length is read) and
    /// the length of the per-row losses (`None`: not given), and plans the reduction.
    pub(crate) fn new<T: Element, U>(
        backend: Backend,
        (rows, cols): (usize, usize),
        target: Target<'_, U>,
        opts: &CeOptions<'_, T>,
        losses: Option<&[T]>,
    ) -> Result<Plan, KernelError> {
        if let Some(l) = losses.map(<[T]>::len).filter(|&l| l != rows) {
            return Err(KernelError::Shape(format!(
                "losses has {l} elements for {rows} rows"
            )));
        }
        if opts.reduction == Reduction::None && losses.is_none() {
            return Err(KernelError::Value(
                "reduction='none' needs a buffer for the per-row losses".into(),
            ));
        }
        let eps = opts.label_smoothing;
        if !(0.0..=1.0).contains(&eps) {
            return Err(KernelError::Value(format!(
                "label_smoothing must be in [0, 1], got {eps}"
            )));
        }
        if !opts.z_loss.is_finite() || opts.z_loss < 0.0 {
            return Err(KernelError::Value(format!(
                "z_loss must be a finite number >= 0, got {}",
                opts.z_loss
            )));
        }
        if let Some(c) = opts.softcap {
            if !(c.is_finite() && c > 0.0) {
                return Err(KernelError::Value(format!(
                    "softcap must be a finite number > 0, got {c}"
                )));
            }
        }
        if let Some(w) = opts.weight {
            if w.len() != cols {
                return Err(KernelError::Value(format!(
                    "weight has {} elements, expected one per class ({cols})",
                    w.len()
                )));
            }
        }
        let weight_of = |c: usize| opts.weight.map_or(1.0, |w| w[c].to_f64());
        let w_total = opts
            .weight
            .map_or(cols as f64, |w| w.iter().map(|v| v.to_f64()).sum());
        let (den_main, counted) = match target {
            Target::Hard(labels) => {
                if labels.len() != rows {
                    return Err(KernelError::Shape(format!(
                        "target has {} labels for {rows} rows",
                        labels.len()
                    )));
                }
                // Fixed ranges of labels, in parallel when there are many (this pass runs before
                // any row): each gives its Σ w_y and count, or its first bad label's position.
                let with_w = opts.weight.is_some();
                let (ignore, classes) = (opts.ignore_index, cols as u64);
                let parts = map_ranges(rows, GRAIN_ELEMS, rows, |range| {
                    let ls = &labels[range.clone()];
                    let (ignored, any_bad) = backend.dispatch(ScanLabels {
                        ls,
                        ignore,
                        classes,
                    });
                    if any_bad {
                        let bad = |y: i64| y != ignore && y as u64 >= classes;
                        return Err(range.start + ls.iter().position(|&y| bad(y)).unwrap_or(0));
                    }
                    let mut den = Acc::default();
                    if with_w {
                        for &y in ls.iter().filter(|&&y| y != ignore) {
                            den.add(weight_of(y as usize));
                        }
                    }
                    Ok((den.value(), ls.len() - ignored))
                });
                let (mut den, mut counted) = (Acc::default(), 0usize);
                for part in parts {
                    let (d, c) = part.map_err(|i| KernelError::Label {
                        label: labels[i],
                        position: i,
                        classes: cols,
                    })?;
                    den.add(d);
                    counted += c;
                }
                // Without weights the denominator is the count, exactly.
                let den = if with_w { den.value() } else { counted as f64 };
                (den, counted)
            }
            Target::Soft(q) => {
                if q.len() != rows * cols {
                    return Err(KernelError::Shape(format!(
                        "soft target has {} elements, expected {rows} x {cols}",
                        q.len()
                    )));
                }
                (rows as f64, rows)
            }
        };
        let (r_main, r_z) = match opts.reduction {
            // No counted row: the mean of nothing is 0 (docs/api.md §1), not PyTorch's NaN.
            Reduction::Mean if counted == 0 => (0.0, 0.0),
            Reduction::Mean => (1.0 / den_main, 1.0 / counted as f64),
            Reduction::Sum | Reduction::None => (1.0, 1.0),
        };
        Ok(Plan {
            r_main,
            r_z,
            w_total,
            cols,
        })
    }

    /// The losses' pointer, or None when there is nothing to compute (no classes: every row is
    /// ignored, as a label in [0, 0) cannot pass the check; the losses are then zeros).
    pub(crate) fn start<T: Element>(&self, losses: Option<&mut [T]>) -> Option<Option<SendPtr<T>>> {
        if self.cols == 0 {
            if let Some(l) = losses {
                l.fill(T::ZERO);
            }
            return None;
        }
        Some(losses.map(|l| SendPtr(l.as_mut_ptr())))
    }

    /// The reduced loss of the tasks' `(Σ main term, Σ z term)`, summed in order.
    pub(crate) fn total(&self, parts: impl IntoIterator<Item = (f64, f64)>) -> f64 {
        let (mut main, mut z) = (Acc::default(), Acc::default());
        for (m, zz) in parts {
            main.add(m);
            z.add(zz);
        }
        main.value() * self.r_main + z.value() * self.r_z
    }
}

/// A range of class labels: how many are `ignore`, and whether any other is out of `0..classes`.
/// Dispatched to the instruction set because 64-bit compares vectorise only past SSE2.
struct ScanLabels<'a> {
    ls: &'a [i64],
    ignore: i64,
    classes: u64,
}

impl WithSimd for ScanLabels<'_> {
    type Output = (usize, bool);
    #[inline(always)]
    fn with_simd<S: Isa>(self, _s: S) -> (usize, bool) {
        let (mut ignored, mut any_bad) = (0usize, false);
        // Branch-free, in runs of 8 so the loop unrolls without a dependency per label; a negative
        // label is a huge u64, so one comparison finds every label out of range.
        let runs = self.ls.chunks_exact(8);
        let rest = runs.remainder();
        for run in runs.chain([rest]) {
            for &y in run {
                ignored += usize::from(y == self.ignore);
                any_bad |= y != self.ignore && y as u64 >= self.classes;
            }
        }
        (ignored, any_bad)
    }
}
