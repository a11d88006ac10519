"""open_clip and transformers backends on tiny random models reloaded through spec strings."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import synthguard as sg


def _images(n: int, seed: int = 0, size: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


CAPTIONS = ["a cat", "a photo of a dog on the grass", "an apple " * 40, "zebra"]


def test_open_clip_and_transformers_agree_on_shared_weights(
    tiny_openclip_dir: Path, tiny_hf_dir: Path
) -> None:
    oc = sg.load_encoder(f"openclip:local-dir:{tiny_openclip_dir}")
    hf = sg.load_encoder(f"hf:{tiny_hf_dir}")
    assert oc.dim == hf.dim == 32
    assert oc.context_length == hf.context_length == 32
    images = _images(6)
    torch.testing.assert_close(
        oc.encode_images(images), hf.encode_images(images), atol=2e-6, rtol=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sg.CaptionTruncatedWarning)
        text_oc, text_hf = oc.encode_texts(CAPTIONS), hf.encode_texts(CAPTIONS)
    # Includes a caption beyond the context: both keep the end-of-text token when truncating.
    torch.testing.assert_close(text_oc, text_hf, atol=2e-6, rtol=0)


def test_reference_forward_matches_engine(tiny_openclip_dir: Path) -> None:
    """The engine returns exactly open_clip's own forward, normalised (independent path)."""
    import open_clip
    from PIL import Image

    enc = sg.load_encoder(f"openclip:local-dir:{tiny_openclip_dir}")
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_openclip_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_openclip_dir}")
    images = _images(3, seed=4)
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.fromarray(a)) for a in images])
        expected_img = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        expected_txt = torch.nn.functional.normalize(
            model.encode_text(tokenizer(CAPTIONS[:2])), dim=-1
        )
    torch.testing.assert_close(enc.encode_images(images), expected_img, atol=1e-6, rtol=0)
    torch.testing.assert_close(enc.encode_texts(CAPTIONS[:2]), expected_txt, atol=1e-6, rtol=0)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_shape_norm_dtype_and_order_across_batch_sizes(
    tiny_openclip_dir: Path, batch_size: int
) -> None:
    enc = sg.load_encoder(f"openclip:local-dir:{tiny_openclip_dir}", batch_size=batch_size)
    images = _images(20, seed=1)
    out = enc.encode_images(images)
    assert out.shape == (20, 32) and out.dtype == torch.float32 and out.device.type == "cpu"
    torch.testing.assert_close(out.norm(dim=1), torch.ones(20), atol=1e-5, rtol=0)
    one_by_one = torch.cat([enc.encode_images([image]) for image in images])
    torch.testing.assert_close(out, one_by_one, atol=1e-6, rtol=0)
    texts = [f"caption number {i}" for i in range(20)]
    text = enc.encode_texts(texts)
    torch.testing.assert_close(
        text, torch.cat([enc.encode_texts([t]) for t in texts]), atol=1e-6, rtol=0
    )


def test_siglip_model_loads_through_hf_spec(tmp_path: Path, tiny_hf_dir: Path) -> None:
    """SiglipModel: a different tower layout and pooling, same spec form and guarantees."""
    from transformers import AutoTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel

    config = SiglipConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "max_position_embeddings": 16,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "image_size": 32,
            "patch_size": 8,
        },
    )
    torch.manual_seed(0)
    SiglipModel(config).save_pretrained(str(tmp_path))
    AutoTokenizer.from_pretrained(str(tiny_hf_dir)).save_pretrained(str(tmp_path))
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(tmp_path))
    enc = sg.load_encoder(f"hf:{tmp_path}")
    assert enc.fingerprint.preprocessing["model_type"] == "siglip"
    assert enc.context_length == 16
    out = enc.encode_images(_images(3))
    txt = enc.encode_texts(["a cat", "a dog"])
    assert out.shape == (3, 32) and txt.shape == (2, 32)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)


def test_hf_dynamic_padding_does_not_change_embeddings(tiny_hf_dir: Path) -> None:
    """CLIP pads to the longest caption in a batch; each caption must embed as if alone."""
    enc = sg.load_encoder(f"hf:{tiny_hf_dir}", batch_size=3)
    texts = ["a", "a much longer caption about a red bicycle leaning on a wall", "two cats"]
    together = enc.encode_texts(texts)
    alone = torch.cat([enc.encode_texts([t]) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=0)
    assert enc.fingerprint.preprocessing["padding"] == "longest"
