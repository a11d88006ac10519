"""The reference: frozen statistics of real data and the calibration the guard decides with.

A :class:`Reference` is built once from real image–caption pairs. It keeps the mergeable
:class:`~synthguard.EmbeddingStats` of every pair, a bounded *support* (the stats' bottom-k
sample) with its k-NN radii, each support pair's leave-one-out per-sample scores, the zero-shot
class embeddings when labels are given, and the batch tests' null distributions per batch size
(computed on first use and cached). See :mod:`synthguard._calibration` for the statistics.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from synthguard._calibration import (
    BatchContext,
    SampleCalibration,
    batch_null,
    rbf_kernel,
)
from synthguard._errors import IncompatibleStatsError, InvalidInputError
from synthguard._reference_build import (
    DimOnly,
    embed_into,
    loo_badness,
    new_stats,
    unit_rows,
    zero_shot_setup,
)
from synthguard._validation import (
    check_float,
    check_int,
    check_label_range,
    describe,
)
from synthguard.concepts import ConceptBank
from synthguard.data import PairBatch, as_sample_list
from synthguard.encoders import Encoder, EncoderFingerprint, load_encoder
from synthguard.functional import knn_radii
from synthguard.relabel import ZeroShotLabeler
from synthguard.stats import EmbeddingStats, Moments

__all__ = ["SAMPLE_CHECKS", "Reference"]

#: The calibrated per-sample checks, in report order (label_mismatch only with labels).
SAMPLE_CHECKS = ("low_alignment", "off_manifold", "reference_copy", "label_mismatch")
_CMMD_SIGMA = 10.0  # Jayasumana et al. 2024


class Reference:
    """Real-data statistics and calibration, tied to one encoder fingerprint.

    Build with :meth:`build` (embeds real pairs) or :meth:`from_embeddings`; persist with
    :meth:`save` / :meth:`load` (safetensors with a JSON header, checksummed, no pickle).

    Attributes:
        stats: :class:`~synthguard.EmbeddingStats` of every real pair (``sample_size`` is the
            support size).
        fingerprint: the encoder's :class:`~synthguard.EncoderFingerprint` (``None`` if unknown).
        encoder_spec: the spec string the encoder was loaded from, if known; lets a guard
            reload it after :meth:`load`.
        k: neighbourhood size of the k-NN checks (precision/coverage, off-manifold).
        label_names: class names, or ``None`` without labels.
        skipped: reason code -> count of real samples that could not be embedded.

    Example:
        >>> import synthguard as sg
        >>> from synthguard.datasets import DIGIT_NAMES, load_digits
        >>> real = load_digits("train")
        >>> ref = sg.Reference.build(
        ...     real.images[:300], real.captions[:300], encoder="bundled:digits"
        ... )
        >>> ref.n_support, ref.thresholds(0.05)["low_alignment"] < 1.0
        (300, True)
    """

    def __init__(
        self,
        stats: EmbeddingStats,
        *,
        fingerprint: EncoderFingerprint | None = None,
        encoder_spec: str | None = None,
        k: int = 5,
        label_names: Sequence[str] | None = None,
        label_templates: Sequence[str] = (),
        class_embeddings: torch.Tensor | None = None,
        logit_scale: float | None = None,
        coverage_rows: int = 4096,
        cmmd_rows: int = 1000,
        skipped: dict[str, int] | None = None,
        _precomputed: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.stats = stats
        self.fingerprint = fingerprint
        self.encoder_spec = encoder_spec
        self.k = check_int("k", k, minimum=1)
        self.label_names = None if label_names is None else tuple(label_names)
        self.label_templates = tuple(label_templates)
        self.class_embeddings = class_embeddings
        self.logit_scale = logit_scale
        self.skipped = dict(skipped or {})
        self.encoder: Encoder | None = None  # in memory only, never saved
        self.concept_banks: list[ConceptBank] = []  # saved with the reference
        self.support_image = stats.sample("image")
        self.support_text = stats.sample("text")
        self.support_labels = stats.sample_labels("image")
        s = self.support_image.shape[0]
        if s < self.k + 2 or self.support_text.shape[0] != s or stats.n_pairs < s:
            raise InvalidInputError(
                f"a reference needs at least k + 2 = {self.k + 2} real image–caption pairs in "
                f"its support; got {s} (pairs seen: {stats.n_pairs})"
            )
        self.coverage_rows = min(check_int("coverage_rows", coverage_rows, minimum=self.k + 1), s)
        self.cmmd_rows = min(check_int("cmmd_rows", cmmd_rows, minimum=2), s)
        pre = dict(_precomputed or {})
        self.support_radii = pre.get("support_radii", knn_radii(self.support_image, self.k))
        self.coverage_radii_sq = pre.get("coverage_radii_sq", self._coverage_radii_sq())
        names = self._check_names()
        badness = pre.get("calibration_badness")
        if badness is not None and tuple(badness.shape) != (s, len(names)):
            raise InvalidInputError(
                f"calibration_badness must have shape {(s, len(names))}; got {tuple(badness.shape)}"
            )
        self.calibration = SampleCalibration(
            names=names, badness=self._badness() if badness is None else badness
        )
        self._null_cache: dict[str, torch.Tensor] = {
            key[len("null/") :]: value for key, value in pre.items() if key.startswith("null/")
        }
        self._contexts: dict[tuple[float, tuple[str, ...], tuple[str, ...]], BatchContext] = {}
        self._lock = threading.RLock()  # guards the caches: a Guard may be shared by threads

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        images: Any,
        captions: Any,
        *,
        encoder: Encoder | str,
        labels: Any = None,
        label_names: Sequence[str] | None = None,
        label_templates: str | Sequence[str] = ("a photo of a {name}",),
        ids: Any = None,
        k: int = 5,
        support_size: int = 10_000,
        seed: int = 0,
        chunk_size: int = 4096,
    ) -> Reference:
        """Embed real pairs (in chunks, memory bounded by ``support_size``) and calibrate.

        Args:
            images: real images (any form :class:`~synthguard.PairBatch` accepts).
            captions: their real captions.
            encoder: the frozen encoder or its spec string (e.g. ``"bundled:digits"``).
            labels: optional class index per sample; needs ``label_names``.
            label_names: class names; with ``labels`` they enable the label check.
            label_templates: zero-shot prompt templates containing ``{name}``.
            ids: optional unique sample ids (they pick the support deterministically).
            k: neighbourhood size for k-NN checks (5, as Naeem et al.).
            support_size: real pairs kept for the k-NN checks and resamples.
            seed: seed of the support sample.
            chunk_size: pairs embedded per chunk.

        Samples that cannot be embedded are left out with a warning and counted in
        :attr:`skipped` (real data should embed; the count says if it did not).
        """
        spec = encoder if isinstance(encoder, str) else None
        enc = load_encoder(encoder) if isinstance(encoder, str) else encoder
        batch = PairBatch(as_sample_list(images, "images"), captions, labels=labels, ids=ids)
        if batch.labels is not None and label_names is not None:
            check_label_range(batch.labels, len(label_names))
        stats = new_stats(enc.dim, enc.fingerprint, support_size, seed, label_names, labels)
        skipped = embed_into(stats, enc, batch, check_int("chunk_size", chunk_size, minimum=1))
        if skipped:
            warnings.warn(
                f"Reference.build skipped {sum(skipped.values())} real samples that could not "
                f"be embedded: {skipped}",
                stacklevel=2,
            )
        ref = cls._finish(stats, enc, enc.fingerprint, spec, k, label_names, label_templates)
        ref.skipped = skipped
        return ref

    @classmethod
    def from_embeddings(
        cls,
        image_embeddings: Any,
        text_embeddings: Any,
        *,
        labels: Any = None,
        label_names: Sequence[str] | None = None,
        ids: Any = None,
        fingerprint: EncoderFingerprint | None = None,
        encoder: Encoder | None = None,
        class_embeddings: Any = None,
        logit_scale: float | None = None,
        label_templates: str | Sequence[str] = ("a photo of a {name}",),
        k: int = 5,
        support_size: int = 10_000,
        seed: int = 0,
    ) -> Reference:
        """A reference from real pairs embedded elsewhere (``[n, d]`` rows, L2-normalised here).

        The label check needs class embeddings: pass ``class_embeddings`` (``[C, d]``) or an
        ``encoder`` to embed the ``label_templates``; without either it is off. The fingerprint
        defaults to the encoder's.
        """
        image = unit_rows("image_embeddings", image_embeddings)
        text = unit_rows("text_embeddings", text_embeddings, dim=image.shape[1])
        if text.shape[0] != image.shape[0]:
            raise InvalidInputError(
                f"text_embeddings must have one row per image ({image.shape[0]}); "
                f"got {text.shape[0]}"
            )
        if fingerprint is None and encoder is not None:
            fingerprint = encoder.fingerprint
        stats = new_stats(image.shape[1], fingerprint, support_size, seed, label_names, labels)
        stats.update(image, text, labels=labels, ids=ids)
        return cls._finish(
            stats, encoder, fingerprint, None, k, label_names, label_templates,
            class_embeddings, logit_scale,
        )  # fmt: skip

    @classmethod
    def _finish(
        cls,
        stats: EmbeddingStats,
        encoder: Encoder | None,
        fingerprint: EncoderFingerprint | None,
        spec: str | None,
        k: int,
        label_names: Sequence[str] | None,
        templates: str | Sequence[str],
        class_embeddings: Any = None,
        logit_scale: float | None = None,
    ) -> Reference:
        labels = zero_shot_setup(
            encoder, stats.dim, label_names, templates, class_embeddings, logit_scale
        )
        ref = cls(
            stats, fingerprint=fingerprint, encoder_spec=spec, k=k, label_names=label_names,
            label_templates=labels[2], class_embeddings=labels[0], logit_scale=labels[1],
        )  # fmt: skip
        ref.encoder = encoder
        return ref

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
        distance above it; ``reference_copy`` (and within-batch near duplicates): a largest
        cosine to another image above it; ``label_mismatch``: a disagreement of the frozen
        model when P(given label) is below it. ``inf``/``-inf`` mean the check never fires.
        ``checks`` calibrates the union of a subset (default: all available).
        """
        raw = self.sample_calibration(checks).thresholds(_check_alpha(alpha))
        return {name: _natural(name, value) for name, value in raw.items()}

    def sample_calibration(self, checks: Sequence[str] | None = None) -> SampleCalibration:
        """The leave-one-out calibration scores of ``checks`` (default: all available)."""
        if checks is None:
            return self.calibration
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
            DimOnly(self.stats.dim),  # type: ignore[arg-type]
            self.label_names,
            self.label_templates or ("{name}",),
            logit_scale=self.logit_scale,
            class_embeddings=self.class_embeddings,
        )

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
                rows = self.support_image[accepted]
                align = (rows * self.support_text[accepted]).sum(dim=1)
                self._contexts[key] = BatchContext(
                    moments=Moments(rows.shape[0], rows.sum(dim=0), rows.T @ rows),
                    align_sum=float(align.sum()),
                    accepted=accepted,
                    support=self.support_image,
                    coverage_rows=self.coverage_rows,
                    coverage_radii_sq=self.coverage_radii_sq,
                    cmmd_rows=self.cmmd_rows,
                    cmmd_sigma=_CMMD_SIGMA,
                    cmmd_kernel=self._cmmd_kernel(),
                    duplicate_cosine=raw.get("reference_copy", math.inf),
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
        duplicate_size: int | None = None,
        alpha: float,
        resamples: int,
        seed: int,
        checks: Sequence[str] | None = None,
        rejecting: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """``[resamples, K]`` resampled null of the batch tests, computed once and cached.

        ``size`` accepted rows for the distribution tests (0: skip them), ``duplicate_size``
        (default ``size``) embeddable rows for the duplicate rate; columns follow
        :data:`synthguard._calibration.RESAMPLED_TESTS`. Cached per sizes, resamples, seed,
        ``alpha``, checks and rejecting checks, and saved with the reference.
        """
        calibration = self.sample_calibration(checks)
        only = calibration.names if rejecting is None else tuple(rejecting)
        pool = self.accepted_support(alpha, calibration.names, only)
        size = check_int("size", size, minimum=0)
        dup_size = (
            size
            if duplicate_size is None
            else check_int("duplicate_size", duplicate_size, minimum=2)
        )
        if size == 1:
            raise InvalidInputError("size must be 0 (no distribution tests) or >= 2; got 1")
        if size > pool.numel() // 2 or dup_size > self.n_support // 2:
            raise InvalidInputError(
                f"size must be <= {pool.numel() // 2} and duplicate_size <= "
                f"{self.n_support // 2} (half the support) for real-vs-real resamples; got "
                f"{size} and {dup_size}"
            )
        key = (
            f"{size}/{dup_size}/{resamples}/{seed}/{float(alpha)!r}/"
            f"{','.join(calibration.names)}/{','.join(only)}"
        )
        context = self.batch_context(alpha, calibration.names, only)
        with self._lock:
            if key not in self._null_cache:
                self._null_cache[key] = batch_null(
                    context, self.support_text, pool, size, dup_size, resamples, seed
                )
            return self._null_cache[key]

    def add_concept_bank(self, bank: ConceptBank) -> None:
        """Keep ``bank`` with the reference (saved with it; guards use it by default).

        The bank must come from the reference's encoder; an uncalibrated bank is calibrated on
        the support.
        """
        if not isinstance(bank, ConceptBank):
            raise InvalidInputError(f"bank must be a ConceptBank; got {describe(bank)}")
        bank.check_encoder(self.fingerprint)
        if bank.margins is None:
            bank.calibrate(self.support_image)
        self.concept_banks.append(bank)

    def check_encoder(self, encoder: Encoder) -> None:
        """Raise :class:`IncompatibleStatsError` if ``encoder`` is not the reference's."""
        if self.fingerprint is None:
            return
        theirs = encoder.fingerprint
        if theirs.digest != self.fingerprint.digest:
            raise IncompatibleStatsError(
                f"the encoder's fingerprint ({theirs.model_id}, digest {theirs.digest[:12]}…) "
                f"differs from the reference's ({self.fingerprint.model_id}, digest "
                f"{self.fingerprint.digest[:12]}…); rebuild the reference with this encoder"
            )

    # -- persistence -----------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the reference atomically to ``path`` (one safetensors file); returns it."""
        from synthguard._reference_io import save_reference

        return save_reference(self, Path(path))

    @classmethod
    def load(cls, path: str | Path, *, encoder: Encoder | None = None) -> Reference:
        """Read a reference written by :meth:`save`; with ``encoder``, check it matches.

        Raises:
            CorruptFileError: the file is truncated, altered or not a reference.
            IncompatibleStatsError: ``encoder`` has a different fingerprint.
        """
        from synthguard._reference_io import load_reference

        ref = load_reference(cls, Path(path))
        if encoder is not None:
            ref.check_encoder(encoder)
            ref.encoder = encoder
        return ref

    # -- internals -------------------------------------------------------------------------

    def _check_names(self) -> tuple[str, ...]:
        return SAMPLE_CHECKS if self.has_labels else SAMPLE_CHECKS[:-1]

    def _cmmd_kernel(self) -> torch.Tensor:
        rows = self.support_image[: self.cmmd_rows]
        return rbf_kernel(rows, rows, _CMMD_SIGMA).fill_diagonal_(1.0)

    def _coverage_radii_sq(self) -> torch.Tensor:
        if self.coverage_rows == self.n_support:
            return self.support_radii**2
        return knn_radii(self.support_image[: self.coverage_rows], self.k) ** 2

    def _badness(self) -> torch.Tensor:
        return loo_badness(
            self.support_image, self.support_text, self.support_radii, self.support_labels,
            self.labeler(),
        )  # fmt: skip

    def __repr__(self) -> str:
        model = None if self.fingerprint is None else self.fingerprint.model_id
        return (
            f"Reference(pairs={self.stats.n_pairs}, support={self.n_support}, "
            f"dim={self.stats.dim}, encoder={model!r}, labels={self.label_names is not None})"
        )


def _check_alpha(alpha: Any) -> float:
    return check_float("alpha", alpha, low=0.0, high=1.0, low_open=True, high_open=True)


def _natural(name: str, badness_threshold: float) -> float:
    """Badness threshold back in the check's own units."""
    if name in ("low_alignment", "label_mismatch"):
        return -badness_threshold
    return badness_threshold
