//! The cross-entropy family: loss, gradient, or both in one pass over the logits.
//!
//! Per row, with `o' = softcap(o)`, `p = softmax(o')`, `lse = logsumexp(o')`, weights `w` (1 when not
//! given), `W = Σ w`, smoothing `ε` and `C` classes:
//! - hard label `y`: `loss = w_y (1-ε)(lse - o'_y) + ε/C · (W·lse - Σ w_c o'_c)`,
//!   `grad = p·(w_y(1-ε) + εW/C) - ε/C · w - w_y(1-ε)·onehot(y)`;
//! - soft labels `q`, `q' = (1-ε) q + ε/C`: `loss = lse·Σ w q' - Σ w q' o'`,
//!   `grad = p·Σ w q' - w∘q'`;
//! - z-loss: `+ z·lse²` per counted row, gradient `2z·lse·p`;
//! - soft cap: the gradient is multiplied by `1 - (o'/c)²`.
//!
//! `"mean"` divides the main term by `Σ w_y` over non-ignored rows (hard) or by `N` (soft), and the
//! z-term by the number of counted rows. All of this is known before the first row is read (the label
//! pre-pass), so the gradient is written in the same pass that reads the row.

use std::any::TypeId;
use std::ops::Range;

use super::driver::{self, Rows};

mod plan;
mod tile;

pub(crate) use plan::Plan;

use super::row::{finish_lse, map_row, max_sum, Acc, One, Pre, SoftCap, BLOCK};
use super::tile::{NO_TILES, REDUCE_TILE_COLS};
use super::{Buf, SendPtr};
use crate::simd::{Backend, Element, Simd};
use crate::KernelError;

/// Class labels, one per row, or a distribution per row with the logits' shape.
#[derive(Clone, Copy)]
pub enum Target<'a, T> {
    Hard(&'a [i64]),
    Soft(&'a [T]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    Mean,
    Sum,
    None,
}

/// The options of `cross_entropy` (docs/api.md §1), with PyTorch's names and defaults.
#[derive(Clone, Copy)]
pub struct CeOptions<'a, T> {
    pub weight: Option<&'a [T]>,
    pub ignore_index: i64,
    pub label_smoothing: f64,
    pub z_loss: f64,
    pub softcap: Option<f64>,
    pub reduction: Reduction,
}

impl<T> Default for CeOptions<'_, T> {
    fn default() -> Self {
        CeOptions {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
            z_loss: 0.0,
            softcap: None,
            reduction: Reduction::Mean,
        }
    }
}

/// The logits, and whether (and where) the gradient is written.
pub enum Logits<'a, T> {
    /// Loss only.
    Read(&'a [T]),
    /// Loss and gradient.
    Grad(Buf<'a, T>),
}

/// Computes the loss of a `rows × cols` logits matrix (and its gradient when asked).
///
/// Returns the reduced loss; with `Reduction::None` the per-row losses go to `losses` (length
/// `rows`) and the sum is returned. Every argument is checked before anything is written.
pub fn cross_entropy<T: Element>(
    backend: Backend,
    logits: Logits<'_, T>,
    rows: usize,
    cols: usize,
    target: Target<'_, T>,
    opts: &CeOptions<'_, T>,
    losses: Option<&mut [T]>,
) -> Result<f64, KernelError> {
    let (src, dst) = logit_ptrs(logits, rows, cols)?;
    let plan = Plan::new(backend, (rows, cols), target, opts, losses.as_deref())?;
    let Some(losses) = plan.start(losses) else {
        return Ok(0.0);
    };
    let parts = parts(
        backend,
        (src, dst, losses),
        (rows, cols),
        target,
        opts,
        &plan,
    );
    Ok(plan.total(parts))
}

/// The logits' pointer and the gradient's (when asked), checked for `rows × cols`.
pub(crate) fn logit_ptrs<T>(
    logits: Logits<'_, T>,
    rows: usize,
    cols: usize,
) -> Result<(SendPtr<T>, Option<SendPtr<T>>), KernelError> {
    let n = rows * cols;
    let shape = |len: usize| {
        KernelError::Shape(format!(
            "logits have {len} elements, expected {rows} x {cols}"
        ))
    };
    match logits {
        Logits::Read(x) if x.len() != n => Err(shape(x.len())),
        Logits::Read(x) => Ok((SendPtr(x.as_ptr() as *mut T), None)),
        Logits::Grad(mut buf) => {
            buf.check()?;
            if buf.len() != n {
                return Err(shape(buf.len()));
            }
            let (s, d) = buf.ptrs();
            Ok((s, Some(d)))
        }
    }
}

/// The longest rows that take the tile path with these options (the soft cap stays on rows).
pub(crate) fn tile_cols<T>(opts: &CeOptions<'_, T>) -> usize {
    if opts.softcap.is_none() {
        REDUCE_TILE_COLS
    } else {
        NO_TILES
    }
}

/// Where the rows' results go: the gradient (when asked) and the per-row losses (for "none").
pub(crate) type Outs<T> = (SendPtr<T>, Option<SendPtr<T>>, Option<SendPtr<T>>);

/// `(Σ main term, Σ z term)` of each of the driver's tasks over the `rows × cols` logits at `src`,
/// in order, the gradient and per-row losses written on the way (`plan` from [`Plan::new`]).
pub(crate) fn parts<T: Element>(
    backend: Backend,
    (src, dst, losses): Outs<T>,
    (rows, cols): (usize, usize),
    target: Target<'_, T>,
    opts: &CeOptions<'_, T>,
    plan: &Plan,
) -> Vec<(f64, f64)> {
    let k = CeRows {
        backend,
        src,
        dst,
        losses,
        cols,
        target,
        opts,
        plan,
    };
    // Rows are never split across threads here: each row's loss and gradient come from one pass.
    if k.tiles() {
        driver::map_tiles(backend, &tile::Tiled(&k), rows, cols)
    } else {
        driver::map_rows(backend, &k, rows, cols)
    }
}

struct CeRows<'a, T> {
    backend: Backend,
    src: SendPtr<T>,
    dst: Option<SendPtr<T>>,
    losses: Option<SendPtr<T>>,
    cols: usize,
    target: Target<'a, T>,
    opts: &'a CeOptions<'a, T>,
    plan: &'a Plan,
}

impl<T: Element> Rows<T> for CeRows<'_, T> {
    /// (Σ main term, Σ z term) over the rows, unscaled.
    type Out = (f64, f64);
    #[inline(always)]
    fn rows<S: Simd<T>>(&self, s: S, rows: Range<usize>) -> (f64, f64) {
        match self.opts.softcap {
            Some(c) => self.run(
                s,
                SoftCap {
                    c: T::from_f64(c),
                    inv_c: T::from_f64(1.0 / c),
                },
                rows,
            ),
            None => self.run(s, One, rows),
        }
    }
}

impl<T: Element> CeRows<'_, T> {
    #[inline(always)]
    fn run<S: Simd<T>, P: Pre<T, S>>(&self, s: S, p: P, rows: Range<usize>) -> (f64, f64) {
        let cols = self.cols;
        let opts = self.opts;
        let plan = self.plan;
        let eps = opts.label_smoothing;
        let inv_c = 1.0 / cols as f64;
        let (mut main_sum, mut z_sum) = (Acc::default(), Acc::default());
        for r in rows {
            let off = r * cols;
            let dst = self.dst.map(|d| d.add(off));
            let label = match self.target {
                Target::Hard(labels) => Some(labels[r]),
                Target::Soft(_) => None,
            };
            if label == Some(opts.ignore_index) {
                if let Some(d) = dst {
                    // SAFETY: this task owns row `r` of the gradient.
                    unsafe { std::slice::from_raw_parts_mut(d.0, cols) }.fill(T::ZERO);
                }
                if let Some(l) = self.losses {
                    unsafe { *l.0.add(r) = T::ZERO };
                }
                continue;
            }
            // SAFETY: row `r` is in bounds; the slice is not used once the gradient pass starts.
            let x = unsafe { self.src.slice(off, cols) };
            let (m, sum) = max_sum(s, &p, x);
            let parts = finish_lse(s, &p, x, m, sum);
            // A row holding +inf has a NaN loss and gradient, like its log-softmax.
            let log_sum = parts.log_sum_for_log_softmax();
            let lse = parts.m + log_sum;
            let z_term = opts.z_loss * lse * lse;
            // Coefficients of the gradient g = p·a - w·(bw + bq·q) (and -k at the label).
            let (mut main, a, bw, bq, at_label) = match (label, self.target) {
                (Some(y), _) => {
                    let y = y as usize;
                    let wy = opts.weight.map_or(1.0, |w| w[y].to_f64());
                    let oy = p.apply_scalar(x[y]).to_f64();
                    // (m - o'_y) + log_sum keeps log_sum when m is huge.
                    let mut main = times(wy * (1.0 - eps), (parts.m - oy) + log_sum);
                    if eps > 0.0 {
                        let (_, _, wo) = dots(s, &p, x, m, opts.weight, None);
                        main += eps * inv_c * (plan.w_total * log_sum - wo);
                    }
                    let a = plan.r_main * (wy * (1.0 - eps) + eps * plan.w_total * inv_c);
                    let k = plan.r_main * wy * (1.0 - eps);
                    (main, a, plan.r_main * eps * inv_c, 0.0, Some((y, k, x[y])))
                }
                (None, Target::Soft(q)) => {
                    let q = &q[off..off + cols];
                    let (wq, wqo, wo) = dots(s, &p, x, m, opts.weight, Some(q));
                    let q_total = (1.0 - eps) * wq + eps * inv_c * plan.w_total;
                    // lse·Q - Σ w q' o' = log_sum·Q - Σ w q' (o' - m): no cancellation of large terms.
                    // `times` keeps a term with no mass from turning a -inf logit into NaN.
                    let main = log_sum * q_total - (times(1.0 - eps, wqo) + times(eps * inv_c, wo));
                    let a = plan.r_main * q_total;
                    let bw = plan.r_main * eps * inv_c;
                    let bq = plan.r_main * (1.0 - eps);
                    (main, a, bw, bq, None)
                }
                (None, Target::Hard(_)) => unreachable!("hard targets always have a label"),
            };
            if P::HAS_CHAIN && TypeId::of::<T>() == TypeId::of::<f32>() {
                // The soft cap's float32 value is off by up to a few ulp of `c` (4e-6 at c = 50),
                // which the loss `lse - o'_y` keeps in full (a confident row's loss went
                // negative): the float32 rows' loss is taken in float64 instead.
                main = self.main_in_f64(off, x, label);
            }
            main_sum.add(main);
            z_sum.add(z_term);
            if let Some(l) = self.losses {
                // SAFETY: this task owns row `r` of the losses.
                unsafe { *l.0.add(r) = T::from_f64(main + z_term) };
            }
            if let Some(d) = dst {
                let a = a + plan.r_z * 2.0 * opts.z_loss * lse;
                let q = match self.target {
                    Target::Soft(q) => Some(&q[off..off + cols]),
                    Target::Hard(_) => None,
                };
                let inv_sum = 1.0 / sum;
                // SAFETY: row `r` of src/dst belongs to this task; src may equal dst.
                unsafe {
                    grad_row(
                        s,
                        &p,
                        self.src.add(off),
                        d,
                        cols,
                        GradCoef {
                            m,
                            a: T::from_f64(a * inv_sum),
                            bw: T::from_f64(bw),
                            bq: T::from_f64(bq),
                        },
                        opts.weight,
                        q,
                    )
                };
                if let Some((y, k, oy_raw)) = at_label {
                    // The label's entry in f64: p_y·a - w_y·bw - k cancels badly in T when p_y ≈ 1.
                    let oy = p.apply_scalar(oy_raw).to_f64();
                    let py = (oy - m.to_f64()).exp() * inv_sum;
                    let wy = opts.weight.map_or(1.0, |w| w[y].to_f64());
                    let g = (py * a - wy * bw - k) * p.chain_scalar(oy);
                    unsafe { *d.0.add(y) = T::from_f64(g) };
                }
            }
        }
        (main_sum.value(), z_sum.value())
    }
}

impl<T: Element> CeRows<'_, T> {
    /// The main loss term of the row at `off` (its logits `x`, its label if any), computed by the
    /// float64 kernel on a float64 copy of the row (without z-loss, which float32 keeps).
    fn main_in_f64(&self, off: usize, x: &[T], label: Option<i64>) -> f64 {
        let f64s = |v: &[T]| v.iter().map(|v| v.to_f64()).collect::<Vec<f64>>();
        let (x64, w64) = (f64s(x), self.opts.weight.map(f64s));
        let (one_label, q64);
        let target = match (label, self.target) {
            (Some(y), _) => {
                one_label = [y];
                Target::Hard(&one_label)
            }
            (None, Target::Soft(q)) => {
                q64 = f64s(&q[off..off + x.len()]);
                Target::Soft(&q64)
            }
            (None, Target::Hard(_)) => return f64::NAN,
        };
        let o = self.opts;
        let opts = CeOptions {
            weight: w64.as_deref(),
            ignore_index: o.ignore_index,
            label_smoothing: o.label_smoothing,
            z_loss: 0.0,
            softcap: o.softcap,
            reduction: Reduction::None,
        };
        let mut loss = [0.0f64];
        let logits = Logits::Read(&x64);
        // The arguments passed the checks already; an error cannot happen here.
        cross_entropy(
            self.backend,
            logits,
            1,
            x.len(),
            target,
            &opts,
            Some(&mut loss),
        )
        .map_or(f64::NAN, |_| loss[0])
    }
}

#[derive(Clone, Copy)]
struct GradCoef<T> {
    m: T,
    /// `a / Σ exp(o' - m)`: multiplies `exp(o' - m)`.
    a: T,
    bw: T,
    bq: T,
}

/// `g = (exp(o' - m)·a - w·(bw + bq·q)) · chain(o')`, written over the row. `src` may equal `dst`.
///
/// # Safety
/// `src`/`dst` valid for `len` elements and owned by the caller's task.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn grad_row<T: Element, S: Simd<T>, P: Pre<T, S>>(
    s: S,
    p: &P,
    src: SendPtr<T>,
    dst: SendPtr<T>,
    len: usize,
    c: GradCoef<T>,
    w: Option<&[T]>,
    q: Option<&[T]>,
) {
    let (mv, av, bwv, bqv) = (s.splat(c.m), s.splat(c.a), s.splat(c.bw), s.splat(c.bq));
    let one = s.splat(T::ONE);
    // Four specialised loops (weights or not, soft labels or not) so the common case loads nothing
    // but the logits; `map_row!` instead of closures keeps the vector code inlined.
    macro_rules! grad {
        ($x:expr, $wv:expr, $qv:expr) => {{
            let y = p.apply(s, $x);
            let e = s.exp(s.sub(y, mv));
            // g = e·a - w·(bw + bq·q)
            let g = s.sub(s.mul(e, av), s.mul($wv, s.mul_add(bqv, $qv, bwv)));
            if P::HAS_CHAIN {
                s.mul(g, p.chain(s, y))
            } else {
                g
            }
        }};
    }
    match (w, q) {
        (None, None) => map_row!(T, S, s, src, dst, len, |x, _i| grad!(x, one, one)),
        (Some(w), None) => map_row!(T, S, s, src, dst, len, |x, i| grad!(
            x,
            load_at(s, w, i),
            one
        )),
        (None, Some(q)) => map_row!(T, S, s, src, dst, len, |x, i| grad!(
            x,
            one,
            load_at(s, q, i)
        )),
        (Some(w), Some(q)) => {
            map_row!(T, S, s, src, dst, len, |x, i| grad!(
                x,
                load_at(s, w, i),
                load_at(s, q, i)
            ))
        }
    }
}

/// The vector of `v` starting at `i`, zero-filled past the end.
#[inline(always)]
fn load_at<T: Element, S: Simd<T>>(s: S, v: &[T], i: usize) -> S::V {
    if i + S::LANES <= v.len() {
        s.load(&v[i..i + S::LANES])
    } else {
        s.load_partial(&v[i..], T::ZERO)
    }
}

/// `(Σ w·q, Σ w·q·(o' - m), Σ w·(o' - m))` over a row (`w`, `q` are 1 when absent), in f64. Summing
/// `o' - m` rather than `o'` keeps logits with a large common offset from cancelling in the loss.
#[inline(always)]
fn dots<T: Element, S: Simd<T>, P: Pre<T, S>>(
    s: S,
    p: &P,
    x: &[T],
    m: T,
    w: Option<&[T]>,
    q: Option<&[T]>,
) -> (f64, f64, f64) {
    let l = S::LANES;
    let zero = s.splat(T::ZERO);
    let mv = s.splat(m);
    let one = s.splat(T::ONE);
    let (mut wq, mut wqo, mut wo) = (Acc::default(), Acc::default(), Acc::default());
    let full = x.len() / l * l;
    for start in (0..full).step_by(BLOCK) {
        let end = (start + BLOCK).min(full);
        let (mut a, mut b, mut c) = (zero, zero, zero);
        for i in (start..end).step_by(l) {
            let o = s.sub(p.apply(s, s.load(&x[i..i + l])), mv);
            let wv = match w {
                Some(w) => s.load(&w[i..i + l]),
                None => one,
            };
            let qv = match q {
                Some(q) => s.load(&q[i..i + l]),
                None => one,
            };
            let wqv = s.mul(wv, qv);
            a = s.add(a, wqv);
            // A zero weight or label on a -inf logit adds 0 (the limit q·log q'), not 0·(-inf).
            b = s.add(b, s.select_eq(wqv, zero, zero, s.mul(wqv, o)));
            c = s.add(c, s.select_eq(wv, zero, zero, s.mul(wv, o)));
        }
        wq.add(s.reduce_sum(a).to_f64());
        wqo.add(s.reduce_sum(b).to_f64());
        wo.add(s.reduce_sum(c).to_f64());
    }
    for i in full..x.len() {
        let o = p.apply_scalar(x[i]).to_f64() - m.to_f64();
        let wi = w.map_or(1.0, |w| w[i].to_f64());
        let qi = q.map_or(1.0, |q| q[i].to_f64());
        wq.add(wi * qi);
        wqo.add(times(wi * qi, o));
        wo.add(times(wi, o));
    }
    (wq.value(), wqo.value(), wo.value())
}

/// `c · v`, with `0 · v = 0` even for an infinite `v`: a term that carries no probability mass
/// contributes nothing (PyTorch's soft-label loss is `+inf` when mass sits on a `-inf` logit, and
/// finite when none does).
#[inline(always)]
fn times(c: f64, v: f64) -> f64 {
    if c == 0.0 {
        0.0
    } else {
        c * v
    }
}
