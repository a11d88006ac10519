"""Same model, same numerics: the encoder a guard embeds with, at its reference's precision.

The fingerprint's digest says *which* model and preprocessing made the embeddings; its
``precision`` says at which numerics. A reference calibrates thresholds and nulls on its own
precision's embeddings, and a batch embedded at another one is not exchangeable with them:
bf16 against fp32 moved the alignment score by up to 1.4 times its interquartile range and
batch statistics by up to 1.8 of their standard deviations (``benchmarks/bench_precision.py``;
docs/encoders.md, "Precision"). No tolerance holds for every model, so a guard embeds at the
reference's precision: an engine whose precision was ``"auto"`` is switched to it
(:meth:`~synthguard.BatchedEncoder.with_precision`, same weights); a precision the user set,
or an encoder that cannot change it, is refused with the fix.
"""

from __future__ import annotations

from synthguard._errors import IncompatibleStatsError
from synthguard.encoders import BatchedEncoder, Encoder, EncoderFingerprint

__all__ = ["at_reference_precision", "check_same_model"]


def check_same_model(reference: EncoderFingerprint | None, encoder: Encoder) -> None:
    """Raise :class:`IncompatibleStatsError` when ``encoder`` is another model or preprocessing."""
    if reference is None:
        return
    theirs = encoder.fingerprint
    if theirs.digest != reference.digest:
        raise IncompatibleStatsError(
            f"the encoder's fingerprint ({theirs.model_id}, digest {theirs.digest[:12]}…) "
            f"differs from the reference's ({reference.model_id}, digest "
            f"{reference.digest[:12]}…): another model or preprocessing; rebuild the reference "
            "with this encoder"
        )


def at_reference_precision(reference: EncoderFingerprint | None, encoder: Encoder) -> Encoder:
    """``encoder``, checked to be the reference's model, computing at its precision.

    Returns the encoder itself when the precisions agree (or the reference records none), a
    sibling engine at the reference's precision when ``encoder`` is a
    :class:`~synthguard.BatchedEncoder` loaded with ``precision="auto"``.

    Raises:
        IncompatibleStatsError: another model or preprocessing; or another precision that was
            set explicitly, or that the encoder cannot change. The message names ``precision``,
            both values and the fix.
    """
    check_same_model(reference, encoder)
    if reference is None:
        return encoder
    wanted, theirs = reference.precision, encoder.fingerprint.precision
    if theirs == wanted:
        return encoder
    if isinstance(encoder, BatchedEncoder) and encoder.precision_is_auto:
        return encoder.with_precision(wanted)
    how = (
        "set explicitly"
        if isinstance(encoder, BatchedEncoder)
        else f"and {type(encoder).__name__} cannot change it"
    )
    raise IncompatibleStatsError(
        f"precision: the reference was embedded at precision={wanted!r} and the encoder "
        f"computes at precision={theirs!r} ({how}); mixed numerics move the guard's scores and "
        f'batch statistics (docs/encoders.md, "Precision"). Load the encoder with '
        f"precision={wanted!r} or precision='auto' (a guard then embeds at the reference's "
        f"precision), or rebuild the reference at precision={theirs!r}"
    )
