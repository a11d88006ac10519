"""The guard: embed → (re-caption) → per-sample checks → batch tests → report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from synthguard._calibration import (
    BATCH_TESTS,
    RESAMPLED_TESTS,
    batch_values,
    bound_at,
    duplicate_rate,
    empirical_p,
    flag_rate_test,
    holm,
)
from synthguard._errors import EncoderError, InvalidInputError, SynthGuardError
from synthguard._reasons import ReasonCode
from synthguard._sample_checks import SampleOutcome, check_samples
from synthguard._validation import check_label_range, describe, unit_rows_or_nan
from synthguard.concepts import ConceptBank, ConceptDrift, concept_drift
from synthguard.data import PairBatch
from synthguard.encoders import Encoder, embed_pairs, load_encoder
from synthguard.functional import label_drift
from synthguard.policy import GuardConfig
from synthguard.reference import Reference
from synthguard.relabel import Recaptioner, Relabel
from synthguard.report import GuardReport, MetricResult, count_reasons

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

    def check(self, batch: PairBatch) -> GuardReport:
        """Embed ``batch`` and decide per sample and for the batch.

        Samples that cannot be embedded are rejected with their reason; the rest of the batch
        is still checked. Raises only for invalid arguments or when the encoder fails for the
        whole batch (:class:`~synthguard.EncoderError`): nothing is accepted then.
        """
        if not isinstance(batch, PairBatch):
            raise InvalidInputError(f"batch must be a PairBatch; got {describe(batch)}")
        if self._encoder is None:
            raise InvalidInputError(
                "this Guard has no encoder: pass encoder= (the reference was loaded without one "
                "and records no spec), or use check_embeddings()"
            )
        self._check_labels(batch.labels)
        try:
            emb = embed_pairs(self._encoder, batch)
        except SynthGuardError:
            raise
        except Exception as exc:  # a user encoder's own failure: fail closed, typed
            raise EncoderError(
                f"the encoder failed for the whole batch of {len(batch)} samples; nothing was "
                f"accepted: {type(exc).__name__}: {exc}"
            ) from exc
        dim = self.reference.stats.dim
        image = unit_rows_or_nan("encoder image embeddings", emb.image, dim)
        text = unit_rows_or_nan("encoder text embeddings", emb.text, dim)
        caption_relabels = self._recaption(batch, image, text, emb.errors)
        return self._decide(
            image, text, batch.labels, batch.ids, dict(emb.errors), dict(emb.error_details),
            caption_relabels, emb.truncated,
        )  # fmt: skip

    def check_embeddings(
        self, image_embeddings: Any, text_embeddings: Any, *, labels: Any = None, ids: Any = None
    ) -> GuardReport:
        """Decide on pairs embedded elsewhere (by the reference's encoder).

        A NaN, infinite or zero row is that sample's reject (``encoding_failed``), not an
        error; shapes, labels and ids are validated.
        """
        dim = self.reference.stats.dim
        image = unit_rows_or_nan("image_embeddings", image_embeddings, dim)
        if image.shape[0] == 0:
            raise InvalidInputError("image_embeddings must have at least one row; got 0")
        text = unit_rows_or_nan("text_embeddings", text_embeddings, dim, n=image.shape[0])
        # Labels and ids are validated exactly as a PairBatch validates them.
        meta = PairBatch([None] * image.shape[0], [""] * image.shape[0], labels=labels, ids=ids)
        self._check_labels(meta.labels)
        errors: dict[int, ReasonCode] = {}
        details: dict[int, str] = {}
        for name, x in (("image", image), ("text", text)):
            for i in torch.nonzero(torch.isnan(x).any(dim=1)).flatten().tolist():
                errors.setdefault(i, ReasonCode.ENCODING_FAILED)
                details.setdefault(i, f"the {name} embedding is NaN, infinite or zero")
        return self._decide(image, text, meta.labels, meta.ids, errors, details, {})

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
    ) -> GuardReport:
        cfg, ref = self.config, self.reference
        outcome = check_samples(
            ref, image, text, labels=labels if ref.has_labels else None, ids=ids, errors=errors,
            error_details=details, checks=self.checks, alpha=cfg.alpha,
            label_policy=cfg.label_policy, caption_relabels=caption_relabels, truncated=truncated,
        )  # fmt: skip
        n = image.shape[0]
        valid = torch.tensor([i for i in range(n) if i not in errors], dtype=torch.int64)
        reasons: list[str] = []
        metrics: dict[str, MetricResult] = {}
        concepts: list[ConceptDrift] = []
        risk: float | None = None
        rows = 0
        if valid.numel() == 0:
            counts = ", ".join(
                f"{k}={v}" for k, v in count_reasons(tuple(outcome.decisions)).items()
            )
            reasons.append(f"no sample could be embedded ({counts}); nothing was checked")
            risk = 1.0
        elif not cfg.batch_tests:
            reasons.append("batch tests off (GuardConfig.batch_tests is empty)")
        else:
            metrics, risk, rows, notes, concepts = self._batch_tests(image, text, valid, outcome)
            reasons.extend(notes)
            reasons.extend(f"failed {m.describe()}" for m in metrics.values() if m.passed is False)
        if valid.numel():
            metrics.update(self._informational(labels, valid))
        n_accepted = sum(d.accepted for d in outcome.decisions)
        tests_failed = any(m.passed is False for m in metrics.values())
        if n_accepted == 0 and valid.numel():
            reasons.append(f"no sample passed the per-sample checks ({n} rejected)")
        return GuardReport(
            accepted=n_accepted > 0 and not tests_failed,
            reasons=tuple(reasons),
            risk_score=risk,
            samples=tuple(outcome.decisions),
            metrics=metrics,
            n_samples=n,
            n_accepted=n_accepted,
            n_relabeled=outcome.n_relabeled,
            n_truncated=sum(d.truncated for d in outcome.decisions),
            rejects_by_reason=count_reasons(tuple(outcome.decisions)),
            concepts={d.group: d for d in concepts},
            concepts_by_class=self._conditional_concepts(image, outcome) if concepts else {},
            alpha=cfg.alpha,
            alpha_batch=cfg.alpha_batch,
            seed=cfg.seed,
            rows_tested=rows,
            reference={
                "encoder_digest": None if ref.fingerprint is None else ref.fingerprint.digest,
                "pairs": ref.stats.n_pairs,
                "support": ref.n_support,
            },
        )

    def _batch_tests(
        self, image: torch.Tensor, text: torch.Tensor, valid: torch.Tensor, outcome: SampleOutcome
    ) -> tuple[dict[str, MetricResult], float | None, int, list[str], list[ConceptDrift]]:
        """Run the configured batch tests that have enough rows; Holm over those that ran."""
        cfg, ref = self.config, self.reference
        accepted = valid[[outcome.decisions[i].accepted for i in valid.tolist()]]
        pool = ref.accepted_support(cfg.alpha, self.checks, self.rejecting).numel()
        rows = _cap(accepted.numel(), cfg.max_batch_rows, pool // 2)
        dup_rows = _cap(valid.numel(), cfg.max_batch_rows, ref.n_support // 2)
        n = len(outcome.decisions)
        values: dict[str, float] = {}
        nulls: dict[str, torch.Tensor] = {}
        notes: list[str] = []
        wanted = set(cfg.batch_tests)
        distribution = rows >= cfg.min_batch_size
        if not distribution:
            notes.append(
                f"distribution tests skipped: {rows} accepted rows < min_batch_size "
                f"{cfg.min_batch_size} (or half the reference support)"
            )
        if dup_rows >= cfg.min_batch_size:
            gen = torch.Generator().manual_seed(cfg.seed)  # seeded subsamples above the caps
            dup_pick = valid[torch.randperm(valid.numel(), generator=gen)[:dup_rows]].sort()[0]
            context = ref.batch_context(cfg.alpha, self.checks, self.rejecting)
            if distribution:
                picked = accepted[torch.randperm(accepted.numel(), generator=gen)[:rows]].sort()[0]
                values = batch_values(context, image[picked], text[picked])
            values["duplicate_rate"] = duplicate_rate(image[dup_pick], context.duplicate_cosine)
            null = ref.batch_null(
                rows if distribution else 0, duplicate_size=dup_rows, alpha=cfg.alpha,
                resamples=cfg.n_resamples, seed=cfg.seed, checks=self.checks,
                rejecting=self.rejecting,
            )  # fmt: skip
            nulls = {name: null[:, j] for j, name in enumerate(RESAMPLED_TESTS)}
        values["flag_rate"] = float(outcome.flagged.double().mean())
        ran = [name for name in BATCH_TESTS if name in wanted and name in values]
        if "flag_rate" in ran and n < cfg.min_batch_size:
            ran.remove("flag_rate")
        flag_p, _, flag_median = self._flag_rate(outcome, cfg.alpha_batch)
        p = [
            empirical_p(nulls[name], values[name], BATCH_TESTS[name])
            if name != "flag_rate"
            else flag_p
            for name in ran
        ]
        concepts = self._concept_tests(image, accepted) if distribution else []
        p += [drift.p_value for drift in concepts]
        levels, adjusted, rejected = holm(p, cfg.alpha_batch) if p else ([], [], [])
        metrics: dict[str, MetricResult] = {}
        for j, drift in enumerate(concepts, start=len(ran)):
            tails = f"; tail loss: {', '.join(drift.tail_loss)}" if drift.tail_loss else ""
            metrics[f"concept:{drift.group}"] = MetricResult(
                name=f"concept:{drift.group}", value=drift.js_divergence, direction="high",
                p_value=p[j], adjusted_p_value=adjusted[j], level=levels[j],
                passed=not rejected[j],
                note=f"Jensen–Shannon (bits) of the concept mix; max-z permutation test; "
                f"largest mover {drift.largest_mover} ({drift.largest_change:+.1%}){tails}",
            )  # fmt: skip

        for name in BATCH_TESTS:
            if name not in values:
                continue
            if name not in ran:
                is_flag = name == "flag_rate"
                metrics[name] = MetricResult(
                    name=name, value=values[name], direction=BATCH_TESTS[name],
                    null_median=flag_median if is_flag else _median(nulls.get(name)),
                    p_value=flag_p if is_flag else None,
                    note="informational: not in GuardConfig.batch_tests",
                )  # fmt: skip
                continue
            j = ran.index(name)
            direction = BATCH_TESTS[name]
            bound: float | None
            if name == "flag_rate":
                _, bound, median = self._flag_rate(outcome, levels[j])
            else:
                bound = bound_at(nulls[name], levels[j], direction)
                median = float(nulls[name].median())
            metrics[name] = MetricResult(
                name=name, value=values[name], direction=direction, bound=bound,
                null_median=median, p_value=p[j], adjusted_p_value=adjusted[j],
                level=levels[j], passed=not rejected[j],
            )  # fmt: skip
        if not p:
            return metrics, None, 0, [*notes, "batch tests skipped: batch too small"], concepts
        return metrics, 1.0 - min(adjusted), rows if distribution else 0, notes, concepts

    def _conditional_concepts(
        self, image: torch.Tensor, outcome: SampleOutcome
    ) -> dict[str, dict[str, ConceptDrift]]:
        """Per group and class: the attribute mix *within* the class, batch vs reference.

        Informational (not in the Holm family): classes x groups tests would dilute it. Uses
        the labels the accepted samples carry on (relabels applied).
        """
        cfg, ref = self.config, self.reference
        names = ref.label_names
        rows = [d.index for d in outcome.decisions if d.accepted and d.new_label is not None]
        if names is None or not rows or not bool((ref.support_labels >= 0).all()):
            return {}
        pool = ref.accepted_support(cfg.alpha, self.checks, self.rejecting)
        labels = [outcome.decisions[i].new_label for i in rows]
        out: dict[str, dict[str, ConceptDrift]] = {}
        for bank in self.concept_banks:
            ours = bank.counts(image[rows], labels, len(names))
            theirs = bank.counts(ref.support_image[pool], ref.support_labels[pool], len(names))
            for group, table in ours.items():
                out[group] = {
                    names[c]: concept_drift(
                        table[c],
                        theirs[group][c],
                        bank.concepts(group),
                        group=group,
                        resamples=199,
                        seed=cfg.seed,
                    )
                    for c in range(len(names))
                    if int(table[c].sum()) and int(theirs[group][c].sum())
                }
        return out

    def _concept_tests(self, image: torch.Tensor, accepted: torch.Tensor) -> list[ConceptDrift]:
        """Concept mix of the accepted rows against the accepted reference support."""
        cfg, ref = self.config, self.reference
        pool = ref.accepted_support(cfg.alpha, self.checks, self.rejecting)
        out = []
        for bank in self.concept_banks:
            batch_counts = bank.counts(image[accepted])
            ref_counts = bank.counts(ref.support_image[pool])
            for group, counts in batch_counts.items():
                out.append(
                    concept_drift(
                        counts,
                        ref_counts[group],
                        bank.concepts(group),
                        group=group,
                        resamples=cfg.n_resamples,
                        seed=cfg.seed,
                    )
                )
        return out

    def _flag_rate(self, outcome: SampleOutcome, level: float) -> tuple[float, float, float]:
        ref, cfg = self.reference, self.config
        support_flagged = (
            ref.n_support - ref.accepted_support(cfg.alpha, self.checks, self.rejecting).numel()
        )
        flagged = int(outcome.flagged.sum())
        return flag_rate_test(
            flagged, len(outcome.decisions), support_flagged, ref.n_support, level
        )

    def _informational(
        self, labels: list[int] | None, valid: torch.Tensor
    ) -> dict[str, MetricResult]:
        ref = self.reference
        if labels is None or ref.label_names is None or ref.stats.num_labels is None:
            return {}
        counts = torch.bincount(
            torch.tensor(labels)[valid], minlength=len(ref.label_names)
        ).double()
        drift = label_drift(counts, ref.stats.label_counts)
        return {
            "label_drift": MetricResult(
                name="label_drift",
                value=drift.js_divergence,
                p_value=drift.p_value,
                note="Jensen–Shannon divergence (bits) of the class mix; χ² p-value; "
                "informational (a class mix may be chosen on purpose)",
            )
        }

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


def _median(values: torch.Tensor | None) -> float | None:
    return None if values is None else float(values.median())
