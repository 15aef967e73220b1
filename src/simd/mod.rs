//! The instruction-set layer.
//!
//! Kernels are written once, generic over [`Simd`]; each instruction set is a zero-sized token type
//! implementing it (`scalar::Scalar`, `avx2::Avx2`, `avx512::Avx512`, `neon::Neon`). Holding a token is
//! the proof that the CPU has the instructions: only [`Backend::token`]-style constructors that check
//! the CPU at run time make one. [`Backend::dispatch`] enters a `#[target_feature]` function for the
//! chosen set and runs a [`WithSimd`] job inside it, so every `#[inline(always)]` helper the job calls
//! is compiled for that set. Nothing is compiled with `target-cpu=native`.

use std::sync::atomic::{AtomicU8, Ordering};

/// Defines an instruction set's token type: `new()` checks the CPU at run time and is the only way
/// to make one; `run(job)` enters a `#[target_feature]` function, so the job is compiled for the set.
macro_rules! isa_token {
    ($(#[$doc:meta])* $name:ident, $features:literal, $detected:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name(());

        impl $name {
            /// Returns the token if this CPU has every instruction the backend uses.
            #[inline]
            pub fn new() -> Option<Self> {
                if $detected {
                    Some($name(()))
                } else {
                    None
                }
            }

            /// Runs `job` compiled for this instruction set.
            #[inline]
            pub fn run<W: $crate::simd::WithSimd>(self, job: W) -> W::Output {
                #[target_feature(enable = $features)]
                unsafe fn run<W: $crate::simd::WithSimd>(s: $name, job: W) -> W::Output {
                    job.with_simd(s)
                }
                // SAFETY: the token exists only if `new` found every feature `run` enables.
                unsafe { run(self, job) }
            }
        }
    };
}
#[allow(unused_imports)] // Unused on targets with only the scalar backend.
use isa_token;

/// Implements [`Simd<f32>`] and [`Simd<f64>`] for a vector backend, one row per member: the
/// `f32` function or body, `;`, the `f64` one. The first rows name one instruction-set function
/// each (which take the arguments in the trait's order); the others are closures over the member's
/// arguments. Full loads and stores slice to `LANES` first, so they are bounds-checked. `exp`,
/// `tanh` and `ln` are `math`'s, over the backend's [`math::VecMath`] primitives.
macro_rules! simd_impls {
    ($isa:ty; $v32:ty, $l32:literal; $v64:ty, $l64:literal;
     splat $sp32:path; $sp64:path, load $ld32:path; $ld64:path,
     store $st32:path; $st64:path, mul_add $fma32:path; $fma64:path,
     $($bin:ident $b32:path; $b64:path),+;
     $($name:ident |$($arg:ident),+| $e32:expr; $e64:expr),+) => {
        $crate::simd::simd_impls!(@one $isa, f32, $v32, $l32;
            $sp32, $ld32, $st32, $fma32; $($bin $b32),+; $($name |$($arg),+| $e32),+);
        $crate::simd::simd_impls!(@one $isa, f64, $v64, $l64;
            $sp64, $ld64, $st64, $fma64; $($bin $b64),+; $($name |$($arg),+| $e64),+);
    };
    (@one $isa:ty, $t:ty, $v:ty, $lanes:literal; $splat:path, $load:path, $store:path, $fma:path;
     $($bin:ident $bin_f:path),+; $($name:ident |$($arg:ident),+| $body:expr),+) => {
        // SAFETY: the token proves the CPU has the instructions; full loads and stores slice to
        // `LANES` first (bounds-checked), and the partial ones touch only the elements of their
        // slices (see the backend's rows).
        unsafe impl $crate::simd::Simd<$t> for $isa {
            type V = $v;
            const LANES: usize = $lanes;

            #[inline(always)]
            fn splat(self, x: $t) -> $v {
                unsafe { $splat(x) }
            }
            #[inline(always)]
            fn load(self, x: &[$t]) -> $v {
                let x = &x[..$lanes];
                unsafe { $load(x.as_ptr()) }
            }
            #[inline(always)]
            fn store(self, out: &mut [$t], v: $v) {
                let out = &mut out[..$lanes];
                unsafe { $store(out.as_mut_ptr(), v) }
            }
            #[inline(always)]
            fn mul_add(self, a: $v, b: $v, c: $v) -> $v {
                unsafe { $fma(a, b, c) }
            }
            $(
                #[inline(always)]
                fn $bin(self, a: $v, b: $v) -> $v {
                    unsafe { $bin_f(a, b) }
                }
            )+
            #[inline(always)]
            fn exp(self, a: $v) -> $v {
                $crate::simd::math::exp::<$t, Self>(self, a)
            }
            #[inline(always)]
            fn tanh(self, a: $v) -> $v {
                $crate::simd::math::tanh::<$t, Self>(self, a)
            }
            #[inline(always)]
            fn ln(self, a: $v) -> $v {
                $crate::simd::math::ln::<$t, Self>(self, a)
            }
            $($crate::simd::simd_impls!(@member $t, $v; $name |$($arg),+| $body);)+
        }
    };
    (@member $t:ty, $v:ty; select_eq |$a:ident, $b:ident, $x:ident, $y:ident| $e:expr) => {
        #[inline(always)]
        #[allow(unused_unsafe)]
        fn select_eq(self, $a: $v, $b: $v, $x: $v, $y: $v) -> $v {
            unsafe { $e }
        }
    };
    (@member $t:ty, $v:ty; load_partial |$x:ident, $fill:ident| $e:expr) => {
        #[inline(always)]
        #[allow(unused_unsafe)]
        fn load_partial(self, $x: &[$t], $fill: $t) -> $v {
            unsafe { $e }
        }
    };
    (@member $t:ty, $v:ty; store_partial |$out:ident, $x:ident| $e:expr) => {
        #[inline(always)]
        #[allow(unused_unsafe)]
        fn store_partial(self, $out: &mut [$t], $x: $v) {
            unsafe { $e }
        }
    };
    (@member $t:ty, $v:ty; transpose |$x:ident| $e:expr) => {
        #[inline(always)]
        #[allow(unused_unsafe)]
        fn transpose(self, $x: &mut [$v; $crate::simd::MAX_LANES]) {
            unsafe { $e }
        }
    };
    (@member $t:ty, $v:ty; tile_in_short |$x:ident, $c:ident, $o:ident| $e:expr) => {
        #[inline(always)]
        #[allow(unused_unsafe)]
        fn tile_in_short(self, $x: &[$t], $c: usize, $o: &mut [$t]) -> bool {
            unsafe { $e }
        }
    };
    (@member $t:ty, $v:ty; tile_out_short |$x:ident, $c:ident, $o:ident, $k:ident| $e:expr) => {
        #[inline(always)]
        #[allow(unused_unsafe)]
        fn tile_out_short(self, $x: &[$t], $c: usize, $o: &mut [$t], $k: Option<$v>) -> bool {
            unsafe { $e }
        }
    };
    // `reduce_max`, `reduce_sum`.
    (@member $t:ty, $v:ty; $reduce:ident |$x:ident| $e:expr) => {
        #[inline(always)]
        #[allow(unused_unsafe)]
        fn $reduce(self, $x: $v) -> $t {
            unsafe { $e }
        }
    };
}
#[allow(unused_imports)] // Unused on targets with only the scalar backend.
use simd_impls;

mod math;
pub mod scalar;

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "aarch64")]
pub mod neon;

/// A floating-point element type the kernels compute on (`f32`, `f64`).
pub trait Element:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::fmt::Debug
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    const INFINITY: Self;
    const NEG_INFINITY: Self;
    const NAN: Self;
    /// Whether `logsumexp` splits the largest term off and uses `log1p` (SciPy's refinement). Needed
    /// for float64's 1e-14 relative bound when one term dominates (`logsumexp([0, -40])`); float32's
    /// absolute bound (2e-6, docs/api.md §4) holds without it, so float32 skips the extra pass.
    const REFINE_LSE: bool;
    /// The vector type of this element on instruction set `S`.
    type Simd<S: Isa>: Simd<Self>;
    fn simd<S: Isa>(s: S) -> Self::Simd<S>;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn is_nan(self) -> bool;
    fn ln(self) -> Self;
}

macro_rules! element_impl {
    ($t:ident, $refine:expr) => {
        impl Element for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const INFINITY: Self = $t::INFINITY;
            const NEG_INFINITY: Self = $t::NEG_INFINITY;
            const NAN: Self = $t::NAN;
            const REFINE_LSE: bool = $refine;
            type Simd<S: Isa> = S;
            #[inline(always)]
            fn simd<S: Isa>(s: S) -> S {
                s
            }
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                $t::is_nan(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                $t::ln(self)
            }
        }
    };
}

element_impl!(f32, false);
element_impl!(f64, true);

/// Vectors of `T` on one instruction set. `Self` is a zero-sized token proving the CPU supports it.
///
/// # Safety
/// Implementors must only be constructible when the CPU supports their instructions, and the
/// slice-taking methods must never touch memory outside the slices they are given.
pub unsafe trait Simd<T: Element>: Copy + Send + Sync + 'static {
    type V: Copy;
    /// Elements per vector.
    const LANES: usize;

    fn splat(self, x: T) -> Self::V;
    /// Loads `x[..LANES]`. Panics if `x` is shorter (callers iterate `chunks_exact(LANES)`, so the
    /// check folds away).
    fn load(self, x: &[T]) -> Self::V;
    /// Loads `x` (shorter than `LANES`) with the other lanes set to `fill`. The default goes through
    /// a stack buffer; backends with masked loads override it.
    #[inline(always)]
    fn load_partial(self, x: &[T], fill: T) -> Self::V {
        let n = x.len().min(Self::LANES);
        let mut buf = [fill; MAX_LANES];
        buf[..n].copy_from_slice(&x[..n]);
        self.load(&buf[..Self::LANES])
    }
    /// Stores into `out[..LANES]`; panics if `out` is shorter.
    fn store(self, out: &mut [T], v: Self::V);
    /// Stores the first `out.len()` (< `LANES`) lanes. The default goes through a stack buffer;
    /// backends with masked stores override it.
    #[inline(always)]
    fn store_partial(self, out: &mut [T], v: Self::V) {
        let n = out.len().min(Self::LANES);
        let mut buf = [T::ZERO; MAX_LANES];
        self.store(&mut buf[..Self::LANES], v);
        out[..n].copy_from_slice(&buf[..n]);
    }

    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`, fused where the instruction set has it.
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane-wise maximum. When a lane holds NaN either operand may be returned: the kernels let NaN
    /// reach the sum, where it propagates, instead of relying on `max`.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a == b ? x : y` lane-wise.
    fn select_eq(self, a: Self::V, b: Self::V, x: Self::V, y: Self::V) -> Self::V;
    /// `e^a`; `-inf -> 0`, `+inf -> +inf`, NaN -> NaN; float32 within 2 ulp, float64 within 2 ulp.
    fn exp(self, a: Self::V) -> Self::V;
    /// `tanh(a)`, for the soft cap.
    fn tanh(self, a: Self::V) -> Self::V;
    /// Natural log: `ln(0) = -inf`, `ln(x < 0) = NaN`, `ln(+inf) = +inf`. The default goes lane by
    /// lane through the standard library; backends override it with a vectorised one.
    #[inline(always)]
    fn ln(self, a: Self::V) -> Self::V {
        let mut buf = [T::ZERO; MAX_LANES];
        self.store(&mut buf[..Self::LANES], a);
        for v in &mut buf[..Self::LANES] {
            *v = Element::ln(*v);
        }
        self.load(&buf[..Self::LANES])
    }
    /// Lane `i` = `x[i * stride]` (a strided load: it turns a tile of tiny rows into a column).
    /// Panics unless `x` holds `(LANES - 1) * stride + 1` elements. Element by element (the
    /// kernels transpose tiles in registers instead: [`Simd::tile_in`]).
    #[inline(always)]
    fn load_strided(self, x: &[T], stride: usize) -> Self::V {
        assert!(x.len() > (Self::LANES - 1) * stride);
        let mut buf = [T::ZERO; MAX_LANES];
        for (i, b) in buf[..Self::LANES].iter_mut().enumerate() {
            *b = x[i * stride];
        }
        self.load(&buf[..Self::LANES])
    }
    /// `out[i * stride]` = lane `i` (the inverse of [`Simd::load_strided`]). Panics unless `out` holds
    /// `(LANES - 1) * stride + 1` elements.
    #[inline(always)]
    fn store_strided(self, out: &mut [T], stride: usize, v: Self::V) {
        assert!(out.len() > (Self::LANES - 1) * stride);
        let mut buf = [T::ZERO; MAX_LANES];
        self.store(&mut buf[..Self::LANES], v);
        for (i, b) in buf[..Self::LANES].iter().enumerate() {
            out[i * stride] = *b;
        }
    }
    /// Transposes the `LANES × LANES` block held in `v[..LANES]` (vector `i` = row `i` becomes
    /// vector `j` = column `j`).
    fn transpose(self, v: &mut [Self::V; MAX_LANES]);
    /// [`Simd::tile_in`] for rows of a few columns, where the backend does it in fewer steps (the
    /// rows as `cols` whole vectors, each column picked out by lane permutes): `true` if done,
    /// `false` (nothing written) where it has no such path.
    #[inline(always)]
    fn tile_in_short(self, _tile: &[T], _cols: usize, _out: &mut [T]) -> bool {
        false
    }
    /// [`Simd::tile_out`]'s counterpart of [`Simd::tile_in_short`].
    #[inline(always)]
    fn tile_out_short(
        self,
        _cols_in: &[T],
        _cols: usize,
        _tile: &mut [T],
        _scale: Option<Self::V>,
    ) -> bool {
        false
    }
    /// A tile of `LANES` rows of `cols` elements (row-major, `tile.len() == LANES * cols`) turned
    /// into columns: `out[j * LANES + r] = tile[r * cols + j]`, so one vector holds one column.
    /// In registers, `LANES` columns at a time: `out` must hold `cols` rounded up to a multiple of
    /// `LANES` columns (the columns past `cols` get unspecified values). Panics if `out` is short.
    #[inline(always)]
    fn tile_in(self, tile: &[T], cols: usize, out: &mut [T]) {
        let l = Self::LANES;
        assert!(tile.len() == l * cols && out.len() >= l * cols.next_multiple_of(l));
        if self.tile_in_short(tile, cols, out) {
            return;
        }
        // Whole blocks of `LANES` vectors, every loop over them of constant length, so the block
        // stays in registers. Rows are reached by pointer steps: the bounds are the assert's.
        let mut v = [self.splat(T::ZERO); MAX_LANES];
        for b in (0..cols).step_by(l) {
            let w = l.min(cols - b);
            let mut row = tile[b..].as_ptr();
            for vr in v[..l].iter_mut() {
                // SAFETY: row `r` holds `w` elements from column `b` inside `tile` (asserted).
                let x = unsafe { std::slice::from_raw_parts(row, w) };
                *vr = if w == l {
                    self.load(x)
                } else {
                    self.load_partial(x, T::ZERO)
                };
                row = row.wrapping_add(cols);
            }
            self.transpose(&mut v);
            for (col, vj) in out[b * l..(b + l) * l].chunks_exact_mut(l).zip(&v[..l]) {
                self.store(col, *vj);
            }
        }
    }
    /// The inverse of [`Simd::tile_in`]: `tile[r * cols + j] = cols_in[j * LANES + r]`, with
    /// `cols_in` as long as `tile_in`'s `out` (its padding columns are read but not used); with
    /// `scale`, each column times it on the way (softmax's `1/sum`, saving a pass over the tile).
    #[inline(always)]
    fn tile_out(self, cols_in: &[T], cols: usize, tile: &mut [T], scale: Option<Self::V>) {
        let l = Self::LANES;
        assert!(tile.len() == l * cols && cols_in.len() >= l * cols.next_multiple_of(l));
        if self.tile_out_short(cols_in, cols, tile, scale) {
            return;
        }
        let mut v = [self.splat(T::ZERO); MAX_LANES];
        // Masked stores are slow, so a row is written as a whole vector wherever that stays
        // inside the tile. What such a store writes past the row's block lands on the next row's
        // first columns, which a later store writes properly: the rows go in order, and the
        // partial block (the last) goes first.
        let (blocks, last) = (cols.div_ceil(l), cols.saturating_sub(1) / l * l);
        for i in 0..blocks {
            let b = if i == 0 { last } else { (i - 1) * l };
            let w = l.min(cols - b);
            for (j, vj) in v[..l].iter_mut().enumerate() {
                let col = self.load(&cols_in[(b + j) * l..]);
                *vj = match scale {
                    Some(k) => self.mul(col, k),
                    None => col,
                };
            }
            self.transpose(&mut v);
            let mut row = tile[b..].as_mut_ptr();
            for (r, vr) in v[..l].iter().enumerate() {
                // SAFETY: row `r`'s `w` columns from `b` are inside `tile` (asserted), and so are
                // `l` elements wherever the test says so.
                if w == l || r * cols + b + l <= l * cols {
                    self.store(unsafe { std::slice::from_raw_parts_mut(row, l) }, *vr);
                } else {
                    self.store_partial(unsafe { std::slice::from_raw_parts_mut(row, w) }, *vr);
                }
                row = row.wrapping_add(cols);
            }
        }
    }
    /// `a * b + c` with one rounding, always (so `fma(a, b, -(a * b))` is the exact error of the
    /// product). The vector backends' `mul_add` is fused already; the scalar backend, whose
    /// `mul_add` is not, overrides this.
    #[inline(always)]
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        self.mul_add(a, b, c)
    }
    /// `1 / a` lane-wise (the reciprocal of a sum); the default is a division.
    #[inline(always)]
    fn recip(self, a: Self::V) -> Self::V {
        self.div(self.splat(T::ONE), a)
    }

    fn reduce_max(self, v: Self::V) -> T;
    fn reduce_sum(self, v: Self::V) -> T;
}

/// The widest vector of any backend, in elements (AVX-512 f32).
pub const MAX_LANES: usize = 16;

/// An instruction set that has vectors of both element types.
pub trait Isa: Simd<f32> + Simd<f64> {}
impl<S: Simd<f32> + Simd<f64>> Isa for S {}

/// A job that runs on whichever instruction set [`Backend::dispatch`] picks.
pub trait WithSimd {
    type Output;
    fn with_simd<S: Isa>(self, s: S) -> Self::Output;
}

/// The instruction sets, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Backend {
    Scalar = 0,
    Neon = 1,
    Avx2 = 2,
    Avx512 = 3,
}

impl Backend {
    pub const ALL: [Backend; 4] = [
        Backend::Scalar,
        Backend::Neon,
        Backend::Avx2,
        Backend::Avx512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Scalar => "scalar",
            Backend::Neon => "neon",
            Backend::Avx2 => "avx2",
            Backend::Avx512 => "avx512",
        }
    }

    pub fn from_name(name: &str) -> Option<Backend> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether this CPU can run the backend.
    pub fn is_supported(self) -> bool {
        match self {
            Backend::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => avx2::Avx2::new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => avx512::Avx512::new().is_some(),
            #[cfg(target_arch = "aarch64")]
            Backend::Neon => neon::Neon::new().is_some(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every backend this CPU supports, lowest first.
    pub fn supported() -> Vec<Backend> {
        Backend::ALL
            .into_iter()
            .filter(|b| b.is_supported())
            .collect()
    }

    /// The best backend this CPU supports.
    pub fn detect() -> Backend {
        *Backend::supported().last().unwrap_or(&Backend::Scalar)
    }

    /// Runs `job` on this instruction set. Falls back to scalar if the CPU lacks it, so a wrong
    /// `Backend` value can never execute an unsupported instruction.
    #[inline]
    pub fn dispatch<W: WithSimd>(self, job: W) -> W::Output {
        match self {
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => match avx512::Avx512::new() {
                Some(s) => s.run(job),
                None => job.with_simd(scalar::Scalar),
            },
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => match avx2::Avx2::new() {
                Some(s) => s.run(job),
                None => job.with_simd(scalar::Scalar),
            },
            #[cfg(target_arch = "aarch64")]
            Backend::Neon => match neon::Neon::new() {
                Some(s) => s.run(job),
                None => job.with_simd(scalar::Scalar),
            },
            _ => job.with_simd(scalar::Scalar),
        }
    }
}

const UNSET: u8 = u8::MAX;
static ACTIVE: AtomicU8 = AtomicU8::new(UNSET);

/// The environment variable that forces a lower instruction set (e.g. `avx2`, `scalar`).
pub const SIMD_ENV: &str = "FASTSOFTMAX_SIMD";

fn from_u8(v: u8) -> Backend {
    Backend::ALL
        .into_iter()
        .find(|b| *b as u8 == v)
        .unwrap_or(Backend::Scalar)
}

/// The backend the kernels use now: the best the CPU has, lowered by `FASTSOFTMAX_SIMD` if set.
/// Decided once, at first use.
#[inline]
pub fn active() -> Backend {
    let v = ACTIVE.load(Ordering::Relaxed);
    if v != UNSET {
        return from_u8(v);
    }
    let best = Backend::detect();
    let chosen = std::env::var(SIMD_ENV)
        .ok()
        .and_then(|name| Backend::from_name(&name))
        .filter(|b| b.is_supported() && *b <= best)
        .unwrap_or(best);
    ACTIVE.store(chosen as u8, Ordering::Relaxed);
    chosen
}

/// Forces the backend (tests run every supported path this way). Refuses one the CPU lacks.
pub fn set_active(b: Backend) -> Result<(), crate::KernelError> {
    if !b.is_supported() {
        return Err(crate::KernelError::Value(format!(
            "instruction set {:?} is not supported on this CPU (supported: {:?})",
            b.name(),
            Backend::supported()
                .iter()
                .map(|b| b.name())
                .collect::<Vec<_>>()
        )));
    }
    ACTIVE.store(b as u8, Ordering::Relaxed);
    Ok(())
}
