//! The tile path of tiny rows (`cols <= 64`): the in-register transposes of every backend, and the
//! cross-entropy family on tiles against a float64 reference and against the row path (`cols = 65`
//! is the first width past the tile path), with ignored rows, special values at every position of
//! a row, every reduction, and row counts that are not a multiple of any vector width.

use fastsoftmax::kernels::cross_entropy::Logits;
use fastsoftmax::simd::{Backend, Element, Isa, Simd, WithSimd};
use fastsoftmax::{cross_entropy, Buf, CeOptions, Reduction, Target};

/// `tile_in` then `tile_out` of one full tile of `cols` columns, plain and scaled by 2.
struct TransposeJob<'a, T> {
    tile: &'a [T],
    cols: usize,
    columns: &'a mut Vec<T>,
    back: &'a mut Vec<T>,
    doubled: &'a mut Vec<T>,
}

impl<T: Element> WithSimd for TransposeJob<'_, T> {
    type Output = usize;
    fn with_simd<S: Isa>(self, s: S) -> usize {
        let s = T::simd(s);
        let l = <T::Simd<S> as Simd<T>>::LANES;
        let tile = &self.tile[..l * self.cols];
        // The columns rounded up to whole blocks, and one spare vector past them that neither
        // transpose may write.
        self.columns
            .resize(l * (self.cols.next_multiple_of(l) + 1), T::NAN);
        s.tile_in(tile, self.cols, self.columns);
        // One spare vector past the tile too: `tile_out` stores whole rows where they fit.
        let n = l * self.cols;
        self.back.resize(n + l, T::NAN);
        s.tile_out(self.columns, self.cols, &mut self.back[..n], None);
        self.doubled.resize(n + l, T::NAN);
        let two = s.splat(T::from_f64(2.0));
        s.tile_out(self.columns, self.cols, &mut self.doubled[..n], Some(two));
        l
    }
}

fn check_transpose<T: Element>(b: Backend) {
    for cols in 1..=65 {
        let tile: Vec<T> = (0..16 * cols).map(|i| T::from_f64(i as f64)).collect();
        let (mut columns, mut back, mut doubled) = (Vec::new(), Vec::new(), Vec::new());
        let l = b.dispatch(TransposeJob {
            tile: &tile,
            cols,
            columns: &mut columns,
            back: &mut back,
            doubled: &mut doubled,
        });
        for r in 0..l {
            for j in 0..cols {
                assert_eq!(
                    columns[j * l + r].to_f64(),
                    (r * cols + j) as f64,
                    "{b:?} cols={cols} row {r} column {j}"
                );
            }
        }
        let end = l * cols.next_multiple_of(l);
        assert!(
            columns[end..].iter().all(|v| v.is_nan()),
            "{b:?} cols={cols}: wrote past the blocks"
        );
        let n = l * cols;
        assert_eq!(
            &back[..n],
            &tile[..n],
            "{b:?} cols={cols}: tile_out(tile_in(x)) != x"
        );
        let twice: Vec<f64> = tile[..n].iter().map(|v| 2.0 * v.to_f64()).collect();
        let got: Vec<f64> = doubled[..n].iter().map(|v| v.to_f64()).collect();
        assert_eq!(got, twice, "{b:?} cols={cols}: the scaled tile_out");
        assert!(
            back[n..].iter().chain(&doubled[n..]).all(|v| v.is_nan()),
            "{b:?} cols={cols}: tile_out wrote past the tile"
        );
    }
}

#[test]
fn transposes_every_width_on_every_backend() {
    for b in Backend::supported() {
        check_transpose::<f32>(b);
        check_transpose::<f64>(b);
    }
}

/// Reproducible uniforms in [0, 1): SplitMix64, so the test needs no crates.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let z = (self.0 ^ (self.0 >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 * (1.0 / 18_446_744_073_709_551_616.0)
    }
}

/// Cross-entropy in float64, straight from the formula (PyTorch's semantics): per-row losses (0 for
/// ignored rows), the reduced loss, and the gradient of the reduced loss.
struct Reference {
    losses: Vec<f64>,
    total: f64,
    grad: Vec<f64>,
    /// The largest gradient term before the softmax and the target cancel (`|p·Σ w q'| +
    /// |w q'|`): a float gradient is exact to a few ulp of that, not of the difference.
    scale: f64,
}

/// Hard labels `y`, or soft labels `q` (a distribution per row; `y` is then not used).
#[allow(clippy::too_many_arguments)]
fn reference(
    x: &[f64],
    y: &[i64],
    q: Option<&[f64]>,
    cols: usize,
    w: Option<&[f64]>,
    eps: f64,
    z: f64,
    red: Reduction,
) -> Reference {
    let rows = x.len() / cols;
    let wt = |c: usize| w.map_or(1.0, |w| w[c]);
    let counted: Vec<usize> = (0..rows)
        .filter(|&r| q.is_some() || y[r] != IGNORE)
        .collect();
    let den: f64 = match q {
        Some(_) => rows as f64,
        None => counted.iter().map(|&r| wt(y[r] as usize)).sum(),
    };
    let (r_main, r_z) = match red {
        Reduction::Mean if counted.is_empty() => (0.0, 0.0),
        Reduction::Mean => (1.0 / den, 1.0 / counted.len() as f64),
        _ => (1.0, 1.0),
    };
    let (mut losses, mut grad) = (vec![0.0; rows], vec![0.0; x.len()]);
    let (mut main_sum, mut z_sum, mut scale) = (0.0, 0.0, 0f64);
    for &r in &counted {
        let row = &x[r * cols..(r + 1) * cols];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let lse = m + log_sum;
        // The smoothed target q' = (1-ε)·q + ε/C, q one-hot for a hard label.
        let target = |c: usize| {
            let qc = match q {
                Some(q) => q[r * cols + c],
                None => f64::from(u8::from(c as i64 == y[r])),
            };
            (1.0 - eps) * qc + eps / cols as f64
        };
        let wq: f64 = (0..cols).map(|c| wt(c) * target(c)).sum();
        let main: f64 = (0..cols)
            .map(|c| wt(c) * target(c) * (log_sum - (row[c] - m)))
            .sum();
        losses[r] = main + z * lse * lse;
        main_sum += main;
        z_sum += z * lse * lse;
        for c in 0..cols {
            let p = (row[c] - lse).exp();
            let z_part = r_z * 2.0 * z * lse * p;
            grad[r * cols + c] = r_main * (p * wq - wt(c) * target(c)) + z_part;
            scale = scale.max(r_main * (p * wq + wt(c) * target(c)) + z_part.abs());
        }
    }
    let total = main_sum * r_main + z_sum * r_z;
    Reference {
        losses,
        total,
        grad,
        scale,
    }
}

const IGNORE: i64 = -100;

/// The bound of docs/api.md §4 for `T`: float32 absolute 2e-6 (times max(1, |reference|)),
/// float64 1e-14.
fn tol<T: Element>() -> f64 {
    if std::mem::size_of::<T>() == 4 {
        2e-6
    } else {
        1e-14
    }
}

/// `ignored`: the share of rows whose label is the ignore index (0: every tile fully counted).
fn check_ce<T: Element>(b: Backend, rng: &mut Rng, cols: usize, rows: usize, ignored: f64) {
    let x64: Vec<f64> = (0..rows * cols)
        .map(|_| (rng.next() - 0.5) * 12.0)
        .collect();
    let x: Vec<T> = x64.iter().map(|&v| T::from_f64(v)).collect();
    let x64: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
    let y: Vec<i64> = (0..rows)
        .map(|_| {
            if rng.next() < ignored {
                IGNORE
            } else {
                (rng.next() * cols as f64) as i64
            }
        })
        .collect();
    let w64: Vec<f64> = (0..cols)
        .map(|_| T::from_f64(0.25 + rng.next() * 2.0).to_f64())
        .collect();
    let w: Vec<T> = w64.iter().map(|&v| T::from_f64(v)).collect();
    // Soft labels: random weights per class, not normalised (they are not renormalised).
    let q: Vec<T> = (0..rows * cols)
        .map(|_| T::from_f64(rng.next() / cols as f64))
        .collect();
    let q64: Vec<f64> = q.iter().map(|v| v.to_f64()).collect();
    let t = tol::<T>();
    for (soft, weighted, eps, z) in [
        (false, false, 0.0, 0.0),
        (false, true, 0.0, 0.0),
        (false, false, 0.15, 0.0),
        (false, true, 0.1, 1e-3),
        (false, false, 0.0, 1e-2),
        (true, false, 0.0, 0.0),
        (true, true, 0.2, 1e-3),
        (true, false, 1.0, 0.0),
    ] {
        for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            let opts = CeOptions {
                weight: if weighted { Some(&w[..]) } else { None },
                label_smoothing: eps,
                z_loss: z,
                reduction: red,
                ignore_index: IGNORE,
                ..CeOptions::default()
            };
            let want = reference(
                &x64,
                &y,
                soft.then_some(&q64[..]),
                cols,
                if weighted { Some(&w64[..]) } else { None },
                eps,
                z,
                red,
            );
            let ctx = format!(
                "{b:?} {} cols={cols} rows={rows} soft={soft} w={weighted} eps={eps} z={z} {red:?}",
                std::any::type_name::<T>()
            );
            let run = |logits: Logits<'_, T>, losses: &mut [T]| {
                let target = if soft {
                    Target::Soft(&q)
                } else {
                    Target::Hard(&y)
                };
                cross_entropy(b, logits, rows, cols, target, &opts, Some(losses)).unwrap()
            };
            let (mut losses, mut grad) = (vec![T::NAN; rows], vec![T::NAN; rows * cols]);
            let out = &mut grad;
            let total = run(Logits::Grad(Buf::Separate { x: &x, out }), &mut losses);
            let close = |a: f64, e: f64| (a - e).abs() <= t * e.abs().max(1.0);
            assert!(
                close(total, want.total),
                "{ctx}: loss {total} vs {}",
                want.total
            );
            if red == Reduction::None {
                for (r, (a, e)) in losses.iter().zip(&want.losses).enumerate() {
                    assert!(close(a.to_f64(), *e), "{ctx}: row {r} loss {a:?} vs {e}");
                }
            }
            let scale = want.scale.max(f64::MIN_POSITIVE);
            for (i, (a, e)) in grad.iter().zip(&want.grad).enumerate() {
                assert!(
                    (a.to_f64() - e).abs() <= 8.0 * t * scale,
                    "{ctx}: grad[{i}] {a:?} vs {e}"
                );
            }
            // Loss only, and the gradient written over the logits: the same numbers.
            let mut losses2 = vec![T::NAN; rows];
            let read = run(Logits::Read(&x), &mut losses2);
            assert_eq!(read.to_bits(), total.to_bits(), "{ctx}: loss-only differs");
            let mut inp = x.clone();
            let inplace = run(Logits::Grad(Buf::InPlace(&mut inp)), &mut losses2);
            assert_eq!(
                inplace.to_bits(),
                total.to_bits(),
                "{ctx}: in-place loss differs"
            );
            let bits = |v: &[T]| v.iter().map(|v| v.to_f64().to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&losses2),
                bits(&losses),
                "{ctx}: per-row losses differ"
            );
            assert!(
                bits(&inp) == bits(&grad),
                "{ctx}: in-place gradient differs"
            );
        }
    }
}

#[test]
fn cross_entropy_every_tiny_width_matches_reference_on_every_backend() {
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    for b in Backend::supported() {
        for cols in 1..=65 {
            // 37 rows: two full tiles of 16 and a partial one (four of 8 and a partial one in f64).
            for ignored in [0.0, 0.2] {
                check_ce::<f32>(b, &mut rng, cols, 37, ignored);
                check_ce::<f64>(b, &mut rng, cols, 37, ignored);
            }
        }
        // Fewer rows than one tile; one full tile exactly.
        for rows in [1, 5, 16] {
            check_ce::<f32>(b, &mut rng, 10, rows, 0.2);
            check_ce::<f64>(b, &mut rng, 10, rows, 0.0);
        }
    }
}

/// The label check runs in parallel ranges before any row: the first bad label is reported (not the
/// first one a thread happens to find), and nothing is written.
#[test]
fn first_bad_label_of_many_is_reported_and_nothing_written() {
    let (rows, cols) = (300_000, 2);
    let x = vec![0.5f32; rows * cols];
    let mut y = vec![1i64; rows];
    (y[200_001], y[250_000], y[299_999]) = (5, -3, 2);
    let mut grad = vec![7f32; rows * cols];
    let opts = CeOptions::<f32>::default();
    let err = cross_entropy(
        Backend::detect(),
        Logits::Grad(Buf::Separate {
            x: &x,
            out: &mut grad,
        }),
        rows,
        cols,
        Target::Hard(&y),
        &opts,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            fastsoftmax::KernelError::Label {
                label: 5,
                position: 200_001,
                classes: 2
            }
        ),
        "{err:?}"
    );
    assert!(grad.iter().all(|&g| g == 7.0));
}
