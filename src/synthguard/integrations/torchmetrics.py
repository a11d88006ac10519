"""A torchmetrics :class:`~torchmetrics.Metric` of the collapse metrics (needs ``torchmetrics``).

Lightning users log synthguard's collapse metrics like any other metric::

    class Module(L.LightningModule):
        def __init__(self, reference):
            super().__init__()
            self.collapse = CollapseMetrics(reference)

        def training_step(self, batch, i):
            image, text = self.encoder(batch)  # embeddings by the reference's encoder
            self.collapse.update(image, text, ids=batch["index"])
            ...

        def on_train_epoch_end(self):
            self.log_dict({f"collapse/{k}": v for k, v in self.collapse.compute().items()})
            self.collapse.reset()

The state is an :class:`~synthguard.EmbeddingStats`, declared with its merge rule: the sums are
one float64 vector reduced by ``"sum"``; the bottom-k sample is one packed tensor reduced by a
bottom-k merge. Under DDP, ``compute()`` therefore sees exactly the statistics of all ranks'
rows. Moment metrics (variance, Vendi, Fréchet, alignment) are exact over every row; coverage
and CMMD use the bottom-k sample (``sample_size`` rows, keyed by id).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torchmetrics import Metric

from synthguard._errors import InvalidInputError
from synthguard._validation import check_int, describe, unit_rows_or_nan
from synthguard.functional import collapse_metrics
from synthguard.reference import Reference
from synthguard.stats import EmbeddingStats

__all__ = ["CollapseMetrics"]

_METRICS = (
    "variance_ratio", "vendi_ratio", "frechet_distance", "alignment_mean", "coverage", "cmmd",
)  # fmt: skip


class CollapseMetrics(Metric):
    """Collapse metrics of embedded pairs against a :class:`~synthguard.Reference`.

    ``compute()`` returns a dict of scalar tensors: ``variance_ratio``, ``vendi_ratio``,
    ``frechet_distance``, ``alignment_mean`` (all rows), ``coverage``, ``cmmd`` (the
    bottom-k sample), ``pairs`` (rows counted) and ``skipped`` (NaN, infinite or zero rows,
    left out and counted): :func:`synthguard.functional.collapse_metrics` against
    :meth:`Reference.collapse_reference() <synthguard.Reference.collapse_reference>`, as
    :func:`synthguard.monitor.generation_metrics`.

    Args:
        reference: the real-data reference (its support is the comparison set).
        sample_size: rows kept for coverage and CMMD (bottom-k by ``hash(id, seed)``).
        seed: sampling seed.
        **kwargs: passed to :class:`torchmetrics.Metric` (``process_group``, ...).

    Example:
        >>> import torch, synthguard as sg
        >>> from synthguard.integrations.torchmetrics import CollapseMetrics
        >>> g = torch.Generator().manual_seed(0)
        >>> real = torch.nn.functional.normalize(torch.randn(200, 8, generator=g), dim=1)
        >>> ref = sg.Reference.from_embeddings(real, real)
        >>> metric = CollapseMetrics(ref)
        >>> metric.update(real[:100], real[:100])
        >>> round(float(metric.compute()["alignment_mean"]), 6)
        1.0
    """

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    sums: torch.Tensor
    sample: torch.Tensor
    skipped: torch.Tensor

    def __init__(
        self, reference: Reference, *, sample_size: int = 1024, seed: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(reference, Reference):
            raise InvalidInputError(f"reference must be a Reference; got {describe(reference)}")
        self.reference = reference
        self.sample_size = check_int("sample_size", sample_size, minimum=reference.k + 1)
        self.seed = check_int("seed", seed, minimum=0)
        template = self._empty()
        self.add_state("sums", default=template.flat_sums(), dist_reduce_fx="sum")
        self.add_state("sample", default=template.pack_samples(), dist_reduce_fx=self._merge)
        self.add_state("skipped", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, image_embeddings: Any, text_embeddings: Any, ids: Any = None) -> None:
        """Add row-aligned ``[n, d]`` image and caption embeddings (``ids`` key the sample)."""
        dim = self.reference.stats.dim
        image = unit_rows_or_nan("image_embeddings", image_embeddings, dim)
        text = unit_rows_or_nan("text_embeddings", text_embeddings, dim, n=image.shape[0])
        keep = ~(torch.isnan(image).any(1) | torch.isnan(text).any(1))
        if ids is None:
            kept_ids = None
        else:
            all_ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
            if len(all_ids) != image.shape[0]:
                raise InvalidInputError(
                    f"ids must have one entry per row ({image.shape[0]}); got {len(all_ids)}"
                )
            kept_ids = [v for v, k in zip(all_ids, keep.tolist(), strict=True) if k]
        batch = self._empty().update(image[keep], text[keep], ids=kept_ids)
        self.sums += batch.flat_sums().to(self.sums.device)
        self.sample = self._merge(torch.stack([self.sample, batch.pack_samples().to(self.sample)]))
        self.skipped += int((~keep).sum())

    def compute(self) -> dict[str, torch.Tensor]:
        """The metrics of every row seen (all ranks under DDP).

        With ``k`` or fewer embeddable pairs (e.g. ``forward`` on a last, tiny batch) every
        metric is NaN, with a warning, rather than an error that would lose the state.
        """
        stats = self._empty()
        stats.load_flat_sums(self.sums.detach().cpu())
        stats.load_packed_samples([self.sample.detach().cpu()])
        ref = self.reference
        if stats.n_pairs <= ref.k:
            warnings.warn(
                f"CollapseMetrics needs more than k={ref.k} embeddable pairs; got "
                f"{stats.n_pairs}: the metrics are NaN",
                UserWarning,
                stacklevel=2,
            )
            nan = torch.tensor(math.nan, dtype=torch.float64)
            out = {name: nan.clone() for name in _METRICS}
            out["pairs"] = torch.tensor(float(stats.n_pairs), dtype=torch.float64)
            out["skipped"] = torch.tensor(float(self.skipped), dtype=torch.float64)
            return out
        metrics = collapse_metrics(stats, None, ref.collapse_reference())
        values = {name: metrics[name] for name in _METRICS}
        values.update(pairs=float(stats.n_pairs), skipped=float(self.skipped))
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}

    def _apply(self, fn: Any, exclude_state: Any = ()) -> Any:
        # ``module.to(torch.bfloat16)`` (Lightning's "bf16-true") would cast every floating
        # state: the float64 sums must keep their dtype. Only their device follows.
        mine = ("sums", "sample", "skipped")
        this: Any = super()._apply(fn, exclude_state=(*exclude_state, *mine))
        for name in mine:
            setattr(this, name, getattr(this, name).to(this.device))
            this._defaults[name] = this._defaults[name].to(this.device)
        return this

    def _empty(self) -> EmbeddingStats:
        return EmbeddingStats(
            self.reference.stats.dim, sample_size=self.sample_size, seed=self.seed
        )

    def _merge(self, stacked: torch.Tensor) -> torch.Tensor:
        """Bottom-k merge of packed samples stacked along dim 0 (the state's reduce rule)."""
        merged = self._empty()
        merged.load_packed_samples(list(stacked.cpu()))
        return merged.pack_samples().to(stacked.device)
