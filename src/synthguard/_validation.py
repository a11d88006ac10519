"""Shared argument checks: every message names the argument, the constraint and the value.

All numeric work in synthguard runs on float64 torch tensors on the caller's device; the
helpers here convert torch tensors and numpy arrays to that form once, at the API boundary.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from synthguard._errors import InvalidInputError

__all__ = [
    "as_embeddings",
    "as_vector",
    "check_edges",
    "check_float",
    "check_int",
    "check_labels",
    "check_same_device",
    "check_same_dim",
    "check_same_rows",
    "describe",
    "normalize_rows",
]

_MAX_REPR = 60


def describe(value: Any) -> str:
    """A short description of ``value`` for error messages (type and shape for arrays)."""
    if isinstance(value, torch.Tensor):
        return f"torch.Tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    if isinstance(value, np.ndarray):
        return f"numpy.ndarray(shape={value.shape}, dtype={value.dtype})"
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Return ``value`` as an ``int``, rejecting bools, floats and values below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInputError(f"{name} must be an integer, got {describe(value)}")
    if minimum is not None and value < minimum:
        raise InvalidInputError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite float in ``[low, high]``; ``*_open`` excludes that end."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{name} must be a real number, got {describe(value)}")
    out = float(value)
    if not math.isfinite(out):
        raise InvalidInputError(f"{name} must be finite, got {out}")
    if low is not None and (out <= low if low_open else out < low):
        raise InvalidInputError(f"{name} must be {'>' if low_open else '>='} {low}, got {out}")
    if high is not None and (out >= high if high_open else out > high):
        raise InvalidInputError(f"{name} must be {'<' if high_open else '<='} {high}, got {out}")
    return out


_CONVERT = "convert it first, e.g. np.asarray(x, dtype=np.float32) or np.stack(rows)"


def _to_tensor(name: str, value: Any) -> torch.Tensor:
    """``value`` as a real tensor; anything numpy cannot hold as real numbers is refused.

    Object, string, bytes, structured and datetime arrays are refused by dtype, never coerced
    (``np.asarray(["0.1"], dtype=float)`` would parse strings; an object array can hold
    anything). Nested sequences are read as numpy reads them, without a dtype, so the same rule
    applies; ragged rows are refused.
    """
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    elif isinstance(value, (np.ndarray, np.generic)) or (
        isinstance(value, Sequence) and not isinstance(value, (str, bytes))
    ):
        if isinstance(value, (np.ndarray, np.generic)):
            array = np.asarray(value)
        else:
            try:
                array = np.asarray(value)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise InvalidInputError(
                    f"{name} must be a rectangular array of numbers; rows of different lengths "
                    f"or mixed types cannot be ({exc}); got {describe(value)}"
                ) from exc
        if array.dtype.kind not in "biuf":
            what = describe(value) if isinstance(value, np.ndarray) else f"dtype={array.dtype}"
            raise InvalidInputError(
                f"{name} must hold real numbers (a float or integer dtype), got {what}; {_CONVERT}"
            )
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    else:
        raise InvalidInputError(
            f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}"
        )
    if tensor.is_complex():
        raise InvalidInputError(f"{name} must hold real numbers, got {describe(value)}")
    return tensor


def _embedding_tensor(name: str, value: Any) -> torch.Tensor:
    """:func:`_to_tensor`, and a boolean matrix (a mask passed by mistake) is refused."""
    tensor = _to_tensor(name, value)
    if tensor.dtype == torch.bool:
        raise InvalidInputError(
            f"{name} must hold real numbers, got booleans ({describe(value)}); an embedding "
            "matrix of True/False is most likely a mask passed by mistake"
        )
    return tensor


def as_embeddings(
    name: str,
    value: Any,
    *,
    min_rows: int = 1,
    dim: int | None = None,
    constraint: str = "",
) -> torch.Tensor:
    """Validate an ``[n, d]`` embedding matrix and return it as float64 on its own device.

    Args:
        name: argument name used in error messages.
        value: torch tensor, numpy array or nested sequence.
        min_rows: least number of rows ``n`` accepted.
        dim: required ``d``, if known.
        constraint: why ``min_rows`` is needed (e.g. ``"more than k=5"``), for the message.

    Raises:
        InvalidInputError: wrong type or rank, too few rows, wrong ``d``, NaN or inf entries.

    Example:
        >>> as_embeddings("x", np.eye(3)).dtype
        torch.float64
    """
    tensor = _embedding_tensor(name, value)
    if tensor.ndim != 2:
        raise InvalidInputError(
            f"{name} must be a 2-D array of shape [n, d], got shape {tuple(tensor.shape)}"
        )
    n, d = tensor.shape
    if n < min_rows:
        why = constraint or f"at least {min_rows}"
        raise InvalidInputError(f"{name} must have {why} rows, got {n} (shape {(n, d)})")
    if d < 1:
        raise InvalidInputError(f"{name} must have at least 1 column, got shape {(n, d)}")
    if dim is not None and d != dim:
        raise InvalidInputError(f"{name} must have d={dim} columns, got {d} (shape {(n, d)})")
    tensor = tensor.to(torch.float64)
    finite = torch.isfinite(tensor).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten()
        raise InvalidInputError(
            f"{name} must be finite; rows {bad[:5].tolist()} contain NaN or inf "
            f"({bad.numel()} of {n} rows)"
        )
    return tensor


def as_vector(name: str, value: Any, *, nonnegative: bool = False) -> torch.Tensor:
    """Validate a finite 1-D numeric vector and return it as float64 (``nonnegative`` optional)."""
    tensor = _to_tensor(name, value)
    if tensor.ndim != 1:
        raise InvalidInputError(f"{name} must be a 1-D array, got shape {tuple(tensor.shape)}")
    tensor = tensor.to(torch.float64)
    if not bool(torch.isfinite(tensor).all()):
        raise InvalidInputError(f"{name} must be finite, got NaN or inf entries")
    if nonnegative and bool((tensor < 0).any()):
        raise InvalidInputError(f"{name} must be non-negative, got min {float(tensor.min())}")
    return tensor


def check_same_dim(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Raise unless ``a`` and ``b`` have the same number of columns."""
    if a.shape[-1] != b.shape[-1]:
        raise InvalidInputError(
            f"{name_a} and {name_b} must have the same dimension d, "
            f"got {a.shape[-1]} and {b.shape[-1]}"
        )


def check_same_rows(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Raise unless ``a`` and ``b`` have the same number of rows (paired samples)."""
    if a.shape[0] != b.shape[0]:
        raise InvalidInputError(
            f"{name_a} and {name_b} must have the same number of rows (one per pair), "
            f"got {a.shape[0]} and {b.shape[0]}"
        )


def check_same_device(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Raise unless ``a`` and ``b`` live on the same device."""
    if a.device != b.device:
        raise InvalidInputError(
            f"{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}"
        )


def _stable_norms(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows scaled by their largest |value|, their L2 norms)``: a finite row of huge values
    (1e300) keeps its direction instead of overflowing to a norm of ``inf`` (and a zero row)."""
    scale = x.abs().amax(dim=1, keepdim=True) if x.numel() else x.new_ones(x.shape[0], 1)
    scaled = x / torch.where(scale > 0, scale, torch.ones_like(scale))
    return scaled, torch.linalg.vector_norm(scaled, dim=1)


def normalize_rows(name: str, x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` divided by their L2 norm; zero rows (cosine undefined) raise."""
    x, norms = _stable_norms(x)
    zero = norms == 0
    if bool(zero.any()):
        bad = torch.nonzero(zero).flatten()
        raise InvalidInputError(
            f"{name} rows must have non-zero norm for a cosine; rows {bad[:5].tolist()} are zero "
            f"({bad.numel()} of {x.shape[0]} rows)"
        )
    return x / norms[:, None]


def check_labels(name: str, labels: Any, n: int, num_labels: int) -> torch.Tensor:
    """``n`` integer labels in ``[0, num_labels)`` as an int64 CPU tensor."""
    raw = labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels
    lab = torch.as_tensor(np.asarray(raw))
    if lab.ndim != 1 or lab.shape[0] != n or (n and (lab.is_floating_point() or lab.is_complex())):
        raise InvalidInputError(f"{name} must be {n} integers, got {describe(labels)}")
    lab = lab.to(torch.int64)
    if n and (int(lab.min()) < 0 or int(lab.max()) >= num_labels):
        raise InvalidInputError(
            f"{name} must lie in [0, num_labels={num_labels}), "
            f"got min {int(lab.min())}, max {int(lab.max())}"
        )
    return lab


def check_edges(name: str, edges: Any, *, default: tuple[float, float, int]) -> torch.Tensor:
    """Strictly increasing finite edges as float64; ``None`` gives ``linspace(*default)``."""
    if edges is None:
        return torch.linspace(default[0], default[1], default[2], dtype=torch.float64)
    raw = edges.detach().cpu() if isinstance(edges, torch.Tensor) else edges
    try:
        t = torch.as_tensor(np.asarray(raw, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be numbers, got {describe(edges)}") from exc
    if t.ndim != 1 or t.numel() < 2 or not bool(torch.isfinite(t).all()):
        raise InvalidInputError(f"{name} must be >= 2 finite values, got {describe(edges)}")
    if not bool((t[1:] > t[:-1]).all()):
        raise InvalidInputError(f"{name} must be strictly increasing")
    return t.contiguous()


def check_label_range(labels: Sequence[int], num_labels: int, name: str = "labels") -> None:
    """Raise if a label is outside ``[0, num_labels)`` (one per ``label_names`` entry)."""
    for i, label in enumerate(labels):
        if not 0 <= label < num_labels:
            raise InvalidInputError(
                f"{name}[{i}] must be a class index in [0, {num_labels}) (one per label_names "
                f"entry); got {label}"
            )


def unit_rows_or_nan(name: str, value: Any, dim: int, n: int | None = None) -> torch.Tensor:
    """``[n, dim]`` float64 CPU unit rows; a non-finite or zero row becomes a NaN row.

    NaN rows are how the engine marks unembeddable samples (``on_error="nan"``); they must flow
    through to per-sample reasons rather than fail the whole batch.
    """
    value = _embedding_tensor(name, value)
    if value.ndim != 2 or value.shape[1] != dim:
        raise InvalidInputError(
            f"{name} must have shape [n, {dim}] (the encoder's dim); got {tuple(value.shape)}"
        )
    if n is not None and value.shape[0] != n:
        raise InvalidInputError(f"{name} must have one row per sample ({n}); got {value.shape[0]}")
    x = value.detach().to("cpu", torch.float64)
    finite = torch.isfinite(x).all(dim=1)
    x, norms = _stable_norms(torch.where(finite[:, None], x, torch.zeros_like(x)))
    ok = finite & (norms > 0)
    out = torch.full_like(x, math.nan)
    out[ok] = x[ok] / norms[ok, None]
    return out
