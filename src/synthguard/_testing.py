"""Offline stand-ins shared by the tests, the ``--smoke`` examples and the docs' screenshots.

Not part of the public API: tiny random models are for exercising code paths offline, never
for measuring anything; :func:`flawed_digits` is real data with flaws whose answers are known.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["clip_tokenizer", "flawed_digits", "tiny_blip"]


def clip_tokenizer(path: Path) -> Any:
    """A transformers ``CLIPTokenizer`` with open_clip's bundled BPE (identical token ids).

    transformers 5's ``CLIPTokenizer(vocab_file=...)`` ignores the file, so the vocabulary
    and merges are written to ``path`` and loaded with ``from_pretrained``.
    """
    import open_clip
    from transformers import CLIPTokenizer

    simple = open_clip.get_tokenizer("ViT-B-32")
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {rename.get(token, token): index for token, index in simple.encoder.items()}
    merges = [" ".join(pair) for pair, _ in sorted(simple.bpe_ranks.items(), key=lambda x: x[1])]
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(str(path))


def tiny_blip(words: Sequence[str], *, seed: int = 0) -> tuple[Any, Any]:
    """A random ``BlipForConditionalGeneration`` (32 px, 2 layers) and its ``BlipProcessor``.

    The tokenizer is a BERT WordPiece over ``words`` plus BLIP's special tokens
    (transformers 5: ``BertTokenizer(vocab_file=...)`` ignores the file, ``vocab=`` works).
    """
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    vocab = {token: i for i, token in enumerate([*special, *words])}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, bos_token="[DEC]")
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2, "projection_dim": 32}  # fmt: skip
    ids = {"bos_token_id": 5, "eos_token_id": 3, "sep_token_id": 3, "pad_token_id": 0}
    config = BlipConfig(
        text_config={
            **small,
            **ids,
            "vocab_size": len(vocab),
            "encoder_hidden_size": 32,
            "max_position_embeddings": 40,
        },
        vision_config={**small, "image_size": 32, "patch_size": 8},
        projection_dim=32,
        image_text_hidden_size=32,
    )
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    return model, BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def flawed_digits(
    digits: Any, *, start: int = 270, n: int = 100, noise_caption: str | None = None
) -> tuple[Any, dict[str, list[tuple[int, int]]]]:
    """Fresh real digits (``digits[start:start + n]``, outside a reference built from
    ``digits[:start]``) with known flaws appended: exact repeats of earlier samples, copies of
    reference images, captions and labels naming another digit, and noise images (the first
    captioned ``noise_caption`` when given).

    Returns the :class:`~synthguard.PairBatch` and ``{flaw: [(index, source), ...]}``: the
    sample a repeat repeats, the reference digit a copy copies, the sample a relabel mislabels
    (``-1`` for noise).
    """
    import numpy as np
    from PIL import Image

    from synthguard.batch import PairBatch
    from synthguard.datasets import DIGIT_NAMES

    images = list(digits.images[start : start + n])
    captions = list(digits.captions[start : start + n])
    labels = [int(y) for y in digits.labels[start : start + n]]
    flaws: dict[str, list[tuple[int, int]]] = {"repeat": [], "copy": [], "relabel": [], "noise": []}

    def add(image: Any, caption: str, label: int, flaw: str, source: int) -> None:
        flaws[flaw].append((len(images), source))
        images.append(image)
        captions.append(caption)
        labels.append(label)

    for j in range(0, 30, 5):
        add(images[j], captions[j], labels[j], "repeat", j)
    for j in range(4):
        add(digits.images[j], digits.captions[j], int(digits.labels[j]), "copy", j)
    for j in range(40, 46):
        other = (labels[j] + 3) % 10
        add(images[j], f"a handwritten digit {DIGIT_NAMES[other]}", other, "relabel", j)
    rng = np.random.default_rng(0)
    for j in range(4):
        noise = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8))
        caption = noise_caption if j == 0 and noise_caption is not None else captions[j]
        add(noise, caption, labels[j], "noise", -1)
    ids = [f"s{i:03d}" for i in range(len(images))]
    return PairBatch(images, captions, labels=labels, ids=ids), flaws
