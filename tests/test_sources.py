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
from _digits import png_pairs
from synthguard.sources import detect_kind, read_pairs, write_pairs


@pytest.fixture(scope="module")
def pairs() -> sg.PairBatch:
    return png_pairs(12)


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


@pytest.mark.parametrize("label", [3.7, "2.5", True, "three", [1]])
@pytest.mark.parametrize("kind", ["folder", "webdataset", "parquet"])
def test_labels_that_are_not_whole_numbers_are_refused(
    pairs: sg.PairBatch, tmp_path: Path, kind: Any, label: Any
) -> None:
    """Issue 16: 3.7, "2.5" and true became classes 3, 2 and 1 (int(v)) in every source."""
    dest = tmp_path / {"folder": "out", "webdataset": "out.tar", "parquet": "out.parquet"}[kind]
    one = sg.PairBatch(pairs.images[:2], pairs.captions[:2], ids=["a", "b"])
    write_pairs(one, dest, kind)
    if kind == "folder":
        lines = (dest / "captions.jsonl").read_text().splitlines()
        rows = [
            {**json.loads(line), "label": label if i == 1 else 4} for i, line in enumerate(lines)
        ]
        (dest / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    elif kind == "webdataset":
        dest.unlink()
        with tarfile.open(dest, "w") as tar:
            for key, image, value in (("a", pairs.images[0], 4), ("b", pairs.images[1], label)):
                for name, data in ((f"{key}.png", image), (f"{key}.txt", b"a digit"),
                                   (f"{key}.cls", str(value).encode())):  # fmt: skip
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(dest)
        column = pa.array([[4], label] if isinstance(label, list) else [
            type(label)(0) if not isinstance(label, str) else "4", label
        ])  # fmt: skip
        pq.write_table(table.append_column("label", column), dest)
    with pytest.raises(sg.InvalidInputError, match="label must be a class index"):
        read_pairs(dest)


def test_integral_labels_are_read_in_every_form(pairs: sg.PairBatch, tmp_path: Path) -> None:
    folder = tmp_path / "f"
    write_pairs(sg.PairBatch(pairs.images[:3], pairs.captions[:3], ids=["a", "b", "c"]), folder,
                "folder")  # fmt: skip
    lines = (folder / "captions.jsonl").read_text().splitlines()
    rows = [{**json.loads(line), "label": v} for line, v in zip(lines, [2, "7", 3.0], strict=True)]
    (folder / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert read_pairs(folder).labels == [2, 7, 3]


def test_a_shard_with_two_members_for_one_slot_is_refused(
    pairs: sg.PairBatch, tmp_path: Path
) -> None:
    """Issue 16: the last of two ``a.txt`` members was kept silently."""
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (("a.png", pairs.images[0]), ("a.txt", b"one"), ("a.txt", b"two")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(sg.InvalidInputError, match=r"two \.txt members"):
        read_pairs(shard)


def _shard(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    ("member", "data", "match"),
    [
        ("a.json", b"{not json", r"a\.json|\.json is not JSON"),
        ("a.json", b"[1, 2]", "must be a JSON object"),
        ("a.txt", "café".encode("latin-1"), "not UTF-8"),
    ],
    ids=["sidecar not JSON", "sidecar a list", "latin-1 caption"],
)
def test_bad_shard_members_are_named(
    pairs: sg.PairBatch, tmp_path: Path, member: str, data: bytes, match: str
) -> None:
    """Issue 16: raw JSONDecodeError, AttributeError and UnicodeDecodeError escaped."""
    shard = _shard(tmp_path / "s.tar", [("a.png", pairs.images[0]), (member, data)])
    with pytest.raises(sg.InvalidInputError, match=match) as info:
        read_pairs(shard)
    assert "s.tar" in str(info.value) and "'a'" in str(info.value)


@pytest.mark.parametrize("name", ["captions.jsonl", "captions.csv"])
def test_latin_1_caption_files_are_named(pairs: sg.PairBatch, tmp_path: Path, name: str) -> None:
    (tmp_path / "a.png").write_bytes(pairs.images[0])
    text = (
        '{"file": "a.png", "caption": "café"}\n' if name.endswith("jsonl")
        else "file,caption\na.png,café\n"
    )  # fmt: skip
    (tmp_path / name).write_bytes(text.encode("latin-1"))
    with pytest.raises(sg.InvalidInputError, match=f"{name} is not UTF-8"):
        read_pairs(tmp_path)


def test_a_garbage_parquet_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet PAR1")
    with pytest.raises(sg.InvalidInputError, match="not a readable Parquet file"):
        read_pairs(bad)


def test_a_gnu_tar_of_a_folder_is_read(pairs: sg.PairBatch, tmp_path: Path) -> None:
    """Issue 16: ``tar -C dir -cf s.tar .`` starts with a ``./`` entry, which was refused."""
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        tar.addfile(_dir_entry("./"))
        for name, data in (("./a.png", pairs.images[0]), ("./a.txt", b"a digit")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    back = read_pairs(shard)
    assert back.captions == ["a digit"] and back.ids == ["a"]


def _dir_entry(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info
