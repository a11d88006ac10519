"""Gate a Hugging Face dataset of synthetic pairs before fine-tuning on it (offline).

A reference is built from 300 real held-out digits. The "synthetic" dataset has three chunks of
40 pairs: real digits, real digits with every fourth caption naming the wrong digit, and a
mode-collapsed chunk (one digit, jittered). ``guard_dataset`` adds decision columns;
``filter`` keeps what may be trained on; each chunk's report goes to a logger as flat metrics.

    python examples/hf_dataset_gate.py
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import datasets
import numpy as np
from PIL import Image

import synthguard as sg
from synthguard.datasets import DIGIT_NAMES, load_digits
from synthguard.integrations.hf_datasets import guard_dataset

CHUNK = 40


def synthetic_pairs() -> datasets.Dataset:
    real = load_digits("test")
    images = list(real.images[300:380])
    captions = list(real.captions[300:380])
    for i in range(CHUNK, 2 * CHUNK, 4):  # the captioner names the wrong digit
        captions[i] = f"a handwritten digit {DIGIT_NAMES[(real.labels[300 + i] + 5) % 10]}"
    rng = np.random.default_rng(0)
    base = real.pixels[420].astype(np.int16)
    for _ in range(CHUNK):  # a collapsed generator: one image, jittered
        noisy = np.clip(base + rng.integers(-10, 11, base.shape), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(noisy))
        captions.append(f"a handwritten digit {DIGIT_NAMES[real.labels[420]]}")
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    return datasets.Dataset.from_dict({"image": images, "text": captions}, features=features)


def main(argv: Sequence[str] | None = None) -> int:
    del argv  # no options: everything is offline and seeded
    real = load_digits("test")
    reference = sg.Reference.build(real.images[:300], real.captions[:300], encoder="bundled:digits")
    guard = sg.Guard(reference, sg.GuardConfig(n_resamples=199, alpha_batch=0.05))
    logged: list[dict[str, float]] = []  # e.g. wandb.log / mlflow.log_metrics
    decided = guard_dataset(
        synthetic_pairs(), guard, caption_column="text", chunk_size=CHUNK,
        on_report=lambda report: logged.append(report.to_metrics()),
    )  # fmt: skip
    clean = decided.filter(lambda row: row["sg_accepted"])
    for chunk, metrics in enumerate(logged):
        verdict = "accepted" if metrics["synthguard/accepted"] else "REJECTED"
        if metrics["synthguard/excess_rejects"]:  # the generator is flagged, its good samples kept
            verdict = "EXCESS REJECTS (its accepted samples kept)"
        print(
            f"chunk {chunk}: {verdict}, {int(metrics['synthguard/n_accepted'])} of "
            f"{int(metrics['synthguard/n_samples'])} samples accepted"
        )
    print(f"kept for training: {len(clean)} of {len(decided)} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
