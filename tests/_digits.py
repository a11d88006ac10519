"""Shared set-up for tests on the real held-out digits (the bundled encoder never saw them)."""

from __future__ import annotations

from typing import Any

import synthguard as sg
from synthguard.datasets import DIGIT_NAMES

TEMPLATE = "a handwritten digit {name}"


def digits_reference(digits: Any, encoder: Any, n: int = 270) -> sg.Reference:
    """A labelled reference from the first ``n`` held-out digits; a fresh one per call."""
    return sg.Reference.build(
        digits.images[:n], digits.captions[:n], encoder=encoder, labels=digits.labels[:n],
        label_names=DIGIT_NAMES, label_templates=TEMPLATE, ids=digits.ids[:n],
    )  # fmt: skip


#: A caption a page must show as text: markup, a script and mathtext-looking dollars.
HOSTILE_CAPTION = "<script>alert('x')</script> a digit $5$ & <b>bold</b>"
