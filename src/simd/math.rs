//! The math shared by every vector backend (AVX-512, AVX2, NEON): the polynomial coefficients and
//! range constants of the vectorised `exp`, `tanh` and `ln`, and Horner's scheme that evaluates the
//! polynomials, so each is written once.

/// Horner's scheme `c[i0] + x·(c[i1] + x·(…))`, unrolled at compile time with the backend's fused
/// multiply-add `$fma(a, b, c) = a·b + c` and broadcast `$splat`; `$x` must be a variable.
macro_rules! horner {
    ($fma:ident, $splat:ident, $x:ident, $c:expr; $i:literal) => {
        $splat($c[$i])
    };
    ($fma:ident, $splat:ident, $x:ident, $c:expr; $i:literal, $($rest:literal),+) => {
        $fma($crate::simd::math::horner!($fma, $splat, $x, $c; $($rest),+), $x, $splat($c[$i]))
    };
}
#[allow(unused_imports)] // Unused on targets with only the scalar backend.
pub(crate) use horner;

/// The `f32` constants.
#[allow(clippy::excessive_precision, dead_code)]
pub(super) mod c32 {
    pub const CLAMP: f32 = 104.0;
    pub const LOG2E: f32 = std::f32::consts::LOG2_E;
    pub const LN2_HI: f32 = std::f32::consts::LN_2;
    pub const LN2_LO: f32 = -1.904_654_212_125_933_6e-9;
    /// `g(r) ≈ (e^r - 1 - r) / r²` on `[-ln2/2, ln2/2]`, lowest degree first.
    pub const G: [f32; 5] = [
        0.5,
        0.166_665_762_662_887_57,
        0.041_666_552_424_430_85,
        0.008_363_292_552_530_766,
        0.001_392_632_606_439_292_4,
    ];
    /// `|x|` below which `tanh` uses the odd polynomial.
    pub const TANH_SMALL: f32 = 0.625;
    /// `q(y) ≈ (tanh(√y) - √y) / y^1.5` on `[0, 0.625²]`.
    pub const TANH_Q: [f32; 5] = [
        -0.333_333_283_662_796,
        0.133_327_692_747_116_1,
        -0.053_850_878_030_061_72,
        0.020_997_030_660_510_063,
        -0.006_096_498_109_400_272,
    ];
    /// `√2`: `ln` folds mantissas at or above it down by 2, to `[√½, √2)`.
    pub const SQRT2: f32 = std::f32::consts::SQRT_2;
    /// Smallest positive normal: `ln` scales inputs below it by `2^23` (AVX2/NEON).
    pub const MIN_NORMAL: f32 = f32::MIN_POSITIVE;
    pub const DENORM_SCALE: f32 = 8_388_608.0; // 2^23
    pub const DENORM_BITS: f32 = 23.0;
    /// `P(z)`, `R(z) = z·P(z) ≈ (log1p(f) − f + f²/2) / s − f²/2`, `s = f/(2+f)`, `z = s²`, on
    /// `|s| ≤ 0.1716` (fdlibm's `logf`), lowest degree first.
    pub const LN_P: [f32; 4] = [
        0.666_666_626_930_236_8,
        0.400_009_721_517_562_87,
        0.284_987_866_878_509_5,
        0.242_790_788_412_094_12,
    ];
    /// `√½` as bits: mantissas in `[√½, √2)` share one exponent after the shift.
    pub const SQRT_HALF_BITS: i32 = 0x3f35_04f3;
}

/// The `f64` constants.
#[allow(clippy::excessive_precision, dead_code)]
pub(super) mod c64 {
    pub const CLAMP: f64 = 746.0;
    pub const LOG2E: f64 = std::f64::consts::LOG2_E;
    pub const LN2_HI: f64 = std::f64::consts::LN_2;
    pub const LN2_LO: f64 = 2.319_046_813_846_299_6e-17;
    /// `g(r) ≈ (e^r - 1 - r) / r²` on `[-ln2/2, ln2/2]`, lowest degree first.
    pub const G: [f64; 10] = [
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
    pub const TANH_SMALL: f64 = 0.625;
    /// `q(y) ≈ (tanh(√y) - √y) / y^1.5` on `[0, 0.625²]`.
    pub const TANH_Q: [f64; 11] = [
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
    pub const SQRT2: f64 = std::f64::consts::SQRT_2;
    pub const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    pub const DENORM_SCALE: f64 = 4_503_599_627_370_496.0; // 2^52
    pub const DENORM_BITS: f64 = 52.0;
    /// As `c32::LN_P` (fdlibm's `log`).
    pub const LN_P: [f64; 7] = [
        6.666_666_666_666_735_13e-1,
        3.999_999_999_940_941_908e-1,
        2.857_142_874_366_239_149e-1,
        2.222_219_843_214_978_396e-1,
        1.818_357_216_161_805_012e-1,
        1.531_383_769_920_937_332e-1,
        1.479_819_860_511_658_591e-1,
    ];
    pub const SQRT_HALF_BITS: i64 = 0x3fe6_a09e_667f_3bcd;
}
