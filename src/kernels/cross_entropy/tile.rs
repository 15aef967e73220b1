//! Cross-entropy on tiles of tiny rows (`cols <= SMALL_COLS`, e.g. 1,000,000 × 10): a
//! tile of `LANES` rows is transposed so a vector holds one column ([`crate::kernels::tile`]), and
//! every per-row quantity of the row path (max, sum, the label's logit, the loss, the gradient's
//! coefficients) becomes a lane-wise vector operation. Same formulas as the row path, in `T` per
//! row instead of float64 (within docs/api.md §4's bounds), summed over rows in float64.
//!
//! Hard labels and soft labels (a distribution per row, transposed like the logits). Declined here
//! (the row path takes it): the soft cap, whose float32 loss the row path recomputes in float64
//! row by row.

use std::ops::Range;

use super::{CeRows, Target};
use crate::kernels::driver::{self, Rows};
use crate::kernels::pre::One;
use crate::kernels::row::{Acc, MAX_LANES};
use crate::kernels::tile::{column_max, load_tile, store_tile, Scratch, SMALL_COLS};
use crate::kernels::SendPtr;
use crate::simd::{Element, Simd};

/// The tile path of [`CeRows`] as whole-row work for the driver.
pub(super) struct Tiled<'a, 'b, T>(pub &'a CeRows<'b, T>);

impl<T: Element> Rows<T> for Tiled<'_, '_, T> {
    type Out = (f64, f64);
    #[inline(always)]
    fn rows<S: Simd<T>>(&self, s: S, rows: Range<usize>) -> (f64, f64) {
        self.0.tile(s, rows)
    }
}

impl<T: Element> CeRows<'_, T> {
    /// Whether these rows take the tile path.
    pub(super) fn tiles(&self) -> bool {
        driver::takes_tiles(self.cols, super::tile_cols(self.opts))
    }

    /// Rows `rows` on the tile path: `(Σ main term, Σ z term)` over them, unscaled.
    #[inline(always)]
    pub(super) fn tile<S: Simd<T>>(&self, s: S, rows: Range<usize>) -> (f64, f64) {
        let (labels, soft) = match self.target {
            Target::Hard(labels) => (labels, None),
            Target::Soft(q) => (&[][..], Some(q)),
        };
        let (l, cols, opts, plan) = (S::LANES, self.cols, self.opts, self.plan);
        let eps = opts.label_smoothing;
        let inv_c = 1.0 / cols as f64;
        let weight = |c: usize| opts.weight.map_or(1.0, |w| w[c].to_f64());
        // Per class: its weight, and `w_c·bw` (the smoothing's share of the gradient), in `T`
        // as the row path rounds them.
        let bw = T::from_f64(plan.r_main * eps * inv_c);
        let (mut w_col, mut wbw) = ([T::ONE; SMALL_COLS], [T::ZERO; SMALL_COLS]);
        for c in 0..cols {
            w_col[c] = T::from_f64(weight(c));
            wbw[c] = w_col[c] * bw;
        }
        let splat = |v: f64| s.splat(T::from_f64(v));
        let (zero, one) = (s.splat(T::ZERO), s.splat(T::ONE));
        let (one_m_eps, smooth) = (splat(1.0 - eps), splat(eps * inv_c));
        let (w_total, r_main, z2) = (
            splat(plan.w_total),
            splat(plan.r_main),
            splat(plan.r_z * 2.0 * opts.z_loss),
        );
        // The part of the label-independent gradient coefficient `a` that smoothing adds.
        let a_smooth = splat(plan.r_main * eps * plan.w_total * inv_c);
        let z = splat(opts.z_loss);
        // Soft labels: `q_total = (1-ε)·Σ w q + ε/C·W`, and the gradient's `w·(bw + bq·q)`.
        let (smooth_w, bq) = (
            splat(eps * inv_c * plan.w_total),
            splat(plan.r_main * (1.0 - eps)),
        );
        let (mut buf, mut qbuf) = (Scratch::new(), Scratch::new());
        // `qbuf`: the soft labels' tile, transposed like the logits.
        let (buf, qbuf) = (&mut buf.0, &mut qbuf.0);
        let mut sums = LaneSums::default();
        let mut r0 = rows.start;
        while r0 < rows.end {
            let k = l.min(rows.end - r0);
            // SAFETY: the driver hands rows `r0..r0 + k` to this task alone.
            unsafe { load_tile(s, self.src, r0, k, cols, buf) };
            let scratch = &mut buf[..cols * l];
            // Per lane: the label as `T` (-1 for ignored and absent rows, which then match no
            // column), 1 for a counted row, the label's weight.
            if let Some(q) = soft {
                // SAFETY: rows `r0..r0 + k` of `q` are in bounds (checked by the plan); only read.
                unsafe { load_tile(s, SendPtr(q.as_ptr() as *mut T), r0, k, cols, qbuf) };
            }
            let ys = if soft.is_some() {
                &[][..]
            } else {
                &labels[r0..r0 + k]
            };
            // Whether a row of the tile is ignored (its gradient is then zeroed).
            let masked = ys.contains(&opts.ignore_index);
            let (mut yb, mut keepb, mut wyb) = (
                [-T::ONE; MAX_LANES],
                [T::ZERO; MAX_LANES],
                [T::ZERO; MAX_LANES],
            );
            if soft.is_some() {
                // Every row counts; no label column (the hard-label terms below are then 0).
                keepb[..k].fill(T::ONE);
            } else if masked || k < l || opts.weight.is_some() {
                for (r, &y) in ys.iter().enumerate() {
                    if y != opts.ignore_index {
                        (yb[r], keepb[r], wyb[r]) =
                            (T::from_f64(y as f64), T::ONE, w_col[y as usize]);
                    }
                }
            } else {
                // The common tile: every row counted, weight 1 (a loop the compiler vectorises).
                for (b, &y) in yb.iter_mut().zip(ys) {
                    *b = T::from_f64(y as f64);
                }
                (keepb, wyb) = ([T::ONE; MAX_LANES], [T::ONE; MAX_LANES]);
            }
            let (yv, keep, wy) = (s.load(&yb), s.load(&keepb), s.load(&wyb));
            let m = column_max(s, &One, scratch);
            // An all -inf, +inf or NaN row makes `d` NaN somewhere, hence NaN sums: the row path's
            // NaN loss and gradient.
            let neg_m = s.sub(zero, m);
            let (mut sum, mut not_y, mut d_y, mut e_y) = (zero, zero, zero, zero);
            let (mut wo, mut rest, mut n_max) = (zero, zero, zero);
            let (mut wq, mut wqo) = (zero, zero);
            // `jv`: the column's index in every lane, compared with the labels.
            let mut jv = zero;
            for (j, col) in scratch.chunks_exact_mut(l).enumerate() {
                let d = s.add(s.load(col), neg_m);
                let e = s.exp(d);
                sum = s.add(sum, e);
                d_y = s.select_eq(yv, jv, d, d_y);
                if self.dst.is_some() {
                    // The gradient's terms at the label.
                    not_y = s.add(not_y, s.select_eq(yv, jv, zero, e));
                    e_y = s.select_eq(yv, jv, e, e_y);
                }
                if eps > 0.0 && w_col[j] != T::ZERO {
                    // Σ w·(o - m); a zero weight adds 0 even on a -inf logit, as in the row path.
                    wo = s.mul_add(s.splat(w_col[j]), d, wo);
                }
                if soft.is_some() {
                    // Σ w q and Σ w q (o - m); no mass on a -inf logit adds 0, not 0·(-inf).
                    let wqj = s.mul(s.splat(w_col[j]), s.load(&qbuf[j * l..]));
                    wq = s.add(wq, wqj);
                    wqo = s.add(wqo, s.select_eq(wqj, zero, zero, s.mul(wqj, d)));
                }
                if T::REFINE_LSE {
                    // The sum without one copy of its largest term (exactly 1), for `log1p`.
                    rest = s.add(rest, s.select_eq(d, zero, zero, e));
                    n_max = s.add(n_max, s.select_eq(d, zero, one, zero));
                }
                if self.dst.is_some() {
                    s.store(col, e);
                }
                jv = s.add(jv, one);
            }
            let log_sum = if T::REFINE_LSE {
                log1p(s, s.add(rest, s.sub(n_max, one)))
            } else {
                s.ln(sum)
            };
            let lse = s.sub(log_sum, neg_m);
            // main = w_y(1-ε)·(lse - o_y) [0 when the factor is 0] + ε/C·(W·log_sum - Σ w(o - m)).
            let c_y = s.mul(wy, one_m_eps);
            let q_total = s.mul_add(one_m_eps, wq, smooth_w);
            let mut main;
            if soft.is_some() {
                // log_sum·Q - ((1-ε)·Σ w q (o - m) + ε/C·Σ w (o - m)), a term with a zero factor
                // left out (as the row path's `times`).
                let mut mass = if eps < 1.0 {
                    s.mul(one_m_eps, wqo)
                } else {
                    zero
                };
                if eps > 0.0 {
                    mass = s.add(mass, s.mul(smooth, wo));
                }
                main = s.sub(s.mul(log_sum, q_total), mass);
            } else {
                main = s.select_eq(c_y, zero, zero, s.mul(c_y, s.sub(log_sum, d_y)));
                if eps > 0.0 {
                    main = s.add(main, s.mul(smooth, s.sub(s.mul(w_total, log_sum), wo)));
                }
            }
            let main = s.select_eq(keep, zero, zero, main);
            // (z·lse)·lse as the row path: z = 0 gives 0 for a huge finite lse (lse² overflows
            // float32) and NaN for an infinite or NaN one.
            let z_term = s.select_eq(keep, zero, zero, s.mul(s.mul(z, lse), lse));
            if opts.z_loss == 0.0 {
                // The z term is then 0, or NaN where the loss is NaN already: one sum.
                sums.add(s, s.add(main, z_term), None);
            } else {
                sums.add(s, main, Some(z_term));
            }
            if let Some(losses) = self.losses {
                let mut buf = [T::ZERO; MAX_LANES];
                s.store(&mut buf, s.add(main, z_term));
                // SAFETY: rows `r0..r0 + k` of the losses belong to this task.
                unsafe { losses.add(r0).slice_mut(k) }.copy_from_slice(&buf[..k]);
            }
            if let Some(dst) = self.dst {
                // g = e·a/Σe - w·bw, with a = r·(w_y(1-ε) + εW/C) + 2z'·lse; at the label
                // `p_y·a - k` (k = r·w_y(1-ε)) is formed as `p_y·(a - k) - k·(1 - p_y)` with
                // `1 - p_y = Σ_{c≠y} e / Σe`: no cancellation when p_y ≈ 1.
                let inv_sum = s.recip(sum);
                let a_rest = s.mul_add(z2, lse, a_smooth);
                let k_y = s.mul(r_main, c_y);
                let a_inv = s.mul(s.add(k_y, a_rest), inv_sum);
                let at_y = s.mul(s.sub(s.mul(e_y, a_rest), s.mul(k_y, not_y)), inv_sum);
                if soft.is_some() {
                    // g = e·a/Σe - w·(bw + bq·q), a = r·Q + 2z'·lse.
                    let a_inv = s.mul(s.mul_add(z2, lse, s.mul(r_main, q_total)), inv_sum);
                    let bwv = s.splat(bw);
                    for (j, col) in scratch.chunks_exact_mut(l).enumerate() {
                        let wv = s.splat(w_col[j]);
                        let qv = s.load(&qbuf[j * l..]);
                        let g = s.sub(s.mul(s.load(col), a_inv), s.mul(wv, s.mul_add(bq, qv, bwv)));
                        s.store(col, g);
                    }
                    // SAFETY: as below.
                    unsafe { store_tile(s, buf, dst, r0, k, cols, None) };
                    r0 += k;
                    continue;
                }
                let mut jv = zero;
                for (j, col) in scratch.chunks_exact_mut(l).enumerate() {
                    let wbw = s.splat(wbw[j]);
                    let mut g = s.sub(s.mul(s.load(col), a_inv), wbw);
                    g = s.select_eq(yv, jv, s.sub(at_y, wbw), g);
                    if masked {
                        g = s.select_eq(keep, zero, zero, g);
                    }
                    s.store(col, g);
                    jv = s.add(jv, one);
                }
                // SAFETY: as for `load_tile`; `src` may equal `dst`, and the tile is read already.
                unsafe { store_tile(s, buf, dst, r0, k, cols, None) };
            }
            r0 += k;
        }
        sums.value()
    }
}

/// `log(1 + x)` lane-wise for `x >= 0` (or NaN), to a few ulp: `log(u)·x/(u - 1)` with `u = 1 + x`
/// rounded, which cancels `u`'s rounding error (Goldberg); `x` itself where `u` rounds to 1.
#[inline(always)]
fn log1p<T: Element, S: Simd<T>>(s: S, x: S::V) -> S::V {
    let one = s.splat(T::ONE);
    let u = s.add(one, x);
    let den = s.sub(u, one);
    s.select_eq(den, s.splat(T::ZERO), x, s.div(s.mul(s.ln(u), x), den))
}

/// Per-lane compensated (TwoSum) float64 sums of the main and z terms (lane `r` sums rows
/// `r mod LANES`), branch-free so the lanes are added as vectors; added up lane by lane at the end.
#[derive(Default)]
struct LaneSums {
    main: Lanes,
    z: Lanes,
}

#[derive(Default)]
struct Lanes {
    sum: [f64; MAX_LANES],
    comp: [f64; MAX_LANES],
}

impl Lanes {
    #[inline(always)]
    fn add<T: Element>(&mut self, v: &[T; MAX_LANES]) {
        for ((sum, comp), v) in self.sum.iter_mut().zip(&mut self.comp).zip(v) {
            let (a, b) = (*sum, v.to_f64());
            let t = a + b;
            let bb = t - a;
            *comp += (a - (t - bb)) + (b - bb);
            *sum = t;
        }
    }

    /// The lanes' total; an infinite or NaN lane sum stands as it is (its compensation is NaN).
    fn value(&self) -> f64 {
        let mut total = Acc::default();
        for (s, c) in self.sum.iter().zip(&self.comp) {
            total.add(if s.is_finite() { s + c } else { *s });
        }
        total.value()
    }
}

impl LaneSums {
    #[inline(always)]
    fn add<T: Element, S: Simd<T>>(&mut self, s: S, main: S::V, z: Option<S::V>) {
        let mut buf = [T::ZERO; MAX_LANES];
        s.store(&mut buf, main);
        self.main.add(&buf);
        if let Some(z) = z {
            s.store(&mut buf, z);
            self.z.add(&buf);
        }
    }

    fn value(&self) -> (f64, f64) {
        (self.main.value(), self.z.value())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CeOptions, CeRows, Plan, Reduction, Target};
    use super::Tiled;
    use crate::kernels::driver;
    use crate::kernels::testing::data;
    use crate::kernels::tile::SMALL_COLS;
    use crate::kernels::SendPtr;
    use crate::simd::{Backend, Element};

    /// Per-row losses, the gradient and the unscaled `(Σ main, Σ z)` of one path.
    type Run<T> = (Vec<T>, Vec<T>, f64, f64);

    fn run<T: Element>(
        b: Backend,
        x: &[T],
        target: Target<'_, T>,
        cols: usize,
        opts: &CeOptions<'_, T>,
        tiled: bool,
    ) -> Run<T> {
        let rows = x.len() / cols;
        let (mut losses, mut grad) = (vec![T::NAN; rows], vec![T::NAN; x.len()]);
        let plan = Plan::new(b, (rows, cols), target, opts, Some(&losses)).unwrap();
        let k = CeRows {
            backend: b,
            src: SendPtr(x.as_ptr() as *mut T),
            dst: Some(SendPtr(grad.as_mut_ptr())),
            losses: Some(SendPtr(losses.as_mut_ptr())),
            cols,
            target,
            opts,
            plan: &plan,
        };
        assert!(
            cols <= SMALL_COLS && opts.softcap.is_none(),
            "a shape the tiles can hold"
        );
        let parts = if tiled {
            driver::map_tiles(b, &Tiled(&k), rows, cols)
        } else {
            driver::map_rows(b, &k, rows, cols)
        };
        let main: f64 = parts.iter().map(|p| p.0).sum();
        let z: f64 = parts.iter().map(|p| p.1).sum();
        (losses, grad, main, z)
    }

    /// Same NaN and infinities; finite values within `bound`.
    fn same(a: f64, b: f64, bound: f64) -> bool {
        (a.is_nan() && b.is_nan()) || a == b || (a.is_finite() && (a - b).abs() <= bound)
    }

    /// The tile path against the row path on the `cols`-wide logits `x` and their target `y`.
    fn compare<T: Element>(
        b: Backend,
        (x, y): (&[T], Target<'_, T>),
        cols: usize,
        opts: &CeOptions<'_, T>,
    ) {
        let tol = [1e-14, 2e-6][usize::from(std::mem::size_of::<T>() == 4)];
        let (tl, tg, tm, tz) = run(b, x, y, cols, opts, true);
        let (rl, rg, rm, rz) = run(b, x, y, cols, opts, false);
        let ctx = format!("{b:?} {} cols={cols}", std::any::type_name::<T>());
        for (r, (t, w)) in tl.iter().zip(&rl).enumerate() {
            let (t, w) = (t.to_f64(), w.to_f64());
            assert!(
                same(t, w, tol * w.abs().max(1.0)),
                "{ctx} row {r}: loss {t} vs row path {w}"
            );
        }
        let scale = rg.iter().fold(0f64, |a, g| match g.to_f64() {
            g if g.is_finite() => a.max(g.abs()),
            _ => a,
        });
        for (i, (t, w)) in tg.iter().zip(&rg).enumerate() {
            let (t, w) = (t.to_f64(), w.to_f64());
            assert!(
                same(t, w, 8.0 * tol * scale),
                "{ctx} grad[{i}]: {t} vs row path {w}"
            );
        }
        // The reduced loss (the z sum alone may differ where the main sum is NaN: an all -inf
        // row's z term is +inf on the row path, NaN here).
        let (t, w) = (tm + tz, rm + rz);
        assert!(same(t, w, tol * w.abs().max(1.0)), "{ctx}: Σ {t} vs {w}");
    }

    /// NaN, ±inf and huge values at every position of a tiny row (row `r` has one at `r % cols`,
    /// its label walks over the columns), some rows ignored (in the first half only, so later tiles
    /// have none), some all `-inf`: the tile path gives
    /// the row path's losses, gradients and sums on every backend.
    fn special_values<T: Element>(b: Backend) {
        for cols in 1..=64 {
            let rows = 2 * cols + 5;
            let base = data(rows * cols, cols as u64, 4.0);
            let y: Vec<i64> = (0..rows)
                .map(|r| {
                    if r % 7 == 3 && r < rows / 2 {
                        -100
                    } else {
                        ((r / cols + r) % cols) as i64
                    }
                })
                .collect();
            let w: Vec<T> = (0..cols)
                .map(|c| T::from_f64(0.5 + (c % 3) as f64))
                .collect();
            // Soft labels: no mass where the special value sits in every other row.
            let mut q: Vec<T> = data(rows * cols, 7 + cols as u64, 1.0)
                .iter()
                .map(|v| T::from_f64(v.abs()))
                .collect();
            for r in (0..rows).step_by(2) {
                q[r * cols + r % cols] = T::ZERO;
            }
            for special in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e30, -1e30] {
                let mut x: Vec<T> = base.iter().map(|&v| T::from_f64(v)).collect();
                for r in 0..rows {
                    x[r * cols + r % cols] = T::from_f64(special);
                }
                // One row all -inf, one with -inf everywhere but its label.
                x[..cols].fill(T::NEG_INFINITY);
                x[cols..2 * cols].fill(T::NEG_INFINITY);
                x[cols + y[1] as usize] = T::ONE;
                for (weight, eps, z) in [(None, 0.0, 0.0), (Some(&w[..]), 0.2, 1e-3)] {
                    let opts = CeOptions {
                        weight,
                        label_smoothing: eps,
                        z_loss: z,
                        reduction: Reduction::None,
                        ..CeOptions::default()
                    };
                    compare(b, (&x, Target::Hard(&y)), cols, &opts);
                    compare(b, (&x, Target::Soft(&q)), cols, &opts);
                }
            }
        }
    }

    #[test]
    fn special_values_match_the_row_path() {
        for b in Backend::supported() {
            special_values::<f32>(b);
            special_values::<f64>(b);
        }
    }
}
