"""``synthguard check`` over randomly corrupted folders, tar shards and Parquet files (issue 16):
exit 0, 1 or 2, never a traceback, nothing written but the named outputs, inputs unchanged."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from synthguard.cli import main
from synthguard.datasets import DIGIT_NAMES, load_digits

TEMPLATE = "a handwritten digit {name}"
SRC = Path(__file__).resolve().parents[2] / "src"
CASES = 60


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("fuzz_ref")
    test = load_digits("test")
    real = root / "real"
    real.mkdir()
    lines = []
    for i in range(270):
        test.images[i].save(real / f"{i:04d}.png")
        lines.append(json.dumps({"file": f"{i:04d}.png", "caption": test.captions[i],
                                 "label": int(test.labels[i])}))  # fmt: skip
    (real / "captions.jsonl").write_text("\n".join(lines))
    reference = root / "real.sgref"
    assert main([
        "reference", "build", "--input", str(real), "--encoder", "bundled:digits",
        "--out", str(reference), "--label-names", ",".join(DIGIT_NAMES), "--template", TEMPLATE,
        "--no-progress",
    ]) == 0  # fmt: skip
    return {"reference": reference, "digits": test}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _garble(rng: random.Random, data: bytes) -> bytes:
    kind = rng.choice(["truncate", "flip", "random", "empty"] + ["keep"] * 8)
    if kind == "truncate":
        return data[: rng.randrange(max(1, len(data)))]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if kind == "random":
        return rng.randbytes(rng.randint(1, 300))
    return b"" if kind == "empty" else data


def _caption(rng: random.Random, digits: Any, i: int) -> Any:
    if rng.random() < 0.9:
        return digits.captions[i]
    return rng.choice(["", None, 7, "\udcff", "x" * 500, [1]])


def _make_input(rng: random.Random, folder: Path, digits: Any) -> Path:
    rows = rng.sample(range(300, 500), rng.randint(1, 25))
    kind = rng.choice(["folder", "tar", "parquet"])
    if kind == "folder":
        target = folder / "pairs"
        target.mkdir()
        entries = []
        for i in rows:
            (target / f"{i}.png").write_bytes(_garble(rng, _png(digits.images[i])))
            entry = {"file": f"{i}.png", "caption": _caption(rng, digits, i)}
            if rng.random() < 0.05:
                entry["file"] = f"missing_{i}.png"
            if rng.random() < 0.03:
                entry["label"] = rng.choice([int(digits.labels[i]), 3.5, "x", -1, 99])
            entries.append(entry)
        lines = [json.dumps(e) for e in entries]
        if rng.random() < 0.05:
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(["{not json", "[]", '{"a": 1}']))
        text = "\n".join(lines)
        if rng.random() < 0.05:
            text = text[: rng.randrange(len(text) + 1)]
        (target / "captions.jsonl").write_text(text)
        return target
    if kind == "tar":
        target = folder / "pairs.tar"
        buffer = io.BytesIO()
        with_labels = rng.random() < 0.3
        accent = "\xe9" if rng.random() < 0.5 else ""  # in Latin-1: names that are not UTF-8
        with tarfile.open(
            fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1"
        ) as tar:
            for i in rows:
                caption = _caption(rng, digits, i)
                members = {".png": _garble(rng, _png(digits.images[i]))}
                if rng.random() < 0.9:
                    members[".txt"] = str(caption).encode("utf-8", "surrogateescape")
                if with_labels:  # labels for every sample or none, a few bad ones
                    bad = rng.random() < 0.05
                    label = rng.choice([b"x", b"-1", b"\xff"]) if bad else b"%d" % digits.labels[i]
                    members[".cls"] = label
                for ext, data in members.items():
                    if rng.random() < 0.05:
                        continue  # a missing member
                    info = tarfile.TarInfo(f"{i}{accent}{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        data = buffer.getvalue()
        target.write_bytes(_garble(rng, data) if rng.random() < 0.15 else data)
        return target
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = folder / "pairs.parquet"
    images: list[Any] = [_garble(rng, _png(digits.images[i])) for i in rows]
    captions: list[Any] = [_caption(rng, digits, i) for i in rows]
    columns: dict[str, Any] = {
        "image": pa.array(images, pa.binary()),
        "caption": pa.array(
            [c if isinstance(c, str) and c.isprintable() else None for c in captions], pa.string()
        ),
    }
    wrong = rng.random()
    if wrong < 0.15:
        columns["caption"] = pa.array([rng.random() for _ in rows], pa.float64())
    elif wrong < 0.3:
        columns["image"] = pa.array([rng.randint(0, 9) for _ in rows], pa.int64())
    elif wrong < 0.4:
        columns["label"] = pa.array([rng.choice(["1", "x", None]) for _ in rows], pa.string())
    elif wrong < 0.5:
        del columns["caption"]
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    data = buffer.getvalue()
    target.write_bytes(_garble(rng, data) if rng.random() < 0.2 else data)
    return target


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
        for p in root.rglob("*")
    }


def _argv(reference: Path, source: Path, out: Path) -> list[str]:
    return [
        "check", "--reference", str(reference), "--input", str(source), "--no-progress",
        "--out", str(out / "r.json"), "--html", str(out / "r.html"),
        "--write-accepted", str(out / ("accepted" + "".join(source.suffixes))),
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(CASES))
def test_check_keeps_its_contract_on_corrupt_inputs(
    setup: dict[str, Any], seed: int, tmp_path: Path, capsys: Any
) -> None:
    rng = random.Random(seed)
    source = _make_input(rng, tmp_path, setup["digits"])
    out = tmp_path / "out"
    out.mkdir()
    before = _snapshot(tmp_path)
    code = main(_argv(setup["reference"], source, out))
    captured = capsys.readouterr()
    assert code in (0, 1, 2), (code, captured.err)
    assert "Traceback" not in captured.err
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("out")} == {
        k: v for k, v in before.items() if not k.startswith("out")
    }  # inputs unchanged, nothing new beside them
    named = {"r.json", "r.html", "accepted" + "".join(source.suffixes)}
    assert {Path(k).parts[1] for k in after if k.startswith("out/")} <= named
    if code == 2:
        assert captured.err.startswith("synthguard: error:"), captured.err
        assert not list(out.iterdir())  # a refused input writes nothing
    else:  # checked: the reports are written and count every sample
        report = json.loads((out / "r.json").read_text())
        assert report["n_samples"] == len(report["samples"]) >= 1
        assert (out / "r.html").is_file()


def test_check_in_a_subprocess_shows_one_line_and_no_traceback(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    source = tmp_path / "pairs.parquet"
    source.write_bytes(b"PAR1" + os.urandom(200))  # garbled
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "synthguard.cli", *_argv(setup["reference"], source, out)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "pairs.parquet" in result.stderr
