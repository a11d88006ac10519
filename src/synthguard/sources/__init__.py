"""Read and write image–caption pairs in the layouts pipelines use (the CLI's ``SRC``).

Three layouts, detected from the path:

- **folder**: image files plus ``captions.jsonl`` (one ``{"file", "caption", "label"?, "id"?}``
  object per line) or ``captions.csv`` (header ``file,caption[,label][,id]``);
- **WebDataset** shards in the img2dataset layout, ``.tar``, ``.tar.gz`` or ``.tgz``: per key an
  image (``.jpg``, ``.jpeg``, ``.png``, ``.webp``) and a ``.txt`` caption or a ``.json`` with
  ``"caption"`` (and optionally ``"label"``); a ``.cls`` file holds a label. A folder of shards
  is read shard by shard, in name order, and so is a brace pattern (``shards/{000..009}.tar``,
  :func:`expand_braces`). Shards are *streamed*: one member at a time, a sample complete when
  the next key starts (a key's files must be adjacent, as img2dataset writes them);
- **Parquet** (``.parquet``, needs ``pyarrow``: ``pip install 'synthguard[parquet]'``): a
  ``caption`` column and an ``image`` column of bytes (or ``{"bytes", "path"}`` structs) or a
  ``file`` column of paths (relative to the file), optional ``label`` and ``id``. Strings in
  the ``image`` column are paths only with ``image_paths=True``.

:func:`iter_pairs` yields a source in chunks of bounded size (memory: one chunk, never a
shard); :func:`read_pairs` returns all of it as one batch.

Nothing outside the input is read: names that are absolute or contain ``..`` are refused, every
path is resolved and one leading outside the input (a symlink) is a per-sample
``outside_input`` reject unless ``follow_symlinks=True``; only regular files are opened (never
a FIFO or a device), and at most ``max_image_bytes`` per image (a larger one is an
``image_too_large`` reject). Writers produce the same layout and are atomic (a temporary
sibling renamed into place).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synthguard._errors import InvalidInputError
from synthguard._io import DEFAULT_MAX_IMAGE_BYTES, RefusedImage, SourceFile
from synthguard._validation import check_int
from synthguard.batch import PairBatch
from synthguard.sources._braces import expand_braces, has_braces
from synthguard.sources._parquet import iter_parquet
from synthguard.sources._read import ReadOptions, read_folder
from synthguard.sources._tar import is_shard, iter_shards, list_shards
from synthguard.sources._write import SourceKind, write_pairs

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "RefusedImage",
    "SourceFile",
    "SourceKind",
    "detect_kind",
    "expand_braces",
    "iter_pairs",
    "read_pairs",
    "write_pairs",
]


def detect_kind(path: str | Path) -> SourceKind:
    """The layout of ``path`` (see the module docs); a brace pattern is WebDataset shards."""
    text = str(path)
    p = Path(text)
    if has_braces(text) and not p.exists():
        list_shards(text)  # every name a shard, every shard there
        return "webdataset"
    if p.suffix == ".parquet":
        return "parquet"
    if is_shard(text) or (p.is_dir() and any(is_shard(q.name) for q in p.iterdir())):
        return "webdataset"
    if p.is_dir():
        return "folder"
    raise InvalidInputError(
        f"input must be a folder with captions.jsonl/.csv, a .tar/.tar.gz/.tgz shard (a folder "
        f"of them, or a brace pattern such as 'shards/{{000..009}}.tar') or a .parquet file; "
        f"got {text!r}" + ("" if p.exists() else " (it does not exist)")
    )


def iter_pairs(
    path: str | Path,
    *,
    chunk_size: int = 256,
    follow_symlinks: bool = False,
    image_paths: bool = False,
    max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
) -> Iterator[PairBatch]:
    """The pairs of the source at ``path``, as :class:`~synthguard.PairBatch` chunks of at most
    ``chunk_size`` pairs, read as they are needed.

    WebDataset shards are streamed member by member (``.tar.gz`` decoded on the fly), so what
    is held at a time is one chunk: at most ``chunk_size`` images of at most
    ``max_image_bytes`` each, never a shard. A problem found half-way (a damaged shard, a
    sample whose files are not adjacent, a label missing where the others have one) raises
    when it is reached; the chunks already yielded were read correctly. Arguments as for
    :func:`read_pairs`.

    Example:
        >>> import synthguard as sg
        >>> from synthguard.sources import iter_pairs, write_pairs
        >>> import io, tempfile, pathlib
        >>> from PIL import Image
        >>> png = io.BytesIO(); Image.new("RGB", (8, 8)).save(png, format="PNG")
        >>> pairs = sg.PairBatch([png.getvalue()] * 5, [f"caption {i}" for i in range(5)])
        >>> shard = write_pairs(pairs, pathlib.Path(tempfile.mkdtemp()) / "s.tar.gz", "webdataset")
        >>> [len(chunk) for chunk in iter_pairs(shard, chunk_size=2)]
        [2, 2, 1]

    Raises:
        InvalidInputError: the source is malformed or cannot be read; the message names the
            file and entry.
    """
    size = check_int("chunk_size", chunk_size, minimum=1)
    opts = ReadOptions(
        follow_symlinks=_flag("follow_symlinks", follow_symlinks),
        image_paths=_flag("image_paths", image_paths),
        max_image_bytes=None
        if max_image_bytes is None
        else check_int("max_image_bytes", max_image_bytes, minimum=1),
    )
    kind = detect_kind(path)
    if kind == "folder":
        rows: Iterator[dict[str, Any]] = iter(read_folder(Path(path), opts))
    elif kind == "webdataset":
        rows = iter_shards(path, opts)
    else:
        rows = iter_parquet(Path(path), opts, min(size, 65536))
    labelled: bool | None = None
    seen: dict[Any, int] = {}
    chunk: list[dict[str, Any]] = []
    for row in rows:
        has = row.get("label") is not None
        if labelled is None:
            labelled = has
        elif has != labelled:
            raise InvalidInputError(
                f"input {str(path)!r}: labels must be given for every pair or none; pair "
                f"{row['id']!r} has {'one' if has else 'none'} and the pairs before it "
                f"{'do not' if has else 'do'}"
            )
        if row["id"] in seen:  # across chunks too: ids key the report and the written output
            raise InvalidInputError(
                f"input {str(path)!r}: ids must be unique; pair {len(seen)} has the id "
                f"{row['id']!r} of pair {seen[row['id']]}"
            )
        seen[row["id"]] = len(seen)
        chunk.append(row)
        if len(chunk) == size:
            yield _batch(chunk, bool(labelled))
            chunk = []
    if chunk:
        yield _batch(chunk, bool(labelled))
    elif not seen:
        raise InvalidInputError(f"input {str(path)!r} holds no image–caption pairs")


def read_pairs(
    path: str | Path,
    *,
    follow_symlinks: bool = False,
    image_paths: bool = False,
    max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
) -> PairBatch:
    """Every pair of the source at ``path`` as one :class:`~synthguard.PairBatch`.

    Images are kept as file paths (folders; a ``str`` that carries the source's rules, see
    :class:`~synthguard.sources.SourceFile`) or encoded bytes (shards, Parquet): decoding
    happens in the encoder, where a bad image becomes a per-sample reject. The whole source is
    held (images encoded); :func:`iter_pairs` reads it in bounded chunks.

    Args:
        path: a folder, a ``.tar`` / ``.tar.gz`` / ``.tgz`` shard, a folder of them, a brace
            pattern of shards (``"shards/{000..009}.tar"``: quote it in a shell, which would
            otherwise expand it into many arguments), or a ``.parquet`` file.
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
    chunks = list(
        iter_pairs(
            path, chunk_size=1 << 30, follow_symlinks=follow_symlinks, image_paths=image_paths,
            max_image_bytes=max_image_bytes,
        )
    )  # fmt: skip
    return chunks[0]


def _batch(rows: list[dict[str, Any]], labelled: bool) -> PairBatch:
    return PairBatch(
        [r["image"] for r in rows],
        [r["caption"] for r in rows],
        labels=[r["label"] for r in rows] if labelled else None,
        ids=[r["id"] for r in rows],
    )


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False; got {value!r}")
    return value
