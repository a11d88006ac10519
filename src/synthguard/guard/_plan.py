"""``GuardPlan``: a guard's configuration compiled against its reference, once.

Everything :func:`~synthguard.guard.decide` needs and nothing it must recompute per batch: the
enabled per-sample checks the reference can run (and which of them reject), their joint
thresholds, the support pairs they accept, the batch tests of the Holm family, the concept
banks, and the grid of batch sizes the batch tests run at. A plan holds no encoder, so the
distributed path and the Ray pool use the same plan as ``Guard.check``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import torch

from synthguard._errors import InvalidInputError
from synthguard._threads import default_threads
from synthguard._validation import check_label_range, describe
from synthguard.checks import (
    BATCH_TESTS,
    SAMPLE_CHECKS,
    BatchContext,
    BatchTest,
    SampleCalibration,
    SampleCheck,
)
from synthguard.concepts import ConceptBank
from synthguard.config import GuardConfig
from synthguard.reference import Reference
from synthguard.reference._ahead import (
    GRID,
    PREDICTED_CLASS,
    NullSpec,
    adds_class_group,
    grid_size,
    null_spec,
)

__all__ = ["GRID", "PREDICTED_CLASS", "GuardPlan"]

_LOG = logging.getLogger("synthguard")


@dataclass(frozen=True, eq=False)
class GuardPlan:
    """A :class:`~synthguard.GuardConfig` compiled against a :class:`~synthguard.Reference`.

    Build with :meth:`compile`. Derived quantities are computed on first use and kept.

    Attributes:
        config: the configuration.
        reference: the real-data reference.
        checks: the enabled per-sample checks the reference calibrates, in config order.
        concept_banks: the reference's banks, then the guard's own.
    """

    config: GuardConfig
    reference: Reference
    checks: tuple[SampleCheck, ...]
    concept_banks: tuple[ConceptBank, ...] = ()
    encoder_device: str | None = None

    @classmethod
    def compile(
        cls,
        reference: Reference,
        config: GuardConfig | None = None,
        concept_banks: Sequence[ConceptBank] = (),
    ) -> GuardPlan:
        """Validate ``config`` and ``concept_banks`` against ``reference``; calibrate banks."""
        if not isinstance(reference, Reference):
            raise InvalidInputError(f"reference must be a Reference; got {describe(reference)}")
        if config is not None and not isinstance(config, GuardConfig):
            raise InvalidInputError(f"config must be a GuardConfig; got {describe(config)}")
        config = config or GuardConfig()
        banks = (*reference.concept_banks, *concept_banks)
        for bank in banks:
            if not isinstance(bank, ConceptBank):
                raise InvalidInputError(
                    f"concept_banks must hold ConceptBanks; got {describe(bank)}"
                )
        groups = [g for bank in banks for g in bank.groups]
        repeated = sorted({g for g in groups if groups.count(g) > 1})
        if repeated:
            raise InvalidInputError(
                f"concept bank group names must be unique across banks; {repeated} repeat"
            )
        for bank in banks:
            bank.check_encoder(reference.fingerprint)
            if bank.margins is None:
                bank.calibrate(reference.support_image)
        if adds_class_group(reference, config, groups):
            banks = (*banks, _class_bank(reference))
            groups = [*groups, PREDICTED_CLASS]
        # The given-label mix joins the family for labelled batches (GuardConfig.class_mix);
        # a default n_resamples adapts to the family, one the user set is checked.
        spec = null_spec(reference, config, groups, class_bank=False)
        checks = tuple(SAMPLE_CHECKS[c] for c in spec.checks)
        if spec.resamples != config.n_resamples:
            config = config.model_copy(update={"n_resamples": spec.resamples})
        needed = config.resamples_needed(spec.family)
        if config.n_resamples < needed:
            raise InvalidInputError(
                f"n_resamples must be >= {needed} for "
                f"{len(spec.family)} batch tests (concept groups and the class mix included; "
                f"Holm span {config.holm_span(spec.family):g}) at alpha_batch "
                f"{config.alpha_batch}; got "
                f"{config.n_resamples}"
            )
        return cls(config=config, reference=reference, checks=checks, concept_banks=banks)

    def __getstate__(self) -> dict[str, object]:
        # Checks travel by name (their scoring functions are the registry's, not data).
        state = dict(self.__dict__)
        state["checks"] = tuple(c.name for c in self.checks)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        names = state["checks"]
        assert isinstance(names, tuple)
        state = {**state, "checks": tuple(SAMPLE_CHECKS[n] for n in names)}
        for key, value in state.items():
            object.__setattr__(self, key, value)

    def per_sample_only(self) -> GuardPlan:
        """This plan without batch tests (per-sample decisions of a block of a pool)."""
        return replace(self, config=self.config.model_copy(update={"batch_tests": ()}))

    # -- per-sample checks -----------------------------------------------------------------

    @property
    def check_names(self) -> tuple[str, ...]:
        """Names of :attr:`checks`."""
        return tuple(c.name for c in self.checks)

    @property
    def rejecting(self) -> tuple[str, ...]:
        """Checks whose flag rejects a sample: a relabeled (or kept) label disagreement
        does not, unless ``label_policy="reject"``."""
        return self.null_spec.rejecting

    @cached_property
    def null_spec(self) -> NullSpec:
        """What the batch tests' nulls depend on (shared with ``Reference.calibrate``)."""
        groups = [g for bank in self.concept_banks for g in bank.groups]
        return null_spec(self.reference, self.config, groups, class_bank=False)

    @cached_property
    def calibration(self) -> SampleCalibration:
        """The joint leave-one-out calibration of :attr:`checks`."""
        return self.reference.sample_calibration(self.check_names)

    @cached_property
    def score_percentiles(self) -> dict[str, tuple[float, ...]]:
        """Score name -> its 0th, 1st, ..., 100th percentile over the support, leave-one-out
        (what real samples score), for each enabled check every support pair has a score for
        (not ``label_mismatch``, which scores only disagreements). Reports draw them."""
        out: dict[str, tuple[float, ...]] = {}
        probabilities = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
        for t, name in enumerate(self.calibration.names):
            check = SAMPLE_CHECKS[name]
            column = check.sign * self.calibration.badness[:, t]
            if column.numel() and bool(torch.isfinite(column).all()):
                out[check.score] = tuple(torch.quantile(column, probabilities).tolist())
        return out

    @cached_property
    def badness_thresholds(self) -> dict[str, float]:
        """Per check: a sample is flagged when its badness is strictly above this value."""
        return self.calibration.thresholds(self.config.alpha)

    @cached_property
    def copy_cosine(self) -> float:
        """The cosine above which a rejecting copy check flags a row (``inf``: none runs)."""
        return min(
            (self.threshold(c.name) for c in self.checks
             if c.copy_score and c.name in self.rejecting),
            default=math.inf,
        )  # fmt: skip

    def threshold(self, name: str) -> float:
        """Check ``name``'s calibrated threshold in its score's units."""
        return SAMPLE_CHECKS[name].natural(self.badness_thresholds[name])

    @cached_property
    def accepted_support(self) -> torch.Tensor:
        """Indices of the support pairs no rejecting check flags (leave-one-out)."""
        return self.reference.accepted_support(self.config.alpha, self.check_names, self.rejecting)

    def check_labels(self, labels: Sequence[int] | None) -> None:
        """Raise unless every label indexes the reference's classes."""
        names = self.reference.label_names
        if labels is not None and names is not None:
            check_label_range(labels, len(names))

    # -- batch tests -----------------------------------------------------------------------

    @property
    def tests(self) -> tuple[BatchTest, ...]:
        """Every batch test, in report order (the family is :attr:`GuardConfig.batch_tests`)."""
        return tuple(BATCH_TESTS.values())

    def in_family(self, test: BatchTest) -> bool:
        """Whether ``test`` is in the Holm family (else it is informational)."""
        return test.name in self.config.batch_tests

    def rows_for(self, accepted: int) -> int:
        """Rows the distribution tests use for ``accepted`` accepted samples (0: too few)."""
        return grid_size(accepted, self.config.max_batch_rows, self.accepted_support.numel() // 2)

    def sizes_from(self, rows: int) -> list[int]:
        """The grid sizes from ``rows`` down to ``min_batch_size``, largest first (what
        :func:`~synthguard.checks.split_batch` tries when too few rows pass)."""
        return [g for g in reversed(GRID) if self.config.min_batch_size <= g <= rows]

    def duplicate_rows_for(self, valid: int) -> int:
        """Rows the duplicate-rate test uses for ``valid`` embeddable samples (0: too few)."""
        return grid_size(valid, self.config.max_batch_rows, self.reference.n_support // 2)

    def context(self) -> BatchContext:
        """What the batch tests compare with (cached on the reference)."""
        return self.reference.batch_context(self.config.alpha, self.check_names, self.rejecting)

    @property
    def threads(self) -> int:
        """CPU threads of the guard's own statistics (``GuardConfig.threads``)."""
        return self.config.threads or default_threads()

    @property
    def null_device(self) -> str:
        """Where the batch tests' null is computed: ``GuardConfig.device``, else the encoder's
        GPU, else the CPU."""
        if self.config.device is not None:
            return self.config.device
        device = self.encoder_device
        return device if device is not None and not device.startswith("cpu") else "cpu"

    def null(self, rows: int) -> tuple[torch.Tensor, bool]:
        """The resampled null at ``rows`` (cached on the reference and saved with it), and
        whether it was cached; computing it shows a progress bar and says once how to
        precompute it."""
        args = self.null_spec.arguments()
        cached = self.reference.has_batch_null(rows, **args)
        if not cached:
            _advise_precompute(rows)
        null = self.reference.batch_null(
            rows, **args, device=self.null_device, threads=self.threads, progress=not cached
        )
        return null, cached

    @property
    def support_flagged(self) -> int:
        """Support pairs a rejecting check flags (leave-one-out): the flag rate's null."""
        return self.reference.n_support - self.accepted_support.numel()

    def count_concepts(
        self, image: torch.Tensor, labels: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """Concept counts of unit image rows per bank group (per class with ``labels``)."""
        names = self.reference.label_names
        out: dict[str, torch.Tensor] = {}
        for bank in self.concept_banks:
            if labels is None:
                out.update(bank.counts(image))
            elif names is not None:
                out.update(bank.counts(image, labels, len(names)))
        return out


_ADVISED: set[str] = set()


def _advise_precompute(rows: int) -> None:
    """Say once per process how to avoid computing nulls during training."""
    if "precompute" in _ADVISED:
        return
    _ADVISED.add("precompute")
    _LOG.warning(
        "synthguard: computing the batch tests' null at %d rows for this check (once per size "
        "and reference). To do it ahead, pass batch_sizes=[...] to Reference.build / "
        "Reference.from_embeddings, or run `synthguard reference calibrate REF --sizes ...`, "
        'and save the reference (docs/guard.md, "Calibration ahead of time").',
        rows,
    )


def _class_bank(reference: Reference) -> ConceptBank:
    """The reference's classes as a concept group (its stored class embeddings, calibrated on
    its support), so the predicted class mix is tested like any concept mix."""
    assert reference.label_names is not None and reference.class_embeddings is not None
    bank = ConceptBank.from_parts(
        {PREDICTED_CLASS: reference.label_names},
        {PREDICTED_CLASS: reference.class_embeddings},
        fingerprint=reference.fingerprint,
        margins=None,
        templates=reference.label_templates,
        uncertain_rate=0.05,
    )
    bank.calibrate(reference.support_image)
    return bank
