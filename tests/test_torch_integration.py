"""Training-loop gates: GuardedDataset and GuardedCollate yield only accepted, relabeled data."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import synthguard as sg
from synthguard.datasets import DIGIT_NAMES, load_digits
from synthguard.integrations.torch import GuardedCollate, GuardedDataset, samples_to_batch

TEMPLATE = "a handwritten digit {name}"


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_digits("test")


@pytest.fixture(scope="module")
def guard(digits: Any, digits_encoder: Any) -> sg.Guard:
    ref = sg.Reference.build(
        digits.images[:300], digits.captions[:300], encoder=digits_encoder,
        labels=digits.labels[:300], label_names=DIGIT_NAMES, label_templates=TEMPLATE,
    )  # fmt: skip
    return sg.Guard(ref, sg.GuardConfig(n_resamples=999))


def _samples(digits: Any, start: int, stop: int, wrong_every: int = 0) -> list[tuple[Any, ...]]:
    out = []
    for i in range(start, stop):
        label = digits.labels[i]
        if wrong_every and i % wrong_every == 0:
            label = (label + 1) % 10
        out.append((digits.images[i], digits.captions[i], label))
    return out


def test_guarded_dataset_yields_exactly_the_accepted_relabeled_samples(
    guard: sg.Guard, digits: Any
) -> None:
    data = _samples(digits, 300, 420, wrong_every=7)
    gated = GuardedDataset(data, guard, chunk_size=60)
    kept = list(gated)
    assert len(gated.reports) == 2
    assert len(kept) == sum(r.n_accepted for r in gated.reports if r.accepted)
    accepted_ids = [s.id for r in gated.reports if r.accepted for s in r.samples if s.accepted]
    new_labels = [s.new_label for r in gated.reports if r.accepted for s in r.samples if s.accepted]
    assert [sample[2] for sample in kept] == new_labels
    assert [sample[1] for sample in kept] == [data[i][1] for i in accepted_ids]
    truth = [digits.labels[300 + i] for i in accepted_ids]
    assert sum(k[2] == t for k, t in zip(kept, truth, strict=True)) >= len(kept) - 3


def test_guarded_collate_skips_rejected_batches(guard: sg.Guard, digits: Any) -> None:
    seen: list[sg.GuardReport] = []
    good = _samples(digits, 300, 360)
    swapped = [(img, TEMPLATE.format(name=DIGIT_NAMES[(y + 4) % 10]), y) for img, _, y in good]

    def to_tensors(samples: list[Any]) -> dict[str, Any]:
        return {
            "captions": [s[1] for s in samples],
            "labels": torch.tensor([s[2] for s in samples]),
        }

    loader = DataLoader(
        good + swapped,
        batch_size=60,
        collate_fn=GuardedCollate(guard, to_tensors, on_report=seen.append),
    )
    batches = list(loader)
    assert len(seen) == 2
    assert batches[0] is not None and len(batches[0]["captions"]) == seen[0].n_accepted
    assert batches[1] is None and not seen[1].accepted


def test_samples_to_batch_accepts_dicts_and_checks_shape() -> None:
    batch = samples_to_batch(
        [{"image": 1, "caption": "a", "id": "x"}, {"image": 2, "caption": "b", "id": "y"}]
    )
    assert batch.ids == ["x", "y"] and batch.labels is None
    with pytest.raises(sg.InvalidInputError, match="must have keys"):
        samples_to_batch([{"image": 1}])
    with pytest.raises(sg.InvalidInputError, match=r"samples\[0\] must be"):
        samples_to_batch([42])
    with pytest.raises(sg.InvalidInputError, match="all have a label"):
        samples_to_batch([(1, "a", 3), (2, "b")])


@pytest.mark.slow
@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_both_gates_work_in_dataloader_workers(guard: sg.Guard, digits: Any, start: str) -> None:
    """Workers forked after the encoder ran in the parent used to wait forever on its thread
    pool; spawned workers need the guard pickled. Both give the single-process result."""
    guard.check(sg.PairBatch(digits.images[:8], digits.captions[:8]))  # the pool runs here
    data = _samples(digits, 300, 420, wrong_every=7)
    alone = list(GuardedDataset(data, guard, chunk_size=30))
    loader = DataLoader(
        GuardedDataset(data, guard, chunk_size=30), batch_size=None, num_workers=2,
        multiprocessing_context=start, timeout=300,
    )  # fmt: skip
    got = list(loader)
    assert sorted(s[1] for s in got) == sorted(s[1] for s in alone) and len(got) == len(alone)
    collated = DataLoader(
        data, batch_size=40, num_workers=2, multiprocessing_context=start, timeout=300,
        collate_fn=GuardedCollate(guard, list),
    )  # fmt: skip
    batches = list(collated)
    assert len(batches) == 3
    expected = [GuardedCollate(guard, list)(data[i : i + 40]) for i in range(0, 120, 40)]
    assert batches == expected


def test_guarded_dataset_streams_an_iterable_dataset(guard: sg.Guard, digits: Any) -> None:
    """An IterableDataset has no len(): it is checked chunk by chunk as it streams."""
    from torch.utils.data import IterableDataset

    data = _samples(digits, 300, 390, wrong_every=7)

    class Stream(IterableDataset):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            return iter(data)

    streamed = GuardedDataset(Stream(), guard, chunk_size=40)
    mapped = GuardedDataset(data, guard, chunk_size=40)
    assert list(streamed) == list(mapped)
    assert [r.n_samples for r in streamed.reports] == [40, 40, 10]
    assert list(GuardedDataset(iter(data), guard, chunk_size=40)) == list(mapped)
