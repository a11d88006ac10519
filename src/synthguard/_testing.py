"""Offline stand-ins for pretrained assets, shared by the tests and the ``--smoke`` examples.

Not part of the public API: tiny random models are for exercising code paths offline, never
for measuring anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["clip_tokenizer"]


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
