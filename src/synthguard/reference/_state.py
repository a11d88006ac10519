"""A reference as a plain :class:`ReferenceState`, and back: the layout of its parts.

``_reference.py`` builds and describes a :class:`~synthguard.Reference`; this module alone
knows how one is laid out as named tensors and JSON metadata (concept banks included), and
checks a state read back before a reference is made from it, so a cut or edited file fails
naming the part rather than at check time. ``_codec.py`` turns the state into bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import torch

from synthguard._errors import CorruptFileError, InvalidInputError
from synthguard.checks import NULL_DESIGN, RESAMPLED_TESTS, SampleCalibration
from synthguard.concepts import ConceptBank
from synthguard.encoders import EncoderFingerprint
from synthguard.reference._codec import ReferenceState
from synthguard.stats import EmbeddingStats

__all__ = ["bank_from_spec", "bank_spec", "reference_from_state", "state_of"]


class _ReferenceLike(Protocol):
    """What :func:`state_of` reads of a :class:`~synthguard.Reference`; the concept banks are
    what :func:`reference_from_state` sets on the reference it makes."""

    concept_banks: list[ConceptBank]

    @property
    def stats(self) -> EmbeddingStats: ...
    @property
    def fingerprint(self) -> EncoderFingerprint | None: ...
    @property
    def encoder_spec(self) -> str | None: ...
    @property
    def k(self) -> int: ...
    @property
    def label_names(self) -> tuple[str, ...] | None: ...
    @property
    def label_templates(self) -> tuple[str, ...]: ...
    @property
    def class_embeddings(self) -> torch.Tensor | None: ...
    @property
    def logit_scale(self) -> float | None: ...
    @property
    def coverage_rows(self) -> int: ...
    @property
    def cmmd_rows(self) -> int: ...
    @property
    def skipped(self) -> dict[str, int]: ...
    @property
    def support_caption_tokens(self) -> torch.Tensor | None: ...
    @property
    def support_radii(self) -> torch.Tensor: ...
    @property
    def coverage_radii_sq(self) -> torch.Tensor: ...
    @property
    def calibration(self) -> SampleCalibration: ...


_R = TypeVar("_R", bound=_ReferenceLike)


def state_of(ref: _ReferenceLike, nulls: dict[str, torch.Tensor]) -> ReferenceState:
    """``ref`` as plain tensors and metadata, with ``nulls`` (its cached nulls, by key)."""
    tensors = {f"stats.{k}": v for k, v in ref.stats.state_dict().items()}
    tensors["support_radii"] = ref.support_radii
    tensors["coverage_radii_sq"] = ref.coverage_radii_sq
    tensors["calibration_badness"] = ref.calibration.badness
    if ref.support_caption_tokens is not None:
        tensors["support_caption_tokens"] = ref.support_caption_tokens
    if ref.class_embeddings is not None:
        tensors["class_embeddings"] = ref.class_embeddings
    tensors.update({f"null/{k}": v for k, v in nulls.items()})
    banks = []
    for i, bank in enumerate(ref.concept_banks):
        tensors.update({f"bank/{i}/{g}": e for g, e in bank.embeddings.items()})
        banks.append(bank_spec(bank))
    meta = {
        "fingerprint": None if ref.fingerprint is None else ref.fingerprint.model_dump(),
        "encoder_spec": ref.encoder_spec,
        "k": ref.k,
        "label_names": None if ref.label_names is None else list(ref.label_names),
        "label_templates": list(ref.label_templates),
        "logit_scale": ref.logit_scale,
        "coverage_rows": ref.coverage_rows,
        "cmmd_rows": ref.cmmd_rows,
        "checks": list(ref.calibration.names),
        "null_columns": list(RESAMPLED_TESTS),
        "null_design": NULL_DESIGN,
        "skipped": ref.skipped,
        "concept_banks": banks,
    }
    return ReferenceState(tensors=tensors, meta=meta)


def reference_from_state(make: Callable[..., _R], state: ReferenceState, source: str) -> _R:
    """The reference ``make`` (the class's constructor) builds from ``state``; ``source``
    names the state in errors.

    Raises:
        CorruptFileError: the state is inconsistent (missing or misshapen parts).
    """
    meta, tensors = state.meta, state.tensors
    if not isinstance(meta, dict) or not isinstance(tensors, dict):
        raise CorruptFileError(
            f"reference file {source!r} is inconsistent: metadata and tensors must be "
            f"mappings; got {type(meta).__name__} and {type(tensors).__name__}"
        )
    # Nulls of another test set (an older synthguard) are recomputed, not misread.
    nulls_fit = (
        meta.get("null_columns") == list(RESAMPLED_TESTS) and meta.get("null_design") == NULL_DESIGN
    )
    keep = ("support_radii", "coverage_radii_sq", "calibration_badness")
    try:
        stats = EmbeddingStats.from_state_dict(
            {k[len("stats.") :]: v for k, v in tensors.items() if k.startswith("stats.")}
        )
        _check_shapes(tensors, meta, stats, nulls_fit)
        fingerprint = meta["fingerprint"]
        ref = make(
            stats,
            fingerprint=None if fingerprint is None else EncoderFingerprint(**fingerprint),
            encoder_spec=meta.get("encoder_spec"),
            k=meta["k"],
            label_names=meta["label_names"],
            label_templates=meta["label_templates"],
            class_embeddings=tensors.get("class_embeddings"),
            logit_scale=meta["logit_scale"],
            coverage_rows=meta["coverage_rows"],
            cmmd_rows=meta["cmmd_rows"],
            skipped=meta.get("skipped", {}),
            support_caption_tokens=tensors.get("support_caption_tokens"),
            _precomputed_checks=meta["checks"],
            _precomputed={
                k: v
                for k, v in tensors.items()
                if k in keep or (nulls_fit and k.startswith("null/"))
            },
        )
        ref.concept_banks = [
            bank_from_spec(spec, tensors, i) for i, spec in enumerate(meta.get("concept_banks", []))
        ]
    except (KeyError, TypeError, ValueError, InvalidInputError) as exc:
        raise CorruptFileError(f"reference file {source!r} is inconsistent: {exc}") from exc
    return ref


def _check_shapes(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], stats: EmbeddingStats, nulls: bool
) -> None:
    """Every stored tensor has the shape and dtype its metadata implies (a cut or edited file
    fails here, naming the tensor, not with an IndexError at check time)."""
    s, dim = int(stats.sample("image").shape[0]), stats.dim
    names = meta["label_names"]
    expected: dict[str, tuple[int, ...]] = {
        "support_radii": (s,),
        "coverage_radii_sq": (min(int(meta["coverage_rows"]), s),),
        "calibration_badness": (s, len(meta["checks"])),
        "support_caption_tokens": (s,),
    }
    if names is not None:
        expected["class_embeddings"] = (len(names), dim)
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() and not name.startswith("stats."):
            raise ValueError(f"tensor {name!r} must be floating point; got {tensor.dtype}")
        if tensor.dtype in (torch.bfloat16, torch.float16) and not name.startswith("stats."):
            raise ValueError(f"tensor {name!r} must be float32 or float64; got {tensor.dtype}")
        shape = tuple(tensor.shape)
        if name in expected and shape != expected[name]:
            raise ValueError(f"tensor {name!r} must have shape {expected[name]}; got {shape}")
        if (
            nulls
            and name.startswith("null/")
            and (tensor.ndim != 2 or shape[1] != len(RESAMPLED_TESTS))
        ):
            raise ValueError(
                f"tensor {name!r} must have {len(RESAMPLED_TESTS)} columns; got shape {shape}"
            )
    k = int(meta["k"])
    if not 1 <= k <= s - 2:
        raise ValueError(f"k must be between 1 and {s - 2} for a {s}-row support; got {k}")


def bank_spec(bank: ConceptBank) -> dict[str, Any]:
    """A concept bank's JSON metadata in a reference file (its embeddings are tensors)."""
    templates = bank.templates
    return {
        "groups": {g: list(c) for g, c in bank.groups.items()},
        "margins": bank.margins,
        "templates": templates if isinstance(templates, str) else list(templates),
        "uncertain_rate": bank.uncertain_rate,
        "fingerprint": None if bank.fingerprint is None else bank.fingerprint.model_dump(),
    }


def bank_from_spec(spec: dict[str, Any], tensors: dict[str, torch.Tensor], i: int) -> ConceptBank:
    """The ``i``-th concept bank of a reference file."""
    return ConceptBank.from_parts(
        spec["groups"],
        {g: tensors[f"bank/{i}/{g}"] for g in spec["groups"]},
        fingerprint=None
        if spec["fingerprint"] is None
        else EncoderFingerprint(**spec["fingerprint"]),
        margins=spec["margins"],
        templates=spec["templates"],
        uncertain_rate=spec["uncertain_rate"],
    )
