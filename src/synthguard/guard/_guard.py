"""The guard: embed → (re-caption) → per-sample checks → batch tests → report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from synthguard._errors import EncoderError, InvalidInputError, SynthGuardError
from synthguard._reasons import ReasonCode
from synthguard._validation import describe, unit_rows_or_nan
from synthguard.batch import PairBatch
from synthguard.concepts import ConceptBank
from synthguard.config import GuardConfig
from synthguard.encoders import Encoder, embed_pairs, load_encoder
from synthguard.encoders._images import FLOAT_RANGE_ERROR
from synthguard.guard._decide import decide
from synthguard.guard._plan import GuardPlan
from synthguard.guard._rows import EmbeddedRows, mark_unembedded
from synthguard.guard._summary import shard_for
from synthguard.reference import Reference
from synthguard.reference._build import caption_tokens
from synthguard.relabel import Recaptioner, Relabel
from synthguard.report import GuardReport

__all__ = ["Guard"]


class Guard:
    r"""Accept or reject synthetic image–caption batches against a real :class:`Reference`.

    Args:
        reference: the real-data reference (its calibration sets every threshold).
        config: a :class:`GuardConfig` (defaults when ``None``).
        encoder: the frozen encoder; defaults to the reference's own (in memory after
            :meth:`Reference.build`, or reloaded from its ``encoder_spec``). Must have the
            reference's model (fingerprint digest); one loaded with ``precision="auto"``
            embeds at the reference's precision (docs/encoders.md, "Precision").
        recaptioner: optional :class:`~synthguard.relabel.Recaptioner`; samples failing only
            the alignment check get generated candidates, and a better-aligned caption that
            passes the threshold replaces theirs (provenance kept).
        concept_banks: :class:`~synthguard.ConceptBank`\ s whose groups' concept mix is tested
            against the reference's (max-z permutation test), in the Holm family, in addition
            to the banks saved with the reference; uncalibrated banks are calibrated on the
            reference support.

    Raises:
        IncompatibleStatsError: the encoder is another model than the reference's, or
            computes at another precision that was set explicitly.

    Example:
        >>> import synthguard as sg
        >>> from synthguard.datasets import load_digits
        >>> real = load_digits("test")
        >>> ref = sg.Reference.build(
        ...     real.images[:400], real.captions[:400], encoder="bundled:digits"
        ... )
        >>> guard = sg.Guard(ref, sg.GuardConfig(n_resamples=999))
        >>> batch = sg.PairBatch(real.images[400:460], real.captions[400:460])
        >>> report = guard.check(batch)
        >>> report.accepted, len(report.samples)
        (True, 60)
    """

    def __init__(
        self,
        reference: Reference,
        config: GuardConfig | None = None,
        *,
        encoder: Encoder | None = None,
        recaptioner: Recaptioner | None = None,
        concept_banks: Sequence[ConceptBank] = (),
    ) -> None:
        self.plan = GuardPlan.compile(reference, config, concept_banks)
        self.recaptioner = recaptioner
        self._encoder = encoder if encoder is not None else reference.encoder
        if self._encoder is None and reference.encoder_spec is not None:
            self._encoder = load_encoder(reference.encoder_spec)
        if self._encoder is not None:  # the reference's model, at the reference's precision
            self._encoder = reference.encoder_for(self._encoder)
            # The null goes where the encoder runs (a GPU), unless GuardConfig.device says.
            self.plan = replace(self.plan, encoder_device=str(self._encoder.device))

    @property
    def reference(self) -> Reference:
        """The real-data reference (fixed: build another ``Guard`` for another one)."""
        return self.plan.reference

    @property
    def config(self) -> GuardConfig:
        """The configuration (fixed: build another ``Guard`` for another one)."""
        return self.plan.config

    @property
    def checks(self) -> tuple[str, ...]:
        """The enabled per-sample checks the reference calibrates, in config order."""
        return self.plan.check_names

    @property
    def rejecting(self) -> tuple[str, ...]:
        """The checks whose flag rejects a sample (a relabeled label does not)."""
        return self.plan.rejecting

    @property
    def concept_banks(self) -> tuple[ConceptBank, ...]:
        """The reference's concept banks, then the guard's own."""
        return self.plan.concept_banks

    def rows_for(self, accepted: int) -> int:
        """Rows the distribution tests use for ``accepted`` accepted samples (0: too few)."""
        return self.plan.rows_for(accepted)

    def duplicate_rows_for(self, valid: int) -> int:
        """Rows the duplicate-rate test uses for ``valid`` embeddable samples (0: too few)."""
        return self.plan.duplicate_rows_for(valid)

    @property
    def encoder(self) -> Encoder | None:
        """The frozen encoder used by :meth:`check` (``None``: only embeddings can be checked)."""
        return self._encoder

    # -- entry points ----------------------------------------------------------------------

    def check(
        self, batch: PairBatch, *, sync: bool | None = None, group: Any = None
    ) -> GuardReport:
        """Embed ``batch`` and decide per sample and for the batch.

        Samples that cannot be embedded are rejected with their reason; the rest of the batch
        is still checked. Raises only for invalid arguments or when the encoder fails for the
        whole batch (:class:`~synthguard.EncoderError`): nothing is accepted then.

        Args:
            batch: the pairs to check.
            sync: treat the batches of all ranks of ``group`` as one batch (torch.distributed):
                per-sample decisions stay local, the batch tests see every rank's rows and
                every rank gets the same batch verdict. Every rank must call ``check``
                together. ``None`` (default) syncs when a process group of more than one rank
                is initialised; ``False`` checks this rank's batch alone. Ids must identify
                samples across ranks (pass dataset indices; the defaults are refused); a row
                whose id an earlier rank holds in the same check is counted once.
            group: the process group (default: the world).
        """
        if not isinstance(batch, PairBatch):
            raise InvalidInputError(f"batch must be a PairBatch; got {describe(batch)}")
        if self._encoder is None:
            raise InvalidInputError(
                "this Guard has no encoder: pass encoder= (the reference was loaded without one "
                "and records no spec), or use check_embeddings()"
            )
        shard = shard_for(sync, group)
        try:
            self.plan.check_labels(batch.labels)
            emb = self._embed(batch)
            _refuse_normalised_images(emb.error_details, len(batch))
            dim = self.reference.stats.dim
            image = unit_rows_or_nan("encoder image embeddings", emb.image, dim)
            text = unit_rows_or_nan("encoder text embeddings", emb.text, dim)
            caption_relabels = self._recaption(batch, image, text, emb.errors)
            captions = [
                str(caption_relabels[i].new_value)
                if i in caption_relabels and caption_relabels[i].applied else caption
                for i, caption in enumerate(batch.captions)
            ]  # fmt: skip
            rows = EmbeddedRows(
                image, text, batch.ids, batch.labels, dict(emb.errors), dict(emb.error_details),
                caption_relabels, emb.truncated, caption_tokens(captions),
                default_ids=not batch.ids_given,
            )  # fmt: skip
            return decide(self.plan, rows, shard)
        except BaseException:
            shard.fail()  # before the first collective, the other ranks must not wait
            raise

    def _embed(self, batch: PairBatch) -> Any:
        assert self._encoder is not None
        try:
            return embed_pairs(self._encoder, batch)
        except SynthGuardError:
            raise
        except Exception as exc:  # a user encoder's own failure: fail closed, typed
            raise EncoderError(
                f"the encoder failed for the whole batch of {len(batch)} samples; nothing was "
                f"accepted: {type(exc).__name__}: {exc}"
            ) from exc

    def check_embeddings(
        self,
        image_embeddings: Any,
        text_embeddings: Any,
        *,
        labels: Any = None,
        ids: Any = None,
        sync: bool | None = None,
        group: Any = None,
    ) -> GuardReport:
        """Decide on pairs embedded elsewhere, by the reference's encoder at its precision
        (``reference.fingerprint.precision``: other numerics move the scores, docs/encoders.md).

        A NaN, infinite or zero row is that sample's reject (``encoding_failed``), not an
        error; shapes, labels and ids are validated. ``sync`` and ``group`` are as in
        :meth:`check`.
        """
        shard = shard_for(sync, group)
        try:
            dim = self.reference.stats.dim
            image = unit_rows_or_nan("image_embeddings", image_embeddings, dim)
            if image.shape[0] == 0:
                raise InvalidInputError("image_embeddings must have at least one row; got 0")
            text = unit_rows_or_nan("text_embeddings", text_embeddings, dim, n=image.shape[0])
            # Labels and ids are validated exactly as a PairBatch validates them.
            n = image.shape[0]
            meta = PairBatch([None] * n, [""] * n, labels=labels, ids=ids)
            self.plan.check_labels(meta.labels)
            errors: dict[int, ReasonCode] = {}
            details: dict[int, str] = {}
            mark_unembedded(image, text, errors, details)
            rows = EmbeddedRows(
                image, text, meta.ids, meta.labels, errors, details, default_ids=ids is None
            )
            return decide(self.plan, rows, shard)
        except BaseException:
            shard.fail()
            raise

    # -- internals -------------------------------------------------------------------------

    def _recaption(
        self, batch: PairBatch, image: torch.Tensor, text: torch.Tensor, errors: dict[int, Any]
    ) -> dict[int, Relabel]:
        if self.recaptioner is None or "low_alignment" not in self.checks:
            return {}
        limit = self.plan.threshold("low_alignment")
        low = [
            i for i in range(len(batch))
            if i not in errors and float((image[i] * text[i]).sum()) < limit
        ]  # fmt: skip
        if not low:
            return {}
        assert self._encoder is not None
        records = self.recaptioner.recaption(
            [batch.images[i] for i in low], [batch.captions[i] for i in low], self._encoder,
            image_embeddings=image[low],
        )  # fmt: skip
        out: dict[int, Relabel] = {}
        for i, record in zip(low, records, strict=True):
            if record.applied and not record.new_score >= limit:  # better, but still too low
                record = record.model_copy(
                    update={"applied": False,
                            "reason": f"{record.reason}; still below the threshold {limit:.4f}"}
                )  # fmt: skip
            out[i] = record.model_copy(update={"index": i})
            if record.applied:
                new = self._encoder.encode_texts([str(record.new_value)])
                text[i] = unit_rows_or_nan("encoder text embeddings", new, text.shape[1])[0]
        return out

    def __repr__(self) -> str:
        return f"Guard({self.reference!r}, alpha={self.config.alpha}, checks={self.checks})"


def _refuse_normalised_images(details: dict[int, str], n: int) -> None:
    """One batch-level error, not ``n`` identical rejects, when every image of a batch is a
    float tensor outside [0, 1]: the batch was normalised for a model (``Normalize``)."""
    if n and len(details) == n and all(FLOAT_RANGE_ERROR in d for d in details.values()):
        raise InvalidInputError(
            f"images must be un-normalised: every image of the batch is a float tensor outside "
            f"[0, 1] ({details[0].split('; ')[0]}), as after torchvision's Normalize. Pass the "
            "images before Normalize (floats in [0, 1], uint8 arrays or PIL images): the "
            "encoder applies its own preprocessing"
        )
