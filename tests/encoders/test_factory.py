"""Spec parsing, user encoders, and proof that nothing touches the network."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import synthguard as sg
from conftest import NETWORK_ATTEMPTS
from synthguard.encoders import embed_pairs


@pytest.mark.parametrize("spec", ["clip:ViT-B-32", "nonsense", "bundled:", 42])
def test_unknown_spec_lists_accepted_forms(spec: Any) -> None:
    with pytest.raises(sg.InvalidInputError) as info:
        sg.load_encoder(spec)
    message = str(info.value)
    for form in ("openclip:NAME/PRETRAINED_TAG", "hf:MODEL_ID_OR_PATH", "bundled:NAME", "protocol"):
        assert form in message or spec == "bundled:"


def test_builtin_openclip_name_needs_a_tag() -> None:
    with pytest.raises(sg.InvalidInputError, match="need a pretrained tag"):
        sg.load_encoder("openclip:ViT-B-32")


def test_unknown_bundled_model_and_missing_folder() -> None:
    with pytest.raises(sg.InvalidInputError, match="bundled model must be one of"):
        sg.load_encoder("bundled:imagenet")
    with pytest.raises(sg.EncoderLoadError, match="not found"):
        sg.load_encoder("openclip:local-dir:/no/such/folder")


def test_hub_specs_fail_offline_without_touching_the_network(monkeypatch: Any) -> None:
    """Tests run with HF_HUB_OFFLINE=1 and a socket guard; a hub spec fails cleanly."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")  # no cached copy to fall back on
    before = len(NETWORK_ATTEMPTS)
    with pytest.raises(sg.EncoderLoadError, match="cannot load"):
        sg.load_encoder("hf:openai/clip-vit-base-patch32")
    with pytest.raises(sg.EncoderLoadError, match="cannot load open_clip model"):
        sg.load_encoder("openclip:ViT-B-32/laion2b_s34b_b79k")
    assert len(NETWORK_ATTEMPTS) == before


def test_socket_guard_is_active() -> None:
    import socket

    with socket.socket() as sock, pytest.raises(OSError, match="network access attempted"):
        sock.connect(("198.51.100.1", 443))  # TEST-NET-2, never routed


class NumpyEncoder:
    """A user encoder implementing only the protocol (no engine)."""

    dim = 3
    device = torch.device("cpu")
    context_length = 77

    @property
    def fingerprint(self) -> sg.EncoderFingerprint:
        return sg.EncoderFingerprint(model_id="numpy", weights_sha256="0" * 64, dim=3)

    def encode_images(self, images: Any, *, on_error: str = "raise") -> torch.Tensor:
        rows = []
        for image in images:
            if not isinstance(image, np.ndarray):
                rows.append(torch.full((3,), float("nan")))
                continue
            rows.append(torch.tensor(image.reshape(-1, 3).mean(0), dtype=torch.float32) + 1)
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)

    def encode_texts(self, texts: Any, *, on_error: str = "raise") -> torch.Tensor:
        rows = [
            torch.full((3,), float("nan")) if not t else torch.tensor([len(t), 1.0, 2.0])
            for t in texts
        ]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def test_user_encoder_passes_through_and_embeds_pairs() -> None:
    user = NumpyEncoder()
    assert sg.load_encoder(user) is user
    with pytest.raises(sg.InvalidInputError, match="apply only to spec strings"):
        sg.load_encoder(user, batch_size=4)
    images: list[Any] = [np.ones((2, 2, 3)), "not an array", np.zeros((2, 2, 3))]
    result = embed_pairs(user, sg.PairBatch(images=images, captions=["a", "b", ""]))
    assert result.errors == {1: sg.ReasonCode.UNREADABLE_IMAGE, 2: sg.ReasonCode.EMPTY_CAPTION}


def test_engine_embed_is_used_by_embed_pairs(tiny_encoder: Any) -> None:
    batch = sg.PairBatch(images=[np.zeros((8, 8, 3), np.uint8)], captions=["x"])
    torch.testing.assert_close(
        embed_pairs(tiny_encoder, batch).image, tiny_encoder.embed(batch).image
    )


def test_local_dir_relative_path(tiny_openclip_dir: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tiny_openclip_dir.parent)
    enc = sg.load_encoder(f"openclip:local-dir:./{tiny_openclip_dir.name}")
    assert enc.dim == 32


def test_an_open_clip_model_in_memory_embeds_as_its_spec_does(tiny_openclip_dir: Path) -> None:
    import open_clip

    import synthguard as sg
    from synthguard.encoders import from_open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(
        f"local-dir:{tiny_openclip_dir}", device="cpu"
    )
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_openclip_dir}")
    held = from_open_clip(model, preprocess, tokenizer, batch_size=4)
    loaded = sg.load_encoder(f"openclip:local-dir:{tiny_openclip_dir}", batch_size=4)
    images = [np.full((16, 16, 3), v, dtype=np.uint8) for v in (0, 90, 200)]
    texts = ["a red square", "a blue circle", "nothing"]
    assert torch.allclose(held.encode_images(images), loaded.encode_images(images), atol=1e-6)
    assert torch.allclose(held.encode_texts(texts), loaded.encode_texts(texts), atol=1e-6)
    assert held.fingerprint.weights_sha256 == loaded.fingerprint.weights_sha256
    assert held.spec is None and "in memory" in held.fingerprint.model_id
    with pytest.raises(sg.EncoderLoadError, match="open_clip model"):
        from_open_clip(object(), preprocess, tokenizer)


def test_a_transformers_model_in_memory_embeds_as_its_spec_does(tiny_hf_dir: Path) -> None:
    import transformers

    import synthguard as sg
    from synthguard.encoders import from_transformers

    model = transformers.AutoModel.from_pretrained(str(tiny_hf_dir))
    processor = transformers.CLIPProcessor(
        image_processor=transformers.AutoImageProcessor.from_pretrained(str(tiny_hf_dir)),
        tokenizer=transformers.AutoTokenizer.from_pretrained(str(tiny_hf_dir)),
    )
    held = from_transformers(model, processor, batch_size=4)
    loaded = sg.load_encoder(f"hf:{tiny_hf_dir}", batch_size=4)
    texts = ["a red square", "a blue circle"]
    assert torch.allclose(held.encode_texts(texts), loaded.encode_texts(texts), atol=1e-6)
    images = [np.full((16, 16, 3), v, dtype=np.uint8) for v in (0, 200)]
    assert torch.allclose(held.encode_images(images), loaded.encode_images(images), atol=1e-6)
    with pytest.raises(sg.EncoderLoadError, match="processor"):
        from_transformers(model, object())


def test_a_local_dir_without_weights_is_refused(tiny_openclip_dir: Path, tmp_path: Path) -> None:
    """Issue 16: open_clip built a randomly initialised model from a config-only folder."""
    import shutil

    config_only = tmp_path / "config_only"
    config_only.mkdir()
    shutil.copy(tiny_openclip_dir / "open_clip_config.json", config_only)
    with pytest.raises(sg.EncoderLoadError, match="holds no weights"):
        sg.load_encoder(f"openclip:local-dir:{config_only}")
