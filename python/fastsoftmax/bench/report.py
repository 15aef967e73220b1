"""Output: plain-text or Markdown tables, the method legend, and the optional plot."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

from .ceilings import READ_ESTIMATORS, Ceilings
from .peers import FS_ALLOC, FS_OUT, optional_import
from .run import Row, WorkloadResult
from .workloads import OP_BYTES_FORMULA, OP_CEILING, OPS

SMALLEST_FIXED_MS = 1e-4  # below this, milliseconds are printed in exponent notation


def fmt_ms(ms: float) -> str:
    """Milliseconds with four significant digits (0.009610 = 9.61 µs)."""
    return f"{ms:#.4g}".rstrip(".") if ms >= SMALLEST_FIXED_MS else f"{ms:.3e}"


def fmt_rate(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.2f} {unit}"
    return f"{v:.0f} "


class Table:
    def __init__(self, header: Sequence[str], align: str) -> None:
        self.header = list(header)
        self.align = align  # one of "l"/"r" per column
        self.rows: List[List[str]] = []

    def add(self, cells: Sequence[str]) -> None:
        self.rows.append(list(cells))

    def render(self, markdown: bool) -> str:
        if markdown:
            esc = [[c.replace("|", "\\|") for c in r] for r in [self.header] + self.rows]
            sep = ["---:" if a == "r" else "---" for a in self.align]
            lines = ["| " + " | ".join(esc[0]) + " |", "| " + " | ".join(sep) + " |"]
            lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
            return "\n".join(lines)
        widths = [max(len(r[i]) for r in [self.header] + self.rows) for i in range(len(self.header))]

        def line(r: Sequence[str]) -> str:
            cells = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, self.align)]
            return "  ".join(cells).rstrip()

        out = [line(self.header), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in self.rows]
        return "\n".join(out)


def ceilings_table(c: Ceilings) -> Table:
    """Copy, the read ceiling kept, and every read estimator it was chosen from."""
    t = Table(["ceiling", "how", "median ms", "GB/s"], "llrr")
    t.add(["copy", "np.copyto per slice; bytes read + written", f"{c.copy_ms:.2f}", f"{c.copy_bps / 1e9:.2f}"])
    best_how = READ_ESTIMATORS[c.read_best][0]
    t.add(["read", f"fastest read below ({best_how}); bytes read", f"{c.read_ms:.2f}", f"{c.read_bps / 1e9:.2f}"])
    for name, ms in c.read_ms_by_estimator.items():
        how = READ_ESTIMATORS[name][0] + " per slice"
        t.add([f"  read: {name}", how, f"{ms:.2f}", f"{c.nbytes / (ms / 1e3) / 1e9:.2f}"])
    return t


def method_lines(min_reps: int) -> List[str]:
    """The legend of the workload tables; lines starting with two spaces are sub-items."""
    legend = [
        "median of >= %d timed calls (time.perf_counter) after one warm-up call; inputs that fit in the "
        "last-level cache rotate between two arrays; more calls are taken for short rows" % min_reps,
        "elem/s = N*C input elements per second; GB/s = bytes moved / median time, bytes moved (s = itemsize):",
    ]
    legend += [f"  {op}: {OP_BYTES_FORMULA[op]}  [ceiling: {OP_CEILING[op]}]" for op in OPS]
    legend += [
        "roofline = GB/s / the matching ceiling (copy for ops that write an array, read for reductions; "
        "read = the fastest of several NumPy reads, each of which can only understate the bus)",
        "speed-up = peer median / fastsoftmax median (with out= preallocated / allocating its result)",
        "check = the result on the first input agrees with fastsoftmax's (rtol 1e-3 float32, 1e-9 float64)",
        "NumPy = textbook formula (x - max, exp, sum, divide), single-threaded; PyTorch via torch.from_numpy "
        "(zero-copy), inference_mode, set_num_threads = ours; JAX under jax.jit + block_until_ready",
    ]
    return legend


def fs_reference_row(res: WorkloadResult, op: str, which: str) -> Optional[Row]:
    """The fastsoftmax row a peer is compared with: ``which`` = "out" (preallocated, falling back to
    the allocating call for functions without out=) or "alloc"."""
    if which == "out":
        r = res.timed(op, FS_OUT)
        if r is not None:
            return r
    return res.timed(op, FS_ALLOC)


def workload_table(res: WorkloadResult) -> Table:
    t = Table(
        ["op", "impl", "median ms", "elem/s", "GB/s", "roofline", "fastsoftmax speed-up (out= / alloc)", "check"],
        "llrrrrrl",
    )
    for r in res.rows:
        if r.ms is None:
            if r.error == "—" or r.error is None:
                continue  # operation the peer does not have, or a row that was never run
            t.add([r.op, r.impl, "—", "—", "—", "—", r.error, ""])
            continue
        speed = ""
        if not r.impl.startswith("fastsoftmax"):
            ro, ra = fs_reference_row(res, r.op, "out"), fs_reference_row(res, r.op, "alloc")
            parts = [f"{r.ms / x.ms:.1f}×" if x is not None and x.ms else "—" for x in (ro, ra)]
            speed = " / ".join(parts)
        t.add(
            [
                r.op,
                r.impl,
                fmt_ms(r.ms),
                fmt_rate(r.elem_per_s or 0.0),
                f"{(r.bytes_per_s or 0.0) / 1e9:.1f}",
                f"{r.roofline or 0.0:.2f} {OP_CEILING[r.op]}",
                speed,
                r.check,
            ]
        )
    return t


def input_line(res: WorkloadResult, itemsize: int) -> str:
    """The input's size and whether calls rotate between two inputs."""
    size = res.n * res.c * itemsize
    shown = f"input {size / 1e6:.1f} MB, " if size >= 100_000 else f"input {size / 1e3:.2f} kB, "
    if res.rotated:
        return shown + (
            "fits in the LLC: calls rotate between two inputs (a roofline above 1 means the data "
            "stayed in cache; the ceilings are DRAM's)"
        )
    return shown + "one input (larger than the LLC)"


# Plot geometry: at most this many panels a row, inches per panel, legend columns.
PLOT_COLS = 3
PANEL_W_IN, PANEL_H_IN = 6.5, 4.5
LEGEND_COLS = 8
PLOT_DPI = 110


def plot(results: Dict[str, WorkloadResult], ceilings: Ceilings, path: str) -> None:
    """GB/s per operation and implementation, one panel per workload, with the ceilings as lines."""
    matplotlib = optional_import("matplotlib")
    matplotlib.use("Agg")
    plt = optional_import("matplotlib.pyplot")

    wids = list(results)
    ncols = min(PLOT_COLS, len(wids))
    nrows = math.ceil(len(wids) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(PANEL_W_IN * ncols, PANEL_H_IN * nrows), squeeze=False)
    impl_names: List[str] = []
    for res in results.values():
        for r in res.rows:
            if r.impl not in impl_names:
                impl_names.append(r.impl)
    colors = {name: f"C{i}" for i, name in enumerate(impl_names)}
    for k, wid in enumerate(wids):
        ax = axes[k // ncols][k % ncols]
        res = results[wid]
        ops = [op for op in OPS if any(r.op == op for r in res.rows)]
        width = 0.8 / max(1, len(impl_names))
        for j, name in enumerate(impl_names):
            xsv, hs = [], []
            for i, op in enumerate(ops):
                got = res.get(op, name)
                if got is not None and got.bytes_per_s:
                    xsv.append(i + (j - (len(impl_names) - 1) / 2) * width)
                    hs.append(got.bytes_per_s / 1e9)
            if hs:  # an implementation that gave no number (not installed) gets no legend entry
                ax.bar(xsv, hs, width=width, color=colors[name], label=name)
        ax.axhline(ceilings.copy_bps / 1e9, color="k", ls="--", lw=1, label="copy ceiling")
        ax.axhline(ceilings.read_bps / 1e9, color="k", ls=":", lw=1, label="read ceiling")
        ax.set_xticks(range(len(ops)))
        ax.set_xticklabels([op.replace("cross_entropy", "CE").replace("_with_grad", "+grad") for op in ops],
                           rotation=20)
        ax.set_ylabel("GB/s (bytes an ideal kernel moves)")
        ax.set_title(f"{wid}: {res.n} × {res.c} {res.dtype}")
    for k in range(len(wids), nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    # Every panel's entries, each once, in the order of the implementations.
    legend: Dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    order = ["copy ceiling", "read ceiling"] + [n for n in impl_names if n in legend]
    fig.legend([legend[n] for n in order], order, loc="lower center", ncol=min(LEGEND_COLS, len(order)))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)
