"""Read and write image–caption pairs in the layouts pipelines use (the CLI's ``SRC``).

Three layouts, detected from the path:

- **folder**: image files plus ``captions.jsonl`` (one ``{"file", "caption", "label"?, "id"?}``
  object per line) or ``captions.csv`` (header ``file,caption[,label][,id]``);
- **WebDataset** ``.tar`` shards in the img2dataset layout: per key an image (``.jpg``,
  ``.jpeg``, ``.png``, ``.webp``) and a ``.txt`` caption or a ``.json`` with ``"caption"``
  (and optionally ``"label"``); a ``.cls`` file holds a label. A folder of ``.tar`` files is
  read shard by shard;
- **Parquet** (``.parquet``, needs ``pyarrow``: ``pip install 'synthguard[parquet]'``): a
  ``caption`` column and an ``image`` column of bytes (or ``{"bytes", "path"}`` structs) or a
  ``file`` column of paths (relative to the file), optional ``label`` and ``id``. Strings in
  the ``image`` column are paths only with ``image_paths=True``.

Nothing outside the input is read: names that are absolute or contain ``..`` are refused, every
path is resolved and one leading outside the input (a symlink) is a per-sample
``outside_input`` reject unless ``follow_symlinks=True``; only regular files are opened (never
a FIFO or a device), and at most ``max_image_bytes`` per image (a larger one is an
``image_too_large`` reject). Writers produce the same layout and are atomic (a temporary
sibling renamed into place).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthguard._errors import InvalidInputError
from synthguard._io import DEFAULT_MAX_IMAGE_BYTES, RefusedImage, SourceFile
from synthguard._validation import check_int
from synthguard.batch import PairBatch
from synthguard.sources._parquet import read_parquet
from synthguard.sources._read import ReadOptions, read_folder, read_tars
from synthguard.sources._write import SourceKind, write_pairs

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "RefusedImage",
    "SourceFile",
    "SourceKind",
    "detect_kind",
    "read_pairs",
    "write_pairs",
]


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


def read_pairs(
    path: str | Path,
    *,
    follow_symlinks: bool = False,
    image_paths: bool = False,
    max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
) -> PairBatch:
    """Every pair of the source at ``path`` as a :class:`~synthguard.PairBatch`.

    Images are kept as file paths (folders; a ``str`` that carries the source's rules, see
    :class:`~synthguard.sources.SourceFile`) or encoded bytes (shards, Parquet): decoding
    happens in the encoder, where a bad image becomes a per-sample reject.

    Args:
        path: a folder, a ``.tar`` shard or a folder of them, or a ``.parquet`` file.
        follow_symlinks: read files that symlinks lead to outside the input (by default such
            a sample is rejected as ``outside_input``, and a caption file or shard leading
            outside is an error). Symlinks that stay inside are always followed.
        image_paths: Parquet only: read strings in the ``image`` column (and ``{"path"}``
            structs without bytes) as file paths relative to the Parquet file's folder; a path
            that is absolute or leaves the folder is rejected as ``outside_input``. Without
            it, such a string is an error (it could name any file).
        max_image_bytes: the most bytes of one encoded image (file, shard member or Parquet
            cell); a larger one is rejected as ``image_too_large`` without being read.
            ``None`` disables the limit.

    Raises:
        InvalidInputError: the source is malformed or cannot be read; the message names the
            file and entry.
    """
    opts = ReadOptions(
        follow_symlinks=_flag("follow_symlinks", follow_symlinks),
        image_paths=_flag("image_paths", image_paths),
        max_image_bytes=None
        if max_image_bytes is None
        else check_int("max_image_bytes", max_image_bytes, minimum=1),
    )
    reader = {"folder": read_folder, "webdataset": read_tars, "parquet": read_parquet}
    rows = reader[detect_kind(path)](Path(path), opts)
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


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False; got {value!r}")
    return value
