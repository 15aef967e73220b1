"""Argument checks shared by every backend: dtypes, axes and options (docs/api.md §2 and §5).

Everything here works on metadata (dtypes, shapes, Python scalars), never on array data, so it
knows no array library: the NumPy and CuPy backends (and any later one) call the same checks and
raise the same errors with the same messages.
"""

from __future__ import annotations

import inspect
import math
import operator
from typing import (
    Any, Callable, Dict, NamedTuple, Optional, ParamSpec, Sequence, Tuple, TypeVar, Union,
)

import numpy as np

Axis = Union[int, Sequence[int], None]

F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
REDUCTIONS = ("mean", "sum", "none")

P = ParamSpec("P")
R = TypeVar("R")


def same_parameters(model: Callable[P, Any]) -> Callable[[Callable[..., R]], Callable[P, R]]:
    """Gives the decorated function `model`'s parameters: for `help`, `inspect` and type checkers,
    while it receives the keyword options as ``**options`` (read with :func:`keywords`). A variant
    (the gradient beside the loss and gradient) so states its options once, in `model`."""

    def give(f: Callable[..., R]) -> Callable[P, R]:
        own = inspect.signature(f).return_annotation
        f.__signature__ = inspect.signature(model).replace(  # type: ignore[attr-defined]
            return_annotation=own)
        return f

    return give


def keyword_defaults(model: Callable[..., Any]) -> Dict[str, Any]:
    """The keyword-only parameters of `model` with their defaults, for :func:`keywords`."""
    return {
        p.name: p.default for p in inspect.signature(model).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def keywords(defaults: Dict[str, Any], options: Dict[str, Any], fname: str) -> Dict[str, Any]:
    """`defaults` updated by the caller's `options`; an unknown name is the TypeError Python raises
    for a misspelt keyword."""
    if not options.keys() <= defaults.keys():
        bad = sorted(options.keys() - defaults.keys())[0]
        raise TypeError(f"{fname}() got an unexpected keyword argument {bad!r}")
    return {**defaults, **options}


def is_bf16(dt: np.dtype) -> bool:
    """Whether `dt` is ml_dtypes' bfloat16 (matched by name: ml_dtypes stays optional)."""
    return dt.name == "bfloat16"


def is_half(dt: np.dtype) -> bool:
    return dt == F16 or is_bf16(dt)


def result_dtype(dt: np.dtype, what: str = "x") -> np.dtype:
    """The dtype a function returns for an input of dtype `dt`: float32/float64 and the half types
    keep theirs (in native byte order), integers and bool become float64; anything else is a
    ``TypeError``."""
    if dt.kind == "f":
        if not dt.isnative:
            dt = dt.newbyteorder("=")
        if dt.itemsize in (2, 4, 8):
            return dt
    elif dt.kind in "biu":
        return F64
    elif is_bf16(dt):
        return dt
    raise TypeError(f"{what} has unsupported dtype {dt}; expected a floating, integer or bool array")


def weights_shape(x: Tuple[int, ...], b: Tuple[int, ...]) -> Tuple[int, ...]:
    """The shape `x` and SciPy's weights `b` broadcast to (``ValueError`` naming both)."""
    try:
        return tuple(np.broadcast_shapes(x, b))
    except ValueError:
        raise ValueError(f"b of shape {b} does not broadcast against x of shape {x}") from None


def pair_shape(p: Tuple[int, ...], q: Tuple[int, ...]) -> Tuple[int, ...]:
    """The shape two distributions `p` and `q` broadcast to (``ValueError`` naming both)."""
    try:
        return tuple(np.broadcast_shapes(p, q))
    except ValueError:
        raise ValueError(f"p of shape {p} and q of shape {q} do not broadcast") from None


def compute_dtype(rdt: np.dtype) -> np.dtype:
    """The dtype the CPU kernels compute in for a result dtype: float32 for the half types."""
    return F32 if rdt.itemsize == 2 else rdt


def lse_result_dtype(a: np.dtype, b: np.dtype) -> np.dtype:
    """The result dtype of ``logsumexp(a, b=b)``: NumPy's promotion of the two, integer-only
    results becoming float64 (SciPy's rule)."""
    if a.kind in "biu" and b.kind in "biu":
        return F64
    return result_dtype(np.dtype(np.result_type(a, b)))


def axes(axis: Axis, ndim: int, allow_multiple: bool = True) -> Tuple[int, ...]:
    """`axis` as sorted non-negative axes of an array of `ndim` dimensions."""
    if type(axis) is int and axis == -1 and ndim:
        return (ndim - 1,)
    if axis is None:
        if not allow_multiple:
            raise TypeError("axis must be an int")
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        if not allow_multiple:
            raise TypeError("axis must be an int")
        out = tuple(one_axis(a, ndim) for a in axis)
        if len(set(out)) != len(out):
            raise ValueError(f"repeated axis in {axis!r}")
        return tuple(sorted(out))
    return (one_axis(axis, ndim),)


def one_axis(a: Any, ndim: int) -> int:
    try:
        a = operator.index(a)
    except TypeError:
        raise TypeError(f"axis must be an int, a tuple of ints or None, got {a!r}") from None
    if not -ndim <= a < ndim:
        raise ValueError(f"axis {a} is out of bounds for an array of dimension {ndim}")
    return int(a) % ndim


def inv_temperature(temperature: Any) -> float:
    """``1 / T`` for a temperature ``T``, which must be a finite number > 0."""
    if type(temperature) is float and temperature == 1.0:
        return 1.0
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(f"temperature must be a real number, got {temperature!r}") from None
    if not (t > 0.0 and math.isfinite(t)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return 1.0 / t


def base_scale(base: Any) -> float:
    """``1 / ln(base)``: the factor from nats to `base` units (1 for ``base=None``)."""
    if base is None:
        return 1.0
    try:
        b = float(base)
    except (TypeError, ValueError):
        raise TypeError(f"base must be a real number or None, got {base!r}") from None
    if not b > 0.0:
        raise ValueError(f"base must be > 0, got {base!r}")
    if b == 1.0:
        raise ValueError("base must not be 1 (log(1) = 0)")
    return 1.0 / math.log(b)


def out_array(out: Any, kind: Any, name: str, shape: Tuple[int, ...], dtype: np.dtype) -> Any:
    """`out` checked against the result it must hold: a writable array of type `kind` (called
    `name` in the message), of that shape and dtype."""
    if not isinstance(out, kind):
        raise ValueError(f"out must be a {name} ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"out has shape {out.shape}, expected {tuple(shape)}")
    if out.dtype != dtype:
        raise ValueError(f"out has dtype {out.dtype}, expected {dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out


def pair_dtypes(a: np.dtype, b: np.dtype, what: Tuple[str, str]) -> np.dtype:
    """The result dtype of two inputs: their common one when they agree (float16 stays float16),
    else the promotion of their compute dtypes."""
    ra, rb = result_dtype(a, what[0]), result_dtype(b, what[1])
    if ra == rb:
        return ra
    return np.dtype(np.result_type(compute_dtype(ra), compute_dtype(rb)))


# --------------------------------------------------------------------------------------------------
# the cross-entropy family


class CeOptions(NamedTuple):
    """The checked scalar options of one cross-entropy call."""

    reduction: str
    label_smoothing: float
    z_loss: float
    softcap: Optional[float]
    ignore_index: int


def ce_options(
    reduction: Any, label_smoothing: Any, z_loss: Any, softcap: Any, ignore_index: Any
) -> CeOptions:
    """The scalar options of the cross-entropy family, checked (ValueError / TypeError)."""
    if (
        type(label_smoothing) is float
        and label_smoothing == 0.0
        and type(z_loss) is float
        and z_loss == 0.0
        and softcap is None
        and ignore_index == -100
        and type(ignore_index) is int
        and type(reduction) is str
    ):
        plain = _PLAIN_OPTIONS.get(reduction)  # the defaults: nothing to check or build
        if plain is not None:
            return plain
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    eps = _number(label_smoothing, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    z = _number(z_loss, "z_loss")
    if not (z >= 0.0 and math.isfinite(z)):
        raise ValueError(f"z_loss must be a finite number >= 0, got {z_loss!r}")
    cap = None
    if softcap is not None:
        cap = _number(softcap, "softcap", " or None")
        if not (cap > 0.0 and math.isfinite(cap)):
            raise ValueError(f"softcap must be a finite number > 0, got {softcap!r}")
    try:
        ignore = operator.index(ignore_index)
    except TypeError:
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}") from None
    return CeOptions(str(reduction), eps, z, cap, ignore)


_PLAIN_OPTIONS = {r: CeOptions(r, 0.0, 0.0, None, -100) for r in REDUCTIONS}


def _number(v: Any, what: str, alt: str = "") -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number{alt}, got {v!r}") from None


def target_is_soft(
    dtype: np.dtype, shape: Tuple[int, ...], logits_shape: Tuple[int, ...], cax: int
) -> bool:
    """Whether a target of `dtype`/`shape` holds soft labels (else class indices), after checking
    its shape against logits of `logits_shape` with the classes along `cax`."""
    batch_shape = logits_shape[:cax] + logits_shape[cax + 1:]
    if dtype.kind in "iu":
        if shape != batch_shape:
            raise ValueError(
                f"class-index target must have shape {batch_shape} "
                f"(logits {logits_shape} without axis {cax}), got {shape}"
            )
        return False
    if dtype.kind == "f" or is_bf16(dtype):
        if shape != logits_shape:
            raise ValueError(
                f"soft-label target must have the logits' shape {logits_shape}, got {shape}"
            )
        return True
    raise TypeError(
        f"target must hold integer class indices or floating probabilities, got dtype {dtype}"
    )


def check_weight(dtype: np.dtype, shape: Tuple[int, ...], classes: int) -> None:
    """`weight` must be a real array of one value per class."""
    if dtype.kind not in "biuf" and not is_bf16(dtype):
        raise TypeError(f"weight has unsupported dtype {dtype}")
    if shape != (classes,):
        raise ValueError(f"weight must have shape ({classes},) (one per class), got {shape}")
