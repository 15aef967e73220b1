//! Conversions between float32 and the half types (IEEE float16, bfloat16), in parallel: the CPU
//! kernels compute half-precision inputs in float32, and these bring them in and out. Round to
//! nearest even, subnormals and NaN kept (the `half` crate; F16C instructions where the CPU has them).

use crate::parallel::for_ranges;
use crate::KernelError;
use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

/// Elements converted per task: 256 Ki elements (1 MiB of f32) is ~50 µs of work, far above a
/// task's cost, and leaves several tasks per core on large arrays.
const CHUNK: usize = 1 << 18;

/// Which half type the 16-bit words hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    F16,
    BF16,
}

struct Dst<T>(*mut T);
// SAFETY: each task writes its own disjoint chunk of the destination.
unsafe impl<T> Send for Dst<T> {}
unsafe impl<T> Sync for Dst<T> {}

impl<T> Dst<T> {
    /// The address of element `i` (a method, so closures capture the whole `Sync` wrapper).
    fn at(&self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

fn chunked<S: Sync, D>(
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
    let d = Dst(dst.as_mut_ptr());
    for_ranges(n.div_ceil(CHUNK), 1, n, |tasks| {
        for t in tasks {
            let r = t * CHUNK..((t + 1) * CHUNK).min(n);
            // SAFETY: `r` is in bounds and belongs to this task alone.
            let out = unsafe { std::slice::from_raw_parts_mut(d.at(r.start), r.len()) };
            f(&src[r], out);
        }
    });
    Ok(())
}

/// `dst = f32(src)` for 16-bit words holding `kind`.
pub fn half_to_f32(src: &[u16], dst: &mut [f32], kind: Half) -> Result<(), KernelError> {
    chunked(src, dst, |s, d| match kind {
        Half::F16 => s.reinterpret_cast::<f16>().convert_to_f32_slice(d),
        Half::BF16 => bf16_to_f32(s, d),
    })
}

/// `dst = kind(src)` as 16-bit words, rounded to nearest even.
pub fn f32_to_half(src: &[f32], dst: &mut [u16], kind: Half) -> Result<(), KernelError> {
    chunked(src, dst, |s, d| match kind {
        Half::F16 => d.reinterpret_cast_mut::<f16>().convert_from_f32_slice(s),
        Half::BF16 => f32_to_bf16(s, d),
    })
}

/// bfloat16 is the top half of a float32: a shift (a loop the compiler vectorises).
fn bf16_to_f32(src: &[u16], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits(u32::from(s) << 16);
    }
}

/// The top half of each float32, rounded to nearest even; a NaN stays a (quiet) NaN.
fn f32_to_bf16(src: &[f32], dst: &mut [u16]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        let u = x.to_bits();
        let rounded = (u.wrapping_add(0x7fff + ((u >> 16) & 1))) >> 16;
        let nan = (u >> 16) | 0x40;
        *d = if (u & 0x7fff_ffff) > 0x7f80_0000 {
            nan
        } else {
            rounded
        } as u16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    /// Every 16-bit pattern survives f16/bf16 -> f32 -> f16/bf16 (NaN payloads aside), and agrees
    /// with the scalar conversions.
    #[test]
    fn every_half_value_round_trips() {
        let bits: Vec<u16> = (0..=u16::MAX).collect();
        for kind in [Half::F16, Half::BF16] {
            let mut wide = vec![0f32; bits.len()];
            half_to_f32(&bits, &mut wide, kind).unwrap();
            let mut back = vec![0u16; bits.len()];
            f32_to_half(&wide, &mut back, kind).unwrap();
            for (i, (&b, &w)) in bits.iter().zip(&wide).enumerate() {
                let scalar = match kind {
                    Half::F16 => f16::from_bits(b).to_f32(),
                    Half::BF16 => bf16::from_bits(b).to_f32(),
                };
                assert!(
                    w.to_bits() == scalar.to_bits() || (w.is_nan() && scalar.is_nan()),
                    "{i}"
                );
                assert!(
                    back[i] == b || w.is_nan(),
                    "{kind:?} {b:#06x} -> {w} -> {:#06x}",
                    back[i]
                );
            }
        }
    }

    /// Rounding to nearest even, including into the subnormals (where NumPy is slow).
    #[test]
    fn rounds_to_nearest_even() {
        let xs = [
            1.0 + 2f32.powi(-11),
            1.0 + 3.0 * 2f32.powi(-11),
            1e-6,
            3e-8,
            6e-8,
            1e6,
            -0.0,
        ];
        let mut h = vec![0u16; xs.len()];
        f32_to_half(&xs, &mut h, Half::F16).unwrap();
        for (&x, &b) in xs.iter().zip(&h) {
            assert_eq!(b, f16::from_f32(x).to_bits(), "{x}");
        }
        assert_eq!(h[0], f16::from_f32(1.0).to_bits()); // tie to even: down
        assert_eq!(h[1], f16::from_f32(1.0 + 4.0 * 2f32.powi(-11)).to_bits()); // tie to even: up
        let mut g = vec![0u16; 1];
        f32_to_half(&[1.0 + 2f32.powi(-8)], &mut g, Half::BF16).unwrap();
        assert_eq!(g[0], bf16::from_f32(1.0).to_bits());
    }

    #[test]
    fn length_mismatch_is_an_error() {
        assert!(half_to_f32(&[0u16; 3], &mut [0f32; 2], Half::F16).is_err());
    }
}
