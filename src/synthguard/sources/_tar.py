"""WebDataset shards, streamed: ``.tar``, ``.tar.gz`` / ``.tgz``, one member at a time.

A shard is read front to back in tarfile's stream mode (``r|*``: no seeking, gzip decoded on
the fly), and a sample's members are grouped *as they arrive*: the WebDataset convention
(img2dataset, webdataset's writers, ``tar --sort=name``) keeps a key's files adjacent, so a
sample is complete when the next key starts. Memory is one sample's members plus what the
caller keeps (:func:`~synthguard.sources.iter_pairs` emits bounded chunks), never a shard.

A key that comes back after other keys (``tar cf s.tar *.jpg *.txt``) is refused, naming the
key and the member: grouping it would mean holding the shard, and splitting it would make two
half-samples. Everything else keeps the rules of the whole-file reader it replaced: member
names that are absolute or hold ``..`` are refused, links and oversized images become
per-sample rejects from the header alone (never read), a second member for one slot is refused,
and a shard that ends in a damaged header or has data after its end marker is refused instead
of being read as if it ended there.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from synthguard._errors import InvalidInputError
from synthguard._io import MAX_SIDECAR_BYTES, RefusedImage, format_bytes, open_regular
from synthguard._reasons import ReasonCode
from synthguard.sources._braces import expand_braces, has_braces
from synthguard.sources._read import (
    IMAGE_EXTENSIONS,
    ReadOptions,
    json_object,
    label_of,
    safe_name,
    utf8,
)

__all__ = ["SHARD_SUFFIXES", "is_shard", "iter_shards", "list_shards"]

#: File names read as WebDataset shards.
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
#: Shard members a sample is made of; others are skipped unread.
_SIDECARS = (".txt", ".json", ".cls")
_BLOCK = 64 * 1024
#: How tarfile stops reading headers (its own, undocumented exception classes): damage...
_DAMAGED = (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError)  # type: ignore[attr-defined]
#: ...or the end-of-archive marker (a block of zeros).
_END = tarfile.EOFHeaderError  # type: ignore[attr-defined]


def is_shard(path: str | Path) -> bool:
    """Whether ``path`` names a shard (``.tar``, ``.tar.gz``, ``.tgz``)."""
    return str(path).lower().endswith(SHARD_SUFFIXES)


def list_shards(path: str | Path) -> tuple[list[Path], str | None]:
    """The shards ``path`` names and the folder they must stay inside (``None``: named by the
    user): a shard, a folder of shards (sorted by name), or a brace pattern."""
    text = str(path)
    if has_braces(text) and not os.path.lexists(text):
        names = expand_braces(text)
        odd = [n for n in names if not is_shard(n)]
        if odd:
            raise InvalidInputError(
                f"input pattern {text!r} must expand to .tar, .tar.gz or .tgz shards; "
                f"{odd[0]!r} is not one"
            )
        missing = [n for n in names if not os.path.lexists(n)]
        if missing:
            raise InvalidInputError(
                f"input pattern {text!r} names {len(names)} shards and {len(missing)} do not "
                f"exist, e.g. {missing[0]!r}"
            )
        return [Path(n) for n in names], None  # the user named each of them
    p = Path(text)
    if p.is_dir():
        shards = sorted(q for q in p.iterdir() if is_shard(q.name))
        return shards, os.path.realpath(p)
    return [p], None


def iter_shards(path: str | Path, opts: ReadOptions) -> Iterator[dict[str, Any]]:
    """Every sample of the shards ``path`` names, one row at a time (see the module docs)."""
    shards, root = list_shards(path)
    names = [s.name for s in shards]
    unique = len(set(names)) == len(names)
    for shard in shards:
        # Ids stay unique across shards: the file name, or the path when names repeat.
        prefix = "" if len(shards) == 1 else f"{shard.name if unique else shard}/"
        yield from _shard_rows(shard, opts, root, prefix)


def _shard_rows(
    shard: Path, opts: ReadOptions, root: str | None, prefix: str
) -> Iterator[dict[str, Any]]:
    stops: list[Exception] = []
    handle = open_regular(shard, what="tar shard", root=root, follow_symlinks=opts.follow_symlinks)
    try:
        with handle, tarfile.open(fileobj=handle, mode="r|*", tarinfo=_watched(stops)) as tar:
            key: str | None = None
            files: dict[str, bytes | RefusedImage] = {}
            done: set[str] = set()
            while (member := tar.next()) is not None:
                # Stream mode keeps every header read (one per member: a leak on big shards).
                del tar.members[:]  # type: ignore[attr-defined]
                if member.isdir() and member.name.rstrip("/") in ("", "."):
                    continue  # GNU tar's "./" entry (tar -C dir -cf s.tar .)
                safe_name(Path(shard.name), member.name)  # refuses '..' and absolute names
                if member.isdir():
                    continue
                name = PurePosixPath(member.name)
                this = str(name.parent / name.name.split(".", 1)[0])
                ext = ("." + name.name.split(".", 1)[1] if "." in name.name else "").lower()
                if this != key:
                    if key is not None:
                        done.add(key)
                        row = _row(shard, key, files, prefix)
                        if row is not None:
                            yield row
                    if this in done:
                        raise InvalidInputError(
                            f"{shard}: member {member.name!r} belongs to sample {this!r}, whose "
                            "other members came earlier, apart from it; a shard keeps each "
                            "sample's files together (re-create it sorted: tar --sort=name)"
                        )
                    key, files = this, {}
                if ext in files:  # a second file for one sample's slot
                    raise InvalidInputError(
                        f"{shard}: sample {this!r} has two {ext or 'extensionless'} members; "
                        "which one is the sample's is ambiguous"
                    )
                value = _member(tar, member, ext, f"{shard}: member {member.name!r}", opts)
                if value is not None:
                    files[ext] = value
            _check_end(shard, tar, stops)
            if key is not None:
                row = _row(shard, key, files, prefix)
                if row is not None:
                    yield row
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        raise InvalidInputError(f"{shard} is not a readable tar shard: {exc}") from exc


def _member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, ext: str, where: str, opts: ReadOptions
) -> bytes | RefusedImage | None:
    """The member's bytes, why an image was not read, or ``None`` (not part of a sample).

    Sizes come from the header, so a small shard declaring a 40 GiB (sparse) member is refused
    before anything is allocated; members nobody uses are skipped unread.
    """
    if ext in IMAGE_EXTENSIONS:
        if not member.isfile():  # a symlink, hard link or device: nothing of its own
            return RefusedImage(
                ReasonCode.UNREADABLE_IMAGE, f"{where} is not a regular file (a link?)"
            )
        limit = opts.max_image_bytes
        if limit is not None and member.size > limit:
            return RefusedImage(
                ReasonCode.IMAGE_TOO_LARGE,
                f"{where} has {format_bytes(member.size)}, more than "
                f"max_image_bytes={format_bytes(limit)}",
            )
        return _read(tar, member)
    if ext in _SIDECARS and member.isfile():
        if member.size > MAX_SIDECAR_BYTES:
            raise InvalidInputError(
                f"{where} has {format_bytes(member.size)}; a caption or metadata member may "
                f"hold at most {format_bytes(MAX_SIDECAR_BYTES)}"
            )
        return _read(tar, member)
    return None


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    return handle.read(member.size) if handle else b""


def _row(
    shard: Path, key: str, files: dict[str, bytes | RefusedImage], prefix: str
) -> dict[str, Any] | None:
    """One sample from its members; ``None`` for stray files with neither image nor caption."""
    image = next((files[e] for e in IMAGE_EXTENSIONS if e in files), None)
    where = f"{shard}: sample {key!r}"
    meta = json_object(_data(files[".json"]), f"{where} .json") if ".json" in files else {}
    caption = (
        utf8(_data(files[".txt"]), f"{where} .txt") if ".txt" in files else meta.get("caption")
    )
    if image is None and caption is None:
        return None
    cls = utf8(_data(files[".cls"]), f"{where} .cls").strip() if ".cls" in files else None
    return {
        "image": image if image is not None else b"",
        "caption": caption,
        "label": label_of(meta.get("label", cls), where),
        "id": f"{prefix}{key}",
    }


def _data(value: bytes | RefusedImage) -> bytes:
    assert isinstance(value, bytes)  # only images are ever refused
    return value


def _watched(stops: list[Exception]) -> type[tarfile.TarInfo]:
    """A TarInfo that records why tarfile stopped reading headers.

    tarfile ends an archive silently at a damaged or truncated header after the first one; the
    samples behind it would vanish without a word. The recorded reason tells the end marker
    (zero blocks, or the end of the file) from damage.
    """

    class Watched(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, archive: tarfile.TarFile) -> Any:
            try:
                return super().fromtarfile(archive)
            except tarfile.HeaderError as exc:
                stops.append(exc)
                raise

    return Watched


def _check_end(shard: Path, tar: tarfile.TarFile, stops: list[Exception]) -> None:
    """Refuse a shard whose headers ended in damage, or that has data after its end marker."""
    stop = stops[-1] if stops else None
    if isinstance(stop, _DAMAGED):
        raise InvalidInputError(
            f"{shard} is damaged: a tar header at byte {tar.offset} is unreadable ({stop}); "
            "the members after it cannot be read"
        )
    if isinstance(stop, _END):  # a zero block: the rest must be zeros too
        stream = tar.fileobj
        assert stream is not None
        while block := stream.read(_BLOCK):
            if block.count(0) != len(block):
                raise InvalidInputError(
                    f"{shard} has data after its end-of-archive marker (byte {tar.offset}): "
                    "two archives concatenated, or a damaged one; re-create the shard"
                )
