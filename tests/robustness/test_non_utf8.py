"""Non-UTF-8 names (issue 16): ids, captions and tar member names holding lone surrogates (what
``os.fsdecode`` and tarfile's ``surrogateescape`` make of bytes that are not UTF-8) are hashed,
checked, reported and written, never a raw ``UnicodeEncodeError``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import synthguard as sg
from _digits import TEMPLATE, digits_reference
from synthguard.cli import main
from synthguard.datasets import DIGIT_NAMES
from synthguard.sources import read_pairs
from synthguard.stats._hashing import content_hash, hash_ids

# Lone surrogates: \udc80-\udcff are what surrogateescape makes of undecodable bytes.
_surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
_text = st.lists(st.one_of(_surrogate, st.characters()), min_size=1, max_size=8).map("".join)


@settings(max_examples=150, deadline=None)
@given(st.lists(_text, min_size=1, max_size=12, unique=True), st.integers(0, 2**64 - 1))
def test_hash_ids_never_raises_and_keeps_distinct_ids_distinct(ids: list[str], seed: int) -> None:
    keys = hash_ids(ids, len(ids), seed)
    assert len(set(keys.tolist())) == len(ids)  # 64-bit keys: a collision here would be a bug
    assert content_hash(ids[0]) == content_hash(ids[0])


def test_valid_text_hashes_exactly_as_before() -> None:
    """Stored references keep their bottom-k samples: valid ids hash as they always did."""
    key = (7).to_bytes(8, "little")
    for text in ("a", "été", "手写", "✍️"):
        digest = hashlib.blake2b(b"s" + text.encode("utf-8"), digest_size=8, key=key).digest()
        assert hash_ids([text], 1, 7)[0] == int.from_bytes(digest, "little")
        expected = hashlib.sha256(b"str\0" + text.encode("utf-8")).hexdigest()
        assert content_hash(text) == expected
    # An escaped byte and the character with that UTF-8 spelling are different ids.
    assert hash_ids(["\udcc3\udca9"], 1, 0)[0] != hash_ids(["é"], 1, 0)[0]


@pytest.mark.parametrize("id_", ["a\udcff", "\ud800", os.fsdecode(b"caf\xe9.png"), "\udfff\ud800"])
def test_stats_and_references_take_surrogate_ids(guard: sg.Guard, id_: str) -> None:
    ref = guard.reference
    image, text = ref.support_image[:40], ref.support_text[:40]
    ids = [f"{id_}{i}" for i in range(40)]
    stats = sg.EmbeddingStats(image.shape[1], sample_size=16).update(image, text, ids=ids)
    assert stats.n_pairs == 40
    built = sg.Reference.from_embeddings(image, text, ids=ids)
    assert built.n_support == 40
    report = guard.check_embeddings(image[:5], text[:5], ids=ids[:5])
    assert [s.id for s in report.samples] == ids[:5]


def test_guard_check_with_surrogate_ids_and_captions_through_the_cache(
    digits: Any, digits_encoder: Any, tmp_path: Path
) -> None:
    encoder = sg.load_encoder("bundled:digits", cache_dir=tmp_path / "cache")
    guard = sg.Guard(digits_reference(digits, digits_encoder, 270), encoder=encoder)
    ids = [os.fsdecode(f"{i}".encode() + b"\xff.png") for i in range(300, 320)]
    captions = list(digits.captions[300:320])
    captions[0] += " \udcff"  # a caption the cache keys by its exact string
    for _ in range(2):  # the second pass is served from the cache
        report = guard.check(sg.PairBatch(digits.images[300:320], captions, ids=ids))
        assert [s.id for s in report.samples] == ids
        assert report.n_accepted >= 15
    report.to_json(tmp_path / "r.json")
    report.to_html(tmp_path / "r.html")
    assert json.loads((tmp_path / "r.json").read_text())["samples"][0]["id"] == ids[0]
    assert "\\udcff" in (tmp_path / "r.html").read_text()  # shown escaped
    encoder.close()


def _latin1_shard(path: Path, digits: Any, rows: range) -> Path:
    """A GNU tar whose member names are Latin-1 bytes (``é`` is ``b'\\xe9'``), not UTF-8."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        for i in rows:
            buffer = io.BytesIO()
            digits.images[i].save(buffer, format="PNG")
            for ext, data in (
                (".png", buffer.getvalue()),
                (".txt", digits.captions[i].encode()),
                (".cls", str(digits.labels[i]).encode()),
            ):
                info = tarfile.TarInfo(f"\xe9t\xe9_{i}{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path, encoding="latin-1") as tar:  # really raw bytes, not UTF-8
        assert not tar.getnames()[0].encode("latin-1").decode("utf-8", "replace").isascii()
    return path


def test_a_tar_with_non_utf8_member_names_is_read_and_checked(
    guard: sg.Guard, digits: Any, tmp_path: Path
) -> None:
    shard = _latin1_shard(tmp_path / "s.tar", digits, range(300, 320))
    batch = read_pairs(shard)
    assert len(batch) == 20
    assert batch.ids[0] == "\udce9t\udce9_300"  # the bytes, decoded with surrogateescape
    report = guard.check(batch)
    assert report.n_samples == 20 and report.n_accepted >= 15


def test_cli_checks_and_writes_non_utf8_names(digits: Any, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    lines = []
    for i in range(270):
        name = os.fsdecode(f"{i:04d}".encode() + b"\xff.png")  # non-UTF-8 file names
        digits.images[i].save(os.path.join(real, name))
        lines.append(json.dumps({"file": name, "caption": digits.captions[i],
                                 "label": int(digits.labels[i])}))  # fmt: skip
    (real / "captions.jsonl").write_text("\n".join(lines))
    ref = tmp_path / "real.sgref"
    assert main([
        "reference", "build", "--input", str(real), "--encoder", "bundled:digits",
        "--out", str(ref), "--label-names", ",".join(DIGIT_NAMES), "--template", TEMPLATE,
        "--no-progress",
    ]) == 0  # fmt: skip
    shard = _latin1_shard(tmp_path / "s.tar", digits, range(300, 330))
    out = tmp_path / "out"
    out.mkdir()
    code = main([
        "check", "--reference", str(ref), "--input", str(shard), "--no-progress",
        "--out", str(out / "r.json"), "--html", str(out / "r.html"),
        "--write-accepted", str(out / "accepted.tar"),
    ])  # fmt: skip
    assert code == 0
    report = json.loads((out / "r.json").read_text())
    assert report["samples"][0]["id"] == "\udce9t\udce9_300"
    assert len(read_pairs(out / "accepted.tar")) == report["n_accepted"]  # readable again
