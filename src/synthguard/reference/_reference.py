"""The reference: frozen statistics of real data and the calibration the guard decides with.

A :class:`Reference` is built once from real image–caption pairs. It keeps the mergeable
:class:`~synthguard.EmbeddingStats` of every pair, a bounded *support* (the stats' bottom-k
sample) with its k-NN radii, each support pair's leave-one-out per-sample scores (one column
per available check of :data:`synthguard.checks.SAMPLE_CHECKS`), the zero-shot class
embeddings when labels are given, and the batch tests' null distributions per batch size
(computed on first use and cached). docs/design.md has the rules they feed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from synthguard._errors import CorruptFileError, InvalidInputError
from synthguard._io import FileRefusedError, atomic_write_bytes, read_file
from synthguard._validation import check_int, check_label_range, describe
from synthguard.batch import PairBatch, as_sample_list
from synthguard.concepts import ConceptBank
from synthguard.encoders import Encoder, EncoderFingerprint, load_encoder
from synthguard.reference._ahead import calibrate_ahead
from synthguard.reference._build import (
    embed_into,
    new_stats,
    unit_rows,
    zero_shot_setup,
)
from synthguard.reference._calibrated import CalibratedSupport
from synthguard.reference._codec import ReferenceState, decode, encode
from synthguard.reference._numerics import at_reference_precision
from synthguard.reference._state import reference_from_state, state_of
from synthguard.stats import EmbeddingStats

if TYPE_CHECKING:
    from synthguard.config import GuardConfig

__all__ = ["Reference"]


class Reference(CalibratedSupport):
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
        support_caption_tokens: ``[s]`` caption tokens of the support pairs (``None`` when
            built from embeddings): what the opt-in ``long_caption`` check is calibrated on.

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
        support_caption_tokens: torch.Tensor | None = None,
        _precomputed: dict[str, torch.Tensor] | None = None,
        _precomputed_checks: Sequence[str] = (),
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
        self.support_caption_tokens = (
            None if support_caption_tokens is None else support_caption_tokens.double()
        )
        if self.support_caption_tokens is not None and self.support_caption_tokens.shape != (s,):
            raise InvalidInputError(
                f"support_caption_tokens must have shape ({s},); got "
                f"{tuple(self.support_caption_tokens.shape)}"
            )
        self._calibrate(dict(_precomputed or {}), _precomputed_checks)

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
        batch_sizes: Sequence[int] = (),
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
            batch_sizes: sizes of the batches guards will check: their batch tests' nulls
                are computed now (default :class:`~synthguard.GuardConfig`; every core;
                :meth:`calibrate` for another config) and saved with the reference.

        Samples that cannot be embedded are left out with a warning and counted in
        :attr:`skipped` (real data should embed; the count says if it did not).
        """
        spec = encoder if isinstance(encoder, str) else _spec_of(encoder)
        enc = load_encoder(encoder) if isinstance(encoder, str) else encoder
        batch = PairBatch(as_sample_list(images, "images"), captions, labels=labels, ids=ids)
        if batch.labels is not None and label_names is not None:
            check_label_range(batch.labels, len(label_names))
        stats = new_stats(enc.dim, enc.fingerprint, support_size, seed, label_names, labels)
        chunk = check_int("chunk_size", chunk_size, minimum=1)
        skipped, tokens = embed_into(stats, enc, batch, chunk)
        if skipped:
            warnings.warn(
                f"Reference.build skipped {sum(skipped.values())} real samples that could not "
                f"be embedded: {skipped}",
                stacklevel=2,
            )
        ref = cls._finish(
            stats, enc, enc.fingerprint, spec, k, label_names, label_templates, tokens=tokens
        )
        ref.skipped = skipped
        if batch_sizes:
            ref.calibrate(batch_sizes)
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
        batch_sizes: Sequence[int] = (),
    ) -> Reference:
        """A reference from real pairs embedded elsewhere (``[n, d]`` rows, L2-normalised here).

        The label check needs class embeddings: pass ``class_embeddings`` (``[C, d]``) or an
        ``encoder`` to embed the ``label_templates``; without either it is off. The fingerprint
        defaults to the encoder's. ``batch_sizes``: as in :meth:`build`.
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
        ref = cls._finish(
            stats, encoder, fingerprint, _spec_of(encoder), k, label_names, label_templates,
            class_embeddings, logit_scale,
        )  # fmt: skip
        if batch_sizes:
            ref.calibrate(batch_sizes)
        return ref

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
        *,
        tokens: torch.Tensor | None = None,
    ) -> Reference:
        labels = zero_shot_setup(
            encoder, stats.dim, label_names, templates, class_embeddings, logit_scale
        )
        ref = cls(
            stats, fingerprint=fingerprint, encoder_spec=spec, k=k, label_names=label_names,
            label_templates=labels[2], class_embeddings=labels[0], logit_scale=labels[1],
            support_caption_tokens=tokens,
        )  # fmt: skip
        ref.encoder = encoder
        return ref

    def calibrate(
        self,
        batch_sizes: Sequence[int],
        config: GuardConfig | None = None,
        *,
        concept_banks: Sequence[ConceptBank] = (),
        threads: int | None = None,
        device: str = "cpu",
        progress: bool = True,
    ) -> tuple[int, ...]:
        """Compute ahead the batch tests' nulls that guards with ``config`` need for batches of
        ``batch_sizes`` samples (each size's grid size and the one below); returns the row
        counts calibrated. Save the reference afterwards to keep them.

        Args:
            batch_sizes: sizes of the batches that will be checked.
            config: the guards' configuration (default :class:`~synthguard.GuardConfig`).
            concept_banks: the guards' extra concept banks (they size the Holm family).
            threads: CPU worker threads (default: every available core).
            device: where to compute (``"cuda"``: on the GPU).
            progress: show a progress bar per size.

        Example:
            >>> import torch, synthguard as sg
            >>> x = torch.nn.functional.normalize(torch.randn(400, 8), dim=1)
            >>> ref = sg.Reference.from_embeddings(x, x)
            >>> ref.calibrate([64], progress=False)
            (54, 64)
        """
        return calibrate_ahead(
            self, batch_sizes, config, concept_banks=(*self.concept_banks, *concept_banks),
            threads=threads, device=device, progress=progress,
        )  # fmt: skip

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
        """Raise :class:`IncompatibleStatsError` if ``encoder`` cannot embed for this
        reference: another model or preprocessing, or a precision :meth:`encoder_for` cannot
        match."""
        self.encoder_for(encoder)

    def encoder_for(self, encoder: Encoder) -> Encoder:
        """``encoder`` at this reference's numerics: itself when its precision is the
        reference's; the same model at the reference's precision when it was loaded with
        ``precision="auto"`` (a reference built in fp32 on a CPU, a guard on a GPU).

        Raises:
            IncompatibleStatsError: another model or preprocessing (fingerprint digest), or
                another precision set explicitly (the message names both and the fix).
        """
        return at_reference_precision(self.fingerprint, encoder)

    # -- persistence -----------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the reference atomically to ``path`` (one safetensors file); returns it."""
        target = Path(path)
        atomic_write_bytes(target, self.to_bytes())
        return target

    @classmethod
    def load(cls, path: str | Path, *, encoder: Encoder | None = None) -> Reference:
        """Read a reference written by :meth:`save`; with ``encoder``, check it matches.

        Raises:
            CorruptFileError: the file is truncated, altered or not a reference.
            IncompatibleStatsError: ``encoder`` has a different fingerprint.
        """
        try:  # a regular file only: a FIFO would block, /dev/zero fill memory
            blob = read_file(path, max_bytes=None, what="reference file")
        except FileRefusedError as exc:
            raise CorruptFileError(str(exc)) from exc
        ref = cls.from_bytes(blob, source=str(path))
        if encoder is not None:
            ref.encoder = ref.encoder_for(encoder)
        return ref

    def to_bytes(self) -> bytes:
        """The reference as the bytes of a ``.sgref`` file (e.g. to ship to Ray workers)."""
        return encode(self.to_state())

    @classmethod
    def from_bytes(cls, blob: bytes, *, source: str = "<bytes>") -> Reference:
        """Read :meth:`to_bytes` output (or a file's bytes); ``source`` names it in errors."""
        return cls.from_state(decode(blob, source), source=source)

    def to_state(self) -> ReferenceState:
        """The reference as plain tensors and metadata (what :meth:`to_bytes` encodes)."""
        with self._lock:
            nulls = dict(self._null_cache)
        return state_of(self, nulls)

    @classmethod
    def from_state(cls, state: ReferenceState, *, source: str = "<state>") -> Reference:
        """A reference from :meth:`to_state` output; ``source`` names it in errors.

        Raises:
            CorruptFileError: the state is inconsistent (missing or misshapen parts).
        """
        return reference_from_state(cls, state, source)

    # -- internals -------------------------------------------------------------------------

    def __repr__(self) -> str:
        model = None if self.fingerprint is None else self.fingerprint.model_id
        return (
            f"Reference(pairs={self.stats.n_pairs}, support={self.n_support}, "
            f"dim={self.stats.dim}, encoder={model!r}, labels={self.label_names is not None})"
        )


def _spec_of(encoder: Encoder | None) -> str | None:
    """The spec an encoder was loaded from (:func:`~synthguard.load_encoder` records it)."""
    spec = getattr(encoder, "spec", None)
    return spec if isinstance(spec, str) else None
