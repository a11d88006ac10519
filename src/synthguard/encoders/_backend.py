"""``ModelBackend``: what differs between model families (open_clip, transformers, ...).

The engine (``_engine.py``, with ``_pipeline.py`` and ``_runner.py``) owns batching, devices,
precision, workers, caching and errors; a backend only knows how to preprocess one image,
tokenise captions and run the two towers.
"""

from __future__ import annotations

import abc
import hashlib
import importlib.metadata
from typing import Any

import torch
from PIL import Image

__all__ = ["ModelBackend", "hash_state_dict", "package_version"]


class ModelBackend(abc.ABC):
    """One loaded image–text model and its preprocessing.

    Attributes:
        model_id: the spec it was loaded from (goes into the fingerprint).
        backend_name: ``"open_clip"``, ``"transformers"``, ...
        library: the distribution whose version is recorded in the fingerprint.
        module: the ``torch.nn.Module`` holding all weights (moved to the device by the engine).
        dim: embedding dimension.
        context_length: maximum caption length in tokens, special tokens included.
    """

    model_id: str
    backend_name: str
    library: str
    module: torch.nn.Module
    dim: int
    context_length: int

    @abc.abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One RGB image -> the ``[C, H, W]`` float tensor the vision tower takes.

        Called concurrently from worker threads: must not mutate shared state.
        """

    @abc.abstractmethod
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Captions -> the text tower's keyword inputs, truncated keeping the end-of-text token."""

    @abc.abstractmethod
    def token_counts(self, texts: list[str]) -> list[int]:
        """Untruncated token counts, special tokens included (``> context_length`` = truncated)."""

    @abc.abstractmethod
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[n, C, H, W]`` -> ``[n, dim]`` unnormalised image embeddings."""

    @abc.abstractmethod
    def text_features(self, **tokens: torch.Tensor) -> torch.Tensor:
        """Tokenised captions -> ``[n, dim]`` unnormalised text embeddings."""

    @abc.abstractmethod
    def preprocessing(self) -> dict[str, Any]:
        """Everything about preprocessing that changes embeddings (for the fingerprint)."""

    def versions(self) -> dict[str, str]:
        """Versions of the libraries the model runs on (provenance, not part of the digest)."""
        return {
            "torch": torch.__version__,
            self.library: package_version(self.library),
            "synthguard": package_version("synthguard"),
        }


def package_version(package: str) -> str:
    """Installed version of ``package``, or ``"unknown"``."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def hash_state_dict(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer: names, dtypes, shapes and raw bytes.

    Hashing the loaded tensors (not the file) means equal weights hash equal whatever
    container they came in (safetensors, a hub cache, an in-memory model).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
