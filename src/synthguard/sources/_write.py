"""Writers: the same layouts as the readers, atomic (a temporary sibling renamed into place)."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any, Literal

from synthguard._errors import InvalidInputError
from synthguard._io import RefusedImage, SourceFile, atomic_path, read_file, staging_dir
from synthguard.batch import PairBatch
from synthguard.sources._parquet import pyarrow_parquet
from synthguard.sources._read import IMAGE_EXTENSIONS

__all__ = ["SourceKind", "write_pairs"]

SourceKind = Literal["folder", "webdataset", "parquet"]


def write_pairs(batch: PairBatch, dest: str | Path, kind: SourceKind) -> Path:
    """Write ``batch`` to ``dest`` in layout ``kind``, atomically; returns ``dest``.

    Images must be paths or encoded bytes (as :func:`read_pairs` returns them). A path a source
    returned is read under that source's rules again (contained, regular file, size limit).
    A WebDataset ``dest`` ending in ``.tar.gz`` or ``.tgz`` is gzip-compressed.
    """
    target = Path(dest)
    if kind == "folder":
        return _write_folder(batch, target)
    if kind == "webdataset":
        gz = target.name.lower().endswith((".tar.gz", ".tgz"))  # the name says how to read it
        with atomic_path(target) as tmp, tarfile.open(tmp, "w:gz" if gz else "w") as tar:
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
        pyarrow_parquet().write_table(pa.table(columns), tmp)
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
    if isinstance(image, RefusedImage):
        raise InvalidInputError(f"cannot write an image the source refused: {image.detail}")
    if isinstance(image, SourceFile):
        return image.read()
    if isinstance(image, (str, Path)):
        return read_file(image, max_bytes=None, what="image")  # a regular file, never a FIFO
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # a PIL image
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
