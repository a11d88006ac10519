"""The examples in the package's docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "synthguard",
    "synthguard._validation",
    "synthguard.concepts",
    "synthguard.batch",
    "synthguard.datasets",
    "synthguard.encoders._base",
    "synthguard.encoders._engine",
    "synthguard.encoders._factory",
    "synthguard.functional",
    "synthguard.stats._hashing",
    "synthguard.functional.alignment",
    "synthguard.functional.diversity",
    "synthguard.functional.drift",
    "synthguard.functional.duplicates",
    "synthguard.functional.fidelity",
    "synthguard.functional.mmd",
    "synthguard.functional.text",
    "synthguard.guard",
    "synthguard.integrations.lightning",
    "synthguard.integrations.ray",
    "synthguard.integrations.torch",
    "synthguard.integrations.torchmetrics",
    "synthguard.monitor._monitor",
    "synthguard.config",
    "synthguard.reference",
    "synthguard.relabel",
    "synthguard.relabel._common",
    "synthguard.relabel._decisions",
    "synthguard.relabel._recaption",
    "synthguard.relabel._rerank",
    "synthguard.relabel._zeroshot",
    "synthguard.stats._stats",
    "synthguard.stats._moments",
    "synthguard.sources",
    "synthguard.sources._braces",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest failures in {name}"
