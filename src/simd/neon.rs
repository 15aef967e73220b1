//! The NEON backend (AArch64 Advanced SIMD): 4 × `f32` / 2 × `f64` per vector.
//!
//! UNVERIFIED AT RUN TIME: written against the `core::arch::aarch64` documentation of Rust 1.95;
//! it compiles and passes clippy (`cargo clippy --lib --target aarch64-unknown-linux-gnu`) but has
//! never run (no aarch64 machine here). Same algorithms and constants as the AVX2 backend:
//! Cody–Waite `exp` with a minimax polynomial and `2^n` rebuilt from integers in two halves
//! (overflow → `+inf`, correctly rounded denormals, no flushing), `tanh` as an odd polynomial for
//! `|x| < 0.625` and `1 - 2/(e^{2|x|} + 1)` beyond. NEON's `fmax`/`fmin` propagate NaN, so the
//! input clamp keeps NaN. `ln` as the AVX2 backend (exponent and mantissa from the bits, denormals
//! scaled first, fdlibm's polynomial; specials by compare and select). Partial loads and stores go through a stack buffer.

// The intrinsics are safe functions where `neon` is enabled (the default on AArch64 targets);
// the `unsafe` blocks keep this compiling on targets where it is not.
#![allow(unused_unsafe)]

use core::arch::aarch64::*;

use super::math::{c32, c64, horner};
use super::Simd;

super::isa_token!(
    /// The NEON token; only [`Neon::new`] makes one, after checking the CPU.
    Neon,
    "neon",
    std::arch::is_aarch64_feature_detected!("neon")
);

#[inline(always)]
unsafe fn exp_f32x4(x: float32x4_t) -> float32x4_t {
    let x = vminq_f32(
        vmaxq_f32(x, vdupq_n_f32(-c32::CLAMP)),
        vdupq_n_f32(c32::CLAMP),
    );
    let n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(c32::LOG2E)));
    let r = vfmsq_f32(x, n, vdupq_n_f32(c32::LN2_HI));
    let r = vfmsq_f32(r, n, vdupq_n_f32(c32::LN2_LO));
    let g = horner!(fma_f32, vdupq_n_f32, r, c32::G; 0, 1, 2, 3, 4);
    let one = vdupq_n_f32(1.0);
    let p = fma_f32(fma_f32(g, r, one), r, one);
    // |n| <= 150: both halves are normal powers of two, only the last product rounds.
    let ni = vcvtq_s32_f32(n);
    let n1 = vshrq_n_s32::<1>(ni);
    let n2 = vsubq_s32(ni, n1);
    let bias = vdupq_n_s32(127);
    let s1 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(n1, bias)));
    let s2 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(n2, bias)));
    vmulq_f32(vmulq_f32(p, s1), s2)
}

#[inline(always)]
unsafe fn exp_f64x2(x: float64x2_t) -> float64x2_t {
    let x = vminq_f64(
        vmaxq_f64(x, vdupq_n_f64(-c64::CLAMP)),
        vdupq_n_f64(c64::CLAMP),
    );
    let n = vrndnq_f64(vmulq_f64(x, vdupq_n_f64(c64::LOG2E)));
    let r = vfmsq_f64(x, n, vdupq_n_f64(c64::LN2_HI));
    let r = vfmsq_f64(r, n, vdupq_n_f64(c64::LN2_LO));
    let g = horner!(fma_f64, vdupq_n_f64, r, c64::G; 0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
    let one = vdupq_n_f64(1.0);
    let p = fma_f64(fma_f64(g, r, one), r, one);
    // |n| <= 1077: halves in [-539, 539].
    let ni = vcvtq_s64_f64(n);
    let n1 = vshrq_n_s64::<1>(ni);
    let n2 = vsubq_s64(ni, n1);
    let bias = vdupq_n_s64(1023);
    let s1 = vreinterpretq_f64_s64(vshlq_n_s64::<52>(vaddq_s64(n1, bias)));
    let s2 = vreinterpretq_f64_s64(vshlq_n_s64::<52>(vaddq_s64(n2, bias)));
    vmulq_f64(vmulq_f64(p, s1), s2)
}

/// `a * b + c` (NEON's `vfmaq` takes the addend first).
#[inline(always)]
unsafe fn fma_f32(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
    vfmaq_f32(c, a, b)
}

#[inline(always)]
unsafe fn fma_f64(a: float64x2_t, b: float64x2_t, c: float64x2_t) -> float64x2_t {
    vfmaq_f64(c, a, b)
}

#[inline(always)]
unsafe fn tanh_f32x4(x: float32x4_t) -> float32x4_t {
    let a = vabsq_f32(x);
    let y = vmulq_f32(a, a);
    let q = horner!(fma_f32, vdupq_n_f32, y, c32::TANH_Q; 0, 1, 2, 3, 4);
    let small = fma_f32(vmulq_f32(a, y), q, a);
    let one = vdupq_n_f32(1.0);
    let e = exp_f32x4(vaddq_f32(a, a));
    let large = vsubq_f32(one, vdivq_f32(vdupq_n_f32(2.0), vaddq_f32(e, one)));
    let t = vbslq_f32(vcltq_f32(a, vdupq_n_f32(c32::TANH_SMALL)), small, large);
    // Sign bit from `x`, the rest from `t`.
    vbslq_f32(vdupq_n_u32(0x8000_0000), x, t)
}

#[inline(always)]
unsafe fn tanh_f64x2(x: float64x2_t) -> float64x2_t {
    let a = vabsq_f64(x);
    let y = vmulq_f64(a, a);
    let q = horner!(fma_f64, vdupq_n_f64, y, c64::TANH_Q; 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    let small = fma_f64(vmulq_f64(a, y), q, a);
    let one = vdupq_n_f64(1.0);
    let e = exp_f64x2(vaddq_f64(a, a));
    let large = vsubq_f64(one, vdivq_f64(vdupq_n_f64(2.0), vaddq_f64(e, one)));
    let t = vbslq_f64(vcltq_f64(a, vdupq_n_f64(c64::TANH_SMALL)), small, large);
    vbslq_f64(vdupq_n_u64(0x8000_0000_0000_0000), x, t)
}

/// `ln x = k·ln2 + log1p(f)`, `x = 2^k·(1 + f)`, `1 + f ∈ [√½, √2)` from the bits (adding
/// `1.0 − √½` to them carries into the exponent exactly when the mantissa is `≥ √2`; denormals
/// scaled by `2^23` first); `log1p(f) = f − f²/2 + s·(f²/2 + z·P(z))`, `s = f/(2+f)`, `z = s²`
/// (fdlibm); `k·ln2_hi` added last by an FMA. As the AVX2 backend.
#[inline(always)]
unsafe fn ln_f32x4(x: float32x4_t) -> float32x4_t {
    let tiny = vcltq_f32(x, vdupq_n_f32(c32::MIN_NORMAL));
    let xs = vbslq_f32(tiny, vmulq_f32(x, vdupq_n_f32(c32::DENORM_SCALE)), x);
    let kadj = vbslq_f32(tiny, vdupq_n_f32(-c32::DENORM_BITS), vdupq_n_f32(0.0));
    let ix = vaddq_s32(
        vreinterpretq_s32_f32(xs),
        vdupq_n_s32(0x3f80_0000 - c32::SQRT_HALF_BITS),
    );
    let k = vsubq_s32(vshrq_n_s32::<23>(ix), vdupq_n_s32(0x7f));
    let k = vaddq_f32(vcvtq_f32_s32(k), kadj);
    let m = vreinterpretq_f32_s32(vaddq_s32(
        vandq_s32(ix, vdupq_n_s32(0x007f_ffff)),
        vdupq_n_s32(c32::SQRT_HALF_BITS),
    ));
    let f = vsubq_f32(m, vdupq_n_f32(1.0));
    let s = vdivq_f32(f, vaddq_f32(f, vdupq_n_f32(2.0)));
    let z = vmulq_f32(s, s);
    let p = horner!(fma_f32, vdupq_n_f32, z, c32::LN_P; 0, 1, 2, 3);
    let hfsq = vmulq_f32(vmulq_f32(f, f), vdupq_n_f32(0.5));
    let t = fma_f32(z, p, hfsq);
    let lo = fma_f32(s, t, vmulq_f32(k, vdupq_n_f32(c32::LN2_LO)));
    let r = vaddq_f32(vsubq_f32(lo, hfsq), f);
    let y = fma_f32(k, vdupq_n_f32(c32::LN2_HI), r);
    // ±0 → −inf; +inf → +inf; x < 0 (−inf included) or NaN → NaN.
    let zero = vdupq_n_f32(0.0);
    let inf = vdupq_n_f32(f32::INFINITY);
    let y = vbslq_f32(vceqq_f32(x, zero), vdupq_n_f32(f32::NEG_INFINITY), y);
    let y = vbslq_f32(vceqq_f32(x, inf), inf, y);
    vbslq_f32(vcgeq_f32(x, zero), y, vdupq_n_f32(f32::NAN))
}

#[inline(always)]
unsafe fn ln_f64x2(x: float64x2_t) -> float64x2_t {
    let tiny = vcltq_f64(x, vdupq_n_f64(c64::MIN_NORMAL));
    let xs = vbslq_f64(tiny, vmulq_f64(x, vdupq_n_f64(c64::DENORM_SCALE)), x);
    let kadj = vbslq_f64(tiny, vdupq_n_f64(-c64::DENORM_BITS), vdupq_n_f64(0.0));
    let ix = vaddq_s64(
        vreinterpretq_s64_f64(xs),
        vdupq_n_s64(0x3ff0_0000_0000_0000 - c64::SQRT_HALF_BITS),
    );
    let k = vsubq_s64(vshrq_n_s64::<52>(ix), vdupq_n_s64(0x3ff));
    let k = vaddq_f64(vcvtq_f64_s64(k), kadj);
    let m = vreinterpretq_f64_s64(vaddq_s64(
        vandq_s64(ix, vdupq_n_s64(0x000f_ffff_ffff_ffff)),
        vdupq_n_s64(c64::SQRT_HALF_BITS),
    ));
    let f = vsubq_f64(m, vdupq_n_f64(1.0));
    let s = vdivq_f64(f, vaddq_f64(f, vdupq_n_f64(2.0)));
    let z = vmulq_f64(s, s);
    let p = horner!(fma_f64, vdupq_n_f64, z, c64::LN_P; 0, 1, 2, 3, 4, 5, 6);
    let hfsq = vmulq_f64(vmulq_f64(f, f), vdupq_n_f64(0.5));
    let t = fma_f64(z, p, hfsq);
    let lo = fma_f64(s, t, vmulq_f64(k, vdupq_n_f64(c64::LN2_LO)));
    let r = vaddq_f64(vsubq_f64(lo, hfsq), f);
    let y = fma_f64(k, vdupq_n_f64(c64::LN2_HI), r);
    let zero = vdupq_n_f64(0.0);
    let inf = vdupq_n_f64(f64::INFINITY);
    let y = vbslq_f64(vceqq_f64(x, zero), vdupq_n_f64(f64::NEG_INFINITY), y);
    let y = vbslq_f64(vceqq_f64(x, inf), inf, y);
    vbslq_f64(vcgeq_f64(x, zero), y, vdupq_n_f64(f64::NAN))
}

/// 4 × 4 `f32` transpose: 32-bit then 64-bit transposes of pairs (`trn1`/`trn2`).
#[inline(always)]
unsafe fn transpose_f32x4(v: &mut [float32x4_t; 4]) {
    let (t0, t1) = (vtrn1q_f32(v[0], v[1]), vtrn2q_f32(v[0], v[1]));
    let (t2, t3) = (vtrn1q_f32(v[2], v[3]), vtrn2q_f32(v[2], v[3]));
    let d = vreinterpretq_f64_f32;
    v[0] = vreinterpretq_f32_f64(vtrn1q_f64(d(t0), d(t2)));
    v[1] = vreinterpretq_f32_f64(vtrn1q_f64(d(t1), d(t3)));
    v[2] = vreinterpretq_f32_f64(vtrn2q_f64(d(t0), d(t2)));
    v[3] = vreinterpretq_f32_f64(vtrn2q_f64(d(t1), d(t3)));
}

// SAFETY: the token proves the CPU has NEON; full loads/stores slice to `LANES` first
// (bounds-checked), partial ones copy through a stack buffer with safe slice operations.
unsafe impl Simd<f32> for Neon {
    // `max` is `fmax`: NaN if either lane is NaN.
    super::simd_basics!(f32, float32x4_t, 4;
        splat: vdupq_n_f32, load: vld1q_f32, store: vst1q_f32,
        mul_add: fma_f32;
        binary: add vaddq_f32, sub vsubq_f32, mul vmulq_f32,
            div vdivq_f32, max vmaxq_f32;
        unary: exp exp_f32x4, tanh tanh_f32x4, ln ln_f32x4);

    const TRANSPOSES: bool = true;
    #[inline(always)]
    fn transpose(self, v: &mut [float32x4_t; super::MAX_LANES]) {
        let head: &mut [float32x4_t; 4] = (&mut v[..4]).try_into().unwrap();
        unsafe { transpose_f32x4(head) }
    }
    #[inline(always)]
    fn load_partial(self, x: &[f32], fill: f32) -> float32x4_t {
        let n = x.len().min(4);
        let mut buf = [fill; 4];
        buf[..n].copy_from_slice(&x[..n]);
        unsafe { vld1q_f32(buf.as_ptr()) }
    }
    #[inline(always)]
    fn store_partial(self, out: &mut [f32], v: float32x4_t) {
        let n = out.len().min(4);
        let mut buf = [0.0f32; 4];
        unsafe { vst1q_f32(buf.as_mut_ptr(), v) };
        out[..n].copy_from_slice(&buf[..n]);
    }
    #[inline(always)]
    fn select_eq(
        self,
        a: float32x4_t,
        b: float32x4_t,
        x: float32x4_t,
        y: float32x4_t,
    ) -> float32x4_t {
        unsafe { vbslq_f32(vceqq_f32(a, b), x, y) }
    }
    #[inline(always)]
    fn reduce_max(self, v: float32x4_t) -> f32 {
        unsafe { vmaxvq_f32(v) }
    }
    #[inline(always)]
    fn reduce_sum(self, v: float32x4_t) -> f32 {
        unsafe { vaddvq_f32(v) }
    }
}

// SAFETY: as for `f32` above.
unsafe impl Simd<f64> for Neon {
    super::simd_basics!(f64, float64x2_t, 2;
        splat: vdupq_n_f64, load: vld1q_f64, store: vst1q_f64,
        mul_add: fma_f64;
        binary: add vaddq_f64, sub vsubq_f64, mul vmulq_f64,
            div vdivq_f64, max vmaxq_f64;
        unary: exp exp_f64x2, tanh tanh_f64x2, ln ln_f64x2);

    const TRANSPOSES: bool = true;
    #[inline(always)]
    fn transpose(self, v: &mut [float64x2_t; super::MAX_LANES]) {
        let (r0, r1) = (v[0], v[1]);
        unsafe {
            v[0] = vtrn1q_f64(r0, r1);
            v[1] = vtrn2q_f64(r0, r1);
        }
    }
    #[inline(always)]
    fn load_partial(self, x: &[f64], fill: f64) -> float64x2_t {
        let n = x.len().min(2);
        let mut buf = [fill; 2];
        buf[..n].copy_from_slice(&x[..n]);
        unsafe { vld1q_f64(buf.as_ptr()) }
    }
    #[inline(always)]
    fn store_partial(self, out: &mut [f64], v: float64x2_t) {
        let n = out.len().min(2);
        let mut buf = [0.0f64; 2];
        unsafe { vst1q_f64(buf.as_mut_ptr(), v) };
        out[..n].copy_from_slice(&buf[..n]);
    }
    #[inline(always)]
    fn select_eq(
        self,
        a: float64x2_t,
        b: float64x2_t,
        x: float64x2_t,
        y: float64x2_t,
    ) -> float64x2_t {
        unsafe { vbslq_f64(vceqq_f64(a, b), x, y) }
    }
    #[inline(always)]
    fn reduce_max(self, v: float64x2_t) -> f64 {
        unsafe { vmaxvq_f64(v) }
    }
    #[inline(always)]
    fn reduce_sum(self, v: float64x2_t) -> f64 {
        unsafe { vaddvq_f64(v) }
    }
}
