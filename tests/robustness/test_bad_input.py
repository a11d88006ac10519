"""Bad input, tried systematically through ``guard.check``: a bad sample is a reject with a
reason, never a crash that loses the batch; bad arguments are clear errors."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import synthguard as sg
from _digits import TEMPLATE

UNREADABLE = sg.ReasonCode.UNREADABLE_IMAGE


def _encoded(image: Image.Image, fmt: str, **kw: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def _image_cases(tmp: Path, digit: Image.Image) -> dict[str, tuple[Any, set[str]]]:
    """name -> (image, acceptable reason codes; empty = must embed and be judged normally)."""
    rgb = digit.convert("RGB").resize((32, 32))
    png, jpeg, webp = (_encoded(rgb, f) for f in ("PNG", "JPEG", "WEBP"))
    (tmp / "wrong_extension.txt").write_bytes(png)
    (tmp / "a_directory").mkdir(exist_ok=True)
    bomb = _encoded(Image.new("L", (20000, 20000)), "PNG", optimize=False)
    frames = [Image.new("P", (16, 16), i) for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    palette = Image.new("P", (16, 16), 0)
    palette.info["transparency"] = 0
    return {
        "truncated_jpeg": (jpeg[: len(jpeg) // 2], {str(UNREADABLE)}),
        "truncated_png": (png[: len(png) // 2], {str(UNREADABLE)}),
        "truncated_webp": (webp[: len(webp) // 3], {str(UNREADABLE)}),
        "garbage_bytes": (b"\x00\x01not an image", {str(UNREADABLE)}),
        "zero_size": (b"", {str(UNREADABLE)}),
        "decompression_bomb": (bomb, {str(sg.ReasonCode.IMAGE_TOO_LARGE)}),  # a limit, named
        "directory": (str(tmp / "a_directory"), {str(UNREADABLE)}),
        "missing_path": (str(tmp / "missing.png"), {str(UNREADABLE)}),
        "one_pixel": (Image.new("RGB", (1, 1), (255, 255, 255)), set()),
        "cmyk": (rgb.convert("CMYK"), set()),
        "sixteen_bit": (Image.fromarray(np.asarray(digit, dtype=np.uint16) * 257), set()),
        "palette_transparency": (palette, set()),
        "animated_gif": (gif.getvalue(), set()),
        "wrong_extension": (str(tmp / "wrong_extension.txt"), set()),
    }


def test_every_bad_image_is_a_per_sample_reject(
    guard: sg.Guard, digits: Any, tmp_path: Path
) -> None:
    cases = _image_cases(tmp_path, digits.images[300])
    good = list(digits.images[300:320])
    images = [*good, *(image for image, _ in cases.values())]
    captions = [*digits.captions[300:320], *(TEMPLATE.format(name="one") for _ in cases)]
    report = guard.check(sg.PairBatch(images, captions))
    assert report.n_samples == len(images)  # nothing dropped
    for (name, (_, expected)), sample in zip(cases.items(), report.samples[20:], strict=True):
        codes = {str(r) for r in sample.reasons}
        if expected:
            assert codes == expected, (name, sample.details)
            assert sample.details and not sample.accepted
        else:  # decodable oddities are embedded and judged on their merits
            assert str(UNREADABLE) not in codes, (name, sample.details)
            assert np.isfinite(sample.scores["alignment"]), name
    assert sum(s.accepted for s in report.samples[:20]) >= 16  # the good ones are unaffected


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_a_reject(guard: sg.Guard, digits: Any, tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    digits.images[0].save(path)
    path.chmod(0)
    report = guard.check(sg.PairBatch([str(path)], [TEMPLATE.format(name="zero")]))
    assert report.samples[0].reasons == (UNREADABLE,)


CAPTIONS = {
    "none": (None, "empty_caption"),
    "empty": ("", "empty_caption"),
    "whitespace": (" \t\n ", "empty_caption"),
    "non_utf8_bytes": (b"\xff\xfe\xfa", "unreadable_caption"),
    "not_text": (12345, "unreadable_caption"),
    "ten_thousand_chars": ("a handwritten digit one " * 420, None),
    "control_characters": ("a handwritten\x00 digit\x07 one\x1b", None),
    "emoji": ("a handwritten digit one ✍️🔢", None),
    "non_latin": ("рукописная цифра один 手写数字一", None),
    "utf8_bytes": (b"a handwritten digit one", None),
}


def test_every_bad_caption_is_handled(guard: sg.Guard, digits: Any) -> None:
    images = [digits.images[301]] * len(CAPTIONS)
    report = guard.check(sg.PairBatch(images, [c for c, _ in CAPTIONS.values()]))
    truncated = dict(zip(CAPTIONS, (s.truncated for s in report.samples), strict=True))
    # The bundled text tower has a 16-token context: the long and the Cyrillic/CJK captions
    # are embedded truncated, and the report says so.
    assert truncated["ten_thousand_chars"] and truncated["non_latin"]
    assert not truncated["emoji"] and not truncated["none"]
    assert report.n_truncated == sum(truncated.values())
    for (name, (_, code)), sample in zip(CAPTIONS.items(), report.samples, strict=True):
        if code is not None:
            assert sample.reasons == (sg.ReasonCode(code),), name
        else:
            assert np.isfinite(sample.scores["alignment"]), name


def test_user_embeddings_bad_rows_and_bad_shapes(guard: sg.Guard) -> None:
    ref = guard.reference
    image, text = ref.support_image[:12].clone(), ref.support_text[:12].clone()
    image[0] = float("nan")
    image[1] = float("inf")
    text[2] = 0.0
    image[3] *= 7.5  # not normalised: normalised here, not an error
    report = guard.check_embeddings(image, text)
    assert [s.reasons for s in report.samples[:3]] == [(sg.ReasonCode.ENCODING_FAILED,)] * 3
    assert sg.ReasonCode.ENCODING_FAILED not in report.samples[3].reasons
    unscaled = float((ref.support_image[3] * ref.support_text[3]).sum())
    assert report.samples[3].scores["alignment"] == pytest.approx(unscaled)
    # Rows of huge or tiny (finite) values keep their direction (issue 16: 1e300 overflowed to
    # a zero row, rejected as low_alignment).
    for scale in (1e300, 1e-300):
        scaled = guard.check_embeddings(ref.support_image[3:5] * scale, ref.support_text[3:5])
        assert scaled.samples[0].scores["alignment"] == pytest.approx(unscaled)
        assert sg.ReasonCode.LOW_ALIGNMENT not in scaled.samples[0].reasons
    with pytest.raises(sg.InvalidInputError, match=r"shape \[n, 64\]"):
        guard.check_embeddings(image[:, :10], text[:, :10])
    with pytest.raises(sg.InvalidInputError, match="one row per sample"):
        guard.check_embeddings(image, text[:5])
    with pytest.raises(sg.InvalidInputError, match="real"):
        guard.check_embeddings(image.to(torch.complex64), text)
    as_float16 = guard.check_embeddings(image[4:].half(), text[4:].half())
    assert as_float16.n_samples == 8  # other float dtypes are accepted (computed in float64)


def test_structural_errors_are_clear(guard: sg.Guard, digits: Any) -> None:
    cases = [
        (lambda: sg.PairBatch([], []), "at least one sample"),
        (lambda: sg.PairBatch(digits.images[:2], ["a"]), "one entry per image"),
        (lambda: sg.PairBatch(digits.images[:2], ["a", "b"], ids=[7, 7]), "ids must be unique"),
        (lambda: sg.PairBatch(digits.images[:2], ["a", "b"], labels=[1, -1]), ">= 0"),
        (
            lambda: guard.check(sg.PairBatch(digits.images[:2], ["a", "b"], labels=[1, 10])),
            r"labels\[1\] must be a class index in \[0, 10\)",
        ),
    ]
    for make, pattern in cases:
        with pytest.raises(sg.InvalidInputError, match=pattern):
            make()


# -- fuzzing -------------------------------------------------------------------------------

_item = st.one_of(
    st.none(), st.text(max_size=30), st.binary(max_size=30), st.integers(), st.floats(),
    st.lists(st.integers(), max_size=3),
)  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(st.lists(_item, max_size=6), st.lists(_item, max_size=6), st.one_of(st.none(), _item))
def test_pair_batch_construction_never_fails_unexpectedly(
    images: list[Any], captions: list[Any], labels: Any
) -> None:
    try:
        batch = sg.PairBatch(images, captions, labels=labels)
    except sg.InvalidInputError:
        return
    assert len(batch) == len(images) == len(captions) >= 1


_row = st.one_of(
    st.just("good"),
    st.just("nan"),
    st.just("inf"),
    st.just("zero"),
    st.just("scaled"),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(_row, _row), min_size=1, max_size=40), st.integers(0, 2**16))
def test_check_embeddings_accounts_for_every_sample(
    guard: sg.Guard, rows: list[tuple[str, str]], seed: int
) -> None:
    ref = guard.reference
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, ref.n_support, (len(rows),), generator=g)
    image, text = ref.support_image[pick].clone(), ref.support_text[pick].clone()
    for i, kinds in enumerate(rows):
        for matrix, kind in zip((image, text), kinds, strict=True):
            if kind == "nan":
                matrix[i] = float("nan")
            elif kind == "inf":
                matrix[i, 0] = float("inf")
            elif kind == "zero":
                matrix[i] = 0.0
            elif kind == "scaled":
                matrix[i] *= 3.0
    report = guard.check_embeddings(image, text)
    assert report.n_samples == len(rows) == len(report.samples)
    bad = [i for i, kinds in enumerate(rows) if set(kinds) & {"nan", "inf", "zero"}]
    for i, sample in enumerate(report.samples):
        assert sample.accepted == (not sample.reasons)  # accepted, or rejected with a reason
        if i in bad:
            assert sample.reasons == (sg.ReasonCode.ENCODING_FAILED,)
    assert report.n_accepted == sum(s.accepted for s in report.samples)
    assert sum(report.rejects_by_reason.values()) >= report.n_samples - report.n_accepted


# -- embedding dtypes (issue 16) -----------------------------------------------------------


def _bad_embeddings(rows: np.ndarray) -> dict[str, tuple[Any, str]]:
    """name -> (a value for image_embeddings, what the message must name)."""
    ragged = [list(r) for r in rows[:-1]] + [list(rows[-1][:10])]
    with_strings = np.array(rows, dtype=object)
    with_strings[0, 0] = "0.1"
    return {
        "object_floats": (np.array(rows, dtype=object), "dtype=object"),
        "object_of_arrays": (np.array([*list(rows), None], dtype=object)[:-1], "dtype=object"),
        "object_with_a_string": (with_strings, "dtype=object"),
        "numeric_strings": (rows.astype(str), "dtype=<U"),  # never parsed as numbers
        "list_of_numeric_strings": ([[str(v) for v in r] for r in rows], "dtype=<U"),
        "bytes": (rows.astype("S8"), "dtype=|S8"),
        "structured": (np.zeros(rows.shape, dtype=[("a", "f8")]), "dtype=[("),
        "datetime": (np.zeros(rows.shape, dtype="datetime64[s]"), "datetime64"),
        "complex": (rows.astype(np.complex128), "complex128"),
        "ragged_list": (ragged, "rectangular"),
        "list_with_none": ([[None] * rows.shape[1]] * len(rows), "dtype=object"),
        "bool_numpy": (rows > 0, "booleans"),
        "bool_torch": (torch.from_numpy(rows > 0), "booleans"),
    }


def test_embeddings_that_are_not_real_numbers_are_named(guard: sg.Guard) -> None:
    ref = guard.reference
    rows, text = ref.support_image[:12].numpy(), ref.support_text[:12]
    calls = {
        "check_embeddings": lambda v: guard.check_embeddings(v, text),
        "from_embeddings": lambda v: sg.Reference.from_embeddings(v, text),
        "EmbeddingStats.update": lambda v: sg.EmbeddingStats(rows.shape[1]).update(v, text),
    }
    for case, (value, named) in _bad_embeddings(rows).items():
        for where, call in calls.items():
            with pytest.raises(sg.InvalidInputError) as info:
                call(value)
            message = str(info.value)
            assert message.startswith(("image_embeddings", "image_emb")), (case, where, message)
            assert named in message, (case, where, message)
    # What is accepted: real dtypes, nested lists of numbers, lists of 1-D arrays or tensors.
    for good in (
        rows.tolist(),
        list(rows),
        [torch.from_numpy(r) for r in rows],
        (rows * 1000).astype(int),
    ):
        assert guard.check_embeddings(good, text).n_samples == 12
        assert sg.Reference.from_embeddings(np.asarray(good, dtype=float), text).n_support == 12


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.lists(
            st.one_of(
                st.floats(), st.integers(-5, 5), st.sampled_from(["1", "0.5", "x"]), st.none()
            ),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_nested_lists_of_anything_are_a_batch_or_invalid_input(
    guard: sg.Guard, rows: list[list[Any]]
) -> None:
    text = guard.reference.support_text[: len(rows)]
    for call in (
        lambda: guard.check_embeddings(rows, text),
        lambda: sg.EmbeddingStats(len(rows[0])).update(rows),
    ):
        try:
            call()
        except sg.InvalidInputError:
            continue
        assert all(isinstance(v, (int, float)) for r in rows for v in r)  # only numbers pass
