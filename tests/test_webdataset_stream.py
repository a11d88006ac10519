"""Issue 17: WebDataset input streamed (``.tar``, ``.tar.gz``, brace-expanded shard lists), in
bounded memory, keeping every rule of the whole-file reader; the brace expander against bash."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import synthguard as sg
from _digits import png_pairs
from synthguard.cli import main
from synthguard.datasets import load_digits
from synthguard.sources import detect_kind, expand_braces, iter_pairs, read_pairs, write_pairs


@pytest.fixture(scope="module")
def pairs() -> sg.PairBatch:
    return png_pairs(12)


def _shard(path: Path, members: list[tuple[str, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# -- brace expansion ------------------------------------------------------------------------


def test_brace_patterns_expand_as_webdataset_shard_lists_are_written() -> None:
    assert expand_braces("shards/{000..009}.tar") == [f"shards/{i:03d}.tar" for i in range(10)]
    assert expand_braces("{train/{0..1},val/0}.tgz") == ["train/0.tgz", "train/1.tgz", "val/0.tgz"]
    assert expand_braces("s{1..10..4}{a,b}") == ["s1a", "s1b", "s5a", "s5b", "s9a", "s9b"]
    assert expand_braces("s{3..1}{c..a}") == [f"s{n}{c}" for n in "321" for c in "cba"]
    assert expand_braces("s{8..11}") == ["s8", "s9", "s10", "s11"]  # no leading zero: no padding
    for literal in ("plain.tar", "a{b}.tar", "a{}.tar", "a{b,c.tar", "a}b", "${x,y}"):
        assert expand_braces(literal) == [literal]
    with pytest.raises(sg.InvalidInputError, match="expands to more than 100,000 names"):
        expand_braces("{0..999999999}.tar")
    with pytest.raises(sg.InvalidInputError, match="more than 100,000"):
        expand_braces("{0..999}{0..999}")


_LITERAL = st.text(alphabet="abxz019_-./", max_size=3)
_INT_RANGE = st.builds(
    lambda lo, hi, pad, step: "{" + pad + str(lo) + ".." + str(hi) + step + "}",
    st.integers(-4, 14), st.integers(-4, 14), st.sampled_from(["", "", "0", "00"]),
    st.sampled_from(["", "", "..2", "..3"]),
)  # fmt: skip
_CHAR_RANGE = st.builds(lambda a, b: "{" + a + ".." + b + "}", *[st.sampled_from("acfhk")] * 2)
_ODD = st.sampled_from(["{", "}", "{a}", "{}", ",", ".."])


def _extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    group = st.lists(children, min_size=2, max_size=3).map(lambda p: "{" + ",".join(p) + "}")
    return st.one_of(group, st.lists(children, min_size=1, max_size=3).map("".join))


_PATTERNS = st.recursive(st.one_of(_LITERAL, _INT_RANGE, _CHAR_RANGE, _ODD), _extend, max_leaves=7)


@pytest.mark.skipif(shutil.which("bash") is None, reason="the reference is bash itself")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_PATTERNS)
def test_brace_expansion_equals_bash(pattern: str) -> None:
    """The brute-force reference is bash's own brace expansion of the same word."""
    word = "s" + pattern + ".tar"  # never an empty word, never an option
    try:
        mine = expand_braces(word)
    except sg.InvalidInputError:  # more than MAX_EXPANSION names (tested above)
        assume(False)
    done = subprocess.run(
        ["bash", "-c", 'printf "%s\\n" ' + word], capture_output=True, text=True, timeout=30
    )
    assert mine == done.stdout.splitlines(), word


# -- streaming -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_a_shard_many_chunks_large_streams_in_bounded_memory(tmp_path: Path, suffix: str) -> None:
    """The reader holds one chunk, never the shard: tracemalloc's peak while every sample
    streams through is a small fraction of the shard's size."""
    n, size, chunk = 96, 200_000, 4
    members = []
    for i in range(n):
        members += [(f"{i:05d}.jpg", os.urandom(size)), (f"{i:05d}.txt", f"caption {i}".encode())]
    shard = _shard(tmp_path / f"big{suffix}", members, "w:gz" if suffix == ".tar.gz" else "w")
    digests = [hashlib.sha256(data).digest() for name, data in members[::2]]
    del members
    tracemalloc.start()
    try:
        seen, held = [], 0
        for batch in iter_pairs(shard, chunk_size=chunk):
            assert len(batch) <= chunk
            held = max(held, sum(len(image) for image in batch.images))
            seen += [(i, c, hashlib.sha256(im).digest()) for i, c, im in
                     zip(batch.ids, batch.captions, batch.images, strict=True)]  # fmt: skip
            del batch
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [s[0] for s in seen] == [f"{i:05d}" for i in range(n)]  # all, in order
    assert [s[1] for s in seen] == [f"caption {i}" for i in range(n)]
    assert [s[2] for s in seen] == digests  # the bytes of every image
    total = n * size
    assert held == chunk * size
    assert peak < total / 8, (peak, total)  # the whole-shard reader peaked above `total`


def test_chunks_concatenate_to_the_whole_source_in_every_layout(
    pairs: sg.PairBatch, tmp_path: Path
) -> None:
    for kind, name in (("folder", "f"), ("webdataset", "s.tar.gz"), ("parquet", "p.parquet")):
        write_pairs(pairs, tmp_path / name, kind)  # type: ignore[arg-type]
        whole = read_pairs(tmp_path / name)
        chunks = list(iter_pairs(tmp_path / name, chunk_size=5))
        assert [len(c) for c in chunks] == [5, 5, 2], kind
        assert [i for c in chunks for i in c.ids] == whole.ids
        assert [x for c in chunks for x in c.captions] == whole.captions
        assert [x for c in chunks for x in (c.labels or [])] == whole.labels == pairs.labels


def test_gzip_shards_and_brace_patterns_are_read(pairs: sg.PairBatch, tmp_path: Path) -> None:
    """Before: a .tar.gz or a pattern was 'not a folder, .tar or .parquet' (exit 2)."""
    folder = tmp_path / "shards"
    folder.mkdir()
    write_pairs(pairs.select(range(0, 4)), folder / "000.tar", "webdataset")
    write_pairs(pairs.select(range(4, 8)), folder / "001.tar.gz", "webdataset")
    write_pairs(pairs.select(range(8, 12)), folder / "002.tgz", "webdataset")
    with tarfile.open(folder / "001.tar.gz") as tar:  # really gzip: a plain "r:" cannot read it
        assert tar.fileobj is not None and type(tar.fileobj).__name__ == "GzipFile"
    pattern = str(folder / "{000.tar,001.tar.gz,002.tgz}")
    assert detect_kind(pattern) == "webdataset"
    batch = read_pairs(pattern)
    assert batch.captions == pairs.captions and batch.labels == pairs.labels
    assert batch.ids[0].startswith("000.tar/") and batch.ids[4].startswith("001.tar.gz/")
    assert read_pairs(folder).captions == pairs.captions  # a folder of mixed shards, name order
    assert read_pairs(folder / "001.tar.gz").captions == pairs.captions[4:8]
    with pytest.raises(sg.InvalidInputError, match=r"names 2 shards and 1 do not exist.*001\.tar"):
        read_pairs(folder / "{000..001}.tar")
    with pytest.raises(sg.InvalidInputError, match=r"must expand to \.tar, \.tar\.gz or \.tgz"):
        read_pairs(folder / "{a,b}.zip")


def test_a_sample_whose_files_are_apart_is_refused(pairs: sg.PairBatch, tmp_path: Path) -> None:
    """``tar cf s.tar *.png *.txt``: grouping would hold the shard; refused, saying why."""
    members = [("a.png", pairs.images[0]), ("b.png", pairs.images[1]), ("a.txt", b"one"),
               ("b.txt", b"two")]  # fmt: skip
    with pytest.raises(sg.InvalidInputError) as info:
        read_pairs(_shard(tmp_path / "s.tar", members))
    assert "'a.txt' belongs to sample 'a'" in str(info.value) and "--sort=name" in str(info.value)


def _damaged(good: bytes, block: int) -> bytes:
    """``good`` with one byte of the header at 512-byte block ``block`` changed."""
    out = bytearray(good)
    out[block * 512 + 100] ^= 0xFF  # the mode field: the header's checksum no longer matches
    return bytes(out)


def test_a_shard_that_ends_in_damage_is_refused_not_cut_short(
    pairs: sg.PairBatch, tmp_path: Path
) -> None:
    """Before: tarfile stopped at a damaged header after the first and the samples behind it
    vanished without a word; concatenated archives lost all but the first the same way."""
    members = [(f"{i}.{ext}", data) for i in range(3)
               for ext, data in (("png", pairs.images[i]), ("txt", b"c"))]  # fmt: skip
    good = _shard(tmp_path / "good.tar", members).read_bytes()
    assert len(read_pairs(tmp_path / "good.tar")) == 3
    second = 1 + (len(pairs.images[0]) + 511) // 512 + 2  # header block of the second sample
    with tarfile.open(tmp_path / "good.tar") as tar:
        assert tar.getmembers()[2].offset == second * 512
    cases = {
        "damaged.tar": (_damaged(good, second), "is damaged: a tar header at byte"),
        "cut.tar": (good[: second * 512 + 300], "is damaged"),
        "twice.tar": (good + good, "data after its end-of-archive marker"),
    }
    for name, (data, match) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(sg.InvalidInputError, match=match):
            read_pairs(tmp_path / name)
    (tmp_path / "short.tar").write_bytes(good[: second * 512 + 700])  # inside a member's data
    with pytest.raises(sg.InvalidInputError, match="not a readable tar shard"):
        read_pairs(tmp_path / "short.tar")


def test_labels_missing_in_a_later_chunk_are_refused(pairs: sg.PairBatch, tmp_path: Path) -> None:
    members = [(f"{i}.png", pairs.images[i]) for i in range(4)]
    members = [m for i in range(4) for m in ((f"{i}.png", pairs.images[i]), (f"{i}.txt", b"c"))
               + (((f"{i}.cls", b"1"),) if i < 3 else ())]  # fmt: skip
    shard = _shard(tmp_path / "s.tar", members)
    chunks = iter_pairs(shard, chunk_size=2)
    assert next(chunks).labels == [1, 1]
    with pytest.raises(sg.InvalidInputError, match="pair '3' has none and the pairs before it do"):
        next(chunks)


# -- the CLI ---------------------------------------------------------------------------------


def test_check_reads_a_quoted_pattern_and_writes_gzip(
    tmp_path: Path, capsys: Any, digits_encoder: Any
) -> None:
    real = load_digits("test")
    ref = sg.Reference.build(real.images[:100], real.captions[:100], encoder=digits_encoder)
    ref.save(tmp_path / "r.sgref")
    (tmp_path / "per_sample.json").write_text('{"batch_tests": [], "class_mix": false}')
    shards = tmp_path / "shards"
    shards.mkdir()
    for s in range(2):
        part = sg.PairBatch(real.images[100 + 20 * s : 120 + 20 * s],
                            real.captions[100 + 20 * s : 120 + 20 * s])  # fmt: skip
        write_pairs(part, shards / f"{s:03d}.tar.gz", "webdataset")
    pattern = str(shards / "{000..001}.tar.gz")
    base = ["check", "--reference", str(tmp_path / "r.sgref"), "--input", pattern,
            "--config", str(tmp_path / "per_sample.json"), "--no-progress"]  # fmt: skip
    assert main([*base, "--write-accepted", str(shards / "001.tar.gz")]) == 2  # an input shard
    assert "must not be the input --input" in capsys.readouterr().err
    code = main([*base, "--out", str(tmp_path / "r.json"),
                 "--write-accepted", str(tmp_path / "kept.tar.gz")])  # fmt: skip
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and report["n_samples"] == 40, capsys.readouterr().err
    assert report["samples"][20]["id"].startswith("001.tar.gz/")
    with tarfile.open(tmp_path / "kept.tar.gz", "r:gz") as tar:  # gzip, as its name says
        assert sum(m.name.endswith(".txt") for m in tar) == report["n_accepted"] > 30
