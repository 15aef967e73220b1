//! The blocked half-precision route gives the float32 kernels' answers on the widened input, bit
//! for bit: for every function, shapes on each path (tile, rows, rows above one block, split rows),
//! in place and not, on every instruction set this CPU has.

use super::*;
use crate::convert::{f16_to_f32, f32_to_bf16, f32_to_f16};
use crate::kernels::testing::data;
use crate::parallel::SPLIT_ROW_MIN_COLS;

/// `(rows, cols)` on each path: tiny rows (tile path, a partial tile), ordinary rows, rows of more
/// than one block, and rows split across threads.
const SHAPES: [(usize, usize); 7] = [
    (37, 1),
    (1041, 7),
    (300, 64),
    (33, 65),
    (9, 1000),
    (3, 70_001),
    (2, SPLIT_ROW_MIN_COLS + 3),
];

const KINDS: [Half; 2] = [Half::F16, Half::BF16];

fn to_half(kind: Half, x: f32) -> u16 {
    match kind {
        Half::F16 => f32_to_f16(x),
        Half::BF16 => f32_to_bf16(x),
    }
}

fn wide(kind: Half, h: &[u16]) -> Vec<f32> {
    let f = match kind {
        Half::F16 => f16_to_f32,
        Half::BF16 => crate::convert::bf16_to_f32,
    };
    h.iter().map(|&b| f(b)).collect()
}

fn halves(kind: Half, x: &[f32]) -> Vec<u16> {
    x.iter().map(|&v| to_half(kind, v)).collect()
}

/// A `rows × cols` half matrix of values in ±`width`, with a NaN, ±inf and (when there are rows
/// enough) a row of -inf.
fn input(kind: Half, rows: usize, cols: usize, seed: u64, width: f64) -> Vec<u16> {
    let mut x: Vec<f32> = data(rows * cols, seed, width)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let n = x.len();
    if n > 8 {
        x[n / 3] = f32::NAN;
        x[n / 2] = f32::INFINITY;
        x[n - 1] = f32::NEG_INFINITY;
    }
    if rows > 2 {
        x[cols..2 * cols].fill(f32::NEG_INFINITY);
    }
    halves(kind, &x)
}

/// Probabilities: positive values in (0, 1] (zeros included, where `0 · log 0` matters).
fn probs(kind: Half, rows: usize, cols: usize, seed: u64) -> Vec<u16> {
    let x: Vec<f32> = data(rows * cols, seed, 1.0)
        .iter()
        .map(|&v| v.max(0.0) as f32)
        .collect();
    halves(kind, &x)
}

fn each_case_list() -> Vec<(Backend, Half, usize, usize)> {
    let mut all = Vec::new();
    each_case(|b, k, r, c| all.push((b, k, r, c)));
    all
}

fn each_case(mut f: impl FnMut(Backend, Half, usize, usize)) {
    for backend in Backend::supported() {
        for kind in KINDS {
            for (rows, cols) in SHAPES {
                f(backend, kind, rows, cols);
            }
        }
    }
}

fn same_bits(a: &[f32], b: &[f32], what: &str) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            "{what}: row {i}: {x} vs {y}"
        );
    }
}

#[test]
fn softmax_matches_float32() {
    each_case(|backend, kind, rows, cols| {
        for (mode, scale) in [(Mode::Softmax, 1.0), (Mode::LogSoftmax, -0.7)] {
            let x = input(kind, rows, cols, 1, 8.0);
            let mut want = wide(kind, &x);
            sm::softmax_scaled(backend, Buf::InPlace(&mut want), cols, scale, mode).unwrap();
            let want = halves(kind, &want);
            let mut out = vec![0u16; x.len()];
            softmax(
                backend,
                kind,
                Buf::Separate {
                    x: &x,
                    out: &mut out,
                },
                cols,
                scale,
                mode,
            )
            .unwrap();
            let what = format!("{backend:?} {kind:?} {mode:?} {rows}x{cols}");
            assert!(out == want, "{what}");
            let mut inplace = x.clone();
            softmax(backend, kind, Buf::InPlace(&mut inplace), cols, scale, mode).unwrap();
            assert!(inplace == want, "{what} in place");
        }
    });
}

#[test]
fn backward_matches_float32() {
    each_case(|backend, kind, rows, cols| {
        for vjp in [Vjp::Softmax, Vjp::LogSoftmax] {
            let g = input(kind, rows, cols, 2, 2.0);
            let y = probs(kind, rows, cols, 3);
            let mut want = wide(kind, &g);
            let yw = wide(kind, &y);
            let buf = VjpBuf::IntoGrad {
                g: &mut want,
                y: &yw,
            };
            bw::softmax_backward(backend, buf, cols, vjp).unwrap();
            let want = halves(kind, &want);
            let what = format!("{backend:?} {kind:?} {vjp:?} {rows}x{cols}");
            let mut out = vec![0u16; g.len()];
            let buf = VjpBuf::Separate {
                g: &g,
                y: &y,
                out: &mut out,
            };
            softmax_backward(backend, kind, buf, cols, vjp).unwrap();
            assert!(out == want, "{what}");
            let mut into_y = y.clone();
            let buf = VjpBuf::IntoY {
                g: &g,
                y: &mut into_y,
            };
            softmax_backward(backend, kind, buf, cols, vjp).unwrap();
            assert!(into_y == want, "{what} into y");
        }
    });
}

#[test]
fn logsumexp_matches_float32() {
    each_case(|backend, kind, rows, cols| {
        let x = input(kind, rows, cols, 4, 30.0);
        let mut want = vec![0f32; rows];
        lse::logsumexp_scaled(backend, &wide(kind, &x), cols, 0.5, &mut want).unwrap();
        let mut got = vec![0f32; rows];
        logsumexp(backend, kind, &x, cols, 0.5, &mut got).unwrap();
        same_bits(&got, &want, &format!("{backend:?} {kind:?} {rows}x{cols}"));
    });
}

#[test]
fn weighted_logsumexp_matches_float32() {
    each_case(|backend, kind, rows, cols| {
        let (x, b) = (
            input(kind, rows, cols, 5, 30.0),
            input(kind, rows, cols, 6, 1.0),
        );
        let scale = 0.3f32;
        let xw: Vec<f32> = wide(kind, &x).iter().map(|v| v * scale).collect();
        let (mut want, mut want_sign) = (vec![0f32; rows], vec![0f32; rows]);
        let bw = wide(kind, &b);
        lse::logsumexp_weighted(&xw, &bw, cols, 1.0, &mut want, &mut want_sign).unwrap();
        let (mut got, mut sign) = (vec![0f32; rows], vec![0f32; rows]);
        let outs = (&mut got[..], &mut sign[..]);
        logsumexp_weighted(backend, kind, (&x, &b), cols, scale, outs).unwrap();
        let what = format!("{backend:?} {kind:?} {rows}x{cols}");
        same_bits(&got, &want, &what);
        same_bits(&sign, &want_sign, &what);
    });
}

#[test]
fn entropy_and_kl_match_float32() {
    each_case(|backend, kind, rows, cols| {
        let (p, q) = (probs(kind, rows, cols, 7), probs(kind, rows, cols, 8));
        let (pw, qw) = (wide(kind, &p), wide(kind, &q));
        for input in [Input::Probs, Input::Logits] {
            let what = format!("{backend:?} {kind:?} {input:?} {rows}x{cols}");
            let (mut want, mut got) = (vec![0f32; rows], vec![0f32; rows]);
            ent::entropy(backend, &pw, None, cols, input, 1.5, &mut want).unwrap();
            entropy(backend, kind, (&p, None), cols, (input, 1.5), &mut got).unwrap();
            same_bits(&got, &want, &what);
            ent::entropy(backend, &pw, Some(&qw), cols, input, 1.5, &mut want).unwrap();
            entropy(backend, kind, (&p, Some(&q)), cols, (input, 1.5), &mut got).unwrap();
            same_bits(&got, &want, &format!("{what} KL"));
        }
    });
}

#[test]
fn cross_entropy_matches_float32() {
    use crate::kernels::cross_entropy::Reduction;
    // Besides the shared shapes: soft-capped tiny rows over several tasks, which take the row
    // path (rows per task not a multiple of the tile).
    let more = Backend::supported()
        .into_iter()
        .map(|b| (b, Half::BF16, 10_000, 20));
    let cases = each_case_list().into_iter().chain(more);
    cases.for_each(|(backend, kind, rows, cols)| {
        let x = input(kind, rows, cols, 9, 8.0);
        let xw = wide(kind, &x);
        let q = probs(kind, rows, cols, 10);
        let qw = wide(kind, &q);
        let labels: Vec<i64> = (0..rows as i64).map(|r| (r * 7919) % cols as i64).collect();
        let weight: Vec<f32> = (0..cols).map(|c| 0.5 + (c % 5) as f32 * 0.25).collect();
        let hard = CeOptions::<f32> {
            weight: Some(&weight),
            ignore_index: labels[rows / 2],
            label_smoothing: 0.1,
            z_loss: 1e-3,
            ..Default::default()
        };
        let soft = CeOptions::<f32> {
            reduction: Reduction::None,
            softcap: Some(5.0),
            ..Default::default()
        };
        for (opts, is_soft) in [(hard, false), (soft, true)] {
            let what = format!("{backend:?} {kind:?} soft={is_soft} {rows}x{cols}");
            let (t32, t16) = if is_soft {
                (Target::Soft(&qw[..]), Target::Soft(&q[..]))
            } else {
                (Target::Hard(&labels[..]), Target::Hard(&labels[..]))
            };
            let none = opts.reduction == Reduction::None;
            let (mut l32, mut l16) = (vec![0f32; rows], vec![0f32; rows]);
            let mut g32 = xw.clone();
            let want = ce::cross_entropy(
                backend,
                Logits::Grad(Buf::InPlace(&mut g32)),
                rows,
                cols,
                t32,
                &opts,
                none.then_some(&mut l32[..]),
            )
            .unwrap();
            let mut g16 = vec![0u16; x.len()];
            let buf = Buf::Separate {
                x: &x,
                out: &mut g16,
            };
            let mut half_ce = |logits| {
                let losses = none.then_some(&mut l16[..]);
                cross_entropy(backend, kind, logits, (rows, cols), t16, &opts, losses).unwrap()
            };
            let got = half_ce(Logits::Grad(buf));
            let read = half_ce(Logits::Read(&x));
            let same = |a: f64, b: f64| a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan();
            assert!(same(got, want), "{what}");
            assert!(same(read, got), "{what} loss only");
            assert!(g16 == halves(kind, &g32), "{what} gradient");
            same_bits(&l16, &l32, &format!("{what} losses"));
        }
    });
}

#[test]
fn empty_rows_and_bad_shapes() {
    let b = Backend::Scalar;
    let mut out = vec![0f32; 3];
    logsumexp(b, Half::F16, &[], 0, 1.0, &mut out).unwrap();
    assert!(out.iter().all(|v| *v == f32::NEG_INFINITY));
    entropy(b, Half::BF16, (&[], None), 0, (Input::Probs, 1.0), &mut out).unwrap();
    assert!(out.iter().all(|v| *v == 0.0));
    assert!(logsumexp(b, Half::F16, &[0; 7], 2, 1.0, &mut out).is_err());
    let mut o = [0u16; 5];
    let buf = Buf::Separate {
        x: &[0; 6],
        out: &mut o,
    };
    assert!(softmax(b, Half::F16, buf, 3, 1.0, Mode::Softmax).is_err());
    let q = Some(&[0u16; 5][..]);
    assert!(entropy(b, Half::F16, (&[0; 6], q), 2, (Input::Probs, 1.0), &mut out).is_err());
}
