"""Issue 16: one writer per monitor file, outputs never over inputs, stale staging cleaned.

Two monitors on one file overwrote each other's records and four threads on one monitor made
the file unloadable; ``check --out r.sgref --reference r.sgref`` replaced the reference; a
killed write left its hidden staging file or folder forever.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import synthguard as sg
from _digits import digits_reference
from synthguard._io import STALE_AFTER_S, atomic_write_text, clean_stale
from synthguard._io._write import _HOST
from synthguard.cli import main
from synthguard.datasets import load_digits
from synthguard.sources import write_pairs

SRC = Path(__file__).resolve().parents[1] / "src"


def _subprocess(code: str, *args: str) -> subprocess.Popen[str]:
    """A Python child running ``code`` on this checkout; it prints a line once it is ready."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline(), proc.stderr
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


# -- 5. the monitor: one writer, thread-safe, readable errors -------------------------------


def test_a_second_monitor_on_one_file_is_refused(tmp_path: Path) -> None:
    """The report's case: the second monitor silently overwrote the first's records."""
    path = tmp_path / "loop.jsonl"
    first = sg.CollapseMonitor(path)
    first.log(0, {"coverage": 1.0})
    with pytest.raises(sg.InvalidInputError, match=r"loop\.jsonl.*another CollapseMonitor") as info:
        sg.CollapseMonitor(path)
    assert f"process {os.getpid()}" in str(info.value)
    first.log(1, {"coverage": 0.9})
    first.close()
    assert first.closed and [p.name for p in tmp_path.iterdir()] == ["loop.jsonl"]  # no lock
    with sg.CollapseMonitor(path) as second:
        assert second.next_generation == 2
    with pytest.raises(sg.InvalidInputError, match="was closed"):
        second.log(2, {"coverage": 0.8})
    assert len(path.read_text().splitlines()) == 2


def test_the_lock_goes_with_garbage_collection_and_killed_processes(tmp_path: Path) -> None:
    path = tmp_path / "loop.jsonl"
    monitor = sg.CollapseMonitor(path)
    del monitor
    gc.collect()
    sg.CollapseMonitor(path).close()  # free again
    holder = _subprocess(
        """
        import sys, time, synthguard as sg
        monitor = sg.CollapseMonitor(sys.argv[1])
        print("holding", flush=True)
        time.sleep(120)
        """,
        str(path),
    )
    try:
        with pytest.raises(sg.InvalidInputError, match=f"process {holder.pid}"):
            sg.CollapseMonitor(path)
    finally:
        _kill(holder)  # nothing can clean up after SIGKILL: the kernel drops the lock
    with sg.CollapseMonitor(path) as monitor:
        monitor.log(0, {"x": 1.0})


def test_four_threads_logging_on_one_monitor_keep_the_file_loadable(tmp_path: Path) -> None:
    """The report's case: concurrent log() calls wrote duplicate generations."""
    path = tmp_path / "loop.jsonl"
    monitor = sg.CollapseMonitor(path, window=3)
    start, logged = threading.Barrier(4), []

    def worker(seed: int) -> None:
        start.wait()
        for step in range(12):
            with contextlib.suppress(sg.InvalidInputError):  # lost the race for a generation
                logged.append(monitor.log(monitor.next_generation, {"x": seed + step * 0.1}))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monitor.close()
    records = sg.CollapseMonitor(path).records
    assert [r["generation"] for r in records] == list(range(len(logged)))
    assert logged and records == [json.loads(json.dumps(r)) for r in monitor.records]


def test_a_non_utf8_monitor_file_names_the_file_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "loop.jsonl"
    data = b'{"generation": 0, "metrics": {}}\n{"generation": 1, "\xff"}\n'
    path.write_bytes(data)
    where = rf"loop\.jsonl: byte {data.index(0xFF)} \(b'\\xff'\) is not UTF-8"
    with pytest.raises(sg.CorruptFileError, match=where):
        sg.CollapseMonitor(path)
    sg.CollapseMonitor(tmp_path / "other.jsonl").close()  # the refused one released its lock
    path.write_text('{"generation": 0, "metrics": {}}\n')
    assert sg.CollapseMonitor(path).next_generation == 1


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.text(max_size=5), st.none(), st.booleans(), st.lists(st.floats(), min_size=2),
        st.dictionaries(st.text(max_size=2), st.integers(), min_size=1), st.binary(max_size=3),
    ),
    st.text(min_size=1, max_size=8),
)  # fmt: skip
def test_a_metric_that_is_not_a_number_is_named(tmp_path: Path, value: Any, name: str) -> None:
    path = tmp_path / f"{uuid.uuid4().hex}.jsonl"
    with sg.CollapseMonitor(path) as monitor:
        monitor.log(0, {"ok": 1.0})
        with pytest.raises(sg.InvalidInputError) as info:
            monitor.log(1, {"ok": 0.5, name: value})
        assert repr(name) in str(info.value) and "must be a number" in str(info.value)
        assert monitor.next_generation == 1  # nothing recorded
        with pytest.raises(sg.InvalidInputError, match="JSON-serialisable"):
            monitor.log(1, {"ok": 0.5}, extra={"when": object()})
        monitor.log(1, {"ok": 0.5, "n": 3})  # ints, and numpy scalars, are numbers
    assert len(path.read_text().splitlines()) == 2


# -- 6. command-line outputs that are inputs ------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, digits_encoder: Any) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-files")
    digits = load_digits("test")
    reference = root / "r.sgref"
    digits_reference(digits, digits_encoder, 270).save(reference)
    batch = sg.PairBatch(digits.images[300:340], digits.captions[300:340], ids=digits.ids[300:340])
    write_pairs(_encoded(batch), root / "s.tar", "webdataset")
    return {"root": root, "reference": reference, "shard": root / "s.tar"}


def _encoded(batch: sg.PairBatch) -> sg.PairBatch:
    import io

    images = []
    for image in batch.images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return sg.PairBatch(images, batch.captions, ids=batch.ids)


def _refused(argv: list[str], capsys: Any, fragment: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and err.count("\n") == 1, err


def test_check_never_writes_over_its_reference_or_input(
    files: dict[str, Path], capsys: Any
) -> None:
    """The report's cases: --out r.sgref replaced the reference; s.tar was shrunk."""
    reference, shard, root = files["reference"], files["shard"], files["root"]
    before = {p: p.read_bytes() for p in (reference, shard)}
    base = ["check", "--reference", str(reference), "--input", str(shard)]
    _refused([*base, "--out", str(reference)], capsys, "--out must not be the input --reference")
    _refused([*base, "--write-accepted", str(shard)], capsys, "must not be the input --input")
    (root / "link.html").unlink(missing_ok=True)
    (root / "link.html").symlink_to(reference)
    _refused([*base, "--html", str(root / "link.html")], capsys, "same file")
    (root / "hard.json").unlink(missing_ok=True)
    os.link(shard, root / "hard.json")  # a hard link: same inode, different path
    _refused([*base, "--out", str(root / "hard.json")], capsys, "--out must not be the input")
    _refused([*base, "--write-accepted", str(root)], capsys, "must not contain the input")
    _refused([*base, "--out", str(root / "a.json"), "--html", str(root / "a.json")], capsys,
             "--html and --out name the same file")  # fmt: skip
    assert {p: p.read_bytes() for p in (reference, shard)} == before
    assert not (root / "a.json").exists()


def test_reference_build_never_writes_over_its_input_or_model(
    files: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
    shard = files["shard"]
    base = ["reference", "build", "--input", str(shard), "--encoder", "bundled:digits"]
    _refused([*base, "--out", str(shard)], capsys, "--out must not be the input --input")
    model = tmp_path / "model"
    model.mkdir()
    argv = ["reference", "build", "--input", str(shard), "--encoder",
            f"openclip:local-dir:{model}", "--out", str(model / "r.sgref")]  # fmt: skip
    _refused(argv, capsys, "must not be the input --encoder")
    assert list(model.iterdir()) == []


def test_the_input_rules_are_cli_options(
    files: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
    """--follow-symlinks, --parquet-image-paths and --max-image-bytes reach read_pairs."""
    import tarfile

    shard = files["shard"]
    secret = tmp_path / "secret.png"
    with tarfile.open(shard) as tar:
        handles = [tar.extractfile(m) for m in tar if m.name.endswith(".png")]
        pngs = [h.read() for h in handles if h is not None]
    secret.write_bytes(pngs[0])
    folder = tmp_path / "data"
    folder.mkdir()
    lines = []
    for i, data in enumerate(pngs[1:30]):
        (folder / f"{i}.png").write_bytes(data)
        lines.append(
            json.dumps({"file": f"{i}.png", "caption": load_digits("test").captions[301 + i]})
        )
    (folder / "innocent.png").symlink_to(secret)
    lines.append(json.dumps({"file": "innocent.png", "caption": "a handwritten digit zero"}))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    base = ["check", "--reference", str(files["reference"]), "--input", str(folder)]
    report, accepted = tmp_path / "r.json", tmp_path / "accepted"
    assert main([*base, "--out", str(report), "--write-accepted", str(accepted)]) in (0, 1)
    decided = json.loads(report.read_text())["samples"]
    assert decided[-1]["reasons"] == ["outside_input"]
    copied = {p.read_bytes() for p in accepted.iterdir()} if accepted.exists() else set()
    assert secret.read_bytes() not in copied
    assert main([*base, "--follow-symlinks", "--out", str(report)]) in (0, 1)
    assert "outside_input" not in json.dumps(json.loads(report.read_text())["samples"][-1])
    assert main([*base, "--max-image-bytes", "64", "--out", str(report)]) == 1
    decided = json.loads(report.read_text())["samples"]
    assert all(s["reasons"] == ["image_too_large"] for s in decided[:-1])
    with pytest.raises(SystemExit) as usage:
        main([*base, "--max-image-bytes", "0"])
    assert usage.value.code == 2 and "positive size" in capsys.readouterr().err
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "strings").mkdir()
    table = pa.table({"image": ["0.png"], "caption": ["a digit"]})
    pq.write_table(table, tmp_path / "strings" / "p.parquet")
    (tmp_path / "strings" / "0.png").write_bytes(pngs[0])
    strings = ["check", "--reference", str(files["reference"]), "--input",
               str(tmp_path / "strings" / "p.parquet")]  # fmt: skip
    _refused(strings, capsys, "--parquet-image-paths")


# -- 7. stale staging files -----------------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _staging(
    folder: Path, target: str, tag: str, *, age: float = 0.0, is_dir: bool = False
) -> Path:
    path = folder / f".{target}.{tag}.tmp"
    if is_dir:
        path.mkdir()
        (path / "0.png").write_bytes(b"x" * 1000)
    else:
        path.write_bytes(b"x" * 1000)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def test_stale_staging_is_removed_and_live_staging_kept(tmp_path: Path) -> None:
    old = STALE_AFTER_S + 60
    dead, mine, other_host = (
        _dead_pid(),
        os.getpid(),
        "0123abcd" if _HOST != "0123abcd" else "fedc4321",
    )
    gone = [
        _staging(tmp_path, "out.tar", f"{_HOST}-{dead}-{uuid.uuid4().hex}"),  # writer died
        _staging(tmp_path, "out.tar", f"{_HOST}-{dead}-{uuid.uuid4().hex}", is_dir=True),
        _staging(tmp_path, "out.tar", f"{_HOST}-{mine}-{uuid.uuid4().hex}", age=old),
        _staging(tmp_path, "out.tar", f"{other_host}-{mine}-{uuid.uuid4().hex}", age=old),
        _staging(tmp_path, "out.tar", uuid.uuid4().hex, age=old),  # the name before pids
    ]
    kept = [
        _staging(tmp_path, "out.tar", f"{_HOST}-{mine}-{uuid.uuid4().hex}"),  # being written
        _staging(tmp_path, "out.tar", f"{other_host}-{dead}-{uuid.uuid4().hex}"),  # not our pids
        _staging(tmp_path, "out.tar", uuid.uuid4().hex),
        _staging(tmp_path, "other.tar", f"{_HOST}-{dead}-{uuid.uuid4().hex}"),  # another file's
        _staging(tmp_path, "out.tar.b", f"{_HOST}-{dead}-{uuid.uuid4().hex}"),  # a longer name
        _staging(tmp_path, "out.tar", "notes", age=old),  # not a staging name
    ]
    (tmp_path / "out.tar.bak").write_text("user file")
    write_pairs(sg.PairBatch([b"\x89PNG"], ["a caption"]), tmp_path / "out.tar", "webdataset")
    assert not any(p.exists() for p in gone)
    assert all(p.exists() for p in kept) and (tmp_path / "out.tar.bak").exists()


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_killed_writer_s_staging_goes_at_the_next_write(tmp_path: Path, kind: str) -> None:
    """The report's case: SIGKILLed writes left tens of MiB of hidden staging forever."""
    target = tmp_path / ("out.tar" if kind == "file" else "out")
    writer = _subprocess(
        """
        import sys, time
        from pathlib import Path
        from synthguard._io import atomic_path, staging_dir
        target = Path(sys.argv[1])
        if sys.argv[2] == "file":
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"x" * 5_000_000)
                print("writing", flush=True)
                time.sleep(120)
        staging = staging_dir(target)
        (staging / "0.png").write_bytes(b"x" * 5_000_000)
        print("writing", flush=True)
        time.sleep(120)
        """,
        str(target), kind,
    )  # fmt: skip
    _kill(writer)
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and f"-{writer.pid}-" in leftovers[0].name
    batch = sg.PairBatch([b"\x89PNG"], ["a caption"])
    write_pairs(batch, target, "webdataset" if kind == "file" else "folder")
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


_NAMES = st.text(alphabet="ab.-_0", min_size=1, max_size=6).filter(lambda n: n not in (".", ".."))


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_NAMES, st.lists(_NAMES, min_size=1, max_size=4))
def test_cleaning_one_target_never_touches_another_s_staging(
    tmp_path: Path, target: str, others: list[str]
) -> None:
    folder = tmp_path / uuid.uuid4().hex
    folder.mkdir()
    dead = f"{_HOST}-999999999-{uuid.uuid4().hex}"  # beyond pid_max: never a live process
    theirs = [_staging(folder, name, dead) for name in set(others) - {target}]
    mine = _staging(folder, target, dead)
    removed = clean_stale(folder / target)
    assert removed == [mine] and all(p.exists() for p in theirs)
    assert re.fullmatch(rf"\.{re.escape(target)}\.[0-9a-f]{{8}}-\d+-[0-9a-f]{{32}}\.tmp", mine.name)


def test_atomic_writes_clean_up_too(tmp_path: Path) -> None:
    stale = _staging(tmp_path, "report.json", f"{_HOST}-{_dead_pid()}-{uuid.uuid4().hex}")
    atomic_write_text(tmp_path / "report.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"] and not stale.exists()
