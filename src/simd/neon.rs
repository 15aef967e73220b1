//! The NEON backend (AArch64 Advanced SIMD): 4 × `f32` / 2 × `f64` per vector.
//!
//! UNVERIFIED AT RUN TIME: written against the `core::arch::aarch64` documentation of Rust 1.95;
//! it compiles and passes clippy (`cargo clippy --lib --target aarch64-unknown-linux-gnu`) but has
//! never run (no aarch64 machine here). Same algorithms and constants as the AVX2 backend:
//! Cody–Waite `exp` with a minimax polynomial and `2^n` rebuilt from integers in two halves
//! (overflow → `+inf`, correctly rounded denormals, no flushing), `tanh` as an odd polynomial for
//! `|x| < 0.625` and `1 - 2/(e^{2|x|} + 1)` beyond. NEON's `fmax`/`fmin` propagate NaN, so the
//! input clamp keeps NaN. `ln` as the AVX2 backend (exponent and mantissa from the bits, denormals
//! scaled first, fdlibm's polynomial; specials by compare and select). Partial loads and stores go through a
//! stack buffer.

// The intrinsics are safe functions where `neon` is enabled (the default on AArch64 targets);
// the `unsafe` blocks keep this compiling on targets where it is not.
#![allow(unused_unsafe)]

use core::arch::aarch64::*;

use super::{math, MAX_LANES};

super::isa_token!(
    /// The NEON token; only [`Neon::new`] makes one, after checking the CPU.
    Neon,
    "neon",
    std::arch::is_aarch64_feature_detected!("neon")
);

/// `a * b + c` (NEON's `vfmaq` takes the addend first).
#[inline(always)]
unsafe fn fma_f32(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
    vfmaq_f32(c, a, b)
}

#[inline(always)]
unsafe fn fma_f64(a: float64x2_t, b: float64x2_t, c: float64x2_t) -> float64x2_t {
    vfmaq_f64(c, a, b)
}

// `exp`, `tanh` and `ln` (math.rs) on NEON: `2^n` and the exponent and mantissa from the bits
// (math.rs's `ldexp_halves`, `ln_split_bits`), special inputs by compare and select.
super::math::vec_math! {
    Neon, float32x4_t, float64x2_t;
    min |a, b| vminq_f32(a, b); vminq_f64(a, b),
    round |a| vrndnq_f32(a); vrndnq_f64(a),
    abs |a| vabsq_f32(a); vabsq_f64(a),
    // Sign bit from `x`, the rest from `t`.
    copysign |t, x| vbslq_f32(vdupq_n_u32(0x8000_0000), x, t);
        vbslq_f64(vdupq_n_u64(0x8000_0000_0000_0000), x, t),
    select_lt |a, b, x, y| vbslq_f32(vcltq_f32(a, b), x, y); vbslq_f64(vcltq_f64(a, b), x, y),
    select_ge |a, b, x, y| vbslq_f32(vcgeq_f32(a, b), x, y); vbslq_f64(vcgeq_f64(a, b), x, y);
    ldexp |s, p, n| math::ldexp_halves::<f32, _>(s, p, n); math::ldexp_halves::<f64, _>(s, p, n),
    ln_split |s, x| math::ln_split_bits::<f32, _>(s, x); math::ln_split_bits::<f64, _>(s, x),
    ln_special |s, x, y| math::ln_special_select::<f32, _>(s, x, y);
        math::ln_special_select::<f64, _>(s, x, y);
    bits:
    floor |a| vrndmq_f32(a); vrndmq_f64(a),
    pow2i |k| vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(k), vdupq_n_s32(127))));
        vreinterpretq_f64_s64(vshlq_n_s64::<52>(vaddq_s64(vcvtq_s64_f64(k), vdupq_n_s64(1023)))),
    bits_add |a, b| vreinterpretq_f32_u32(vaddq_u32(vreinterpretq_u32_f32(a), vreinterpretq_u32_f32(b)));
        vreinterpretq_f64_u64(vaddq_u64(vreinterpretq_u64_f64(a), vreinterpretq_u64_f64(b))),
    bits_and |a, b| vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(a), vreinterpretq_u32_f32(b)));
        vreinterpretq_f64_u64(vandq_u64(vreinterpretq_u64_f64(a), vreinterpretq_u64_f64(b))),
    exponent |a| vcvtq_f32_u32(vshrq_n_u32::<23>(vreinterpretq_u32_f32(a)));
        vcvtq_f64_u64(vshrq_n_u64::<52>(vreinterpretq_u64_f64(a)))
}

/// 4 × 4 `f32` transpose of `v[..4]`: 32-bit then 64-bit transposes of pairs (`trn1`/`trn2`).
#[inline(always)]
unsafe fn transpose_f32x4(v: &mut [float32x4_t; MAX_LANES]) {
    let (t0, t1) = (vtrn1q_f32(v[0], v[1]), vtrn2q_f32(v[0], v[1]));
    let (t2, t3) = (vtrn1q_f32(v[2], v[3]), vtrn2q_f32(v[2], v[3]));
    let d = vreinterpretq_f64_f32;
    v[0] = vreinterpretq_f32_f64(vtrn1q_f64(d(t0), d(t2)));
    v[1] = vreinterpretq_f32_f64(vtrn1q_f64(d(t1), d(t3)));
    v[2] = vreinterpretq_f32_f64(vtrn2q_f64(d(t0), d(t2)));
    v[3] = vreinterpretq_f32_f64(vtrn2q_f64(d(t1), d(t3)));
}

// `max` is `fmax`: NaN if either lane is NaN. Partial loads and stores are the trait's (through a
// stack buffer, with safe slice operations).
super::simd_impls! {
    Neon; float32x4_t, 4; float64x2_t, 2;
    splat vdupq_n_f32; vdupq_n_f64, load vld1q_f32; vld1q_f64,
    store vst1q_f32; vst1q_f64, mul_add fma_f32; fma_f64,
    add vaddq_f32; vaddq_f64, sub vsubq_f32; vsubq_f64,
    mul vmulq_f32; vmulq_f64, div vdivq_f32; vdivq_f64,
    max vmaxq_f32; vmaxq_f64;
    select_eq |a, b, x, y| vbslq_f32(vceqq_f32(a, b), x, y); vbslq_f64(vceqq_f64(a, b), x, y),
    reduce_max |v| vmaxvq_f32(v); vmaxvq_f64(v),
    reduce_sum |v| vaddvq_f32(v); vaddvq_f64(v),
    transpose |v| transpose_f32x4(v); {
            let (r0, r1) = (v[0], v[1]);
            v[0] = vtrn1q_f64(r0, r1);
            v[1] = vtrn2q_f64(r0, r1);
        }
}
