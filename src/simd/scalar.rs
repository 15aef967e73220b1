//! The scalar backend: one lane, the standard library's `exp` and `tanh`. It runs everywhere and is
//! the reference the vector backends are tested against.

use super::Simd;

/// The scalar "instruction set" token; always available.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scalar;

macro_rules! scalar_impl {
    ($t:ty) => {
        // SAFETY: plain Rust arithmetic; every access is a bounds-checked slice index.
        unsafe impl Simd<$t> for Scalar {
            type V = $t;
            const LANES: usize = 1;
            // One lane: a 1 × 1 block is its own transpose, so a tile is copied as it is.
            #[inline(always)]
            fn transpose(self, _v: &mut [$t; super::MAX_LANES]) {}
            #[inline(always)]
            fn splat(self, x: $t) -> $t {
                x
            }
            #[inline(always)]
            fn load(self, x: &[$t]) -> $t {
                x[0]
            }
            #[inline(always)]
            fn load_partial(self, _x: &[$t], fill: $t) -> $t {
                // A partial load of one lane holds no elements.
                fill
            }
            #[inline(always)]
            fn store(self, out: &mut [$t], v: $t) {
                out[0] = v;
            }
            #[inline(always)]
            fn store_partial(self, _out: &mut [$t], _v: $t) {}
            #[inline(always)]
            fn add(self, a: $t, b: $t) -> $t {
                a + b
            }
            #[inline(always)]
            fn sub(self, a: $t, b: $t) -> $t {
                a - b
            }
            #[inline(always)]
            fn mul(self, a: $t, b: $t) -> $t {
                a * b
            }
            #[inline(always)]
            fn div(self, a: $t, b: $t) -> $t {
                a / b
            }
            #[inline(always)]
            fn mul_add(self, a: $t, b: $t, c: $t) -> $t {
                a * b + c
            }
            #[inline(always)]
            fn fma(self, a: $t, b: $t, c: $t) -> $t {
                a.mul_add(b, c)
            }
            #[inline(always)]
            fn max(self, a: $t, b: $t) -> $t {
                if a >= b || b.is_nan() {
                    a
                } else {
                    b
                }
            }
            #[inline(always)]
            fn select_eq(self, a: $t, b: $t, x: $t, y: $t) -> $t {
                if a == b {
                    x
                } else {
                    y
                }
            }
            #[inline(always)]
            fn exp(self, a: $t) -> $t {
                a.exp()
            }
            #[inline(always)]
            fn tanh(self, a: $t) -> $t {
                a.tanh()
            }
            #[inline(always)]
            fn reduce_max(self, v: $t) -> $t {
                v
            }
            #[inline(always)]
            fn reduce_sum(self, v: $t) -> $t {
                v
            }
        }
    };
}

scalar_impl!(f32);
scalar_impl!(f64);
