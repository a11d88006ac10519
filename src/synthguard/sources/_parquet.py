"""The Parquet layout: reading rows (images as bytes, structs or contained paths) and writing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from synthguard._errors import InvalidInputError
from synthguard._io import RefusedImage, SourceFile, format_bytes, open_regular
from synthguard._reasons import ReasonCode
from synthguard.sources._read import ReadOptions, label_of

__all__ = ["iter_parquet", "pyarrow_parquet"]


def pyarrow_parquet() -> Any:
    """``pyarrow.parquet``, or an error saying how to install it."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InvalidInputError(
            "reading or writing Parquet needs pyarrow: pip install 'synthguard[parquet]'"
        ) from exc
    return pq


def iter_parquet(path: Path, opts: ReadOptions, batch_rows: int) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet file, ``batch_rows`` at a time from pyarrow (see
    :func:`~synthguard.sources.read_pairs`)."""
    pq = pyarrow_parquet()
    paths = _Paths(path, opts)
    number = 0
    try:
        with open_regular(path, what="Parquet file") as handle:
            for record_batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows):
                for entry in record_batch.to_pylist():
                    yield _row(entry, f"{path}: row {number}", number, path, paths, opts)
                    number += 1
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid / ArrowIOError subclass these
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"{path} is not a readable Parquet file: {exc}") from exc


def _row(
    entry: dict[str, Any], where: str, number: int, path: Path, paths: _Paths, opts: ReadOptions
) -> dict[str, Any]:
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
            paths.opt_in(str(image["path"]), where, "the image struct's 'path' (no bytes)")
            if image.get("path")
            else None
        )
    elif isinstance(image, str):
        image = paths.opt_in(image, where, "the 'image' column")
    if image is None and entry.get("file") is not None:
        image = paths.contained(str(entry["file"]), where)  # the documented path column
    limit = opts.max_image_bytes
    if isinstance(image, (bytes, bytearray)) and limit is not None and len(image) > limit:
        image = RefusedImage(
            ReasonCode.IMAGE_TOO_LARGE,
            f"{where}: the image has {format_bytes(len(image))}, more than "
            f"max_image_bytes={format_bytes(limit)}",
        )
    return {
        "image": image if image is not None else b"",
        "caption": entry["caption"],
        "label": label_of(entry.get("label"), where),
        "id": entry.get("id") if entry.get("id") is not None else number,
    }


class _Paths:
    """Path values of one Parquet file: relative to its folder, and contained in it."""

    def __init__(self, path: Path, opts: ReadOptions) -> None:
        self.path, self.folder, self.opts = path, path.parent, opts
        self.root = os.path.realpath(self.folder)

    def opt_in(self, value: str, where: str, what: str) -> SourceFile | RefusedImage:
        """A string standing for an image: a path only if the user said so."""
        if not self.opts.image_paths:
            raise InvalidInputError(
                f"{where}: {what} holds a string ({value[:80]!r}), not image bytes; strings are "
                "read as file paths (relative to the Parquet file's folder, which they must "
                "stay inside) only with image_paths=True (CLI: --parquet-image-paths)"
            )
        return self.contained(value, where)

    def contained(self, value: str, where: str) -> SourceFile | RefusedImage:
        """``value`` relative to the file's folder; an escape is this row's reject."""
        pure = PurePosixPath(value.replace("\\", "/"))
        if not pure.parts:
            return RefusedImage(ReasonCode.UNREADABLE_IMAGE, f"{where}: the image path is empty")
        if pure.is_absolute() or ".." in pure.parts:
            return RefusedImage(
                ReasonCode.OUTSIDE_INPUT,
                f"{where}: image path {value!r} is absolute or contains '..'; paths are "
                f"relative to {str(self.folder)!r} and must stay inside it",
            )
        return SourceFile(
            self.folder.joinpath(*pure.parts), self.root, self.opts.follow_symlinks,
            self.opts.max_image_bytes,
        )  # fmt: skip
