"""The bundled offline model through the public factory, and the CLI smoke demo."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import synthguard as sg
from synthguard.cli import main
from synthguard.datasets import CAPTION_TEMPLATES, DIGIT_NAMES, load_digits


def test_bundled_digits_zero_shot_accuracy_on_held_out_digits(digits_encoder: Any) -> None:
    test = load_digits("test")
    images = digits_encoder.encode_images(test.images)
    prompts = digits_encoder.encode_texts([f"a handwritten digit {name}" for name in DIGIT_NAMES])
    accuracy = float(
        ((images @ prompts.T).argmax(1) == torch.as_tensor(test.labels)).float().mean()
    )
    assert accuracy >= 0.90


def test_bundled_digits_right_caption_beats_wrong_caption(digits_encoder: Any) -> None:
    test = load_digits("test")
    images = digits_encoder.encode_images(test.images[:200])
    labels = torch.as_tensor(test.labels[:200])
    for template in CAPTION_TEMPLATES:
        texts = digits_encoder.encode_texts(
            [template.format(name=name, digit=d) for d, name in enumerate(DIGIT_NAMES)]
        )
        right = (images * texts[labels]).sum(1)
        wrong = (images * texts[(labels + 1) % 10]).sum(1)
        assert float((right > wrong).float().mean()) > 0.9, template


def test_bundled_digits_fingerprint_and_metadata(digits_encoder: Any) -> None:
    fp = digits_encoder.fingerprint
    assert fp.model_id == "bundled:digits" and fp.backend == "open_clip"
    assert fp.dim == digits_encoder.dim and digits_encoder.context_length == 16
    assert fp == sg.load_encoder("bundled:digits").fingerprint


def test_pair_batch_of_real_digits_embeds_without_errors(digits_encoder: Any) -> None:
    test = load_digits("test")
    batch = sg.PairBatch(
        images=test.images[:32], captions=list(test.captions[:32]), labels=test.labels[:32]
    )
    pairs = digits_encoder.embed(batch)
    assert pairs.errors == {} and pairs.n_truncated == 0
    assert float((pairs.image * pairs.text).sum(1).mean()) > 0.5


def test_cli_demo_help_shows_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    assert info.value.code == 0 and "example:" in capsys.readouterr().out
