"""Benchmark of fastsoftmax on Dask arrays: ``python -m fastsoftmax.bench.dask_cluster``.

One run on a ``distributed.LocalCluster`` of single-thread worker processes (2 by default), the
logits S1 (2048 x 32000 float32) cut into 4 x 4 blocks (the class axis split in 4), the loss and
gradient of ``cross_entropy_with_grad`` with integer labels:

Each time is the best of ``--repeats`` rounds that run the contenders one after the other.

- DT1: the cluster run / the in-process NumPy call (goal <= 2). Timed with the logits already on
  the workers and the loss and gradient left there (``persist``): the graph, the scheduling, the
  statistics moved between workers and the work itself. The round trip that also ships the logits
  from this process and gathers the gradient back is printed beside it;
- DT2: the same loss and gradient written with ``dask.array`` operations (``x - x.max``, ``exp``,
  ``sum``, ...) on the same cluster / the fastsoftmax graph (goal >= 4);
- DT3: the number of tasks of the graph for 2 x 2 up to 16 x 16 blocks (goal: a constant number per
  block), and the most input blocks that one task reads (goal: 1, no task holds a whole row).

The workers run without distributed's ``MALLOC_TRIM_THRESHOLD_`` (see ``run``; ``--malloc-trim``
keeps it). Options: ``--rows``, ``--cols``, ``--blocks`` (per axis), ``--workers``, ``--repeats``.
Needs
``fastsoftmax[dask]``. Only the public API of fastsoftmax is used.
"""

from __future__ import annotations

import argparse
import importlib
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastsoftmax as fs

DT1_MAX_RATIO = 2.0  # the cluster run may cost at most this many in-process NumPy calls
DT2_MIN_SPEEDUP = 4.0  # and must beat the dask.array formula by at least this factor
TASK_COUNT_BLOCKS = (2, 4, 8, 16)  # blocks per axis for the task-count table (DT3)
PRE_SPAWN_ENV = "distributed.nanny.pre-spawn-environ"


def _modules() -> Tuple[Any, Any]:
    try:
        da = importlib.import_module("dask.array")
        distributed = importlib.import_module("distributed")
    except ImportError as e:
        raise SystemExit(f"this benchmark needs fastsoftmax[dask] (dask and distributed): {e}")
    return da, distributed


def _side_by_side(fns: Dict[str, Callable[[], Any]], repeats: int) -> Dict[str, float]:
    """The best time of each function over `repeats` rounds that run them one after the other, so
    that a load from elsewhere on the machine hits all of them alike (the minimum is the run
    least disturbed by it)."""
    for fn in fns.values():
        fn()  # warm-up: imports, first allocations, worker caches
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}


def _once(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def dask_array_formula(da: Any, x: Any, target: Any) -> Tuple[Any, Any]:
    """The mean cross-entropy and its gradient as ``dask.array`` operations (the DT2 peer)."""
    n, c = x.shape
    m = x.max(axis=1, keepdims=True)
    e = da.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    onehot = da.arange(c, chunks=x.chunks[1])[None, :] == target[:, None]
    lse = m[:, 0] + da.log(s[:, 0])
    loss = (lse - da.where(onehot, x, 0).sum(axis=1)).mean()
    grad = (e / s - onehot) / np.float32(n)
    return loss, grad


def task_count(arrays: Sequence[Any]) -> int:
    graph: Dict[Any, Any] = {}
    for a in arrays:
        graph.update(dict(a.__dask_graph__()))
    return len(graph)


def blocks_read_per_task(x: Any, arrays: Sequence[Any]) -> int:
    """The most blocks of `x` that one task of the graph of `arrays` takes as direct inputs."""
    core = importlib.import_module("dask.core")
    graph: Dict[Any, Any] = {}
    for a in arrays:
        graph.update(dict(a.__dask_graph__()))
    keys = {k for k in graph if isinstance(k, tuple) and k[0] == x.name}
    return max(len(core.get_dependencies(graph, k) & keys) for k in graph)


def dt3_rows(da: Any, rows: int, cols: int) -> List[Tuple[int, int, int, int]]:
    """(blocks per axis, blocks, fastsoftmax tasks, dask.array formula tasks)."""
    out = []
    target = np.zeros(rows, dtype=np.int64)
    for nb in TASK_COUNT_BLOCKS:
        x = da.zeros((rows, cols), chunks=(-(-rows // nb), -(-cols // nb)), dtype=np.float32)
        t = da.from_array(target, chunks=x.chunks[0])
        ours = task_count(fs.cross_entropy_with_grad(x, t))
        peer = task_count(dask_array_formula(da, x, t))
        out.append((nb, x.npartitions, ours, peer))
    return out


def run(rows: int, cols: int, blocks: int, workers: int, repeats: int,
        malloc_trim: bool) -> Dict[str, Any]:
    da, distributed = _modules()
    dask = importlib.import_module("dask")
    if not malloc_trim:
        # distributed starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which also turns off
        # glibc's adaptive mmap threshold: every new block-sized array is then mapped fresh from
        # the kernel and page-faulted, which makes a memory-streaming kernel up to 3 times slower.
        dask.config.set({f"{PRE_SPAWN_ENV}.MALLOC_TRIM_THRESHOLD_": None})
    chunks = (-(-rows // blocks), -(-cols // blocks))
    rng = np.random.default_rng(0)
    x_np = (rng.standard_normal((rows, cols), dtype=np.float32) * 4).astype(np.float32)
    t_np = rng.integers(0, cols, rows)
    res: Dict[str, Any] = {"shape": (rows, cols), "chunks": chunks, "workers": workers,
                           "malloc_trim": malloc_trim}

    # One thread per worker for the kernels and the BLAS too: the cluster has `workers` cores.
    env = {k: "1" for k in ("FASTSOFTMAX_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None, env=env) as cluster, \
            distributed.Client(cluster) as client:
        x = client.persist(da.from_array(x_np, chunks=chunks))
        t = client.persist(da.from_array(t_np, chunks=chunks[0]))
        distributed.wait([x, t])

        def on_cluster(build: Callable[[], Tuple[Any, Any]]) -> Callable[[], None]:
            def go() -> None:
                out = client.persist(list(build()))
                distributed.wait(out)
                del out
            return go

        x_rows = client.persist(x.rechunk((chunks[0], cols)))  # the class axis whole
        distributed.wait(x_rows)
        times = _side_by_side({
            "numpy_s": lambda: fs.cross_entropy_with_grad(x_np, t_np),
            "cluster_s": on_cluster(lambda: fs.cross_entropy_with_grad(x, t)),
            "peer_s": on_cluster(lambda: dask_array_formula(da, x, t)),
            "rows_only_s": on_cluster(lambda: fs.cross_entropy_with_grad(x_rows, t)),
        }, repeats)
        res.update(times)

        def round_trip() -> None:
            xs = da.from_array(x_np, chunks=chunks)
            client.compute(list(fs.cross_entropy_with_grad(xs, t_np)), sync=True)

        res["round_trip_s"] = _once(round_trip)
        loss, grad = client.compute(list(fs.cross_entropy_with_grad(x, t)), sync=True)
        want_loss, want_grad = fs.cross_entropy_with_grad(x_np, t_np)
        res["max_grad_diff"] = float(np.abs(grad - want_grad).max())
        res["loss_diff"] = abs(float(loss) - float(want_loss))
        graph_arrays = fs.cross_entropy_with_grad(x, t)
        res["tasks"] = task_count(graph_arrays)
        res["blocks_per_task"] = blocks_read_per_task(x, graph_arrays)
    res["dt3"] = dt3_rows(da, rows, cols)
    return res


def blocks_rows(res: Dict[str, Any]) -> int:
    return -(-int(res["shape"][0]) // int(res["chunks"][0]))


def report(res: Dict[str, Any]) -> bool:
    rows, cols = res["shape"]
    print(f"cross_entropy_with_grad, {rows} x {cols} float32 in blocks of {res['chunks']}, "
          f"LocalCluster of {res['workers']} single-thread worker processes; fastsoftmax "
          f"{fs.__version__} ({fs.simd_backend()}), in-process NumPy call on "
          f"{fs.get_num_threads()} threads; workers' MALLOC_TRIM_THRESHOLD_ "
          f"{'as distributed sets it' if res['malloc_trim'] else 'unset'}")
    dt1 = res["cluster_s"] / res["numpy_s"]
    dt2 = res["peer_s"] / res["cluster_s"]
    per_block = [ours / nblk for _, nblk, ours, _ in res["dt3"]]
    # O(blocks): the tasks per block never grow with the number of blocks (they shrink towards a
    # constant as the fixed tasks of the graph are spread over more blocks).
    growing = any(b > a * 1.001 for a, b in zip(per_block, per_block[1:]))
    dt3 = not growing and res["blocks_per_task"] == 1
    print(f"  in-process NumPy call            {res['numpy_s'] * 1e3:9.1f} ms")
    print(f"  on the cluster (persisted)       {res['cluster_s'] * 1e3:9.1f} ms")
    print(f"  ... shipping logits, gathering   {res['round_trip_s'] * 1e3:9.1f} ms")
    whole = f"... the class axis whole ({blocks_rows(res)} x 1 blocks)"
    print(f"  {whole:33s}{res['rows_only_s'] * 1e3:9.1f} ms")
    print(f"  dask.array formula on cluster    {res['peer_s'] * 1e3:9.1f} ms")
    print(f"  agreement: |loss diff| {res['loss_diff']:.2e}, max |grad diff| "
          f"{res['max_grad_diff']:.2e}")
    print("  tasks of the graph (loss + gradient):")
    print("    blocks/axis  blocks  fastsoftmax  per block  dask.array formula")
    for nb, nblk, ours, peer in res["dt3"]:
        print(f"    {nb:11d}  {nblk:6d}  {ours:11d}  {ours / nblk:9.2f}  {peer:18d}")
    verdict = {True: "PASS", False: "FAIL"}
    print(f"DT1 cluster / NumPy            {dt1:6.2f}   goal <= {DT1_MAX_RATIO:g}   "
          f"{verdict[dt1 <= DT1_MAX_RATIO]}")
    print(f"DT2 dask.array / fastsoftmax   {dt2:6.2f}   goal >= {DT2_MIN_SPEEDUP:g}   "
          f"{verdict[dt2 >= DT2_MIN_SPEEDUP]}")
    print(f"DT3 {res['tasks']} tasks for {rows}x{cols} in {res['chunks']} blocks; tasks per block "
          f"{min(per_block):.2f}..{max(per_block):.2f}; at most {res['blocks_per_task']} input "
          f"block per task   {verdict[dt3]}")
    return dt1 <= DT1_MAX_RATIO and dt2 >= DT2_MIN_SPEEDUP and dt3


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastsoftmax.bench.dask_cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2048)
    p.add_argument("--cols", type=int, default=32000)
    p.add_argument("--blocks", type=int, default=4, help="blocks per axis (default 4: 4 x 4)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--malloc-trim", action="store_true",
                   help="keep distributed's MALLOC_TRIM_THRESHOLD_ for the workers")
    a = p.parse_args(argv)
    # The dask.array peer broadcasts a chunked arange against the labels; Dask warns about it.
    warnings.filterwarnings("ignore", message="Increasing number of chunks")
    ok = report(run(a.rows, a.cols, a.blocks, a.workers, a.repeats, a.malloc_trim))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
