"""EmbeddingStats: exact sums, merge as a commutative monoid, bottom-k sample, serialisation."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from scipy import stats as scipy_stats

import synthguard.functional as F
from synthguard import IncompatibleStatsError, InvalidInputError
from synthguard.stats import EmbeddingStats

D = 4
SUM_KEYS = (
    "image_count", "image_sum", "image_sum_outer", "text_count", "text_sum", "text_sum_outer",
    "pair_count", "pair_sum_diff", "align_sum", "align_sum_sq", "align_hist", "label_counts",
)  # fmt: skip


def assert_same(a: EmbeddingStats, b: EmbeddingStats, rtol: float = 1e-12) -> None:
    """Sums equal up to float64 rounding; everything else (samples, config) bit-identical."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        if key in SUM_KEYS:
            torch.testing.assert_close(sa[key], sb[key], rtol=rtol, atol=1e-12, msg=key)
        else:
            assert torch.equal(sa[key], sb[key]), key


def make_batches(seed: int, n_batches: int, ids_mode: str) -> list[dict[str, Any]]:
    """Random update() arguments: paired, image-only or text-only, repeated rows and ids."""
    rng = np.random.default_rng(seed)
    batches, next_id = [], 0
    for _ in range(n_batches):
        n = int(rng.integers(0, 9))
        img = rng.normal(size=(n, D))
        if n > 2:
            img[-1] = img[0]  # a duplicate row: equal content hashes must not break exactness
        txt = img + rng.normal(size=(n, D))
        kind = rng.choice(["pair", "image", "text"])
        ids: Any = None
        if ids_mode != "none":
            ints = list(range(next_id, next_id + n))
            if n > 3:
                ints[1] = ints[0]  # a repeated id
            ids = ints if ids_mode == "int" else [f"sample-{i}" for i in ints]
            next_id += n
        batches.append(
            {
                "image_emb": img if kind != "text" else None,
                "text_emb": txt if kind != "image" else None,
                "labels": rng.integers(0, 3, n),
                "ids": ids,
            }
        )
    return batches


def build(batches: list[dict[str, Any]], **config: Any) -> EmbeddingStats:
    stats = EmbeddingStats(D, num_labels=3, **config)
    for batch in batches:
        stats.update(**batch)
    return stats


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10**6),
    n_batches=st.integers(1, 8),
    ids_mode=st.sampled_from(["int", "str", "none"]),
    sample_size=st.integers(0, 12),
    data=st.data(),
)
def test_merge_of_shards_equals_one_pass(
    seed: int, n_batches: int, ids_mode: str, sample_size: int, data: st.DataObject
) -> None:
    batches = make_batches(seed, n_batches, ids_mode)
    config = {"sample_size": sample_size, "seed": seed % 7}
    one_pass = build(batches, **config)
    # Random partition into shards, merged in a random tree order.
    owner = data.draw(st.lists(st.integers(0, 3), min_size=n_batches, max_size=n_batches))
    shards = [
        build([b for b, o in zip(batches, owner, strict=True) if o == s], **config)
        for s in range(4)
    ]
    random.Random(seed).shuffle(shards)
    while len(shards) > 1:
        i = data.draw(st.integers(0, len(shards) - 2))
        shards[i : i + 2] = [shards[i].merge(shards[i + 1])]
    assert_same(shards[0], one_pass)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seeds=st.tuples(*[st.integers(0, 10**6)] * 3), ids_mode=st.sampled_from(["int", "none"]))
def test_merge_is_commutative_and_associative(seeds: tuple[int, ...], ids_mode: str) -> None:
    a, b, c = (build(make_batches(s, 3, ids_mode), sample_size=6) for s in seeds)
    ab, ba = a.merge(b), b.merge(a)
    for key, value in ab.state_dict().items():
        assert torch.equal(value, ba.state_dict()[key]), key  # IEEE addition commutes exactly
    assert_same(ab.merge(c), a.merge(b.merge(c)))
    assert_same(a.merge(EmbeddingStats(D, num_labels=3, sample_size=6)), a)  # identity


def test_sums_match_numpy() -> None:
    rng = np.random.default_rng(0)
    img, txt = rng.normal(size=(200, D)), rng.normal(size=(200, D))
    labels = rng.integers(0, 5, 200)
    stats = EmbeddingStats(D, num_labels=5, hist_edges=np.linspace(-0.5, 0.5, 11))
    for lo in range(0, 200, 64):
        stats.update(img[lo : lo + 64], txt[lo : lo + 64], labels=labels[lo : lo + 64])
    stats.update(image_emb=img[:10])  # image-only rows join the image moments only
    all_img = np.vstack([img, img[:10]])
    assert stats.image.count == 210 and stats.text.count == 200 and stats.n_pairs == 200
    np.testing.assert_allclose(stats.image.mean.numpy(), all_img.mean(0), rtol=1e-12)
    np.testing.assert_allclose(
        stats.image.covariance.numpy(), np.cov(all_img.T, ddof=0), rtol=1e-11
    )
    np.testing.assert_allclose(stats.text.cov(ddof=1).numpy(), np.cov(txt.T), rtol=1e-11)
    np.testing.assert_allclose(stats.pair_mean_diff.numpy(), (img - txt).mean(0), rtol=1e-12)
    cos = (img * txt).sum(1) / np.linalg.norm(img, axis=1) / np.linalg.norm(txt, axis=1)
    n, total, total_sq = stats.alignment_sums
    assert n == 200
    assert total == pytest.approx(cos.sum(), rel=1e-12)
    assert total_sq == pytest.approx((cos**2).sum(), rel=1e-12)
    edges, counts = stats.alignment_histogram
    expected = np.histogram(np.clip(cos, -0.5, 0.5), bins=edges.numpy())[0]
    assert counts.tolist() == expected.tolist()  # out-of-range values land in the end bins
    assert stats.label_counts.tolist() == np.bincount(labels, minlength=5).tolist()


def test_metrics_of_merged_shards_equal_metrics_of_all_rows() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ref = rng.normal(size=(300, 8)) + 0.2
    shards = [EmbeddingStats.from_embeddings(x[i : i + 150]) for i in range(0, 600, 150)]
    merged = shards[0].merge(shards[1]).merge(shards[2].merge(shards[3]))
    for fn in (F.vendi_score, F.effective_rank, F.total_variance, F.mean_pairwise_cosine):
        assert fn(merged) == pytest.approx(fn(x), rel=1e-9), fn.__name__
    assert F.frechet_distance(merged, ref) == pytest.approx(F.frechet_distance(x, ref), rel=1e-9)


def test_sample_holds_every_row_when_large_enough() -> None:
    rng = np.random.default_rng(2)
    img, txt = rng.normal(size=(30, D)), rng.normal(size=(30, D))
    stats = EmbeddingStats.from_embeddings(img, txt, labels=np.arange(30) % 3, num_labels=3)
    got = stats.sample("image").numpy()
    assert sorted(map(tuple, got)) == sorted(map(tuple, img))
    # Paired rows are sampled together: row i of both samples is one pair, with its label.
    index = [int(np.flatnonzero((img == row).all(1))[0]) for row in got]
    np.testing.assert_array_equal(stats.sample("text").numpy(), txt[index])
    assert stats.sample_labels("text").tolist() == [i % 3 for i in index]


def test_sample_with_ids_ignores_row_order_and_batching() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, D))
    ids = [f"img-{i}" for i in range(100)]
    one = EmbeddingStats.from_embeddings(x, ids=ids, sample_size=10)
    perm = rng.permutation(100)
    shuffled = EmbeddingStats(D, sample_size=10)
    for chunk in np.array_split(perm, 7):
        shuffled.update(x[chunk], ids=[ids[i] for i in chunk])
    assert torch.equal(one.sample(), shuffled.sample())
    other_seed = EmbeddingStats.from_embeddings(x, ids=ids, sample_size=10, seed=1)
    assert not torch.equal(one.sample(), other_seed.sample())


def test_sample_is_uniform_over_seeds() -> None:
    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    hits = np.zeros(20)
    for seed in range(400):
        sample = EmbeddingStats.from_embeddings(x, ids=range(20), sample_size=5, seed=seed).sample()
        hits[(sample[:, 0].numpy() / 2).astype(int)] += 1
    assert hits.sum() == 400 * 5
    assert scipy_stats.chisquare(hits).pvalue > 0.001  # each row in ~100 of 400 samples


def test_state_dict_round_trips_through_safetensors(tmp_path: Any) -> None:
    stats = build(make_batches(4, 6, "str"), sample_size=5, fingerprint="abc123", seed=9)
    state = stats.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert not any("mean" in key for key in state)  # sums, never means
    assert all(state[k].dtype == torch.float64 for k in SUM_KEYS)
    save_file(state, str(tmp_path / "stats.safetensors"))
    loaded = EmbeddingStats.from_state_dict(load_file(str(tmp_path / "stats.safetensors")))
    assert loaded.fingerprint == "abc123" and loaded.seed == 9 and loaded.num_labels == 3
    assert_same(loaded, stats, rtol=0)
    more = make_batches(5, 2, "str")
    assert_same(
        build(more, sample_size=5, seed=9).merge(loaded),
        build(more, sample_size=5, seed=9).merge(stats),
    )


def test_state_dict_validation() -> None:
    state = EmbeddingStats(D).state_dict()
    with pytest.raises(InvalidInputError, match=r"missing keys \['dim'\]"):
        EmbeddingStats.from_state_dict({k: v for k, v in state.items() if k != "dim"})
    with pytest.raises(InvalidInputError, match=r"state\['image_sum'\] must be torch.float64"):
        EmbeddingStats.from_state_dict(
            {**state, "image_sum": torch.zeros(D + 1, dtype=torch.float64)}
        )
    with pytest.raises(InvalidInputError, match=r"has unknown keys \['image_mean'\]"):
        EmbeddingStats.from_state_dict({**state, "image_mean": torch.zeros(D)})
    with pytest.raises(InvalidInputError, match=r"format_version must be 1, got 7"):
        EmbeddingStats.from_state_dict({**state, "format_version": torch.tensor(7)})


def test_flat_sums_round_trip() -> None:
    stats = build(make_batches(6, 4, "int"))
    flat = stats.flat_sums()
    assert flat.dtype == torch.float64 and flat.ndim == 1
    assert flat.numel() == sum(t.numel() for t in stats._sum_fields().values())
    copy = EmbeddingStats.from_state_dict(stats.state_dict())
    copy.load_flat_sums(flat * 2)  # what an all-reduce over two identical ranks would give
    assert copy.image.count == 2 * stats.image.count
    with pytest.raises(InvalidInputError, match="flat must have"):
        copy.load_flat_sums(torch.cat([flat, flat[:1]]))


def test_merge_fingerprints_and_config() -> None:
    x = np.eye(D)
    a = EmbeddingStats.from_embeddings(x, fingerprint="aaa")
    assert a.merge(EmbeddingStats.from_embeddings(x)).fingerprint == "aaa"  # None = unknown
    assert EmbeddingStats.from_embeddings(x).merge(a).fingerprint == "aaa"
    with pytest.raises(IncompatibleStatsError, match="fingerprint 'aaa' != 'bbb'"):
        a.merge(EmbeddingStats.from_embeddings(x, fingerprint="bbb"))
    with pytest.raises(IncompatibleStatsError, match="different dim: 4 != 5"):
        a.merge(EmbeddingStats(5))
    with pytest.raises(IncompatibleStatsError, match="different sample_size: 1024 != 3"):
        a.merge(EmbeddingStats(D, sample_size=3))
    with pytest.raises(IncompatibleStatsError, match="different hist_edges"):
        a.merge(EmbeddingStats(D, hist_edges=[-1.0, 0.0, 1.0]))
    with pytest.raises(InvalidInputError, match="other must be an EmbeddingStats"):
        a.merge(x)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, r"dim must be >= 1, got 0"),
        ({"dim": 2.0}, r"dim must be an integer, got 2.0"),
        ({"dim": D, "sample_size": -1}, r"sample_size must be >= 0, got -1"),
        ({"dim": D, "seed": 2**63}, r"seed must be < 2\*\*63"),
        ({"dim": D, "num_labels": 0}, r"num_labels must be >= 1, got 0"),
        ({"dim": D, "fingerprint": ""}, r"fingerprint must be a non-empty str or None"),
        ({"dim": D, "hist_edges": [0.0, 0.0]}, r"hist_edges must be strictly increasing"),
        ({"dim": D, "hist_edges": [0.0]}, r"hist_edges must be >= 2 finite values"),
    ],
)
def test_constructor_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        EmbeddingStats(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, r"update needs image_emb, text_emb or both; got neither"),
        ({"image_emb": np.ones((2, 3))}, r"image_emb must have d=4 columns, got 3"),
        ({"image_emb": np.ones((2, D)), "text_emb": np.ones((3, D))}, r"same number of rows"),
        ({"text_emb": np.array([[np.nan] * D])}, r"text_emb must be finite; rows \[0\]"),
        ({"image_emb": np.ones((2, D)), "labels": [0, 1]}, r"num_labels is None"),
        (
            {"image_emb": np.ones((2, D)), "ids": [1]},
            r"ids must have one entry per row \(2\), got 1",
        ),
        ({"image_emb": np.ones((1, D)), "ids": [(1, 2)]}, r"ids\[0\] must be an int, str or bytes"),
        ({"image_emb": np.zeros((1, D)), "text_emb": np.ones((1, D))}, r"non-zero norm"),
    ],
)
def test_update_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        EmbeddingStats(D).update(**kwargs)


def test_label_errors_and_empty_update() -> None:
    stats = EmbeddingStats(D, num_labels=2)
    with pytest.raises(
        InvalidInputError, match=r"labels must lie in \[0, num_labels=2\), got min 0, max 2"
    ):
        stats.update(np.ones((2, D)), labels=[0, 2])
    with pytest.raises(InvalidInputError, match=r"labels must be 2 integers"):
        stats.update(np.ones((2, D)), labels=[0.0, 1.0])
    stats.update(np.ones((0, D)), np.ones((0, D)), labels=[], ids=[])
    assert_same(stats, EmbeddingStats(D, num_labels=2), rtol=0)
    assert repr(stats) == "EmbeddingStats(dim=4, fingerprint=None, images=0, texts=0, pairs=0)"


def test_rejected_update_leaves_state_untouched() -> None:
    stats = build(make_batches(7, 3, "int"), sample_size=4)
    before = stats.state_dict()
    img = np.ones((3, D))
    with pytest.raises(InvalidInputError, match="non-zero norm"):
        stats.update(img, np.vstack([np.ones((2, D)), np.zeros((1, D))]), ids=[1, 2, 3])
    with pytest.raises(InvalidInputError, match=r"ids\[2\] must be an int, str or bytes"):
        stats.update(img, img, ids=[1, 2, 3.5])
    with pytest.raises(InvalidInputError, match="labels must lie in"):
        stats.update(img, labels=[0, 1, 7])
    after = stats.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
