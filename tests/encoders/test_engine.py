"""The engine: bad samples, truncation, OOM back-off, worker threads, precision, progress."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import synthguard as sg
from synthguard.encoders._openclip import OpenClipBackend


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


def test_bad_image_raises_naming_index_and_reason(tiny_encoder: Any) -> None:
    images: list[Any] = _images(3)
    images[1] = b"not an image"
    with pytest.raises(sg.InvalidInputError, match=r"images\[1\]: unreadable_image: cannot decode"):
        tiny_encoder.encode_images(images)


def test_nan_mode_keeps_the_rest_of_the_batch(tiny_encoder: Any) -> None:
    good = _images(4)
    mixed: list[Any] = [good[0], b"junk", good[1], "/no/such/file.png", good[2], good[3]]
    out = tiny_encoder.encode_images(mixed, on_error="nan")
    assert torch.isnan(out[1]).all() and torch.isnan(out[3]).all()
    clean = tiny_encoder.encode_images(good)
    torch.testing.assert_close(out[[0, 2, 4, 5]], clean, atol=1e-6, rtol=0)


def test_embed_reports_per_sample_reasons(tiny_encoder: Any) -> None:
    images: list[Any] = _images(5)
    images[0] = np.zeros((0, 0, 3), np.uint8)
    batch = sg.PairBatch(images=images, captions=["ok", None, "   ", b"\xff\xfe", "fine"])
    result = tiny_encoder.embed(batch)
    assert result.errors == {
        0: sg.ReasonCode.UNREADABLE_IMAGE,
        1: sg.ReasonCode.EMPTY_CAPTION,
        2: sg.ReasonCode.EMPTY_CAPTION,
        3: sg.ReasonCode.UNREADABLE_CAPTION,
    }
    assert "zero size" in result.error_details[0] and "None" in result.error_details[1]
    assert result.valid.tolist() == [False, False, False, False, True]
    assert torch.isfinite(result.image[1:]).all() and torch.isfinite(result.text[[0, 4]]).all()


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda e: e.encode_images([]), "images must contain at least one sample"),
        (lambda e: e.encode_texts([]), "texts must contain at least one sample"),
        (lambda e: e.encode_texts("a single string"), "texts must be a sequence"),
        (lambda e: e.encode_texts(["a", None]), r"texts\[1\]: empty_caption"),
        (lambda e: e.encode_texts(["a", 3]), r"texts\[1\]: unreadable_caption"),
        (lambda e: e.encode_images([np.zeros((4, 4, 3), np.uint8)], on_error="skip"), "on_error"),
        (lambda e: e.embed(["not", "a batch"]), "batch must be a PairBatch"),
    ],
)
def test_bad_arguments_have_clear_messages(tiny_encoder: Any, call: Any, fragment: str) -> None:
    with pytest.raises(sg.InvalidInputError, match=fragment):
        call(tiny_encoder)


def test_long_captions_keep_end_of_text_token(tiny_encoder: Any) -> None:
    """torchmetrics #2883: naive truncation drops EOT and pools the wrong token."""
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    long_caption = "a very detailed photo of " + "red " * 60 + "apples"
    ids = [tokenizer.sot_token_id, *tokenizer.encode(long_caption), tokenizer.eot_token_id]
    assert len(ids) > tiny_encoder.context_length
    kept = [*ids[: tiny_encoder.context_length - 1], tokenizer.eot_token_id]
    naive = ids[: tiny_encoder.context_length]  # what the buggy path feeds the model
    model = tiny_encoder.module
    with torch.no_grad():
        right = torch.nn.functional.normalize(model.encode_text(torch.tensor([kept])), dim=-1)
        wrong = torch.nn.functional.normalize(model.encode_text(torch.tensor([naive])), dim=-1)
    with pytest.warns(sg.CaptionTruncatedWarning, match="1 of 2 captions"):
        out = tiny_encoder.encode_texts([long_caption, "short"])
    torch.testing.assert_close(out[:1], right, atol=1e-6, rtol=0)
    assert (out[0] - wrong[0]).abs().max() > 1e-3
    batch = sg.PairBatch(images=_images(2), captions=[long_caption, "short"])
    embedded = tiny_encoder.embed(batch)
    assert embedded.truncated.tolist() == [True, False] and embedded.n_truncated == 1


class _FlakyMemoryBackend(OpenClipBackend):
    """Runs out of memory whenever a forward batch is larger than ``limit``."""

    limit = 3
    seen: list[int]

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.seen.append(pixel_values.shape[0])
        if pixel_values.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().image_features(pixel_values)


def test_out_of_memory_halves_the_batch_and_retries(tiny_openclip_dir: Path) -> None:
    backend = _FlakyMemoryBackend(f"local-dir:{tiny_openclip_dir}", None, model_id="flaky")
    backend.seen = []
    enc = sg.BatchedEncoder(backend, batch_size=16)
    images = _images(20, seed=3)
    with pytest.warns(ResourceWarning, match="out of memory at batch size 16"):
        out = enc.encode_images(images)
    assert enc.batch_size == 2  # 16 -> 8 -> 4 -> 2, and it stays there
    assert max(backend.seen[3:]) <= 3
    reference = sg.load_encoder(f"openclip:local-dir:{tiny_openclip_dir}")
    torch.testing.assert_close(out, reference.encode_images(images), atol=1e-6, rtol=0)


def test_out_of_memory_at_batch_size_one_fails_closed(tiny_openclip_dir: Path) -> None:
    backend = _FlakyMemoryBackend(f"local-dir:{tiny_openclip_dir}", None, model_id="flaky")
    backend.limit = 0
    backend.seen = []
    enc = sg.BatchedEncoder(backend, batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with pytest.raises(sg.EncoderError, match="even at batch size 1"):
            enc.encode_images(_images(3))


def test_model_errors_become_typed_errors(tiny_openclip_dir: Path) -> None:
    class Broken(OpenClipBackend):
        def text_features(self, **tokens: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("kernel exploded")

    enc = sg.BatchedEncoder(Broken(f"local-dir:{tiny_openclip_dir}", None, model_id="broken"))
    with pytest.raises(sg.EncoderError, match="kernel exploded"):
        enc.encode_texts(["a"])


def test_preprocessing_runs_on_worker_threads(tiny_openclip_dir: Path) -> None:
    threads: set[str] = set()

    class Spy(OpenClipBackend):
        def preprocess(self, image: Any) -> torch.Tensor:
            threads.add(threading.current_thread().name)
            return super().preprocess(image)

    enc = sg.BatchedEncoder(
        Spy(f"local-dir:{tiny_openclip_dir}", None, model_id="spy"), batch_size=4, num_workers=2
    )
    enc.encode_images(_images(16))
    assert threads and all(name.startswith("synthguard-prep") for name in threads)
    assert threading.main_thread().name not in threads


def test_device_and_precision_resolution(tiny_openclip_dir: Path) -> None:
    spec = f"openclip:local-dir:{tiny_openclip_dir}"
    enc = sg.load_encoder(spec)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert enc.device.type == expected
    assert enc.precision == ("fp32" if expected == "cpu" else enc.precision)
    with pytest.raises(sg.InvalidInputError, match="precision must be one of"):
        sg.load_encoder(spec, precision="fp8")
    with pytest.raises(sg.InvalidInputError, match="batch_size must be >= 1, got 0"):
        sg.load_encoder(spec, batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(sg.InvalidInputError, match="CUDA is not available"):
            sg.load_encoder(spec, device="cuda")


def test_bf16_autocast_is_close_to_fp32(tiny_openclip_dir: Path) -> None:
    spec = f"openclip:local-dir:{tiny_openclip_dir}"
    fp32 = sg.load_encoder(spec, device="cpu", precision="fp32")
    bf16 = sg.load_encoder(spec, device="cpu", precision="bf16")
    images = _images(4)
    a, b = fp32.encode_images(images), bf16.encode_images(images)
    assert b.dtype == torch.float32
    assert (a * b).sum(dim=1).min() > 0.98
    # The same model at other numerics: one digest, the precision recorded beside it.
    assert fp32.fingerprint.digest == bf16.fingerprint.digest
    assert (fp32.fingerprint.precision, bf16.fingerprint.precision) == ("fp32", "bf16")


def test_progress_bar_is_opt_in(tiny_encoder: Any, capsys: pytest.CaptureFixture[str]) -> None:
    tiny_encoder.encode_images(_images(3))
    assert "embedding images" not in capsys.readouterr().err
    tiny_encoder.encode_images(_images(3), progress=True)
    assert "embedding images" in capsys.readouterr().err


def test_concurrent_calls_match_serial(tiny_encoder: Any) -> None:
    batches = [_images(9, seed=s) for s in range(4)]
    serial = [tiny_encoder.encode_images(b) for b in batches]
    results: dict[int, torch.Tensor] = {}

    def run(k: int) -> None:
        results[k] = tiny_encoder.encode_images(batches[k])

    workers = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for k in range(4):
        torch.testing.assert_close(results[k], serial[k], atol=1e-6, rtol=0)


def _timeline(tiny_openclip_dir: Path, prefetch: int) -> list[str]:
    import time

    events: list[str] = []
    lock = threading.Lock()

    class Recorder(OpenClipBackend):
        def preprocess(self, image: Any) -> torch.Tensor:
            with lock:
                events.append("prep")
            return super().preprocess(image)

        def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
            with lock:
                events.append("forward")
            time.sleep(0.2)  # long enough for prefetching workers to run meanwhile
            out = super().image_features(pixel_values)
            with lock:
                events.append("done")
            return out

    backend = Recorder(f"local-dir:{tiny_openclip_dir}", None, model_id="recorder")
    enc = sg.BatchedEncoder(backend, batch_size=4, num_workers=2, prefetch_batches=prefetch)
    enc.encode_images(_images(16))
    return events


def test_prefetch_overlaps_preparation_with_the_forward_pass(tiny_openclip_dir: Path) -> None:
    events = _timeline(tiny_openclip_dir, prefetch=2)
    first_done = events.index("done")
    # With two batches queued ahead, batches 2 and 3 were prepared before batch 1 finished.
    assert events[:first_done].count("prep") >= 12


def test_without_prefetch_preparation_never_overlaps_the_forward(tiny_openclip_dir: Path) -> None:
    events = _timeline(tiny_openclip_dir, prefetch=0)
    inside = False
    for event in events:
        inside = {"forward": True, "done": False}.get(event, inside)
        assert not (inside and event == "prep")
    assert sg.load_encoder(f"openclip:local-dir:{tiny_openclip_dir}").prefetch_batches == (
        0 if not torch.cuda.is_available() else 2
    )


def test_context_manager_closes_workers(tiny_openclip_dir: Path, tmp_path: Path) -> None:
    spec = f"openclip:local-dir:{tiny_openclip_dir}"
    with sg.load_encoder(spec, cache_dir=tmp_path) as enc:
        enc.encode_images(_images(2))
    with pytest.raises(sg.EncoderError, match="was closed"):
        enc.encode_images(_images(1))
    with pytest.raises(sg.EncoderError, match="was closed"):
        enc.encode_texts(["a"])
