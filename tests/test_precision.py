"""Issue 17, item 4: the fingerprint says *which model*; the precision is *the numerics*.

A reference built offline on a CPU (fp32) was refused by a guard on CUDA, where
``precision="auto"`` is bf16, because precision was hashed into the fingerprint. Now the digest
is the model and its preprocessing, the precision is recorded, and a guard embeds at the
reference's precision (bf16 against fp32 moves scores and batch statistics:
``benchmarks/bench_precision.py``, docs/encoders.md "Precision").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import synthguard as sg
from synthguard.datasets import load_digits
from synthguard.encoders import _engine

SPEC = "bundled:digits"
PER_SAMPLE_ONLY = sg.GuardConfig(batch_tests=())


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_digits("test")


@pytest.fixture(scope="module")
def fp32(digits_encoder: sg.BatchedEncoder) -> sg.BatchedEncoder:
    """The session's bundled encoder (no second load), at an explicit fp32."""
    return digits_encoder.with_precision("fp32")


@pytest.fixture(scope="module")
def saved(digits: Any, fp32: sg.BatchedEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reference built on the CPU in fp32, as offline builds are, saved to a file."""
    ref = sg.Reference.build(digits.images[:150], digits.captions[:150], encoder=fp32)
    return ref.save(tmp_path_factory.mktemp("ref") / "digits.sgref")


@pytest.fixture
def auto_is_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """``precision="auto"`` resolves as on a CUDA device with bf16 (this machine has none)."""
    real = _engine.resolve_precision
    monkeypatch.setattr(
        _engine, "resolve_precision", lambda p, device: "bf16" if p == "auto" else real(p, device)
    )


def _batch(digits: Any) -> sg.PairBatch:
    return sg.PairBatch(digits.images[150:200], digits.captions[150:200])


def _scores(report: sg.GuardReport) -> list[dict[str, float | None]]:
    return [{k: None if math.isnan(v) else v for k, v in s.scores.items()} for s in report.samples]


@pytest.mark.usefixtures("auto_is_bf16")
def test_an_fp32_reference_is_used_by_an_auto_bf16_encoder_at_fp32(
    saved: Path, digits: Any, fp32: sg.BatchedEncoder
) -> None:
    """The break: this raised IncompatibleStatsError (precision was part of the digest)."""
    auto = fp32.with_precision("auto")  # what load_encoder(SPEC) gives on such a GPU
    assert auto.precision == "bf16" and auto.precision_is_auto
    guard = sg.Guard(sg.Reference.load(saved), PER_SAMPLE_ONLY, encoder=auto)
    assert guard.encoder is not None and guard.encoder.precision == "fp32"
    assert guard.encoder.module is auto.module  # the same weights, not a second copy
    assert auto.precision == "bf16"  # the user's encoder is left as it was

    batch = _batch(digits)
    got = guard.check(batch)
    want = sg.Guard(sg.Reference.load(saved), PER_SAMPLE_ONLY, encoder=fp32).check(batch)
    assert _scores(got) == _scores(want)  # exactly the reference's numerics
    assert got.reference["precision"] == "fp32"
    # ...and it matters: the same batch embedded in bf16 scores differently.
    mixed = auto.embed(batch)
    other = guard.check_embeddings(mixed.image, mixed.text)
    assert _scores(other) != _scores(want)

    # The CLI's path: the guard loads the encoder the reference names ("auto": bf16 here).
    from_spec = sg.Guard(sg.Reference.load(saved), PER_SAMPLE_ONLY)
    assert from_spec.encoder is not None and from_spec.encoder.precision == "fp32"
    loaded = sg.Reference.load(saved, encoder=auto)
    assert loaded.encoder is not None and loaded.encoder.precision == "fp32"


def test_an_explicit_other_precision_is_refused_with_the_fix(
    saved: Path, fp32: sg.BatchedEncoder
) -> None:
    bf16 = fp32.with_precision("bf16")
    assert bf16.fingerprint.digest == sg.Reference.load(saved).fingerprint.digest  # same model
    for attempt in (
        lambda: sg.Guard(sg.Reference.load(saved), PER_SAMPLE_ONLY, encoder=bf16),
        lambda: sg.Reference.load(saved, encoder=bf16),
    ):
        with pytest.raises(sg.IncompatibleStatsError) as info:
            attempt()
        text = str(info.value)
        assert text.startswith("precision:")
        assert "precision='fp32'" in text and "precision='bf16'" in text
        assert "Load the encoder with precision='fp32'" in text and "rebuild" in text


class _Fixed:
    """A user's encoder (the protocol only), computing at a precision it cannot change."""

    def __init__(self, inner: sg.BatchedEncoder, precision: str) -> None:
        self.inner, self.dim, self.device = inner, inner.dim, inner.device
        self.context_length = inner.context_length
        self.fingerprint = inner.fingerprint.model_copy(update={"precision": precision})

    def encode_images(self, images: Any, *, on_error: Any = "raise") -> torch.Tensor:
        return self.inner.encode_images(images, on_error=on_error)

    def encode_texts(self, texts: Any, *, on_error: Any = "raise") -> torch.Tensor:
        return self.inner.encode_texts(texts, on_error=on_error)


def test_a_user_encoder_at_another_precision_is_refused(
    saved: Path, fp32: sg.BatchedEncoder
) -> None:
    with pytest.raises(sg.IncompatibleStatsError, match="_Fixed cannot change it"):
        sg.Guard(sg.Reference.load(saved), PER_SAMPLE_ONLY, encoder=_Fixed(fp32, "fp16"))
    same = _Fixed(fp32, "fp32")
    assert sg.Guard(sg.Reference.load(saved), PER_SAMPLE_ONLY, encoder=same).encoder is same


def test_another_model_is_still_refused(saved: Path, tiny_encoder: Any) -> None:
    with pytest.raises(sg.IncompatibleStatsError, match="another model or preprocessing"):
        sg.Guard(sg.Reference.load(saved), PER_SAMPLE_ONLY, encoder=tiny_encoder)


def test_with_precision_shares_the_model_and_validates(fp32: sg.BatchedEncoder) -> None:
    bf16 = fp32.with_precision("bf16")
    assert bf16.precision == "bf16" and not bf16.precision_is_auto and fp32.precision == "fp32"
    assert bf16.module is fp32.module and bf16.fingerprint.digest == fp32.fingerprint.digest
    assert bf16.fingerprint.precision == "bf16" and fp32.with_precision("fp32") is fp32
    texts = ["a handwritten digit seven", "a handwritten digit one"]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what the engine runs under bf16
        direct = fp32.module.encode_text(fp32._backend.tokenize(texts)["text"]).float()
    direct = torch.nn.functional.normalize(direct, dim=1)
    assert torch.allclose(bf16.encode_texts(texts), direct, atol=1e-6)
    with pytest.raises(sg.InvalidInputError, match="precision must be one of"):
        fp32.with_precision("fp8")


def test_the_cache_keeps_precisions_apart(fp32: sg.BatchedEncoder, tmp_path: Path) -> None:
    """The digest no longer holds the precision, so the cache key must: a bf16 engine must
    not be served fp32 rows (or the reverse) from a shared cache."""
    texts = ["a handwritten digit three", "a handwritten digit eight"]
    plain = {p: fp32.with_precision(p).encode_texts(texts) for p in ("fp32", "bf16")}
    assert not torch.equal(plain["fp32"], plain["bf16"])
    cached = sg.load_encoder(SPEC, device="cpu", precision="fp32", cache_dir=tmp_path)
    for first, second in (("fp32", "bf16"), ("bf16", "fp32")):
        cached.with_precision(first).encode_texts(texts)  # fills the cache
        assert torch.equal(cached.with_precision(second).encode_texts(texts), plain[second])
