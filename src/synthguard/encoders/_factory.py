"""``load_encoder``: one factory, string specs in the open_clip style."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from synthguard._errors import EncoderLoadError, InvalidInputError
from synthguard.encoders._backend import ModelBackend
from synthguard.encoders._base import Encoder
from synthguard.encoders._engine import BatchedEncoder

__all__ = [
    "BUNDLED_MODELS",
    "bundled_model_path",
    "from_open_clip",
    "from_transformers",
    "load_encoder",
]

#: Models that ship inside the package (name -> folder under ``encoders/_bundled``).
BUNDLED_MODELS = ("digits",)

SPEC_FORMS = (
    "'openclip:NAME/PRETRAINED_TAG' (e.g. 'openclip:ViT-B-32/laion2b_s34b_b79k')",
    "'openclip:local-dir:PATH' or 'openclip:hf-hub:ORG/REPO'",
    "'hf:MODEL_ID_OR_PATH' (transformers CLIPModel, SiglipModel, ...)",
    "'bundled:NAME' with NAME in " + ", ".join(repr(n) for n in BUNDLED_MODELS),
    "an object implementing the synthguard.encoders.Encoder protocol",
)


def bundled_model_path(name: str) -> Path:
    """Folder of a bundled model (open_clip ``local-dir`` layout)."""
    if name not in BUNDLED_MODELS:
        raise InvalidInputError(
            f"bundled model must be one of {list(BUNDLED_MODELS)}; got {name!r}"
        )
    path = Path(__file__).resolve().parent / "_bundled" / name
    if not (path / "open_clip_config.json").is_file():
        raise EncoderLoadError(f"bundled model {name!r} is missing its files in {path}")
    return path


def load_encoder(spec: str | Encoder, **options: Any) -> Encoder:
    """Load an image–text encoder from a spec string (or pass through your own encoder).

    Args:
        spec: one of
            ``"openclip:NAME/PRETRAINED_TAG"``, ``"openclip:local-dir:PATH"``,
            ``"openclip:hf-hub:ORG/REPO"``, ``"hf:MODEL_ID_OR_PATH"``, ``"bundled:digits"``,
            or an object implementing :class:`~synthguard.encoders.Encoder`.
        **options: engine options (``device``, ``precision``, ``batch_size``, ``num_workers``,
            ``prefetch_batches``, ``cache_dir``, ``progress``, ``max_image_pixels``,
            ``output_device``); see :class:`~synthguard.encoders.BatchedEncoder`.

    Returns:
        An encoder whose ``encode_images`` / ``encode_texts`` return float32 unit vectors.

    Raises:
        InvalidInputError: the spec is not one of the accepted forms.
        EncoderLoadError: the model could not be loaded (missing files, no network, ...).

    Example:
        >>> import synthguard as sg
        >>> enc = sg.load_encoder("bundled:digits")
        >>> enc.encode_texts(["a handwritten digit seven"]).shape[0]
        1
    """
    if not isinstance(spec, str):
        if isinstance(spec, Encoder):
            if options:
                raise InvalidInputError(
                    f"options {sorted(options)} apply only to spec strings; configure your own "
                    "encoder object directly"
                )
            return spec
        raise InvalidInputError(_unknown(spec))
    scheme, _, rest = spec.partition(":")
    if not rest:
        raise InvalidInputError(_unknown(spec))
    backend = _backend(scheme, rest, spec)
    return BatchedEncoder(backend, spec=spec, **options)


def from_open_clip(model: Any, preprocess: Any, tokenizer: Any, **options: Any) -> BatchedEncoder:
    """An encoder around an open_clip model already in memory (no spec, no download).

    Args:
        model, preprocess, tokenizer: what ``open_clip.create_model_and_transforms`` (its
            validation transform) and ``open_clip.get_tokenizer`` return.
        **options: engine options, as for :func:`load_encoder`.

    The fingerprint hashes the model's weights and preprocessing, and names the model as held
    in memory: build the reference with this encoder too (a reference built from a spec
    records that spec as the model id).
    """
    from synthguard.encoders._openclip import OpenClipBackend

    name = f"open_clip:{type(model).__name__}(in memory)"
    return BatchedEncoder(
        OpenClipBackend.from_objects(model, preprocess, tokenizer, model_id=name), **options
    )


def from_transformers(model: Any, processor: Any, **options: Any) -> BatchedEncoder:
    """An encoder around a transformers dual encoder (CLIPModel, SiglipModel, ...) and its
    processor already in memory; see :func:`from_open_clip`."""
    from synthguard.encoders._hf import HFBackend

    name = f"transformers:{type(model).__name__}(in memory)"
    return BatchedEncoder(HFBackend.from_objects(model, processor, model_id=name), **options)


def _backend(scheme: str, rest: str, spec: str) -> ModelBackend:
    if scheme == "bundled":
        from synthguard.encoders._openclip import OpenClipBackend

        path = bundled_model_path(rest)
        return OpenClipBackend(f"local-dir:{path}", None, model_id=spec)
    if scheme == "openclip":
        from synthguard.encoders._openclip import OpenClipBackend

        if rest.startswith(("local-dir:", "hf-hub:")):
            if rest.startswith("local-dir:") and not os.path.isdir(rest[len("local-dir:") :]):
                raise EncoderLoadError(f"{spec!r}: folder {rest[len('local-dir:') :]!r} not found")
            return OpenClipBackend(rest, None, model_id=spec)
        name, _, tag = rest.partition("/")
        if not name or not tag:
            raise InvalidInputError(
                f"spec {spec!r}: openclip specs need a pretrained tag, 'openclip:NAME/TAG' "
                "(a built-in name without a tag would silently give random weights)"
            )
        return OpenClipBackend(name, tag, model_id=spec)
    if scheme == "hf":
        from synthguard.encoders._hf import HFBackend

        return HFBackend(rest, model_id=spec)
    raise InvalidInputError(_unknown(spec))


def _unknown(spec: object) -> str:
    forms = "\n  - ".join(SPEC_FORMS)
    shown = repr(spec) if isinstance(spec, str) else f"an object of type {type(spec).__name__}"
    return f"encoder spec must be one of:\n  - {forms}\ngot {shown}"
