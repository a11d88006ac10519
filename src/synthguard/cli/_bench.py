"""``synthguard bench``: the guard's overhead next to the embedding it follows, in one run.

On the bundled digits model and the 540 held-out real digits (a reference of 270, checks of
the other 270): the time to embed the checked pairs, the first ``check`` (embedding + the
one-off resampled null) and a steady ``check_embeddings`` (null cached), as ratios to the
embedding time. The full-scale benchmarks (50k reference, ViT-B-32) are ``benchmarks/`` in
the source tree, with results in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import datetime
import platform
import time

import torch

__all__ = ["run_bench"]


def run_bench(repeats: int = 3) -> str:
    """Run the benchmark and return its report as Markdown."""
    from synthguard.batch import PairBatch
    from synthguard.datasets import DIGIT_NAMES, load_digits
    from synthguard.encoders import load_encoder
    from synthguard.guard import Guard
    from synthguard.reference import Reference

    encoder = load_encoder("bundled:digits")
    test = load_digits("test")
    half = len(test.labels) // 2
    reference = Reference.build(
        test.images[:half], test.captions[:half], encoder=encoder, labels=test.labels[:half],
        label_names=DIGIT_NAMES, label_templates="a handwritten digit {name}",
    )  # fmt: skip
    guard = Guard(reference)
    batch = PairBatch(test.images[half:], test.captions[half:], labels=test.labels[half:])
    start = time.perf_counter()
    guard.check(batch)
    first = time.perf_counter() - start
    embed, check = [], []
    for _ in range(repeats):  # interleaved, best of: noise hits both sides alike
        start = time.perf_counter()
        image = encoder.encode_images(batch.images)
        text = encoder.encode_texts(batch.captions)
        embed.append(time.perf_counter() - start)
        start = time.perf_counter()
        guard.check_embeddings(image, text, labels=batch.labels)
        check.append(time.perf_counter() - start)
    e, c = min(embed), min(check)
    return "\n".join([
        f"synthguard bench — {datetime.date.today()}, {platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        f"batch: {len(batch)} real digit pairs; reference: {half} pairs (bundled:digits, d=64)",
        "",
        "| step | seconds | × embedding |",
        "|---|---|---|",
        f"| embed images + captions | {e:.3f} | 1.00 |",
        f"| guard.check_embeddings (null cached) | {c:.3f} | {c / e:.2f} |",
        f"| first guard.check (embed + one-off null) | {first:.3f} | {first / e:.2f} |",
    ])  # fmt: skip
