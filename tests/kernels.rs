//! Every kernel on every instruction set this CPU has, against the scalar backend and against a
//! float64 reference, on sizes that hit every tail, and on the special values (docs/api.md §3: NaN
//! anywhere makes the row NaN, `+inf` and all-`-inf` rows, huge finite values).

use fastsoftmax::kernels::cross_entropy::Logits;
use fastsoftmax::{
    cross_entropy, logsumexp, logsumexp_weighted, softmax, Backend, Buf, CeOptions, Mode,
    Reduction, Target,
};

mod common;
use common::Rng;

const COLS: [usize; 12] = [1, 2, 3, 7, 15, 16, 17, 31, 33, 1000, 2049, 4097];

fn ref_lse(row: &[f64]) -> f64 {
    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

fn data(rng: &mut Rng, rows: usize, cols: usize, spread: f64) -> Vec<f64> {
    (0..rows * cols).map(|_| rng.normal() * spread).collect()
}

fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= abs + rel * b.abs()
}

#[test]
fn softmax_and_log_softmax_match_f64_reference_on_every_backend() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for b in Backend::supported() {
        for &cols in &COLS {
            // Tiny rows take the tile path: 37 rows = two full tiles of 16 and a partial one.
            let rows = if cols <= 64 { 37 } else { 3 };
            let x64 = data(&mut rng, rows, cols, 4.0);
            let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
            for &scale in &[1.0f64, 0.5, -2.0] {
                let mut out = vec![0f32; x32.len()];
                softmax(
                    b,
                    Buf::Separate {
                        x: &x32,
                        out: &mut out,
                    },
                    cols,
                    scale as f32,
                    Mode::Softmax,
                )
                .unwrap();
                let mut lout = vec![0f64; x64.len()];
                softmax(
                    b,
                    Buf::Separate {
                        x: &x64,
                        out: &mut lout,
                    },
                    cols,
                    scale,
                    Mode::LogSoftmax,
                )
                .unwrap();
                for r in 0..rows {
                    let row: Vec<f64> = x32[r * cols..(r + 1) * cols]
                        .iter()
                        .map(|&v| v as f64 * scale)
                        .collect();
                    let lse = ref_lse(&row);
                    for c in 0..cols {
                        let want = (row[c] - lse).exp();
                        let got = out[r * cols + c] as f64;
                        assert!(
                            close(got, want, 2e-6, 1e-37),
                            "{b:?} cols={cols} scale={scale} softmax {got} vs {want}"
                        );
                    }
                    let row64: Vec<f64> = x64[r * cols..(r + 1) * cols]
                        .iter()
                        .map(|&v| v * scale)
                        .collect();
                    let lse64 = ref_lse(&row64);
                    for c in 0..cols {
                        let want = row64[c] - lse64;
                        let got = lout[r * cols + c];
                        assert!(
                            close(got, want, 0.0, 1e-13 * want.abs().max(1.0)),
                            "{b:?} cols={cols} log_softmax {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn in_place_equals_separate() {
    let mut rng = Rng(7);
    for b in Backend::supported() {
        for &cols in &COLS {
            let x: Vec<f32> = data(&mut rng, 4, cols, 3.0)
                .iter()
                .map(|&v| v as f32)
                .collect();
            for mode in [Mode::Softmax, Mode::LogSoftmax] {
                let mut sep = vec![0f32; x.len()];
                softmax(
                    b,
                    Buf::Separate {
                        x: &x,
                        out: &mut sep,
                    },
                    cols,
                    1.0,
                    mode,
                )
                .unwrap();
                let mut inp = x.clone();
                softmax(b, Buf::InPlace(&mut inp), cols, 1.0, mode).unwrap();
                assert_eq!(sep, inp, "{b:?} cols={cols} {mode:?}");
            }
        }
    }
}

#[test]
fn backends_agree_with_scalar() {
    let mut rng = Rng(11);
    for b in Backend::supported() {
        for &cols in &COLS {
            let rows = 37; // two full tiles of 16 on the tile path, and a partial one
            let x: Vec<f64> = data(&mut rng, rows, cols, 10.0);
            let mut a = vec![0f64; x.len()];
            let mut s = vec![0f64; x.len()];
            softmax(
                b,
                Buf::Separate { x: &x, out: &mut a },
                cols,
                1.0,
                Mode::Softmax,
            )
            .unwrap();
            softmax(
                Backend::Scalar,
                Buf::Separate { x: &x, out: &mut s },
                cols,
                1.0,
                Mode::Softmax,
            )
            .unwrap();
            for (g, w) in a.iter().zip(&s) {
                assert!(
                    close(*g, *w, 1e-14, 1e-300),
                    "{b:?} cols={cols}: {g} vs scalar {w}"
                );
            }
            let (mut la, mut ls) = (vec![0f64; rows], vec![0f64; rows]);
            logsumexp(b, &x, cols, 1.0, &mut la).unwrap();
            logsumexp(Backend::Scalar, &x, cols, 1.0, &mut ls).unwrap();
            for (g, w) in la.iter().zip(&ls) {
                assert!(
                    close(*g, *w, 1e-14, 1e-14),
                    "{b:?} cols={cols}: lse {g} vs scalar {w}"
                );
            }
        }
    }
}

#[test]
fn logsumexp_long_rows_and_split_rows() {
    let mut rng = Rng(3);
    for b in Backend::supported() {
        // 262,144 is the longest row of the accuracy contract; 300,001 takes the split-row path.
        for &cols in &[262_144usize, 300_001] {
            let x64 = data(&mut rng, 2, cols, 2.0);
            let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
            let mut o32 = vec![0f32; 2];
            let mut o64 = vec![0f64; 2];
            logsumexp(b, &x32, cols, 1.0, &mut o32).unwrap();
            logsumexp(b, &x64, cols, 1.0, &mut o64).unwrap();
            for r in 0..2 {
                let w32 = ref_lse(
                    &x32[r * cols..(r + 1) * cols]
                        .iter()
                        .map(|&v| v as f64)
                        .collect::<Vec<_>>(),
                );
                let w64 = ref_lse(&x64[r * cols..(r + 1) * cols]);
                assert!(
                    close(o32[r] as f64, w32, 0.0, 2e-6 * w32.abs().max(1.0)),
                    "{b:?} {cols} f32 {} vs {w32}",
                    o32[r]
                );
                assert!(
                    close(o64[r], w64, 1e-14, 0.0),
                    "{b:?} {cols} f64 {} vs {w64}",
                    o64[r]
                );
            }
            // softmax on the split path sums to one and matches the reference.
            let mut out = vec![0f32; x32.len()];
            softmax(
                b,
                Buf::Separate {
                    x: &x32,
                    out: &mut out,
                },
                cols,
                1.0,
                Mode::Softmax,
            )
            .unwrap();
            let w = ref_lse(&x32[..cols].iter().map(|&v| v as f64).collect::<Vec<_>>());
            for c in (0..cols).step_by(997) {
                let want = (x32[c] as f64 - w).exp();
                assert!(
                    close(out[c] as f64, want, 2e-6, 0.0),
                    "{b:?} split softmax {} vs {want}",
                    out[c]
                );
            }
        }
    }
}

#[test]
fn logsumexp_log1p_refinement() {
    for b in Backend::supported() {
        let mut o = [0f64];
        logsumexp(b, &[0.0f64, -40.0], 2, 1.0, &mut o).unwrap();
        assert!(
            close(o[0], 4.248354255291589e-18, 1e-14, 0.0),
            "{b:?}: {}",
            o[0]
        );
        // Ties of the maximum: log(2) + log1p(tiny).
        logsumexp(b, &[3.0f64, 3.0, -50.0], 3, 1.0, &mut o).unwrap();
        assert!(close(o[0], 3.0 + 2f64.ln(), 1e-15, 0.0), "{b:?}: {}", o[0]);
    }
}

#[test]
fn special_values() {
    let (inf, nan) = (f32::INFINITY, f32::NAN);
    for b in Backend::supported() {
        for &cols in &[3usize, 17, 40] {
            let mk = |v: &[(usize, f32)]| {
                let mut r = vec![0.5f32; cols];
                for &(i, x) in v {
                    r[i] = x;
                }
                r
            };
            let cases: Vec<(Vec<f32>, &str)> = vec![
                (mk(&[(1, nan)]), "nan"),
                (vec![-inf; cols], "all -inf"),
                (mk(&[(2, inf)]), "+inf"),
                (mk(&[(0, -inf)]), "-inf entry"),
                (mk(&[(1, 1e30), (2, -1e30)]), "huge"),
            ];
            for (row, what) in cases {
                let mut sm = vec![0f32; cols];
                softmax(
                    b,
                    Buf::Separate {
                        x: &row,
                        out: &mut sm,
                    },
                    cols,
                    1.0,
                    Mode::Softmax,
                )
                .unwrap();
                let mut ls = vec![0f32; cols];
                softmax(
                    b,
                    Buf::Separate {
                        x: &row,
                        out: &mut ls,
                    },
                    cols,
                    1.0,
                    Mode::LogSoftmax,
                )
                .unwrap();
                let mut l = [0f32];
                logsumexp(b, &row, cols, 1.0, &mut l).unwrap();
                match what {
                    "nan" | "+inf" | "all -inf" => {
                        assert!(sm.iter().all(|v| v.is_nan()), "{b:?} {what} softmax {sm:?}");
                        assert!(ls.iter().all(|v| v.is_nan()), "{b:?} {what} log_softmax");
                        let want = match what {
                            "nan" => nan,
                            "+inf" => inf,
                            _ => -inf,
                        };
                        assert!(
                            close(l[0] as f64, want as f64, 0.0, 0.0),
                            "{b:?} {what} lse {}",
                            l[0]
                        );
                    }
                    "-inf entry" => {
                        assert_eq!(sm[0], 0.0);
                        assert_eq!(ls[0], -inf);
                        assert!(sm[1..].iter().all(|v| v.is_finite() && *v > 0.0));
                        let s: f32 = sm.iter().sum();
                        assert!((s - 1.0).abs() < 1e-5);
                    }
                    _ => {
                        assert_eq!(sm[1], 1.0, "{b:?} huge");
                        assert_eq!(sm[2], 0.0);
                        assert_eq!(l[0], 1e30);
                    }
                }
            }
        }
    }
}

#[test]
fn weighted_logsumexp_matches_reference() {
    let x = [1.0f64, 2.0, 3.0, -1.0];
    let bw = [0.5f64, -2.0, 1.0, 0.0];
    let (mut o, mut s) = ([0f64], [0f64]);
    logsumexp_weighted(&x, &bw, 4, 1.0, &mut o, &mut s).unwrap();
    let want: f64 = x.iter().zip(&bw).map(|(a, b)| b * a.exp()).sum();
    assert!(close(o[0], want.abs().ln(), 1e-15, 0.0) && s[0] == want.signum());
}

fn ce_reference(
    x: &[f64],
    y: &[i64],
    cols: usize,
    w: Option<&[f64]>,
    eps: f64,
    ignore: i64,
) -> (f64, Vec<f64>) {
    let wt = |c: usize| w.map_or(1.0, |w| w[c]);
    let wsum: f64 = (0..cols).map(wt).sum();
    let mut den = 0.0;
    let mut loss = 0.0;
    let mut grad = vec![0.0; x.len()];
    for &label in y {
        if label != ignore {
            den += wt(label as usize);
        }
    }
    for r in 0..y.len() {
        if y[r] == ignore {
            continue;
        }
        let row = &x[r * cols..(r + 1) * cols];
        let lse = ref_lse(row);
        let yy = y[r] as usize;
        let lin: f64 = (0..cols).map(|c| wt(c) * row[c]).sum();
        loss += wt(yy) * (1.0 - eps) * (lse - row[yy]) + eps / cols as f64 * (wsum * lse - lin);
        for c in 0..cols {
            let p = (row[c] - lse).exp();
            let mut g =
                p * (wt(yy) * (1.0 - eps) + eps * wsum / cols as f64) - eps / cols as f64 * wt(c);
            if c == yy {
                g -= wt(yy) * (1.0 - eps);
            }
            grad[r * cols + c] = g / den;
        }
    }
    (loss / den, grad)
}

#[test]
fn cross_entropy_matches_reference_and_in_place() {
    let mut rng = Rng(5);
    for b in Backend::supported() {
        for &cols in &[1usize, 5, 17, 1000] {
            let rows = 9;
            let x = data(&mut rng, rows, cols, 3.0);
            let y: Vec<i64> = (0..rows)
                .map(|i| {
                    if i == 4 {
                        -100
                    } else {
                        (rng.next() * cols as f64) as i64
                    }
                })
                .collect();
            let w: Vec<f64> = (0..cols).map(|_| 0.5 + rng.next()).collect();
            for (weight, eps) in [(None, 0.0), (Some(&w[..]), 0.0), (Some(&w[..]), 0.3)] {
                let opts = CeOptions {
                    weight,
                    label_smoothing: eps,
                    ..CeOptions::default()
                };
                let (want_l, want_g) = ce_reference(&x, &y, cols, weight, eps, -100);
                let mut g = vec![0f64; x.len()];
                let l = cross_entropy(
                    b,
                    Logits::Grad(Buf::Separate { x: &x, out: &mut g }),
                    rows,
                    cols,
                    Target::Hard(&y),
                    &opts,
                    None,
                )
                .unwrap();
                assert!(
                    close(l, want_l, 1e-13, 1e-13),
                    "{b:?} cols={cols} loss {l} vs {want_l}"
                );
                for (a, e) in g.iter().zip(&want_g) {
                    assert!(
                        close(*a, *e, 1e-12, 1e-15),
                        "{b:?} cols={cols} grad {a} vs {e}"
                    );
                }
                let mut inp = x.clone();
                let l2 = cross_entropy(
                    b,
                    Logits::Grad(Buf::InPlace(&mut inp)),
                    rows,
                    cols,
                    Target::Hard(&y),
                    &opts,
                    None,
                )
                .unwrap();
                assert_eq!(l, l2);
                assert_eq!(g, inp);
                let l3 = cross_entropy(
                    b,
                    Logits::Read(&x),
                    rows,
                    cols,
                    Target::Hard(&y),
                    &opts,
                    None,
                )
                .unwrap();
                assert!(close(l3, l, 1e-15, 0.0));
            }
        }
    }
}

#[test]
fn cross_entropy_errors_write_nothing() {
    let x = vec![0.25f32; 6];
    let mut inp = x.clone();
    let opts = CeOptions::<f32>::default();
    let err = cross_entropy(
        Backend::Scalar,
        Logits::Grad(Buf::InPlace(&mut inp)),
        2,
        3,
        Target::Hard(&[1, 3]),
        &opts,
        None,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        fastsoftmax::KernelError::Label {
            label: 3,
            position: 1,
            classes: 3
        }
    ));
    assert_eq!(inp, x);
    let bad = CeOptions {
        label_smoothing: 1.5,
        ..CeOptions::default()
    };
    assert!(cross_entropy(
        Backend::Scalar,
        Logits::Grad(Buf::InPlace(&mut inp)),
        2,
        3,
        Target::Hard(&[1, 2]),
        &bad,
        None
    )
    .is_err());
    assert_eq!(inp, x);
    // All rows ignored with "mean": 0.0, not NaN.
    let l = cross_entropy(
        Backend::Scalar,
        Logits::Read(&x),
        2,
        3,
        Target::Hard(&[-100, -100]),
        &opts,
        None,
    )
    .unwrap();
    assert_eq!(l, 0.0);
    let none = CeOptions {
        reduction: Reduction::None,
        ..CeOptions::default()
    };
    assert!(cross_entropy(
        Backend::Scalar,
        Logits::Read(&x),
        2,
        3,
        Target::Hard(&[0, 1]),
        &none,
        None
    )
    .is_err());
}
