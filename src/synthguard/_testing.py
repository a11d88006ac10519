"""Offline stand-ins for pretrained assets, shared by the tests and the ``--smoke`` examples.

Not part of the public API: tiny random models are for exercising code paths offline, never
for measuring anything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["clip_tokenizer", "tiny_blip"]


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
