"""The folder reader and the rules every reader shares (shards: ``_tar.py``, Parquet:
``_parquet.py``)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from synthguard._errors import InvalidInputError
from synthguard._io import (
    DEFAULT_MAX_IMAGE_BYTES,
    MAX_MANIFEST_BYTES,
    SourceFile,
    read_file,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ReadOptions",
    "json_object",
    "label_of",
    "read_folder",
    "safe_name",
    "utf8",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class ReadOptions:
    """How a source may be read (the keyword arguments of :func:`read_pairs`)."""

    follow_symlinks: bool = False
    image_paths: bool = False
    max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES


def safe_name(root: Path, name: str) -> Path:
    """``root / name``, refusing absolute names and ``..`` (no escape from the source)."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise InvalidInputError(
            f"file names must be relative and stay inside {str(root)!r}; got {name!r}"
        )
    return root.joinpath(*pure.parts)


def utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{where} is not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r}); "
            "re-save it as UTF-8"
        ) from exc


def json_object(data: bytes, where: str) -> dict[str, Any]:
    try:
        value = json.loads(utf8(data, where))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{where} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where} must be a JSON object; got {type(value).__name__}")
    return value


def read_folder(root: Path, opts: ReadOptions) -> list[dict[str, Any]]:
    real_root = os.path.realpath(root)
    jsonl, table = root / "captions.jsonl", root / "captions.csv"
    found = next((p for p in (jsonl, table) if os.path.lexists(p)), None)
    if found is None:
        raise InvalidInputError(f"folder {str(root)!r} needs captions.jsonl or captions.csv")
    # The caption file is contained like the images: a symlink to another folder's captions
    # would make this source read (and judge) files the user never named.
    text = utf8(
        read_file(
            found, max_bytes=MAX_MANIFEST_BYTES, what="caption file", root=real_root,
            follow_symlinks=opts.follow_symlinks,
        ),
        str(found),
    )  # fmt: skip
    if found == jsonl:
        entries = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InvalidInputError(f"{jsonl}: line {number} is not JSON: {exc}") from exc
    else:
        entries = list(csv.DictReader(io.StringIO(text, newline="")))
    rows = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or "file" not in entry or "caption" not in entry:
            raise InvalidInputError(
                f"{root}: entry {number} needs 'file' and 'caption'; got {entry!r}"
            )
        image = SourceFile(
            safe_name(root, str(entry["file"])), real_root, opts.follow_symlinks,
            opts.max_image_bytes,
        )  # fmt: skip
        rows.append({
            "image": image,
            "caption": entry["caption"],
            "label": label_of(entry.get("label"), f"{root}: entry {number}"),
            "id": entry.get("id") or str(entry["file"]),
        })  # fmt: skip
    return rows


def label_of(value: Any, where: str) -> int | None:
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
