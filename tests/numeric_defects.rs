//! Numeric cases that once went wrong, on every instruction set: soft-label cross-entropy on `-inf`
//! logits, weighted `logsumexp` over `+inf` of both signs, the accuracy of a temperature, and the
//! soft cap's rounding.

use fastsoftmax::kernels::cross_entropy::Logits;
use fastsoftmax::simd::Element;
use fastsoftmax::{cross_entropy, logsumexp_weighted, Backend, Buf, CeOptions, Reduction, Target};

const INF: f64 = f64::INFINITY;

/// A small deterministic generator (xorshift64*), so the tests need no crates.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-300), self.next());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

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
                    let cases: [(&str, Result<i64, &[f64]>, Vec<f64>); 4] = [
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
        logsumexp_weighted(x, b, x.len(), &mut out, &mut sign).unwrap();
        let same = |a: f64, e: f64| a == e || (a.is_nan() && e.is_nan());
        assert!(
            same(out[0], el) && same(sign[0], es),
            "x {x:?} b {b:?}: ({}, {}), expected ({el}, {es})",
            out[0],
            sign[0]
        );
    }
}
