"""Encoders: turn images and captions into unit-norm embeddings in one shared space.

``load_encoder(spec)`` is the single entry point; every built-in model runs behind the same
batching engine (:class:`BatchedEncoder`), and any object implementing :class:`Encoder` is
accepted wherever an encoder is.
"""

from synthguard.encoders._backend import ModelBackend
from synthguard.encoders._base import (
    Encoder,
    EncoderFingerprint,
    OnError,
    PairEmbeddings,
    embed_pairs,
)
from synthguard.encoders._cache import CacheWarning, EmbeddingCache
from synthguard.encoders._calls import CaptionTruncatedWarning
from synthguard.encoders._engine import BatchedEncoder
from synthguard.encoders._factory import (
    BUNDLED_MODELS,
    bundled_model_path,
    from_open_clip,
    from_transformers,
    load_encoder,
)
from synthguard.encoders._images import DEFAULT_MAX_IMAGE_PIXELS, load_image

__all__ = [
    "BUNDLED_MODELS",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "BatchedEncoder",
    "CacheWarning",
    "CaptionTruncatedWarning",
    "EmbeddingCache",
    "Encoder",
    "EncoderFingerprint",
    "ModelBackend",
    "OnError",
    "PairEmbeddings",
    "bundled_model_path",
    "embed_pairs",
    "from_open_clip",
    "from_transformers",
    "load_encoder",
    "load_image",
]
