"""What a generation is measured by: the collapse metrics against the reference support."""

from __future__ import annotations

from typing import Any, Literal

import torch

from synthguard._errors import InvalidInputError
from synthguard.functional import collapse_metrics
from synthguard.reference import Reference

__all__ = ["COLLAPSE_DIRECTIONS", "GENERATION_METRICS", "generation_metrics"]

#: Metrics the monitor knows the collapse direction of ("down": falling is collapse).
COLLAPSE_DIRECTIONS: dict[str, Literal["down", "up"]] = {
    "variance_ratio": "down",
    "vendi_ratio": "down",
    "coverage": "down",
    "frechet_distance": "up",
    "cmmd": "up",
}


#: What :func:`generation_metrics` reports, from :func:`~synthguard.functional.collapse_metrics`.
GENERATION_METRICS = (
    "variance_ratio",
    "vendi_ratio",
    "coverage",
    "frechet_distance",
    "cmmd",
    "alignment_mean",
)


def generation_metrics(reference: Reference, image: Any, text: Any) -> dict[str, float]:
    """Collapse metrics of one generation's embeddings against the reference support.

    ``variance_ratio`` (total variance), ``vendi_ratio``, ``coverage`` (k-NN balls of the
    reference's coverage rows hit), ``frechet_distance``, ``cmmd`` (against the reference's
    CMMD rows) and ``alignment_mean``: :func:`synthguard.functional.collapse_metrics` against
    :meth:`Reference.collapse_reference`. Rows are L2-normalised; NaN or zero rows
    (unembeddable samples) are left out.
    """
    img = torch.as_tensor(image, dtype=torch.float64)
    txt = torch.as_tensor(text, dtype=torch.float64)
    keep = torch.isfinite(img).all(1) & torch.isfinite(txt).all(1)
    keep &= (img.norm(dim=1) > 0) & (txt.norm(dim=1) > 0)
    # Unit rows, so alignment is the cosine (float32 encoders are unit only to ~1e-7).
    img = torch.nn.functional.normalize(img[keep], dim=1)
    txt = torch.nn.functional.normalize(txt[keep], dim=1)
    if img.shape[0] <= reference.k:
        raise InvalidInputError(
            f"image must have more than k={reference.k} embeddable rows; got {img.shape[0]}"
        )
    metrics = collapse_metrics(img, txt, reference.collapse_reference())
    return {name: metrics[name] for name in GENERATION_METRICS}
