"""Gate a PyTorch data pipeline: only accepted (and relabeled) synthetic samples reach training.

Two shapes, both built on :meth:`synthguard.Guard.check`:

- :class:`GuardedDataset` wraps a map-style dataset and yields the accepted samples, checked
  in chunks (the batch tests see a whole chunk).
- :class:`GuardedCollate` is a ``collate_fn``: each DataLoader batch is checked as it is
  assembled, and a rejected batch comes out as ``None`` (skip it in the loop).

A sample is a tuple ``(image, caption)`` / ``(image, caption, label)`` or a dict with keys
``"image"``, ``"caption"`` and optionally ``"label"`` and ``"id"``; accepted samples come back
in the same form, with the caption or label replaced where the guard relabeled them. Every
report is passed to ``on_report`` so rejections are never silent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info
from torch.utils.data._utils.collate import default_collate

from synthguard._errors import InvalidInputError
from synthguard._validation import check_int, describe
from synthguard.batch import PairBatch
from synthguard.guard import Guard
from synthguard.report import GuardReport

__all__ = ["GuardedCollate", "GuardedDataset", "samples_to_batch"]

ReportHook = Callable[[GuardReport], None]


def samples_to_batch(samples: Sequence[Any], ids: Sequence[Any] | None = None) -> PairBatch:
    """A :class:`~synthguard.PairBatch` from tuples or dicts (see the module docs).

    Ids are the samples' own ``"id"`` entries when every sample has one, else ``ids``.
    """
    images, captions, labels, found_ids = [], [], [], []
    for i, sample in enumerate(samples):
        if isinstance(sample, dict):
            if "image" not in sample or "caption" not in sample:
                raise InvalidInputError(
                    f"samples[{i}] must have keys 'image' and 'caption'; got {sorted(sample)}"
                )
            images.append(sample["image"])
            captions.append(sample["caption"])
            labels.append(sample.get("label"))
            found_ids.append(sample.get("id"))
        elif isinstance(sample, (tuple, list)) and len(sample) in (2, 3):
            images.append(sample[0])
            captions.append(sample[1])
            labels.append(sample[2] if len(sample) == 3 else None)
            found_ids.append(None)
        else:
            raise InvalidInputError(
                f"samples[{i}] must be (image, caption[, label]) or a dict with 'image' and "
                f"'caption'; got {describe(sample)}"
            )
    has_labels = [label is not None for label in labels]
    if any(has_labels) and not all(has_labels):
        raise InvalidInputError("samples must all have a label or all have none")
    if all(x is not None for x in found_ids):  # ids the samples carry win over positions
        ids = found_ids
    return PairBatch(images, captions, labels=labels if all(has_labels) else None, ids=ids)


def _restore(template: Any, batch: PairBatch, j: int) -> Any:
    """Accepted sample ``j`` of ``batch`` in the form of the original sample ``template``."""
    label = None if batch.labels is None else batch.labels[j]
    if isinstance(template, dict):
        out = dict(template)
        out["caption"] = batch.captions[j]
        if label is not None:
            out["label"] = label
        return out
    parts = [template[0], batch.captions[j], *([label] if label is not None else [])]
    return type(template)(parts) if isinstance(template, list) else tuple(parts)


def _gate(guard: Guard, samples: list[Any], ids: list[Any]) -> tuple[GuardReport, list[Any]]:
    batch = samples_to_batch(samples, ids)
    # Never a collective here: loaders run in worker processes and ranks' loaders are not in
    # step. A verdict shared by every rank is guard.check(batch, sync=True) in the train step.
    report = guard.check(batch, sync=False)
    clean = report.apply(batch)
    if clean is None:
        return report, []
    position = {report_id: i for i, report_id in enumerate(batch.ids)}
    return report, [_restore(samples[position[clean.ids[j]]], clean, j) for j in range(len(clean))]


class GuardedDataset(IterableDataset):
    """Iterate over the accepted (relabeled) samples of a map-style dataset.

    Args:
        dataset: a map-style dataset (``__len__`` and ``__getitem__`` returning samples) or an
            iterable one (an ``IterableDataset`` or any iterable of samples: WebDataset, Hugging
            Face streaming), checked chunk by chunk as it streams.
        guard: the :class:`~synthguard.Guard` deciding.
        chunk_size: samples checked together (the batch tests' batch size).
        on_report: called with every :class:`~synthguard.GuardReport` (in the worker process
            when the DataLoader has workers); default: kept in :attr:`reports` (only useful
            with ``num_workers=0``).

    With DataLoader workers, chunks are split among them (chunk ``c`` goes to worker
    ``c mod num_workers``), so every sample is checked exactly once per epoch. Sample ids are
    the dataset indices unless samples carry an ``"id"``.

    Example:
        >>> import synthguard as sg
        >>> from synthguard.datasets import load_digits
        >>> real = load_digits("test")
        >>> ref = sg.Reference.build(real.images[:300], real.captions[:300],
        ...                          encoder="bundled:digits")
        >>> data = list(zip(real.images[300:340], real.captions[300:340]))
        >>> guard = sg.Guard(ref, sg.GuardConfig(batch_tests=()))
        >>> gated = GuardedDataset(data, guard, chunk_size=20)
        >>> kept = list(gated)
        >>> len(kept) == sum(r.n_accepted for r in gated.reports)
        True
    """

    def __init__(
        self,
        dataset: Any,
        guard: Guard,
        *,
        chunk_size: int = 256,
        on_report: ReportHook | None = None,
    ) -> None:
        if not isinstance(guard, Guard):
            raise InvalidInputError(f"guard must be a synthguard.Guard; got {describe(guard)}")
        self.dataset = dataset
        self.guard = guard
        self.chunk_size = check_int("chunk_size", chunk_size, minimum=1)
        self.on_report = on_report
        self.reports: list[GuardReport] = []

    def __iter__(self) -> Iterator[Any]:
        if isinstance(self.dataset, IterableDataset) or not hasattr(self.dataset, "__len__"):
            yield from self._stream()
            return
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        n = len(self.dataset)
        for c, start in enumerate(range(0, n, self.chunk_size)):
            if c % workers != worker:
                continue
            indices = list(range(start, min(start + self.chunk_size, n)))
            report, kept = _gate(self.guard, [self.dataset[i] for i in indices], indices)
            self._record(report)
            yield from kept

    def _stream(self) -> Iterator[Any]:
        """Chunks of an iterable dataset (WebDataset, Hugging Face streaming) as they arrive.

        An iterable dataset splits itself among DataLoader workers (as PyTorch asks of it);
        ids are positions in this worker's stream unless samples carry an ``"id"``.
        """
        chunk: list[Any] = []
        start = 0
        for sample in self.dataset:
            chunk.append(sample)
            if len(chunk) == self.chunk_size:
                yield from self._checked(chunk, start)
                start += len(chunk)
                chunk = []
        if chunk:
            yield from self._checked(chunk, start)

    def _checked(self, chunk: list[Any], start: int) -> Iterator[Any]:
        report, kept = _gate(self.guard, chunk, list(range(start, start + len(chunk))))
        self._record(report)
        yield from kept

    def _record(self, report: GuardReport) -> None:
        if self.on_report is not None:
            self.on_report(report)
        else:
            self.reports.append(report)


class GuardedCollate:
    """A DataLoader ``collate_fn`` that checks each batch and collates the accepted samples.

    Returns ``None`` for a batch with nothing to train on (verdict ``"rejected"``, or every
    sample rejected): skip it with ``if batch is None: continue``. A batch whose verdict is
    ``"excess_rejects"`` yields its accepted samples; watch ``last_report.verdict`` (or
    ``on_report``) to stop a generator that makes far more rejects than real data.

    Args:
        guard: the :class:`~synthguard.Guard` deciding.
        collate_fn: collates the accepted samples (default: PyTorch's ``default_collate``).
        on_report: called with every report (in the worker process when there are workers);
            the last one is also kept as :attr:`last_report`.
    """

    def __init__(
        self,
        guard: Guard,
        collate_fn: Callable[[list[Any]], Any] = default_collate,
        *,
        on_report: ReportHook | None = None,
    ) -> None:
        if not isinstance(guard, Guard):
            raise InvalidInputError(f"guard must be a synthguard.Guard; got {describe(guard)}")
        self.guard = guard
        self.collate_fn = collate_fn
        self.on_report = on_report
        self.last_report: GuardReport | None = None

    def __call__(self, samples: list[Any]) -> Any:
        report, kept = _gate(self.guard, list(samples), list(range(len(samples))))
        self.last_report = report
        if self.on_report is not None:
            self.on_report(report)
        return self.collate_fn(kept) if kept else None
