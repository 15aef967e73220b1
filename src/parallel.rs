//! How work is split across threads. Every split is fixed by the shape alone (never by the thread
//! count), so results are bit-identical for any number of threads.

use rayon::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// Elements per parallel task: 64 Ki elements (256 KiB of f32) is ~20 µs of work at memory speed,
/// far above rayon's ~1 µs cost per task, and still gives every core several tasks on S1-sized inputs.
pub const GRAIN_ELEMS: usize = 1 << 16;

/// Inputs below this many elements run on the calling thread: waking the pool (~5-10 µs) would cost
/// more than the work (128 Ki f32 elements take ~25 µs on one core).
pub const PARALLEL_MIN_ELEMS: usize = 1 << 17;

/// Rows at least this long (512 KiB of f32, half of a Zen 4 L2) are split into segments across
/// threads, so a few huge rows (S5: 4 × 1,048,576) still use every core.
pub const SPLIT_ROW_MIN_COLS: usize = 1 << 17;

/// Segment length when a row is split: a fixed size (not a function of the thread count) so the
/// partial `(max, sum)` merge is the same for any number of threads; 64 Ki elements per task.
pub const SEGMENT: usize = 1 << 16;

/// The environment variable that sets the default thread count.
pub const THREADS_ENV: &str = "FASTSOFTMAX_NUM_THREADS";

struct Pool {
    threads: usize,
    /// The process that built the pool: after `fork` the child has none of its threads, so a pool
    /// inherited from the parent would hang; it is rebuilt on first use in the child.
    pid: u32,
    pool: Option<Arc<ThreadPool>>,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn default_threads() -> usize {
    std::env::var(THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn with_pool<R>(f: impl FnOnce(&mut Pool) -> R) -> R {
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    let stale = match &*guard {
        Some(p) => p.pid != pid,
        None => true,
    };
    if stale {
        let threads = guard.as_ref().map_or_else(default_threads, |p| p.threads);
        *guard = Some(Pool {
            threads,
            pid,
            pool: None,
        });
    }
    f(guard.as_mut().expect("pool initialised above"))
}

/// Sets the number of worker threads (at least 1).
pub fn set_num_threads(n: usize) {
    let n = n.max(1);
    with_pool(|p| {
        if p.threads != n {
            p.threads = n;
            p.pool = None;
        }
    });
}

/// The number of worker threads the kernels use.
pub fn get_num_threads() -> usize {
    with_pool(|p| p.threads)
}

/// The pool to run on, or `None` to stay on the calling thread.
fn pool_for(total_elems: usize) -> Option<Arc<ThreadPool>> {
    if total_elems < PARALLEL_MIN_ELEMS {
        return None;
    }
    with_pool(|p| {
        if p.threads <= 1 {
            return None;
        }
        if p.pool.is_none() {
            p.pool = ThreadPoolBuilder::new()
                .num_threads(p.threads)
                .thread_name(|i| format!("fastsoftmax-{i}"))
                .build()
                .ok()
                .map(Arc::new);
        }
        p.pool.clone()
    })
}

/// Rows per task for rows of `cols` elements.
pub fn chunk_rows(cols: usize) -> usize {
    (GRAIN_ELEMS / cols.max(1)).max(1)
}

/// Splits `0..n` into fixed ranges of `chunk` and maps each, in parallel when the work is large;
/// results come back in order.
pub fn map_ranges<R, F>(n: usize, chunk: usize, total_elems: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(Range<usize>) -> R + Sync + Send,
{
    let chunk = chunk.max(1);
    let tasks = n.div_ceil(chunk);
    let range = |t: usize| t * chunk..((t + 1) * chunk).min(n);
    match pool_for(total_elems) {
        Some(pool) if tasks > 1 => {
            pool.install(|| (0..tasks).into_par_iter().map(|t| f(range(t))).collect())
        }
        _ => (0..tasks).map(|t| f(range(t))).collect(),
    }
}

/// Like [`map_ranges`] for work that returns nothing.
pub fn for_ranges<F>(n: usize, chunk: usize, total_elems: usize, f: F)
where
    F: Fn(Range<usize>) + Sync + Send,
{
    map_ranges(n, chunk, total_elems, f);
}

/// Whether rows of `cols` are split into segments across threads. Decided by the shape alone so the
/// result does not depend on the thread count; such rows exceed L2 anyway, so splitting costs no
/// extra memory traffic.
pub fn split_rows(cols: usize) -> bool {
    cols >= SPLIT_ROW_MIN_COLS
}
