"""The page a reviewer signs off on: ``synthguard check --html``, read in headless Chromium.

One module fixture checks fresh real digits with known flaws (repeats, reference copies, wrong
captions and labels, noise) through the CLI; the tests read its page in a browser, and compare
what the report says about the flaws with brute-force computations on the embeddings.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import synthguard as sg
from _browser import assert_readable, open_page, visible_rows
from _digits import HOSTILE_CAPTION, TEMPLATE
from synthguard._testing import flawed_digits
from synthguard.cli import main
from synthguard.datasets import DIGIT_NAMES, load_digits
from synthguard.sources import read_pairs, write_pairs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("pages")
    digits = load_digits("test")
    real = sg.PairBatch(digits.images[:270], digits.captions[:270], labels=digits.labels[:270],
                        ids=digits.ids[:270])  # fmt: skip
    write_pairs(real, root / "real", "folder")
    batch, flaws = flawed_digits(digits, noise_caption=HOSTILE_CAPTION)
    write_pairs(batch, root / "synthetic", "folder")
    reference = root / "real.sgref"
    assert main([
        "reference", "build", "--input", str(root / "real"), "--encoder", "bundled:digits",
        "--out", str(reference), "--label-names", ",".join(DIGIT_NAMES), "--template", TEMPLATE,
        "--no-progress",
    ]) == 0  # fmt: skip
    code = main([
        "check", "--reference", str(reference), "--input", str(root / "synthetic"),
        "--out", str(root / "report.json"), "--html", str(root / "report.html"), "--no-progress",
    ])  # fmt: skip
    report = sg.GuardReport.model_validate_json((root / "report.json").read_text())
    return SimpleNamespace(
        root=root, html=root / "report.html", code=code, report=report, flaws=flaws,
        batch=read_pairs(root / "synthetic"), reference=sg.Reference.load(reference),
    )  # fmt: skip


def test_the_check_page_reads_in_a_browser(chromium: object, checked: SimpleNamespace) -> None:
    report = checked.report
    assert checked.code == 1 and report.verdict == "rejected"  # the flaws are caught
    with open_page(chromium, checked.html) as opened:
        page = opened.page
        # the p-value chart, the score histograms, one chart per concept group
        assert_readable(opened, charts=2 + len(report.concepts))
        summary = page.inner_text("#summary")
        assert "REJECTED" in summary
        for m in report.failed_tests:
            assert m.name in summary and f"{m.adjusted_p_value:.3g}" in summary
        for code, count in report.rejects_by_reason.items():
            assert f"{count} × {code}" in summary
        assert f"{report.n_relabeled} relabeled" in summary
        # Rejected rows first, every row shown (the batch is under the default max_rows).
        order = page.eval_on_selector_all("#samples tbody tr", "rows => rows.map(r => r.id)")
        rejected = [s.index for s in report.samples if not s.accepted]
        accepted = [s.index for s in report.samples if s.accepted]
        assert order == [f"sample-{i}" for i in rejected + accepted]
        # The filter hides and shows rows; the caption search narrows them.
        every = visible_rows(page)
        assert sorted(every) == list(range(report.n_samples))
        page.select_option("#reason-filter", "near_duplicate")
        dups = [s.index for s in report.samples if "near_duplicate" in s.reasons]
        assert visible_rows(page) == dups and len(dups) >= len(checked.flaws["repeat"])
        assert page.inner_text("#shown-count") == str(len(dups))
        page.select_option("#reason-filter", "relabeled")
        relabeled = [s.index for s in report.samples if s.new_label is not None
                     and any(r.applied for r in s.relabels)]  # fmt: skip
        assert sorted(visible_rows(page)) == sorted(relabeled) and relabeled
        page.select_option("#reason-filter", "all")
        assert len(visible_rows(page)) == len(every)
        page.fill("#caption-search", "Seven")
        sevens = [i for i, c in enumerate(checked.batch.captions) if "seven" in c.lower()]
        assert sorted(visible_rows(page)) == sevens and 0 < len(sevens) < len(every)
        page.fill("#caption-search", "")
        assert len(visible_rows(page)) == len(every)
        # A duplicate names (and links) the sample it repeats; a relabel shows both labels.
        for i, _ in checked.flaws["repeat"]:
            j = report.samples[i].partners["near_duplicate"]
            assert page.locator(f'#sample-{i} a[href="#sample-{j}"]').count() == 1
        i, _ = checked.flaws["relabel"][0]
        row = page.inner_text(f"#sample-{i}")
        given, new = checked.batch.labels[i], report.samples[i].new_label
        assert new is not None and new != given
        assert f"{DIGIT_NAMES[given]} ({given})" in row and f"→ {DIGIT_NAMES[new]} ({new})" in row
        # An accepted, unchanged row shows no new label.
        j = accepted[0]
        assert "→" not in page.inner_text(f"#sample-{j}")
        # Text from the batch is text: the hostile caption shows as written, runs nothing.
        noisy = checked.flaws["noise"][0][0]
        assert HOSTILE_CAPTION[:40] in page.get_attribute(f"#sample-{noisy} .caption", "title")
        assert page.evaluate("document.scripts.length") == 1


def test_partners_are_the_nearest_images(checked: SimpleNamespace, digits_encoder: object) -> None:
    """``near_duplicate`` names the most similar earlier sample, ``reference_copy`` the most
    similar support image: brute force over the embeddings."""
    report, reference = checked.report, checked.reference
    image = digits_encoder.encode_images(checked.batch.images).double()  # type: ignore[attr-defined]
    support = reference.support_image.double()
    seen = {"near_duplicate": 0, "reference_copy": 0}
    for s in report.samples:
        for code, partner in s.partners.items():
            seen[code] += 1
            assert code in s.reasons
            if code == "near_duplicate":
                sims = image[: s.index] @ image[s.index]
            else:
                sims = support @ image[s.index]
            assert float(sims[partner]) >= float(sims.max()) - 1e-9
    for i, j in checked.flaws["repeat"]:
        assert "near_duplicate" in report.samples[i].reasons
        assert float(image[report.samples[i].partners["near_duplicate"]] @ image[j]) > 1 - 1e-6
    for i, _ in checked.flaws["copy"]:  # the copied digit is in the reference's support
        partner = report.samples[i].partners["reference_copy"]
        assert float(support[partner] @ image[i]) > 1 - 1e-6
    assert seen["near_duplicate"] == report.rejects_by_reason["near_duplicate"]
    assert seen["reference_copy"] == report.rejects_by_reason["reference_copy"]


def test_reference_percentiles_are_the_supports_leave_one_out_scores(
    checked: SimpleNamespace,
) -> None:
    ref = checked.reference
    image, text = ref.support_image.double().numpy(), ref.support_text.double().numpy()
    cos = image @ image.T
    np.fill_diagonal(cos, -np.inf)
    dist = np.sqrt(np.maximum(((image[:, None, :] - image[None, :, :]) ** 2).sum(-1), 0))
    np.fill_diagonal(dist, np.inf)
    expected = {
        "alignment": (image * text).sum(axis=1),
        "knn_distance": np.sort(dist, axis=1)[:, ref.k - 1],
        "reference_cosine": cos.max(axis=1),
        "batch_cosine": cos.max(axis=1),  # a support row's nearest other row stands in
    }
    got = checked.report.reference_percentiles
    assert set(got) == set(expected)  # the label check scores only disagreements: no curve
    for score, values in expected.items():
        np.testing.assert_allclose(got[score], np.percentile(values, range(101)), atol=1e-9)


def test_pages_are_deterministic_small_and_escaped(
    checked: SimpleNamespace, tmp_path: Path
) -> None:
    report, batch = checked.report, checked.batch
    first = checked.html.read_text()  # the CLI's page, from the report in memory
    assert report.to_html(tmp_path / "b.html", batch).read_text() == first  # from its JSON
    assert first.count("<script") == 1 and "&lt;script&gt;alert(" in first
    assert "$5$" in first  # shown as typed, not as mathtext
    ids = re.findall(r'\bid="([^"]+)"', first)
    assert len(ids) == len(set(ids))  # charts inline without clashing ids
    # The first N rows, rejected first, and a note saying so.
    page = report.to_html(tmp_path / "c.html", batch, max_rows=20).read_text()
    shown = [int(i) for i in re.findall(r'<tr id="sample-(\d+)"', page)]
    assert shown == [s.index for s in report.samples if not s.accepted][:20]
    assert f"first 20 of {report.n_samples} samples" in page


def test_to_html_refuses_another_batch_and_a_bad_row_count(
    checked: SimpleNamespace, tmp_path: Path
) -> None:
    other = checked.batch.select(range(10))
    with pytest.raises(sg.InvalidInputError, match="batch must be the PairBatch of"):
        checked.report.to_html(tmp_path / "x.html", other)
    with pytest.raises(sg.InvalidInputError, match="max_rows must be >= 1, got 0"):
        checked.report.to_html(tmp_path / "x.html", max_rows=0)
    assert not (tmp_path / "x.html").exists()


def test_a_large_batch_of_photos_is_a_small_page(
    checked: SimpleNamespace, digits_encoder: object, tmp_path: Path
) -> None:
    """400 noise photos (the worst case for thumbnail bytes): 300 rows, a note, under 1.2 MB."""
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (160, 120, 3), dtype=np.uint8))
              for _ in range(400)]  # fmt: skip
    batch = sg.PairBatch(images, ["a handwritten digit seven"] * 400)
    config = sg.GuardConfig(batch_tests=())
    report = sg.Guard(checked.reference, config, encoder=digits_encoder).check(batch)
    page = report.to_html(tmp_path / "big.html", batch).read_bytes()
    assert page.count(b'<tr id="sample-') == 300 and b"first 300 of 400 samples" in page
    assert len(page) < 1_200_000, len(page)
    thumbnail = re.search(rb'src="data:image/jpeg;base64,([^"]+)"', page)
    assert thumbnail is not None  # photos become small JPEGs, not 160x120 PNGs


def test_the_templates_ship_with_the_package() -> None:
    """A non-editable install has the templates: pyproject's package data names them."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["synthguard"]
    package = ROOT / "src" / "synthguard"
    templates = sorted((package / "report" / "_templates").glob("*"))
    assert templates
    for path in templates:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


def test_thumbnails_keep_small_images_and_refuse_nothing() -> None:
    from synthguard.report._page import thumbnail

    digit = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))
    uri = thumbnail(digit)
    assert uri is not None and uri.startswith("data:image/png;base64,")
    assert thumbnail(b"not an image") is None  # the sample's reasons say why, the page loads
    assert thumbnail(torch.zeros(3, 4, 4)) is not None


def test_chart_text_is_text_and_values_are_labelled() -> None:
    """A concept named like mathtext or markup shows as typed (escaped), with its shares."""
    from synthguard.concepts import concept_drift
    from synthguard.report._charts import concept_chart

    drift = concept_drift([30, 10, 0], [20, 20, 5], ["$x^2$ <b>", "dog", "uncertain"], resamples=9)
    svg = concept_chart(drift, name="c")
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert "$x^2$ &lt;b&gt;" in texts and "<b>" not in svg
    # each bar's share, in percent, next to it: 30/40 of the batch, 20/45 of the reference
    assert "75.0" in texts and "44.4" in texts
    assert {"reference", "batch", "share of samples (%)", "concept"} <= set(texts)
