//! The element-wise maps applied to a row before the softmax ([`Pre`]): the identity [`One`], a
//! temperature or softmin [`Scale`], and the soft cap [`SoftCap`], each with what the kernels need
//! to keep their accuracy (the map's rounding error, its derivative).

use crate::simd::{Element, Simd};

/// The element-wise map applied to a row before the softmax: `x * scale` (temperature, softmin) or
/// the soft cap `c * tanh(x / c)`.
pub(crate) trait Pre<T: Element, S: Simd<T>>: Copy {
    fn apply(&self, s: S, v: S::V) -> S::V;
    fn apply_scalar(&self, x: T) -> T;
    /// An input that `apply` maps to `-inf`, if there is one (tails are filled with it).
    fn preimage_of_neg_inf(&self) -> Option<T>;
    /// Whether `apply` rounds (then [`Pre::apply_err`] gives the rounding error, which the softmax
    /// carries into its exponent: `x · (1/T)` rounded loses up to half an ulp of `|x/T|`, i.e. up
    /// to 4e-6 relative in `exp(x/T - m)` at `|x/T| ≈ 64` in float32).
    const ROUNDS: bool = false;
    /// `apply(v)` minus its rounded value `y`, exactly (zero for a map that does not round).
    #[inline(always)]
    fn apply_err(&self, s: S, _v: S::V, _y: S::V) -> S::V {
        s.splat(T::ZERO)
    }
    /// `apply(v) - m` (`neg_m = -m`) rounded once: the scaled difference a softmax exponentiates.
    #[inline(always)]
    fn sub_max(&self, s: S, v: S::V, neg_m: S::V) -> S::V {
        s.add(self.apply(s, v), neg_m)
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

/// `x · scale`: a temperature `1/T`, or `-1/T` for softmin, in the element type.
#[derive(Clone, Copy)]
pub(crate) struct Scale<T> {
    pub hi: T,
}

impl<T: Element> Scale<T> {
    /// A scale that `T` holds exactly.
    pub(crate) fn exact(hi: T) -> Self {
        Scale { hi }
    }
    /// A float64 scale rounded to `T`. Its low part is NOT carried: `x·lo` would have to be
    /// measured against the row maximum's own `x·lo` (against `x·hi` alone it shifted every
    /// difference by hundreds for `|x|` near 1e10 in float32 and the row underflowed). That carry
    /// is the open accuracy item for temperatures whose `1/T` the element type cannot hold.
    pub(crate) fn of(scale: f64) -> Self {
        Scale::exact(T::from_f64(scale))
    }
    /// The scale in float64.
    pub(crate) fn to_f64(self) -> f64 {
        self.hi.to_f64()
    }
}

/// Whether a scale is exactly 1 (the identity map [`One`] then replaces [`Scale`]).
#[inline(always)]
pub(crate) fn is_one<T: Element>(scale: Scale<T>) -> bool {
    scale.hi == T::ONE
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

impl<T: Element, S: Simd<T>> Pre<T, S> for Scale<T> {
    #[inline(always)]
    fn apply(&self, s: S, v: S::V) -> S::V {
        s.mul(v, s.splat(self.hi))
    }
    #[inline(always)]
    fn apply_scalar(&self, x: T) -> T {
        x * self.hi
    }
    // The product's rounding error is not carried (`ROUNDS` stays false): the residual
    // `fma(x, s, -m)` is exact but up to half an ulp of `|x·s|` in absolute terms (512 at 1e10 in
    // float32), which overflowed `exp` for large inputs. A temperature's accuracy is an open item.
    #[inline(always)]
    fn preimage_of_neg_inf(&self) -> Option<T> {
        Some(if self.hi > T::ZERO {
            T::NEG_INFINITY
        } else {
            T::INFINITY
        })
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
