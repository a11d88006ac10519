"""Sources: folder/JSONL/CSV, WebDataset shards and Parquet round trips; no path escapes."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

import synthguard as sg
from synthguard.datasets import load_digits
from synthguard.sources import detect_kind, read_pairs, write_pairs


@pytest.fixture(scope="module")
def pairs() -> sg.PairBatch:
    test = load_digits("test")
    images = []
    for image in test.images[:12]:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return sg.PairBatch(images, test.captions[:12], labels=test.labels[:12], ids=test.ids[:12])


def _same(a: sg.PairBatch, b: sg.PairBatch) -> None:
    assert a.captions == b.captions and a.labels == b.labels
    got = [Path(i).read_bytes() if isinstance(i, str) else bytes(i) for i in b.images]
    assert got == list(a.images)


@pytest.mark.parametrize("kind", ["folder", "webdataset", "parquet"])
def test_round_trip(pairs: sg.PairBatch, tmp_path: Path, kind: Any) -> None:
    dest = tmp_path / {"folder": "out", "webdataset": "out.tar", "parquet": "out.parquet"}[kind]
    write_pairs(pairs, dest, kind)
    assert detect_kind(dest) == kind
    back = read_pairs(dest)
    _same(pairs, back)
    assert len(set(back.ids)) == len(pairs)
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name]  # nothing left behind


def test_csv_folder_and_partial_labels(pairs: sg.PairBatch, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(pairs.images[0])
    (tmp_path / "b.png").write_bytes(pairs.images[1])
    with open(tmp_path / "captions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows(
            [["file", "caption", "label"], ["a.png", "one", "1"], ["b.png", "two", ""]]
        )
    with pytest.raises(sg.InvalidInputError, match="every pair or none"):
        read_pairs(tmp_path)


def test_paths_cannot_escape_the_source(pairs: sg.PairBatch, tmp_path: Path) -> None:
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "captions.jsonl").write_text(json.dumps({"file": "../x.png", "caption": "c"}))
    with pytest.raises(sg.InvalidInputError, match="stay inside"):
        read_pairs(folder)
    shard = tmp_path / "evil.tar"
    with tarfile.open(shard, "w") as tar:
        for name in ("../../etc/x.png", "/abs/y.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(sg.InvalidInputError, match="stay inside"):
        read_pairs(shard)


def test_webdataset_json_captions_and_shard_folders(pairs: sg.PairBatch, tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    for s in range(2):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
            for k in range(3):
                for name, data in (
                    (f"{k:04d}.png", pairs.images[k]),
                    (f"{k:04d}.json", json.dumps({"caption": f"cap {s}{k}", "label": k}).encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    batch = read_pairs(folder)
    assert len(batch) == 6 and batch.labels == [0, 1, 2, 0, 1, 2]
    assert batch.captions[4] == "cap 11" and batch.ids[0] == "00000.tar/0000"


def test_bad_sources_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(sg.InvalidInputError, match="does not exist"):
        read_pairs(tmp_path / "missing.txt")
    with pytest.raises(sg.InvalidInputError, match=r"captions\.jsonl or captions\.csv"):
        read_pairs(tmp_path)
    (tmp_path / "captions.jsonl").write_text("{not json\n")
    with pytest.raises(sg.InvalidInputError, match="line 1 is not JSON"):
        read_pairs(tmp_path)
    with pytest.raises(sg.InvalidInputError, match="exists"):
        write_pairs(sg.PairBatch([b"x"], ["c"]), tmp_path, "folder")


def test_written_files_get_ordinary_permissions(pairs: sg.PairBatch, tmp_path: Path) -> None:
    import os

    mask = os.umask(0o022)
    try:
        write_pairs(pairs, tmp_path / "out.tar", "webdataset")
        write_pairs(pairs, tmp_path / "folder", "folder")
    finally:
        os.umask(mask)
    assert (tmp_path / "out.tar").stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0o600
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
