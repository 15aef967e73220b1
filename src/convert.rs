//! Conversions between float32 and the half types (IEEE float16, bfloat16). The CPU kernels compute
//! half-precision inputs in float32; these bring the 16-bit words in and out, in registers:
//!
//! - AVX-512: `vcvtph2ps`/`vcvtps2ph` on 16 lanes; bfloat16 by a shift in (a loop the compiler
//!   vectorises) and an integer round-to-nearest-even out (not `vcvtneps2bf16`, which flushes
//!   float32 subnormals to zero);
//! - AVX2 with F16C: the same on 8 lanes;
//! - NEON: the `half` crate's slice conversions (the `fcvt` instructions where the CPU has them);
//! - scalar: integer code, exact, round to nearest even with subnormals, on any CPU.
//!
//! Every path gives the same bits, NaN included (a NaN stays a quiet NaN of the same sign, its
//! payload truncated when narrowed): the backend changes the speed, never the answer.

use crate::kernels::SendPtr;
use crate::parallel::for_ranges;
use crate::simd::Backend;
use crate::KernelError;

/// Elements converted per task by the whole-array conversions: 256 Ki elements (1 MiB of f32) is
/// ~50 µs of work, far above a task's cost, and leaves several tasks per core on large arrays.
const CHUNK: usize = 1 << 18;

/// Which half type the 16-bit words hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    F16,
    BF16,
}

/// `dst = f32(src)` for 16-bit words holding `kind`, on the calling thread (exact).
pub fn widen(backend: Backend, kind: Half, src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "widen: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if x86::widen(backend, kind, src, dst).is_some() {
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if backend == Backend::Neon && kind == Half::F16 {
        use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
        return src
            .reinterpret_cast::<half::f16>()
            .convert_to_f32_slice(dst);
    }
    let _ = backend;
    match kind {
        Half::F16 => each(src, dst, f16_to_f32),
        Half::BF16 => each(src, dst, bf16_to_f32),
    }
}

/// `dst = kind(src)` as 16-bit words, rounded to nearest even, on the calling thread.
pub fn narrow(backend: Backend, kind: Half, src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "narrow: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if x86::narrow(backend, kind, src, dst).is_some() {
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if backend == Backend::Neon && kind == Half::F16 {
        use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
        return dst
            .reinterpret_cast_mut::<half::f16>()
            .convert_from_f32_slice(src);
    }
    let _ = backend;
    match kind {
        Half::F16 => each(src, dst, f32_to_f16),
        Half::BF16 => each(src, dst, f32_to_bf16),
    }
}

/// `dst[i] = f(src[i])`: the scalar conversions, one element at a time (the bfloat16 ones vectorise).
#[inline(always)]
fn each<S: Copy, D>(src: &[S], dst: &mut [D], f: impl Fn(S) -> D) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f(s);
    }
}

/// A float16 as float32 (exact); a NaN comes out quiet, as `vcvtph2ps` makes it.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let exp = (h >> 10) & 0x1f;
    let man = h & 0x3ff;
    let bits = match (exp, man) {
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (man << 13),
        (0, 0) => sign,
        (0, _) => {
            // A subnormal `man · 2^-24`: shift the leading one into the implicit bit.
            let s = man.leading_zeros() - 21;
            sign | ((113 - s) << 23) | (((man << s) & 0x3ff) << 13)
        }
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// A float32 as float16, rounded to nearest even (subnormals kept, overflow to ±inf); a NaN stays
/// a quiet NaN with its payload truncated, as `vcvtps2ph` makes it.
#[inline(always)]
pub fn f32_to_f16(x: f32) -> u16 {
    /// 65536: this and above round to infinity (65504 is the largest float16, 65520 the tie).
    const OVERFLOW: u32 = 0x4780_0000;
    /// 2^-14, the smallest normal float16.
    const MIN_NORMAL: u32 = 0x3880_0000;
    /// 2^-25, half the smallest subnormal: this and below round to zero (a tie goes to even 0).
    const UNDERFLOW: u32 = 0x3300_0000;
    let u = x.to_bits();
    let sign = ((u >> 16) & 0x8000) as u16;
    let a = u & 0x7fff_ffff;
    let round = |kept: u32, rem: u32, half: u32| {
        kept + u32::from(rem > half || (rem == half && kept & 1 == 1))
    };
    let h = if a > 0x7f80_0000 {
        0x7e00 | ((a >> 13) & 0x3ff)
    } else if a >= OVERFLOW {
        0x7c00
    } else if a >= MIN_NORMAL {
        // Rebias the exponent; a carry out of the mantissa moves to the next binade (or to inf).
        round((a >> 13) - ((127 - 15) << 10), a & 0x1fff, 0x1000)
    } else if a > UNDERFLOW {
        let m = (a & 0x7f_ffff) | 0x80_0000;
        let shift = 126 - (a >> 23); // 14..=24: the float16 subnormal unit is 2^-24
        round(m >> shift, m & ((1 << shift) - 1), 1 << (shift - 1))
    } else {
        0
    };
    sign | h as u16
}

/// A bfloat16 as float32: it is the top half of one.
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// The top half of a float32, rounded to nearest even; a NaN stays a (quiet) NaN. Branch-free, so
/// the loops over it vectorise.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    let rounded = u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16;
    let nan = (u >> 16) | 0x40;
    (if (u & 0x7fff_ffff) > 0x7f80_0000 {
        nan
    } else {
        rounded
    }) as u16
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86-64 paths; each checks its instructions at run time and declines (`None`) without
    //! them, so the caller falls back to the scalar loops.
    use super::{each, f32_to_bf16, f32_to_f16, Half};
    use crate::simd::Backend;
    use std::arch::x86_64::*;

    /// `vcvtps2ph`'s rounding immediate: to nearest even (not MXCSR's mode), and for the
    /// AVX-512 form no exceptions (F16C's 3-bit immediate has no such bit).
    const RNE_512: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const RNE_256: i32 = _MM_FROUND_TO_NEAREST_INT;

    fn avx512() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
    }

    fn f16c() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c")
    }

    pub(super) fn widen(b: Backend, kind: Half, src: &[u16], dst: &mut [f32]) -> Option<()> {
        // SAFETY: each function runs only after its instructions were found on this CPU.
        unsafe {
            match b {
                Backend::Avx512 if avx512() => widen_512(kind, src, dst),
                Backend::Avx512 | Backend::Avx2 if f16c() => widen_256(kind, src, dst),
                _ => return None,
            }
        }
        Some(())
    }

    pub(super) fn narrow(b: Backend, kind: Half, src: &[f32], dst: &mut [u16]) -> Option<()> {
        // SAFETY: as in `widen`.
        unsafe {
            match b {
                Backend::Avx512 if avx512() => narrow_512(kind, src, dst),
                Backend::Avx512 | Backend::Avx2 if f16c() => narrow_256(kind, src, dst),
                _ => return None,
            }
        }
        Some(())
    }

    /// The float16 vectors of one width: whole vectors through `vec`, the tail through the scalar
    /// conversion (which gives the same bits).
    macro_rules! by_vectors {
        ($lanes:literal, $src:ident, $dst:ident, $scalar:path, |$s:ident, $d:ident| $vec:expr) => {{
            let mut sc = $src.chunks_exact($lanes);
            let mut dc = $dst.chunks_exact_mut($lanes);
            for ($s, $d) in (&mut sc).zip(&mut dc) {
                $vec;
            }
            for (d, &s) in dc.into_remainder().iter_mut().zip(sc.remainder()) {
                *d = $scalar(s);
            }
        }};
    }

    /// bfloat16 rounding of the float32 bit patterns `u`, on one vector width (`_mm512` or
    /// `_mm256`): `(u + 0x7fff + lsb) >> 16` rounded to nearest even, the quiet NaN `(u >> 16) |
    /// 0x40`, and `|u|` (a NaN is above `0x7f80_0000`), as 32-bit lanes, as `f32_to_bf16` does.
    macro_rules! bf16_words {
        ($u:ident, _mm512) => {
            bf16_words!($u; _mm512_set1_epi32, _mm512_and_si512, _mm512_srli_epi32,
                        _mm512_add_epi32, _mm512_or_si512)
        };
        ($u:ident, _mm256) => {
            bf16_words!($u; _mm256_set1_epi32, _mm256_and_si256, _mm256_srli_epi32,
                        _mm256_add_epi32, _mm256_or_si256)
        };
        ($u:ident; $set1:ident, $and:ident, $srli:ident, $add:ident, $or:ident) => {{
            let lsb = $and($srli::<16>($u), $set1(1));
            let rounded = $srli::<16>($add($u, $add(lsb, $set1(0x7fff))));
            let quiet = $or($srli::<16>($u), $set1(0x40));
            (rounded, quiet, $and($u, $set1(0x7fff_ffff)))
        }};
    }

    #[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
    unsafe fn widen_512(kind: Half, src: &[u16], dst: &mut [f32]) {
        match kind {
            Half::F16 => by_vectors!(16, src, dst, super::f16_to_f32, |s, d| {
                let h = _mm256_loadu_si256(s.as_ptr().cast());
                _mm512_storeu_ps(d.as_mut_ptr(), _mm512_cvtph_ps(h));
            }),
            Half::BF16 => each(src, dst, super::bf16_to_f32),
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
    unsafe fn narrow_512(kind: Half, src: &[f32], dst: &mut [u16]) {
        match kind {
            Half::F16 => by_vectors!(16, src, dst, f32_to_f16, |s, d| {
                let h = _mm512_cvtps_ph::<RNE_512>(_mm512_loadu_ps(s.as_ptr()));
                _mm256_storeu_si256(d.as_mut_ptr().cast(), h);
            }),
            Half::BF16 => by_vectors!(16, src, dst, f32_to_bf16, |s, d| {
                let u = _mm512_castps_si512(_mm512_loadu_ps(s.as_ptr()));
                let (rounded, quiet, abs) = bf16_words!(u, _mm512);
                let nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
                let h = _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet));
                _mm256_storeu_si256(d.as_mut_ptr().cast(), h);
            }),
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    unsafe fn widen_256(kind: Half, src: &[u16], dst: &mut [f32]) {
        match kind {
            Half::F16 => by_vectors!(8, src, dst, super::f16_to_f32, |s, d| {
                let h = _mm_loadu_si128(s.as_ptr().cast());
                _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(h));
            }),
            Half::BF16 => each(src, dst, super::bf16_to_f32),
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    unsafe fn narrow_256(kind: Half, src: &[f32], dst: &mut [u16]) {
        match kind {
            Half::F16 => by_vectors!(8, src, dst, f32_to_f16, |s, d| {
                let h = _mm256_cvtps_ph::<RNE_256>(_mm256_loadu_ps(s.as_ptr()));
                _mm_storeu_si128(d.as_mut_ptr().cast(), h);
            }),
            Half::BF16 => by_vectors!(8, src, dst, f32_to_bf16, |s, d| {
                let u = _mm256_castps_si256(_mm256_loadu_ps(s.as_ptr()));
                let (rounded, quiet, abs) = bf16_words!(u, _mm256);
                let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
                let words = _mm256_blendv_epi8(rounded, quiet, nan);
                // Each word is below 2^16, so the signed-saturating pack keeps it; then the two
                // 128-bit halves' results side by side.
                let packed = _mm256_packus_epi32(words, words);
                let h = _mm256_permute4x64_epi64::<0b1000>(packed);
                _mm_storeu_si128(d.as_mut_ptr().cast(), _mm256_castsi256_si128(h));
            }),
        }
    }
}

fn chunked<S: Sync, D: Copy>(
    src: &[S],
    dst: &mut [D],
    f: impl Fn(&[S], &mut [D]) + Sync,
) -> Result<(), KernelError> {
    let n = src.len();
    if dst.len() != n {
        return Err(KernelError::Shape(format!(
            "conversion of {n} elements into {}",
            dst.len()
        )));
    }
    let d = SendPtr(dst.as_mut_ptr());
    for_ranges(n, CHUNK, n, |r| {
        // SAFETY: `r` is in bounds and belongs to this task alone.
        let out = unsafe { d.add(r.start).slice_mut(r.len()) };
        f(&src[r], out);
    });
    Ok(())
}

/// `dst = f32(src)` for 16-bit words holding `kind`, in parallel.
pub fn half_to_f32(
    backend: Backend,
    src: &[u16],
    dst: &mut [f32],
    kind: Half,
) -> Result<(), KernelError> {
    chunked(src, dst, |s, d| widen(backend, kind, s, d))
}

/// `dst = kind(src)` as 16-bit words, rounded to nearest even, in parallel.
pub fn f32_to_half(
    backend: Backend,
    src: &[f32],
    dst: &mut [u16],
    kind: Half,
) -> Result<(), KernelError> {
    chunked(src, dst, |s, d| narrow(backend, kind, s, d))
}

#[cfg(test)]
mod tests;
