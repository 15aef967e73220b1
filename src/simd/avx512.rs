//! The AVX-512 backend (F + BW + DQ + VL, with AVX2 and FMA): 16 × `f32` / 8 × `f64` per vector.
//!
//! `exp` is Cody–Waite: `n = round(x·log2 e)`, `r = x - n·ln2_hi - n·ln2_lo` (two FMAs), `e^r` by a
//! minimax polynomial `1 + r + r²·g(r)` (degree 6 for `f32`, 11 for `f64`), and `2^n` applied by
//! `vscalef`, which rounds once: overflow gives `+inf`, and the denormal range is rounded correctly (to
//! within the polynomial's error), down to 0 below half the smallest denormal. No flushing. The input
//! is first clamped to `±104` (`f32`) / `±746` (`f64`) with `vmax`/`vmin` (operands ordered so NaN
//! passes through; `vrange` would be one instruction but drops NaN), which maps `±inf` into the
//! overflow / underflow range.
//!
//! Measured (tests/simd.rs): every `f32` in `[-110, 90]` within 0.95 ulp of the exact value; 4M
//! random `f64` in `[-746, 710]` within 1 ulp (bit distance) of std's `exp`. AVX2 matches.
//!
//! `ln` is fdlibm's (`x = 2^k·m`, `m ∈ [√½, √2)` by `vgetexp`/`vgetmant`, which normalise denormals;
//! `log1p(m − 1)` from `s = f/(2+f)`), with `vfixupimm` for 0, negatives, inf and NaN. Measured
//! (tests/simd.rs): every positive `f32` within 0.83 ulp; 5M `f64` over the whole range, denormals
//! included, within 1 ulp of std's `ln`. AVX2 (exponent from the bits) matches.

use core::arch::x86_64::*;

use super::math::{c32, c64, horner};
use super::Simd;

super::isa_token!(
    /// The AVX-512 token; only [`Avx512::new`] makes one, after checking AVX-512 F/BW/DQ/VL, AVX2
    /// and FMA.
    Avx512,
    "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma",
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
);

const ROUND_NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

#[inline(always)]
unsafe fn exp_ps(x: __m512) -> __m512 {
    // `vmax`/`vmin` return their second operand when either is NaN: NaN passes through.
    let x = _mm512_max_ps(_mm512_set1_ps(-c32::CLAMP), x);
    let x = _mm512_min_ps(_mm512_set1_ps(c32::CLAMP), x);
    let n = _mm512_roundscale_ps::<ROUND_NEAREST>(_mm512_mul_ps(x, _mm512_set1_ps(c32::LOG2E)));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(c32::LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(c32::LN2_LO), r);
    let g = horner!(_mm512_fmadd_ps, _mm512_set1_ps, r, c32::G; 0, 1, 2, 3, 4);
    let one = _mm512_set1_ps(1.0);
    let p = _mm512_fmadd_ps(_mm512_fmadd_ps(g, r, one), r, one);
    _mm512_scalef_ps(p, n)
}

#[inline(always)]
unsafe fn exp_pd(x: __m512d) -> __m512d {
    // `vmax`/`vmin` return their second operand when either is NaN: NaN passes through.
    let x = _mm512_max_pd(_mm512_set1_pd(-c64::CLAMP), x);
    let x = _mm512_min_pd(_mm512_set1_pd(c64::CLAMP), x);
    let n = _mm512_roundscale_pd::<ROUND_NEAREST>(_mm512_mul_pd(x, _mm512_set1_pd(c64::LOG2E)));
    let r = _mm512_fnmadd_pd(n, _mm512_set1_pd(c64::LN2_HI), x);
    let r = _mm512_fnmadd_pd(n, _mm512_set1_pd(c64::LN2_LO), r);
    let g = horner!(_mm512_fmadd_pd, _mm512_set1_pd, r, c64::G; 0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
    let one = _mm512_set1_pd(1.0);
    let p = _mm512_fmadd_pd(_mm512_fmadd_pd(g, r, one), r, one);
    _mm512_scalef_pd(p, n)
}

/// `tanh`: `a + a³·q(a²)` for `|a| < 0.625`, else `1 - 2/(e^{2a} + 1)`; sign restored from `x`.
#[inline(always)]
unsafe fn tanh_ps(x: __m512) -> __m512 {
    let a = _mm512_abs_ps(x);
    let y = _mm512_mul_ps(a, a);
    let q = horner!(_mm512_fmadd_ps, _mm512_set1_ps, y, c32::TANH_Q; 0, 1, 2, 3, 4);
    let small = _mm512_fmadd_ps(_mm512_mul_ps(a, y), q, a);
    let one = _mm512_set1_ps(1.0);
    let e = exp_ps(_mm512_add_ps(a, a));
    let large = _mm512_sub_ps(
        one,
        _mm512_div_ps(_mm512_set1_ps(2.0), _mm512_add_ps(e, one)),
    );
    let is_small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, _mm512_set1_ps(c32::TANH_SMALL));
    let t = _mm512_mask_blend_ps(is_small, large, small);
    let sign = _mm512_and_ps(x, _mm512_set1_ps(-0.0));
    _mm512_or_ps(t, sign)
}

#[inline(always)]
unsafe fn tanh_pd(x: __m512d) -> __m512d {
    let a = _mm512_abs_pd(x);
    let y = _mm512_mul_pd(a, a);
    let q =
        horner!(_mm512_fmadd_pd, _mm512_set1_pd, y, c64::TANH_Q; 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    let small = _mm512_fmadd_pd(_mm512_mul_pd(a, y), q, a);
    let one = _mm512_set1_pd(1.0);
    let e = exp_pd(_mm512_add_pd(a, a));
    let large = _mm512_sub_pd(
        one,
        _mm512_div_pd(_mm512_set1_pd(2.0), _mm512_add_pd(e, one)),
    );
    let is_small = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(a, _mm512_set1_pd(c64::TANH_SMALL));
    let t = _mm512_mask_blend_pd(is_small, large, small);
    let sign = _mm512_and_pd(x, _mm512_set1_pd(-0.0));
    _mm512_or_pd(t, sign)
}

/// `vfixupimm` table for `ln`, 4 bits per input class (QNaN, SNaN, 0, +1, −inf, +inf, < 0, > 0):
/// NaN → quiet NaN of the input, ±0 → −inf, +1 → +0, −inf and negatives → default NaN, +inf → +inf,
/// positive (denormals included) → the computed value.
const LN_FIXUP: i32 = 0x0353_8422;

/// `ln x = k·ln2 + log1p(f)`, `x = 2^k·(1 + f)`, `1 + f ∈ [√½, √2)` (`vgetexp`/`vgetmant`, which
/// normalise denormals themselves); `log1p(f) = f − f²/2 + s·(f²/2 + z·P(z))`, `s = f/(2+f)`,
/// `z = s²` (fdlibm's `log`); `k·ln2_hi` added last by an FMA. Special inputs by `vfixupimm`.
#[inline(always)]
unsafe fn ln_ps(x: __m512) -> __m512 {
    let m = _mm512_getmant_ps::<_MM_MANT_NORM_1_2, _MM_MANT_SIGN_SRC>(x);
    let k = _mm512_getexp_ps(x);
    let big = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(m, _mm512_set1_ps(c32::SQRT2));
    let m = _mm512_mask_mul_ps(m, big, m, _mm512_set1_ps(0.5));
    let k = _mm512_mask_add_ps(k, big, k, _mm512_set1_ps(1.0));
    let f = _mm512_sub_ps(m, _mm512_set1_ps(1.0));
    let s = _mm512_div_ps(f, _mm512_add_ps(f, _mm512_set1_ps(2.0)));
    let z = _mm512_mul_ps(s, s);
    let p = horner!(_mm512_fmadd_ps, _mm512_set1_ps, z, c32::LN_P; 0, 1, 2, 3);
    let hfsq = _mm512_mul_ps(_mm512_mul_ps(f, f), _mm512_set1_ps(0.5));
    let t = _mm512_fmadd_ps(z, p, hfsq);
    let lo = _mm512_fmadd_ps(s, t, _mm512_mul_ps(k, _mm512_set1_ps(c32::LN2_LO)));
    let r = _mm512_add_ps(_mm512_sub_ps(lo, hfsq), f);
    let y = _mm512_fmadd_ps(k, _mm512_set1_ps(c32::LN2_HI), r);
    _mm512_fixupimm_ps::<0>(y, x, _mm512_set1_epi32(LN_FIXUP))
}

#[inline(always)]
unsafe fn ln_pd(x: __m512d) -> __m512d {
    let m = _mm512_getmant_pd::<_MM_MANT_NORM_1_2, _MM_MANT_SIGN_SRC>(x);
    let k = _mm512_getexp_pd(x);
    let big = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(m, _mm512_set1_pd(c64::SQRT2));
    let m = _mm512_mask_mul_pd(m, big, m, _mm512_set1_pd(0.5));
    let k = _mm512_mask_add_pd(k, big, k, _mm512_set1_pd(1.0));
    let f = _mm512_sub_pd(m, _mm512_set1_pd(1.0));
    let s = _mm512_div_pd(f, _mm512_add_pd(f, _mm512_set1_pd(2.0)));
    let z = _mm512_mul_pd(s, s);
    let p = horner!(_mm512_fmadd_pd, _mm512_set1_pd, z, c64::LN_P; 0, 1, 2, 3, 4, 5, 6);
    let hfsq = _mm512_mul_pd(_mm512_mul_pd(f, f), _mm512_set1_pd(0.5));
    let t = _mm512_fmadd_pd(z, p, hfsq);
    let lo = _mm512_fmadd_pd(s, t, _mm512_mul_pd(k, _mm512_set1_pd(c64::LN2_LO)));
    let r = _mm512_add_pd(_mm512_sub_pd(lo, hfsq), f);
    let y = _mm512_fmadd_pd(k, _mm512_set1_pd(c64::LN2_HI), r);
    _mm512_fixupimm_pd::<0>(y, x, _mm512_set1_epi64(LN_FIXUP as i64))
}

/// The 4 × 4 transpose of the 128-bit lanes of `a, b, c, d`: vector `k` gets lane `k` of each.
#[inline(always)]
unsafe fn transpose_lanes(a: __m512, b: __m512, c: __m512, d: __m512) -> [__m512; 4] {
    let (ab02, ab13) = (
        _mm512_shuffle_f32x4::<0x88>(a, b),
        _mm512_shuffle_f32x4::<0xdd>(a, b),
    );
    let (cd02, cd13) = (
        _mm512_shuffle_f32x4::<0x88>(c, d),
        _mm512_shuffle_f32x4::<0xdd>(c, d),
    );
    [
        _mm512_shuffle_f32x4::<0x88>(ab02, cd02),
        _mm512_shuffle_f32x4::<0x88>(ab13, cd13),
        _mm512_shuffle_f32x4::<0xdd>(ab02, cd02),
        _mm512_shuffle_f32x4::<0xdd>(ab13, cd13),
    ]
}

/// The low (or high) 64-bit halves of each 128-bit lane of `a` and `b`, interleaved.
#[inline(always)]
unsafe fn unpack_pd<const HI: bool>(a: __m512, b: __m512) -> __m512 {
    let (a, b) = (_mm512_castps_pd(a), _mm512_castps_pd(b));
    _mm512_castpd_ps(if HI {
        _mm512_unpackhi_pd(a, b)
    } else {
        _mm512_unpacklo_pd(a, b)
    })
}

/// 16 × 16 `f32` transpose: 32-bit then 64-bit unpacks make 4 × 4 blocks inside each 128-bit
/// lane, then the lanes are transposed across vectors (64 shuffles for 256 elements).
#[inline(always)]
unsafe fn transpose_ps(v: &mut [__m512; 16]) {
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let r = &v[4 * g..4 * g + 4];
        let (t0, t1) = (
            _mm512_unpacklo_ps(r[0], r[1]),
            _mm512_unpackhi_ps(r[0], r[1]),
        );
        let (t2, t3) = (
            _mm512_unpacklo_ps(r[2], r[3]),
            _mm512_unpackhi_ps(r[2], r[3]),
        );
        // u[4g + c], 128-bit lane k: rows 4g..4g+3 of column 4k + c.
        u[4 * g] = unpack_pd::<false>(t0, t2);
        u[4 * g + 1] = unpack_pd::<true>(t0, t2);
        u[4 * g + 2] = unpack_pd::<false>(t1, t3);
        u[4 * g + 3] = unpack_pd::<true>(t1, t3);
    }
    for c in 0..4 {
        let cols = transpose_lanes(u[c], u[4 + c], u[8 + c], u[12 + c]);
        for (k, col) in cols.into_iter().enumerate() {
            v[4 * k + c] = col;
        }
    }
}

/// 8 × 8 `f64` transpose: 64-bit unpacks make 2 × 2 blocks inside each 128-bit lane, then the
/// lanes are transposed across vectors (24 shuffles for 64 elements).
#[inline(always)]
unsafe fn transpose_pd(v: &mut [__m512d; 8]) {
    let mut u = [_mm512_setzero_ps(); 8];
    for g in 0..4 {
        let (a, b) = (v[2 * g], v[2 * g + 1]);
        // u[2g + c], 128-bit lane k: rows 2g, 2g+1 of column 2k + c.
        u[2 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        u[2 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    }
    for c in 0..2 {
        let cols = transpose_lanes(u[c], u[2 + c], u[4 + c], u[6 + c]);
        for (k, col) in cols.into_iter().enumerate() {
            v[2 * k + c] = _mm512_castps_pd(col);
        }
    }
}

// SAFETY: the token proves the CPU has AVX-512 F/BW/DQ/VL; full loads/stores slice to `LANES` first
// (bounds-checked), partial ones mask off every lane at or past `len`, and masked-off lanes are
// never accessed (no fault, no write).
unsafe impl Simd<f32> for Avx512 {
    // `max` is `vmaxps`: it returns `b` when either lane is NaN.
    super::simd_basics!(f32, __m512, 16;
        splat: _mm512_set1_ps, load: _mm512_loadu_ps, store: _mm512_storeu_ps,
        mul_add: _mm512_fmadd_ps;
        binary: add _mm512_add_ps, sub _mm512_sub_ps, mul _mm512_mul_ps,
            div _mm512_div_ps, max _mm512_max_ps;
        unary: exp exp_ps, tanh tanh_ps, ln ln_ps);

    const TRANSPOSES: bool = true;
    #[inline(always)]
    fn transpose(self, v: &mut [__m512; super::MAX_LANES]) {
        unsafe { transpose_ps(v) }
    }
    #[inline(always)]
    fn load_partial(self, x: &[f32], fill: f32) -> __m512 {
        let m = ((1u32 << x.len().min(16)) - 1) as __mmask16;
        unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(fill), m, x.as_ptr()) }
    }
    #[inline(always)]
    fn store_partial(self, out: &mut [f32], v: __m512) {
        let m = ((1u32 << out.len().min(16)) - 1) as __mmask16;
        unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr(), m, v) }
    }
    #[inline(always)]
    fn select_eq(self, a: __m512, b: __m512, x: __m512, y: __m512) -> __m512 {
        unsafe { _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, b), y, x) }
    }
    #[inline(always)]
    fn reduce_max(self, v: __m512) -> f32 {
        unsafe {
            let m = _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps::<1>(v));
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
        }
    }
    #[inline(always)]
    fn store_strided(self, out: &mut [f32], stride: usize, v: __m512) {
        assert!(out.len() > 15 * stride && stride <= (i32::MAX / 16) as usize);
        // SAFETY: every index i·stride (i < 16) is inside `out`, checked above.
        unsafe {
            let idx = _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32(stride as i32),
            );
            _mm512_i32scatter_ps::<4>(out.as_mut_ptr() as *mut _, idx, v)
        }
    }
    #[inline(always)]
    fn load_strided(self, x: &[f32], stride: usize) -> __m512 {
        assert!(x.len() > 15 * stride && stride <= (i32::MAX / 16) as usize);
        // SAFETY: every index i·stride (i < 16) is inside `x`, checked above.
        unsafe {
            let idx = _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32(stride as i32),
            );
            _mm512_i32gather_ps::<4>(idx, x.as_ptr() as *const _)
        }
    }
    #[inline(always)]
    fn reduce_sum(self, v: __m512) -> f32 {
        unsafe {
            let m = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps::<1>(v));
            let m = _mm_add_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_add_ps(m, _mm_movehl_ps(m, m));
            _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)))
        }
    }
}

// SAFETY: as for `f32` above.
unsafe impl Simd<f64> for Avx512 {
    super::simd_basics!(f64, __m512d, 8;
        splat: _mm512_set1_pd, load: _mm512_loadu_pd, store: _mm512_storeu_pd,
        mul_add: _mm512_fmadd_pd;
        binary: add _mm512_add_pd, sub _mm512_sub_pd, mul _mm512_mul_pd,
            div _mm512_div_pd, max _mm512_max_pd;
        unary: exp exp_pd, tanh tanh_pd, ln ln_pd);

    const TRANSPOSES: bool = true;
    #[inline(always)]
    fn transpose(self, v: &mut [__m512d; super::MAX_LANES]) {
        let head: &mut [__m512d; 8] = (&mut v[..8]).try_into().unwrap();
        unsafe { transpose_pd(head) }
    }
    #[inline(always)]
    fn load_partial(self, x: &[f64], fill: f64) -> __m512d {
        let m = ((1u32 << x.len().min(8)) - 1) as __mmask8;
        unsafe { _mm512_mask_loadu_pd(_mm512_set1_pd(fill), m, x.as_ptr()) }
    }
    #[inline(always)]
    fn store_partial(self, out: &mut [f64], v: __m512d) {
        let m = ((1u32 << out.len().min(8)) - 1) as __mmask8;
        unsafe { _mm512_mask_storeu_pd(out.as_mut_ptr(), m, v) }
    }
    #[inline(always)]
    fn select_eq(self, a: __m512d, b: __m512d, x: __m512d, y: __m512d) -> __m512d {
        unsafe { _mm512_mask_blend_pd(_mm512_cmp_pd_mask::<_CMP_EQ_OQ>(a, b), y, x) }
    }
    #[inline(always)]
    fn reduce_max(self, v: __m512d) -> f64 {
        unsafe {
            let m = _mm256_max_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd::<1>(v));
            let m = _mm_max_pd(_mm256_castpd256_pd128(m), _mm256_extractf128_pd::<1>(m));
            _mm_cvtsd_f64(_mm_max_sd(m, _mm_unpackhi_pd(m, m)))
        }
    }
    #[inline(always)]
    fn load_strided(self, x: &[f64], stride: usize) -> __m512d {
        assert!(x.len() > 7 * stride && stride <= (i32::MAX / 8) as usize);
        // SAFETY: every index i·stride (i < 8) is inside `x`, checked above.
        unsafe {
            let idx = _mm256_mullo_epi32(
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                _mm256_set1_epi32(stride as i32),
            );
            _mm512_i32gather_pd::<8>(idx, x.as_ptr() as *const _)
        }
    }
    #[inline(always)]
    fn reduce_sum(self, v: __m512d) -> f64 {
        unsafe {
            let m = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd::<1>(v));
            let m = _mm_add_pd(_mm256_castpd256_pd128(m), _mm256_extractf128_pd::<1>(m));
            _mm_cvtsd_f64(_mm_add_sd(m, _mm_unpackhi_pd(m, m)))
        }
    }
}
