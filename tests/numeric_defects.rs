//! Numeric cases that once went wrong, on every instruction set: soft-label cross-entropy on `-inf`
//! logits, weighted `logsumexp` over `+inf` of both signs, the accuracy of a temperature, and the
//! soft cap's rounding.

use fastsoftmax::kernels::cross_entropy::Logits;
use fastsoftmax::simd::Element;
use fastsoftmax::{
    cross_entropy, logsumexp, logsumexp_scaled, logsumexp_weighted, softmax, softmax_scaled,
    Backend, Buf, CeOptions, Mode, Reduction, Target,
};

const INF: f64 = f64::INFINITY;

mod common;
use common::{log_softmax_hi_lo, two_sum, Rng};

fn cast<T: Element>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::from_f64(x)).collect()
}

/// Loss and gradient of one row's cross-entropy against the (smoothed) distribution `q`, in f64:
/// `Σ q_j (lse - x_j)` with the `q_j = 0` terms left out (`0 · inf` adds nothing), and `p·Σq - q`.
fn ce_ref(x: &[f64], q: &[f64]) -> (f64, Vec<f64>) {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = x.iter().map(|v| (v - m).exp()).sum();
    let lse = m + sum.ln();
    let loss = x
        .iter()
        .zip(q)
        .filter(|(_, &qj)| qj != 0.0)
        .map(|(&xj, &qj)| qj * (lse - xj))
        .sum();
    let qt: f64 = q.iter().sum();
    let grad = x
        .iter()
        .zip(q)
        .map(|(&xj, &qj)| (xj - lse).exp() * qt - qj)
        .collect();
    (loss, grad)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    a == b || (a - b).abs() <= tol * b.abs().max(1.0)
}

/// Runs the loss and gradient of one row on backend `b` in `T`; `hard` picks a hard label.
fn ce_row<T: Element>(
    b: Backend,
    x: &[f64],
    target: Result<i64, &[f64]>,
    eps: f64,
) -> (f64, Vec<f64>) {
    let cols = x.len();
    let xt: Vec<T> = cast(x);
    let mut grad = vec![T::ZERO; cols];
    let mut loss = [T::ZERO];
    let opts = CeOptions {
        label_smoothing: eps,
        reduction: Reduction::None,
        ..CeOptions::default()
    };
    let label;
    let qt: Vec<T>;
    let target = match target {
        Ok(y) => {
            label = [y];
            Target::Hard(&label)
        }
        Err(q) => {
            qt = cast(q);
            Target::Soft(&qt)
        }
    };
    let logits = Logits::Grad(Buf::Separate {
        x: &xt,
        out: &mut grad,
    });
    cross_entropy(b, logits, 1, cols, target, &opts, Some(&mut loss)).unwrap();
    (loss[0].to_f64(), grad.iter().map(|v| v.to_f64()).collect())
}

/// A named target (a hard label or soft labels) and the smoothed distribution it stands for.
type Case<'a> = (&'a str, Result<i64, &'a [f64]>, Vec<f64>);

fn check_ce_on_neg_inf<T: Element>(tol: f64) {
    let mut rng = Rng(0xC0FF_EE12_3456_789B);
    for b in Backend::supported() {
        for cols in [2usize, 3, 17, 100, 2049] {
            for hole in [0, cols / 2, cols - 1] {
                let mut x: Vec<f64> = (0..cols).map(|_| rng.normal()).collect();
                x[hole] = f64::NEG_INFINITY;
                let finite = (hole + 1) % cols;
                let soft: Vec<f64> = (0..cols).map(|_| rng.next() + 0.1).collect();
                let total: f64 = soft.iter().sum();
                let soft: Vec<f64> = soft.iter().map(|v| v / total).collect();
                let mut onehot = vec![0.0; cols];
                onehot[finite] = 1.0;
                let mut on_hole = vec![0.0; cols];
                on_hole[hole] = 1.0;
                for eps in [0.0, 0.1] {
                    let smooth = |q: &[f64]| -> Vec<f64> {
                        q.iter()
                            .map(|v| (1.0 - eps) * v + eps / cols as f64)
                            .collect()
                    };
                    let cases: [Case; 4] = [
                        ("soft", Err(&soft), smooth(&soft)),
                        ("one-hot off the -inf", Err(&onehot), smooth(&onehot)),
                        ("one-hot on the -inf", Err(&on_hole), smooth(&on_hole)),
                        (
                            "hard label off the -inf",
                            Ok(finite as i64),
                            smooth(&onehot),
                        ),
                    ];
                    for (name, target, q) in cases {
                        let (loss, grad) = ce_row::<T>(b, &x, target, eps);
                        let xr: Vec<f64> = x.iter().map(|&v| T::from_f64(v).to_f64()).collect();
                        let (rl, rg) = ce_ref(&xr, &q);
                        let what = format!("{b:?} {name} eps {eps} cols {cols} hole {hole}");
                        assert!(close(loss, rl, tol), "{what}: loss {loss}, expected {rl}");
                        for (j, (&g, &r)) in grad.iter().zip(&rg).enumerate() {
                            assert!(close(g, r, tol), "{what}: grad[{j}] {g}, expected {r}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn cross_entropy_with_mass_on_a_neg_inf_logit_is_inf_and_without_it_finite() {
    check_ce_on_neg_inf::<f32>(2e-6);
    check_ce_on_neg_inf::<f64>(1e-13);
}

#[test]
fn weighted_logsumexp_of_inf_with_weights_of_both_signs_is_nan() {
    // inf·2 - inf·1 is inf - inf (SciPy gives NaN); weights of one sign keep the infinity.
    let cases: [(&[f64], &[f64], f64, f64); 5] = [
        (&[INF, INF], &[2.0, -1.0], f64::NAN, f64::NAN),
        (&[INF, 1.0, INF], &[-1.0, 5.0, 1.0], f64::NAN, f64::NAN),
        (&[INF, INF], &[2.0, 1.0], INF, 1.0),
        (&[INF, INF, 0.0], &[-2.0, -1.0, 3.0], INF, -1.0),
        (&[INF, INF], &[2.0, 0.0], INF, 1.0),
    ];
    for (x, b, el, es) in cases {
        let (mut out, mut sign) = ([0.0f64], [0.0f64]);
        logsumexp_weighted(x, b, x.len(), 1.0, &mut out, &mut sign).unwrap();
        let same = |a: f64, e: f64| a == e || (a.is_nan() && e.is_nan());
        assert!(
            same(out[0], el) && same(sign[0], es),
            "x {x:?} b {b:?}: ({}, {}), expected ({el}, {es})",
            out[0],
            sign[0]
        );
    }
}

/// Log-softmax (as `(hi, lo)` pairs, so `exp` of it is good to ~1e-16 even at `|hi| ≈ 69`) and
/// logsumexp of `x · scale` in f64, the scale as the kernel receives it: the products' and
/// differences' rounding errors are kept, or the float64 reference would err by as much as the
/// float64 bound it checks.
fn scaled_ref(row: &[f64], scale: f64) -> (Vec<(f64, f64)>, f64) {
    let prod: Vec<(f64, f64)> = row
        .iter()
        .map(|&v| {
            let p = v * scale;
            (p, v.mul_add(scale, -p))
        })
        .collect();
    let &(m, em) = prod.iter().max_by(|a, b| a.0.total_cmp(&b.0)).unwrap();
    // d_i = (p_i - m) + (e_i - e_m), as hi + lo.
    let diffs: Vec<(f64, f64)> = prod
        .iter()
        .map(|&(p, e)| {
            let (h, l) = two_sum(p, -m);
            (h, l + (e - em))
        })
        .collect();
    let (out, ls) = log_softmax_hi_lo(&diffs);
    (out, m + em + ls)
}

/// `softmax` with the scale `sf` as a `T` (`exact`) or as a float64 (`softmax_scaled`).
fn scaled_softmax<T: Element>(
    b: Backend,
    x: &[T],
    out: &mut [T],
    cols: usize,
    sf: f64,
    exact: bool,
    mode: Mode,
) {
    let buf = Buf::Separate { x, out };
    if exact {
        softmax(b, buf, cols, T::from_f64(sf), mode).unwrap();
    } else {
        softmax_scaled(b, buf, cols, sf, mode).unwrap();
    }
}

/// Every kernel that takes a temperature keeps the accuracy bounds (float32: softmax 2e-6 relative
/// for outputs >= 1e-30, log-softmax and logsumexp 2e-6·max(1, |ref|); float64: 1e-14) at any
/// scale, on the tile path, whole rows and split rows.
fn check_temperature<T: Element>(tol: f64) {
    let mut rng = Rng(0x7E3A_11CE_5EED_0042);
    let shapes: &[(usize, usize)] = if cfg!(debug_assertions) {
        &[(9, 31), (40, 64), (3, 1000), (2, 4099)]
    } else {
        &[(9, 31), (40, 64), (3, 1000), (2, 4099), (1, 131_075)]
    };
    for b in Backend::supported() {
        for &(rows, cols) in shapes {
            let x: Vec<T> = (0..rows * cols)
                .map(|_| T::from_f64(3.0 * rng.normal()))
                .collect();
            // 0.2446...: 1/T rounded to float32 errs by 5.5e-8 relative (the scale's own rounding
            // moved outputs near 1e-30 by 3.9e-6 before the float64 scale's low part was carried).
            let temps = [0.1, 0.05, 0.3, 0.7, 3.0, -0.1, -0.3, 0.2446193054257848];
            for (t, exact) in temps.into_iter().flat_map(|t| [(t, true), (t, false)]) {
                // `exact`: the scale is a `T` (`softmax`); else a float64 (`softmax_scaled`).
                let sf = if exact {
                    T::from_f64(1.0 / t).to_f64()
                } else {
                    1.0 / t
                };
                let mut sm = vec![T::ZERO; x.len()];
                let mut lsm = vec![T::ZERO; x.len()];
                let mut lse = vec![T::ZERO; rows];
                scaled_softmax(b, &x, &mut sm, cols, sf, exact, Mode::Softmax);
                scaled_softmax(b, &x, &mut lsm, cols, sf, exact, Mode::LogSoftmax);
                if exact {
                    logsumexp(b, &x, cols, T::from_f64(sf), &mut lse).unwrap();
                } else {
                    logsumexp_scaled(b, &x, cols, sf, &mut lse).unwrap();
                }
                for r in 0..rows {
                    let row: Vec<f64> = x[r * cols..(r + 1) * cols]
                        .iter()
                        .map(|v| v.to_f64())
                        .collect();
                    let (rl, rlse) = scaled_ref(&row, sf);
                    let what = format!("{b:?} {rows}x{cols} T={t} exact {exact}");
                    let got = lse[r].to_f64() * sf;
                    assert!(
                        close(got, rlse, tol),
                        "{what}: logsumexp·s {got}, ref {rlse}"
                    );
                    for j in 0..cols {
                        let (p, lp) = (sm[r * cols + j].to_f64(), lsm[r * cols + j].to_f64());
                        let rp = rl[j].0.exp() * (1.0 + rl[j].1);
                        let rlp = rl[j].0 + rl[j].1;
                        if rp >= 1e-30 {
                            let rel = (p - rp).abs() / rp;
                            assert!(
                                rel <= tol,
                                "{what}: softmax[{r},{j}] {p}, ref {rp}, rel {rel:e}"
                            );
                        }
                        assert!(
                            close(lp, rlp, tol),
                            "{what}: log_softmax[{r},{j}] {lp}, ref {rlp}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn temperature_keeps_the_accuracy_bounds() {
    check_temperature::<f32>(2e-6);
    check_temperature::<f64>(1e-14);
}

/// Float32 cross-entropy with a soft cap `c >= 32` against the float64 formula on the same inputs:
/// confident rows (loss ~ 0, which must not go negative), rows of logits near the cap, and their
/// sum, with and without label smoothing.
fn check_softcap(b: Backend, c: f64, rows: usize, cols: usize, spread: f64, eps: f64) {
    let mut rng = Rng(0x50F7_CA95_0000_0001 ^ c.to_bits());
    let labels: Vec<i64> = (0..rows)
        .map(|_| (rng.next() * cols as f64) as i64)
        .collect();
    let x: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let boost = if i % cols == labels[i / cols] as usize {
                spread
            } else {
                0.0
            };
            (rng.normal() * 3.0 + boost + rng.next() * spread) as f32
        })
        .collect();
    let mut losses = vec![0f32; rows];
    let opts = CeOptions {
        softcap: Some(c),
        label_smoothing: eps,
        reduction: Reduction::None,
        ..CeOptions::default()
    };
    let total = cross_entropy(
        b,
        Logits::Read(&x),
        rows,
        cols,
        Target::Hard(&labels),
        &opts,
        Some(&mut losses),
    )
    .unwrap();
    let mut ref_total = 0.0;
    for r in 0..rows {
        let o: Vec<f64> = x[r * cols..(r + 1) * cols]
            .iter()
            .map(|&v| c * (v as f64 / c).tanh())
            .collect();
        let m = o.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + o.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let y = labels[r] as usize;
        let want =
            (1.0 - eps) * (lse - o[y]) + eps / cols as f64 * o.iter().map(|v| lse - v).sum::<f64>();
        ref_total += want;
        let got = losses[r] as f64;
        let what = format!(
            "{b:?} c={c} eps={eps} row {r} {:?}",
            &x[r * cols..(r + 1) * cols]
        );
        assert!(close(got, want, 2e-6), "{what}: loss {got:e}, ref {want:e}");
        assert!(
            got >= -2e-6 * want.abs().max(1.0),
            "{what}: negative loss {got:e}"
        );
    }
    assert!(
        close(total, ref_total, 2e-6),
        "{b:?} c={c}: total {total}, ref {ref_total}"
    );
}

#[test]
fn softcap_keeps_the_loss_bound() {
    for b in Backend::supported() {
        let x = [170.66513f32, 0.9961158];
        let mut loss = [0f32];
        let opts = CeOptions {
            softcap: Some(50.0),
            reduction: Reduction::None,
            ..CeOptions::default()
        };
        cross_entropy(
            b,
            Logits::Read(&x),
            1,
            2,
            Target::Hard(&[0]),
            &opts,
            Some(&mut loss),
        )
        .unwrap();
        assert!(
            (0.0..=2e-6).contains(&loss[0]),
            "{b:?}: loss {:e}, ref 5.8e-22",
            loss[0]
        );
        for c in [32.0, 50.0, 100.0] {
            check_softcap(b, c, 1000, 7, 4.0 * c, 0.0);
            check_softcap(b, c, 200, 37, 1.5 * c, 0.0);
            check_softcap(b, c, 200, 37, 1.5 * c, 0.1);
        }
    }
}
