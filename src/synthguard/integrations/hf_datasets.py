"""Hugging Face ``datasets``: decision columns on a ``Dataset`` (needs ``synthguard[hf]``).

A dataset of synthetic pairs (an ``Image`` feature and a text column) goes in; the same
dataset with decision columns comes out, so ``ds.filter(lambda row: row["sg_accepted"])``
keeps what may be trained on::

    from synthguard.integrations.hf_datasets import guard_dataset

    decided = guard_dataset(ds, guard, caption_column="text", chunk_size=512)
    clean = decided.filter(lambda row: row["sg_accepted"])

Rows are checked ``chunk_size`` at a time (one :meth:`~synthguard.Guard.check` per chunk: the
batch tests see a chunk), through ``Dataset.map(batched=True)``, so an ``IterableDataset``
(streaming) is decided lazily as it is read. Columns added:

- ``sg_accepted``: the sample passed *and* its chunk was accepted (what may be trained on);
- ``sg_sample_accepted``: the per-sample decision alone;
- ``sg_reasons`` (comma-separated reason codes), ``sg_details`` (in words);
- ``sg_caption`` and ``sg_new_label``: the caption and label to train with (relabels
  applied; label ``-1`` without labels), ``sg_relabeled``: whether either was changed
  (the columns of :func:`synthguard.integrations.ray.audit`, named alike);
- ``sg_chunk``: the chunk's index; its report goes to ``on_report``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from synthguard._errors import InvalidInputError
from synthguard._validation import check_int, describe
from synthguard.batch import PairBatch
from synthguard.guard import Guard
from synthguard.report import GuardReport, decision_columns

__all__ = ["guard_dataset"]


def guard_dataset(
    ds: Any,
    guard: Guard,
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    label_column: str | None = None,
    id_column: str | None = None,
    chunk_size: int = 256,
    on_report: Callable[[GuardReport], None] | None = None,
) -> Any:
    """``ds`` with decision columns (see the module docs).

    Args:
        ds: a ``datasets.Dataset`` or ``IterableDataset``.
        guard: the :class:`~synthguard.Guard` deciding.
        image_column: images (an ``Image`` feature, bytes, paths or arrays).
        caption_column: captions.
        label_column: integer class labels, if any.
        id_column: unique sample ids (default: row positions).
        chunk_size: rows checked together.
        on_report: called with each chunk's :class:`~synthguard.GuardReport` (with a
            ``Dataset``, ``map`` runs now; with an ``IterableDataset``, as rows are read).
    """
    if not isinstance(guard, Guard):
        raise InvalidInputError(f"guard must be a synthguard.Guard; got {describe(guard)}")
    check_int("chunk_size", chunk_size, minimum=1)
    names = getattr(ds, "column_names", None)
    wanted = [c for c in (image_column, caption_column, label_column, id_column) if c]
    if names is not None and any(c not in names for c in wanted):
        missing = [c for c in wanted if c not in names]
        raise InvalidInputError(f"columns {missing} are not in the dataset; it has {names}")
    decide = _Chunks(
        guard, image_column, caption_column, label_column, id_column, chunk_size, on_report
    )
    return ds.map(decide, batched=True, batch_size=chunk_size, with_indices=True)


class _Chunks:
    """Decides one chunk (a ``map`` batch) per call."""

    def __init__(
        self, guard: Guard, image: str, caption: str, label: str | None, id_: str | None,
        chunk_size: int, on_report: Callable[[GuardReport], None] | None,
    ) -> None:  # fmt: skip
        self.guard, self.on_report, self.chunk_size = guard, on_report, chunk_size
        self.image, self.caption, self.label, self.id = image, caption, label, id_

    def __call__(self, rows: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        labels = None if self.label is None else [int(v) for v in rows[self.label]]
        ids = list(rows[self.id]) if self.id is not None else list(indices)
        batch = PairBatch(rows[self.image], rows[self.caption], labels=labels, ids=ids)
        report = self.guard.check(batch, sync=False)
        if self.on_report is not None:
            self.on_report(report)
        samples = report.samples
        columns = decision_columns(samples)
        return {
            **rows,
            **columns,
            # A rejected chunk keeps nothing; "excess_rejects" keeps its accepted samples.
            "sg_accepted": [a and report.verdict != "rejected" for a in columns["sg_accepted"]],
            "sg_sample_accepted": columns["sg_accepted"],
            "sg_caption": [
                s.new_caption if s.new_caption is not None else batch.captions[s.index]
                for s in samples
            ],
            "sg_chunk": [indices[0] // self.chunk_size] * len(samples),
        }
