//! Half-precision matrices (float16, bfloat16: 16-bit words) through the float32 kernels, with one
//! pass over the 16-bit words in memory.
//!
//! The rows go in blocks: a block's rows are widened into a per-thread float32 scratch
//! ([`crate::convert::widen`], in registers), the float32 kernel runs on the scratch while it sits
//! in L2, and a row-shaped result is narrowed straight into the half output. Memory sees 2 bytes
//! read and 2 written per element, not the float32 round trip of a whole-array conversion.
//!
//! A block is exactly one task of the float32 driver (its rows per task for this row length), so
//! every row takes the path it takes in float32 and the answers are the float32 kernels' answers on
//! the widened input, bit for bit. Rows long enough to be split across threads
//! ([`crate::parallel::split_rows`]) exceed L2 anyway: they are widened whole, in parallel, and run
//! as one matrix.

use std::cell::RefCell;
use std::ops::Range;

use super::backward::{self as bw, Vjp, VjpBuf};
use super::cross_entropy::{self as ce, CeOptions, Logits, Plan, Target};
use super::entropy::{self as ent, Input};
use super::logsumexp as lse;
use super::softmax::{self as sm, Mode};
use super::tile::{NO_TILES, REDUCE_TILE_COLS, SOFTMAX_TILE_COLS};
use super::{driver, Buf, SendPtr};
use crate::convert::{f32_to_half, half_to_f32, narrow, widen, Half};
use crate::parallel::{map_ranges, split_rows};
use crate::simd::Backend;
use crate::KernelError;

thread_local! {
    /// Each thread's float32 scratch, kept between calls: a block needs at most
    /// `inputs × GRAIN_ELEMS` floats (512 KiB for two inputs), and allocating it per block would
    /// page-fault a fresh mapping every time.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f(rows, scratch)` on blocks of the `rows × cols` half matrices `ins` (`cols > 0`), each
/// block one task of a float32 kernel that takes tiles up to `tile_cols` columns: `scratch` holds
/// the block of each input widened to float32, one after the other. With `out`, the first input's
/// scratch (where `f` leaves a row-shaped result) is narrowed into `out`'s rows.
/// Results come back per block, in order.
///
/// # Safety
/// Each of `ins` and `out` must be valid for `rows × cols` words; `out` may be one of `ins` but must
/// not overlap them otherwise; nobody else may touch them meanwhile.
unsafe fn blocks<R: Send>(
    backend: Backend,
    kind: Half,
    (rows, cols, tile_cols): (usize, usize, usize),
    ins: &[SendPtr<u16>],
    out: Option<SendPtr<u16>>,
    f: impl Fn(Range<usize>, &mut [f32]) -> Result<R, KernelError> + Sync,
) -> Result<Vec<R>, KernelError> {
    if split_rows(cols) {
        // One block of every row; the float32 kernel splits the rows across threads itself.
        let n = rows * cols;
        let mut scratch = vec![0f32; ins.len() * n];
        for (p, s) in ins.iter().zip(scratch.chunks_exact_mut(n)) {
            half_to_f32(backend, p.slice(0, n), s, kind)?;
        }
        let r = f(0..rows, &mut scratch)?;
        if let Some(o) = out {
            f32_to_half(backend, &scratch[..n], o.slice_mut(n), kind)?;
        }
        return Ok(vec![r]);
    }
    let block = |range: Range<usize>| {
        let (off, n) = (range.start * cols, range.len() * cols);
        // Taken out of the thread-local (not borrowed), so nothing `f` does can find it in use.
        let mut scratch = SCRATCH.take();
        if scratch.len() < ins.len() * n {
            scratch.resize(ins.len() * n, 0.0);
        }
        for (p, s) in ins.iter().zip(scratch.chunks_exact_mut(n)) {
            // SAFETY: the block's rows are in bounds and belong to this task alone.
            widen(backend, kind, unsafe { p.slice(off, n) }, s);
        }
        let r = f(range, &mut scratch[..ins.len() * n]);
        if let (Some(o), Ok(_)) = (out, &r) {
            // SAFETY: as above; the inputs' slices of these rows are dropped already.
            narrow(backend, kind, &scratch[..n], unsafe {
                o.add(off).slice_mut(n)
            });
        }
        SCRATCH.set(scratch);
        r
    };
    map_ranges(rows, driver::task_rows(cols, tile_cols), rows * cols, block)
        .into_iter()
        .collect()
}

/// [`sm::softmax_scaled`] on 16-bit words holding `kind`.
pub fn softmax(
    backend: Backend,
    kind: Half,
    mut buf: Buf<'_, u16>,
    cols: usize,
    scale: f64,
    mode: Mode,
) -> Result<(), KernelError> {
    let Some((rows, src, dst)) = buf.matrix(cols)? else {
        return Ok(());
    };
    // SAFETY: `buf` is `rows × cols` and borrowed for the call; `dst` is `src` or apart from it.
    unsafe {
        blocks(
            backend,
            kind,
            (rows, cols, SOFTMAX_TILE_COLS),
            &[src],
            Some(dst),
            |_, s| sm::softmax_scaled(backend, Buf::InPlace(s), cols, scale, mode),
        )?;
    }
    Ok(())
}

/// [`bw::softmax_backward`] on 16-bit words holding `kind`.
pub fn softmax_backward(
    backend: Backend,
    kind: Half,
    mut buf: VjpBuf<'_, u16>,
    cols: usize,
    vjp: Vjp,
) -> Result<(), KernelError> {
    let Some((rows, (g, y, dst))) = buf.matrix(cols)? else {
        return Ok(());
    };
    // SAFETY: as in `softmax`; `VjpBuf` lets `dst` be `g` and/or `y` only.
    unsafe {
        blocks(
            backend,
            kind,
            (rows, cols, NO_TILES),
            &[g, y],
            Some(dst),
            |_, s| {
                let (g, y) = s.split_at_mut(s.len() / 2);
                bw::softmax_backward(backend, VjpBuf::IntoGrad { g, y }, cols, vjp)
            },
        )?;
    }
    Ok(())
}

/// An error naming the first `(what, length, expected length)` that is off.
fn lengths(checks: &[(&str, usize, usize)]) -> Result<(), KernelError> {
    match checks.iter().find(|(_, n, want)| n != want) {
        Some((what, n, want)) => Err(KernelError::Shape(format!(
            "{what} has {n} elements, expected {want}"
        ))),
        None => Ok(()),
    }
}

/// [`lse::logsumexp_scaled`] of 16-bit words holding `kind`, into float32 `out` (one per row).
pub fn logsumexp(
    backend: Backend,
    kind: Half,
    x: &[u16],
    cols: usize,
    scale: f64,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let rows = driver::reduced_rows(x.len(), cols, out.len())?;
    if cols == 0 || rows == 0 {
        // The float32 kernel's answer for rows of no columns (no input to widen).
        return lse::logsumexp_scaled(backend, &[], cols, scale, out);
    }
    let o = SendPtr(out.as_mut_ptr());
    let x = SendPtr(x.as_ptr() as *mut u16);
    // SAFETY: `x` is `rows × cols`, read only; each block writes its own rows of `out`.
    unsafe {
        blocks(
            backend,
            kind,
            (rows, cols, REDUCE_TILE_COLS),
            &[x],
            None,
            |r, s| lse::logsumexp_scaled(backend, s, cols, scale, o.range_mut(r)),
        )?;
    }
    Ok(())
}

/// SciPy's weighted logsumexp ([`lse::logsumexp_weighted`]) of `x · scale` (the product rounded to
/// float32, as a float32 caller computes it first) with weights `b`, both
/// 16-bit words holding `kind`, into float32 `out` and `sign` (one per row).
pub fn logsumexp_weighted(
    backend: Backend,
    kind: Half,
    (x, b): (&[u16], &[u16]),
    cols: usize,
    scale: f32,
    (out, sign): (&mut [f32], &mut [f32]),
) -> Result<(), KernelError> {
    let rows = driver::reduced_rows(x.len(), cols, out.len())?;
    lengths(&[("b", b.len(), x.len()), ("sign", sign.len(), rows)])?;
    if cols == 0 || rows == 0 {
        return lse::logsumexp_weighted::<f32>(&[], &[], cols, scale, out, sign);
    }
    let (o, sg) = (SendPtr(out.as_mut_ptr()), SendPtr(sign.as_mut_ptr()));
    let ins = [x, b].map(|a| SendPtr(a.as_ptr() as *mut u16));
    // SAFETY: as in `logsumexp`.
    unsafe {
        blocks(backend, kind, (rows, cols, NO_TILES), &ins, None, |r, s| {
            let (xs, bs) = s.split_at(s.len() / 2);
            lse::logsumexp_weighted(xs, bs, cols, scale, o.range_mut(r.clone()), sg.range_mut(r))
        })?;
    }
    Ok(())
}

/// [`ent::entropy`] of `p` (with `q`: the KL divergence), 16-bit words holding `kind`, into
/// float32 `out` (one per row).
pub fn entropy(
    backend: Backend,
    kind: Half,
    (p, q): (&[u16], Option<&[u16]>),
    cols: usize,
    (input, scale): (Input, f64),
    out: &mut [f32],
) -> Result<(), KernelError> {
    let rows = driver::reduced_rows(p.len(), cols, out.len())?;
    lengths(&[("q", q.map_or(p.len(), <[u16]>::len), p.len())])?;
    if cols == 0 || rows == 0 {
        return ent::entropy::<f32>(backend, &[], None, cols, input, scale, out);
    }
    let o = SendPtr(out.as_mut_ptr());
    let ins: Vec<SendPtr<u16>> = std::iter::once(p)
        .chain(q)
        .map(|a| SendPtr(a.as_ptr() as *mut u16))
        .collect();
    // SAFETY: as in `logsumexp`.
    unsafe {
        blocks(backend, kind, (rows, cols, NO_TILES), &ins, None, |r, s| {
            let (ps, qs) = s.split_at(s.len() / ins.len());
            let qs = (ins.len() == 2).then_some(qs);
            ent::entropy(backend, ps, qs, cols, input, scale, o.range_mut(r))
        })?;
    }
    Ok(())
}

/// [`ce::cross_entropy`] of logits (and soft labels) of 16-bit words holding `kind`: weights and
/// per-row losses in float32, the gradient (when asked) narrowed into the logits' type. The label
/// pre-pass runs once for all rows, then each block is one task of the float32 driver, so the loss
/// sums the same per-task parts in the same order as float32.
pub fn cross_entropy(
    backend: Backend,
    kind: Half,
    logits: Logits<'_, u16>,
    (rows, cols): (usize, usize),
    target: Target<'_, u16>,
    opts: &CeOptions<'_, f32>,
    losses: Option<&mut [f32]>,
) -> Result<f64, KernelError> {
    let (src, dst) = ce::logit_ptrs(logits, rows, cols)?;
    let plan = Plan::new(backend, (rows, cols), target, opts, losses.as_deref())?;
    let Some(losses) = plan.start(losses) else {
        return Ok(0.0);
    };
    if rows == 0 {
        return Ok(plan.total([]));
    }
    let ins: Vec<SendPtr<u16>> = match target {
        Target::Hard(_) => vec![src],
        Target::Soft(q) => vec![src, SendPtr(q.as_ptr() as *mut u16)],
    };
    // SAFETY: `src` (and soft labels) are `rows × cols`, read only but for `dst`, which is `src`
    // or apart from it; each block writes its own rows of the losses.
    let parts = unsafe {
        blocks(
            backend,
            kind,
            (rows, cols, ce::tile_cols(opts)),
            &ins,
            dst,
            |r, s| {
                let (xs, qs) = s.split_at_mut(r.len() * cols);
                let target = match target {
                    Target::Hard(labels) => Target::Hard(&labels[r.clone()]),
                    Target::Soft(_) => Target::Soft(&*qs),
                };
                let x = SendPtr(xs.as_mut_ptr());
                let outs = (x, dst.map(|_| x), losses.map(|l| l.add(r.start)));
                Ok(ce::parts(
                    backend,
                    outs,
                    (r.len(), cols),
                    target,
                    opts,
                    &plan,
                ))
            },
        )?
    };
    Ok(plan.total(parts.into_iter().flatten()))
}

#[cfg(test)]
mod tests;
