"""Embed real handwritten digits with the bundled offline encoder and zero-shot classify them.

Run: ``python examples/embed_digits.py`` (offline, a few seconds on a laptop CPU).
"""

from __future__ import annotations

import torch

import synthguard as sg
from synthguard.datasets import DIGIT_NAMES, load_digits


def main() -> None:
    encoder = sg.load_encoder("bundled:digits", progress=True)
    test = load_digits("test")
    batch = sg.PairBatch(images=test.images, captions=list(test.captions), labels=test.labels)
    pairs = encoder.embed(batch)
    print(
        f"{len(batch)} pairs, {len(pairs.errors)} unusable, {pairs.n_truncated} captions truncated"
    )

    prompts = encoder.encode_texts([f"a handwritten digit {name}" for name in DIGIT_NAMES])
    predicted = (pairs.image @ prompts.T).argmax(dim=1)
    accuracy = (predicted == torch.as_tensor(test.labels)).float().mean()
    alignment = (pairs.image * pairs.text).sum(dim=1)
    print(f"zero-shot accuracy {accuracy:.3f}; mean image-caption cosine {alignment.mean():.3f}")
    print(f"fingerprint {encoder.fingerprint.digest[:16]} ({encoder.fingerprint.model_id})")


if __name__ == "__main__":
    main()
