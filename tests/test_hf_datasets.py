"""Hugging Face datasets in, decision columns out; Parquet written by datasets read by the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import synthguard as sg
from synthguard.cli import main
from synthguard.datasets import load_digits
from synthguard.sources import read_pairs

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_digits("test")


@pytest.fixture(scope="module")
def guard(digits: Any) -> sg.Guard:
    ref = sg.Reference.build(digits.images[:300], digits.captions[:300], encoder="bundled:digits")
    return sg.Guard(ref, sg.GuardConfig(n_resamples=199, alpha_batch=0.05))


def _dataset(digits: Any, start: int, stop: int) -> Any:
    captions = list(digits.captions[start:stop])
    captions[2] = captions[30]  # misaligned: rejected per sample
    return datasets.Dataset.from_dict(
        {"image": list(digits.images[start:stop]), "text": captions},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")}),
    )


def test_a_dataset_gets_decision_columns_equal_to_guard_check(guard: sg.Guard, digits: Any) -> None:
    from synthguard.integrations.hf_datasets import guard_dataset

    ds = _dataset(digits, 300, 380)
    reports: list[sg.GuardReport] = []
    decided = guard_dataset(ds, guard, caption_column="text", chunk_size=40,
                            on_report=reports.append)  # fmt: skip
    assert len(decided) == 80 and len(reports) == 2
    for chunk, report in enumerate(reports):  # each chunk: exactly one guard.check
        span = slice(chunk * 40, (chunk + 1) * 40)
        rows = decided[span]
        ids = list(range(span.start, span.stop))
        want = guard.check(sg.PairBatch(ds[span]["image"], rows["text"], ids=ids))
        assert rows["sg_sample_accepted"] == [s.accepted for s in want.samples]
        assert rows["sg_accepted"] == [s.accepted and want.accepted for s in want.samples]
        assert rows["sg_chunk"] == [chunk] * 40
        same = report.model_copy(update={"null_cached": want.null_cached})  # read, not computed
        assert same.to_dict() == want.to_dict()
    assert "low_alignment" in decided[2]["sg_reasons"]
    kept = decided.filter(lambda row: row["sg_accepted"])
    assert len(kept) == sum(r.n_accepted for r in reports if r.accepted)


def test_a_streaming_dataset_is_decided_as_it_is_read(guard: sg.Guard, digits: Any) -> None:
    from synthguard.integrations.hf_datasets import guard_dataset

    ds = _dataset(digits, 300, 360)
    streamed = guard_dataset(ds.to_iterable_dataset(), guard, caption_column="text",
                             chunk_size=30)  # fmt: skip
    eager = guard_dataset(ds, guard, caption_column="text", chunk_size=30)
    assert [r["sg_accepted"] for r in streamed] == eager["sg_accepted"]


def test_missing_columns_are_named(guard: sg.Guard, digits: Any) -> None:
    from synthguard.integrations.hf_datasets import guard_dataset

    with pytest.raises(sg.InvalidInputError, match=r"columns \['caption'\]"):
        guard_dataset(_dataset(digits, 300, 340), guard)


def test_parquet_written_by_datasets_is_read_by_the_cli(
    guard: sg.Guard, digits: Any, tmp_path: Path
) -> None:
    """datasets writes an Image column as a {bytes, path} struct and captions as 'text'."""
    path = tmp_path / "pool.parquet"
    _dataset(digits, 300, 340).to_parquet(str(path))
    batch = read_pairs(path)
    assert len(batch) == 40 and all(isinstance(image, bytes) for image in batch.images)
    reference = tmp_path / "real.sgref"
    guard.reference.save(reference)
    code = main(["check", "--reference", str(reference), "--input", str(path),
                 "--encoder", "bundled:digits", "--out", str(tmp_path / "r.json")])  # fmt: skip
    assert code in (0, 1)
    report = sg.GuardReport.model_validate_json((tmp_path / "r.json").read_text())
    assert report.n_samples == 40 and report.rejects_by_reason.get("unreadable_image", 0) == 0
