"""transformers dual encoders, ``hf:MODEL_ID_OR_PATH``: CLIPModel, SiglipModel and kin."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from PIL import Image

from synthguard._errors import EncoderLoadError
from synthguard.encoders._backend import ModelBackend
from synthguard.encoders._images import RGB_CONVERSION

__all__ = ["HFBackend"]


def _pooled(output: Any) -> torch.Tensor:
    """transformers 5.x returns an output object from get_*_features; 4.x a tensor."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    raise TypeError(f"unexpected feature output type {type(output).__name__}")


class HFBackend(ModelBackend):
    """A transformers model with ``get_image_features`` / ``get_text_features``.

    Preprocessing is the checkpoint's own image processor, applied per image on worker threads,
    so pixels match what the model was trained on exactly.

    Args:
        name_or_path: a hub id or a local folder written by ``save_pretrained``.
        model_id: the spec string recorded in the fingerprint.
    """

    backend_name = "transformers"
    library = "transformers"

    def __init__(self, name_or_path: str, *, model_id: str) -> None:
        import transformers  # local: transformers is slow to import

        self.model_id = model_id
        try:
            model = transformers.AutoModel.from_pretrained(name_or_path)
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path)
            self._image_processor = transformers.AutoImageProcessor.from_pretrained(name_or_path)
        except Exception as exc:
            raise EncoderLoadError(
                f"cannot load transformers model {model_id!r}: {type(exc).__name__}: {exc}. "
                "Weights are downloaded once into the Hugging Face cache; offline, pass a "
                "folder written by save_pretrained()."
            ) from exc
        self._adopt(model)

    @classmethod
    def from_objects(cls, model: Any, processor: Any, *, model_id: str) -> HFBackend:
        """Wrap a transformers dual encoder and its processor already in memory."""
        tokenizer = getattr(processor, "tokenizer", None)
        image_processor = getattr(processor, "image_processor", None)
        if tokenizer is None or image_processor is None:
            raise EncoderLoadError(
                "processor must be the model's processor (with .tokenizer and "
                f".image_processor, e.g. CLIPProcessor); got {type(processor).__name__}"
            )
        backend = cls.__new__(cls)
        backend.model_id = model_id
        backend._tokenizer, backend._image_processor = tokenizer, image_processor
        backend._adopt(model)
        return backend

    def _adopt(self, model: Any) -> None:
        model_id = self.model_id
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise EncoderLoadError(
                f"{model_id!r} loads as {type(model).__name__}, which has no "
                "get_image_features/get_text_features; expected a dual encoder such as "
                "CLIPModel or SiglipModel"
            )
        self.module = model.eval()
        self._model: Any = model  # typed loosely: towers are called by name
        self._model_type = str(getattr(model.config, "model_type", "unknown"))
        self._padding = "max_length" if "siglip" in self._model_type else "longest"
        text_config = getattr(model.config, "text_config", model.config)
        self.context_length = int(text_config.max_position_embeddings)
        accepted = inspect.signature(model.get_text_features).parameters
        self._text_inputs = [n for n in ("input_ids", "attention_mask") if n in accepted]
        with torch.inference_mode():
            self.dim = int(self.text_features(**self.tokenize(["a"])).shape[-1])

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        pixels: torch.Tensor = self._image_processor(images=image, return_tensors="pt")[
            "pixel_values"
        ][0]
        return pixels

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        # Truncation reserves room for the special tokens, so the end-of-text token survives.
        # SigLIP was trained on max-length padding and pools the last position, so it needs it;
        # CLIP masks padding and pools the end-of-text token, so padding to the longest caption
        # gives identical embeddings for up to ~5x less text-tower compute on short captions.
        encoded = self._tokenizer(
            texts,
            padding=self._padding,
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        return {name: encoded[name] for name in self._text_inputs if name in encoded}

    def token_counts(self, texts: list[str]) -> list[int]:
        ids = self._tokenizer(texts, truncation=False, verbose=False)["input_ids"]
        return [len(row) for row in ids]

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _pooled(self._model.get_image_features(pixel_values=pixel_values))

    def text_features(self, **tokens: torch.Tensor) -> torch.Tensor:
        return _pooled(self._model.get_text_features(**tokens))

    def preprocessing(self) -> dict[str, Any]:
        image_cfg = self._image_processor.to_dict()
        image_cfg.pop("processor_class", None)
        return {
            "image_processor": {k: image_cfg[k] for k in sorted(image_cfg)},
            "tokenizer": type(self._tokenizer).__name__,
            "context_length": self.context_length,
            "model_type": self._model_type,
            "padding": self._padding,
            "rgb_conversion": RGB_CONVERSION,
        }
