"""The captioning model of a :class:`~synthguard.relabel.Recaptioner`: ``"hf:PATH_OR_ID"``
loaded through transformers' auto classes, a model object with ``.generate``, or a function."""

from __future__ import annotations

import os
from typing import Any

from synthguard._errors import EncoderLoadError, InvalidInputError
from synthguard._validation import describe

__all__ = ["resolve_captioner"]

# Tried in order for "hf:PATH": the generic image-to-text auto class first, then the older
# Vision2Seq auto class (gone in transformers 5), then BLIP for checkpoints neither maps.
_HF_CLASSES = (
    "AutoModelForImageTextToText",
    "AutoModelForVision2Seq",
    "BlipForConditionalGeneration",
)


def resolve_captioner(model: Any, processor: Any) -> tuple[Any, Any, str]:
    """``(model, processor or None for a function, provenance name)`` of a
    :class:`~synthguard.relabel.Recaptioner`'s ``model`` and ``processor`` arguments."""
    if isinstance(processor, (str, os.PathLike)):
        processor = _load_processor(os.fspath(processor))
    if isinstance(model, str):
        scheme, _, path = model.partition(":")
        if scheme != "hf" or not path:
            raise InvalidInputError(
                "model must be 'hf:PATH_OR_ID', a transformers image-to-text model or a "
                f"captioning function; got {model!r}"
            )
        loaded = _load_hf(path, model)
        return loaded.eval(), processor or _load_processor(path), model
    if callable(getattr(model, "generate", None)):
        name = str(getattr(model, "name_or_path", "") or type(model).__name__)
        if processor is None:
            if not os.path.isdir(name):
                raise InvalidInputError(
                    f"processor is required for a {type(model).__name__} object whose "
                    f"name_or_path ({name!r}) is not a local folder"
                )
            processor = _load_processor(name)
        if hasattr(model, "eval"):
            model.eval()
        return model, processor, name
    if callable(model):
        return model, None, getattr(model, "__qualname__", type(model).__name__)
    raise InvalidInputError(
        "model must be 'hf:PATH_OR_ID', a transformers image-to-text model (with .generate) "
        f"or a captioning function; got {describe(model)}"
    )


def _load_hf(path: str, spec: str) -> Any:
    import transformers  # local: slow to import, and only needed for hf models

    errors: list[str] = []
    for name in _HF_CLASSES:
        cls = getattr(transformers, name, None)
        if cls is None:
            continue
        try:
            return cls.from_pretrained(path)
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    raise EncoderLoadError(
        f"cannot load image-to-text model {spec!r}: " + " | ".join(errors) + ". Offline, pass a "
        "folder written by save_pretrained()."
    )


def _load_processor(path: str) -> Any:
    import transformers

    try:
        return transformers.AutoProcessor.from_pretrained(path)
    except Exception as exc:
        raise EncoderLoadError(
            f"cannot load the processor from {path!r}: {type(exc).__name__}: {exc}"
        ) from exc
