"""The ``Encoder`` protocol, the encoder fingerprint and paired embeddings."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict, Field

from synthguard._errors import InvalidInputError
from synthguard._reasons import ReasonCode
from synthguard.batch import PairBatch
from synthguard.encoders._images import source_refusal

__all__ = [
    "Encoder",
    "EncoderFingerprint",
    "Failure",
    "OnError",
    "PairEmbeddings",
    "check_caption",
    "embed_pairs",
]

OnError = Literal["raise", "nan"]
Failure = tuple[ReasonCode, str]


class EncoderFingerprint(BaseModel):
    """What makes two sets of embeddings comparable: the model, and the numerics it ran at.

    ``digest`` hashes the model id, weights, preprocessing and embedding dimension: *the same
    model and preprocessing*. ``precision`` (the numerics: ``"fp32"``, ``"bf16"``, ``"fp16"``)
    is recorded but not hashed, so a reference built in fp32 on a CPU and an encoder on a GPU
    (bf16 under ``precision="auto"``) are the same model; a guard then embeds at the
    reference's precision (docs/encoders.md, "Precision"). Library versions are recorded for
    provenance and not hashed either: a patch release of torch must not invalidate every
    stored reference, while a change of weights or preprocessing does.

    Example:
        >>> fp = EncoderFingerprint(model_id="m", weights_sha256="0" * 64, dim=4)
        >>> len(fp.digest)
        64
        >>> fp.model_copy(update={"precision": "bf16"}).digest == fp.digest
        True
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_id: str
    backend: str = "custom"
    weights_sha256: str
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    dim: int
    precision: str = "fp32"
    versions: dict[str, str] = Field(default_factory=dict)

    @property
    def digest(self) -> str:
        """SHA-256 of the model and its preprocessing (not ``precision`` nor ``versions``)."""
        payload = self.model_dump(exclude={"precision", "versions"})
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict, with the digest included."""
        return {**self.model_dump(), "digest": self.digest}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EncoderFingerprint):
            return NotImplemented
        return self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)


@runtime_checkable
class Encoder(Protocol):
    """What synthguard needs from an image–text embedding model.

    Implement these members on your own object and pass it wherever an encoder is expected
    (``sg.load_encoder(obj)`` returns it unchanged). Both methods return float32, L2-normalised
    ``[n, dim]`` tensors in one shared space.
    """

    @property
    def dim(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def context_length(self) -> int: ...

    @property
    def fingerprint(self) -> EncoderFingerprint: ...

    def encode_images(self, images: Sequence[Any], *, on_error: OnError = "raise") -> torch.Tensor:
        """Embed images; undecodable ones raise (``"raise"``) or give NaN rows (``"nan"``)."""
        ...

    def encode_texts(self, texts: Sequence[Any], *, on_error: OnError = "raise") -> torch.Tensor:
        """Embed captions; empty or non-text ones raise or give NaN rows, as for images."""
        ...


class PairEmbeddings(BaseModel):
    """Image and caption embeddings of one :class:`~synthguard.PairBatch`, row-aligned.

    Attributes:
        image: ``[n, dim]`` float32; a NaN row where ``errors`` names the sample.
        text: ``[n, dim]`` float32; a NaN row where ``errors`` names the sample.
        errors: sample index -> reason code, for samples that could not be embedded.
        error_details: sample index -> human-readable explanation.
        truncated: ``[n]`` bool, captions longer than the text tower's context.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    image: torch.Tensor
    text: torch.Tensor
    errors: dict[int, ReasonCode]
    error_details: dict[int, str] = Field(default_factory=dict)
    truncated: torch.Tensor

    @property
    def n_truncated(self) -> int:
        """How many captions were truncated to fit the context."""
        return int(self.truncated.sum())

    @property
    def valid(self) -> torch.Tensor:
        """``[n]`` bool: both embeddings of the sample exist."""
        mask = torch.ones(self.image.shape[0], dtype=torch.bool)
        for index in self.errors:
            mask[index] = False
        return mask


def check_caption(item: Any) -> str | Failure:
    """The caption as text, or why it cannot be embedded (reason code, detail)."""
    if item is None:
        return ReasonCode.EMPTY_CAPTION, "caption is None"
    if isinstance(item, (bytes, bytearray)):
        try:
            item = bytes(item).decode("utf-8")
        except UnicodeDecodeError as exc:
            return ReasonCode.UNREADABLE_CAPTION, f"caption bytes are not valid UTF-8 ({exc})"
    if not isinstance(item, str):
        return ReasonCode.UNREADABLE_CAPTION, f"caption must be str; got {type(item).__name__}"
    if not item.strip():
        return ReasonCode.EMPTY_CAPTION, "caption is empty or whitespace only"
    return item


def embed_pairs(encoder: Encoder, batch: PairBatch) -> PairEmbeddings:
    """Embed a :class:`PairBatch` with any encoder; bad samples are reported, not fatal.

    Uses the encoder's own ``embed`` when it has one (the built-in engine reports truncation and
    reason details); for a user object implementing only the protocol, images and captions are
    encoded with ``on_error="nan"`` and NaN rows are mapped to reason codes.
    """
    own = getattr(encoder, "embed", None)
    if callable(own):
        result = own(batch)
        if not isinstance(result, PairEmbeddings):
            raise InvalidInputError(
                f"encoder.embed must return PairEmbeddings; got {type(result).__name__}"
            )
        return result
    # A user encoder opens paths itself: what a source refused (outside the input, too large,
    # not a regular file) is rejected here and never handed to it.
    refused = {i: r for i, item in enumerate(batch.images) if (r := source_refusal(item))}
    if not refused:
        image = encoder.encode_images(batch.images, on_error="nan")
    else:
        kept = [i for i in range(len(batch)) if i not in refused]
        image = torch.full((len(batch), int(encoder.dim)), float("nan"))
        if kept:
            got = encoder.encode_images([batch.images[i] for i in kept], on_error="nan")
            image[kept] = got.to(image.device, image.dtype)
    errors: dict[int, ReasonCode] = {i: r[0] for i, r in refused.items()}
    details: dict[int, str] = {i: r[1] for i, r in refused.items()}
    for index in torch.nonzero(~torch.isfinite(image).all(dim=1)).flatten().tolist():
        if index not in refused:
            errors[index] = ReasonCode.UNREADABLE_IMAGE
            details[index] = "the encoder returned a non-finite image embedding"
    # Captions are checked here so a user encoder never sees None or undecodable bytes.
    captions = {i: check_caption(c) for i, c in enumerate(batch.captions)}
    valid = [i for i, c in captions.items() if isinstance(c, str)]
    text = torch.full((len(batch), image.shape[1]), float("nan"))
    if valid:
        text[valid] = encoder.encode_texts([captions[i] for i in valid], on_error="nan")
    for index, checked in captions.items():
        if not isinstance(checked, str):
            errors.setdefault(index, checked[0])
            details.setdefault(index, checked[1])
        elif not torch.isfinite(text[index]).all():
            errors.setdefault(index, ReasonCode.ENCODING_FAILED)
            details.setdefault(index, "the encoder returned a non-finite caption embedding")
    return PairEmbeddings(
        image=image,
        text=text,
        errors=dict(sorted(errors.items())),
        error_details=dict(sorted(details.items())),
        truncated=torch.zeros(len(batch), dtype=torch.bool),
    )
