"""The calibration machinery against brute-force and textbook references."""

from __future__ import annotations

import math

import numpy as np
import prdc as prdc_package
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import synthguard as sg
from _holm import closed_weighted_bonferroni
from synthguard import functional as F
from synthguard.checks import (
    BATCH_TESTS,
    RESAMPLED_TESTS,
    BatchContext,
    SampleCalibration,
    batch_inputs,
    batch_null,
    batch_values,
    bound_at,
    duplicate_count_bound,
    duplicate_count_p,
    duplicate_rate,
    empirical_p,
    flag_rate_test,
    held_out,
    holm,
    kth_distance,
    max_cosine,
)
from synthguard.checks._geometry import nearest_cosine
from synthguard.checks._null import kept_radii_sq
from synthguard.functional.mmd import rbf_kernel
from synthguard.stats import Moments


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


# -- per-sample pieces ---------------------------------------------------------------------


def test_max_cosine_and_kth_distance_match_brute_force() -> None:
    x, y = _unit(30, 5, 0), _unit(40, 5, 1)
    sims = (x @ y.T).numpy()
    np.testing.assert_allclose(max_cosine(x, y).numpy(), sims.max(1), rtol=0, atol=1e-12)
    self_sims = (x @ x.T).numpy()
    loo = np.where(np.eye(30, dtype=bool), -np.inf, self_sims).max(1)
    np.testing.assert_allclose(max_cosine(x, exclude="self").numpy(), loo, atol=1e-12)
    earlier = [-np.inf] + [self_sims[i, :i].max() for i in range(1, 30)]
    np.testing.assert_allclose(max_cosine(x, exclude="later").numpy(), earlier, atol=1e-12)
    dists = np.linalg.norm(x.numpy()[:, None] - y.numpy()[None], axis=2)
    np.testing.assert_allclose(
        kth_distance(x, y, 3).numpy(), np.sort(dists, axis=1)[:, 2], atol=1e-7
    )
    # The row reaching the maximum (the report's partner of a duplicate or a copy).
    assert nearest_cosine(x, y)[1].tolist() == sims.argmax(1).tolist()
    partners = [-1] + [int(self_sims[i, :i].argmax()) for i in range(1, 30)]
    assert nearest_cosine(x, exclude="later")[1].tolist() == partners


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=5, max_value=80),
    st.integers(min_value=1, max_value=4),
    st.floats(min_value=0.01, max_value=0.5),
    st.integers(min_value=0, max_value=10_000),
)
def test_joint_calibration_is_the_largest_union_within_alpha(
    s: int, t: int, alpha: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    # Many ties, at values float32 cannot hold (sevenths): limits rounded to float32 once
    # counted a column's own r-th largest value as above it.
    badness = torch.from_numpy(rng.integers(0, 6, size=(s, t)) / 7.0 + 0.1)
    cal = SampleCalibration(names=tuple(f"c{j}" for j in range(t)), badness=badness)

    def union(r: int) -> int:  # brute force: flag strictly above the r-th largest of each column
        if r == 0:
            return 0
        limits = np.sort(badness.numpy(), axis=0)[::-1][min(r, s) - 1]
        return int((badness.numpy() > limits).any(axis=1).sum())

    r = cal.tail_count(alpha)
    assert union(r) <= alpha * s
    assert r == s or union(r + 1) > alpha * s or union(s) <= alpha * s
    flags = cal.flags(alpha)
    assert int(flags.sum()) == union(r)
    thr = cal.thresholds(alpha)
    manual = (badness > torch.tensor([thr[n] for n in cal.names], dtype=torch.float64)).any(dim=1)
    assert torch.equal(flags, manual)


def test_conformal_p_values_match_their_definition() -> None:
    badness = torch.tensor([[1.0], [2.0], [2.0], [5.0]])
    cal = SampleCalibration(names=("a",), badness=badness)
    new = torch.tensor([0.0, 2.0, 3.0, 9.0])
    expected = [(1 + (badness[:, 0] >= b).sum().item()) / 5 for b in new]
    assert cal.p_values("a", new).tolist() == pytest.approx(expected)


# -- batch tests: p-values, bounds, Holm -----------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(-5, 5, allow_nan=False), min_size=5, max_size=60),
    st.floats(-6, 6, allow_nan=False),
    st.floats(0.001, 0.5),
    st.sampled_from(["low", "high"]),
)
def test_bound_is_exactly_where_p_crosses_the_level(
    null_values: list[float], value: float, level: float, direction: str
) -> None:
    null = torch.tensor(null_values, dtype=torch.float64)
    p = empirical_p(null, value, direction)  # type: ignore[arg-type]
    bound = bound_at(null, level, direction)  # type: ignore[arg-type]
    if bound is None:
        assert p > level
    else:
        beyond = value < bound if direction == "low" else value > bound
        assert beyond == (p <= level + 1e-12)


def _holm_textbook(p: list[float], alpha: float) -> tuple[list[bool], list[float]]:
    k = len(p)
    order = sorted(range(k), key=lambda i: (p[i], i))
    rejected = [False] * k
    for rank, i in enumerate(order):
        if p[i] > alpha / (k - rank):
            break
        rejected[i] = True
    adjusted = [0.0] * k
    for rank, i in enumerate(order):
        adjusted[i] = max(min(1.0, (k - j) * p[order[j]]) for j in range(rank + 1))
    return rejected, adjusted


def test_each_tests_failure_rule_is_stated_as_it_is_decided() -> None:
    """A label or concept mix test is decided by its permutation p (its JS value has no bound);
    only a resampled test whose level is out of the null's reach says it can never fail."""
    from synthguard.report._html import _failed_words

    mix = sg.MetricResult(
        name="label_drift", value=0.07, direction="high", p_value=0.001,
        adjusted_p_value=0.008, level=0.00625, passed=False,
    )  # fmt: skip
    assert "FAILED: fails if its permutation p <= 0.00625;" in mix.describe()
    assert "never" not in mix.describe()
    assert "fails when its permutation p ≤ 0.00625 (" in _failed_words(mix, 0.05)
    unreachable = sg.MetricResult(
        name="cmmd", value=0.3, direction="high", p_value=0.5, adjusted_p_value=1.0,
        level=0.0001, passed=True,
    )  # fmt: skip
    assert "passed: fails if never (too few resamples);" in unreachable.describe()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=10), st.floats(0.001, 0.3))
def test_holm_matches_the_textbook_procedure(p: list[float], alpha: float) -> None:
    levels, adjusted, rejected = holm(p, alpha)
    ref_rejected, ref_adjusted = _holm_textbook(p, alpha)
    assert rejected == ref_rejected
    assert adjusted == pytest.approx(ref_adjusted)
    assert [a <= alpha for a in adjusted] == rejected
    assert sorted(levels) == pytest.approx(sorted(alpha / (len(p) - i) for i in range(len(p))))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.0, 1.0), st.sampled_from([0.5, 1.0, 2.0, 3.0, 7.5])),
        min_size=1, max_size=7,
    ),
    st.floats(0.001, 0.3),
)  # fmt: skip
def test_weighted_holm_is_the_closure_of_weighted_bonferroni(
    tests: list[tuple[float, float]], alpha: float
) -> None:
    p, w = [t[0] for t in tests], [t[1] for t in tests]
    levels, adjusted, rejected = holm(p, alpha, w)
    ref_rejected, ref_adjusted = closed_weighted_bonferroni(p, w, alpha)
    assert adjusted == pytest.approx(ref_adjusted)
    # Ties at the level itself may round either way; elsewhere the decisions agree.
    agree = zip(rejected, ref_rejected, adjusted, strict=True)
    assert all(r == q or abs(a - alpha) < 1e-9 for r, q, a in agree)
    assert [a <= alpha for a in adjusted] == rejected
    assert all(0 < lv <= alpha * (1 + 1e-12) for lv in levels)


def test_weighted_holm_keeps_the_family_wise_error_rate() -> None:
    """Monte Carlo under the global null (independent uniform p-values): the weighted family
    rejects anything at most alpha of the time, and a heavy test takes its larger share."""
    rng = np.random.default_rng(0)
    alpha, w, draws = 0.05, [3.0, 1.0, 1.0, 1.0, 1.0, 1.0], 20000
    any_rejected = heavy_rejected = 0
    for p in rng.random((draws, len(w))):
        _, _, rejected = holm(list(p), alpha, w)
        any_rejected += any(rejected)
        heavy_rejected += rejected[0]
    se = math.sqrt(alpha * (1 - alpha) / draws)
    assert any_rejected / draws <= alpha + 3 * se
    # The heavy test is tried first at about alpha·3/8 (more when the others fall first).
    assert heavy_rejected / draws == pytest.approx(alpha * 3 / 8, abs=4 * se)


def test_holm_refuses_bad_weights() -> None:
    for weights in ([1.0], [1.0, 0.0], [1.0, -2.0], [1.0, math.inf]):
        with pytest.raises(ValueError, match="weights must be 2 positive finite numbers"):
            holm([0.1, 0.2], 0.05, weights)


# -- batch metrics against the functional core and peers -----------------------------------


def _context(
    support: torch.Tensor,
    text: torch.Tensor,
    k: int = 5,
    cmmd_rows: int = 60,
    tokens: torch.Tensor | None = None,
) -> BatchContext:
    rows = support[:cmmd_rows]
    return BatchContext(
        moments=Moments.from_embeddings(support),
        alignment=(
            support.shape[0],
            float(F.alignment(support, text).sum()),
            float((F.alignment(support, text) ** 2).sum()),
        ),
        accepted=torch.ones(support.shape[0], dtype=torch.bool),
        support=support,
        support_text=text,
        k=k,
        coverage_rows=support.shape[0],
        coverage_radii_sq=F.knn_radii(support, k) ** 2,
        cmmd_rows=cmmd_rows,
        cmmd_sigma=10.0,
        cmmd_kernel=rbf_kernel(rows, rows, 10.0).fill_diagonal_(1.0),
        duplicate_cosine=0.9,
        text_moments=Moments.from_embeddings(text),
        support_tokens=tokens,
    )


def test_batch_values_match_functional_and_peer_packages() -> None:
    support, batch_img, batch_txt = _unit(200, 8, 0), _unit(40, 8, 1), _unit(40, 8, 2)
    support_txt = _unit(200, 8, 5)
    ctx = _context(support, support_txt)
    values = batch_values(ctx, batch_img, batch_txt)
    assert values["alignment_shift"] == pytest.approx(
        float(F.alignment(batch_img, batch_txt).mean() - F.alignment(support, support_txt).mean())
    )
    assert values["variance_ratio"] == pytest.approx(
        F.total_variance(batch_img) / F.total_variance(support)
    )
    assert values["vendi_ratio"] == pytest.approx(F.vendi_score(batch_img) / F.vendi_score(support))
    assert values["text_variance_ratio"] == pytest.approx(
        F.total_variance(batch_txt) / F.total_variance(support_txt)
    )
    assert values["text_vendi_ratio"] == pytest.approx(
        F.vendi_score(batch_txt) / F.vendi_score(support_txt)
    )
    batch_cos, support_cos = F.alignment(batch_img, batch_txt), F.alignment(support, support_txt)
    assert values["alignment_variance"] == pytest.approx(
        float(np.var(batch_cos.numpy()) / np.var(support_cos.numpy()))
    )
    peer = prdc_package.compute_prdc(
        real_features=support.numpy(), fake_features=batch_img.numpy(), nearest_k=5
    )
    assert values["coverage"] == pytest.approx(peer["coverage"])
    assert values["density"] == pytest.approx(peer["density"])
    assert values["frechet_distance"] == pytest.approx(F.frechet_distance(batch_img, support))
    assert values["cmmd"] == pytest.approx(F.cmmd(batch_img, support[:60]), rel=1e-9)
    dup = F.near_duplicates(batch_img, 0.9)
    assert duplicate_rate(batch_img, 0.9) == pytest.approx(len(set(dup[:, 1].tolist())) / 40)


def test_excluded_rows_leave_the_reference_exactly() -> None:
    support, support_txt = _unit(120, 6, 3), _unit(120, 6, 4)
    ctx = _context(support, support_txt, cmmd_rows=50)
    exclude = torch.tensor([3, 10, 55, 70, 119, 0, 42, 49])
    rest = torch.ones(120, dtype=torch.bool)
    rest[exclude] = False
    img, txt = support[exclude], support_txt[exclude]
    values = batch_values(ctx, img, txt, exclude=exclude)
    assert values["alignment_shift"] == pytest.approx(
        float(F.alignment(img, txt).mean() - F.alignment(support[rest], support_txt[rest]).mean())
    )
    assert values["variance_ratio"] == pytest.approx(
        F.total_variance(img) / F.total_variance(support[rest])
    )
    assert values["vendi_ratio"] == pytest.approx(F.vendi_score(img) / F.vendi_score(support[rest]))
    rest_cos = F.alignment(support[rest], support_txt[rest]).numpy()
    assert values["alignment_variance"] == pytest.approx(
        float(np.var(F.alignment(img, txt).numpy()) / np.var(rest_cos))
    )
    # FD against the complement's own moments (sums minus the excluded rows)
    assert values["frechet_distance"] == pytest.approx(F.frechet_distance(img, support[rest]))
    keep_cmmd = rest[:50]
    assert values["cmmd"] == pytest.approx(F.cmmd(img, support[:50][keep_cmmd]), rel=1e-9)
    # coverage over the complement, k-NN radii within the complement (brute force)
    radii = torch.cdist(support[rest], support[rest]).pow(2).sort(dim=1).values[:, 5]
    d2 = torch.cdist(support[rest], img) ** 2
    covered = (d2 < radii[:, None] - 1e-9).any(dim=1).double().mean()
    assert values["coverage"] == pytest.approx(float(covered))


def test_resampled_null_calibrates_false_alarms_on_fresh_real_batches() -> None:
    """Fresh real batches from the reference's distribution fail each test at about its level."""
    g = torch.Generator().manual_seed(5)
    centres = torch.randn(6, 12, generator=g, dtype=torch.float64) * 2
    # Captions from 6 classes x 5 templates: they repeat, as templated real captions do.
    caption_centres = torch.randn(6, 12, generator=g, dtype=torch.float64) * 2
    templates = torch.randn(5, 12, generator=g, dtype=torch.float64)
    lengths = torch.tensor([5.0, 6.0, 7.0, 9.0, 12.0], dtype=torch.float64)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = torch.randint(0, 6, (n,), generator=g)
        t = torch.randint(0, 5, (n,), generator=g)
        img = centres[k] + torch.randn(n, 12, generator=g, dtype=torch.float64)
        txt = caption_centres[k] + templates[t]
        return (
            torch.nn.functional.normalize(img, dim=1),
            torch.nn.functional.normalize(txt, dim=1),
            lengths[t] + (k % 2),
        )

    # A resampled null is conditional on its support, so its level holds on average over
    # supports: six supports, 30 fresh batches each, per batch size.
    supports, per_support, level = 12, 20, 0.1
    trials = supports * per_support
    for size in (40, 400):  # m/n = 1/30 and 1/2 (of the 1,200 − m rows kept)
        fails = torch.zeros(len(RESAMPLED_TESTS))
        for _ in range(supports):
            support, support_txt, support_tokens = draw(1200)
            ctx = _context(support, support_txt, cmmd_rows=300, tokens=support_tokens)
            radii_sq = F.knn_radii(support[:600], 5) ** 2
            ctx = BatchContext(
                **{**ctx.__dict__, "coverage_rows": 600, "coverage_radii_sq": radii_sq}
            )
            null = batch_null(ctx, size, 199, seed=0, columns=RESAMPLED_TESTS)
            assert null.shape == (199, len(RESAMPLED_TESTS))
            assert not math.isnan(float(null.sum()))
            for _ in range(per_support):
                img, txt, tokens = draw(size)
                inputs = batch_inputs(ctx, img, txt, tokens, held_out(ctx, size, 0, img))
                for j, name in enumerate(RESAMPLED_TESTS):
                    test = BATCH_TESTS[name]
                    value = test.value(inputs)
                    fails[j] += empirical_p(null[:, j], value, test.direction) <= level
        rates = fails / trials
        for j, name in enumerate(RESAMPLED_TESTS):
            # level 0.1 with 240 trials: sd 0.019; allow 4 sd above, and the test must fire
            assert rates[j] <= level + 0.077, (size, name, float(rates[j]))
            if name != "caption_duplicate_rate":  # discrete: ties make it conservative
                assert rates[j] >= 0.03, (size, name, float(rates[j]))


def test_caption_tests_against_brute_force() -> None:
    """Caption length shift and caption duplicates, without the excluded support rows."""
    support, support_txt = _unit(100, 6, 3), _unit(100, 6, 4)
    tokens = torch.arange(100, dtype=torch.float64) % 7 + 3
    ctx = _context(support, support_txt, tokens=tokens)
    exclude = torch.tensor([0, 5, 9, 50])
    img, txt = _unit(12, 6, 8), _unit(12, 6, 9)
    txt[5] = txt[2]  # the same caption twice, and once more up to rounding
    txt[9] = torch.nn.functional.normalize(txt[2] + 1e-9, dim=0)
    batch_tokens = torch.tensor([4.0, 9.0] * 6)
    inputs = batch_inputs(ctx, img, txt, batch_tokens, exclude)
    rest = torch.ones(100, dtype=torch.bool)
    rest[exclude] = False
    length = BATCH_TESTS["caption_length_shift"].value(inputs)
    assert length == pytest.approx(6.5 - float(tokens[rest].mean()))
    assert BATCH_TESTS["caption_duplicate_rate"].value(inputs) == pytest.approx(2 / 12)
    no_tokens = batch_inputs(ctx, img, txt, None, exclude)
    assert math.isnan(BATCH_TESTS["caption_length_shift"].value(no_tokens))
    unrecorded = batch_inputs(_context(support, support_txt), img, txt, batch_tokens, exclude)
    assert math.isnan(BATCH_TESTS["caption_length_shift"].value(unrecorded))


def test_held_out_rows_are_seeded_accepted_rows() -> None:
    support, support_txt = _unit(100, 6, 3), _unit(100, 6, 4)
    ctx = _context(support, support_txt)
    accepted = torch.ones(100, dtype=torch.bool)
    accepted[::3] = False
    ctx = BatchContext(**{**ctx.__dict__, "accepted": accepted})
    rows = held_out(ctx, 20, seed=7)
    assert rows.numel() == 20 and rows.unique().numel() == 20
    assert bool(accepted[rows].all())
    assert torch.equal(rows, held_out(ctx, 20, seed=7))
    assert not torch.equal(rows, held_out(ctx, 20, seed=8))
    batch = _unit(20, 6, 9)
    assert torch.equal(held_out(ctx, 20, 7, batch), held_out(ctx, 20, 7, batch.clone()))
    assert not torch.equal(held_out(ctx, 20, 7, batch), held_out(ctx, 20, 7, batch[1:]))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=8, max_value=90),
    st.floats(min_value=0.0, max_value=0.95),
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=0, max_value=10_000),
)
def test_kept_radii_equal_brute_force_knn_within_the_kept_rows(
    c: int, dropped: float, k: int, seed: int
) -> None:
    """Exact with the neighbour lists and when they run out (more than 48 dropped)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(c, 3, generator=g, dtype=torch.float64)
    rows[1] = rows[0]  # a duplicate: neighbours at distance 0 count
    ctx = _context(
        torch.nn.functional.normalize(rows, dim=1), _unit(c, 3, seed + 1), k=min(k, c - 1)
    )
    keep = torch.rand(c, generator=g) >= dropped
    got = kept_radii_sq(ctx, keep)
    kept = ctx.support[keep]
    d2 = torch.cdist(kept, kept).pow(2)
    d2.fill_diagonal_(math.inf)
    ordered = d2.sort(dim=1).values
    want = (
        ordered[:, ctx.k - 1] if kept.shape[0] > ctx.k
        else torch.full((kept.shape[0],), math.inf, dtype=torch.float64)
    )  # fmt: skip
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_duplicate_count_p_is_the_conditional_poisson_tail() -> None:
    """Brute force: P(X >= x | X + Y = T) for X ~ Poisson(λ·C(m,2)), Y ~ Poisson(λ·C(n,2))."""
    for count, rows, support_count, support_size in [(3, 40, 2, 300), (0, 64, 5, 500),
                                                     (6, 128, 3, 300), (1, 10, 0, 50)]:  # fmt: skip
        a, b = math.comb(rows, 2), math.comb(support_size, 2)
        total = count + support_count
        lam = 1e-4  # any rate: it cancels
        joint = [
            stats.poisson.pmf(j, lam * a) * stats.poisson.pmf(total - j, lam * b)
            for j in range(total + 1)
        ]
        want = sum(joint[count:]) / sum(joint) if count else 1.0
        p, median = duplicate_count_p(count, rows, support_count, support_size)
        assert p == pytest.approx(want, rel=1e-9)
        assert median == pytest.approx(
            stats.poisson.median(support_count * a / b) / rows if support_count else 0.0
        )


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=2, max_value=300),
    st.integers(min_value=0, max_value=20),
    st.sampled_from([0.001, 0.01, 0.05]),
)
def test_duplicate_count_bound_equals_a_scan_of_every_count(
    rows: int, support_count: int, level: float
) -> None:
    bound = duplicate_count_bound(rows, support_count, 600, level)
    for count in range(rows + 1):
        p, _ = duplicate_count_p(count, rows, support_count, 600)
        assert (p <= level) == (count / rows > bound + 1e-12), (count, p, bound)


def test_duplicate_count_test_holds_its_level_on_poisson_counts() -> None:
    """Equal rates: the exact test rejects at most at its level (it is conservative)."""
    rng = np.random.default_rng(0)
    rows, support_size, level = 128, 300, 0.05
    a, b = math.comb(rows, 2), math.comb(support_size, 2)
    for rate in (1e-5, 1e-4, 5e-4):
        batch = rng.poisson(rate * a, 4000)
        support = rng.poisson(rate * b, 4000)
        rejected = np.mean(
            [duplicate_count_p(int(x), rows, int(y), support_size)[0] <= level
             for x, y in zip(batch, support, strict=True)]
        )  # fmt: skip
        assert rejected <= level + 3 * math.sqrt(level * (1 - level) / 4000), (rate, rejected)


def test_flag_rate_test_is_the_beta_binomial_tail() -> None:
    from scipy import stats

    p, bound, median = flag_rate_test(9, 100, 30, 600, 0.01)
    assert median == pytest.approx(stats.betabinom.median(100, 31, 571) / 100)
    assert p == pytest.approx(stats.betabinom.sf(8, 100, 31, 571))
    k = round(bound * 100) + 1  # the smallest count that fails
    assert stats.betabinom.sf(k - 1, 100, 31, 571) <= 0.01 < stats.betabinom.sf(k - 2, 100, 31, 571)
    # calibration by simulation: fresh real batches with flag probability from the same posterior
    rng = np.random.default_rng(0)
    q = rng.beta(31, 571, size=20_000)
    counts = rng.binomial(100, q)
    sims = stats.betabinom.sf(counts - 1, 100, 31, 571)
    assert abs(float(np.mean(sims <= 0.05)) - 0.05) < 0.01


@given(
    total=st.integers(1, 400),
    support_flagged=st.integers(0, 60),
    level=st.floats(1e-4, 0.5),
)
@settings(max_examples=60, deadline=None)
def test_flag_rate_bound_equals_a_scan_of_every_count(
    total: int, support_flagged: int, level: float
) -> None:
    from scipy import stats

    _, bound, _ = flag_rate_test(0, total, support_flagged, 600, level)
    a, b = support_flagged + 1, 600 - support_flagged + 1
    tail = stats.betabinom.sf(np.arange(total + 2) - 1, total, a, b)  # P(X >= k), every k
    first = int(np.argmax(tail <= level))
    assert bound == (first - 1) / total
