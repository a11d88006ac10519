"""The CLI's file rules: how inputs may be read, and outputs that would overwrite an input."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synthguard._errors import InvalidInputError
from synthguard._io import DEFAULT_MAX_IMAGE_BYTES, format_bytes

__all__ = [
    "add_input_options",
    "check_outputs",
    "encoder_inputs",
    "input_options",
    "parse_size",
    "source_inputs",
]

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """``"64MiB"``, ``"64M"``, ``"1g"`` or ``"1048576"`` -> bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(?:i?b)?\s*", text.lower())
    if match is None or int(match[1]) < 1:
        raise argparse.ArgumentTypeError(
            f"must be a positive size in bytes, optionally with K, M or G (binary: 64M = 64 "
            f"MiB); got {text!r}"
        )
    return int(match[1]) * _UNITS[match[2]]


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """The options of :func:`synthguard.sources.read_pairs`, for a command reading ``--input``."""
    parser.add_argument(
        "--follow-symlinks", action="store_true",
        help="read files that symlinks lead to outside the input (default: such a sample is "
        "rejected as outside_input)",
    )  # fmt: skip
    parser.add_argument(
        "--parquet-image-paths", action="store_true",
        help="read strings in a Parquet 'image' column as paths relative to the file's folder "
        "(default: an error)",
    )  # fmt: skip
    parser.add_argument(
        "--max-image-bytes", type=parse_size, default=DEFAULT_MAX_IMAGE_BYTES, metavar="SIZE",
        help="largest encoded image read, e.g. 64M (default "
        f"{format_bytes(DEFAULT_MAX_IMAGE_BYTES)}); larger ones are rejected as image_too_large",
    )  # fmt: skip


def input_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``read_pairs`` from the options of :func:`add_input_options`."""
    return {
        "follow_symlinks": args.follow_symlinks,
        "image_paths": args.parquet_image_paths,
        "max_image_bytes": args.max_image_bytes,
    }


def source_inputs(source: str) -> list[tuple[str, str]]:
    """The files ``--input`` names, for :func:`check_outputs`: each shard of a brace pattern
    (``shards/{000..009}.tar``), else the path itself."""
    from synthguard.sources import expand_braces

    if "{" in source and not os.path.lexists(source):
        return [("--input", name) for name in expand_braces(source)]
    return [("--input", source)]


def encoder_inputs(spec: str | None) -> list[tuple[str, str]]:
    """A local model folder an encoder spec names (an input an output must not overwrite)."""
    if not spec:
        return []
    for prefix in ("openclip:local-dir:", "hf:"):
        if spec.startswith(prefix) and os.path.exists(spec[len(prefix) :]):
            return [("--encoder", spec[len(prefix) :])]
    return []


def check_outputs(
    outputs: Sequence[tuple[str, str | None]], inputs: Sequence[tuple[str, str | None]]
) -> None:
    """Refuse, before any work, an output that would overwrite or bury an input.

    An output must not be the same file as an input (by resolved path, or the same inode: a
    hard link or symlink), lie inside an input folder, or be a folder that contains an input;
    two outputs must differ; the output's folder must exist and be writable.

    Raises:
        InvalidInputError: naming the flag, the path and the input it collides with.
    """
    given = [(flag, value, Path(value).resolve()) for flag, value in inputs if value]
    written: dict[Path, str] = {}
    for flag, value in outputs:
        if not value:
            continue
        path = Path(value).resolve()
        if path in written:
            raise InvalidInputError(f"{flag} and {written[path]} name the same file {value!r}")
        written[path] = flag
        for in_flag, in_value, source in given:
            where = f"the input {in_flag} {in_value!r}"
            if path == source or _same_file(path, source):
                raise InvalidInputError(
                    f"{flag} must not be {where}: {value!r} is the same file, and writing it "
                    "would replace the input"
                )
            if source in path.parents:
                raise InvalidInputError(
                    f"{flag} must not be {where} or inside it: {value!r} lies inside it"
                )
            if path in source.parents:
                raise InvalidInputError(
                    f"{flag} must not contain {where}: {value!r} is a folder above it"
                )
        folder = path.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise InvalidInputError(
                f"{flag}: folder {str(folder)!r} does not exist or is not writable"
            )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False
