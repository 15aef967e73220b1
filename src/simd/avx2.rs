//! The AVX2 + FMA backend: 8 × `f32` / 4 × `f64` per vector.
//!
//! `exp` uses the AVX-512 backend's Cody–Waite reduction and polynomials (same constants); without
//! `vscalef`, `2^n` is rebuilt from integers in two halves, `p · 2^⌊n/2⌋ · 2^(n-⌊n/2⌋)`, so that each
//! factor is a normal power of two and only the last multiplication rounds: overflow gives `+inf`
//! and the denormal range is rounded correctly (no flushing), down to 0. The input is clamped to
//! `±104` / `±746` first (NaN passes through), which maps `±inf` to the overflow / underflow range.
//! Partial loads and stores use `vmaskmov`, which never touches masked-off lanes.

use core::arch::x86_64::*;

use super::math::{c32, c64, horner};
use super::Simd;

super::isa_token!(
    /// The AVX2 token; only [`Avx2::new`] makes one, after checking AVX2 and FMA.
    Avx2,
    "avx2,fma",
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
);

const ROUND_NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
const ROUND_DOWN: i32 = _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC;

/// Lane mask `i < n` for 8 × 32-bit lanes.
#[inline(always)]
unsafe fn mask32(n: usize) -> __m256i {
    let n = n.min(8) as i32;
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// Lane mask `i < n` for 4 × 64-bit lanes.
#[inline(always)]
unsafe fn mask64(n: usize) -> __m256i {
    let n = n.min(4) as i64;
    _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3))
}

#[inline(always)]
unsafe fn exp_ps(x: __m256) -> __m256 {
    // `vmaxps`/`vminps` return their second operand when either is NaN: NaN passes through.
    let x = _mm256_max_ps(_mm256_set1_ps(-c32::CLAMP), x);
    let x = _mm256_min_ps(_mm256_set1_ps(c32::CLAMP), x);
    let n = _mm256_round_ps::<ROUND_NEAREST>(_mm256_mul_ps(x, _mm256_set1_ps(c32::LOG2E)));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(c32::LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(c32::LN2_LO), r);
    let g = horner!(_mm256_fmadd_ps, _mm256_set1_ps, r, c32::G; 0, 1, 2, 3, 4);
    let one = _mm256_set1_ps(1.0);
    let p = _mm256_fmadd_ps(_mm256_fmadd_ps(g, r, one), r, one);
    // |n| <= 151, so both halves are in [-76, 76]: normal powers of two.
    let ni = _mm256_cvtps_epi32(n);
    let n1 = _mm256_srai_epi32::<1>(ni);
    let n2 = _mm256_sub_epi32(ni, n1);
    let bias = _mm256_set1_epi32(127);
    let s1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
    let s2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
    _mm256_mul_ps(_mm256_mul_ps(p, s1), s2)
}

#[inline(always)]
unsafe fn exp_pd(x: __m256d) -> __m256d {
    let x = _mm256_max_pd(_mm256_set1_pd(-c64::CLAMP), x);
    let x = _mm256_min_pd(_mm256_set1_pd(c64::CLAMP), x);
    let n = _mm256_round_pd::<ROUND_NEAREST>(_mm256_mul_pd(x, _mm256_set1_pd(c64::LOG2E)));
    let r = _mm256_fnmadd_pd(n, _mm256_set1_pd(c64::LN2_HI), x);
    let r = _mm256_fnmadd_pd(n, _mm256_set1_pd(c64::LN2_LO), r);
    let g = horner!(_mm256_fmadd_pd, _mm256_set1_pd, r, c64::G; 0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
    let one = _mm256_set1_pd(1.0);
    let p = _mm256_fmadd_pd(_mm256_fmadd_pd(g, r, one), r, one);
    // No 64-bit arithmetic shift or float->int64 conversion in AVX2: halve in floating point, and
    // get `(k + 1023) << 52` from the bits of `k + (2^52 + 1023)` (an exact integer-valued double
    // whose low mantissa bits are `k + 1023`). |n| <= 1077, so both halves are in [-539, 539].
    let n1 = _mm256_round_pd::<ROUND_DOWN>(_mm256_mul_pd(n, _mm256_set1_pd(0.5)));
    let n2 = _mm256_sub_pd(n, n1);
    let magic = _mm256_set1_pd(4_503_599_627_371_519.0); // 2^52 + 1023
    let s1 = _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_castpd_si256(_mm256_add_pd(
        n1, magic,
    ))));
    let s2 = _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_castpd_si256(_mm256_add_pd(
        n2, magic,
    ))));
    _mm256_mul_pd(_mm256_mul_pd(p, s1), s2)
}

/// `tanh`: `a + a³·q(a²)` for `|a| < 0.625`, else `1 - 2/(e^{2a} + 1)`; sign restored from `x`.
#[inline(always)]
unsafe fn tanh_ps(x: __m256) -> __m256 {
    let sign_bit = _mm256_set1_ps(-0.0);
    let a = _mm256_andnot_ps(sign_bit, x);
    let y = _mm256_mul_ps(a, a);
    let q = horner!(_mm256_fmadd_ps, _mm256_set1_ps, y, c32::TANH_Q; 0, 1, 2, 3, 4);
    let small = _mm256_fmadd_ps(_mm256_mul_ps(a, y), q, a);
    let one = _mm256_set1_ps(1.0);
    let e = exp_ps(_mm256_add_ps(a, a));
    let large = _mm256_sub_ps(
        one,
        _mm256_div_ps(_mm256_set1_ps(2.0), _mm256_add_ps(e, one)),
    );
    let is_small = _mm256_cmp_ps::<_CMP_LT_OQ>(a, _mm256_set1_ps(c32::TANH_SMALL));
    let t = _mm256_blendv_ps(large, small, is_small);
    _mm256_or_ps(t, _mm256_and_ps(x, sign_bit))
}

#[inline(always)]
unsafe fn tanh_pd(x: __m256d) -> __m256d {
    let sign_bit = _mm256_set1_pd(-0.0);
    let a = _mm256_andnot_pd(sign_bit, x);
    let y = _mm256_mul_pd(a, a);
    let q =
        horner!(_mm256_fmadd_pd, _mm256_set1_pd, y, c64::TANH_Q; 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    let small = _mm256_fmadd_pd(_mm256_mul_pd(a, y), q, a);
    let one = _mm256_set1_pd(1.0);
    let e = exp_pd(_mm256_add_pd(a, a));
    let large = _mm256_sub_pd(
        one,
        _mm256_div_pd(_mm256_set1_pd(2.0), _mm256_add_pd(e, one)),
    );
    let is_small = _mm256_cmp_pd::<_CMP_LT_OQ>(a, _mm256_set1_pd(c64::TANH_SMALL));
    let t = _mm256_blendv_pd(large, small, is_small);
    _mm256_or_pd(t, _mm256_and_pd(x, sign_bit))
}

/// `√½` as bits: `ln` shifts the exponent so that mantissas in `[√½, √2)` share one.
const SQRT_HALF_BITS32: i32 = 0x3f35_04f3;
const SQRT_HALF_BITS64: i64 = 0x3fe6_a09e_667f_3bcd;

/// `ln x = k·ln2 + log1p(f)`, `x = 2^k·(1 + f)`, `1 + f ∈ [√½, √2)`, the AVX-512 backend's
/// polynomial. Without `vgetexp`/`vgetmant`, `k` and `1 + f` come from the bits (musl's trick:
/// adding `1.0 − √½` to the bits carries into the exponent exactly when the mantissa is `≥ √2`);
/// denormals are first scaled by `2^23` / `2^52`. Special inputs by compare and blend.
#[inline(always)]
unsafe fn ln_ps(x: __m256) -> __m256 {
    let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(c32::MIN_NORMAL));
    let xs = _mm256_blendv_ps(x, _mm256_mul_ps(x, _mm256_set1_ps(c32::DENORM_SCALE)), tiny);
    let kadj = _mm256_and_ps(tiny, _mm256_set1_ps(-c32::DENORM_BITS));
    let ix = _mm256_add_epi32(
        _mm256_castps_si256(xs),
        _mm256_set1_epi32(0x3f80_0000 - SQRT_HALF_BITS32),
    );
    let k = _mm256_sub_epi32(_mm256_srli_epi32::<23>(ix), _mm256_set1_epi32(0x7f));
    let k = _mm256_add_ps(_mm256_cvtepi32_ps(k), kadj);
    let m = _mm256_castsi256_ps(_mm256_add_epi32(
        _mm256_and_si256(ix, _mm256_set1_epi32(0x007f_ffff)),
        _mm256_set1_epi32(SQRT_HALF_BITS32),
    ));
    let f = _mm256_sub_ps(m, _mm256_set1_ps(1.0));
    let s = _mm256_div_ps(f, _mm256_add_ps(f, _mm256_set1_ps(2.0)));
    let z = _mm256_mul_ps(s, s);
    let p = horner!(_mm256_fmadd_ps, _mm256_set1_ps, z, c32::LN_P; 0, 1, 2, 3);
    let hfsq = _mm256_mul_ps(_mm256_mul_ps(f, f), _mm256_set1_ps(0.5));
    let t = _mm256_fmadd_ps(z, p, hfsq);
    let lo = _mm256_fmadd_ps(s, t, _mm256_mul_ps(k, _mm256_set1_ps(c32::LN2_LO)));
    let r = _mm256_add_ps(_mm256_sub_ps(lo, hfsq), f);
    let y = _mm256_fmadd_ps(k, _mm256_set1_ps(c32::LN2_HI), r);
    // ±0 → −inf; +inf → +inf; x < 0 (−inf included) or NaN → NaN.
    let inf = _mm256_set1_ps(f32::INFINITY);
    let zero = _mm256_setzero_ps();
    let y = _mm256_blendv_ps(
        y,
        _mm256_sub_ps(zero, inf),
        _mm256_cmp_ps::<_CMP_EQ_OQ>(x, zero),
    );
    let y = _mm256_blendv_ps(y, inf, _mm256_cmp_ps::<_CMP_EQ_OQ>(x, inf));
    _mm256_blendv_ps(
        y,
        _mm256_set1_ps(f32::NAN),
        _mm256_cmp_ps::<_CMP_NGE_UQ>(x, zero),
    )
}

#[inline(always)]
unsafe fn ln_pd(x: __m256d) -> __m256d {
    let tiny = _mm256_cmp_pd::<_CMP_LT_OQ>(x, _mm256_set1_pd(c64::MIN_NORMAL));
    let xs = _mm256_blendv_pd(x, _mm256_mul_pd(x, _mm256_set1_pd(c64::DENORM_SCALE)), tiny);
    let kadj = _mm256_and_pd(tiny, _mm256_set1_pd(-c64::DENORM_BITS));
    let ix = _mm256_add_epi64(
        _mm256_castpd_si256(xs),
        _mm256_set1_epi64x(0x3ff0_0000_0000_0000 - SQRT_HALF_BITS64),
    );
    // No int64 -> double conversion in AVX2: the biased exponent e (< 2^12) goes into the low
    // mantissa bits of 2^52, and `(2^52 + e) − (2^52 + 1023)` is exact.
    let e = _mm256_srli_epi64::<52>(ix);
    let two52 = _mm256_set1_pd(4_503_599_627_370_496.0);
    let k = _mm256_sub_pd(
        _mm256_castsi256_pd(_mm256_or_si256(e, _mm256_castpd_si256(two52))),
        _mm256_set1_pd(4_503_599_627_371_519.0), // 2^52 + 1023
    );
    let k = _mm256_add_pd(k, kadj);
    let m = _mm256_castsi256_pd(_mm256_add_epi64(
        _mm256_and_si256(ix, _mm256_set1_epi64x(0x000f_ffff_ffff_ffff)),
        _mm256_set1_epi64x(SQRT_HALF_BITS64),
    ));
    let f = _mm256_sub_pd(m, _mm256_set1_pd(1.0));
    let s = _mm256_div_pd(f, _mm256_add_pd(f, _mm256_set1_pd(2.0)));
    let z = _mm256_mul_pd(s, s);
    let p = horner!(_mm256_fmadd_pd, _mm256_set1_pd, z, c64::LN_P; 0, 1, 2, 3, 4, 5, 6);
    let hfsq = _mm256_mul_pd(_mm256_mul_pd(f, f), _mm256_set1_pd(0.5));
    let t = _mm256_fmadd_pd(z, p, hfsq);
    let lo = _mm256_fmadd_pd(s, t, _mm256_mul_pd(k, _mm256_set1_pd(c64::LN2_LO)));
    let r = _mm256_add_pd(_mm256_sub_pd(lo, hfsq), f);
    let y = _mm256_fmadd_pd(k, _mm256_set1_pd(c64::LN2_HI), r);
    let inf = _mm256_set1_pd(f64::INFINITY);
    let zero = _mm256_setzero_pd();
    let y = _mm256_blendv_pd(
        y,
        _mm256_sub_pd(zero, inf),
        _mm256_cmp_pd::<_CMP_EQ_OQ>(x, zero),
    );
    let y = _mm256_blendv_pd(y, inf, _mm256_cmp_pd::<_CMP_EQ_OQ>(x, inf));
    _mm256_blendv_pd(
        y,
        _mm256_set1_pd(f64::NAN),
        _mm256_cmp_pd::<_CMP_NGE_UQ>(x, zero),
    )
}

/// 8 × 8 `f32` transpose: 32-bit unpacks and 64-bit shuffles make 4 × 4 blocks inside each
/// 128-bit lane, then the lanes are swapped across vectors (24 shuffles for 64 elements).
#[inline(always)]
unsafe fn transpose_ps(v: &mut [__m256; 8]) {
    let mut u = [_mm256_setzero_ps(); 8];
    for g in 0..2 {
        let r = &v[4 * g..4 * g + 4];
        let (t0, t1) = (
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
        );
        let (t2, t3) = (
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
        );
        // u[4g + c], 128-bit lane k: rows 4g..4g+3 of column 4k + c.
        u[4 * g] = _mm256_shuffle_ps::<0x44>(t0, t2);
        u[4 * g + 1] = _mm256_shuffle_ps::<0xEE>(t0, t2);
        u[4 * g + 2] = _mm256_shuffle_ps::<0x44>(t1, t3);
        u[4 * g + 3] = _mm256_shuffle_ps::<0xEE>(t1, t3);
    }
    for c in 0..4 {
        v[c] = _mm256_permute2f128_ps::<0x20>(u[c], u[4 + c]);
        v[4 + c] = _mm256_permute2f128_ps::<0x31>(u[c], u[4 + c]);
    }
}

/// 4 × 4 `f64` transpose: 64-bit unpacks make 2 × 2 blocks inside each 128-bit lane, then the
/// lanes are swapped across vectors.
#[inline(always)]
unsafe fn transpose_pd(v: &mut [__m256d; 4]) {
    let (t0, t1) = (
        _mm256_unpacklo_pd(v[0], v[1]),
        _mm256_unpackhi_pd(v[0], v[1]),
    );
    let (t2, t3) = (
        _mm256_unpacklo_pd(v[2], v[3]),
        _mm256_unpackhi_pd(v[2], v[3]),
    );
    v[0] = _mm256_permute2f128_pd::<0x20>(t0, t2);
    v[1] = _mm256_permute2f128_pd::<0x20>(t1, t3);
    v[2] = _mm256_permute2f128_pd::<0x31>(t0, t2);
    v[3] = _mm256_permute2f128_pd::<0x31>(t1, t3);
}

// SAFETY: the token proves the CPU has AVX2 and FMA; full loads/stores slice to `LANES` first
// (bounds-checked), partial ones use `vmaskmov` with every lane at or past `len` masked off, and
// masked-off lanes are never accessed (no fault, no write).
unsafe impl Simd<f32> for Avx2 {
    // `max` is `vmaxps`: it returns `b` when either lane is NaN.
    super::simd_basics!(f32, __m256, 8;
        splat: _mm256_set1_ps, load: _mm256_loadu_ps, store: _mm256_storeu_ps,
        mul_add: _mm256_fmadd_ps;
        binary: add _mm256_add_ps, sub _mm256_sub_ps, mul _mm256_mul_ps,
            div _mm256_div_ps, max _mm256_max_ps;
        unary: exp exp_ps, tanh tanh_ps, ln ln_ps);

    const TRANSPOSES: bool = true;
    #[inline(always)]
    fn transpose(self, v: &mut [__m256; super::MAX_LANES]) {
        let head: &mut [__m256; 8] = (&mut v[..8]).try_into().unwrap();
        unsafe { transpose_ps(head) }
    }
    #[inline(always)]
    fn load_partial(self, x: &[f32], fill: f32) -> __m256 {
        unsafe {
            let m = mask32(x.len());
            let v = _mm256_maskload_ps(x.as_ptr(), m);
            _mm256_blendv_ps(_mm256_set1_ps(fill), v, _mm256_castsi256_ps(m))
        }
    }
    #[inline(always)]
    fn store_partial(self, out: &mut [f32], v: __m256) {
        unsafe { _mm256_maskstore_ps(out.as_mut_ptr(), mask32(out.len()), v) }
    }
    #[inline(always)]
    fn select_eq(self, a: __m256, b: __m256, x: __m256, y: __m256) -> __m256 {
        unsafe { _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b)) }
    }
    #[inline(always)]
    fn reduce_max(self, v: __m256) -> f32 {
        unsafe {
            let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
        }
    }
    #[inline(always)]
    fn load_strided(self, x: &[f32], stride: usize) -> __m256 {
        assert!(x.len() > 7 * stride && stride <= (i32::MAX / 8) as usize);
        // SAFETY: every index i·stride (i < 8) is inside `x`, checked above.
        unsafe {
            let idx = _mm256_mullo_epi32(
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                _mm256_set1_epi32(stride as i32),
            );
            _mm256_i32gather_ps::<4>(x.as_ptr(), idx)
        }
    }
    #[inline(always)]
    fn reduce_sum(self, v: __m256) -> f32 {
        unsafe {
            let m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let m = _mm_add_ps(m, _mm_movehl_ps(m, m));
            _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)))
        }
    }
}

// SAFETY: as for `f32` above.
unsafe impl Simd<f64> for Avx2 {
    super::simd_basics!(f64, __m256d, 4;
        splat: _mm256_set1_pd, load: _mm256_loadu_pd, store: _mm256_storeu_pd,
        mul_add: _mm256_fmadd_pd;
        binary: add _mm256_add_pd, sub _mm256_sub_pd, mul _mm256_mul_pd,
            div _mm256_div_pd, max _mm256_max_pd;
        unary: exp exp_pd, tanh tanh_pd, ln ln_pd);

    const TRANSPOSES: bool = true;
    #[inline(always)]
    fn transpose(self, v: &mut [__m256d; super::MAX_LANES]) {
        let head: &mut [__m256d; 4] = (&mut v[..4]).try_into().unwrap();
        unsafe { transpose_pd(head) }
    }
    #[inline(always)]
    fn load_partial(self, x: &[f64], fill: f64) -> __m256d {
        unsafe {
            let m = mask64(x.len());
            let v = _mm256_maskload_pd(x.as_ptr(), m);
            _mm256_blendv_pd(_mm256_set1_pd(fill), v, _mm256_castsi256_pd(m))
        }
    }
    #[inline(always)]
    fn store_partial(self, out: &mut [f64], v: __m256d) {
        unsafe { _mm256_maskstore_pd(out.as_mut_ptr(), mask64(out.len()), v) }
    }
    #[inline(always)]
    fn select_eq(self, a: __m256d, b: __m256d, x: __m256d, y: __m256d) -> __m256d {
        unsafe { _mm256_blendv_pd(y, x, _mm256_cmp_pd::<_CMP_EQ_OQ>(a, b)) }
    }
    #[inline(always)]
    fn reduce_max(self, v: __m256d) -> f64 {
        unsafe {
            let m = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
            _mm_cvtsd_f64(_mm_max_sd(m, _mm_unpackhi_pd(m, m)))
        }
    }
    #[inline(always)]
    fn load_strided(self, x: &[f64], stride: usize) -> __m256d {
        assert!(x.len() > 3 * stride && stride <= (i32::MAX / 4) as usize);
        // SAFETY: every index i·stride (i < 4) is inside `x`, checked above.
        unsafe {
            let idx = _mm_mullo_epi32(_mm_setr_epi32(0, 1, 2, 3), _mm_set1_epi32(stride as i32));
            _mm256_i32gather_pd::<8>(x.as_ptr(), idx)
        }
    }
    #[inline(always)]
    fn reduce_sum(self, v: __m256d) -> f64 {
        unsafe {
            let m = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
            _mm_cvtsd_f64(_mm_add_sd(m, _mm_unpackhi_pd(m, m)))
        }
    }
}
