"""Joint split-conformal calibration of the per-sample checks on the real support.

Every check turns a sample into a *badness* score (larger is worse; see
:mod:`synthguard.checks._sample`). On the reference support the scores are leave-one-out, so a
held-out real sample is exchangeable with them. The thresholds are the upper order statistics
of each column at one common tail count ``r``: the largest for which the *union* of the checks
flags at most a fraction α of the real samples. α is therefore the calibrated false-reject rate
of the whole per-sample gate, not of each check alone (docs/design.md, "Decision rules").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["SampleCalibration"]


@dataclass(frozen=True)
class SampleCalibration:
    """Leave-one-out badness scores of the real support, one column per per-sample check."""

    names: tuple[str, ...]
    badness: torch.Tensor  # [s, T] float64, larger is worse; -inf where a check cannot fire

    def tail_count(self, alpha: float) -> int:
        """Largest ``r`` whose thresholds flag at most ``alpha · s`` support samples in union."""
        s = self.badness.shape[0]
        low, high = 0, s  # union_count is non-decreasing in r
        while low < high:
            mid = (low + high + 1) // 2
            if self._union_count(mid) <= alpha * s:
                low = mid
            else:
                high = mid - 1
        return low

    def thresholds(self, alpha: float) -> dict[str, float]:
        """Per check: flag a sample when its badness is strictly above this value."""
        r = self.tail_count(alpha)
        return {name: self._threshold(t, r) for t, name in enumerate(self.names)}

    def flags(self, alpha: float, only: tuple[str, ...] | None = None) -> torch.Tensor:
        """``[s]`` bool: support samples the calibrated checks flag (leave-one-out).

        ``only`` counts the flags of those checks alone (thresholds stay the joint ones).
        """
        thr = self.thresholds(alpha)
        names = self.names if only is None else only
        limits = torch.tensor([thr[n] for n in names], dtype=torch.float64)
        columns = [self.names.index(n) for n in names]
        return (self.badness[:, columns] > limits).any(dim=1)

    def select(self, names: tuple[str, ...]) -> SampleCalibration:
        """The calibration of a subset of the checks (the union is recalibrated over them)."""
        columns = [self.names.index(name) for name in names]
        return SampleCalibration(names=names, badness=self.badness[:, columns])

    def p_values(self, name: str, badness: torch.Tensor) -> torch.Tensor:
        """Conformal p-values ``(1 + #{support badness >= b}) / (s + 1)`` of new scores."""
        column = torch.sort(self.badness[:, self.names.index(name)]).values
        s = column.shape[0]
        at_least = s - torch.searchsorted(column, badness.contiguous(), right=False)
        return (1.0 + at_least.double()) / (s + 1.0)

    def _threshold(self, t: int, r: int) -> float:
        column = torch.sort(self.badness[:, t], descending=True).values
        return math.inf if r == 0 else float(column[min(r, column.shape[0]) - 1])

    def _union_count(self, r: int) -> int:
        # Flag strictly above the r-th largest value of each column; ties at it stay unflagged.
        # The limits stay float64: rounded to float32 they fell below some of the values they
        # came from, which then counted as above them (a smaller r, an unstable threshold).
        limits = [self._threshold(t, r) for t in range(len(self.names))]
        return int((self.badness > torch.tensor(limits, dtype=torch.float64)).any(dim=1).sum())
