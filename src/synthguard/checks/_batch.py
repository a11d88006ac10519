"""The batch tests: one registry entry each, the only place a test is defined.

A batch test turns a batch (its accepted pairs, its embeddable images, its counts) into one
number with a collapse direction. Resampled tests get their null from real-vs-real resamples
of the reference support at the batch's size (:mod:`synthguard.checks._null`); exact tests
(the duplicate rate and the flag rate) have a closed-form null that accounts for the
reference's own sampling error. The family of tests enabled by
``GuardConfig.batch_tests`` is combined with Holm's correction; the others are reported as
informational, with their p-values.

To add a test, add one :class:`BatchTest` to :data:`BATCH_TESTS`, its name to
:data:`BatchTestName` and its tests (docs/design.md, "How to add a batch test").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from synthguard.checks._geometry import max_cosine
from synthguard.checks._inference import (
    Direction,
    duplicate_count_bound,
    duplicate_count_p,
    flag_rate_bound,
    flag_rate_p,
)

__all__ = [
    "BATCH_TESTS",
    "CAPTION_DUPLICATE_COSINE",
    "NULL_DESIGN",
    "RESAMPLED_TESTS",
    "BatchTest",
    "BatchTestName",
    "TestInputs",
    "duplicate_rate",
]

BatchTestName = Literal[
    "alignment_shift",
    "variance_ratio",
    "vendi_ratio",
    "coverage",
    "density",
    "frechet_distance",
    "cmmd",
    "alignment_variance",
    "text_variance_ratio",
    "text_vendi_ratio",
    "caption_length_shift",
    "caption_duplicate_rate",
    "duplicate_rate",
    "flag_rate",
]

#: Caption embeddings this close (cosine) are the same caption up to numerics.
CAPTION_DUPLICATE_COSINE = 0.9999


@dataclass(frozen=True)
class TestInputs:
    """What a batch test reads: the same for a checked batch and for a resample of it.

    Attributes:
        metrics: :func:`synthguard.functional.collapse_metrics` of the accepted pairs against
            the accepted reference pairs (empty when there were too few accepted pairs).
        text: ``[m, d]`` the accepted pairs' caption rows (``None``: too few).
        caption_tokens: ``[m]`` their caption tokens (``None``: not known).
        reference_tokens: mean caption tokens of the reference pairs compared with (NaN: not
            recorded).
        duplicate_image: ``[r, d]`` embeddable image rows (``None``: too few).
        duplicate_cosine: the calibrated near-duplicate cosine.
        support_duplicates, support_size: support rows with an earlier near-duplicate in the
            support, and the support's size (the duplicate rate's exact null).
        n, n_flagged: samples, and samples rejected per sample or unembeddable.
        support_flagged: support pairs the rejecting checks flag (leave-one-out).
    """

    metrics: Mapping[str, float]
    text: torch.Tensor | None = None
    caption_tokens: torch.Tensor | None = None
    reference_tokens: float = float("nan")
    duplicate_image: torch.Tensor | None = None
    duplicate_cosine: float = float("inf")
    support_duplicates: int = 0
    support_size: int = 0
    n: int = 0
    n_flagged: int = 0
    support_flagged: int = 0


@dataclass(frozen=True)
class BatchTest:
    """One batch test.

    Attributes:
        name: the test's name in ``GuardConfig.batch_tests`` and in ``GuardReport.metrics``.
        direction: ``"low"``: small values signal collapse risk; ``"high"``: large ones.
        null: ``"resampled"`` (real-vs-real resamples at the batch's size) or ``"exact"``
            (a closed form: ``exact_p`` and ``exact_bound``).
        rows: what the test reads: the accepted pairs (skipped below ``min_batch_size``),
            the embeddable images, or the sample counts.
        value: the test's value from its inputs (NaN when undefined).
        summary: one line for the docs.
        default: in the Holm family of a default :class:`~synthguard.GuardConfig`.
        exact_p: exact tests: ``(p-value, null median of the value)`` from the inputs.
        exact_bound: exact tests: the value strictly beyond which the test fails at a level.
    """

    name: BatchTestName
    direction: Direction
    null: Literal["resampled", "exact"]
    rows: Literal["accepted", "embeddable", "counts"]
    value: Callable[[TestInputs], float]
    summary: str
    default: bool = True
    exact_p: Callable[[TestInputs], tuple[float, float]] | None = None
    exact_bound: Callable[[TestInputs, float], float] | None = None


def duplicate_rate(image: torch.Tensor, cosine: float) -> float:
    """Share of rows whose cosine to an earlier row is above ``cosine``."""
    return float((max_cosine(image, exclude="later") > cosine).double().mean())


def _metric(name: str) -> Callable[[TestInputs], float]:
    return lambda inputs: inputs.metrics[name]


def _duplicates(inputs: TestInputs) -> float:
    if inputs.duplicate_image is None:
        return float("nan")
    return duplicate_rate(inputs.duplicate_image, inputs.duplicate_cosine)


def _caption_length_shift(inputs: TestInputs) -> float:
    if inputs.caption_tokens is None or inputs.caption_tokens.numel() == 0:
        return float("nan")
    return float(inputs.caption_tokens.double().mean()) - inputs.reference_tokens


def _caption_duplicates(inputs: TestInputs) -> float:
    if inputs.text is None or inputs.text.shape[0] == 0:
        return float("nan")
    return duplicate_rate(inputs.text, CAPTION_DUPLICATE_COSINE)


def _duplicate_counts(inputs: TestInputs) -> tuple[int, int, int, int]:
    rows = 0 if inputs.duplicate_image is None else int(inputs.duplicate_image.shape[0])
    count = round(_duplicates(inputs) * rows) if rows else 0
    return count, rows, inputs.support_duplicates, inputs.support_size


def _duplicate_p(inputs: TestInputs) -> tuple[float, float]:
    return duplicate_count_p(*_duplicate_counts(inputs))


def _duplicate_bound(inputs: TestInputs, level: float) -> float:
    _, rows, support_count, support_size = _duplicate_counts(inputs)
    return duplicate_count_bound(rows, support_count, support_size, level)


def _flag_p(inputs: TestInputs) -> tuple[float, float]:
    return flag_rate_p(inputs.n_flagged, inputs.n, inputs.support_flagged, inputs.support_size)


def _flag_bound(inputs: TestInputs, level: float) -> float:
    return flag_rate_bound(inputs.n, inputs.support_flagged, inputs.support_size, level)


_TESTS = (
    BatchTest(
        name="alignment_shift", direction="low", null="resampled", rows="accepted",
        value=_metric("alignment_shift"),
        summary="mean image–caption cosine minus the reference's",
    ),
    BatchTest(
        name="variance_ratio", direction="low", null="resampled", rows="accepted",
        value=_metric("variance_ratio"),
        summary="total variance of the images over the reference's",
    ),
    BatchTest(
        name="vendi_ratio", direction="low", null="resampled", rows="accepted",
        value=_metric("vendi_ratio"), summary="Vendi score over the reference's",
    ),
    BatchTest(
        name="coverage", direction="low", null="resampled", rows="accepted",
        value=_metric("coverage"), summary="share of the reference's k-NN balls hit",
    ),
    # Opt-in until measured: the mean number of reference balls a row sits in falls when rows
    # drift off the real manifold while each still passes the per-sample checks (mild noise).
    BatchTest(
        name="density", direction="low", null="resampled", rows="accepted",
        value=_metric("density"), summary="reference k-NN balls per row, over k (Naeem et al.)",
        default=False,
    ),
    BatchTest(
        name="frechet_distance", direction="high", null="resampled", rows="accepted",
        value=_metric("frechet_distance"), summary="Fréchet distance to the reference",
    ),
    BatchTest(
        name="cmmd", direction="high", null="resampled", rows="accepted",
        value=_metric("cmmd"), summary="CMMD to the reference's CMMD rows",
    ),
    # Opt-in: the paper's collapsing captioner raised alignment variance 22 % before the mean
    # moved; it joins the Holm family when listed in GuardConfig.batch_tests.
    BatchTest(
        name="alignment_variance", direction="high", null="resampled", rows="accepted",
        value=_metric("alignment_variance"),
        summary="variance of the image–caption cosine over the reference's", default=False,
    ),
    # The caption side (opt-in until their power is measured): a collapsing captioner's
    # captions grow longer, generic and alike (the paper: 3.3x longer).
    BatchTest(
        name="text_variance_ratio", direction="low", null="resampled", rows="accepted",
        value=_metric("text_variance_ratio"),
        summary="total variance of the captions' embeddings over the reference's", default=False,
    ),
    BatchTest(
        name="text_vendi_ratio", direction="low", null="resampled", rows="accepted",
        value=_metric("text_vendi_ratio"),
        summary="Vendi score of the captions' embeddings over the reference's", default=False,
    ),
    BatchTest(
        name="caption_length_shift", direction="high", null="resampled", rows="accepted",
        value=_caption_length_shift,
        summary="mean caption tokens minus the reference's (NaN without recorded lengths)",
        default=False,
    ),
    BatchTest(
        name="caption_duplicate_rate", direction="high", null="resampled", rows="accepted",
        value=_caption_duplicates,
        summary="share of captions the same as an earlier one (text cosine >= 0.9999)",
        default=False,
    ),
    # Exact: near-duplicates of real data are rare events (a few pairs in a support), so a
    # resampled null from the support alone understates how many a fresh real batch can hold.
    # The counts are compared as two Poisson rates over pairs (conditional binomial test).
    BatchTest(
        name="duplicate_rate", direction="high", null="exact", rows="embeddable",
        value=_duplicates, summary="share of images closer to an earlier one than real data",
        exact_p=_duplicate_p, exact_bound=_duplicate_bound,
    ),
    # In the family by default: the per-sample gate keeps a batch's good samples, but a batch
    # with far more rejects than real data gives says its generator is broken (issue 14).
    BatchTest(
        name="flag_rate", direction="high", null="exact", rows="counts",
        value=lambda inputs: inputs.n_flagged / inputs.n if inputs.n else float("nan"),
        summary="share of samples rejected per sample or unembeddable",
        exact_p=_flag_p, exact_bound=_flag_bound,
    ),
)  # fmt: skip

#: Every batch test by name, in report order.
BATCH_TESTS: dict[str, BatchTest] = {test.name: test for test in _TESTS}
#: The tests whose null is resampled, in the column order of a resampled null.
RESAMPLED_TESTS: tuple[str, ...] = tuple(t.name for t in _TESTS if t.null == "resampled")
#: The resampled null's design; a saved null of another design is recomputed on load.
NULL_DESIGN = "split-v1"
