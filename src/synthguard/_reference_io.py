"""Reading and writing a :class:`~synthguard.Reference`: one safetensors file, no pickle.

Tensors (statistics, support, calibration scores, cached null distributions) are the file's
tensors; everything else is JSON in its ``__metadata__`` header, including a SHA-256 over every
tensor's name, dtype, shape and bytes, so truncation or bit rot is detected on load instead of
silently changing decisions. The file is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from synthguard._errors import CorruptFileError
from synthguard._io import atomic_write_bytes
from synthguard.concepts import ConceptBank
from synthguard.encoders import EncoderFingerprint
from synthguard.stats import EmbeddingStats

if TYPE_CHECKING:
    from synthguard.reference import Reference

__all__ = ["load_reference", "save_reference"]

FORMAT = "synthguard.reference"
FORMAT_VERSION = 1


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).numpy().tobytes())
    return digest.hexdigest()


def save_reference(ref: Reference, path: Path) -> Path:
    """Serialise ``ref`` to ``path`` atomically; returns ``path``."""
    tensors = {f"stats.{k}": v for k, v in ref.stats.state_dict().items()}
    tensors["support_radii"] = ref.support_radii
    tensors["coverage_radii_sq"] = ref.coverage_radii_sq
    tensors["calibration_badness"] = ref.calibration.badness
    if ref.class_embeddings is not None:
        tensors["class_embeddings"] = ref.class_embeddings
    for key, null in ref._null_cache.items():
        tensors[f"null/{key}"] = null
    banks = []
    for i, bank in enumerate(ref.concept_banks):
        for group, embedding in bank.embeddings.items():
            tensors[f"bank/{i}/{group}"] = embedding
        banks.append({
            "groups": {g: list(c) for g, c in bank.groups.items()},
            "margins": bank.margins,
            "templates": bank.templates if isinstance(bank.templates, str)
            else list(bank.templates),
            "uncertain_rate": bank.uncertain_rate,
            "fingerprint": bank.fingerprint.model_dump(),
        })  # fmt: skip
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fingerprint": None if ref.fingerprint is None else ref.fingerprint.model_dump(),
        "encoder_spec": ref.encoder_spec,
        "k": ref.k,
        "label_names": None if ref.label_names is None else list(ref.label_names),
        "label_templates": list(ref.label_templates),
        "logit_scale": ref.logit_scale,
        "coverage_rows": ref.coverage_rows,
        "cmmd_rows": ref.cmmd_rows,
        "checks": list(ref.calibration.names),
        "skipped": ref.skipped,
        "concept_banks": banks,
        "sha256": _checksum(tensors),
    }
    atomic_write_bytes(path, save_tensors(tensors, metadata={"synthguard": json.dumps(meta)}))
    return path


def load_reference(cls: type[Reference], path: Path) -> Reference:
    """Read and verify a file written by :func:`save_reference`."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CorruptFileError(f"cannot read reference file {str(path)!r}: {exc}") from exc
    meta = _metadata(blob, path)
    try:
        tensors = load_tensors(blob)
    except Exception as exc:  # safetensors raises its own SafetensorError on bad bytes
        raise CorruptFileError(f"reference file {str(path)!r} is corrupt: {exc}") from exc
    if _checksum(tensors) != meta.get("sha256"):
        raise CorruptFileError(
            f"reference file {str(path)!r} failed its checksum: the tensors were altered or "
            "truncated; rebuild it or restore a copy"
        )
    try:
        stats = EmbeddingStats.from_state_dict(
            {k[len("stats.") :]: v for k, v in tensors.items() if k.startswith("stats.")}
        )
        fingerprint = meta["fingerprint"]
        ref = cls(
            stats,
            fingerprint=None if fingerprint is None else EncoderFingerprint(**fingerprint),
            encoder_spec=meta["encoder_spec"],
            k=meta["k"],
            label_names=meta["label_names"],
            label_templates=meta["label_templates"],
            class_embeddings=tensors.get("class_embeddings"),
            logit_scale=meta["logit_scale"],
            coverage_rows=meta["coverage_rows"],
            cmmd_rows=meta["cmmd_rows"],
            skipped=meta["skipped"],
            _precomputed={
                k: v
                for k, v in tensors.items()
                if k in ("support_radii", "coverage_radii_sq", "calibration_badness")
                or k.startswith("null/")
            },
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"reference file {str(path)!r} is inconsistent: {exc}") from exc
    try:
        ref.concept_banks = [
            ConceptBank.from_parts(
                spec["groups"],
                {g: tensors[f"bank/{i}/{g}"] for g in spec["groups"]},
                fingerprint=EncoderFingerprint(**spec["fingerprint"]),
                margins=spec["margins"],
                templates=spec["templates"],
                uncertain_rate=spec["uncertain_rate"],
            )
            for i, spec in enumerate(meta.get("concept_banks", []))
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(
            f"reference file {str(path)!r}: a concept bank is broken: {exc}"
        ) from exc
    if list(ref.calibration.names) != meta["checks"]:
        raise CorruptFileError(f"reference file {str(path)!r}: calibration columns do not match")
    return ref


def _metadata(blob: bytes, path: Path) -> dict[str, Any]:
    """The JSON metadata of a safetensors blob (header: u64 length + JSON)."""
    try:
        (length,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8 : 8 + length])
        meta = json.loads(header["__metadata__"]["synthguard"])
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(
            f"{str(path)!r} is not a synthguard reference file (unreadable header: {exc})"
        ) from exc
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CorruptFileError(
            f"{str(path)!r} is not a synthguard reference of format version {FORMAT_VERSION}: "
            f"format={meta.get('format')!r}, version={meta.get('format_version')!r}"
        )
    return dict(meta)
