"""The benchmark program's bookkeeping (``python -m fastsoftmax.bench``): bytes moved, the answer check
that marks a wrong implementation, the ceiling choice, the tables, the targets and the command line.
Nothing here asserts a speed (docs/benchmarks.md: benchmarks are not tests)."""

from __future__ import annotations

import numpy as np
import pytest

from fastsoftmax.bench import ceilings, cli, peers, report, rows, run, targets, workloads
from fastsoftmax.bench.suite import load_suites

import fastsoftmax as fs


def test_bytes_moved_counts_each_input_and_output_once():
    n, c = 7, 13
    for s in (2, 4, 8):
        x = n * c * s
        assert workloads.bytes_moved("softmax", n, c, s) == 2 * x
        assert workloads.bytes_moved("log_softmax", n, c, s) == 2 * x
        assert workloads.bytes_moved("logsumexp", n, c, s) == x + n * s
        assert workloads.bytes_moved("cross_entropy", n, c, s) == x + 8 * n
        assert workloads.bytes_moved("cross_entropy_with_grad", n, c, s) == 2 * x + 8 * n
    with pytest.raises(ValueError):
        workloads.bytes_moved("softmin", n, c, 4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_peer_agrees_with_fastsoftmax_on_every_op(dtype):
    xs, ys = workloads.make_inputs(workloads.Workload(5, 37, dtype, "test"), 2)
    assert xs[0].dtype == np.dtype(dtype) and ys[0].dtype == np.int64
    for op in workloads.OPS:
        ref = run.summarize(peers.fastsoftmax_impl(fs, False)(op, xs, ys)(1))
        got = run.summarize(peers.numpy_impl(op, xs, ys)(1))
        assert run.agrees(got, ref, np.dtype(dtype)), op
        bad = got.copy()
        bad[-1] += 1e-2 * max(1.0, abs(bad[-1]))
        assert not run.agrees(bad, ref, np.dtype(dtype)), op


def test_out_variant_writes_into_one_buffer_and_matches_allocating():
    xs, ys = workloads.make_inputs(workloads.Workload(3, 11, "float32", "test"), 2)
    with_out = peers.fastsoftmax_impl(fs, True)
    alloc = peers.fastsoftmax_impl(fs, False)
    call = with_out("softmax", xs, ys)
    a, b = call(0), call(1)
    assert a is b  # the same preallocated out=
    np.testing.assert_array_equal(b, alloc("softmax", xs, ys)(1))
    with pytest.raises(peers.Unsupported):
        with_out("cross_entropy", xs, ys)


def _ceilings() -> ceilings.Ceilings:
    return ceilings.Ceilings(copy_bps=1e10, read_bps=1e10, nbytes=1, threads=1, copy_ms=1.0, read_ms=1.0)


def test_run_workload_marks_a_wrong_peer_and_reports_a_failing_one():
    def wrong(op, xs, ys):
        good = peers.numpy_impl(op, xs, ys)
        return lambda i: run.summarize(good(i)) * 1.01

    impls = [(peers.FS_OUT, peers.fastsoftmax_impl(fs, True)), ("wrong", wrong),
             ("broken", ImportError("no module named broken"))]
    spec = workloads.Workload(4, 9, "float32", "test")
    res = run.run_workload("T", spec, ["softmax", "logsumexp"], impls, _ceilings(), 1, 0.0, lambda _m: None)
    for op in ("softmax", "logsumexp"):
        assert res.get(op, peers.FS_OUT).check == "ref"
        assert res.get(op, "wrong").check == "DIFFERS"
        assert res.get(op, "broken").error.startswith("ImportError")
        r = res.timed(op, peers.FS_OUT)
        assert r is not None and r.reps >= 1
        assert r.bytes_per_s == pytest.approx(workloads.bytes_moved(op, 4, 9, 4) / (r.ms / 1e3))
    text = report.workload_table(res).render(markdown=False)
    assert "DIFFERS" in text and "ImportError" in text


def test_read_ceiling_is_the_fastest_estimator(monkeypatch):
    monkeypatch.setattr(ceilings, "CEILING_BYTES", 4 << 20)
    c = ceilings.measure_ceilings(threads=2, reps=1)
    assert set(c.read_ms_by_estimator) == set(ceilings.READ_ESTIMATORS)
    assert c.read_ms == min(c.read_ms_by_estimator.values())
    assert c.read_ms_by_estimator[c.read_best] == c.read_ms
    assert c.read_bps == pytest.approx(c.nbytes / (c.read_ms / 1e3))
    assert c.copy_bps == pytest.approx(2 * c.nbytes / (c.copy_ms / 1e3))


def test_read_estimators_read_every_element():
    s = np.arange(2 * ceilings.SLICE_ALIGN, dtype=np.float32)
    assert float(ceilings.READ_ESTIMATORS["sum"][1](s)) == float(s.sum(dtype=np.float64))
    assert float(ceilings.READ_ESTIMATORS["max"][1](s)) == s[-1]
    assert int(ceilings.READ_ESTIMATORS["uint32 max"][1](s)) == int(s[-1:].view(np.uint32)[0])
    dot = ceilings.READ_ESTIMATORS["dot"][1](s)
    # A float32 dot: a plain (not pairwise) BLAS, as Debian's reference one, rounds to ~2e-5 here.
    np.testing.assert_allclose(dot, s.reshape(2, -1).sum(axis=1, dtype=np.float64), rtol=1e-4)


def test_table_renders_plain_and_markdown():
    t = report.Table(["a", "b"], "lr")
    t.add(["x|y", "1"])
    t.add(["long cell", "22"])
    assert t.render(False).splitlines() == ["a           b", "---------  --", "x|y         1", "long cell  22"]
    assert t.render(True).splitlines() == ["| a | b |", "| --- | ---: |", "| x\\|y | 1 |", "| long cell | 22 |"]


def test_targets_pass_fail_and_not_measured():
    res = run.WorkloadResult("S1", 2, 3, "float32", "", False)
    res.rows += [
        run.Row("S1", "softmax", peers.FS_OUT, ms=1.0, roofline=0.9),
        run.Row("S1", "softmax", "NumPy", ms=5.0),
        run.Row("S1", "softmax", "JAX", error="ModuleNotFoundError"),
    ]
    c = targets.RowChecks({"S1": res})
    assert c.roofline("S1", "softmax", peers.FS_OUT, 0.8).status == "PASS"
    assert c.speedup("S1", "softmax", peers.FS_OUT, "NumPy", 6).status == "FAIL"
    jax = c.speedup("S1", "softmax", peers.FS_OUT, "JAX", 2)
    assert jax.status == "N/A" and "ModuleNotFoundError" in jax.shown()[1]
    assert c.roofline("S3", "softmax", peers.FS_OUT, 0.6).shown()[1] == "workload not run"
    _, counts = targets.targets_table([targets.Target("T", "w", [
        c.roofline("S1", "softmax", peers.FS_OUT, 0.8), c.speedup("S1", "softmax", peers.FS_OUT, "NumPy", 6),
        jax, targets.Check("median call", 2.0, 3.0, "max", " µs")])])
    assert counts == {"PASS": 2, "FAIL": 1, "N/A": 1}
    ids = [t.tid for t in rows.core_targets({"S1": res})]
    assert ids == ["T1", "T2", "T3", "T4", "T5", "T6", "T7"]


def test_suites_and_command_line_errors(capsys):
    suites = load_suites()
    assert [s.name for s in suites] == [
        "rows", "row widths", "fused classifier head", "Dask arrays", "fastsoftmax.torch"
    ]
    args = cli._parser(suites).parse_args(["--quick", "--only", "s3,S1D"])
    chosen = cli._choose(args, suites)
    assert chosen is not None and {k: v for k, v in chosen.items() if v} == {"rows": ["S3", "S1d"]}
    # The opt-in suites run only with their flag.
    args = cli._parser(suites).parse_args(["--quick", "--torch", "--only", "PT"])
    chosen = cli._choose(args, suites)
    assert chosen is not None and {k: v for k, v in chosen.items() if v} == {
        "fastsoftmax.torch": ["PT"]
    }
    args = cli._parser(suites).parse_args(["--widths"])
    chosen = cli._choose(args, suites)
    assert chosen is not None and chosen["row widths"] == ["W"] and chosen["rows"]
    for argv in (["--only", "S9"], ["--ops", "softmax,nope"], ["--threads", "0"]):
        assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown workload(s) S9" in err and "unknown op(s) nope" in err and "--threads" in err
