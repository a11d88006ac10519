"""What a guard's batch-test nulls depend on, and computing them ahead of time.

A guard computes the null at a batch size on its first check at that size (once per size and
reference). :meth:`Reference.calibrate` does it ahead, for the sizes of the batches a job will
check, so a training step never stalls on it; the nulls are saved with the reference. Both
derive the null's arguments here (:func:`null_spec`), so a precomputed null is the one the
guard looks up; :class:`~synthguard.guard.GuardPlan` builds on the same functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from synthguard._errors import InvalidInputError
from synthguard._threads import available_threads
from synthguard._validation import check_int
from synthguard.checks import RESAMPLED_TESTS, SAMPLE_CHECKS
from synthguard.concepts import ConceptBank
from synthguard.config import GuardConfig
from synthguard.reference._calibrated import CalibratedSupport

__all__ = [
    "GRID",
    "PREDICTED_CLASS",
    "NullSpec",
    "adds_class_group",
    "calibrate_ahead",
    "grid_size",
    "null_spec",
]

#: Sizes the batch tests run at: a geometric grid (ratio 2^¼). A batch is subsampled (seeded) to
#: the largest grid size it reaches, so batches whose accepted counts differ by a few samples
#: share one cached null distribution instead of recalibrating (at most 16% of rows unused).
GRID = tuple(sorted({round(2 ** (k / 4)) for k in range(4, 4 * 24)}))
#: The concept group of the frozen model's predicted classes (``GuardConfig.class_mix``).
PREDICTED_CLASS = "predicted_class"


def grid_size(n: int, *limits: int) -> int:
    """The largest grid size not above ``n`` or any limit (0 when below the grid)."""
    top = min((n, *limits))
    return max((g for g in GRID if g <= top), default=0)


@dataclass(frozen=True)
class NullSpec:
    """What a guard's resampled nulls depend on (the arguments of ``Reference.batch_null``).

    Attributes:
        checks: the enabled per-sample checks the reference calibrates, in config order.
        rejecting: those whose flag rejects a sample.
        resamples: ``n_resamples``, raised to what the Holm family needs when left default.
        family: the names of the tests in the Holm family (concept groups, class mix
            included).
    """

    config: GuardConfig
    checks: tuple[str, ...]
    rejecting: tuple[str, ...]
    resamples: int
    family: tuple[str, ...]

    def arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``Reference.batch_null`` (and ``has_batch_null``)."""
        cfg = self.config
        return {
            "alpha": cfg.alpha, "resamples": self.resamples, "seed": cfg.seed,
            "checks": self.checks, "rejecting": self.rejecting,
            "columns": [t for t in cfg.batch_tests if t in RESAMPLED_TESTS],
        }  # fmt: skip


def adds_class_group(
    reference: CalibratedSupport, config: GuardConfig, groups: Sequence[str]
) -> bool:
    """Whether a guard adds the reference's classes as the concept group
    :data:`PREDICTED_CLASS` (``GuardConfig.class_mix``, a reference with classes, no bank of
    that group already)."""
    has_classes = reference.has_labels and reference.label_names is not None
    return config.class_mix and has_classes and PREDICTED_CLASS not in groups


def null_spec(
    reference: CalibratedSupport, config: GuardConfig, groups: Sequence[str], *, class_bank: bool
) -> NullSpec:
    """The :class:`NullSpec` of ``config`` on ``reference`` with concept bank ``groups``
    (``class_bank``: the reference's classes join them as :data:`PREDICTED_CLASS`)."""
    available = reference.calibration.names
    checks = tuple(c for c in config.sample_checks if c in available)
    reject_labels = config.label_policy == "reject"
    rejecting = tuple(
        c for c in checks if not SAMPLE_CHECKS[c].label_policy or reject_labels
    )  # fmt: skip
    label_mix = config.class_mix and reference.stats.num_labels is not None
    family = (
        *config.batch_tests, *(f"concept:{g}" for g in groups),
        *((f"concept:{PREDICTED_CLASS}",) if class_bank else ()),
        *(("label_drift",) if label_mix else ()),
    )  # fmt: skip
    needed = config.resamples_needed(family)
    resamples = config.n_resamples
    if resamples < needed and "n_resamples" not in config.model_fields_set:
        resamples = needed  # the default adapts to the family; a value the user set is checked
    return NullSpec(config, checks, rejecting, resamples, family)


def calibrate_ahead(
    reference: CalibratedSupport,
    batch_sizes: Sequence[int],
    config: GuardConfig | None = None,
    *,
    concept_banks: Sequence[ConceptBank] = (),
    threads: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[int, ...]:
    """Compute the nulls a :class:`~synthguard.Guard` with ``config`` needs for batches of
    ``batch_sizes`` samples (``concept_banks``: the reference's and the guard's); returns the
    row counts calibrated.

    A batch is tested at the largest grid size within its accepted samples, so each size
    brings its grid size and the one below (batches with down to ~70 % of their samples
    accepted meet a cached null).
    """
    if isinstance(batch_sizes, (str, bytes)) or not isinstance(batch_sizes, Sequence):
        raise InvalidInputError(
            f"batch_sizes must be a sequence of ints; got {type(batch_sizes).__name__}"
        )
    if config is not None and not isinstance(config, GuardConfig):
        raise InvalidInputError(f"config must be a GuardConfig; got {type(config).__name__}")
    config = config or GuardConfig()
    groups = [g for bank in concept_banks for g in bank.groups]
    spec = null_spec(
        reference, config, groups, class_bank=adds_class_group(reference, config, groups)
    )
    pool = reference.accepted_support(config.alpha, spec.checks, spec.rejecting).numel()
    sizes: set[int] = set()
    for size in batch_sizes:
        rows = grid_size(check_int("batch_sizes[i]", size, minimum=2), config.max_batch_rows,
                         pool // 2)  # fmt: skip
        below = grid_size(rows - 1)
        sizes.update(g for g in (rows, below) if g >= config.min_batch_size)
    for rows in sorted(sizes):
        reference.batch_null(
            rows, **spec.arguments(), device=device,
            threads=available_threads() if threads is None else threads, progress=progress,
        )  # fmt: skip
    return tuple(sorted(sizes))
