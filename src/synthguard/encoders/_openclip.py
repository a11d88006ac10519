"""open_clip models: ``openclip:NAME/TAG``, ``openclip:local-dir:PATH``, ``openclip:hf-hub:ID``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from synthguard._errors import EncoderLoadError
from synthguard.encoders._backend import ModelBackend
from synthguard.encoders._images import RGB_CONVERSION

__all__ = ["OpenClipBackend"]


class OpenClipBackend(ModelBackend):
    """A CLIP-family model loaded by open_clip, with its own validation preprocessing.

    Args:
        model_name: an open_clip model name (``"ViT-B-32"``) or a schema form
            (``"local-dir:PATH"``, ``"hf-hub:ORG/REPO"``).
        pretrained: the pretrained tag for a built-in model name (ignored for schema forms).
        model_id: the spec string recorded in the fingerprint.
    """

    backend_name = "open_clip"
    library = "open_clip_torch"

    def __init__(self, model_name: str, pretrained: str | None, *, model_id: str) -> None:
        import open_clip  # local: importing open_clip costs ~1 s and pulls in timm

        self.model_id = model_id
        _require_local_weights(model_name, model_id)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device="cpu"
            )
            self._tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as exc:
            raise EncoderLoadError(
                f"cannot load open_clip model {model_id!r}: {type(exc).__name__}: {exc}. "
                "Pretrained weights are downloaded once into the Hugging Face cache; on an "
                "offline machine, populate that cache first or use 'openclip:local-dir:PATH'."
            ) from exc
        self._adopt(model, preprocess)

    @classmethod
    def from_objects(
        cls, model: Any, preprocess: Any, tokenizer: Any, *, model_id: str
    ) -> OpenClipBackend:
        """Wrap a model already in memory (as ``open_clip.create_model_and_transforms`` and
        ``open_clip.get_tokenizer`` return them)."""
        for name, value in (("model", model), ("preprocess", preprocess), ("tokenizer", tokenizer)):
            if value is None or (name == "model" and not hasattr(model, "encode_image")):
                raise EncoderLoadError(
                    f"{name} must be an open_clip model, its validation transform and its "
                    f"tokenizer; got {type(value).__name__} for {name}"
                )
        backend = cls.__new__(cls)
        backend.model_id = model_id
        backend._tokenizer = tokenizer
        backend._adopt(model, preprocess)
        return backend

    def _adopt(self, model: Any, preprocess: Any) -> None:
        self.module = model.eval()
        self._model: Any = model  # typed loosely: towers are called by name
        self._preprocess = preprocess
        self.context_length = int(
            getattr(self._tokenizer, "context_length", None) or model.context_length
        )
        with torch.inference_mode():
            probe = self._tokenizer(["a"], context_length=self.context_length)
            self.dim = int(model.encode_text(probe).shape[-1])
        self._preprocess_cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        tensor: torch.Tensor = self._preprocess(image)
        return tensor

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        # open_clip's tokenizers truncate to context_length and put the end-of-text token back
        # in the last slot, so pooling (argmax over ids) still finds it.
        return {"text": self._tokenizer(texts, context_length=self.context_length)}

    def token_counts(self, texts: list[str]) -> list[int]:
        encode = getattr(self._tokenizer, "encode", None)
        if callable(encode) and hasattr(self._tokenizer, "eot_token_id"):
            return [len(encode(text)) + 2 for text in texts]  # + start and end tokens
        inner = getattr(self._tokenizer, "tokenizer", None)
        if inner is not None:  # open_clip's HFTokenizer wraps a transformers tokenizer
            return [len(ids) for ids in inner(texts, truncation=False)["input_ids"]]
        wide = self._tokenizer(texts, context_length=self.context_length * 8)
        return [int((row != 0).sum()) for row in wide]

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self._model.encode_image(pixel_values)
        return features

    def text_features(self, **tokens: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self._model.encode_text(tokens["text"])
        return features

    def preprocessing(self) -> dict[str, Any]:
        cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in self._preprocess_cfg.items()}
        return {
            "image": cfg,
            "transform": repr(self._preprocess),
            "tokenizer": type(self._tokenizer).__name__,
            "context_length": self.context_length,
            "rgb_conversion": RGB_CONVERSION,
        }


#: Weight files open_clip looks for in a ``local-dir:`` folder.
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pth")


def _require_local_weights(model_name: str, model_id: str) -> None:
    """Refuse a ``local-dir:`` folder without weights: open_clip would only log a warning and
    build a randomly initialised model, whose embeddings would be judged as real."""
    if not model_name.startswith("local-dir:"):
        return
    folder = Path(model_name[len("local-dir:") :])
    if folder.is_dir() and not any(any(folder.glob(p)) for p in _WEIGHT_PATTERNS):
        raise EncoderLoadError(
            f"cannot load open_clip model {model_id!r}: the folder {str(folder)!r} holds no "
            "weights (*.safetensors, *.bin or *.pth next to open_clip_config.json); without "
            "them open_clip would build a randomly initialised model"
        )
