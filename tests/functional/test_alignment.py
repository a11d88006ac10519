"""Per-pair alignment, CLIPScore and alignment summaries against numpy and torchmetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional import pairwise_cosine_similarity

import synthguard.functional as F
from synthguard import InvalidInputError
from synthguard.stats import EmbeddingStats


@pytest.fixture(scope="module")
def pairs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    img = rng.normal(size=(400, 16))
    txt = img + rng.normal(size=(400, 16)) * 1.5  # a spread of positive and negative cosines
    return img, txt


def test_alignment_matches_numpy_and_torchmetrics(pairs: tuple[np.ndarray, np.ndarray]) -> None:
    img, txt = pairs
    expected = (img * txt).sum(1) / (np.linalg.norm(img, axis=1) * np.linalg.norm(txt, axis=1))
    ours = F.alignment(img, txt)
    assert ours.dtype == torch.float64 and ours.shape == (400,)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12, atol=1e-15)
    peer = pairwise_cosine_similarity(torch.from_numpy(img), torch.from_numpy(txt)).diagonal()
    np.testing.assert_allclose(ours.numpy(), peer.numpy(), rtol=1e-10, atol=1e-12)
    assert (expected < 0).any() and (expected > 0).any()


def test_clip_score_convention(pairs: tuple[np.ndarray, np.ndarray]) -> None:
    img, txt = pairs
    cos = F.alignment(img, txt)
    score = F.clip_score(torch.from_numpy(img).float(), torch.from_numpy(txt).float())
    np.testing.assert_allclose(
        score.numpy(), 100 * np.maximum(cos.numpy(), 0), rtol=1e-6, atol=1e-5
    )
    assert F.clip_score(np.eye(2), np.eye(2)).tolist() == [100.0, 100.0]
    assert F.clip_score(np.eye(2), -np.eye(2)).tolist() == [0.0, 0.0]


def test_summary_matches_numpy(pairs: tuple[np.ndarray, np.ndarray]) -> None:
    cos = F.alignment(*pairs).numpy()
    s = F.alignment_summary(cos, threshold=0.2, quantiles=(0.0, 0.1, 0.5, 1.0))
    assert s.n == 400 and s.exact
    assert s.mean == pytest.approx(cos.mean(), rel=1e-12)
    assert s.std == pytest.approx(cos.std(), rel=1e-12)
    assert s.quantiles == {q: pytest.approx(np.quantile(cos, q)) for q in (0.0, 0.1, 0.5, 1.0)}
    assert s.fraction_below == pytest.approx((cos < 0.2).mean())
    assert s.to_dict()["threshold"] == 0.2


def test_summary_from_stats_is_exact_in_moments_and_within_a_bin(
    pairs: tuple[np.ndarray, np.ndarray],
) -> None:
    img, txt = pairs
    cos = F.alignment(img, txt).numpy()
    stats = EmbeddingStats.from_embeddings(img[:150], txt[:150]).merge(
        EmbeddingStats.from_embeddings(img[150:], txt[150:])
    )
    s = F.alignment_summary(stats, threshold=0.2, quantiles=(0.05, 0.5, 0.95))
    assert not s.exact and s.n == 400
    assert s.mean == pytest.approx(cos.mean(), rel=1e-12)
    assert s.std == pytest.approx(cos.std(), rel=1e-10)
    width = 0.01  # default edges: 200 bins on [-1, 1]
    for q, value in s.quantiles.items():
        assert abs(value - np.quantile(cos, q)) <= width + 1e-12
    # 0.2 is a bin edge, so the fraction below it is exact.
    assert s.fraction_below == pytest.approx((cos < 0.2).mean(), abs=1e-12)


def test_summary_from_stats_histogram_interpolation() -> None:
    edges = [0.0, 0.5, 1.0]
    img = np.array([[1.0, 0.0]] * 4)
    txt = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 3.0], [0.0, 1.0]])  # cos 1, .707, .316, 0
    stats = EmbeddingStats.from_embeddings(img, txt, hist_edges=edges)
    assert stats.alignment_histogram[1].tolist() == [2.0, 2.0]  # 1.0 falls into the last bin
    s = F.alignment_summary(stats, threshold=0.25, quantiles=(0.0, 0.25, 0.5, 1.0))
    assert s.quantiles == {0.0: 0.0, 0.25: 0.25, 0.5: 0.5, 1.0: 1.0}
    assert s.fraction_below == pytest.approx(0.25)  # half of the first bin's mass


@pytest.mark.parametrize(
    ("img", "txt", "match"),
    [
        (np.ones((3, 4)), np.ones((2, 4)), r"same number of rows \(one per pair\), got 3 and 2"),
        (np.ones((3, 4)), np.ones((3, 5)), r"same dimension d, got 4 and 5"),
        (
            np.ones(4),
            np.ones((3, 4)),
            r"img must be a 2-D array of shape \[n, d\], got shape \(4,\)",
        ),
        (np.zeros((2, 4)), np.ones((2, 4)), r"img rows must have non-zero norm.*rows \[0, 1\]"),
        (np.ones((0, 4)), np.ones((0, 4)), r"img must have at least 1 rows, got 0"),
        ("text", np.ones((3, 4)), r"img must be a torch.Tensor or numpy.ndarray, got str"),
    ],
)
def test_alignment_errors(img: object, txt: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        F.alignment(img, txt)


def test_summary_errors() -> None:
    with pytest.raises(InvalidInputError, match=r"quantiles\[1\] must be <= 1.0, got 1.5"):
        F.alignment_summary([0.1, 0.2], quantiles=(0.5, 1.5))
    with pytest.raises(InvalidInputError, match=r"scores must hold at least 1 value"):
        F.alignment_summary(np.zeros(0))
    with pytest.raises(InvalidInputError, match=r"at least 1 pair, got 0"):
        F.alignment_summary(EmbeddingStats(3))
