"""Mergeable sufficient statistics of embeddings: :class:`EmbeddingStats` and :class:`Moments`.

:class:`EmbeddingStats` keeps float64 sums (never means), counts, a fixed-edge histogram of
image–caption alignment and a bottom-k sample of rows, so that statistics computed on shards,
processes or machines combine *exactly* (``stats(A).merge(stats(B))`` equals ``stats(A ∪ B)``
up to float64 rounding of the sums, and its sample is identical). Every batch-level metric in
:mod:`synthguard.functional` can be computed from it.
"""

from synthguard.stats._moments import Moments
from synthguard.stats._stats import EmbeddingStats, Modality

__all__ = ["EmbeddingStats", "Modality", "Moments"]
