"""Reason codes: the stable, machine-readable vocabulary of every per-sample reject."""

from __future__ import annotations

from enum import Enum

__all__ = ["ReasonCode"]


class ReasonCode(str, Enum):
    """Why a sample could not be embedded or was rejected.

    Values are stable strings (they end up in JSON reports and dashboards); compare with either
    the member or its string value: ``ReasonCode.UNREADABLE_IMAGE == "unreadable_image"``.
    """

    UNREADABLE_IMAGE = "unreadable_image"
    """The image could not be opened, decoded or converted (corrupt, missing, not a regular
    file, ...)."""
    EMPTY_CAPTION = "empty_caption"
    """The caption is None, empty or whitespace only."""
    UNREADABLE_CAPTION = "unreadable_caption"
    """The caption is not text (wrong type, or bytes that are not valid UTF-8)."""
    ENCODING_FAILED = "encoding_failed"
    """The model produced a non-finite or zero embedding for this sample."""
    LOW_ALIGNMENT = "low_alignment"
    """Image and caption agree less than real pairs do (below the calibrated quantile)."""
    LABEL_MISMATCH = "label_mismatch"
    """The frozen grounding model confidently predicts a different class than the label."""
    NEAR_DUPLICATE = "near_duplicate"
    """The image is closer to an earlier image of the same batch than real neighbours get."""
    OFF_MANIFOLD = "off_manifold"
    """The image is farther from the real reference (k-NN distance) than real samples are."""
    REFERENCE_COPY = "reference_copy"
    """The image is closer to a reference image than real samples get: a likely copy."""
    LONG_CAPTION = "long_caption"
    """The caption has more tokens than real captions get (opt-in check ``long_caption``)."""
    # Appended, not inserted: tuple(ReasonCode) indexes the Ray pool's count tables.
    IMAGE_TOO_LARGE = "image_too_large"
    """The image is over a size limit: more encoded bytes than ``max_image_bytes``, more pixels
    than ``max_image_pixels`` (decompression bombs), or an aspect ratio above
    ``max_image_aspect`` (the model's resize of its short side would build a huge image)."""
    OUTSIDE_INPUT = "outside_input"
    """The image's path leads outside the input the user named: a symlink leaving the folder,
    or a Parquet path that is absolute or contains ``..`` (see ``follow_symlinks``)."""

    def __str__(self) -> str:
        return self.value
