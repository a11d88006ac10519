"""Pure metric functions on embeddings (docs/design.md): no models, no state, float64 throughout.

Inputs are ``[n, d]`` torch tensors or numpy arrays; the metrics that are functions of sums
(diversity, centroid shift, Fréchet distance) also take :class:`~synthguard.stats.Moments` or
an :class:`~synthguard.EmbeddingStats`. Scalars come back as ``float``, per-sample values as
float64 tensors on the inputs' device, several numbers as frozen result objects.

Example:
    >>> import torch
    >>> from synthguard import functional as F
    >>> x = torch.nn.functional.normalize(torch.randn(64, 16), dim=1)
    >>> 1.0 <= F.vendi_score(x) <= 16.0
    True
"""

from synthguard.functional.alignment import (
    AlignmentSummary,
    alignment,
    alignment_summary,
    clip_score,
)
from synthguard.functional.collapse import (
    CollapseReference,
    collapse_metrics,
    collapse_reference,
)
from synthguard.functional.diversity import (
    effective_rank,
    mean_pairwise_cosine,
    total_variance,
    vendi_score,
)
from synthguard.functional.drift import (
    CentroidShift,
    LabelDrift,
    centroid_shift,
    frechet_distance,
    label_drift,
    modality_gap,
)
from synthguard.functional.duplicates import content_hash, exact_duplicates, near_duplicates
from synthguard.functional.fidelity import PRDCResult, knn_radii, prdc
from synthguard.functional.mmd import (
    PermutationTestResult,
    cmmd,
    mmd2_unbiased,
    mmd_permutation_test,
)
from synthguard.functional.text import CaptionStats, caption_stats, simple_tokenize

__all__ = [
    "AlignmentSummary",
    "CaptionStats",
    "CentroidShift",
    "CollapseReference",
    "LabelDrift",
    "PRDCResult",
    "PermutationTestResult",
    "alignment",
    "alignment_summary",
    "caption_stats",
    "centroid_shift",
    "clip_score",
    "cmmd",
    "collapse_metrics",
    "collapse_reference",
    "content_hash",
    "effective_rank",
    "exact_duplicates",
    "frechet_distance",
    "knn_radii",
    "label_drift",
    "mean_pairwise_cosine",
    "mmd2_unbiased",
    "mmd_permutation_test",
    "modality_gap",
    "near_duplicates",
    "prdc",
    "simple_tokenize",
    "total_variance",
    "vendi_score",
]
