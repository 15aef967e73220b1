//! The math shared by every vector backend (AVX-512, AVX2, NEON): the vectorised `exp`, `tanh` and
//! `ln`, written once over [`Simd`] and the few per-backend primitives of [`VecMath`] / [`Bits`],
//! with their polynomial coefficients and range constants ([`Consts`]).
//!
//! `exp` is Cody–Waite: `n = round(x·log2 e)`, `r = x - n·ln2_hi - n·ln2_lo` (two FMAs), `e^r` by a
//! minimax polynomial `1 + r + r²·g(r)`, and `2^n` applied by [`VecMath::ldexp`], which rounds once:
//! overflow gives `+inf`, the denormal range is rounded correctly, no flushing. The input is first
//! clamped to `±104` (`f32`) / `±746` (`f64`) so that `±inf` maps into the overflow / underflow
//! range; NaN passes the clamp (x86's `vmax`/`vmin` return their second operand when either is NaN,
//! NEON's propagate it).
//!
//! `ln` is fdlibm's: `x = 2^k·m`, `m ∈ [√½, √2)` ([`VecMath::ln_split`]), `f = m − 1`,
//! `log1p(f) = f − f²/2 + s·(f²/2 + z·P(z))`, `s = f/(2+f)`, `z = s²`, `k·ln2_hi` added last by an
//! FMA; 0, negatives, inf and NaN by [`VecMath::ln_special`].

use super::{Element, Simd};

/// The per-element-type constants of `exp`, `tanh` and `ln`.
pub(super) trait Consts: Element {
    const CLAMP: Self;
    const LOG2E: Self;
    const LN2_HI: Self;
    const LN2_LO: Self;
    /// `g(r) ≈ (e^r - 1 - r) / r²` on `[-ln2/2, ln2/2]`, lowest degree first.
    const G: &'static [Self];
    /// `|x|` below which `tanh` uses the odd polynomial.
    const TANH_SMALL: Self;
    /// `q(y) ≈ (tanh(√y) - √y) / y^1.5` on `[0, 0.625²]`.
    const TANH_Q: &'static [Self];
    /// `√2`: `ln` folds mantissas at or above it down by 2, to `[√½, √2)` (AVX-512).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    const SQRT2: Self;
    /// Smallest positive normal: the bit-level `ln` scales inputs below it by `DENORM_SCALE`
    /// (`2^DENORM_BITS`, the mantissa width) first.
    const MIN_NORMAL: Self;
    const DENORM_SCALE: Self;
    const DENORM_BITS: Self;
    /// `P(z)`, `R(z) = z·P(z) ≈ (log1p(f) − f + f²/2) / s − f²/2`, `s = f/(2+f)`, `z = s²`, on
    /// `|s| ≤ 0.1716` (fdlibm's `logf` / `log`), lowest degree first.
    const LN_P: &'static [Self];
    /// The exponent bias.
    const BIAS: Self;
    /// The bits of `1.0` minus those of `√½`: added to the bits of `x`, they carry into the
    /// exponent exactly when the mantissa is `≥ √2` (musl's trick).
    const ONE_MINUS_SQRT_HALF_BITS: Self;
    /// The bits of `√½`: mantissas in `[√½, √2)` share its exponent.
    const SQRT_HALF_BITS: Self;
    /// The mantissa field, as a float with those bits.
    const MANT_MASK: Self;
}

/// Per-backend operations of the vectorised math beyond [`Simd`].
pub(super) trait VecMath<T: Consts>: Simd<T> {
    /// Lane-wise minimum; when either lane is NaN, `b` (x86) or NaN (NEON).
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// Rounds to the nearest integer, ties to even.
    fn round(self, a: Self::V) -> Self::V;
    fn abs(self, a: Self::V) -> Self::V;
    /// `t` (sign bit clear) with the sign of `x`.
    fn copysign(self, t: Self::V, x: Self::V) -> Self::V;
    /// `a < b ? x : y` lane-wise (false when either is NaN).
    fn select_lt(self, a: Self::V, b: Self::V, x: Self::V, y: Self::V) -> Self::V;
    /// `a >= b ? x : y` lane-wise (false when either is NaN).
    fn select_ge(self, a: Self::V, b: Self::V, x: Self::V, y: Self::V) -> Self::V;
    /// `p · 2^n` for integral `n` in `exp`'s range, rounded once.
    fn ldexp(self, p: Self::V, n: Self::V) -> Self::V;
    /// `(m, k)` with `x = 2^k·m`, `m ∈ [√½, √2)`, for positive finite `x` (other lanes: anything).
    fn ln_split(self, x: Self::V) -> (Self::V, Self::V);
    /// `y` where `x` is positive and finite, else `ln x`: ±0 → −inf, +inf → +inf, x < 0 or NaN → NaN.
    fn ln_special(self, x: Self::V, y: Self::V) -> Self::V;
}

/// Integer operations on the bits of the lanes, for the backends without `vscalef`, `vgetexp`
/// and `vgetmant` (AVX2, NEON): they build [`VecMath::ldexp`], [`VecMath::ln_split`] and
/// [`VecMath::ln_special`] from [`ldexp_halves`], [`ln_split_bits`] and [`ln_special_select`].
pub(super) trait Bits<T: Consts>: VecMath<T> {
    /// Rounds toward −inf.
    fn floor(self, a: Self::V) -> Self::V;
    /// `2^k` for integral `k` in the normal exponent range.
    fn pow2i(self, k: Self::V) -> Self::V;
    /// The lanes' bits added as integers.
    fn bits_add(self, a: Self::V, b: Self::V) -> Self::V;
    /// The lanes' bits and-ed.
    fn bits_and(self, a: Self::V, b: Self::V) -> Self::V;
    /// The bits above the mantissa, as an integer-valued float (the biased exponent when the sign
    /// bit is clear).
    fn exponent(self, a: Self::V) -> Self::V;
}

/// Horner's scheme `c[0] + x·(c[1] + x·(…))` with fused multiply-adds (a constant slice: the loop
/// unrolls).
#[inline(always)]
fn horner<T: Element, S: Simd<T>>(s: S, x: S::V, c: &[T]) -> S::V {
    // A loop, not a closure: a closure is compiled without the backend's target features, so
    // the intrinsics inside it would not inline.
    let (last, rest) = c.split_last().expect("a polynomial has a coefficient");
    let mut acc = s.splat(*last);
    for &ci in rest.iter().rev() {
        acc = s.fma(acc, x, s.splat(ci));
    }
    acc
}

/// `e^x` lane-wise; `-inf -> 0`, `+inf -> +inf`, NaN -> NaN.
#[inline(always)]
pub(super) fn exp<T: Consts, S: VecMath<T>>(s: S, x: S::V) -> S::V {
    let x = s.min(s.splat(T::CLAMP), s.max(s.splat(-T::CLAMP), x));
    let n = s.round(s.mul(x, s.splat(T::LOG2E)));
    let r = s.fma(n, s.splat(-T::LN2_HI), x);
    let r = s.fma(n, s.splat(-T::LN2_LO), r);
    let g = horner(s, r, T::G);
    let one = s.splat(T::ONE);
    let p = s.fma(s.fma(g, r, one), r, one);
    s.ldexp(p, n)
}

/// `tanh`: `a + a³·q(a²)` for `a = |x| < 0.625`, else `1 - 2/(e^{2a} + 1)`; sign restored from `x`.
#[inline(always)]
pub(super) fn tanh<T: Consts, S: VecMath<T>>(s: S, x: S::V) -> S::V {
    let a = s.abs(x);
    let y = s.mul(a, a);
    let q = horner(s, y, T::TANH_Q);
    let small = s.fma(s.mul(a, y), q, a);
    let one = s.splat(T::ONE);
    let e = exp(s, s.add(a, a));
    let large = s.sub(one, s.div(s.splat(T::from_f64(2.0)), s.add(e, one)));
    let t = s.select_lt(a, s.splat(T::TANH_SMALL), small, large);
    s.copysign(t, x)
}

/// Natural log (see the module comment).
#[inline(always)]
pub(super) fn ln<T: Consts, S: VecMath<T>>(s: S, x: S::V) -> S::V {
    let (m, k) = s.ln_split(x);
    let f = s.sub(m, s.splat(T::ONE));
    let sf = s.div(f, s.add(f, s.splat(T::from_f64(2.0))));
    let z = s.mul(sf, sf);
    let p = horner(s, z, T::LN_P);
    let hfsq = s.mul(s.mul(f, f), s.splat(T::from_f64(0.5)));
    let t = s.fma(z, p, hfsq);
    let lo = s.fma(sf, t, s.mul(k, s.splat(T::LN2_LO)));
    let r = s.add(s.sub(lo, hfsq), f);
    let y = s.fma(k, s.splat(T::LN2_HI), r);
    s.ln_special(x, y)
}

/// `(m, k)` → `(m/2, k + 1)` where `m ≥ √2`: from `m ∈ [1, 2)` to `[√½, √2)`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
pub(super) fn ln_fold<T: Consts, S: VecMath<T>>(s: S, m: S::V, k: S::V) -> (S::V, S::V) {
    let sqrt2 = s.splat(T::SQRT2);
    let half = s.mul(m, s.splat(T::from_f64(0.5)));
    let k1 = s.add(k, s.splat(T::ONE));
    (s.select_ge(m, sqrt2, half, m), s.select_ge(m, sqrt2, k1, k))
}

/// `p · 2^n` as `p · 2^⌊n/2⌋ · 2^(n-⌊n/2⌋)`: each factor is a normal power of two (`|n| ≤ 151` /
/// `1077`), so only the last multiplication rounds.
#[inline(always)]
pub(super) fn ldexp_halves<T: Consts, S: Bits<T>>(s: S, p: S::V, n: S::V) -> S::V {
    let n1 = s.floor(s.mul(n, s.splat(T::from_f64(0.5))));
    let n2 = s.sub(n, n1);
    s.mul(s.mul(p, s.pow2i(n1)), s.pow2i(n2))
}

/// [`VecMath::ln_split`] from the bits: denormals scaled by `2^DENORM_BITS` first, then adding
/// `1.0 − √½` to the bits carries into the exponent exactly when the mantissa is `≥ √2`.
#[inline(always)]
pub(super) fn ln_split_bits<T: Consts, S: Bits<T>>(s: S, x: S::V) -> (S::V, S::V) {
    let min_normal = s.splat(T::MIN_NORMAL);
    let xs = s.select_lt(x, min_normal, s.mul(x, s.splat(T::DENORM_SCALE)), x);
    let kadj = s.select_lt(x, min_normal, s.splat(-T::DENORM_BITS), s.splat(T::ZERO));
    let ix = s.bits_add(xs, s.splat(T::ONE_MINUS_SQRT_HALF_BITS));
    let k = s.add(s.sub(s.exponent(ix), s.splat(T::BIAS)), kadj);
    let m = s.bits_add(
        s.bits_and(ix, s.splat(T::MANT_MASK)),
        s.splat(T::SQRT_HALF_BITS),
    );
    (m, k)
}

/// [`VecMath::ln_special`] by compare and select.
#[inline(always)]
pub(super) fn ln_special_select<T: Consts, S: VecMath<T>>(s: S, x: S::V, y: S::V) -> S::V {
    let zero = s.splat(T::ZERO);
    let inf = s.splat(T::INFINITY);
    let y = s.select_eq(x, zero, s.splat(T::NEG_INFINITY), y);
    let y = s.select_eq(x, inf, inf, y);
    s.select_ge(x, zero, y, s.splat(T::NAN))
}

#[allow(clippy::excessive_precision)]
impl Consts for f32 {
    const CLAMP: f32 = 104.0;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = std::f32::consts::LN_2;
    const LN2_LO: f32 = -1.904_654_212_125_933_6e-9;
    const G: &'static [f32] = &[
        0.5,
        0.166_665_762_662_887_57,
        0.041_666_552_424_430_85,
        0.008_363_292_552_530_766,
        0.001_392_632_606_439_292_4,
    ];
    const TANH_SMALL: f32 = 0.625;
    const TANH_Q: &'static [f32] = &[
        -0.333_333_283_662_796,
        0.133_327_692_747_116_1,
        -0.053_850_878_030_061_72,
        0.020_997_030_660_510_063,
        -0.006_096_498_109_400_272,
    ];
    const SQRT2: f32 = std::f32::consts::SQRT_2;
    const MIN_NORMAL: f32 = f32::MIN_POSITIVE;
    const DENORM_SCALE: f32 = 8_388_608.0; // 2^23
    const DENORM_BITS: f32 = 23.0;
    const LN_P: &'static [f32] = &[
        0.666_666_626_930_236_8,
        0.400_009_721_517_562_87,
        0.284_987_866_878_509_5,
        0.242_790_788_412_094_12,
    ];
    const BIAS: f32 = 127.0;
    const ONE_MINUS_SQRT_HALF_BITS: f32 = f32::from_bits(0x3f80_0000 - 0x3f35_04f3);
    const SQRT_HALF_BITS: f32 = f32::from_bits(0x3f35_04f3);
    const MANT_MASK: f32 = f32::from_bits(0x007f_ffff);
}

#[allow(clippy::excessive_precision)]
impl Consts for f64 {
    const CLAMP: f64 = 746.0;
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = std::f64::consts::LN_2;
    const LN2_LO: f64 = 2.319_046_813_846_299_6e-17;
    const G: &'static [f64] = &[
        0.500_000_000_000_000_1,
        0.166_666_666_666_666_69,
        0.041_666_666_666_623_48,
        0.008_333_333_333_330_011,
        0.001_388_888_891_753_829_6,
        0.000_198_412_698_633_032_23,
        2.480_152_079_257_269_4e-5,
        2.755_726_807_289_01e-6,
        2.762_032_742_826_824e-7,
        2.510_056_927_581_368_3e-8,
    ];
    const TANH_SMALL: f64 = 0.625;
    const TANH_Q: &'static [f64] = &[
        -0.333_333_333_333_333_2,
        0.133_333_333_333_266_52,
        -0.053_968_253_961_389_93,
        0.021_869_488_260_359_775,
        -0.008_863_229_827_368_367,
        0.003_592_058_941_176_927,
        -0.001_455_309_072_982_15,
        0.000_587_436_429_260_359_2,
        -0.000_230_774_193_592_667_42,
        7.959_705_887_788_49e-5,
        -1.724_353_061_346_532_7e-5,
    ];
    const SQRT2: f64 = std::f64::consts::SQRT_2;
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    const DENORM_SCALE: f64 = 4_503_599_627_370_496.0; // 2^52
    const DENORM_BITS: f64 = 52.0;
    const LN_P: &'static [f64] = &[
        6.666_666_666_666_735_13e-1,
        3.999_999_999_940_941_908e-1,
        2.857_142_874_366_239_149e-1,
        2.222_219_843_214_978_396e-1,
        1.818_357_216_161_805_012e-1,
        1.531_383_769_920_937_332e-1,
        1.479_819_860_511_658_591e-1,
    ];
    const BIAS: f64 = 1023.0;
    const ONE_MINUS_SQRT_HALF_BITS: f64 =
        f64::from_bits(0x3ff0_0000_0000_0000 - 0x3fe6_a09e_667f_3bcd);
    const SQRT_HALF_BITS: f64 = f64::from_bits(0x3fe6_a09e_667f_3bcd);
    const MANT_MASK: f64 = f64::from_bits(0x000f_ffff_ffff_ffff);
}

/// Implements [`VecMath`] (and, given `bits:`, [`Bits`]) for one backend, `f32` and `f64`. Each
/// member is one row, written as a closure over its vector arguments: the body for `f32`, `;`, the
/// body for `f64` (bodies may call intrinsics). `ldexp`, `ln_split` and `ln_special` name the backend
/// token first, to pass it to the generic helpers above.
macro_rules! vec_math {
    ($isa:ty, $v32:ty, $v64:ty;
     $($name:ident |$($arg:ident),+| $b32:expr; $b64:expr),+;
     ldexp |$ls:tt, $lp:ident, $ln:ident| $l32:expr; $l64:expr,
     ln_split |$ss:tt, $sx:ident| $s32:expr; $s64:expr,
     ln_special |$ps:tt, $px:ident, $py:ident| $p32:expr; $p64:expr
     $(; bits: $($bname:ident |$($barg:ident),+| $bb32:expr; $bb64:expr),+)?) => {
        $crate::simd::math::vec_math!(@one $isa, f32, $v32;
            $($name |$($arg),+| $b32),+;
            ldexp |$ls, $lp, $ln| $l32, ln_split |$ss, $sx| $s32,
            ln_special |$ps, $px, $py| $p32
            $(; bits: $($bname |$($barg),+| $bb32),+)?);
        $crate::simd::math::vec_math!(@one $isa, f64, $v64;
            $($name |$($arg),+| $b64),+;
            ldexp |$ls, $lp, $ln| $l64, ln_split |$ss, $sx| $s64,
            ln_special |$ps, $px, $py| $p64
            $(; bits: $($bname |$($barg),+| $bb64),+)?);
    };
    (@one $isa:ty, $t:ty, $v:ty;
     $($name:ident |$($arg:ident),+| $body:expr),+;
     ldexp |$ls:tt, $lp:ident, $ln:ident| $ldexp:expr,
     ln_split |$ss:tt, $sx:ident| $split:expr,
     ln_special |$ps:tt, $px:ident, $py:ident| $special:expr
     $(; bits: $($bname:ident |$($barg:ident),+| $bbody:expr),+)?) => {
        impl $crate::simd::math::VecMath<$t> for $isa {
            $(
                #[inline(always)]
                #[allow(unused_unsafe)]
                fn $name(self, $($arg: $v),+) -> $v {
                    unsafe { $body }
                }
            )+
            #[inline(always)]
            #[allow(unused_unsafe, unused_variables)]
            fn ldexp(self, $lp: $v, $ln: $v) -> $v {
                let $ls = self;
                unsafe { $ldexp }
            }
            #[inline(always)]
            #[allow(unused_unsafe)]
            fn ln_split(self, $sx: $v) -> ($v, $v) {
                let $ss = self;
                unsafe { $split }
            }
            #[inline(always)]
            #[allow(unused_unsafe)]
            fn ln_special(self, $px: $v, $py: $v) -> $v {
                let $ps = self;
                unsafe { $special }
            }
        }
        $(
            impl $crate::simd::math::Bits<$t> for $isa {
                $(
                    #[inline(always)]
                    #[allow(unused_unsafe)]
                    fn $bname(self, $($barg: $v),+) -> $v {
                        unsafe { $bbody }
                    }
                )+
            }
        )?
    };
}
#[allow(unused_imports)] // Unused on targets with only the scalar backend.
pub(crate) use vec_math;
