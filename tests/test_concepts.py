"""Concept banks: drift statistics against scipy, calibration on real data, the guard's use."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

import synthguard as sg
from synthguard.concepts import concept_drift
from synthguard.datasets import DIGIT_NAMES, DIGITS_CONCEPT_BANK, load_digits

TEMPLATE = "a handwritten digit {name}"


def test_drift_statistics_match_scipy_and_brute_force() -> None:
    a, b = np.array([20, 25, 50, 5]), np.array([50, 60, 45, 45])
    drift = concept_drift(a, b, ["w", "x", "y", "z"])
    chi2, p, _, _ = stats.chi2_contingency(np.stack([a, b]), correction=False)
    assert drift.chi2 == pytest.approx(chi2) and drift.chi2_p_value == pytest.approx(p)
    # max-z: brute force over concepts with the pooled two-proportion variance
    pooled = (a + b) / (a.sum() + b.sum())
    z = np.abs(a / a.sum() - b / b.sum()) / np.sqrt(
        pooled * (1 - pooled) * (1 / a.sum() + 1 / b.sum())
    )
    assert drift.statistic == pytest.approx(z.max())
    # its permutation p-value against scipy's two-sided normal tail, Šidák-corrected for 4 cells
    assert drift.p_value == pytest.approx(1 - (1 - 2 * stats.norm.sf(z.max())) ** 4, abs=0.01)
    pa, pb = a / a.sum(), b / b.sum()
    m = (pa + pb) / 2
    js = 0.5 * np.sum(pa * np.log2(pa / m)) + 0.5 * np.sum(pb * np.log2(pb / m))
    assert drift.js_divergence == pytest.approx(js)
    assert drift.largest_mover == "y" and drift.largest_change == pytest.approx(pa[2] - pb[2])
    assert drift.tail_loss == ("z",)  # 22 % of the reference, under half of it in the batch


def test_small_count_permutation_p_values_are_calibrated() -> None:
    rng = np.random.default_rng(0)
    shares = np.array([0.5, 0.3, 0.15, 0.05])
    reference = rng.multinomial(200, shares)
    p_values = []
    for trial in range(300):
        batch = rng.multinomial(12, reference / reference.sum())
        drift = concept_drift(batch, reference, list("abcd"), resamples=499, seed=trial)
        p_values.append(drift.p_value)
    # 300 trials: binomial sd 1.7 points at level 0.1
    assert abs(np.mean(np.array(p_values) <= 0.1) - 0.1) <= 0.055


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_digits("test")


@pytest.fixture(scope="module")
def embedded(digits: Any, digits_encoder: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return digits_encoder.encode_images(digits.images), digits_encoder.encode_texts(digits.captions)


@pytest.fixture(scope="module")
def setup(digits: Any, embedded: Any, digits_encoder: Any) -> tuple[sg.Guard, sg.ConceptBank]:
    image, text = embedded  # the whole held-out split: a two-sample test needs a big reference
    ref = sg.Reference.from_embeddings(
        image, text, labels=digits.labels, label_names=DIGIT_NAMES,
        encoder=digits_encoder, label_templates=TEMPLATE,
    )  # fmt: skip
    bank = sg.ConceptBank(DIGITS_CONCEPT_BANK, digits_encoder, templates=TEMPLATE)
    return sg.Guard(ref, concept_banks=[bank]), bank


@pytest.fixture(scope="module")
def train(digits_encoder: Any) -> tuple[Any, torch.Tensor, torch.Tensor]:
    data = load_digits("train")  # distinct real digits to draw batches from
    return (
        data,
        digits_encoder.encode_images(data.images),
        digits_encoder.encode_texts(data.captions),
    )


def _rows(labels: Any, keep: Any, n: int, seed: int, start: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    pool = [i for i in range(start, len(labels)) if keep(labels[i])]
    return list(rng.choice(pool, size=n, replace=False))


def test_a_real_class_mix_passes(setup: Any, train: Any) -> None:
    guard, _ = setup
    data, image, text = train
    rows = _rows(data.labels, lambda y: True, 300, 0)
    report = guard.check_embeddings(image[rows], text[rows])
    drift = report.concepts["digit"]
    assert report.metrics["concept:digit"].passed, drift
    assert drift.concepts == (*DIGIT_NAMES, "uncertain") and drift.batch_count <= 300


@pytest.mark.parametrize("change", ["dropped", "doubled"])
def test_a_dropped_or_doubled_class_fails_and_is_named(setup: Any, train: Any, change: str) -> None:
    guard, _ = setup
    data, image, text = train
    threes = [i for i, y in enumerate(data.labels) if y == 3]
    others = _rows(data.labels, lambda y: y != 3, 300, 1)
    rows = others if change == "dropped" else others + threes[:100]  # 3s: 10 % -> 25 %
    report = guard.check_embeddings(image[rows], text[rows])
    drift = report.concepts["digit"]
    assert drift.largest_mover == "three", drift
    assert report.metrics["concept:digit"].passed is False, drift
    if change == "dropped":
        assert "three" in drift.tail_loss
    assert "concept" in report.to_html(Path(tempfile.mkdtemp()) / "r.html").read_text()


def test_real_vs_real_p_values_reject_at_about_alpha(
    setup: Any, digits: Any, embedded: Any
) -> None:
    _, bank = setup
    pool = bank.counts(embedded[0][:270])["digit"]
    rejects = []
    for seed in range(150):
        rows = _rows(digits.labels, lambda y: True, 60, 100 + seed, start=270)
        drift = concept_drift(bank.counts(embedded[0][rows])["digit"], pool,
                              bank.concepts("digit"), resamples=299, seed=seed)  # fmt: skip
        rejects.append(drift.p_value <= 0.1)
    # Overlapping draws from 270 held-out digits; sd about 2.5 points at level 0.1.
    assert abs(np.mean(rejects) - 0.1) <= 0.075, np.mean(rejects)


def test_counts_merge_exactly_across_shards(setup: Any, digits: Any, embedded: Any) -> None:
    _, bank = setup
    image = embedded[0][270:]
    labels = digits.labels[270:]
    tables = bank.count_tables(num_labels=10)

    def stats_of(rows: slice) -> sg.EmbeddingStats:
        out = sg.EmbeddingStats(image.shape[1], num_labels=10, count_tables=tables)
        bank.update_stats(out, image[rows], labels=labels[rows])
        return out

    whole = stats_of(slice(0, 270))
    merged = (
        stats_of(slice(0, 100)).merge(stats_of(slice(100, 181))).merge(stats_of(slice(181, 270)))
    )
    for name in tables:
        assert torch.equal(whole.counts(name), merged.counts(name))
    assert whole.counts("concept/digit").sum() == 270
    restored = sg.EmbeddingStats.from_state_dict(merged.state_dict())
    assert torch.equal(
        restored.counts("concept/digit/by_class"), whole.counts("concept/digit/by_class")
    )


def test_another_encoders_bank_is_refused(setup: Any, tiny_encoder: Any) -> None:
    guard, _ = setup
    bank = sg.ConceptBank({"animal": ["cat", "dog"]}, tiny_encoder)
    with pytest.raises(sg.IncompatibleStatsError):
        sg.Guard(guard.reference, concept_banks=[bank])


def test_the_monitor_tracks_concept_groups(setup: Any, train: Any) -> None:
    guard, _ = setup
    data, image, text = train
    monitor = sg.CollapseMonitor(Path(tempfile.mkdtemp()) / "log.jsonl")
    for generation, excluded in enumerate([(), (3,), (3, 5), (3, 5, 7), (3, 5, 7, 8)]):
        rows = _rows(data.labels, lambda y, ex=excluded: y not in ex, 200, generation)
        report = guard.check_embeddings(image[rows], text[rows])
        monitor.log(generation, {}, reports=[report])
    js = [r["metrics"]["concept_js/digit"] for r in monitor.records]
    assert js[-1] > js[0]
    assert any(w.metric == "concept_js/digit" for w in monitor.warnings)


def test_the_holm_family_counts_concept_groups(setup: Any, digits_encoder: Any) -> None:
    guard, _ = setup
    two_groups = {"digit": DIGIT_NAMES, "parity": ("even number", "odd number")}
    bank = sg.ConceptBank(two_groups, digits_encoder, templates=TEMPLATE)
    # 8 default tests, digit and parity, the predicted and the given class mix: 12.
    with pytest.raises(sg.InvalidInputError, match="n_resamples must be >= 1199 for 12"):
        sg.Guard(guard.reference, sg.GuardConfig(n_resamples=1000), concept_banks=[bank])
    # Left at its default, n_resamples grows to what the family needs.
    adapted = sg.Guard(guard.reference, sg.GuardConfig(), concept_banks=[bank])
    assert adapted.config.n_resamples == 1199


def test_banks_are_saved_with_the_reference(
    train: Any, digits: Any, embedded: Any, digits_encoder: Any
) -> None:
    ref = sg.Reference.from_embeddings(
        embedded[0], embedded[1], labels=digits.labels, label_names=DIGIT_NAMES,
        encoder=digits_encoder, label_templates=TEMPLATE,
    )  # fmt: skip
    ref.add_concept_bank(sg.ConceptBank(DIGITS_CONCEPT_BANK, digits_encoder, templates=TEMPLATE))
    loaded = sg.Reference.load(ref.save(Path(tempfile.mkdtemp()) / "with_bank.sgref"))
    assert [b.groups for b in loaded.concept_banks] == [{"digit": DIGIT_NAMES}]
    assert loaded.concept_banks[0].margins == ref.concept_banks[0].margins
    data, image, text = train
    rows = _rows(data.labels, lambda y: y != 3, 230, 1)
    before = sg.Guard(ref).check_embeddings(image[rows], text[rows]).concepts
    after = sg.Guard(loaded, encoder=digits_encoder).check_embeddings(image[rows], text[rows])
    assert after.concepts == before and after.concepts["digit"].largest_mover == "three"


def test_conditional_drift_within_each_class(setup: Any, train: Any) -> None:
    guard, bank = setup
    data, image, text = train
    rows = _rows(data.labels, lambda y: True, 300, 3)
    labels = [data.labels[i] for i in rows]
    report = guard.check_embeddings(image[rows], text[rows], labels=labels)
    by_class = report.concepts_by_class["digit"]
    assert set(by_class) <= set(DIGIT_NAMES) and len(by_class) >= 9
    three = by_class["three"]
    assert three.batch_share[3] > 0.8 and three.reference_share[3] > 0.8  # threes look like 3s
    # the same numbers from the counts by hand
    accepted = [s.index for s in report.samples if s.accepted]
    mine = bank.counts(image[rows][accepted], [report.samples[i].new_label for i in accepted], 10)
    assert three.batch_count == int(mine["digit"][3].sum())
