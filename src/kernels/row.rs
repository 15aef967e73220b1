//! The row primitives every kernel family shares: the maps applied before the softmax ([`Pre`],
//! defined in [`super::pre`] and re-exported here), the blocked online `(max, sum)` pass ([`max_sum`]) and its merge
//! across segments, the log-sum-exp finish with its special values ([`finish_lse`]), the compensated
//! sums ([`Acc`], [`Total`]) and the element-wise row map ([`map_row!`]).
//!
//! Pass 1 finds a row's running `(max, sum of exp)` block by block (each block read twice while it
//! sits in L1, so the row is read once from memory); pass 2, when the kernel writes an output,
//! re-reads the row (now in L2) and writes each element once.

pub(crate) use super::pre::{two_sum, with_scale, ExactScale, One, Peak, Pre, Scale, SoftCap};
use crate::simd::{Backend, Element, Isa, Simd, WithSimd};

/// `dst[i] = f(src[i])` vector by vector over `len` elements, `src` possibly equal to `dst`: each
/// vector is loaded into a register before its lanes are stored, and short-lived slices keep every
/// access bounds-checked. A macro, not a closure, so `f` is compiled for the caller's instruction set.
/// Must be used inside an `unsafe` function whose contract makes `src`/`dst` valid for `len`.
macro_rules! map_row {
    ($T:ty, $S:ty, $s:expr, $src:expr, $dst:expr, $len:expr, |$v:ident, $i:ident| $f:expr) => {{
        let l = <$S as $crate::simd::Simd<$T>>::LANES;
        let (src, dst, len) = ($src, $dst, $len);
        let mut $i = 0usize;
        while $i + l <= len {
            let $v = $s.load(src.slice($i, l));
            let r = $f;
            $s.store(std::slice::from_raw_parts_mut(dst.0.add($i), l), r);
            $i += l;
        }
        if $i < len {
            let $v = $s.load_partial(src.slice($i, len - $i), <$T as $crate::simd::Element>::ZERO);
            let r = $f;
            $s.store_partial(std::slice::from_raw_parts_mut(dst.0.add($i), len - $i), r);
        }
    }};
}
pub(crate) use map_row;

/// Elements per block of the online `(max, sum)` pass. Each block is read twice (max, then exp-sum),
/// so it must stay in L1: 2048 f32 are 8 KiB (16 KiB for f64), a quarter of a 32-48 KiB L1d, while the
/// per-block rescale (one scalar `exp`) is amortised over 2048 elements.
pub(crate) const BLOCK: usize = 2048;

pub(crate) use crate::simd::MAX_LANES;

/// A compensated (Kahan–Babuška) f64 sum: block sums of up to 262,144-element rows are added without
/// the O(n·eps) drift of a plain running sum, which float64's 1e-14 relative bound (docs/api.md §4)
/// needs.
#[derive(Clone, Copy, Default)]
pub(crate) struct Acc {
    sum: f64,
    comp: f64,
}

impl Acc {
    #[inline(always)]
    pub(crate) fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if !t.is_finite() {
            // An infinite (or NaN) total stays what it is; compensating it would make inf - inf.
            self.sum = t;
            return;
        }
        if self.sum.abs() >= v.abs() {
            self.comp += (self.sum - t) + v;
        } else {
            self.comp += (v - t) + self.sum;
        }
        self.sum = t;
    }
    #[inline(always)]
    pub(crate) fn scale(&mut self, f: f64) {
        self.sum *= f;
        self.comp *= f;
    }
    #[inline(always)]
    pub(crate) fn value(self) -> f64 {
        self.sum + self.comp
    }
}

/// A compensated sum ([`Acc`]) that also takes infinities and NaN: `Acc`'s compensation term turns
/// an infinite addend into NaN (`inf - inf`), so non-finite values are summed apart and added last.
#[derive(Clone, Copy, Default)]
pub(crate) struct Total {
    acc: Acc,
    special: f64,
}

impl Total {
    #[inline(always)]
    pub(crate) fn add(&mut self, v: f64) {
        if v.is_finite() {
            self.acc.add(v);
        } else {
            self.special += v;
        }
    }
    #[inline(always)]
    pub(crate) fn value(self) -> f64 {
        self.acc.value() + self.special
    }

    /// The total of `parts`, added in order.
    pub(crate) fn of(parts: impl IntoIterator<Item = f64>) -> f64 {
        let mut t = Total::default();
        for v in parts {
            t.add(v);
        }
        t.value()
    }
}

/// Loads a row tail (`x.len() < LANES`), maps it, and sets the lanes past the tail to `fill`.
#[inline(always)]
pub(crate) fn load_tail_mapped<T: Element, S: Simd<T>, P: Pre<T, S>>(
    s: S,
    p: &P,
    x: &[T],
    fill: T,
) -> S::V {
    if fill == T::NEG_INFINITY {
        if let Some(pre) = p.preimage_of_neg_inf() {
            // The fill maps to -inf by itself: one masked load, no round trip through memory.
            return p.apply(s, s.load_partial(x, pre));
        }
    }
    let v = p.apply(s, s.load_partial(x, T::ZERO));
    let mut buf = [fill; MAX_LANES];
    s.store(&mut buf, v);
    for b in &mut buf[x.len()..] {
        *b = fill;
    }
    s.load(&buf)
}

/// The key maximum of a slice ([`Pre::apply`], clamped by [`Pre::clamp_max`]); NaN may or may not
/// win (the sum catches NaN).
#[inline(always)]
pub(crate) fn max_mapped<T: Element, S: Simd<T>, P: Pre<T, S>>(s: S, p: &P, x: &[T]) -> T {
    let l = S::LANES;
    let ninf = s.splat(T::NEG_INFINITY);
    let (mut m0, mut m1, mut m2, mut m3) = (ninf, ninf, ninf, ninf);
    let mut quads = x.chunks_exact(4 * l);
    for c in &mut quads {
        m0 = s.max(m0, p.apply(s, s.load(&c[..l])));
        m1 = s.max(m1, p.apply(s, s.load(&c[l..2 * l])));
        m2 = s.max(m2, p.apply(s, s.load(&c[2 * l..3 * l])));
        m3 = s.max(m3, p.apply(s, s.load(&c[3 * l..])));
    }
    let mut singles = quads.remainder().chunks_exact(l);
    for c in &mut singles {
        m0 = s.max(m0, p.apply(s, s.load(c)));
    }
    let tail = singles.remainder();
    if !tail.is_empty() {
        m1 = s.max(m1, load_tail_mapped(s, p, tail, T::NEG_INFINITY));
    }
    p.clamp_max(s.reduce_max(s.max(s.max(m0, m1), s.max(m2, m3))))
}

/// Vector additions per accumulator lane before a partial sum is moved to f64: 16 float32 additions
/// keep each partial within ~1e-6 relative in the worst case, so even the one-lane scalar backend
/// meets softmax's 2e-6 bound, while the reduction costs ~1% on wide vectors.
pub(crate) const SUM_RUN: usize = 16;

/// `Σ exp(p(x) - max p)` over a slice, `m` the key maximum: partial sums in `T` (four vector
/// accumulators, emptied into f64 every [`SUM_RUN`] additions), added up in f64.
#[inline(always)]
pub(crate) fn sum_exp_mapped<T: Element, S: Simd<T>, P: Pre<T, S>>(
    s: S,
    p: &P,
    x: &[T],
    m: T,
) -> f64 {
    let (l, pk) = (S::LANES, p.peak(s, s.splat(m)));
    let mut total = 0.0f64;
    let mut runs = x.chunks_exact(4 * l * SUM_RUN);
    for run in &mut runs {
        let mut a = [s.splat(T::ZERO); 4];
        for c in run.chunks_exact(4 * l) {
            add_exp4(s, p, c, &pk, &mut a);
        }
        total += s
            .reduce_sum(s.add(s.add(a[0], a[1]), s.add(a[2], a[3])))
            .to_f64();
    }
    let mut a = [s.splat(T::ZERO); 4];
    let mut quads = runs.remainder().chunks_exact(4 * l);
    for c in &mut quads {
        add_exp4(s, p, c, &pk, &mut a);
    }
    let mut singles = quads.remainder().chunks_exact(l);
    for c in &mut singles {
        a[0] = s.add(a[0], s.exp(p.sub_max(s, s.load(c), &pk)));
    }
    let tail = singles.remainder();
    if !tail.is_empty() {
        // Lanes past the tail have the key -inf: they add exp(-inf) = 0.
        // A `match`, not closures: closures are compiled without the caller's target features.
        let d = match load_tail(s, p, tail) {
            Tail::Raw(v) => p.sub_max(s, v, &pk),
            Tail::Key(k) => s.add(k, pk.neg_k),
        };
        a[1] = s.add(a[1], s.exp(d));
    }
    total
        + s.reduce_sum(s.add(s.add(a[0], a[1]), s.add(a[2], a[3])))
            .to_f64()
}

/// Adds `exp(p(x) - max p)` of the four vectors of `c` to the four accumulators.
#[inline(always)]
fn add_exp4<T: Element, S: Simd<T>, P: Pre<T, S>>(
    s: S,
    p: &P,
    c: &[T],
    pk: &Peak<S::V>,
    a: &mut [S::V; 4],
) {
    let l = S::LANES;
    for (k, acc) in a.iter_mut().enumerate() {
        let d = p.sub_max(s, s.load(&c[k * l..(k + 1) * l]), pk);
        *acc = s.add(*acc, s.exp(d));
    }
}

/// A row tail (`x.len() < LANES`) loaded so that the lanes past it have the key `-inf`.
#[derive(Clone, Copy)]
pub(crate) enum Tail<V> {
    /// The inputs, the lanes past the tail filled with [`Pre::preimage_of_neg_inf`].
    Raw(V),
    /// The keys, for a map without such a preimage (the soft cap, whose factor is 1).
    Key(V),
}

/// Loads a row tail as a [`Tail`].
#[inline(always)]
pub(crate) fn load_tail<T: Element, S: Simd<T>, P: Pre<T, S>>(s: S, p: &P, x: &[T]) -> Tail<S::V> {
    match p.preimage_of_neg_inf() {
        Some(pre) => Tail::Raw(s.load_partial(x, pre)),
        None => Tail::Key(load_tail_mapped(s, p, x, T::NEG_INFINITY)),
    }
}

/// The online `(m, Σ exp(p(x) - m))` of a row (or a segment of one), one block at a time.
/// `m` is `-inf` when every element is `-inf` (or NaN); the sum is then 0.
#[inline(always)]
pub(crate) fn max_sum<T: Element, S: Simd<T>, P: Pre<T, S>>(s: S, p: &P, x: &[T]) -> (T, f64) {
    let mut m = T::NEG_INFINITY;
    let mut acc = Acc::default();
    for block in x.chunks(BLOCK) {
        if !next_max(&mut m, &mut acc, max_mapped(s, p, block), block, p.factor()) {
            continue;
        }
        if m.is_nan() {
            return (m, f64::NAN);
        }
        acc.add(sum_exp_mapped(s, p, block, m));
    }
    (m, acc.value())
}

/// Folds a block's key maximum `bm` into the running one `m` of the online pass, rescaling the sum
/// `acc` to the new maximum (`f` the map's [`Pre::factor`]); returns whether the block's exponentials are to be summed (false while
/// everything so far is `-inf`: `exp(-inf - -inf)` would be NaN, and the block adds nothing).
///
/// A NaN makes `m` NaN, which poisons the sum and every output: a NaN `bm` fails `bm > m`, so
/// without this the block (with its maximum and its NaN) would be skipped. The vector `max` may
/// also drop a NaN lane; that NaN still reaches the block's exp-sum, except while `m` is `-inf`
/// (the block is not summed), so only then, on that rare path, is the block searched for NaN.
#[inline(always)]
pub(crate) fn next_max<T: Element>(
    m: &mut T,
    acc: &mut Acc,
    bm: T,
    block: &[T],
    f: (f64, f64),
) -> bool {
    if bm > *m {
        if *m != T::NEG_INFINITY {
            acc.scale(rescale(*m, bm, f));
        }
        *m = bm;
    } else if bm.is_nan() || (*m == T::NEG_INFINITY && has_nan(block)) {
        *m = T::NAN;
    }
    *m != T::NEG_INFINITY
}

/// Merges partial `(key max, sum)` pairs of segments of one row, in order (`f` the map's
/// [`Pre::factor`]).
pub(crate) fn merge_max_sum<T: Element>(parts: &[(T, f64)], f: (f64, f64)) -> (T, f64) {
    let mut m = T::NEG_INFINITY;
    for &(pm, ps) in parts {
        // A NaN in any segment makes the row NaN (`pm > m` would skip it); a segment holding
        // `+inf` has the sum NaN (`inf - inf`) with or without one.
        if pm.is_nan() || (ps.is_nan() && pm != T::INFINITY) {
            return (T::NAN, f64::NAN);
        }
        if pm > m {
            m = pm;
        }
    }
    if m == T::NEG_INFINITY {
        return (m, 0.0);
    }
    if m == T::INFINITY {
        // No sum: the finish looks for a NaN in the row itself (docs/api.md §3).
        return (m, f64::NAN);
    }
    let mut acc = Acc::default();
    for &(pm, ps) in parts {
        if pm == T::NEG_INFINITY {
            continue;
        }
        acc.add(ps * rescale(pm, m, f));
    }
    (m, acc.value())
}

/// `exp((k - k_max) · f)` (`f = hi + lo`): the factor that moves a sum taken against the key
/// maximum `k` to `k_max`. The difference and its product are carried (TwoSum, FMA): a block's
/// outputs near 1e-300 keep float64's 1e-14 through a rescale by `exp(-690)`.
#[inline(always)]
pub(crate) fn rescale<T: Element>(k: T, k_max: T, (f, f_lo): (f64, f64)) -> f64 {
    let (a, b) = (k.to_f64(), -k_max.to_f64());
    let d = a + b;
    let e = d * f;
    if !e.is_finite() {
        return e.exp();
    }
    let bb = d - a;
    let err = (a - (d - bb)) + (b - bb);
    let lo = d.mul_add(f, -e) + err * f + d * f_lo;
    let x = e.exp();
    x + x * lo
}

/// `k · (hi + lo)` in float64: a key maximum as the mapped value (an infinite `k` stays infinite).
#[inline(always)]
pub(crate) fn times_factor<T: Element>(k: T, (hi, lo): (f64, f64)) -> f64 {
    let v = k.to_f64() * hi;
    if v.is_finite() && lo != 0.0 {
        v + k.to_f64() * lo
    } else {
        v
    }
}

/// Whether any element is NaN (only on the rare paths: rows whose max is infinite).
pub(crate) fn has_nan<T: Element>(x: &[T]) -> bool {
    x.iter().any(|v| v.is_nan())
}

/// `Σ_{p(x) != m} exp(p(x) - m) + (count(p(x) == m) - 1)`: the row sum without one copy of its largest
/// term (exactly 1), so `lse = m + log1p(rest)` keeps the digits `m + log(1 + rest)` would lose.
#[inline(always)]
pub(crate) fn sum_exp_rest<T: Element, S: Simd<T>, P: Pre<T, S>>(
    s: S,
    p: &P,
    x: &[T],
    m: T,
) -> f64 {
    let l = S::LANES;
    let pk = p.peak(s, s.splat(m));
    let zero = s.splat(T::ZERO);
    let one = s.splat(T::ONE);
    // `v` the key, `d = p(x) - max p` ([`Pre::sub_max`]): an element whose key is the maximum adds
    // `exp(d) - 1 ≈ d` (0: its exponent is exact), so the rest stays consistent with the
    // differences the log-softmax writes.
    // A macro, not a closure: a closure would not inherit the caller's instruction set.
    macro_rules! step {
        ($a:ident, $n:ident, $v:expr, $d:expr) => {{
            let (v, d) = ($v, $d);
            $a = s.add($a, s.select_eq(v, pk.k, d, s.exp(d)));
            $n = s.add($n, s.select_eq(v, pk.k, one, zero));
        }};
    }
    let mut acc = Acc::default();
    let mut count = 0.0f64;
    for block in x.chunks(BLOCK) {
        let (mut a, mut n) = (zero, zero);
        let mut singles = block.chunks_exact(l);
        for c in &mut singles {
            let x = s.load(c);
            step!(a, n, p.apply(s, x), p.sub_max(s, x, &pk));
        }
        let tail = singles.remainder();
        if !tail.is_empty() {
            let (v, d) = match load_tail(s, p, tail) {
                Tail::Raw(x) => (p.apply(s, x), p.sub_max(s, x, &pk)),
                Tail::Key(v) => (v, s.add(v, pk.neg_k)),
            };
            step!(a, n, v, d);
        }
        acc.add(s.reduce_sum(a).to_f64());
        count += s.reduce_sum(n).to_f64();
    }
    acc.value() + (count - 1.0)
}

/// A row's log-sum-exp as `m + log_sum`, kept in two parts so `p(x) - lse` can be formed as
/// `(p(x) - m) - log_sum` without losing `log_sum` against a huge `m`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lse {
    pub m: f64,
    pub log_sum: f64,
}

impl Lse {
    #[inline(always)]
    pub(crate) fn value(self) -> f64 {
        self.m + self.log_sum
    }

    /// The `log_sum` a log-softmax subtracts: a row holding `+inf` gives NaN everywhere
    /// (docs/api.md §3) rather than `-inf` for its finite entries.
    #[inline(always)]
    pub(crate) fn log_sum_for_log_softmax(self) -> f64 {
        if self.m == f64::INFINITY {
            f64::NAN
        } else {
            self.log_sum
        }
    }
}

/// `log Σ exp(p(x))` from the row's `(m, sum)` (`m` the key maximum), with the special values of docs/api.md §3 (NaN
/// anywhere wins; all `-inf` gives `-inf`; `+inf` gives `+inf`) and, for types that ask for it,
/// SciPy's `log1p` refinement.
#[inline(always)]
pub(crate) fn finish_lse<T: Element, S: Simd<T>, P: Pre<T, S>>(
    s: S,
    p: &P,
    x: &[T],
    m: T,
    sum: f64,
) -> Lse {
    let mf = times_factor(m, p.factor());
    if !mf.is_finite() {
        // -inf: every element -inf (or NaN); +inf: an element is +inf. NaN anywhere wins.
        let nan = mf.is_nan() || has_nan(x);
        return Lse {
            m: if nan { f64::NAN } else { mf },
            log_sum: if nan { f64::NAN } else { 0.0 },
        };
    }
    // The largest term contributes exactly 1, so `sum < 2` means the rest is < 1: the regime where
    // `log(sum)` rounds away what `log1p(rest)` keeps.
    let log_sum = if T::REFINE_LSE && sum < 2.0 {
        sum_exp_rest(s, p, x, m).ln_1p()
    } else {
        sum.ln()
    };
    Lse { m: mf, log_sum }
}

/// `exp(p(x) - max p)` for a raw vector `x`, with the exponent carried as `hi + lo`
/// ([`Pre::sub_max_exact`]): a float32 exponent near -69 rounds to half an ulp (4e-6), which would
/// break softmax's 2e-6 relative bound at outputs near 1e-30 (docs/api.md §4).
#[inline(always)]
pub(crate) fn exp_diff_mapped<T: Element, S: Simd<T>, P: Pre<T, S>>(
    s: S,
    p: &P,
    x: S::V,
    pk: &Peak<S::V>,
) -> S::V {
    exp_hi_lo(s, p.sub_max_exact(s, x, pk))
}

/// `exp(hi + lo)` as `e + e·lo` (`lo` small against `hi`).
#[inline(always)]
pub(crate) fn exp_hi_lo<T: Element, S: Simd<T>>(s: S, (hi, lo): (S::V, S::V)) -> S::V {
    let e = s.exp(hi);
    // An exponent of -inf makes `lo` NaN; its output is exactly 0.
    let zero = s.splat(T::ZERO);
    s.select_eq(e, zero, zero, s.mul_add(e, lo, e))
}

/// [`finish_lse`] with the plain scale map, dispatched to the instruction set: the finish of a split
/// row, on the calling thread once the segments' `(max, sum)` are merged.
pub(crate) fn finish_lse_on<T: Element>(
    backend: Backend,
    x: &[T],
    scale: Scale<T>,
    m: T,
    sum: f64,
) -> Lse {
    backend.dispatch(FinishLse { x, scale, m, sum })
}

struct FinishLse<'a, T> {
    x: &'a [T],
    scale: Scale<T>,
    m: T,
    sum: f64,
}

impl<T: Element> WithSimd for FinishLse<'_, T> {
    type Output = Lse;
    #[inline(always)]
    fn with_simd<S: Isa>(self, s: S) -> Lse {
        let s = T::simd(s);
        with_scale!(self.scale, |p| finish_lse(s, &p, self.x, self.m, self.sum))
    }
}
