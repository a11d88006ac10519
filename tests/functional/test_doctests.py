"""The examples in the metric modules' docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "synthguard._validation",
    "synthguard.stats",
    "synthguard.functional",
    "synthguard.functional._hashing",
    "synthguard.functional.alignment",
    "synthguard.functional.diversity",
    "synthguard.functional.drift",
    "synthguard.functional.duplicates",
    "synthguard.functional.fidelity",
    "synthguard.functional.mmd",
    "synthguard.functional.text",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest failures in {name}"
