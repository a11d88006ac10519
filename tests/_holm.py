"""A brute-force reference for the weighted Holm procedure (tests only)."""

from __future__ import annotations


def closed_weighted_bonferroni(
    p: list[float], w: list[float], alpha: float
) -> tuple[list[bool], list[float]]:
    """Weighted Holm by its definition: the closure of weighted Bonferroni tests. H_i is
    rejected iff every intersection J containing i is (some j in J has p_j <= alpha·w_j/w(J));
    its adjusted p-value is the largest over those J of min_j p_j·w(J)/w_j."""
    k = len(p)
    rejected, adjusted = [], []
    for i in range(k):
        worst = 0.0
        for mask in range(1, 1 << k):
            if not mask >> i & 1:
                continue
            members = [j for j in range(k) if mask >> j & 1]
            total = sum(w[j] for j in members)
            worst = max(worst, min(min(1.0, p[j] * total / w[j]) for j in members))
        adjusted.append(worst)
        rejected.append(worst <= alpha)
    return rejected, adjusted
