"""Freeze the public surface: adding or removing a public name is a deliberate, reviewed change."""

from __future__ import annotations

import importlib
from pathlib import Path

import synthguard as sg

TOP_LEVEL = {
    "BatchedEncoder",
    "CaptionTruncatedWarning",
    "CorruptFileError",
    "Encoder",
    "EncoderError",
    "EncoderFingerprint",
    "EncoderLoadError",
    "IncompatibleStatsError",
    "InvalidInputError",
    "PairBatch",
    "PairEmbeddings",
    "ReasonCode",
    "SynthGuardError",
    "__version__",
    "load_encoder",
}

ENCODERS = {
    "BUNDLED_MODELS",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "BatchedEncoder",
    "CaptionTruncatedWarning",
    "EmbeddingCache",
    "Encoder",
    "EncoderFingerprint",
    "ModelBackend",
    "OnError",
    "PairEmbeddings",
    "bundled_model_path",
    "embed_pairs",
    "load_encoder",
    "load_image",
}


def test_top_level_surface_is_frozen() -> None:
    assert set(sg.__all__) == TOP_LEVEL
    for name in sg.__all__:
        assert hasattr(sg, name), name


def test_encoders_surface_is_frozen() -> None:
    module = importlib.import_module("synthguard.encoders")
    assert set(module.__all__) == ENCODERS
    for name in module.__all__:
        assert hasattr(module, name), name


def test_errors_share_one_root() -> None:
    for name in TOP_LEVEL:
        obj = getattr(sg, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, sg.SynthGuardError), name  # one except clause catches all


def test_package_is_typed() -> None:
    assert (Path(sg.__file__).parent / "py.typed").is_file()
