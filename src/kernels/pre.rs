//! The element-wise maps applied to a row before the softmax ([`Pre`]): the identity [`One`], a
//! temperature or softmin [`Scale`], and the soft cap [`SoftCap`], each with what the kernels need
//! to keep their accuracy (the exact difference to the row maximum, the map's derivative).

use crate::simd::{Element, Simd};

/// The element-wise map applied to a row before the softmax: `x · scale` (temperature, softmin) or
/// the soft cap `c · tanh(x / c)`.
///
/// The kernels find a row's maximum through [`Pre::apply`], the map's *key*: an order-preserving
/// image of `x` whose largest value sits where the mapped row is largest. For [`One`] and
/// [`SoftCap`] the key is the mapped value itself; for [`Scale`] it is `±x` (the sign of the scale,
/// exact), and the map's value at `x` is `key · factor` with the positive [`Pre::factor`]. The
/// exponents are then formed from `x` and the row's key maximum `K` ([`Peak`]), never from a
/// rounded `x · scale`.
pub(crate) trait Pre<T: Element, S: Simd<T>>: Copy {
    /// The key of `v` (see the trait's doc).
    fn apply(&self, s: S, v: S::V) -> S::V;
    fn apply_scalar(&self, x: T) -> T;
    /// An input whose key is `-inf`, if there is one (tails are filled with it).
    fn preimage_of_neg_inf(&self) -> Option<T>;
    /// The map's value is `key · factor`, the factor as float64 `hi + lo` (1 unless the map is a
    /// [`Scale`]).
    #[inline(always)]
    fn factor(&self) -> (f64, f64) {
        (1.0, 0.0)
    }
    /// The key maximum `k` of a row as the kernels use it: `±inf` where the mapped value `k · factor`
    /// overflows `T` (docs/api.md §1: `x / T` has the special values of `x · (1/T)` in the compute
    /// precision, so such a row holds an infinity).
    #[inline(always)]
    fn clamp_max(&self, k: T) -> T {
        k
    }
    /// `k · factor + v` in `T`, lane by lane: the tile path's log-sum-exp from a key maximum `k` and
    /// `v = log Σ` (the factor's `lo` is below `T`'s bounds there).
    #[inline(always)]
    fn max_plus(&self, s: S, k: S::V, v: S::V) -> S::V {
        s.add(k, v)
    }
    /// [`Pre::clamp_max`] lane by lane (the tile path's maxima, one row per lane).
    #[inline(always)]
    fn clamp_max_v(&self, _s: S, k: S::V) -> S::V {
        k
    }
    /// What the exponent formulas need of the key maximum `k` (one row's, or one per lane).
    #[inline(always)]
    fn peak(&self, s: S, k: S::V) -> Peak<S::V> {
        let neg_k = s.sub(s.splat(T::ZERO), k);
        // `neg_m` and `neg_dm` serve only a `Scale`.
        Peak {
            k,
            neg_k,
            neg_m: neg_k,
            neg_dm: s.splat(T::ZERO),
        }
    }
    /// `p(x) - max p` rounded (a few ulp): the exponent of the sums and of the log-softmax.
    #[inline(always)]
    fn sub_max(&self, s: S, v: S::V, pk: &Peak<S::V>) -> S::V {
        s.add(self.apply(s, v), pk.neg_k)
    }
    /// `p(x) - max p` as `hi + lo` to second order: the exponent of the softmax, whose 2e-6 relative
    /// bound at outputs near 1e-30 (exponents near -69) needs more than a float32's digits.
    #[inline(always)]
    fn sub_max_exact(&self, s: S, v: S::V, pk: &Peak<S::V>) -> (S::V, S::V) {
        two_sum(s, self.apply(s, v), pk.neg_k)
    }
    /// Whether `apply` has a derivative other than a constant the caller handles (the soft cap).
    const HAS_CHAIN: bool = false;
    /// `d apply / dx` expressed through the mapped value `y = apply(x)`.
    #[inline(always)]
    fn chain(&self, _s: S, y: S::V) -> S::V {
        y
    }
    #[inline(always)]
    fn chain_scalar(&self, _y: f64) -> f64 {
        1.0
    }
}

/// A row's key maximum `K` and what the exponent formulas derive from it, one vector each (every
/// lane the same row's, or one row per lane on the tile path).
#[derive(Clone, Copy)]
pub(crate) struct Peak<V> {
    /// `K`.
    pub k: V,
    /// `-K`; for a [`Scale`] `-M`, `M = sign · K` the row's extreme input (`M · s = K · |s|`).
    pub neg_k: V,
    /// `-fl(M · s)` for a [`Scale`].
    neg_m: V,
    /// `-(M · s - fl(M · s))`, exact, for a [`Scale`] (0 at `K = +inf`, NaN at `K = -inf`).
    neg_dm: V,
}

/// `a + b` as `(hi, lo)`, exactly (TwoSum): `lo` is the rounding error of `hi`.
#[inline(always)]
pub(crate) fn two_sum<T: Element, S: Simd<T>>(s: S, a: S::V, b: S::V) -> (S::V, S::V) {
    let d = s.add(a, b);
    let bb = s.sub(d, a);
    (d, s.add(s.sub(a, s.sub(d, bb)), s.sub(b, bb)))
}

/// A float64 scale `hi` and what it lost of the exact scale, `lo` (for a temperature `T`:
/// `hi = fl(±1/T)`, `lo = ±1/T - hi`). Float64 exponents of hundreds (outputs near 1e-300) need `lo`
/// for their 1e-14 relative bound; float32 needs `hi`'s rounding to float32 carried.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExactScale {
    /// The scale rounded to float64.
    pub hi: f64,
    /// The exact scale minus `hi`.
    pub lo: f64,
}

impl ExactScale {
    /// `sign / t` for a temperature `t > 0` (`sign` is 1, or -1 for softmin).
    pub fn of_temperature(t: f64, sign: f64) -> Self {
        let hi = 1.0 / t;
        // `1 - t·hi` is exact with one rounding (the residual of a reciprocal).
        let lo = (-t).mul_add(hi, 1.0) / t;
        ExactScale {
            hi: sign * hi,
            lo: if lo.is_finite() { sign * lo } else { 0.0 },
        }
    }
}

impl From<f64> for ExactScale {
    /// A scale taken as exact.
    fn from(hi: f64) -> Self {
        ExactScale { hi, lo: 0.0 }
    }
}

/// `x · scale`: a temperature `1/T`, or `-1/T` for softmin. The key is `x · sign(scale)` (exact) and
/// the factor `|scale|`, held as `hi` (rounded to `T`) and the relative remainder `rho`.
#[derive(Clone, Copy)]
pub(crate) struct Scale<T> {
    /// `±1`: the sign of the scale.
    sign: T,
    /// `|scale|` rounded to `T`.
    hi: T,
    /// `(|scale| - hi) / hi` with the exact scale: its rounding to `T` and its own `lo`, relative.
    rho: T,
    /// `sign · hi`.
    signed_hi: T,
    /// `|scale|` in float64, as `hi + lo`.
    abs: (f64, f64),
}

impl<T: Element> Scale<T> {
    /// A scale that `T` holds exactly.
    pub(crate) fn exact(scale: T) -> Self {
        Scale::of(scale.to_f64().into())
    }
    /// A float64 scale: `T` keeps its rounding in `rho` with the scale's own `lo`, which the softmax
    /// carries into its exponent (a float32 `1/T` errs by up to 3e-8 relative, 2e-6 of an exponent
    /// near -69).
    pub(crate) fn of(scale: ExactScale) -> Self {
        let neg = scale.hi < 0.0;
        let (abs, lo) = if neg {
            (-scale.hi, -scale.lo)
        } else {
            (scale.hi, scale.lo)
        };
        let hi = T::from_f64(abs);
        let rho = ((abs - hi.to_f64()) + lo) / hi.to_f64();
        let sign = if neg { -T::ONE } else { T::ONE };
        Scale {
            sign,
            hi,
            rho: T::from_f64(if rho.is_finite() { rho } else { 0.0 }),
            signed_hi: sign * hi,
            abs: (abs, lo),
        }
    }
    /// The scale in float64 (its `hi`).
    pub(crate) fn to_f64(self) -> f64 {
        self.sign.to_f64() * self.abs.0
    }
    /// `|scale|` as `hi + lo`: [`Pre::factor`] outside the instruction-set code.
    pub(crate) fn abs(self) -> (f64, f64) {
        self.abs
    }
}

/// Whether a scale is exactly 1 (the identity map [`One`] then replaces [`Scale`]).
#[inline(always)]
pub(crate) fn is_one<T: Element>(scale: Scale<T>) -> bool {
    scale.to_f64() == 1.0 && scale.abs.1 == 0.0
}

/// Evaluates `$body` with `$p` bound to the cheapest [`Pre`] for the [`Scale`] `$scale`: [`One`]
/// when the scale is 1 (no multiply; the same values, since `x · 1 = x`), else the scale. A macro
/// because the body is compiled once per map type, which a closure cannot be.
macro_rules! with_scale {
    ($scale:expr, |$p:ident| $body:expr) => {{
        let scale = $scale;
        if $crate::kernels::pre::is_one(scale) {
            let $p = $crate::kernels::pre::One;
            $body
        } else {
            let $p = scale;
            $body
        }
    }};
}
pub(crate) use with_scale;

/// The identity map: `Scale(1)` without the multiply (most calls have no temperature, and the
/// multiply is one of the ~10 instructions per vector of the `(max, sum)` pass).
#[derive(Clone, Copy)]
pub(crate) struct One;

impl<T: Element, S: Simd<T>> Pre<T, S> for One {
    #[inline(always)]
    fn apply(&self, _s: S, v: S::V) -> S::V {
        v
    }
    #[inline(always)]
    fn apply_scalar(&self, x: T) -> T {
        x
    }
    #[inline(always)]
    fn preimage_of_neg_inf(&self) -> Option<T> {
        Some(T::NEG_INFINITY)
    }
}

/// The exponent is `(x - M) · s`, `M` the row's largest input (smallest for softmin): the
/// difference first, so the exponent is 0 at `M` however large `|x|` is (a rounded `x · s` is off
/// by half an ulp of `|x · s|`, 512 at 1e10 in float32), and every product's rounding is carried.
impl<T: Element, S: Simd<T>> Pre<T, S> for Scale<T> {
    #[inline(always)]
    fn apply(&self, s: S, v: S::V) -> S::V {
        s.mul(v, s.splat(self.sign))
    }
    #[inline(always)]
    fn apply_scalar(&self, x: T) -> T {
        x * self.sign
    }
    #[inline(always)]
    fn preimage_of_neg_inf(&self) -> Option<T> {
        Some(self.sign * T::NEG_INFINITY)
    }
    #[inline(always)]
    fn factor(&self) -> (f64, f64) {
        self.abs
    }
    #[inline(always)]
    fn clamp_max(&self, k: T) -> T {
        let m = k * self.hi;
        if m == T::INFINITY || m == T::NEG_INFINITY {
            m
        } else {
            k
        }
    }
    #[inline(always)]
    fn max_plus(&self, s: S, k: S::V, v: S::V) -> S::V {
        s.mul_add(k, s.splat(self.hi), v)
    }
    #[inline(always)]
    fn clamp_max_v(&self, s: S, k: S::V) -> S::V {
        let m = s.mul(k, s.splat(self.hi));
        let (inf, ninf) = (s.splat(T::INFINITY), s.splat(T::NEG_INFINITY));
        s.select_eq(m, inf, inf, s.select_eq(m, ninf, ninf, k))
    }
    #[inline(always)]
    fn peak(&self, s: S, k: S::V) -> Peak<S::V> {
        let zero = s.splat(T::ZERO);
        let hi = s.splat(self.hi);
        let m = s.mul(k, hi);
        // `K · hi = m + dm` exactly. `K = +inf` has no error term (`x - inf` is -inf, or NaN at
        // `+inf` itself); at `K = -inf` the NaN of `fma` stays, so every exponent of a row of only
        // `-inf` keys is NaN even where `x · s` overflowed from a finite `x` (its log-softmax).
        let dm = s.fma(k, hi, s.sub(zero, m));
        let dm = s.select_eq(k, s.splat(T::INFINITY), zero, dm);
        Peak {
            k,
            // `-M = -sign · K`.
            neg_k: s.sub(zero, s.mul(k, s.splat(self.sign))),
            neg_m: s.sub(zero, m),
            neg_dm: s.sub(zero, dm),
        }
    }
    /// `fl(x · s - fl(M · s)) - (M · s - fl(M · s))`: one rounding of the exact `(x - M) · hi`, then
    /// one of a term below half an ulp of it.
    #[inline(always)]
    fn sub_max(&self, s: S, v: S::V, pk: &Peak<S::V>) -> S::V {
        s.add(s.fma(v, s.splat(self.signed_hi), pk.neg_m), pk.neg_dm)
    }
    /// `x - M = a + b` exactly (TwoSum), then `(a + b) · s = hi + lo` with `lo` the product's
    /// rounding, `b · s` and the scale's own rounding `hi · rho`, each small against `hi`.
    #[inline(always)]
    fn sub_max_exact(&self, s: S, v: S::V, pk: &Peak<S::V>) -> (S::V, S::V) {
        let sh = s.splat(self.signed_hi);
        let (a, b) = two_sum(s, v, pk.neg_k);
        let hi = s.mul(a, sh);
        let lo = s.fma(a, sh, s.sub(s.splat(T::ZERO), hi));
        let lo = s.fma(b, sh, lo);
        (hi, s.fma(hi, s.splat(self.rho), lo))
    }
}

/// Gemma 2's soft cap `c · tanh(x / c)`.
#[derive(Clone, Copy)]
pub(crate) struct SoftCap<T> {
    pub c: T,
    pub inv_c: T,
}

impl<T: Element, S: Simd<T>> Pre<T, S> for SoftCap<T> {
    #[inline(always)]
    fn apply(&self, s: S, v: S::V) -> S::V {
        s.mul(s.tanh(s.mul(v, s.splat(self.inv_c))), s.splat(self.c))
    }
    #[inline(always)]
    fn apply_scalar(&self, x: T) -> T {
        T::from_f64((x * self.inv_c).to_f64().tanh()) * self.c
    }
    #[inline(always)]
    fn preimage_of_neg_inf(&self) -> Option<T> {
        None // c·tanh is bounded below by -c.
    }
    const HAS_CHAIN: bool = true;
    /// `d/dx c·tanh(x/c) = 1 - tanh² = 1 - (y/c)²`.
    #[inline(always)]
    fn chain(&self, s: S, y: S::V) -> S::V {
        let t = s.mul(y, s.splat(self.inv_c));
        s.sub(s.splat(T::ONE), s.mul(t, t))
    }
    #[inline(always)]
    fn chain_scalar(&self, y: f64) -> f64 {
        let t = y * self.inv_c.to_f64();
        1.0 - t * t
    }
}
