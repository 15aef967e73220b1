//! A NaN anywhere in a row makes every output of that row NaN, on every instruction set: NaN at
//! every position near the 2048-element block boundaries of the online `(max, sum)` pass, the
//! 65536-element segment boundaries of split rows, and row tails, on backgrounds where the NaN is
//! the only thing that can make the row NaN (a finite row, an all `-inf` row, a row whose first block
//! is NaN), for every kernel that reduces a row.

use fastsoftmax::kernels::cross_entropy::Logits;
use fastsoftmax::simd::Element;
use fastsoftmax::{
    cross_entropy, entropy, logsumexp, softmax, softmax_backward, Backend, Buf, CeOptions,
    EntropyInput, Mode, Target, Vjp, VjpBuf,
};

/// Elements per block of the online `(max, sum)` pass, and per segment of a split row.
const BLOCK: usize = 2048;
const SEGMENT: usize = 65536;

/// Every output of every row-reducing kernel on the one-row matrix `x`, by kernel name.
fn outputs<T: Element>(b: Backend, x: &[T]) -> Vec<(&'static str, Vec<f64>)> {
    let cols = x.len();
    let f = |v: &[T]| v.iter().map(|v| v.to_f64()).collect::<Vec<f64>>();
    let mut res = Vec::new();
    for (name, scale, mode) in [
        ("softmax", 1.0, Mode::Softmax),
        ("log_softmax", 1.0, Mode::LogSoftmax),
        ("softmax T=2", 0.5, Mode::Softmax),
        ("softmin", -1.0, Mode::Softmax),
        ("log_softmax T=2", 0.5, Mode::LogSoftmax),
    ] {
        let mut out = vec![T::ZERO; cols];
        softmax(
            b,
            Buf::Separate { x, out: &mut out },
            cols,
            T::from_f64(scale),
            mode,
        )
        .unwrap();
        res.push((name, f(&out)));
    }
    for (name, scale) in [("logsumexp", 1.0), ("logsumexp T=2", 0.5)] {
        let mut out = [T::ZERO];
        logsumexp(b, x, cols, T::from_f64(scale), &mut out).unwrap();
        res.push((name, f(&out)));
    }
    let label = [0i64];
    let soft: Vec<T> = vec![T::from_f64(1.0 / cols as f64); cols];
    for (name, target) in [
        ("ce hard", Target::Hard(&label)),
        ("ce soft", Target::Soft(&soft)),
    ] {
        let mut loss = [T::ZERO];
        let mut grad = vec![T::ZERO; cols];
        let opts = CeOptions {
            reduction: fastsoftmax::Reduction::None,
            ..CeOptions::default()
        };
        cross_entropy(
            b,
            Logits::Grad(Buf::Separate { x, out: &mut grad }),
            1,
            cols,
            target,
            &opts,
            Some(&mut loss),
        )
        .unwrap();
        res.push((name, f(&loss)));
        res.push((name, f(&grad)));
    }
    let mut out = [T::ZERO];
    entropy(b, x, None, cols, EntropyInput::Logits, 1.0, &mut out).unwrap();
    res.push(("entropy", f(&out)));
    let other: Vec<T> = (0..cols)
        .map(|i| T::from_f64((i % 7) as f64 * 0.1))
        .collect();
    entropy(
        b,
        x,
        Some(&other),
        cols,
        EntropyInput::Logits,
        1.0,
        &mut out,
    )
    .unwrap();
    res.push(("kl p", f(&out)));
    entropy(
        b,
        &other,
        Some(x),
        cols,
        EntropyInput::Logits,
        1.0,
        &mut out,
    )
    .unwrap();
    res.push(("kl q", f(&out)));
    // The backward passes reduce the upstream gradient over the row: `x` is the gradient here.
    let y: Vec<T> = (0..cols)
        .map(|i| T::from_f64((i % 5) as f64 * 0.1 - 0.3))
        .collect();
    for (name, kind) in [
        ("vjp softmax", Vjp::Softmax),
        ("vjp log_softmax", Vjp::LogSoftmax),
    ] {
        let mut out = vec![T::ZERO; cols];
        softmax_backward(
            b,
            VjpBuf::Separate {
                g: x,
                y: &y,
                out: &mut out,
            },
            cols,
            kind,
        )
        .unwrap();
        res.push((name, f(&out)));
    }
    res
}

/// Asserts every output of every kernel on `x` is NaN.
fn assert_all_nan<T: Element>(b: Backend, x: &[T], what: &str) {
    for (name, out) in outputs(b, x) {
        if let Some(i) = out.iter().position(|v| !v.is_nan()) {
            panic!(
                "{b:?} {}: {name} of {what} (cols {}) gives {} at {i}, not NaN",
                std::any::type_name::<T>(),
                x.len(),
                out[i]
            );
        }
    }
}

/// Positions within `d` of every block boundary, of every segment boundary and of the row's end.
fn positions(cols: usize, d: usize) -> Vec<usize> {
    let mut p: Vec<usize> = Vec::new();
    let edges = (0..=cols)
        .step_by(BLOCK)
        .chain((0..=cols).step_by(SEGMENT))
        .chain([cols]);
    for e in edges {
        for q in e.saturating_sub(d)..(e + d).min(cols) {
            p.push(q);
        }
    }
    p.sort_unstable();
    p.dedup();
    p
}

/// The backgrounds a NaN at `pos` must poison: zeros with a clear maximum elsewhere, all `-inf`,
/// and a varied finite row.
fn backgrounds(cols: usize, pos: usize) -> Vec<(&'static str, Vec<f64>)> {
    let mut peak = vec![0.0; cols];
    peak[if pos == 0 { cols - 1 } else { 0 }] = 5.0;
    let varied = (0..cols)
        .map(|i| ((i * 37) % 101) as f64 * 0.05 - 2.5)
        .collect();
    vec![
        ("zeros with a peak", peak),
        ("all -inf", vec![f64::NEG_INFINITY; cols]),
        ("varied", varied),
    ]
}

/// Debug builds try every `sample`-th position (and always 2047 and the last one); release builds
/// try them all. In rows of a segment or more, positions away from segment boundaries and the
/// tail try one background only (each such row costs ~1 ms per kernel in release).
fn check_nan_positions<T: Element>(cols: &[usize], d: usize, sample: usize) {
    for b in Backend::supported() {
        for &c in cols {
            for (k, pos) in positions(c, d).into_iter().enumerate() {
                if !k.is_multiple_of(sample) && pos != BLOCK - 1 && pos != c - 1 {
                    continue;
                }
                let off = pos % SEGMENT;
                let near_segment = off < d || SEGMENT - off <= d || c - pos <= d;
                let bgs = backgrounds(c, pos);
                let n_bgs = if c < SEGMENT || near_segment {
                    bgs.len()
                } else {
                    1
                };
                for (bg, row) in bgs.into_iter().take(n_bgs) {
                    let mut x: Vec<T> = row.iter().map(|&v| T::from_f64(v)).collect();
                    x[pos] = T::NAN;
                    assert_all_nan(b, &x, &format!("NaN at {pos} in {bg}"));
                }
            }
            if c > BLOCK {
                // The first block all NaN, the rest finite (or -inf with one NaN first).
                let mut x: Vec<T> = (0..c).map(|i| T::from_f64((i % 3) as f64)).collect();
                x[..BLOCK].fill(T::NAN);
                assert_all_nan(b, &x, "a NaN first block");
                let mut x = vec![T::NEG_INFINITY; c];
                x[1] = T::NAN;
                x[c - 1] = T::ZERO;
                assert_all_nan(b, &x, "-inf with one NaN, then 0");
            }
        }
    }
}

/// Whether to sample positions: in a debug build, and under emulation (`make test-aarch64` sets
/// `FASTSOFTMAX_SWEEP_STRIDE` above 1, where every position would take many minutes).
fn sampled() -> bool {
    cfg!(debug_assertions)
        || std::env::var("FASTSOFTMAX_SWEEP_STRIDE").is_ok_and(|v| v.trim() != "1")
}

/// How many positions a sampled run skips between two it tries.
fn debug_sample(n: usize) -> usize {
    if sampled() {
        n
    } else {
        1
    }
}

#[test]
fn nan_near_block_boundaries_and_tails_poisons_the_row() {
    let cols = [
        1, 2, 3, 15, 16, 17, 33, 64, 65, 100, 2047, 2048, 2049, 2050, 4095, 4096, 4097,
    ];
    check_nan_positions::<f32>(&cols, 3, debug_sample(2));
    check_nan_positions::<f64>(&cols, 3, debug_sample(2));
}

#[test]
fn nan_near_segment_boundaries_of_split_rows_poisons_the_row() {
    let cols: &[usize] = if sampled() {
        &[131_073]
    } else {
        &[131_071, 131_072, 131_073]
    };
    // Each debug row costs ~1 s on the scalar backend: there, a handful of positions.
    check_nan_positions::<f32>(cols, 1, debug_sample(47));
    check_nan_positions::<f64>(cols, 1, debug_sample(47));
    for b in Backend::supported() {
        // 65536·k + 2047: the last element of a segment's first block.
        for k in 0..3 {
            if sampled() && k != 1 {
                continue;
            }
            let mut x = vec![0f32; 3 * SEGMENT + 5];
            x[0] = 5.0;
            x[SEGMENT * k + BLOCK - 1] = f32::NAN;
            assert_all_nan(b, &x, &format!("NaN at 65536·{k} + 2047"));
        }
    }
}
