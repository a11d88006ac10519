"""Calibration ahead of time: the batch tests' nulls a guard will need, computed and saved.

A guard computes the null at a batch size on its first check at that size (once per size and
reference). :meth:`Reference.calibrate` does it ahead, for the sizes of the batches a job will
check, so a training step never stalls on it; the nulls are saved with the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from synthguard._errors import InvalidInputError
from synthguard._threads import available_threads
from synthguard._validation import check_int

if TYPE_CHECKING:
    from synthguard.concepts import ConceptBank
    from synthguard.config import GuardConfig
    from synthguard.reference._reference import Reference

__all__ = ["calibrate_ahead"]


def calibrate_ahead(
    reference: Reference,
    batch_sizes: Sequence[int],
    config: GuardConfig | None = None,
    *,
    concept_banks: Sequence[ConceptBank] = (),
    threads: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[int, ...]:
    """Compute the nulls a :class:`~synthguard.Guard` with ``config`` needs for batches of
    ``batch_sizes`` samples; returns the row counts calibrated.

    A batch is tested at the largest grid size within its accepted samples, so each size
    brings its grid size and the one below (batches with down to ~70 % of their samples
    accepted meet a cached null).
    """
    # The plan decides everything a null depends on (checks, resamples, columns); it is built
    # on the reference, so it is imported here.
    from synthguard.guard._plan import GRID, GuardPlan

    if isinstance(batch_sizes, (str, bytes)) or not isinstance(batch_sizes, Sequence):
        raise InvalidInputError(
            f"batch_sizes must be a sequence of ints; got {type(batch_sizes).__name__}"
        )
    plan = GuardPlan.compile(reference, config, concept_banks)
    sizes: set[int] = set()
    for size in batch_sizes:
        rows = plan.rows_for(check_int("batch_sizes[i]", size, minimum=2))
        below = [g for g in GRID if g < rows]
        for grid in (rows, below[-1] if below else 0):
            if grid >= plan.config.min_batch_size:
                sizes.add(grid)
    args: dict[str, Any] = plan.null_arguments()
    for rows in sorted(sizes):
        reference.batch_null(
            rows, **args, device=device,
            threads=available_threads() if threads is None else threads, progress=progress,
        )  # fmt: skip
    return tuple(sorted(sizes))
