//! The AVX2 + FMA backend: 8 × `f32` / 4 × `f64` per vector.
//!
//! `exp` uses the AVX-512 backend's Cody–Waite reduction and polynomials (same constants); without
//! `vscalef`, `2^n` is rebuilt from integers in two halves, `p · 2^⌊n/2⌋ · 2^(n-⌊n/2⌋)`, so that each
//! factor is a normal power of two and only the last multiplication rounds: overflow gives `+inf`
//! and the denormal range is rounded correctly (no flushing), down to 0. The input is clamped to
//! `±104` / `±746` first (NaN passes through), which maps `±inf` to the overflow / underflow range.
//! Partial loads and stores use `vmaskmov`, which never touches masked-off lanes.

use core::arch::x86_64::*;

use super::{math, MAX_LANES};

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

/// `p · 2^n` for `f32`: as [`math::ldexp_halves`], with the halves of `n` taken in integers.
#[inline(always)]
unsafe fn ldexp_ps(p: __m256, n: __m256) -> __m256 {
    // |n| <= 151, so both halves are in [-76, 76]: normal powers of two.
    let ni = _mm256_cvtps_epi32(n);
    let n1 = _mm256_srai_epi32::<1>(ni);
    let n2 = _mm256_sub_epi32(ni, n1);
    let bias = _mm256_set1_epi32(127);
    let s1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
    let s2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
    _mm256_mul_ps(_mm256_mul_ps(p, s1), s2)
}

/// `2^52 + 1023`: the low mantissa bits of `k + MAGIC` (an exact integer-valued double) are
/// `k + 1023`, the biased exponent of `2^k` (AVX2 has no 64-bit float <-> integer conversion).
const MAGIC: f64 = 4_503_599_627_371_519.0;

// `exp`, `tanh` and `ln` (math.rs) on AVX2: without `vscalef`, `vgetexp` and `vgetmant`, `2^n` and
// the exponent and mantissa come from the bits; 0, negatives, inf and NaN by compare and blend.
super::math::vec_math! {
    Avx2, __m256, __m256d;
    min |a, b| _mm256_min_ps(a, b); _mm256_min_pd(a, b),
    round |a| _mm256_round_ps::<ROUND_NEAREST>(a); _mm256_round_pd::<ROUND_NEAREST>(a),
    abs |a| _mm256_andnot_ps(_mm256_set1_ps(-0.0), a); _mm256_andnot_pd(_mm256_set1_pd(-0.0), a),
    copysign |t, x| _mm256_or_ps(t, _mm256_and_ps(x, _mm256_set1_ps(-0.0)));
        _mm256_or_pd(t, _mm256_and_pd(x, _mm256_set1_pd(-0.0))),
    select_lt |a, b, x, y| _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_LT_OQ>(a, b));
        _mm256_blendv_pd(y, x, _mm256_cmp_pd::<_CMP_LT_OQ>(a, b)),
    select_ge |a, b, x, y| _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_GE_OQ>(a, b));
        _mm256_blendv_pd(y, x, _mm256_cmp_pd::<_CMP_GE_OQ>(a, b));
    ldexp |s, p, n| ldexp_ps(p, n); math::ldexp_halves::<f64, _>(s, p, n),
    ln_split |s, x| math::ln_split_bits::<f32, _>(s, x); math::ln_split_bits::<f64, _>(s, x),
    ln_special |s, x, y| math::ln_special_select::<f32, _>(s, x, y);
        math::ln_special_select::<f64, _>(s, x, y);
    bits:
    floor |a| _mm256_round_ps::<ROUND_DOWN>(a); _mm256_round_pd::<ROUND_DOWN>(a),
    pow2i |k| _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(k), _mm256_set1_epi32(127))));
        _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_castpd_si256(
            _mm256_add_pd(k, _mm256_set1_pd(MAGIC))))),
    bits_add |a, b| _mm256_castsi256_ps(_mm256_add_epi32(
            _mm256_castps_si256(a), _mm256_castps_si256(b)));
        _mm256_castsi256_pd(_mm256_add_epi64(_mm256_castpd_si256(a), _mm256_castpd_si256(b))),
    bits_and |a, b| _mm256_and_ps(a, b); _mm256_and_pd(a, b),
    // For f64: `e` (< 2^12) or-ed into the low mantissa bits of 2^52, and `(2^52 + e) − 2^52`.
    exponent |a| _mm256_cvtepi32_ps(_mm256_srli_epi32::<23>(_mm256_castps_si256(a)));
        _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(
            _mm256_srli_epi64::<52>(_mm256_castpd_si256(a)),
            _mm256_castpd_si256(_mm256_set1_pd(4_503_599_627_370_496.0)))),
            _mm256_set1_pd(4_503_599_627_370_496.0))
}

/// The 4 × 4 transposes inside each 128-bit lane of four `f32` rows `$r[..4]`, for AVX2's 256-bit
/// and AVX-512's 512-bit vectors: 32-bit unpacks, then unpacks of 64-bit pairs (`$lo64`, `$hi64`).
/// Result `c`, 128-bit lane `k`: the four rows of column `4k + c`.
macro_rules! transpose_in_lanes {
    ($r:expr; $lo32:path, $hi32:path, $lo64:path, $hi64:path) => {{
        let r = $r;
        let (t0, t1) = ($lo32(r[0], r[1]), $hi32(r[0], r[1]));
        let (t2, t3) = ($lo32(r[2], r[3]), $hi32(r[2], r[3]));
        [$lo64(t0, t2), $hi64(t0, t2), $lo64(t1, t3), $hi64(t1, t3)]
    }};
}
pub(super) use transpose_in_lanes;

/// 8 × 8 `f32` transpose of `v[..8]`: 32-bit unpacks and 64-bit shuffles make 4 × 4 blocks inside
/// each 128-bit lane, then the lanes are swapped across vectors (24 shuffles for 64 elements).
#[inline(always)]
unsafe fn transpose_ps(v: &mut [__m256; MAX_LANES]) {
    let mut u = [_mm256_setzero_ps(); 8];
    for g in 0..2 {
        // u[4g + c], 128-bit lane k: rows 4g..4g+3 of column 4k + c.
        u[4 * g..4 * g + 4].copy_from_slice(&transpose_in_lanes!(&v[4 * g..4 * g + 4];
            _mm256_unpacklo_ps, _mm256_unpackhi_ps,
            _mm256_shuffle_ps::<0x44>, _mm256_shuffle_ps::<0xEE>));
    }
    for c in 0..4 {
        v[c] = _mm256_permute2f128_ps::<0x20>(u[c], u[4 + c]);
        v[4 + c] = _mm256_permute2f128_ps::<0x31>(u[c], u[4 + c]);
    }
}

/// 4 × 4 `f64` transpose of `v[..4]`: 64-bit unpacks make 2 × 2 blocks inside each 128-bit lane, then the
/// lanes are swapped across vectors.
#[inline(always)]
unsafe fn transpose_pd(v: &mut [__m256d; MAX_LANES]) {
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

/// The 8 lanes of `v` folded by `op` (max or add), halves together (the AVX-512 reductions end
/// here too).
#[inline(always)]
pub(super) unsafe fn fold_ps(v: __m256, op: impl Fn(__m128, __m128) -> __m128) -> f32 {
    let m = op(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = op(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(op(m, _mm_movehdup_ps(m)))
}

/// As [`fold_ps`], 4 × `f64`.
#[inline(always)]
pub(super) unsafe fn fold_pd(v: __m256d, op: impl Fn(__m128d, __m128d) -> __m128d) -> f64 {
    let m = op(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
    _mm_cvtsd_f64(op(m, _mm_unpackhi_pd(m, m)))
}

// `max` is `vmaxps`: it returns `b` when either lane is NaN. Partial loads and stores use
// `vmaskmov` with every lane at or past `len` masked off: masked-off lanes are never accessed (no
// fault, no write).
super::simd_impls! {
    Avx2; __m256, 8; __m256d, 4;
    splat _mm256_set1_ps; _mm256_set1_pd, load _mm256_loadu_ps; _mm256_loadu_pd,
    store _mm256_storeu_ps; _mm256_storeu_pd, mul_add _mm256_fmadd_ps; _mm256_fmadd_pd,
    add _mm256_add_ps; _mm256_add_pd, sub _mm256_sub_ps; _mm256_sub_pd,
    mul _mm256_mul_ps; _mm256_mul_pd, div _mm256_div_ps; _mm256_div_pd,
    max _mm256_max_ps; _mm256_max_pd;
    select_eq |a, b, x, y| _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b));
        _mm256_blendv_pd(y, x, _mm256_cmp_pd::<_CMP_EQ_OQ>(a, b)),
    load_partial |x, fill| {
            let m = mask32(x.len());
            let v = _mm256_maskload_ps(x.as_ptr(), m);
            _mm256_blendv_ps(_mm256_set1_ps(fill), v, _mm256_castsi256_ps(m))
        }; {
            let m = mask64(x.len());
            let v = _mm256_maskload_pd(x.as_ptr(), m);
            _mm256_blendv_pd(_mm256_set1_pd(fill), v, _mm256_castsi256_pd(m))
        },
    store_partial |out, v| _mm256_maskstore_ps(out.as_mut_ptr(), mask32(out.len()), v);
        _mm256_maskstore_pd(out.as_mut_ptr(), mask64(out.len()), v),
    reduce_max |v| fold_ps(v, |a, b| _mm_max_ps(a, b)); fold_pd(v, |a, b| _mm_max_pd(a, b)),
    reduce_sum |v| fold_ps(v, |a, b| _mm_add_ps(a, b)); fold_pd(v, |a, b| _mm_add_pd(a, b)),
    transpose |v| transpose_ps(v); transpose_pd(v)
}
