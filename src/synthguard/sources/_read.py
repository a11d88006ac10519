"""Readers of a folder with a caption file and of WebDataset shards (Parquet: ``_parquet.py``)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tarfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from synthguard._errors import InvalidInputError
from synthguard._io import (
    DEFAULT_MAX_IMAGE_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_SIDECAR_BYTES,
    RefusedImage,
    SourceFile,
    format_bytes,
    open_regular,
    read_file,
)
from synthguard._reasons import ReasonCode

__all__ = ["IMAGE_EXTENSIONS", "ReadOptions", "label_of", "read_folder", "read_tars", "safe_name"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
#: Shard members a sample is made of; others are skipped unread.
_SIDECARS = (".txt", ".json", ".cls")


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


def _utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{where} is not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r}); "
            "re-save it as UTF-8"
        ) from exc


def _json_object(data: bytes, where: str) -> dict[str, Any]:
    try:
        value = json.loads(_utf8(data, where))
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
    text = _utf8(
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


def read_tars(path: Path, opts: ReadOptions) -> list[dict[str, Any]]:
    folder = path.is_dir()
    shards = sorted(path.glob("*.tar")) if folder else [path]
    root = os.path.realpath(path) if folder else None  # a shard the user named is theirs
    rows = []
    for shard in shards:
        try:
            handle = open_regular(
                shard, what="tar shard", root=root, follow_symlinks=opts.follow_symlinks
            )
            with handle, tarfile.open(fileobj=handle) as tar:
                groups = _members(tar, shard, opts)
        except tarfile.TarError as exc:
            raise InvalidInputError(f"{shard} is not a readable tar shard: {exc}") from exc
        for key, files in groups.items():
            image = next((files[e] for e in IMAGE_EXTENSIONS if e in files), None)
            where = f"{shard}: sample {key!r}"
            meta = _json_object(_data(files[".json"]), f"{where} .json") if ".json" in files else {}
            caption = (
                _utf8(_data(files[".txt"]), f"{where} .txt")
                if ".txt" in files
                else meta.get("caption")
            )
            if image is None and caption is None:
                continue  # neither an image nor a caption: not a sample (e.g. stray files)
            cls = _utf8(_data(files[".cls"]), f"{where} .cls").strip() if ".cls" in files else None
            rows.append({
                "image": image if image is not None else b"",
                "caption": caption,
                "label": label_of(meta.get("label", cls), where),
                "id": f"{shard.name}/{key}" if len(shards) > 1 else key,
            })  # fmt: skip
    return rows


def _data(value: bytes | RefusedImage) -> bytes:
    assert isinstance(value, bytes)  # only images are ever refused
    return value


def _members(
    tar: tarfile.TarFile, shard: Path, opts: ReadOptions
) -> dict[str, dict[str, bytes | RefusedImage]]:
    """Per sample key, per extension: the member's bytes, or why an image was not read.

    Sizes come from the member headers, so a 10 kB shard declaring a 40 GiB (sparse) member is
    refused before anything is allocated; members nobody uses are never read.
    """
    groups: dict[str, dict[str, bytes | RefusedImage]] = defaultdict(dict)
    seen: set[tuple[str, str]] = set()
    for member in tar:
        if member.isdir() and member.name.rstrip("/") in ("", "."):
            continue  # GNU tar's "./" entry (tar -C dir -cf s.tar .)
        safe_name(Path(shard.name), member.name)  # refuses '..' and absolute names
        if member.isdir():
            continue
        name = PurePosixPath(member.name)
        key = str(name.parent / name.name.split(".", 1)[0])
        ext = ("." + name.name.split(".", 1)[1] if "." in name.name else "").lower()
        if (key, ext) in seen:  # a second file for one sample's slot
            raise InvalidInputError(
                f"{shard}: sample {key!r} has two {ext or 'extensionless'} members; which one "
                "is the sample's is ambiguous"
            )
        seen.add((key, ext))
        where = f"{shard}: member {member.name!r}"
        if ext in IMAGE_EXTENSIONS:
            if not member.isfile():  # a symlink, hard link or device: nothing of its own
                groups[key][ext] = RefusedImage(
                    ReasonCode.UNREADABLE_IMAGE, f"{where} is not a regular file (a link?)"
                )
            elif opts.max_image_bytes is not None and member.size > opts.max_image_bytes:
                groups[key][ext] = RefusedImage(
                    ReasonCode.IMAGE_TOO_LARGE,
                    f"{where} has {format_bytes(member.size)}, more than "
                    f"max_image_bytes={format_bytes(opts.max_image_bytes)}",
                )
            else:
                groups[key][ext] = _read_member(tar, member)
        elif ext in _SIDECARS and member.isfile():
            if member.size > MAX_SIDECAR_BYTES:
                raise InvalidInputError(
                    f"{where} has {format_bytes(member.size)}; a caption or metadata member "
                    f"may hold at most {format_bytes(MAX_SIDECAR_BYTES)}"
                )
            groups[key][ext] = _read_member(tar, member)
    return groups


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    return handle.read(member.size) if handle else b""


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
