"""A Lightning :class:`~lightning.pytorch.Callback` that checks every synthetic training batch
(needs ``synthguard[lightning]``).

:class:`SynthGuardCallback` calls :meth:`Guard.check <synthguard.Guard.check>` on each training
batch in ``on_train_batch_start``, logs the report's numbers with ``pl_module.log_dict`` (the
flat names of :meth:`GuardReport.to_metrics <synthguard.GuardReport.to_metrics>`: verdict,
counts, every batch metric with its p-value) and, by default, keeps a rejected batch out of the
weights.

What "gate" means here. Lightning gives a callback no way to drop a batch: returning ``-1`` from
``LightningModule.on_train_batch_start`` ends the whole epoch, and a ``training_step`` that
returns ``None`` is refused under DDP. So the batch still runs forward and backward, and the
callback voids the optimizer step it belongs to: in ``on_before_optimizer_step`` every
gradient is set to ``None``, which PyTorch optimizers skip (no update, no momentum, no weight
decay). With gradient accumulation the whole accumulated step is voided (fail closed). Under
DDP the check syncs over the process group Lightning created, so every rank reaches the same
verdict and voids the same steps: the replicas stay equal. Per sample, the callback cannot cut a
collated batch: the decisions come as a boolean mask (``batch["sg_accepted"]`` for dict
batches, and :attr:`SynthGuardCallback.accepted`) for a ``training_step`` that weights its loss;
to drop samples before collation use :class:`~synthguard.integrations.torch.GuardedCollate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Literal

import torch

from synthguard._errors import InvalidInputError
from synthguard._reasons import ReasonCode
from synthguard._validation import describe
from synthguard.batch import PairBatch
from synthguard.guard import Guard
from synthguard.guard._summary import shard_for
from synthguard.report import GuardReport

try:
    from lightning.pytorch import Callback
except ImportError as exc:  # an optional dependency: say how to get it
    raise ImportError(
        "synthguard.integrations.lightning needs Lightning: pip install 'synthguard[lightning]'"
    ) from exc

__all__ = ["SynthGuardCallback", "batch_pairs"]

OnReject = Literal["skip", "log", "stop"]
_ON_REJECT = ("skip", "log", "stop")
#: Counts that differ between ranks; summed over the ranks before they are logged.
_RANK_COUNTS = ("n_relabeled", "n_truncated", *(f"rejects/{code.value}" for code in ReasonCode))


def batch_pairs(batch: Any) -> PairBatch:
    """The :class:`~synthguard.PairBatch` of a training batch: a ``PairBatch`` as it is, or a
    dict with ``"image"`` and ``"caption"`` (lists or tensors; uint8 images) and optionally
    ``"label"`` and ``"id"`` (dataset indices: needed under DDP, where ids must identify samples
    across ranks).

    Example:
        >>> import torch
        >>> batch = {"image": torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
        ...          "caption": ["a", "b"], "id": torch.tensor([4, 9])}
        >>> batch_pairs(batch).ids
        [4, 9]
    """
    if isinstance(batch, PairBatch):
        return batch
    if not isinstance(batch, Mapping) or "image" not in batch or "caption" not in batch:
        keys = sorted(map(str, batch)) if isinstance(batch, Mapping) else None
        raise InvalidInputError(
            "batch must be a PairBatch or a dict with 'image' and 'caption'; got "
            f"{describe(batch)}{f' with keys {keys}' if keys is not None else ''}: pass "
            "pairs= to SynthGuardCallback to turn your batches into a PairBatch"
        )

    def listed(value: Any) -> list[Any]:
        return list(value.detach().cpu()) if isinstance(value, torch.Tensor) else list(value)

    def plain(value: Any) -> Any:
        if value is None:
            return None
        return value.tolist() if isinstance(value, torch.Tensor) else list(value)

    return PairBatch(
        listed(batch["image"]), [str(c) for c in batch["caption"]],
        labels=plain(batch.get("label")), ids=plain(batch.get("id")),
    )  # fmt: skip


class SynthGuardCallback(Callback):
    """Check every training batch with a :class:`~synthguard.Guard`; log, skip or stop.

    Args:
        guard: the guard deciding (its reference, configuration and encoder).
        pairs: turns a training batch into a :class:`~synthguard.PairBatch` of raw images
            (paths, bytes, PIL images, uint8 arrays or tensors: not normalised model inputs)
            and captions; default :func:`batch_pairs`.
        on_reject: what a batch whose verdict is ``"rejected"`` does: ``"skip"`` voids the
            optimizer step it belongs to (the weights do not move), ``"log"`` only logs it,
            ``"stop"`` voids its step and stops training (``trainer.should_stop``). A batch
            whose verdict is ``"excess_rejects"`` is trained on, as the loader gates keep its
            accepted samples: weight the loss with the mask to drop its rejected ones.
        prefix: of the logged names.
        mask_key: the key under which a dict batch gets the per-sample decisions (a bool
            tensor on the module's device; all ``False`` for a rejected batch unless
            ``on_reject="log"``); ``None`` leaves the batch alone.
        on_report: called with every report (on every rank).

    Logged every step (``pl_module.log_dict``, ``on_step=True``): ``to_metrics(prefix)`` of
    the report, with a count for every reason code (0 when none), plus ``batches_rejected``
    and ``steps_skipped`` so far; a number an earlier batch had and this one lacks (a batch
    too small for the tests) is NaN rather than the earlier value again. Under DDP every
    logged value is the same on every rank: the batch tests and the verdict are computed on all
    ranks' rows together, and the counts are those of all ranks (summed with one collective).
    With gradient accumulation Lightning keeps one row per optimizer step (the last batch's).

    Example:
        ``trainer = L.Trainer(callbacks=[SynthGuardCallback(guard)])``; in ``training_step``,
        ``loss = (losses * batch["sg_accepted"]).sum() / batch["sg_accepted"].sum().clamp(min=1)``
        keeps a batch's rejected samples out of the gradient (docs/integrations.md).
    """

    def __init__(
        self,
        guard: Guard,
        *,
        pairs: Callable[[Any], PairBatch] | None = None,
        on_reject: OnReject = "skip",
        prefix: str = "synthguard/",
        mask_key: str | None = "sg_accepted",
        on_report: Callable[[GuardReport], None] | None = None,
    ) -> None:
        if not isinstance(guard, Guard):
            raise InvalidInputError(f"guard must be a synthguard.Guard; got {describe(guard)}")
        if on_reject not in _ON_REJECT:
            raise InvalidInputError(f"on_reject must be one of {_ON_REJECT}; got {on_reject!r}")
        for name, value in (("pairs", pairs), ("on_report", on_report)):
            if value is not None and not callable(value):
                raise InvalidInputError(f"{name} must be callable or None; got {describe(value)}")
        if not isinstance(prefix, str):
            raise InvalidInputError(f"prefix must be a string; got {describe(prefix)}")
        if mask_key is not None and not isinstance(mask_key, str):
            raise InvalidInputError(f"mask_key must be a string or None; got {describe(mask_key)}")
        self.guard = guard
        self.pairs = pairs if pairs is not None else batch_pairs
        self.on_reject: OnReject = on_reject
        self.prefix = prefix
        self.mask_key = mask_key
        self.on_report = on_report
        self.last_report: GuardReport | None = None
        #: Per-sample decisions of the current batch (``None`` before the first batch).
        self.accepted: torch.Tensor | None = None
        self.batches_checked = 0
        self.batches_rejected = 0
        self.steps_skipped = 0
        self._void = False  # a rejected batch feeds the coming optimizer step(s)
        self._stepped = False  # an optimizer step ran since the batch that set _void
        self._logged: set[str] = set()  # names logged so far

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._stepped:  # the voided window ended with the step(s) of the last batch
            self._void = self._stepped = False
        try:
            pairs = self.pairs(batch)
            if not isinstance(pairs, PairBatch):
                raise InvalidInputError(
                    f"pairs(batch) must return a PairBatch; got {describe(pairs)}"
                )
        except BaseException:
            shard_for(None).fail()  # under DDP the other ranks raise instead of waiting
            raise
        # sync=None: inside Lightning's DDP process group every rank checks together and gets
        # the verdict of all ranks' rows, so all of them void the same steps.
        report = self.guard.check(pairs)
        self.last_report = report
        self.batches_checked += 1
        rejected = report.verdict == "rejected"
        kept = not rejected or self.on_reject == "log"  # "log" trains on it: its mask too
        decisions = [s.accepted and kept for s in report.samples]
        self.accepted = torch.tensor(decisions, dtype=torch.bool, device=pl_module.device)
        if self.mask_key is not None and isinstance(batch, MutableMapping):
            batch[self.mask_key] = self.accepted
        if rejected:
            self.batches_rejected += 1
            if self.on_reject != "log":
                self._void = True
            if self.on_reject == "stop":
                trainer.should_stop = True
        pl_module.log_dict(
            self._metrics(trainer, pl_module, report), on_step=True, on_epoch=False,
            batch_size=len(pairs),
        )  # fmt: skip
        if self.on_report is not None:
            self.on_report(report)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if not self._void:
            return
        # Optimizers skip parameters without a gradient: nothing of this step reaches them.
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = None
        if not self._stepped:
            self.steps_skipped += 1
        self._stepped = True

    def _metrics(self, trainer: Any, pl_module: Any, report: GuardReport) -> dict[str, float]:
        metrics = report.to_metrics(self.prefix)
        counts = [metrics.pop(self.prefix + name, 0.0) for name in _RANK_COUNTS]
        if report.world_size > 1:  # local counts become those of every rank (one collective)
            dtype = torch.float32 if pl_module.device.type == "mps" else torch.float64
            local = torch.tensor(counts, dtype=dtype, device=pl_module.device)
            counts = trainer.strategy.reduce(local, reduce_op="sum").tolist()
            metrics[self.prefix + "n_samples"] = float(report.n_samples_all_ranks or 0)
            metrics[self.prefix + "n_accepted"] = float(report.n_accepted_all_ranks or 0)
        # Every reason code every step (0 when none), and NaN for a number an earlier batch had
        # and this one lacks: Lightning would show the last value again otherwise.
        metrics.update(
            {self.prefix + n: float(v) for n, v in zip(_RANK_COUNTS, counts, strict=True)}
        )
        metrics[self.prefix + "batches_rejected"] = float(self.batches_rejected)
        metrics[self.prefix + "steps_skipped"] = float(self.steps_skipped)
        metrics.update({key: math.nan for key in self._logged - metrics.keys()})
        self._logged.update(metrics)
        return metrics
