"""The calibrated support of a reference: thresholds, accepted rows, batch contexts, nulls.

:class:`CalibratedSupport` is the half of :class:`~synthguard.Reference` the guard decides
with; the other half (``_reference.py``) builds, persists and describes it. The caches
(batch contexts and null distributions) are shared by every guard on the reference and
guarded by a lock, since a guard may be shared by threads.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Collection, Sequence
from typing import Any

import torch

from synthguard._errors import InvalidInputError
from synthguard._threads import available_threads
from synthguard._validation import check_float, check_int
from synthguard.checks import (
    OPTIONAL_COLUMNS,
    RESAMPLED_TESTS,
    SAMPLE_CHECKS,
    BatchContext,
    SampleCalibration,
    SampleCheck,
    SupportToScore,
    batch_null,
)
from synthguard.functional import CollapseReference, knn_radii
from synthguard.functional.mmd import rbf_kernel
from synthguard.reference._build import available_checks, support_badness
from synthguard.relabel import ZeroShotLabeler
from synthguard.stats import EmbeddingStats, Moments

__all__ = ["CalibratedSupport"]

_CMMD_SIGMA = 10.0  # Jayasumana et al. 2024


class CalibratedSupport:
    """The support pairs, their leave-one-out calibration and the batch tests' caches."""

    stats: EmbeddingStats
    k: int
    label_names: tuple[str, ...] | None
    label_templates: tuple[str, ...]
    class_embeddings: torch.Tensor | None
    logit_scale: float | None
    support_image: torch.Tensor
    support_text: torch.Tensor
    support_labels: torch.Tensor
    support_caption_tokens: torch.Tensor | None
    coverage_rows: int
    cmmd_rows: int

    def _calibrate(self, pre: dict[str, torch.Tensor], pre_checks: Sequence[str] = ()) -> None:
        """Radii, calibration scores and caches; ``pre`` holds those already computed (the
        calibration columns of the checks ``pre_checks``)."""
        self.support_radii = (
            pre["support_radii"] if "support_radii" in pre
            else knn_radii(self.support_image, self.k)
        )  # fmt: skip
        self.coverage_radii_sq = (
            pre["coverage_radii_sq"] if "coverage_radii_sq" in pre else self._coverage_radii_sq()
        )
        checks = available_checks(
            labels=self.has_labels, captions=self.support_caption_tokens is not None
        )
        self.calibration = SampleCalibration(
            names=tuple(c.name for c in checks),
            badness=self._badness(checks, pre.get("calibration_badness"), tuple(pre_checks)),
        )
        self._null_cache: dict[str, torch.Tensor] = {
            key[len("null/") :]: value for key, value in pre.items() if key.startswith("null/")
        }
        self._contexts: dict[tuple[float, tuple[str, ...], tuple[str, ...]], BatchContext] = {}
        self._collapse: CollapseReference | None = None
        self._lock = threading.RLock()  # guards the caches: a Guard may be shared by threads

    def __getstate__(self) -> dict[str, Any]:
        # Pickled for DataLoader workers under "spawn": the lock is per process.
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # -- calibration -----------------------------------------------------------------------

    @property
    def n_support(self) -> int:
        """Real pairs in the support (k-NN checks, calibration resamples)."""
        return int(self.support_image.shape[0])

    @property
    def has_labels(self) -> bool:
        """Whether the label check is calibrated (labels and class embeddings were given)."""
        return self.class_embeddings is not None and bool((self.support_labels >= 0).all())

    def thresholds(self, alpha: float, checks: Sequence[str] | None = None) -> dict[str, float]:
        """Per-sample thresholds at real-data false-reject rate ``alpha``, in natural units.

        ``low_alignment``: flag a pair whose cosine is below it; ``off_manifold``: a k-NN
        distance above it; ``reference_copy`` / ``near_duplicate``: a largest cosine to a
        reference image / an earlier batch image above it; ``label_mismatch``: a disagreement
        of the frozen model when P(given label) is below it; ``long_caption``: more caption
        tokens than it. ``inf``/``-inf`` mean the check never fires. ``checks`` calibrates the
        union of a subset (default: the default checks that are available).
        """
        raw = self.sample_calibration(checks).thresholds(_check_alpha(alpha))
        return {name: SAMPLE_CHECKS[name].natural(value) for name, value in raw.items()}

    @property
    def default_checks(self) -> tuple[str, ...]:
        """The available checks a default :class:`~synthguard.GuardConfig` enables."""
        return tuple(n for n in self.calibration.names if SAMPLE_CHECKS[n].default)

    def sample_calibration(self, checks: Sequence[str] | None = None) -> SampleCalibration:
        """The leave-one-out calibration of ``checks`` (default: :attr:`default_checks`)."""
        if checks is None:
            checks = self.default_checks
        unknown = [c for c in checks if c not in self.calibration.names]
        if unknown or not checks:
            raise InvalidInputError(
                f"checks must be a non-empty subset of {self.calibration.names}; got {list(checks)}"
            )
        return self.calibration.select(tuple(checks))

    def labeler(self) -> ZeroShotLabeler | None:
        """The zero-shot labeler with the stored class embeddings (``None`` without labels)."""
        if not self.has_labels or self.label_names is None:
            return None
        return ZeroShotLabeler(
            None,
            self.label_names,
            self.label_templates or ("{name}",),
            logit_scale=self.logit_scale,
            class_embeddings=self.class_embeddings,
        )

    def collapse_reference(self) -> CollapseReference:
        """The whole support as :func:`~synthguard.functional.collapse_metrics` compares with
        it (the monitor's and the torchmetrics adapter's reference; cached)."""
        with self._lock:
            if self._collapse is None:
                image, text = self.support_image, self.support_text
                cos = (image * text).sum(dim=1)
                self._collapse = CollapseReference(
                    moments=Moments(image.shape[0], image.sum(dim=0), image.T @ image),
                    alignment=(image.shape[0], float(cos.sum()), float((cos * cos).sum())),
                    coverage_rows=image[: self.coverage_rows],
                    coverage_radii_sq=self.coverage_radii_sq,
                    cmmd_rows=image[: self.cmmd_rows],
                    cmmd_self=float(self._cmmd_kernel().mean()),
                    cmmd_sigma=_CMMD_SIGMA,
                    text_moments=Moments.from_embeddings(text),
                    k=self.k,
                )
            return self._collapse

    def batch_context(
        self,
        alpha: float,
        checks: Sequence[str] | None = None,
        rejecting: Sequence[str] | None = None,
    ) -> BatchContext:
        """What the batch metrics compare against, at per-sample level ``alpha``.

        ``rejecting``: the checks whose flags reject a sample (default: all ``checks``; a
        label disagreement that is relabeled does not reject).
        """
        names = self.sample_calibration(checks).names
        only = names if rejecting is None else tuple(rejecting)
        key = (float(alpha), names, only)
        with self._lock:
            if key not in self._contexts:
                calibration = self.sample_calibration(names)
                raw = calibration.thresholds(_check_alpha(alpha))
                accepted = ~calibration.flags(alpha, only)
                rows, captions = self.support_image[accepted], self.support_text[accepted]
                align = (rows * captions).sum(dim=1)
                self._contexts[key] = BatchContext(
                    moments=Moments(rows.shape[0], rows.sum(dim=0), rows.T @ rows),
                    alignment=(rows.shape[0], float(align.sum()), float((align * align).sum())),
                    accepted=accepted,
                    support=self.support_image,
                    support_text=self.support_text,
                    k=self.k,
                    coverage_rows=self.coverage_rows,
                    coverage_radii_sq=self.coverage_radii_sq,
                    cmmd_rows=self.cmmd_rows,
                    cmmd_sigma=_CMMD_SIGMA,
                    cmmd_kernel=self._cmmd_kernel(),
                    duplicate_cosine=raw.get("near_duplicate", math.inf),
                    text_moments=Moments.from_embeddings(captions),
                    support_tokens=self.support_caption_tokens,
                )
            return self._contexts[key]

    def accepted_support(
        self,
        alpha: float,
        checks: Sequence[str] | None = None,
        rejecting: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """Indices of the support pairs no rejecting check flags (leave-one-out)."""
        calibration = self.sample_calibration(checks)
        only = None if rejecting is None else tuple(rejecting)
        return torch.nonzero(~calibration.flags(_check_alpha(alpha), only)).flatten()

    def batch_null(
        self,
        size: int,
        *,
        alpha: float,
        resamples: int,
        seed: int,
        checks: Sequence[str] | None = None,
        rejecting: Sequence[str] | None = None,
        columns: Collection[str] | None = None,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """``[resamples, K]`` resampled null of the distribution tests, computed once and cached.

        ``size`` accepted support rows per resample, compared with the accepted support without
        them (the split design of :mod:`synthguard.checks`); columns follow
        :data:`synthguard.checks.RESAMPLED_TESTS`. Cached per size, resamples, seed, ``alpha``,
        checks and rejecting checks, and saved with the reference.

        Args:
            columns: tests whose column is needed; the costly opt-in ones
                (:data:`synthguard.checks.OPTIONAL_COLUMNS`) are computed only when named here,
                and added to a cached null when a later call names them. The others always are.
            device: where the resamples are computed (``"cuda"``: stacked on the GPU).
            threads: CPU worker threads (default: every available core; a
                :class:`~synthguard.Guard` passes ``GuardConfig.threads``).
            progress: show a progress bar (after a second).
        """
        key, size, names, only = self._null_key(size, alpha, resamples, seed, checks, rejecting)
        context = self.batch_context(alpha, names, only)
        wanted = _null_columns(columns)
        with self._lock:
            cached = self._null_cache.get(key)
            missing = wanted if cached is None else _missing(cached, wanted)
            if missing:
                fresh = batch_null(
                    context, size, resamples, seed,
                    columns=missing if cached is not None else wanted,
                    device=device, threads=available_threads() if threads is None else threads,
                    progress=progress,
                )  # fmt: skip
                if cached is not None:  # add the new columns to the cached ones
                    at = [RESAMPLED_TESTS.index(name) for name in sorted(missing)]
                    merged = cached.clone()
                    merged[:, at] = fresh[:, at]
                    fresh = merged
                self._null_cache[key] = fresh
            return self._null_cache[key]

    def has_batch_null(
        self,
        size: int,
        *,
        alpha: float,
        resamples: int,
        seed: int,
        checks: Sequence[str] | None = None,
        rejecting: Sequence[str] | None = None,
        columns: Collection[str] | None = None,
    ) -> bool:
        """Whether :meth:`batch_null` with these arguments reads its cache (computes nothing)."""
        key = self._null_key(size, alpha, resamples, seed, checks, rejecting)[0]
        with self._lock:
            cached = self._null_cache.get(key)
            return cached is not None and not _missing(cached, _null_columns(columns))

    def _null_key(
        self,
        size: int,
        alpha: float,
        resamples: int,
        seed: int,
        checks: Sequence[str] | None,
        rejecting: Sequence[str] | None,
    ) -> tuple[str, int, tuple[str, ...], tuple[str, ...]]:
        """``(cache key, size, checks, rejecting checks)`` of a null, ``size`` validated."""
        names = self.sample_calibration(checks).names
        only = names if rejecting is None else tuple(rejecting)
        pool = self.accepted_support(alpha, names, only)
        size = check_int("size", size, minimum=2)
        if size > pool.numel() // 2:
            raise InvalidInputError(
                f"size must be <= {pool.numel() // 2} (half the accepted support) for "
                f"real-vs-real resamples; got {size}"
            )
        key = f"{size}/{resamples}/{seed}/{float(alpha)!r}/{','.join(names)}/{','.join(only)}"
        return key, size, names, only

    def _cmmd_kernel(self) -> torch.Tensor:
        rows = self.support_image[: self.cmmd_rows]
        return rbf_kernel(rows, rows, _CMMD_SIGMA).fill_diagonal_(1.0)

    def _coverage_radii_sq(self) -> torch.Tensor:
        if self.coverage_rows == self.n_support:
            return self.support_radii**2
        return knn_radii(self.support_image[: self.coverage_rows], self.k) ** 2

    def _badness(
        self,
        checks: Sequence[SampleCheck],
        stored: torch.Tensor | None,
        stored_names: tuple[str, ...],
    ) -> torch.Tensor:
        """Calibration columns: stored ones where given, the others scored now (a check added
        after the reference was built runs on it without a rebuild)."""
        s = self.support_image.shape[0]
        if stored is not None and tuple(stored.shape) != (s, len(stored_names)):
            raise InvalidInputError(
                f"calibration_badness must have shape {(s, len(stored_names))} (one column per "
                f"stored check {list(stored_names)}); got {tuple(stored.shape)}"
            )
        unknown = [n for n in stored_names if n not in SAMPLE_CHECKS]
        if unknown:
            warnings.warn(
                f"the reference stores calibration for checks this synthguard does not know "
                f"{unknown} (written by a newer version?); they are ignored",
                UserWarning,
                stacklevel=4,
            )
        missing = [c for c in checks if stored is None or c.name not in stored_names]
        scored = self._score_support(missing) if missing else None
        columns = []
        for check in checks:
            if stored is not None and check.name in stored_names:
                columns.append(stored[:, stored_names.index(check.name)].double())
            else:
                assert scored is not None
                columns.append(scored[:, missing.index(check)])
        return torch.stack(columns, dim=1)

    def _score_support(self, checks: Sequence[SampleCheck]) -> torch.Tensor:
        labeler = self.labeler()
        support = SupportToScore(
            self.support_image,
            self.support_text,
            self.support_radii,
            labels=self.support_labels,
            prediction=None if labeler is None else labeler.predict(self.support_image),
            caption_tokens=self.support_caption_tokens,
        )
        return support_badness(support, checks)


def _null_columns(columns: Collection[str] | None) -> set[str]:
    """The null columns to compute: every one but the unnamed optional ones."""
    named = set() if columns is None else set(columns)
    unknown = named - set(RESAMPLED_TESTS)
    if unknown:
        raise InvalidInputError(
            f"columns must name resampled tests {list(RESAMPLED_TESTS)}; got {sorted(unknown)}"
        )
    return (set(RESAMPLED_TESTS) - OPTIONAL_COLUMNS) | named


def _missing(cached: torch.Tensor, wanted: set[str]) -> set[str]:
    """Optional columns of a cached null that were never computed (all NaN)."""
    return {
        name for name in wanted & OPTIONAL_COLUMNS
        if bool(cached[:, RESAMPLED_TESTS.index(name)].isnan().all())
    }  # fmt: skip


def _check_alpha(alpha: Any) -> float:
    return check_float("alpha", alpha, low=0.0, high=1.0, low_open=True, high_open=True)
