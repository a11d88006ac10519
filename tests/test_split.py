"""The rows the distribution tests use (synthguard.checks.split_batch): the rule, checked by
brute force, and its purpose, checked on real digits: real batch rows are removed by the copy
checks as often as the null's resample rows are."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import synthguard as sg
from synthguard.checks import BatchContext, split_batch, world_held_out
from synthguard.datasets import DIGIT_NAMES, load_digits
from synthguard.guard import GuardPlan


def _unit(rows: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(rows)
    return t / t.norm(dim=1, keepdim=True)


def _context(support: torch.Tensor, accepted: torch.Tensor) -> BatchContext:
    # split_batch reads only these two fields of a context
    return cast(BatchContext, SimpleNamespace(support=support, accepted=accepted))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    s=st.integers(8, 40),
    q=st.integers(0, 40),
    threshold=st.sampled_from([0.9, 0.97, 0.995, math.inf]),
)
def test_tested_rows_pass_the_copy_checks_in_their_world(
    seed: int, s: int, q: int, threshold: float
) -> None:
    rng = np.random.default_rng(seed)
    # three dimensions: near copies (cosine above the threshold) are common
    support, candidates = _unit(rng.normal(size=(s, 3))), _unit(rng.normal(size=(q, 3)))
    accepted = torch.from_numpy(rng.random(s) < 0.8)
    accepted[0] = True
    eligible = torch.from_numpy(rng.random(q) < 0.9)
    top = max(1, min(int(accepted.sum()), q, 12))
    sizes = list(range(top, 0, -1))[: rng.integers(1, top + 1)]
    ctx = _context(support, accepted)

    split = split_batch(ctx, candidates, eligible, sizes, seed, threshold)

    if split.size == 0:
        assert split.held_out.numel() == 0
        return
    assert split.size in sizes
    assert torch.equal(split.tested, split.tested.sort().values)
    # the world leaves out a prefix of one seeded draw of the whole support, cut at its
    # size-th accepted row; the comparison leaves out exactly that prefix's accepted rows
    out = split.world_out
    assert bool(accepted[out[-1]]) and int(accepted[out].sum()) == split.size
    assert torch.equal(split.held_out, out[accepted[out]])
    # as many candidates as the world left out (fewer only when the batch has no more)
    count = split.world_candidates
    assert count >= min(out.numel(), q)
    # brute force: every candidate in the world against every other row of the world
    kept = torch.ones(s, dtype=torch.bool)
    kept[out] = False
    world = torch.cat([support[kept], candidates[:count]])
    passed = []
    for i in range(count):
        cos = world @ candidates[i]
        cos[int(kept.sum()) + i] = -math.inf  # itself
        passed.append(bool(eligible[i]) and not bool((cos > threshold).any()))
    first = [i for i, ok in enumerate(passed) if ok][: split.size]
    assert split.tested.tolist() == first


def test_world_held_out_is_a_seeded_uniform_draw_of_the_support() -> None:
    accepted = torch.tensor([True, False] * 50)
    ctx = _context(torch.eye(100, dtype=torch.float64), accepted)
    out = world_held_out(ctx, 10, seed=3, digest=5)
    assert torch.equal(out, world_held_out(ctx, 10, seed=3, digest=5))
    assert not torch.equal(out, world_held_out(ctx, 10, seed=3, digest=6))
    # a smaller size's set is a prefix of a larger size's (one draw per batch)
    assert torch.equal(world_held_out(ctx, 4, 3, 5), out[: world_held_out(ctx, 4, 3, 5).numel()])
    # rejected rows are drawn as often as accepted ones: half the prefix, on average
    counts = [world_held_out(ctx, 10, seed=3, digest=k).numel() for k in range(400)]
    assert 19.0 < float(np.mean(counts)) < 21.0  # negative binomial: mean 20, sd/√400 ≈ 0.2
    with pytest.raises(ValueError, match="size must be in"):
        world_held_out(ctx, 51, seed=0)


def test_split_batch_refuses_flags_of_another_length() -> None:
    ctx = _context(torch.eye(4, dtype=torch.float64), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="eligible must have one flag per candidate"):
        split_batch(ctx, torch.eye(4, dtype=torch.float64), torch.ones(3, dtype=torch.bool),
                    [2], 0, 0.9)  # fmt: skip


@pytest.mark.slow
def test_real_batch_rows_fail_the_copy_checks_as_often_as_resample_rows(
    digits_encoder: Any,
) -> None:
    """At m/n = 0.5 a real batch row's own decision (against the whole support and the earlier
    batch rows, ~1.25 n rows) removes it as a copy more often than the null removes a support
    row (against the n − 1 others); judged in its world, as often. Paired over random splits
    (copies cluster, so the spread comes from the splits, not a binomial)."""
    digits = load_digits("all")
    image = digits_encoder.encode_images(digits.images).double()
    text = digits_encoder.encode_texts(digits.captions)
    labels = torch.as_tensor(digits.labels)
    rng = np.random.default_rng(0)
    world, standard = [], []  # per split: the batch rows' copy-flag rate − the support's
    for _ in range(30):
        order = torch.from_numpy(rng.permutation(image.shape[0]))
        ref_idx, batch = order[:1000], image[order[1000:1500]]
        ref = sg.Reference.from_embeddings(
            image[ref_idx], text[ref_idx], labels=labels[ref_idx], label_names=DIGIT_NAMES,
            encoder=digits_encoder, label_templates="a handwritten digit {name}",
        )  # fmt: skip
        plan = GuardPlan.compile(ref, sg.GuardConfig(alpha_batch=0.1, n_resamples=99))
        cosine = plan.copy_cosine
        support = ref.support_image
        rate = float((sg.checks.max_cosine(support, exclude="self") > cosine).double().mean())
        eligible = torch.ones(batch.shape[0], dtype=torch.bool)
        seed = int(rng.integers(1 << 30))
        split = split_batch(plan.context(), batch, eligible, [431], seed, cosine)
        assert split.size == 431
        # brute force: the world's first |H| candidates against its other rows
        kept = torch.ones(support.shape[0], dtype=torch.bool)
        kept[split.world_out] = False
        rows = batch[: split.world_out.numel()]
        cos = rows @ torch.cat([support[kept], rows]).T
        cos[:, int(kept.sum()) :].fill_diagonal_(-math.inf)
        world.append(float((cos.max(dim=1).values > cosine).double().mean()) - rate)
        # the per-sample decision: the whole support, then the earlier batch rows
        own = torch.maximum(
            sg.checks.max_cosine(batch, support), sg.checks.max_cosine(batch, exclude="later")
        )
        standard.append(float((own > cosine).double().mean()) - rate)
    w, excess = np.asarray(world), np.asarray(standard) - np.asarray(world)
    se = w.std(ddof=1) / math.sqrt(w.size)
    assert abs(w.mean()) < 3.0 * se, (w.mean(), se)
    assert excess.mean() > 3.0 * excess.std(ddof=1) / math.sqrt(excess.size), excess
