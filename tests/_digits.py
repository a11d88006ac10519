"""Shared set-up for tests on the real held-out digits (the bundled encoder never saw them)."""

from __future__ import annotations

import io
from typing import Any

import synthguard as sg
from synthguard.datasets import DIGIT_NAMES, load_digits

TEMPLATE = "a handwritten digit {name}"


def digits_reference(digits: Any, encoder: Any, n: int = 270) -> sg.Reference:
    """A labelled reference from the first ``n`` held-out digits; a fresh one per call."""
    return sg.Reference.build(
        digits.images[:n], digits.captions[:n], encoder=encoder, labels=digits.labels[:n],
        label_names=DIGIT_NAMES, label_templates=TEMPLATE, ids=digits.ids[:n],
    )  # fmt: skip


#: A caption a page must show as text: markup, a script and mathtext-looking dollars.
HOSTILE_CAPTION = "<script>alert('x')</script> a digit $5$ & <b>bold</b>"


def png_pairs(count: int = 12) -> sg.PairBatch:
    """The first ``count`` held-out digits as PNG bytes with captions, labels and ids (what a
    source reads back)."""
    test = load_digits("test")
    images = []
    for image in test.images[:count]:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return sg.PairBatch(
        images, test.captions[:count], labels=test.labels[:count], ids=test.ids[:count]
    )
