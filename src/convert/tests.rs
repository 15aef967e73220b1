//! The conversions against the `half` crate, on every 16-bit pattern and on the float32 values
//! around every rounding boundary, through every instruction set this CPU has.

use super::*;
use half::{bf16, f16};

/// The 16-bit words as float32 by the reference (`half`), for `kind`.
fn reference_wide(kind: Half, b: u16) -> f32 {
    match kind {
        Half::F16 => f16::from_bits(b).to_f32(),
        Half::BF16 => bf16::from_bits(b).to_f32(),
    }
}

fn reference_narrow(kind: Half, x: f32) -> u16 {
    match kind {
        Half::F16 => f16::from_f32(x).to_bits(),
        Half::BF16 => bf16::from_f32(x).to_bits(),
    }
}

/// Same bits, or both NaN of one sign.
fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits()
        || (a.is_nan() && b.is_nan() && a.is_sign_negative() == b.is_sign_negative())
}

fn is_nan_half(kind: Half, h: u16) -> bool {
    reference_wide(kind, h).is_nan()
}

/// Every 16-bit pattern widens exactly (NaN to a NaN of its sign), the same bits on every backend.
#[test]
fn every_half_value_widens_exactly() {
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    for kind in [Half::F16, Half::BF16] {
        let mut scalar = vec![0f32; bits.len()];
        widen(Backend::Scalar, kind, &bits, &mut scalar);
        for (&b, &w) in bits.iter().zip(&scalar) {
            assert!(
                same_f32(w, reference_wide(kind, b)),
                "{kind:?} {b:#06x} -> {w}"
            );
        }
        for backend in Backend::supported() {
            let mut wide = vec![0f32; bits.len()];
            widen(backend, kind, &bits, &mut wide);
            for ((&b, &w), &s) in bits.iter().zip(&wide).zip(&scalar) {
                assert_eq!(w.to_bits(), s.to_bits(), "{backend:?} {kind:?} {b:#06x}");
            }
        }
    }
}

/// Float32 values that probe every rounding decision: each half value, the midpoints to its
/// neighbours and one float32 ulp either side of them, specials, float32 subnormals and random bits.
fn probes(kind: Half) -> Vec<f32> {
    let mut xs = Vec::new();
    for b in 0..=u16::MAX {
        let v = reference_wide(kind, b);
        if v.is_nan() {
            xs.push(v);
            continue;
        }
        let next = reference_wide(kind, b.wrapping_add(1));
        let mid = if next.is_finite() && !next.is_nan() && (b & 0x7fff) != 0x7fff {
            ((f64::from(v) + f64::from(next)) / 2.0) as f32
        } else {
            v
        };
        for base in [v, mid] {
            let u = base.to_bits();
            xs.extend([
                base,
                f32::from_bits(u.wrapping_add(1)),
                f32::from_bits(u.wrapping_sub(1)),
            ]);
        }
    }
    xs.extend([
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
        f32::NAN,
        -f32::NAN,
    ]);
    xs.extend([
        65504.0,
        65519.996,
        65520.0,
        65520.01,
        2f32.powi(-25),
        2f32.powi(-24),
    ]);
    xs.extend([
        f32::from_bits(1),
        f32::from_bits(0x007f_ffff),
        f32::from_bits(0x8000_0001),
    ]);
    xs.extend([
        f32::from_bits(0x7f80_0001),
        f32::from_bits(0xff80_0001),
        f32::from_bits(0x7fbf_ffff),
    ]);
    let mut r = 0x9E37_79B9_7F4A_7C15u64;
    xs.extend((0..1 << 18).map(|_| {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        f32::from_bits(r as u32)
    }));
    xs
}

/// float32 -> half rounds to nearest even like the reference (subnormals, overflow to inf, NaN
/// stays NaN of its sign), with the same bits on every backend.
#[test]
fn narrowing_rounds_to_nearest_even_on_every_backend() {
    for kind in [Half::F16, Half::BF16] {
        let xs = probes(kind);
        let mut scalar = vec![0u16; xs.len()];
        narrow(Backend::Scalar, kind, &xs, &mut scalar);
        for (&x, &h) in xs.iter().zip(&scalar) {
            let want = reference_narrow(kind, x);
            if x.is_nan() {
                assert!(
                    is_nan_half(kind, h),
                    "{kind:?} NaN {:#010x} -> {h:#06x}",
                    x.to_bits()
                );
                assert_eq!(h & 0x8000, want & 0x8000, "{kind:?} NaN sign");
            } else {
                assert_eq!(h, want, "{kind:?} {x:e} ({:#010x})", x.to_bits());
            }
        }
        for backend in Backend::supported() {
            let mut out = vec![0u16; xs.len()];
            narrow(backend, kind, &xs, &mut out);
            for ((&x, &h), &s) in xs.iter().zip(&out).zip(&scalar) {
                assert_eq!(h, s, "{backend:?} {kind:?} {:#010x}", x.to_bits());
            }
        }
    }
}

/// Rounding to nearest even at a few hand-checked points.
#[test]
fn ties_go_to_even() {
    let one = f16::from_f32(1.0).to_bits();
    assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), one); // tie: down to even
    assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), one + 2); // tie: up to even
    assert_eq!(f32_to_f16(65520.0), 0x7c00); // the tie above the largest float16 goes to inf
    assert_eq!(f32_to_f16(2f32.powi(-25)), 0); // the tie below the smallest subnormal: 0
    assert_eq!(f32_to_f16(3.0 * 2f32.powi(-25)), 2); // 1.5 units: up to even 2
    assert_eq!(
        f32_to_bf16(1.0 + 2f32.powi(-8)),
        bf16::from_f32(1.0).to_bits()
    );
    assert_eq!(f16_to_f32(1), 2f32.powi(-24));
}

/// The parallel whole-array conversions round-trip every pattern (NaN aside) on every backend.
#[test]
fn whole_arrays_round_trip() {
    let bits: Vec<u16> = (0..=u16::MAX).cycle().take(3 << 17).collect();
    for backend in Backend::supported() {
        for kind in [Half::F16, Half::BF16] {
            let mut wide = vec![0f32; bits.len()];
            half_to_f32(backend, &bits, &mut wide, kind).unwrap();
            let mut back = vec![0u16; bits.len()];
            f32_to_half(backend, &wide, &mut back, kind).unwrap();
            for ((&b, &w), &h) in bits.iter().zip(&wide).zip(&back) {
                assert!(
                    h == b || w.is_nan(),
                    "{backend:?} {kind:?} {b:#06x} -> {h:#06x}"
                );
            }
        }
    }
}

#[test]
fn length_mismatch_is_an_error() {
    assert!(half_to_f32(Backend::Scalar, &[0u16; 3], &mut [0f32; 2], Half::F16).is_err());
    assert!(f32_to_half(Backend::Scalar, &[0f32; 3], &mut [0u16; 2], Half::BF16).is_err());
}

/// Every float32 value, narrowed on every backend against the reference: 2^32 values, about a
/// minute; `cargo test --release -- --ignored every_f32`.
#[test]
#[ignore]
fn every_f32_narrows_like_the_reference() {
    use rayon::prelude::*;
    const STEP: u64 = 1 << 20;
    (0..(1u64 << 32) / STEP).into_par_iter().for_each(|t| {
        let xs: Vec<f32> = (t * STEP..(t + 1) * STEP)
            .map(|u| f32::from_bits(u as u32))
            .collect();
        let mut h = vec![0u16; xs.len()];
        for kind in [Half::F16, Half::BF16] {
            for backend in Backend::supported() {
                narrow(backend, kind, &xs, &mut h);
                for (&x, &b) in xs.iter().zip(&h) {
                    let want = reference_narrow(kind, x);
                    assert!(
                        b == want || (x.is_nan() && is_nan_half(kind, b)),
                        "{backend:?} {kind:?} {x:e}"
                    );
                }
            }
        }
    });
}
