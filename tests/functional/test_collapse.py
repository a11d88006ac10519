"""collapse_metrics: the guard's, the monitor's and the torchmetrics adapter's one definition."""

from __future__ import annotations

import numpy as np
import prdc as prdc_package
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import synthguard as sg
from synthguard import functional as F
from synthguard.stats import EmbeddingStats


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


@given(seed=st.integers(0, 10_000), m=st.integers(12, 60), cmmd_rows=st.integers(2, 80))
@settings(max_examples=15, deadline=None)
def test_each_metric_is_its_functional_definition(seed: int, m: int, cmmd_rows: int) -> None:
    ref_img, ref_txt = _unit(80, 6, seed), _unit(80, 6, seed + 1)
    img, txt = _unit(m, 6, seed + 2), _unit(m, 6, seed + 3)
    reference = F.collapse_reference(ref_img, ref_txt, k=5, cmmd_rows=cmmd_rows)
    got = F.collapse_metrics(img, txt, reference)
    cos, ref_cos = F.alignment(img, txt).numpy(), F.alignment(ref_img, ref_txt).numpy()
    assert got["alignment_mean"] == pytest.approx(cos.mean())
    assert got["alignment_shift"] == pytest.approx(cos.mean() - ref_cos.mean())
    assert got["alignment_variance"] == pytest.approx(np.var(cos) / np.var(ref_cos))
    assert got["variance_ratio"] == pytest.approx(F.total_variance(img) / F.total_variance(ref_img))
    assert got["vendi_ratio"] == pytest.approx(F.vendi_score(img) / F.vendi_score(ref_img))
    assert got["frechet_distance"] == pytest.approx(F.frechet_distance(img, ref_img), abs=1e-9)
    peer = prdc_package.compute_prdc(
        real_features=ref_img.numpy(), fake_features=img.numpy(), nearest_k=5
    )
    assert got["coverage"] == pytest.approx(peer["coverage"])
    assert got["cmmd"] == pytest.approx(F.cmmd(img, ref_img[:cmmd_rows]), rel=1e-9, abs=1e-12)


def test_statistics_give_the_rows_metrics() -> None:
    """An EmbeddingStats of the rows (moments, alignment sums, bottom-k sample) is the rows."""
    ref_img, ref_txt, img, txt = _unit(90, 5, 0), _unit(90, 5, 1), _unit(40, 5, 2), _unit(40, 5, 3)
    reference = F.collapse_reference(ref_img, ref_txt, coverage_rows=50, cmmd_rows=30)
    stats = EmbeddingStats(5, sample_size=64).update(img, txt, ids=range(40))
    from_stats = F.collapse_metrics(stats, None, reference)
    from_rows = F.collapse_metrics(img, txt, reference)
    assert from_stats == pytest.approx(from_rows, rel=1e-9)
    # The coverage set is the prefix of coverage_rows rows, with its own radii.
    peer = prdc_package.compute_prdc(
        real_features=ref_img[:50].numpy(), fake_features=img.numpy(), nearest_k=5
    )
    assert from_rows["coverage"] == pytest.approx(peer["coverage"])


def test_statistics_and_text_together_are_refused() -> None:
    stats = EmbeddingStats(4).update(_unit(10, 4, 0), _unit(10, 4, 1))
    reference = F.collapse_reference(_unit(20, 4, 2), _unit(20, 4, 3))
    with pytest.raises(sg.InvalidInputError, match="text must be None"):
        F.collapse_metrics(stats, _unit(10, 4, 1), reference)


def test_a_whole_generation_is_compared_blockwise() -> None:
    """Above 1,024 rows CMMD goes through the blockwise kernel sums: the same number."""
    img, txt = _unit(1100, 4, 7), _unit(1100, 4, 8)
    reference = F.collapse_reference(_unit(200, 4, 9), _unit(200, 4, 10), cmmd_rows=150)
    got = F.collapse_metrics(img, txt, reference)
    assert got["cmmd"] == pytest.approx(F.cmmd(img, reference.cmmd_rows), rel=1e-9, abs=1e-12)
