"""Device and precision selection for the embedding engine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from synthguard._errors import InvalidInputError

__all__ = ["PRECISIONS", "autocast", "resolve_device", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; anything else must be a valid torch device."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise InvalidInputError(
            f"device must be 'auto' or a torch device string; got {type(device).__name__}"
        )
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise InvalidInputError(
            f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device={device!r} requested but CUDA is not available here")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"``: bf16 autocast on CUDA when supported, else fp16; fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for the forward pass; weights stay fp32, outputs are cast back later."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield
