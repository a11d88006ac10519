"""The guard: embed → (re-caption) → per-sample checks → batch tests → report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from synthguard._errors import EncoderError, InvalidInputError, SynthGuardError
from synthguard._reasons import ReasonCode
from synthguard._sample_checks import check_samples
from synthguard._shards import LocalShard, shard_for, summarise
from synthguard._validation import check_label_range, describe, unit_rows_or_nan
from synthguard._verdict import make_report
from synthguard.concepts import ConceptBank
from synthguard.data import PairBatch
from synthguard.encoders import Encoder, embed_pairs, load_encoder
from synthguard.policy import GuardConfig
from synthguard.reference import Reference
from synthguard.relabel import Recaptioner, Relabel
from synthguard.report import GuardReport, count_reasons

__all__ = ["Guard"]


class Guard:
    r"""Accept or reject synthetic image–caption batches against a real :class:`Reference`.

    Args:
        reference: the real-data reference (its calibration sets every threshold).
        config: a :class:`GuardConfig` (defaults when ``None``).
        encoder: the frozen encoder; defaults to the reference's own (in memory after
            :meth:`Reference.build`, or reloaded from its ``encoder_spec``). Must have the
            reference's fingerprint.
        recaptioner: optional :class:`~synthguard.relabel.Recaptioner`; samples failing only
            the alignment check get generated candidates, and a better-aligned caption that
            passes the threshold replaces theirs (provenance kept).
        concept_banks: :class:`~synthguard.ConceptBank`\ s whose groups' concept mix is tested
            against the reference's (max-z permutation test), in the Holm family, in addition
            to the banks saved with the reference; uncalibrated banks are calibrated on the
            reference support.

    Raises:
        IncompatibleStatsError: the encoder's fingerprint differs from the reference's.

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
        if not isinstance(reference, Reference):
            raise InvalidInputError(f"reference must be a Reference; got {describe(reference)}")
        if config is not None and not isinstance(config, GuardConfig):
            raise InvalidInputError(f"config must be a GuardConfig; got {describe(config)}")
        self.reference = reference
        self.config = config or GuardConfig()
        self.recaptioner = recaptioner
        self._encoder = encoder if encoder is not None else reference.encoder
        if self._encoder is None and reference.encoder_spec is not None:
            self._encoder = load_encoder(reference.encoder_spec)
        if self._encoder is not None:
            reference.check_encoder(self._encoder)
        self.checks = tuple(
            c for c in self.config.sample_checks if c in reference.calibration.names
        )
        self.concept_banks = (*reference.concept_banks, *concept_banks)
        groups = [g for bank in self.concept_banks for g in getattr(bank, "groups", ())]
        repeated = sorted({g for g in groups if groups.count(g) > 1})
        if repeated:
            raise InvalidInputError(
                f"concept bank group names must be unique across banks; {repeated} repeat"
            )
        for bank in self.concept_banks:
            if not isinstance(bank, ConceptBank):
                raise InvalidInputError(
                    f"concept_banks must hold ConceptBanks; got {describe(bank)}"
                )
            bank.check_encoder(reference.fingerprint)
            if bank.margins is None:
                bank.calibrate(reference.support_image)
        family = len(self.config.batch_tests) + sum(len(b.groups) for b in self.concept_banks)
        if family and (self.config.n_resamples + 1) * self.config.alpha_batch / family < 1:
            raise InvalidInputError(
                f"n_resamples must be >= {math.ceil(family / self.config.alpha_batch) - 1} for "
                f"{family} batch tests (concept groups included) at alpha_batch "
                f"{self.config.alpha_batch}; got {self.config.n_resamples}"
            )
        # Checks whose flag rejects a sample: a relabeled (or kept) label disagreement does not.
        self.rejecting = tuple(
            c for c in self.checks if c != "label_mismatch" or self.config.label_policy == "reject"
        )

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
            self._check_labels(batch.labels)
            emb = self._embed(batch)
            dim = self.reference.stats.dim
            image = unit_rows_or_nan("encoder image embeddings", emb.image, dim)
            text = unit_rows_or_nan("encoder text embeddings", emb.text, dim)
            caption_relabels = self._recaption(batch, image, text, emb.errors)
            return self._decide(
                image, text, batch.labels, batch.ids, dict(emb.errors),
                dict(emb.error_details), caption_relabels, emb.truncated, shard,
                default_ids=not batch.ids_given,
            )  # fmt: skip
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
        """Decide on pairs embedded elsewhere (by the reference's encoder).

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
            self._check_labels(meta.labels)
            errors: dict[int, ReasonCode] = {}
            details: dict[int, str] = {}
            mark_unembedded(image, text, errors, details)
            return self._decide(
                image, text, meta.labels, meta.ids, errors, details, {}, None, shard,
                default_ids=ids is None,
            )  # fmt: skip
        except BaseException:
            shard.fail()
            raise

    # -- internals -------------------------------------------------------------------------

    def _check_labels(self, labels: list[int] | None) -> None:
        names = self.reference.label_names
        if labels is not None and names is not None:
            check_label_range(labels, len(names))

    def _recaption(
        self, batch: PairBatch, image: torch.Tensor, text: torch.Tensor, errors: dict[int, Any]
    ) -> dict[int, Relabel]:
        if self.recaptioner is None or "low_alignment" not in self.checks:
            return {}
        limit = self.reference.thresholds(self.config.alpha, self.checks)["low_alignment"]
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

    def _decide(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        labels: list[int] | None,
        ids: list[Any],
        errors: dict[int, ReasonCode],
        details: dict[int, str],
        caption_relabels: dict[int, Relabel],
        truncated: torch.Tensor | None = None,
        shard: LocalShard | None = None,
        *,
        default_ids: bool = False,
    ) -> GuardReport:
        cfg, ref = self.config, self.reference
        shard = shard or LocalShard()
        outcome = check_samples(
            ref, image, text, labels=labels if ref.has_labels else None, ids=ids, errors=errors,
            error_details=details, checks=self.checks, alpha=cfg.alpha,
            label_policy=cfg.label_policy, caption_relabels=caption_relabels, truncated=truncated,
        )  # fmt: skip
        decisions = tuple(outcome.decisions)
        valid = torch.ones(image.shape[0], dtype=torch.bool)
        valid[list(errors)] = False
        names = ref.label_names
        summary = summarise(
            shard, image=image, text=text, ids=[d.id for d in decisions],
            valid=valid, accepted=torch.tensor([d.accepted for d in decisions]),
            flagged=outcome.flagged, labels=labels, carried=[d.new_label for d in decisions],
            default_ids=default_ids,
            rows_for=self.rows_for, duplicate_rows_for=self.duplicate_rows_for,
            min_rows=cfg.min_batch_size, seed=cfg.seed,
            num_labels=None if names is None else len(names),
            concept_counter=self.count_concepts,
        )  # fmt: skip
        report = make_report(
            self, summary, samples=decisions, n_relabeled=outcome.n_relabeled,
            rejects_by_reason=count_reasons(decisions),
            n_truncated=sum(d.truncated for d in decisions),
        )  # fmt: skip
        # Every rank computed the verdict from the same rows; a last collective makes sure
        # numerics (another BLAS, another GPU) did not split it: any reject rejects for all.
        if summary.world_size > 1 and not shard.all_true(report.accepted):
            reason = "another rank's verdict on the same rows was reject (numerical disagreement)"
            report = report.model_copy(
                update={"accepted": False, "reasons": (*report.reasons, reason)}
            )
        return report

    def rows_for(self, accepted: int) -> int:
        """Rows the distribution tests use for ``accepted`` accepted samples (0: too few)."""
        cfg, ref = self.config, self.reference
        pool = ref.accepted_support(cfg.alpha, self.checks, self.rejecting).numel()
        return _cap(accepted, cfg.max_batch_rows, pool // 2)

    def duplicate_rows_for(self, valid: int) -> int:
        """Rows the duplicate-rate test uses for ``valid`` embeddable samples (0: too few)."""
        return _cap(valid, self.config.max_batch_rows, self.reference.n_support // 2)

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

    def __repr__(self) -> str:
        return f"Guard({self.reference!r}, alpha={self.config.alpha}, checks={self.checks})"


#: Sizes the batch tests run at: a geometric grid (ratio 2^¼). A batch is subsampled (seeded) to
#: the largest grid size it reaches, so batches whose accepted counts differ by a few samples
#: share one cached null distribution instead of recalibrating (at most 16% of rows unused).
_GRID = tuple(sorted({round(2 ** (k / 4)) for k in range(4, 4 * 24)}))


def _cap(n: int, *limits: int) -> int:
    """The largest grid size not above ``n`` or any limit (0 when below the grid)."""
    top = min(n, *limits)
    return max((g for g in _GRID if g <= top), default=0)


def mark_unembedded(
    image: torch.Tensor, text: torch.Tensor, errors: dict[int, ReasonCode],
    details: dict[int, str],
) -> None:  # fmt: skip
    """Add ``encoding_failed`` for NaN rows (from :func:`unit_rows_or_nan`) not yet marked."""
    for name, x in (("image", image), ("text", text)):
        for i in torch.nonzero(torch.isnan(x).any(dim=1)).flatten().tolist():
            errors.setdefault(i, ReasonCode.ENCODING_FAILED)
            details.setdefault(i, f"the {name} embedding is NaN, infinite or zero")
