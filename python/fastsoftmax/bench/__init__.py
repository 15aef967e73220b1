"""Benchmark program of fastsoftmax: ``python -m fastsoftmax.bench``.

One process run follows the method of ``docs/benchmarks.md``:

1. the machine's memory ceilings, measured with NumPy on a 256 MiB float32 array split into one slice
   per thread (``np.copyto`` for copy bandwidth; for read bandwidth the fastest of several NumPy
   reductions, since each can only understate the bus), thread count ``fastsoftmax.get_num_threads()``;
2. the workloads of every registered suite; today the row workloads S1-S5 and S1d × softmax,
   log_softmax, logsumexp, cross_entropy and cross_entropy_with_grad, for fastsoftmax (preallocated
   ``out=`` and allocating) and its peers: the NumPy textbook formula, SciPy, PyTorch CPU and JAX CPU
   when importable;
3. the targets of every suite (T1-T7 today) with PASS/FAIL, in one table.

Options: ``--quick`` (smaller shapes, fewer repeats, under a minute), ``--markdown`` (Markdown tables),
``--plot FILE.png`` (needs matplotlib), ``--threads N``, ``--only S1,S3``, ``--ops softmax,logsumexp``,
``--no-peers torch,jax``, ``--repeats N``, plus the flags suites add.

This package is never imported by ``import fastsoftmax``; it needs only NumPy and the public
fastsoftmax functions. SciPy, PyTorch, JAX and matplotlib are optional: a missing or failing peer is
reported in the table.

Modules: ``workloads`` (shapes, operations, bytes moved), ``ceilings`` (memory ceilings), ``timing``
(warm-up and median), ``peers`` (fastsoftmax, NumPy, SciPy, PyTorch, JAX implementations), ``run``
(one row workload: check and time every implementation), ``report`` (tables, legend, plot),
``targets`` (checks against goals), ``suite`` (the plug-in point), ``rows`` (the S1-S5 suite),
``cli`` (the command line).

Adding a group of workloads (a fused classifier head, Dask arrays, PyTorch tensors, half types):

1. Write one module here, say ``linear.py``, ending in ``SUITE = Suite(name, ids=..., run=...)``:

   - ``ids(args)`` returns the workload ids it would run (``["L1", "L2"]``); ``--only`` picks among them;
   - ``run(ctx, ids)`` measures those ids, prints its sections with ``ctx.heading`` / ``ctx.emit`` and
     returns ``SuiteOutcome(targets=[Target("LT1", ..., [Check(...)])], results={...})``. Row-shaped
     workloads reuse ``rows.run_rows`` (with their own ``Workload`` table, e.g. float16 S1) and
     ``targets.RowChecks``; others time with ``timing.measure`` and build ``report.Table``\\ s;
   - optional ``add_arguments(parser)`` adds its flags (``--dask``) and ``enabled(args)`` makes it
     opt-in (``lambda args: args.dask``).

2. Add the module's name to ``suite.SUITE_MODULES`` (the order in which suites run and print).

Use only the public fastsoftmax API (``ctx.fs``) and import optional libraries with
``peers.optional_import`` so the strict type check holds without them.
"""

from .cli import main

__all__ = ["main"]
