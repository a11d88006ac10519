"""Read and write image–caption pairs in the layouts pipelines use (the CLI's ``SRC``).

Three layouts, detected from the path:

- **folder**: image files plus ``captions.jsonl`` (one ``{"file", "caption", "label"?, "id"?}``
  object per line) or ``captions.csv`` (header ``file,caption[,label][,id]``);
- **WebDataset** ``.tar`` shards in the img2dataset layout: per key an image (``.jpg``,
  ``.jpeg``, ``.png``, ``.webp``) and a ``.txt`` caption or a ``.json`` with ``"caption"``
  (and optionally ``"label"``); a ``.cls`` file holds a label. A folder of ``.tar`` files is
  read shard by shard;
- **Parquet** (``.parquet``, needs ``pyarrow``: ``pip install 'synthguard[parquet]'``): a
  ``caption`` column and an ``image`` column of bytes or a ``file`` column of paths (relative
  to the file), optional ``label`` and ``id``.

Paths inside a source never escape it: absolute names and ``..`` are refused. Writers produce
the same layout and are atomic (a temporary sibling renamed into place).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import tarfile
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

from synthguard._errors import InvalidInputError
from synthguard._io import atomic_path, staging_dir
from synthguard.batch import PairBatch

__all__ = ["SourceKind", "detect_kind", "read_pairs", "write_pairs"]

SourceKind = Literal["folder", "webdataset", "parquet"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


def detect_kind(path: str | Path) -> SourceKind:
    """The layout of ``path`` (see the module docs)."""
    p = Path(path)
    if p.suffix == ".parquet":
        return "parquet"
    if p.suffix == ".tar" or (p.is_dir() and any(p.glob("*.tar"))):
        return "webdataset"
    if p.is_dir():
        return "folder"
    raise InvalidInputError(
        f"input must be a folder with captions.jsonl/.csv, a .tar shard (or a folder of them) "
        f"or a .parquet file; got {str(p)!r}" + ("" if p.exists() else " (it does not exist)")
    )


def read_pairs(path: str | Path) -> PairBatch:
    """Every pair of the source at ``path`` as a :class:`~synthguard.PairBatch`.

    Images are kept as file paths (folders) or encoded bytes (shards, Parquet): decoding
    happens in the encoder, where a bad image becomes a per-sample reject.
    """
    kind = detect_kind(path)
    reader = {"folder": _read_folder, "webdataset": _read_tars, "parquet": _read_parquet}[kind]
    rows = reader(Path(path))
    if not rows:
        raise InvalidInputError(f"input {str(path)!r} holds no image–caption pairs")
    labels = [r.get("label") for r in rows]
    has = [label is not None for label in labels]
    if any(has) and not all(has):
        missing = has.index(False)
        raise InvalidInputError(
            f"input {str(path)!r}: labels must be given for every pair or none; pair "
            f"{rows[missing]['id']!r} has none"
        )
    return PairBatch(
        [r["image"] for r in rows],
        [r["caption"] for r in rows],
        labels=labels if all(has) else None,
        ids=[r["id"] for r in rows],
    )


def _safe(root: Path, name: str) -> Path:
    """``root / name``, refusing absolute names and ``..`` (no escape from the source)."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise InvalidInputError(
            f"file names must be relative and stay inside {str(root)!r}; got {name!r}"
        )
    return root.joinpath(*pure.parts)


def _utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{where} is not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r}); "
            "re-save it as UTF-8"
        ) from exc


def _text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return _utf8(data, str(path))


def _json_object(data: bytes, where: str) -> dict[str, Any]:
    try:
        value = json.loads(_utf8(data, where))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{where} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where} must be a JSON object; got {type(value).__name__}")
    return value


def _read_folder(root: Path) -> list[dict[str, Any]]:
    jsonl, table = root / "captions.jsonl", root / "captions.csv"
    if jsonl.exists():
        entries = []
        for number, line in enumerate(_text(jsonl).splitlines(), start=1):
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InvalidInputError(f"{jsonl}: line {number} is not JSON: {exc}") from exc
    elif table.exists():
        entries = list(csv.DictReader(io.StringIO(_text(table), newline="")))
    else:
        raise InvalidInputError(f"folder {str(root)!r} needs captions.jsonl or captions.csv")
    rows = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or "file" not in entry or "caption" not in entry:
            raise InvalidInputError(
                f"{root}: entry {number} needs 'file' and 'caption'; got {entry!r}"
            )
        rows.append({
            "image": str(_safe(root, str(entry["file"]))),
            "caption": entry["caption"],
            "label": _label(entry.get("label"), f"{root}: entry {number}"),
            "id": entry.get("id") or str(entry["file"]),
        })  # fmt: skip
    return rows


def _read_tars(path: Path) -> list[dict[str, Any]]:
    shards = sorted(path.glob("*.tar")) if path.is_dir() else [path]
    rows = []
    for shard in shards:
        groups: dict[str, dict[str, bytes]] = defaultdict(dict)
        try:
            with tarfile.open(shard) as tar:
                for member in tar:
                    if member.isdir() and member.name.rstrip("/") in ("", "."):
                        continue  # GNU tar's "./" entry (tar -C dir -cf s.tar .)
                    _safe(Path(shard.name), member.name)  # refuses '..' and absolute names
                    if not member.isfile():
                        continue
                    name = PurePosixPath(member.name)
                    key = str(name.parent / name.name.split(".", 1)[0])
                    ext = "." + name.name.split(".", 1)[1] if "." in name.name else ""
                    if ext.lower() in groups[key]:  # a second file for one sample's slot
                        raise InvalidInputError(
                            f"{shard}: sample {key!r} has two {ext.lower() or 'extensionless'} "
                            "members; which one is the sample's is ambiguous"
                        )
                    handle = tar.extractfile(member)
                    groups[key][ext.lower()] = handle.read() if handle else b""
        except tarfile.TarError as exc:
            raise InvalidInputError(f"{shard} is not a readable tar shard: {exc}") from exc
        for key, files in groups.items():
            image = next((files[e] for e in IMAGE_EXTENSIONS if e in files), None)
            where = f"{shard}: sample {key!r}"
            meta = _json_object(files[".json"], f"{where} .json") if ".json" in files else {}
            caption = (
                _utf8(files[".txt"], f"{where} .txt") if ".txt" in files else meta.get("caption")
            )
            if image is None and caption is None:
                continue  # neither an image nor a caption: not a sample (e.g. stray files)
            label = meta.get("label", files[".cls"].decode().strip() if ".cls" in files else None)
            rows.append({
                "image": image if image is not None else b"",
                "caption": caption,
                "label": _label(label, f"{shard}: sample {key!r}"),
                "id": f"{shard.name}/{key}" if len(shards) > 1 else key,
            })  # fmt: skip
    return rows


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InvalidInputError(
            "reading or writing Parquet needs pyarrow: pip install 'synthguard[parquet]'"
        ) from exc
    return pq


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    pq = _pyarrow()
    try:
        table = pq.read_table(path).to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid / ArrowIOError subclass these
        raise InvalidInputError(f"{path} is not a readable Parquet file: {exc}") from exc
    rows = []
    for number, entry in enumerate(table):
        if "caption" not in entry and "text" in entry:  # Hugging Face datasets' usual name
            entry["caption"] = entry["text"]
        if "caption" not in entry or ("image" not in entry and "file" not in entry):
            raise InvalidInputError(
                f"{path}: needs a 'caption' (or 'text') column and an 'image' (bytes) or 'file' "
                f"column; got {sorted(entry)}"
            )
        image = entry.get("image")
        if isinstance(image, dict):  # datasets' Image feature: {"bytes", "path"}
            image = image.get("bytes") or (
                str(_safe(path.parent, str(image["path"]))) if image.get("path") else None
            )
        if image is None and entry.get("file") is not None:
            image = str(_safe(path.parent, str(entry["file"])))
        rows.append({
            "image": image if image is not None else b"",
            "caption": entry["caption"],
            "label": _label(entry.get("label"), f"{path}: row {number}"),
            "id": entry.get("id") if entry.get("id") is not None else number,
        })  # fmt: skip
    return rows


def _label(value: Any, where: str) -> int | None:
    """A class label as stored (an integer, or an integral number or numeral), or ``None``.

    ``3.7``, ``"2.5"`` or ``true`` are refused, not truncated to a class: a label that is not a
    whole number is a data error the user must see.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None  # a missing value in a numeric column
    if isinstance(value, bool):
        raise InvalidInputError(f"{where}: label must be a class index; got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise InvalidInputError(f"{where}: label must be a class index (a whole number); got {value!r}")


def write_pairs(batch: PairBatch, dest: str | Path, kind: SourceKind) -> Path:
    """Write ``batch`` to ``dest`` in layout ``kind``, atomically; returns ``dest``.

    Images must be paths or encoded bytes (as :func:`read_pairs` returns them).
    """
    target = Path(dest)
    if kind == "folder":
        return _write_folder(batch, target)
    if kind == "webdataset":
        with atomic_path(target) as tmp, tarfile.open(tmp, "w") as tar:
            for i in range(len(batch)):
                key = _key(batch.ids[i], i)
                _add(tar, f"{key}{_suffix(batch.images[i])}", _bytes(batch.images[i]))
                _add(tar, f"{key}.txt", str(batch.captions[i]).encode("utf-8"))
                if batch.labels is not None:
                    _add(tar, f"{key}.cls", str(batch.labels[i]).encode())
        return target
    import pyarrow as pa

    columns: dict[str, list[Any]] = {
        "id": [str(i) for i in batch.ids],
        "image": [_bytes(img) for img in batch.images],
        "caption": list(batch.captions),
    }
    if batch.labels is not None:
        columns["label"] = list(batch.labels)
    with atomic_path(target) as tmp:
        _pyarrow().write_table(pa.table(columns), tmp)
    return target


def _write_folder(batch: PairBatch, target: Path) -> Path:
    if target.exists():
        raise InvalidInputError(f"destination {str(target)!r} exists; choose a new folder")
    staging = staging_dir(target)
    try:
        lines = []
        for i in range(len(batch)):
            name = f"{_key(batch.ids[i], i)}{_suffix(batch.images[i])}"
            (staging / name).write_bytes(_bytes(batch.images[i]))
            entry: dict[str, Any] = {"file": name, "caption": batch.captions[i]}
            entry["id"] = batch.ids[i] if isinstance(batch.ids[i], (str, int)) else str(i)
            if batch.labels is not None:
                entry["label"] = batch.labels[i]
            lines.append(json.dumps(entry))
        (staging / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(staging, target)  # a folder appears whole or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _key(id_: Any, index: int) -> str:
    text = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(id_))
    return f"{index:06d}_{text}"[:120]


def _suffix(image: Any) -> str:
    if isinstance(image, (str, Path)) and Path(image).suffix.lower() in IMAGE_EXTENSIONS:
        return Path(image).suffix.lower()
    if isinstance(image, (bytes, bytearray)):
        head = bytes(image[:12])
        if head.startswith(b"\x89PNG"):
            return ".png"
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return ".webp"
        return ".jpg"
    return ".png"  # a decoded image is written as PNG (lossless)


def _bytes(image: Any) -> bytes:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # a PIL image
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
