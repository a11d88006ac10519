"""Exception hierarchy: every error synthguard raises derives from :class:`SynthGuardError`."""

from __future__ import annotations

__all__ = [
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
