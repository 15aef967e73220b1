"""The implementations timed side by side: fastsoftmax itself and its peers.

Each implementation is a *factory*: ``factory(op, xs, ys)`` gets an operation name and the inputs to
rotate over and returns ``call(i) -> result``, where the result is what the check compares (an array,
a scalar, or ``(loss, grad)``). A factory raises :class:`Unsupported` for an operation it does not
have, and may have a ``release()`` method that frees what it copied once a workload is done.

Optional libraries (SciPy, PyTorch, JAX) are imported with :func:`optional_import`, typed ``Any``,
so the strict type check holds whether or not they are installed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Set, Tuple, Union

import numpy as np

from .workloads import Array

Call = Callable[[int], Any]

FS_OUT = "fastsoftmax out="
FS_ALLOC = "fastsoftmax alloc"


class Unsupported(Exception):
    """The peer has no such operation (shown as "—" and not as an error)."""


class Factory(Protocol):
    def __call__(self, op: str, xs: List[Array], ys: List[Array]) -> Call: ...


def optional_import(name: str) -> Any:
    """Import an optional module; the caller reports the ImportError."""
    return importlib.import_module(name)


def fastsoftmax_impl(fs: Any, with_out: bool) -> Factory:
    """The public functions, with a preallocated ``out=`` or allocating their result."""

    def make(op: str, xs: List[Array], ys: List[Array]) -> Call:
        x0 = xs[0]
        if op == "cross_entropy":
            if with_out:
                raise Unsupported("no out=")
            return lambda i: fs.cross_entropy(xs[i], ys[i])
        if op not in ("softmax", "log_softmax", "logsumexp", "cross_entropy_with_grad"):
            raise Unsupported(op)
        f = getattr(fs, op)
        takes_labels = op == "cross_entropy_with_grad"
        if not with_out:
            return (lambda i: f(xs[i], ys[i])) if takes_labels else (lambda i: f(xs[i]))
        out = np.empty(x0.shape[0], dtype=x0.dtype) if op == "logsumexp" else np.empty_like(x0)
        if takes_labels:
            return lambda i: f(xs[i], ys[i], out=out)
        return lambda i: f(xs[i], out=out)

    return make


def np_logsumexp(x: Array) -> Array:
    m = x.max(axis=-1, keepdims=True)
    lse: Array = (np.log(np.exp(x - m).sum(axis=-1, keepdims=True)) + m)[:, 0]
    return lse


def np_softmax(x: Array) -> Array:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    y: Array = e / e.sum(axis=-1, keepdims=True)
    return y


def np_log_softmax(x: Array) -> Array:
    s = x - x.max(axis=-1, keepdims=True)
    y: Array = s - np.log(np.exp(s).sum(axis=-1, keepdims=True))
    return y


def np_cross_entropy(x: Array, y: Array) -> Any:
    picked = x[np.arange(x.shape[0]), y]
    return (np_logsumexp(x) - picked).mean()


def np_cross_entropy_with_grad(x: Array, y: Array) -> Tuple[Any, Array]:
    n = x.shape[0]
    rows = np.arange(n)
    m = x.max(axis=-1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=-1, keepdims=True)
    lse = (np.log(s) + m)[:, 0]
    loss = (lse - x[rows, y]).mean()
    g = e
    g /= s
    g[rows, y] -= 1
    g /= n
    return loss, g


def numpy_impl(op: str, xs: List[Array], ys: List[Array]) -> Call:
    """The textbook stable formula: ``x - max``, ``exp``, ``sum``, divide."""
    one_arg: Dict[str, Callable[[Array], Any]] = {
        "softmax": np_softmax,
        "log_softmax": np_log_softmax,
        "logsumexp": np_logsumexp,
    }
    two_args: Dict[str, Callable[[Array, Array], Any]] = {
        "cross_entropy": np_cross_entropy,
        "cross_entropy_with_grad": np_cross_entropy_with_grad,
    }
    if op in one_arg:
        f1 = one_arg[op]
        return lambda i: f1(xs[i])
    if op in two_args:
        f2 = two_args[op]
        return lambda i: f2(xs[i], ys[i])
    raise Unsupported(op)


def scipy_impl(op: str, xs: List[Array], ys: List[Array]) -> Call:
    sp = optional_import("scipy.special")
    if op not in ("softmax", "log_softmax", "logsumexp"):
        raise Unsupported("SciPy has no cross-entropy")
    f = getattr(sp, op)
    return lambda i: f(xs[i], axis=-1)


def torch_impl(threads: int) -> Factory:
    """PyTorch CPU on zero-copy views, ``inference_mode``; the gradient by ``backward``."""
    torch = optional_import("torch")
    F = optional_import("torch.nn.functional")
    torch.set_num_threads(threads)
    forward: Dict[str, Callable[[Any, Any], Any]] = {
        "softmax": lambda x, _y: torch.softmax(x, -1),
        "log_softmax": lambda x, _y: torch.log_softmax(x, -1),
        "logsumexp": lambda x, _y: torch.logsumexp(x, -1),
        "cross_entropy": lambda x, y: F.cross_entropy(x, y),
    }

    def make(op: str, xs: List[Array], ys: List[Array]) -> Call:
        txs = [torch.from_numpy(x) for x in xs]  # zero-copy views of the same arrays
        tys = [torch.from_numpy(y) for y in ys]
        if op == "cross_entropy_with_grad":
            leaves = [t.detach().requires_grad_(True) for t in txs]

            def fwd_bwd(i: int) -> Tuple[Any, Any]:
                xg = leaves[i]
                xg.grad = None
                loss = F.cross_entropy(xg, tys[i])
                loss.backward()
                return loss.detach(), xg.grad

            return fwd_bwd
        if op not in forward:
            raise Unsupported(op)
        fn = forward[op]

        def no_grad(i: int) -> Any:
            with torch.inference_mode():
                return fn(txs[i], tys[i])

        return no_grad

    return make


class JaxImpl:
    """JAX CPU under ``jax.jit``, timed with ``block_until_ready``; inputs copied once to the device."""

    def __init__(self) -> None:
        jax = optional_import("jax")
        jax.config.update("jax_enable_x64", True)  # for S1d; float32 inputs stay float32
        jnp = optional_import("jax.numpy")
        jlse = optional_import("jax.scipy.special").logsumexp

        def ce(x: Any, y: Any) -> Any:
            picked = jnp.take_along_axis(x, y[:, None], axis=-1)[:, 0]
            return jnp.mean(jlse(x, axis=-1) - picked)

        self.jax = jax
        self.cpu = jax.devices("cpu")[0]
        self.fns: Dict[str, Any] = {
            "softmax": jax.jit(lambda x: jax.nn.softmax(x, axis=-1)),
            "log_softmax": jax.jit(lambda x: jax.nn.log_softmax(x, axis=-1)),
            "logsumexp": jax.jit(lambda x: jlse(x, axis=-1)),
            "cross_entropy": jax.jit(ce),
            "cross_entropy_with_grad": jax.jit(jax.value_and_grad(ce)),
        }
        self.live: List[Any] = []

    def __call__(self, op: str, xs: List[Array], ys: List[Array]) -> Call:
        if op not in self.fns:
            raise Unsupported(op)
        f, jax = self.fns[op], self.jax
        jxs = [jax.device_put(x, self.cpu) for x in xs]  # one copy, outside the timing
        jys = [jax.device_put(y, self.cpu) for y in ys]
        self.live.extend(jxs + jys)
        if op in ("cross_entropy", "cross_entropy_with_grad"):
            return lambda i: jax.block_until_ready(f(jxs[i], jys[i]))
        return lambda i: jax.block_until_ready(f(jxs[i]))

    def release(self) -> None:
        for a in self.live:
            try:
                a.delete()
            except Exception:  # noqa: BLE001 -- already freed or not deletable
                pass
        self.live.clear()


# An implementation, or why it could not be loaded (shown in its rows).
Impl = Tuple[str, Union[Factory, BaseException]]


@dataclass(frozen=True)
class Peer:
    """A peer library: its name in the tables, its key for ``--no-peers``, how to load it."""

    name: str
    key: str
    load: Callable[[int], Tuple[Factory, Optional[str]]]  # threads -> (factory, version or None)


def _numpy(_threads: int) -> Tuple[Factory, Optional[str]]:
    return numpy_impl, None  # NumPy's version is on the machine line already


def _scipy(_threads: int) -> Tuple[Factory, Optional[str]]:
    return scipy_impl, str(optional_import("scipy").__version__)


def _torch(threads: int) -> Tuple[Factory, Optional[str]]:
    factory = torch_impl(threads)
    torch = optional_import("torch")
    return factory, f"{torch.__version__} ({torch.get_num_threads()} threads)"


def _jax(_threads: int) -> Tuple[Factory, Optional[str]]:
    factory = JaxImpl()
    return factory, f"{optional_import('jax').__version__} (XLA's own CPU thread pool)"


PEERS: Tuple[Peer, ...] = (
    Peer("NumPy", "numpy", _numpy),
    Peer("SciPy", "scipy", _scipy),
    Peer("PyTorch", "torch", _torch),
    Peer("JAX", "jax", _jax),
)


def load_impls(fs: Any, threads: int, skip: Set[str]) -> Tuple[List[Impl], Dict[str, str]]:
    """fastsoftmax (``out=`` and allocating) and every peer not in ``skip``; a peer that fails to load
    is kept with its exception, so its rows say why."""
    impls: List[Impl] = [(FS_OUT, fastsoftmax_impl(fs, True)), (FS_ALLOC, fastsoftmax_impl(fs, False))]
    versions: Dict[str, str] = {}
    for peer in PEERS:
        if peer.key in skip:
            continue
        try:
            factory, version = peer.load(threads)
        except Exception as e:  # noqa: BLE001 -- a missing or broken peer is reported, not fatal
            impls.append((peer.name, e))
            continue
        impls.append((peer.name, factory))
        if version is not None:
            versions[peer.name] = version
    return impls, versions
