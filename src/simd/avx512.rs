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

use super::{avx2, math, MAX_LANES};

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

/// Lane mask `i < n` (16 lanes; the low 8 bits for 8).
#[inline(always)]
fn mask(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

/// `vfixupimm` table for `ln`, 4 bits per input class (QNaN, SNaN, 0, +1, −inf, +inf, < 0, > 0):
/// NaN → quiet NaN of the input, ±0 → −inf, +1 → +0, −inf and negatives → default NaN, +inf → +inf,
/// positive (denormals included) → the computed value.
const LN_FIXUP: i32 = 0x0353_8422;

// `exp`, `tanh` and `ln` (math.rs) on AVX-512: `2^n` by `vscalef`, the exponent and mantissa by
// `vgetexp`/`vgetmant` (which normalise denormals), special inputs by `vfixupimm`.
super::math::vec_math! {
    Avx512, __m512, __m512d;
    min |a, b| _mm512_min_ps(a, b); _mm512_min_pd(a, b),
    round |a| _mm512_roundscale_ps::<ROUND_NEAREST>(a); _mm512_roundscale_pd::<ROUND_NEAREST>(a),
    abs |a| _mm512_abs_ps(a); _mm512_abs_pd(a),
    copysign |t, x| _mm512_or_ps(t, _mm512_and_ps(x, _mm512_set1_ps(-0.0)));
        _mm512_or_pd(t, _mm512_and_pd(x, _mm512_set1_pd(-0.0))),
    select_lt |a, b, x, y| _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b), y, x);
        _mm512_mask_blend_pd(_mm512_cmp_pd_mask::<_CMP_LT_OQ>(a, b), y, x),
    select_ge |a, b, x, y| _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GE_OQ>(a, b), y, x);
        _mm512_mask_blend_pd(_mm512_cmp_pd_mask::<_CMP_GE_OQ>(a, b), y, x);
    ldexp |_, p, n| _mm512_scalef_ps(p, n); _mm512_scalef_pd(p, n),
    ln_split |s, x| math::ln_fold::<f32, _>(s,
            _mm512_getmant_ps::<_MM_MANT_NORM_1_2, _MM_MANT_SIGN_SRC>(x), _mm512_getexp_ps(x));
        math::ln_fold::<f64, _>(s,
            _mm512_getmant_pd::<_MM_MANT_NORM_1_2, _MM_MANT_SIGN_SRC>(x), _mm512_getexp_pd(x)),
    ln_special |_, x, y| _mm512_fixupimm_ps::<0>(y, x, _mm512_set1_epi32(LN_FIXUP));
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

/// 16 × 16 `f32` transpose: 4 × 4 blocks inside each 128-bit lane (as AVX2), then the lanes are transposed across vectors (64 shuffles for 256 elements).
#[inline(always)]
unsafe fn transpose_ps(v: &mut [__m512; 16]) {
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        // u[4g + c], 128-bit lane k: rows 4g..4g+3 of column 4k + c.
        u[4 * g..4 * g + 4].copy_from_slice(&avx2::transpose_in_lanes!(&v[4 * g..4 * g + 4];
            _mm512_unpacklo_ps, _mm512_unpackhi_ps, unpack_pd::<false>, unpack_pd::<true>));
    }
    for c in 0..4 {
        let cols = transpose_lanes(u[c], u[4 + c], u[8 + c], u[12 + c]);
        for (k, col) in cols.into_iter().enumerate() {
            v[4 * k + c] = col;
        }
    }
}

/// 8 × 8 `f64` transpose of `v[..8]`: 64-bit unpacks make 2 × 2 blocks inside each 128-bit lane, then the
/// lanes are transposed across vectors (24 shuffles for 64 elements).
#[inline(always)]
unsafe fn transpose_pd(v: &mut [__m512d; MAX_LANES]) {
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

/// Rows of at most this many columns take the short tile path: the tile's rows are `c` whole
/// vectors, and each column gathers its lanes from `c/2` pairs of them (a two-source permute per
/// pair, blended), against the 16 × 16 transpose (64 shuffles) and 16 masked row loads of the
/// general path. At 8 columns that is 7 permutes and blends a column; measured on Zen 4 (1 thread,
/// in cache, softmax ns per element) 2 columns 2.78 -> 0.56, 5 columns 1.05 -> 0.68, 8 columns
/// 0.74 -> 0.68. Past 8 the permutes cost about as much as the transpose.
const SHORT_COLS: usize = 8;

/// The vector pairs a short tile's column draws on.
const PAIRS: usize = SHORT_COLS / 2;

/// Permute indices and lane masks of the short tile path, for `lanes` lanes and `c` columns: in
/// `IN`, column `j` from vector pair `p` (lane `r` is element `r·c + j` of the tile); in `OUT`,
/// output vector `v` from column pair `p` (lane `i` is element `v·lanes + i`, at column
/// `(v·lanes + i) mod c` of row `(v·lanes + i) / c`). Indices address the pair's `2·lanes` lanes.
type Perms = [[[([u32; 16], u16); PAIRS]; SHORT_COLS]; SHORT_COLS + 1];

const fn perms(lanes: usize, out: bool) -> Perms {
    let mut t = [[[([0u32; 16], 0u16); PAIRS]; SHORT_COLS]; SHORT_COLS + 1];
    let mut c = 1;
    while c <= SHORT_COLS {
        let mut v = 0;
        while v < c {
            let mut i = 0;
            while i < lanes {
                // Where lane `i` of column (or output vector) `v` comes from: pair and lane.
                let (pair, lane) = if out {
                    let e = v * lanes + i;
                    ((e % c) / 2, (e % c) % 2 * lanes + e / c)
                } else {
                    let e = i * c + v;
                    (e / (2 * lanes), e % (2 * lanes))
                };
                t[c][v][pair].0[i] = lane as u32;
                t[c][v][pair].1 |= 1 << i;
                i += 1;
            }
            v += 1;
        }
        c += 1;
    }
    t
}

static IN_PS: Perms = perms(16, false);
static OUT_PS: Perms = perms(16, true);
static IN_PD: Perms = perms(8, false);
static OUT_PD: Perms = perms(8, true);

/// The short tile path's two directions for one element type: `C` vectors in, `C` vectors out,
/// each from a two-source permute per vector pair, blended.
macro_rules! short_tiles {
    ($t:ty, $v:ty, $lanes:literal, $idx:ident, $perm:ident, $blend:ident, $mask:ty,
     $load:ident, $store:ident, $mul:ident, $zero:ident, $in_tab:ident, $out_tab:ident) => {
        /// `C` vectors of `src` to `C` of `dst` by `tab[C]` (`src` holds `C` vectors).
        #[inline(always)]
        unsafe fn permute_tile<const C: usize>(
            src: *const $t,
            dst: *mut $t,
            tab: &Perms,
            scale: Option<$v>,
        ) {
            let mut v = [$zero(); SHORT_COLS];
            for (k, vk) in v[..C].iter_mut().enumerate() {
                let x = $load(src.add(k * $lanes));
                *vk = match scale {
                    Some(s) => $mul(x, s),
                    None => x,
                };
            }
            for (k, pairs) in tab[C][..C].iter().enumerate() {
                let mut y = $perm(v[0], $idx(&pairs[0].0), v[1]);
                for (p, (idx, mask)) in pairs[..C.div_ceil(2)].iter().enumerate().skip(1) {
                    y = $blend(*mask as $mask, y, $perm(v[2 * p], $idx(idx), v[2 * p + 1]));
                }
                $store(dst.add(k * $lanes), y);
            }
        }

        /// [`Simd::tile_in_short`] / [`Simd::tile_out_short`] (`out`): `false` past `SHORT_COLS`.
        #[inline(always)]
        pub(super) unsafe fn short(
            src: &[$t],
            cols: usize,
            dst: &mut [$t],
            out: bool,
            k: Option<$v>,
        ) -> bool {
            // Both hold the tile's `cols` vectors (the trait's callers check it too).
            assert!(src.len() >= cols * $lanes && dst.len() >= cols * $lanes);
            let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
            let tab = if out { &$out_tab } else { &$in_tab };
            match cols {
                1 => permute_tile::<1>(s, d, tab, k),
                2 => permute_tile::<2>(s, d, tab, k),
                3 => permute_tile::<3>(s, d, tab, k),
                4 => permute_tile::<4>(s, d, tab, k),
                5 => permute_tile::<5>(s, d, tab, k),
                6 => permute_tile::<6>(s, d, tab, k),
                7 => permute_tile::<7>(s, d, tab, k),
                8 => permute_tile::<8>(s, d, tab, k),
                _ => return false,
            }
            true
        }
    };
}

mod short_ps {
    use super::*;
    #[inline(always)]
    unsafe fn idx(i: &[u32; 16]) -> __m512i {
        _mm512_loadu_si512(i.as_ptr().cast())
    }
    short_tiles!(
        f32,
        __m512,
        16,
        idx,
        _mm512_permutex2var_ps,
        _mm512_mask_blend_ps,
        __mmask16,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_mul_ps,
        _mm512_setzero_ps,
        IN_PS,
        OUT_PS
    );
}

mod short_pd {
    use super::*;
    #[inline(always)]
    unsafe fn idx(i: &[u32; 16]) -> __m512i {
        _mm512_cvtepu32_epi64(_mm256_loadu_si256(i.as_ptr().cast()))
    }
    short_tiles!(
        f64,
        __m512d,
        8,
        idx,
        _mm512_permutex2var_pd,
        _mm512_mask_blend_pd,
        __mmask8,
        _mm512_loadu_pd,
        _mm512_storeu_pd,
        _mm512_mul_pd,
        _mm512_setzero_pd,
        IN_PD,
        OUT_PD
    );
}

// `max` is `vmaxps`: it returns `b` when either lane is NaN. Partial loads and stores mask off
// every lane at or past `len`: masked-off lanes are never accessed (no fault, no write).
super::simd_impls! {
    Avx512; __m512, 16; __m512d, 8;
    splat _mm512_set1_ps; _mm512_set1_pd, load _mm512_loadu_ps; _mm512_loadu_pd,
    store _mm512_storeu_ps; _mm512_storeu_pd, mul_add _mm512_fmadd_ps; _mm512_fmadd_pd,
    add _mm512_add_ps; _mm512_add_pd, sub _mm512_sub_ps; _mm512_sub_pd,
    mul _mm512_mul_ps; _mm512_mul_pd, div _mm512_div_ps; _mm512_div_pd,
    max _mm512_max_ps; _mm512_max_pd;
    select_eq |a, b, x, y| _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, b), y, x);
        _mm512_mask_blend_pd(_mm512_cmp_pd_mask::<_CMP_EQ_OQ>(a, b), y, x),
    load_partial |x, fill| _mm512_mask_loadu_ps(_mm512_set1_ps(fill), mask(x.len()), x.as_ptr());
        _mm512_mask_loadu_pd(_mm512_set1_pd(fill), mask(x.len()) as __mmask8, x.as_ptr()),
    store_partial |out, v| _mm512_mask_storeu_ps(out.as_mut_ptr(), mask(out.len()), v);
        _mm512_mask_storeu_pd(out.as_mut_ptr(), mask(out.len()) as __mmask8, v),
    // Halves folded down to 256 bits, then as AVX2.
    reduce_max |v| avx2::fold_ps(_mm256_max_ps(_mm512_castps512_ps256(v),
            _mm512_extractf32x8_ps::<1>(v)), |a, b| _mm_max_ps(a, b));
        avx2::fold_pd(_mm256_max_pd(_mm512_castpd512_pd256(v),
            _mm512_extractf64x4_pd::<1>(v)), |a, b| _mm_max_pd(a, b)),
    reduce_sum |v| avx2::fold_ps(_mm256_add_ps(_mm512_castps512_ps256(v),
            _mm512_extractf32x8_ps::<1>(v)), |a, b| _mm_add_ps(a, b));
        avx2::fold_pd(_mm256_add_pd(_mm512_castpd512_pd256(v),
            _mm512_extractf64x4_pd::<1>(v)), |a, b| _mm_add_pd(a, b)),
    transpose |v| transpose_ps(v); transpose_pd(v),
    tile_in_short |x, c, o| short_ps::short(x, c, o, false, None);
        short_pd::short(x, c, o, false, None),
    tile_out_short |x, c, o, k| short_ps::short(x, c, o, true, k);
        short_pd::short(x, c, o, true, k)
}
