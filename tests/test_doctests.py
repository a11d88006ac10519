"""The examples in the package's own docstrings (outside the metrics) run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "synthguard",
    "synthguard.data",
    "synthguard.datasets",
    "synthguard.encoders._base",
    "synthguard.encoders._engine",
    "synthguard.encoders._factory",
    "synthguard.relabel",
    "synthguard.relabel._common",
    "synthguard.relabel._recaption",
    "synthguard.relabel._rerank",
    "synthguard.relabel._zeroshot",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest failures in {name}"
