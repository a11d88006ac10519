"""The two entries added through the registries' recipes (docs/design.md): the opt-in
per-sample ``long_caption`` check and the opt-in ``alignment_variance`` batch test."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import synthguard as sg
from synthguard.checks import SAMPLE_CHECKS
from synthguard.datasets import DIGIT_NAMES, load_digits
from synthguard.functional import simple_tokenize

TEMPLATE = "a handwritten digit {name}"
LONG = sg.GuardConfig(sample_checks=(*sg.GuardConfig().sample_checks, "long_caption"))


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_digits("test")


@pytest.fixture(scope="module")
def reference(digits: Any, digits_encoder: Any) -> sg.Reference:
    return sg.Reference.build(
        digits.images[:300], digits.captions[:300], encoder=digits_encoder,
        labels=digits.labels[:300], label_names=DIGIT_NAMES, label_templates=TEMPLATE,
        support_size=200, chunk_size=64,
    )  # fmt: skip


def test_support_caption_tokens_are_those_of_the_support_pairs(
    reference: sg.Reference, digits: Any, digits_encoder: Any
) -> None:
    """Brute force: find each support pair among all 300 embedded pairs, count its tokens."""
    image = digits_encoder.encode_images(digits.images[:300]).double()
    text = digits_encoder.encode_texts(digits.captions[:300]).double()
    tokens = reference.support_caption_tokens
    assert tokens is not None and tokens.shape == (reference.n_support,) == (200,)
    for row in range(reference.n_support):
        match = (image == reference.support_image[row]).all(1) & (
            text == reference.support_text[row]
        ).all(1)
        (i,) = torch.nonzero(match).flatten().tolist()
        assert tokens[row] == len(simple_tokenize(digits.captions[i]))


def test_long_caption_threshold_is_a_joint_conformal_quantile(reference: sg.Reference) -> None:
    names = LONG.sample_checks
    thresholds = reference.thresholds(0.05, names)
    limit = thresholds["long_caption"]
    tokens = reference.support_caption_tokens
    assert tokens is not None
    assert limit in set(tokens.tolist())  # an order statistic of the real lengths
    assert float((tokens > limit).double().mean()) <= 0.05
    # The union of every enabled check still flags at most alpha of the support.
    assert float(reference.sample_calibration(names).flags(0.05).double().mean()) <= 0.05


def test_long_captions_are_rejected_and_real_ones_pass(
    reference: sg.Reference, digits: Any
) -> None:
    guard = sg.Guard(reference, LONG.model_copy(update={"batch_tests": ()}))
    images, captions = digits.images[300:400], list(digits.captions[300:400])
    padded = list(range(0, 100, 10))
    for i in padded:  # a captioner's run-on caption, as collapsing loops produce
        captions[i] += " drawn carefully in dark ink on a light grey background with a thin border"
    report = guard.check(sg.PairBatch(images, captions, labels=digits.labels[300:400]))
    long = {s.index for s in report.samples if sg.ReasonCode.LONG_CAPTION in s.reasons}
    assert long == set(padded)
    sample = report.samples[padded[0]]
    assert sample.scores["caption_tokens"] == len(simple_tokenize(captions[padded[0]]))
    assert any(d.startswith("long_caption: caption of") for d in sample.details)
    # The real captions: no more long-caption rejects than the calibrated rate allows.
    real = [s for s in report.samples if s.index not in padded]
    assert sum(sg.ReasonCode.LONG_CAPTION in s.reasons for s in real) <= 9


def test_the_held_out_false_reject_rate_stays_alpha_with_long_caption(
    digits: Any, digits_encoder: Any
) -> None:
    """Ten random splits of real digits: the joint gate still rejects about alpha of them."""
    rates = []
    for split in range(10):
        perm = torch.randperm(540, generator=torch.Generator().manual_seed(split)).tolist()
        ref_rows, held = perm[:270], perm[270:]
        ref = sg.Reference.build(
            [digits.images[i] for i in ref_rows], [digits.captions[i] for i in ref_rows],
            encoder=digits_encoder,
        )  # fmt: skip
        config = LONG.model_copy(update={"batch_tests": ()})
        report = sg.Guard(ref, config).check(
            sg.PairBatch([digits.images[i] for i in held], [digits.captions[i] for i in held])
        )
        rates.append(1 - report.n_accepted / report.n_samples)
    assert abs(float(np.mean(rates)) - 0.05) <= 0.02, rates


def test_long_caption_does_not_run_without_captions(
    reference: sg.Reference, digits: Any, digits_encoder: Any
) -> None:
    guard = sg.Guard(reference, LONG.model_copy(update={"batch_tests": ()}))
    image = digits_encoder.encode_images(digits.images[300:340])
    text = digits_encoder.encode_texts(digits.captions[300:340])
    report = guard.check_embeddings(image, text)
    sample = report.samples[0]
    assert np.isnan(sample.scores["caption_tokens"])
    assert "caption_tokens" not in sample.thresholds
    assert "long_caption" in guard.checks  # enabled, and says it could not run


def test_a_reference_from_embeddings_cannot_calibrate_long_caption(
    digits: Any, digits_encoder: Any
) -> None:
    image = digits_encoder.encode_images(digits.images[:100])
    text = digits_encoder.encode_texts(digits.captions[:100])
    ref = sg.Reference.from_embeddings(image, text)
    assert "long_caption" not in ref.calibration.names
    assert "long_caption" not in sg.Guard(ref, LONG).checks
    assert SAMPLE_CHECKS["long_caption"].needs == frozenset({"captions"})


# -- alignment_variance ----------------------------------------------------------------------


def _half_copied(digits: Any, encoder: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out pairs whose every other caption embedding equals its image's: alignment
    spreads (half at cosine 1) while the images, and so every image test, are real."""
    image = encoder.encode_images(digits.images[300:428]).double()
    text = encoder.encode_texts(digits.captions[300:428]).double()
    text[::2] = image[::2]
    return image, text


def test_alignment_variance_is_informational_by_default(
    reference: sg.Reference, digits: Any, digits_encoder: Any
) -> None:
    guard = sg.Guard(reference, sg.GuardConfig(n_resamples=239, alpha_batch=0.05))
    report = guard.check_embeddings(*_half_copied(digits, digits_encoder))
    metric = report.metrics["alignment_variance"]
    assert metric.passed is None and metric.p_value is not None
    assert metric.p_value <= 0.01 and metric.value > 2.0
    assert not any("alignment_variance" in reason for reason in report.reasons)


def test_alignment_variance_rejects_a_spread_alignment_when_in_the_family(
    reference: sg.Reference, digits: Any, digits_encoder: Any
) -> None:
    tests = (*sg.GuardConfig().batch_tests, "alignment_variance")
    guard = sg.Guard(
        reference, sg.GuardConfig(n_resamples=239, alpha_batch=0.05, batch_tests=tests)
    )
    report = guard.check_embeddings(*_half_copied(digits, digits_encoder))
    assert not report.accepted
    assert report.metrics["alignment_variance"].passed is False
    assert "alignment_variance" in [m.name for m in report.failed_tests]
    assert any(r.startswith("failed alignment_variance") for r in report.reasons)
    # The images are real: no image test fails for the copied captions.
    image_tests = (
        "variance_ratio", "vendi_ratio", "coverage", "frechet_distance", "cmmd", "duplicate_rate"
    )  # fmt: skip
    assert all(report.metrics[name].passed for name in image_tests)
    # Real held-out pairs pass it.
    image = digits_encoder.encode_images(digits.images[300:428])
    text = digits_encoder.encode_texts(digits.captions[300:428])
    assert guard.check_embeddings(image, text).metrics["alignment_variance"].passed is True


# -- the registry and old configurations and files ------------------------------------------


def test_a_pre_split_check_list_keeps_its_near_duplicate_check(reference: sg.Reference) -> None:
    old_default = ("low_alignment", "off_manifold", "reference_copy", "label_mismatch")
    with pytest.warns(FutureWarning, match="near_duplicate"):
        config = sg.GuardConfig(sample_checks=old_default)
    assert config.sample_checks == sg.GuardConfig().sample_checks
    assert sg.Guard(reference, config).checks == sg.Guard(reference).checks


def test_reasons_follow_the_registry_order_whatever_the_config_order(
    reference: sg.Reference, digits: Any, digits_encoder: Any
) -> None:
    image = digits_encoder.encode_images(digits.images[300:340])
    text = digits_encoder.encode_texts(digits.captions[300:340])
    text[:5] = text[5:10]  # misaligned captions on real images
    image[20:25] = reference.support_image[:5].float()  # copies of the reference, too
    text[20:25] = text[5:10]
    reordered = tuple(reversed(sg.GuardConfig().sample_checks))
    reports = [
        sg.Guard(reference, sg.GuardConfig(sample_checks=checks, batch_tests=())).check_embeddings(
            image, text
        )
        for checks in (sg.GuardConfig().sample_checks, reordered)
    ]
    assert [s.reasons for s in reports[0].samples] == [s.reasons for s in reports[1].samples]
    both = [s.reasons for s in reports[0].samples if len(s.reasons) > 1]
    order = list(SAMPLE_CHECKS)
    assert both and all([order.index(r) for r in rs] == sorted(order.index(r) for r in rs)
                        for rs in both)  # fmt: skip


def test_a_check_added_after_a_file_was_written_is_scored_on_load(
    reference: sg.Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    blob = reference.to_bytes()
    twin = dataclasses.replace(SAMPLE_CHECKS["off_manifold"], name="off_manifold_twin")  # type: ignore[arg-type]
    monkeypatch.setitem(SAMPLE_CHECKS, "off_manifold_twin", twin)
    loaded = sg.Reference.from_bytes(blob)
    names = loaded.calibration.names
    assert names[-1] == "off_manifold_twin"
    column = loaded.calibration.badness[:, -1]
    assert torch.equal(column, loaded.calibration.badness[:, names.index("off_manifold")])


def test_a_labeler_from_class_embeddings_needs_no_encoder() -> None:
    from synthguard.relabel import ZeroShotLabeler

    labeler = ZeroShotLabeler(None, ["a", "b"], class_embeddings=torch.eye(2))
    assert labeler.predict(torch.tensor([[0.1, 0.9], [2.0, 0.1]])).labels.tolist() == [1, 0]
    with pytest.raises(sg.InvalidInputError, match="encoder"):
        ZeroShotLabeler(None, ["a", "b"])
    # Nested lists of numbers are read like tensors (every embedding entry point does so);
    # anything that is not real numbers is refused, naming the argument and the dtype.
    listed = ZeroShotLabeler(None, ["a", "b"], class_embeddings=[[1.0, 0.0], [0.0, 1.0]])
    assert listed.predict(torch.tensor([[0.1, 0.9], [2.0, 0.1]])).labels.tolist() == [1, 0]
    with pytest.raises(sg.InvalidInputError, match="class_embeddings must hold real numbers"):
        ZeroShotLabeler(None, ["a", "b"], class_embeddings=[["x", "y"], ["z", "w"]])
    with pytest.raises(sg.InvalidInputError, match="needs an encoder"):
        labeler.predict_images([b"not an image"])
