"""The guard: embed → (re-caption) → per-sample checks → batch tests → report."""

from __future__ import annotations

import math
from typing import Any

import torch

from synthguard._calibration import BATCH_TESTS, batch_values, bound_at, empirical_p, holm
from synthguard._errors import InvalidInputError
from synthguard._reasons import ReasonCode
from synthguard._sample_checks import SampleOutcome, check_samples
from synthguard._validation import check_label_range, describe
from synthguard.data import PairBatch
from synthguard.encoders import Encoder, embed_pairs, load_encoder
from synthguard.functional import label_drift
from synthguard.policy import GuardConfig
from synthguard.reference import Reference
from synthguard.relabel import Recaptioner, Relabel
from synthguard.report import GuardReport, MetricResult, count_reasons

__all__ = ["Guard"]


class Guard:
    """Accept or reject synthetic image–caption batches against a real :class:`Reference`.

    Args:
        reference: the real-data reference (its calibration sets every threshold).
        config: a :class:`GuardConfig` (defaults when ``None``).
        encoder: the frozen encoder; defaults to the reference's own (in memory after
            :meth:`Reference.build`, or reloaded from its ``encoder_spec``). Must have the
            reference's fingerprint.
        recaptioner: optional :class:`~synthguard.relabel.Recaptioner`; samples failing only
            the alignment check get generated candidates, and a better-aligned caption that
            passes the threshold replaces theirs (provenance kept).

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
        emb = embed_pairs(self._encoder, batch)
        image, text = _unit(emb.image), _unit(emb.text)
        caption_relabels = self._recaption(batch, image, text, emb.errors)
        return self._decide(
            image, text, batch.labels, batch.ids, dict(emb.errors), dict(emb.error_details),
            caption_relabels,
        )  # fmt: skip

    def check_embeddings(
        self, image_embeddings: Any, text_embeddings: Any, *, labels: Any = None, ids: Any = None
    ) -> GuardReport:
        """Decide on pairs embedded elsewhere (by the reference's encoder).

        A NaN, infinite or zero row is that sample's reject (``encoding_failed``), not an
        error; shapes, labels and ids are validated.
        """
        dim = self.reference.stats.dim
        image = _as_rows("image_embeddings", image_embeddings, dim)
        text = _as_rows("text_embeddings", text_embeddings, dim)
        if image.shape[0] != text.shape[0]:
            raise InvalidInputError(
                f"text_embeddings must have one row per image ({image.shape[0]}); "
                f"got {text.shape[0]}"
            )
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
                text[i] = _unit(self._encoder.encode_texts([str(record.new_value)]))[0]
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
    ) -> GuardReport:
        cfg, ref = self.config, self.reference
        outcome = check_samples(
            ref, image, text, labels=labels if ref.has_labels else None, ids=ids, errors=errors,
            error_details=details, checks=self.checks, alpha=cfg.alpha,
            label_policy=cfg.label_policy, caption_relabels=caption_relabels,
        )  # fmt: skip
        n = image.shape[0]
        valid = torch.nonzero(~torch.isnan(image).any(1) & ~torch.isnan(text).any(1)).flatten()
        valid = valid[[i not in errors for i in valid.tolist()]] if errors else valid
        reasons: list[str] = []
        metrics: dict[str, MetricResult] = {}
        risk: float | None = None
        rows = 0
        if valid.numel() == 0:
            counts = ", ".join(
                f"{k}={v}" for k, v in count_reasons(tuple(outcome.decisions)).items()
            )
            reasons.append(f"no sample could be embedded ({counts}); nothing was checked")
            risk = 1.0
        else:
            rows = min(valid.numel(), cfg.max_batch_rows, ref.n_support // 2)
            if rows < cfg.min_batch_size:
                reasons.append(
                    f"batch tests skipped: {rows} embeddable rows < min_batch_size "
                    f"{cfg.min_batch_size} (or half the reference support); per-sample checks only"
                )
            else:
                metrics, risk, failed = self._batch_tests(image, text, valid, rows, outcome)
                reasons.extend(f"failed {m.describe()}" for m in failed)
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
            rejects_by_reason=count_reasons(tuple(outcome.decisions)),
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
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        valid: torch.Tensor,
        rows: int,
        outcome: SampleOutcome,
    ) -> tuple[dict[str, MetricResult], float, list[MetricResult]]:
        cfg, ref = self.config, self.reference
        if rows < valid.numel():  # seeded subsample, the same for the same batch and seed
            pick = torch.randperm(valid.numel(), generator=torch.Generator().manual_seed(cfg.seed))
            valid = valid[pick[:rows]].sort().values
        flag_rate = float(outcome.flagged.double().mean())
        context = ref.batch_context(cfg.alpha, self.checks)
        values = batch_values(context, image[valid], text[valid], flag_rate)
        null = ref.batch_null(
            rows, alpha=cfg.alpha, resamples=cfg.n_resamples, seed=cfg.seed, checks=self.checks
        )
        names = list(cfg.batch_tests)
        columns = {name: null[:, list(BATCH_TESTS).index(name)] for name in BATCH_TESTS}
        p = [empirical_p(columns[nm], values[nm], BATCH_TESTS[nm]) for nm in names]
        levels, adjusted, rejected = holm(p, cfg.alpha_batch)
        metrics: dict[str, MetricResult] = {}
        for name in BATCH_TESTS:
            col = columns[name]
            if name not in names:
                metrics[name] = MetricResult(
                    name=name, value=values[name], null_median=float(col.median()),
                    note="not in batch_tests",
                )  # fmt: skip
                continue
            j = names.index(name)
            direction = BATCH_TESTS[name]
            metrics[name] = MetricResult(
                name=name, value=values[name], direction=direction,
                bound=bound_at(col, levels[j], direction), null_median=float(col.median()),
                p_value=p[j], adjusted_p_value=adjusted[j], level=levels[j], passed=not rejected[j],
            )  # fmt: skip
        risk = 1.0 - min(adjusted) if adjusted else 0.0
        return metrics, risk, [m for m in metrics.values() if m.passed is False]

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


def _unit(x: torch.Tensor) -> torch.Tensor:
    """float64 unit rows; NaN, infinite or zero rows become NaN rows."""
    x = x.detach().to("cpu", torch.float64)
    norms = torch.linalg.vector_norm(x, dim=1)
    ok = torch.isfinite(x).all(dim=1) & (norms > 0)
    out = torch.full_like(x, math.nan)
    out[ok] = x[ok] / norms[ok, None]
    return out


def _as_rows(name: str, value: Any, dim: int) -> torch.Tensor:
    if hasattr(value, "__array__") and not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    if not isinstance(value, torch.Tensor) or value.is_complex() or not value.is_floating_point():
        raise InvalidInputError(
            f"{name} must be a real floating [n, {dim}] tensor; got {describe(value)}"
        )
    if value.ndim != 2 or value.shape[1] != dim or value.shape[0] == 0:
        raise InvalidInputError(
            f"{name} must have shape [n >= 1, {dim}] (the reference's dim); "
            f"got {tuple(value.shape)}"
        )
    return _unit(value)
