"""``Moments``: count, sum and sum of outer products of one set of embeddings."""

from __future__ import annotations

from typing import Any

import torch

from synthguard._errors import InvalidInputError
from synthguard._validation import as_embeddings

__all__ = ["Moments"]


class Moments:
    """Count, sum and sum of outer products of one set of embeddings, with derived moments.

    Example:
        >>> m = Moments.from_embeddings(torch.eye(2, dtype=torch.float64))
        >>> m.count, m.mean.tolist()
        (2, [0.5, 0.5])
    """

    __slots__ = ("count", "sum", "sum_outer")

    def __init__(self, count: int, sum: torch.Tensor, sum_outer: torch.Tensor) -> None:
        self.count = int(count)
        self.sum = sum.to(torch.float64)
        self.sum_outer = sum_outer.to(torch.float64)

    @classmethod
    def from_embeddings(cls, x: Any, *, name: str = "x") -> Moments:
        """Moments of an ``[n, d]`` tensor or array (accumulated in float64)."""
        t = as_embeddings(name, x)
        return cls(t.shape[0], t.sum(dim=0), t.T @ t)

    @property
    def dim(self) -> int:
        """Embedding dimension ``d``."""
        return int(self.sum.shape[0])

    @property
    def mean(self) -> torch.Tensor:
        """``[d]`` mean, derived from the sum."""
        self._require(1, "a mean")
        return self.sum / self.count

    @property
    def covariance(self) -> torch.Tensor:
        """``[d, d]`` population covariance (divided by ``n``)."""
        return self.cov(ddof=0)

    @property
    def mean_squared_norm(self) -> float:
        """Mean of ``‖x‖²`` over rows (1 for unit-norm embeddings)."""
        self._require(1, "a mean squared norm")
        return float(torch.trace(self.sum_outer)) / self.count

    def cov(self, ddof: int = 0) -> torch.Tensor:
        """``[d, d]`` covariance ``(Σxxᵀ − n·μμᵀ) / (n − ddof)``, exactly symmetric."""
        self._require(ddof + 1, f"a covariance with ddof={ddof}")
        centred = self.sum_outer - torch.outer(self.sum, self.sum) / self.count
        cov = centred / (self.count - ddof)
        return (cov + cov.T) / 2

    def _require(self, n: int, what: str) -> None:
        if self.count < n:
            raise InvalidInputError(f"{what} needs at least {n} embeddings, got count={self.count}")

    def __repr__(self) -> str:
        return f"Moments(count={self.count}, dim={self.dim})"
