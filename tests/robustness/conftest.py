"""Fixtures the robustness tests share: real digits, a 270-pair reference and a guard on it
without batch tests (per-sample decisions only), built once per module."""

from __future__ import annotations

from typing import Any

import pytest

import synthguard as sg
from _digits import digits_reference
from synthguard.datasets import load_digits


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_digits("test")


@pytest.fixture(scope="module")
def reference(digits: Any, digits_encoder: Any) -> sg.Reference:
    return digits_reference(digits, digits_encoder, 270)


@pytest.fixture(scope="module")
def guard(digits: Any, digits_encoder: Any) -> sg.Guard:
    return sg.Guard(digits_reference(digits, digits_encoder, 270), sg.GuardConfig(batch_tests=()))
