"""Shared pieces of the functional core: result base class, moment resolution, distances."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from synthguard._errors import InvalidInputError
from synthguard._validation import as_embeddings, check_int, normalize_rows
from synthguard.stats import EmbeddingStats, Moments

__all__ = ["DEFAULT_BLOCK_SIZE", "Result", "as_moments", "check_block_size", "sq_dists"]

DEFAULT_BLOCK_SIZE = 1024
# Relative tolerance on the mean squared norm for metrics defined on unit vectors: float32
# encoders give ‖x‖² = 1 ± 1e-7; anything far off means the rows were never normalised.
_UNIT_TOL = 1e-4


class Result(BaseModel):
    """Base of the frozen, typed results returned by functions with several numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict of the fields (JSON-serialisable)."""
        return self.model_dump()


def as_moments(name: str, value: Any, *, unit: bool = False, min_rows: int = 1) -> Moments:
    """Resolve a tensor, array, :class:`Moments` or :class:`EmbeddingStats` to moments.

    An :class:`EmbeddingStats` contributes its image moments (pass ``stats.text`` for the
    captions). With ``unit=True`` tensor rows are L2-normalised first, and precomputed moments
    must come from unit-norm rows (mean squared norm 1), since a cosine cannot be recovered
    from the sums of un-normalised rows.
    """
    if isinstance(value, EmbeddingStats):
        if value.image.count == 0 and value.text.count > 0:
            raise InvalidInputError(
                f"{name} is an EmbeddingStats without image rows; pass {name}.text to use the "
                "caption embeddings"
            )
        value = value.image
    if isinstance(value, Moments):
        if value.count < min_rows:
            raise InvalidInputError(f"{name} must hold at least {min_rows} rows, got {value.count}")
        if unit and abs(value.mean_squared_norm - 1.0) > _UNIT_TOL:
            raise InvalidInputError(
                f"{name} must summarise unit-norm rows (mean squared norm 1 ± {_UNIT_TOL}), got "
                f"{value.mean_squared_norm:.6g}; L2-normalise embeddings before updating stats"
            )
        return value
    x = as_embeddings(name, value, min_rows=min_rows)
    if unit:
        x = normalize_rows(name, x)
    return Moments(x.shape[0], x.sum(dim=0), x.T @ x)


def check_block_size(block_size: Any) -> int:
    """Validate the ``block_size`` keyword of blockwise functions."""
    return check_int("block_size", block_size, minimum=1)


def sq_dists(
    a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor, b_sq: torch.Tensor
) -> torch.Tensor:
    """``[len(a), len(b)]`` squared Euclidean distances ``‖a‖² + ‖b‖² − 2ab``, clipped at 0.

    The same expansion as scikit-learn's ``euclidean_distances``, so thresholds agree with peer
    packages built on it; ``a_sq``/``b_sq`` are the precomputed squared row norms.
    """
    out = a @ b.T
    out.mul_(-2.0).add_(a_sq[:, None]).add_(b_sq[None, :])  # scikit-learn's order of operations
    return out.clamp_min_(0.0)
