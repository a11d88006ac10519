"""The ``.sgref`` file format: a :class:`ReferenceState` as bytes, and back. No pickle.

One safetensors blob: the state's tensors are the file's tensors; its metadata is JSON in the
``__metadata__`` header, with a SHA-256 over every tensor's name, dtype, shape and bytes and
over the metadata itself, so truncation, bit rot or an edited header (``"k": 5 -> 4``) is
detected on load instead of silently changing decisions.

Versions: 3 (current) checksums the metadata too. 2 stores one calibration column per
per-sample check, ``near_duplicate`` included, and names the columns of its cached nulls; its
checksum covers the tensors only (re-save a version-2 file to protect its metadata). Version 1
files are migrated on read: the
``near_duplicate`` column is the ``reference_copy`` one (the same leave-one-out score, which
version 1 shared between the two), and their cached nulls, which lack newer tests' columns,
are dropped (recomputed on first use).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from synthguard._errors import CorruptFileError

__all__ = ["FORMAT", "FORMAT_VERSION", "ReferenceState", "decode", "encode"]

FORMAT = "synthguard.reference"
FORMAT_VERSION = 3
_READABLE = (1, 2, 3)


@dataclass(frozen=True)
class ReferenceState:
    """A reference as plain data: named CPU tensors and JSON-able metadata."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)


def encode(state: ReferenceState) -> bytes:
    """The state as one safetensors blob (current format version, checksummed)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.tensors.items()}
    meta = {**state.meta, "format": FORMAT, "format_version": FORMAT_VERSION}
    meta["sha256"] = _checksum(tensors, meta)
    return save_tensors(tensors, metadata={"synthguard": json.dumps(meta)})


def decode(blob: bytes, source: str = "<bytes>") -> ReferenceState:
    """Verify and read a blob written by :func:`encode` (any readable version).

    Raises:
        CorruptFileError: not a reference, an unknown version, or a failed checksum.
    """
    meta = _metadata(blob, source)
    try:
        tensors = load_tensors(blob)
    except Exception as exc:  # safetensors raises its own SafetensorError on bad bytes
        raise CorruptFileError(f"reference file {source!r} is corrupt: {exc}") from exc
    covered = meta if meta["format_version"] >= 3 else None
    if _checksum(tensors, covered) != meta.get("sha256"):
        what = "tensors or metadata" if covered is not None else "tensors"
        raise CorruptFileError(
            f"reference file {source!r} failed its checksum: the {what} were altered or "
            "truncated; rebuild it or restore a copy"
        )
    if meta["format_version"] == 1:
        tensors, meta = _migrate_v1(tensors, meta, source)
    return ReferenceState(tensors=dict(tensors), meta=meta)


def _checksum(tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> str:
    """SHA-256 of every tensor and, from version 3, of the metadata (canonical JSON, without
    the checksum itself)."""
    digest = hashlib.sha256()
    if meta is not None:
        header = {k: v for k, v in meta.items() if k != "sha256"}
        digest.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).numpy().tobytes())
    return digest.hexdigest()


def _metadata(blob: bytes, source: str) -> dict[str, Any]:
    """The JSON metadata of a safetensors blob (header: u64 length + JSON)."""
    try:
        (length,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8 : 8 + length])
        meta = json.loads(header["__metadata__"]["synthguard"])
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(
            f"{source!r} is not a synthguard reference file (unreadable header: {exc})"
        ) from exc
    if not isinstance(meta, dict):
        raise CorruptFileError(
            f"{source!r} is not a synthguard reference file (its metadata is a "
            f"{type(meta).__name__}, not an object)"
        )
    if meta.get("format") != FORMAT or meta.get("format_version") not in _READABLE:
        raise CorruptFileError(
            f"{source!r} is not a synthguard reference of format version "
            f"{' or '.join(map(str, _READABLE))}: format={meta.get('format')!r}, "
            f"version={meta.get('format_version')!r}"
        )
    return dict(meta)


def _migrate_v1(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], source: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    checks = list(meta.get("checks", []))
    badness = tensors.get("calibration_badness")
    if "reference_copy" not in checks or badness is None or badness.shape[1] != len(checks):
        raise CorruptFileError(f"reference file {source!r}: calibration columns do not match")
    at = checks.index("reference_copy") + 1
    tensors = {k: v for k, v in tensors.items() if not k.startswith("null/")}
    tensors["calibration_badness"] = torch.cat(
        [badness[:, :at], badness[:, at - 1 : at], badness[:, at:]], dim=1
    )
    meta = {**meta, "checks": [*checks[:at], "near_duplicate", *checks[at:]], "format_version": 2}
    return tensors, meta
