"""Exception hierarchy: every error synthguard raises derives from :class:`SynthGuardError`."""

from __future__ import annotations

__all__ = [
    "CorruptFileError",
    "EncoderError",
    "EncoderLoadError",
    "IncompatibleStatsError",
    "InvalidInputError",
    "SynthGuardError",
]


class SynthGuardError(Exception):
    """Root of all synthguard errors, so callers can catch the library's failures in one clause."""


class InvalidInputError(SynthGuardError, ValueError):
    """An argument or a sample violates a documented constraint.

    Messages name the argument (or sample index), the constraint and the value received.
    """


class IncompatibleStatsError(SynthGuardError, ValueError):
    """Statistics or embeddings from different encoders (fingerprints) were combined."""


class EncoderLoadError(SynthGuardError, RuntimeError):
    """An encoder spec could not be resolved or its weights could not be loaded."""


class EncoderError(SynthGuardError, RuntimeError):
    """The encoder failed for a whole batch (out of memory at batch size 1, a model error).

    Raised instead of returning partial results: a gate that could not check a batch accepts
    nothing from it (fail closed).
    """


class CorruptFileError(SynthGuardError, OSError):
    """A file synthguard wrote earlier (reference, cache, log) failed its integrity check."""
