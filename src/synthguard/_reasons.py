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

    @property
    def words(self) -> str:
        """The reason in a few plain words, as report pages show it (the member's docstring
        says it in full).

        Example:
            >>> ReasonCode.NEAR_DUPLICATE.words
            'the image repeats an earlier image of the batch'
        """
        return _WORDS[self]


# Beside the members so a new code gets its words where it gets its docstring
# (tests/test_architecture.py checks that every code has them).
_WORDS: dict[ReasonCode, str] = {
    ReasonCode.UNREADABLE_IMAGE: "the image could not be opened or decoded",
    ReasonCode.EMPTY_CAPTION: "the caption is empty",
    ReasonCode.UNREADABLE_CAPTION: "the caption is not text",
    ReasonCode.ENCODING_FAILED: "the model gave no usable embedding",
    ReasonCode.LOW_ALIGNMENT: "image and caption agree less than real pairs do",
    ReasonCode.LABEL_MISMATCH: "the frozen model confidently predicts another class",
    ReasonCode.NEAR_DUPLICATE: "the image repeats an earlier image of the batch",
    ReasonCode.OFF_MANIFOLD: "the image is farther from real images than real images are",
    ReasonCode.REFERENCE_COPY: "the image is a near-copy of a reference image",
    ReasonCode.LONG_CAPTION: "the caption is longer than real captions get",
    ReasonCode.IMAGE_TOO_LARGE: "the image is over a size limit",
    ReasonCode.OUTSIDE_INPUT: "the image's path leads outside the input",
}
