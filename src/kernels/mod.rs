//! The kernels, one module per operation family, on row-major matrices given as slices, and the
//! buffer types of that slice-level API.
//!
//! [`driver`] holds the outline every family follows (check the shape, then the tile path for tiny
//! rows, the split path for huge ones, or whole rows in parallel); [`row`] holds the row primitives
//! the families share; each family module holds only its own arithmetic.

pub mod backward;
pub mod cross_entropy;
pub(crate) mod driver;
pub mod entropy;
pub mod half;
pub mod logsumexp;
pub(crate) mod pre;
pub(crate) mod row;
pub mod softmax;
pub mod tile;

/// A checked matrix: its rows, and where it is read and written.
pub(crate) type RowsAt<T> = (usize, SendPtr<T>, SendPtr<T>);

/// An input matrix and where the result goes.
pub enum Buf<'a, T> {
    /// Read `x`, write `out` (same length).
    Separate { x: &'a [T], out: &'a mut [T] },
    /// Read and overwrite the same buffer (`out=x`).
    InPlace(&'a mut [T]),
}

#[allow(clippy::len_without_is_empty)]
impl<'a, T> Buf<'a, T> {
    /// Elements in the input (and the output).
    pub fn len(&self) -> usize {
        match self {
            Buf::Separate { x, .. } => x.len(),
            Buf::InPlace(b) => b.len(),
        }
    }

    pub(crate) fn check(&self) -> Result<(), crate::KernelError> {
        if let Buf::Separate { x, out } = self {
            if x.len() != out.len() {
                return Err(crate::KernelError::Shape(format!(
                    "output has {} elements, input has {}",
                    out.len(),
                    x.len()
                )));
            }
        }
        Ok(())
    }

    /// Checks the buffer holds rows of `cols`: their number and the raw source and destination
    /// pointers, or `None` when there is nothing to do.
    pub(crate) fn matrix(&mut self, cols: usize) -> Result<Option<RowsAt<T>>, crate::KernelError> {
        self.check()?;
        let Some(rows) = driver::matrix_rows(self.len(), cols)? else {
            return Ok(None);
        };
        let (src, dst) = self.ptrs();
        Ok(Some((rows, src, dst)))
    }

    /// Raw source and destination pointers (equal when in place).
    pub(crate) fn ptrs(&mut self) -> (SendPtr<T>, SendPtr<T>) {
        match self {
            Buf::Separate { x, out } => (SendPtr(x.as_ptr() as *mut T), SendPtr(out.as_mut_ptr())),
            Buf::InPlace(b) => {
                let p = b.as_mut_ptr();
                (SendPtr(p), SendPtr(p))
            }
        }
    }
}

/// A raw pointer that may cross to worker threads. Each worker touches a disjoint range of rows or
/// segments, which is what makes sharing it sound.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: see above; the kernels hand each thread disjoint ranges.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// # Safety
    /// `start..start+len` must be in bounds and not be written by anyone while the slice lives.
    #[inline(always)]
    pub(crate) unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a [T] {
        std::slice::from_raw_parts(self.0.add(start), len)
    }
    /// # Safety
    /// `0..len` must be in bounds and touched by no one else while the slice lives.
    #[inline(always)]
    pub(crate) unsafe fn slice_mut<'a>(self, len: usize) -> &'a mut [T] {
        std::slice::from_raw_parts_mut(self.0, len)
    }
    /// # Safety
    /// `range` must be in bounds and touched by no one else while the slice lives.
    #[inline(always)]
    pub(crate) unsafe fn range_mut<'a>(self, range: std::ops::Range<usize>) -> &'a mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(range.start), range.len())
    }
    #[inline(always)]
    pub(crate) fn add(self, off: usize) -> SendPtr<T> {
        SendPtr(self.0.wrapping_add(off))
    }
}

/// Test inputs shared by the families' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    /// `n` reproducible values uniform in `[-half_width, half_width)` (xorshift*, seeded).
    pub(crate) fn data(n: usize, seed: u64, half_width: f64) -> Vec<f64> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
                    * (2.0 * half_width)
                    - half_width
            })
            .collect()
    }

    /// Row `r` of a `cols`-wide matrix, in f64.
    pub(crate) fn row_f64<T: crate::simd::Element>(x: &[T], r: usize, cols: usize) -> Vec<f64> {
        x[r * cols..(r + 1) * cols]
            .iter()
            .map(|v| v.to_f64())
            .collect()
    }
}
