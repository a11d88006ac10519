"""Fingerprints identify the embedding function; the cache reuses embeddings safely."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import synthguard as sg
from synthguard.encoders._images import content_key
from synthguard.encoders._openclip import OpenClipBackend


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_fingerprint_is_stable_and_sensitive(tiny_openclip_dir: Path, tmp_path: Path) -> None:
    from _tiny_models import build_openclip_dir

    spec = f"openclip:local-dir:{tiny_openclip_dir}"
    base = sg.load_encoder(spec).fingerprint
    assert sg.load_encoder(spec).fingerprint == base  # reload: identical
    assert base.dim == 32 and base.backend == "open_clip" and "torch" in base.versions

    # Same folder contents elsewhere: the function is the same, but the id says where it came
    # from, so the digest differs only through model_id; weights hash stays equal.
    moved = _copy(tiny_openclip_dir, tmp_path / "moved")
    assert sg.load_encoder(f"openclip:local-dir:{moved}").fingerprint.weights_sha256 == (
        base.weights_sha256
    )

    other_model = build_openclip_dir(tmp_path / "other", seed=1)
    assert sg.load_encoder(f"openclip:local-dir:{other_model}").fingerprint.weights_sha256 != (
        base.weights_sha256
    )

    nudged = _copy(tiny_openclip_dir, tmp_path / "nudged")
    weights = load_file(str(nudged / "open_clip_model.safetensors"))
    weights["ln_final.bias"] = weights["ln_final.bias"] + 1e-3
    save_file(weights, str(nudged / "open_clip_model.safetensors"))
    assert sg.load_encoder(f"openclip:local-dir:{nudged}").fingerprint.weights_sha256 != (
        base.weights_sha256
    )

    preprocessed = _copy(tiny_openclip_dir, tmp_path / "preprocessed")
    config = json.loads((preprocessed / "open_clip_config.json").read_text())
    config["preprocess_cfg"]["mean"] = [0.5, 0.5, 0.5]
    (preprocessed / "open_clip_config.json").write_text(json.dumps(config))
    changed = sg.load_encoder(f"openclip:local-dir:{preprocessed}").fingerprint
    assert changed.weights_sha256 == base.weights_sha256
    assert changed.preprocessing != base.preprocessing
    assert (
        changed.digest
        != sg.EncoderFingerprint(
            **{**changed.model_dump(), "preprocessing": base.preprocessing}
        ).digest
    )


def test_fingerprint_digest_ignores_versions_only() -> None:
    fp = sg.EncoderFingerprint(
        model_id="m", weights_sha256="a" * 64, dim=8, versions={"torch": "1"}
    )
    same = fp.model_copy(update={"versions": {"torch": "2"}})
    assert same == fp and same.digest == fp.digest
    assert fp.model_copy(update={"dim": 9}) != fp
    assert fp.to_dict()["digest"] == fp.digest


def test_cache_hits_skip_the_model_and_return_identical_rows(
    tiny_openclip_dir: Path, tmp_path: Path
) -> None:
    calls: list[int] = []

    class Counting(OpenClipBackend):
        def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
            calls.append(pixel_values.shape[0])
            return super().image_features(pixel_values)

    def make() -> Any:
        backend = Counting(f"local-dir:{tiny_openclip_dir}", None, model_id="counting")
        return sg.BatchedEncoder(backend, cache_dir=tmp_path / "cache", batch_size=4)

    images = _images(6)
    first = make().encode_images(images)
    assert sum(calls) == 6
    calls.clear()
    again = make()  # a new process would see the same file
    torch.testing.assert_close(again.encode_images(images), first, atol=0, rtol=0)
    assert calls == []
    extended = again.encode_images([*images, *_images(2, seed=9)])
    assert sum(calls) == 2
    torch.testing.assert_close(extended[:6], first, atol=0, rtol=0)
    text = again.encode_texts(["a", "b"])
    torch.testing.assert_close(again.encode_texts(["b", "a"]), text.flip(0), atol=0, rtol=0)
    assert again.cache is not None and len(again.cache) == 10


def test_cache_never_mixes_encoders(tiny_openclip_dir: Path, tmp_path: Path) -> None:
    from _tiny_models import build_openclip_dir

    other_dir = build_openclip_dir(tmp_path / "other", seed=7)
    images = _images(3)
    a = sg.load_encoder(f"openclip:local-dir:{tiny_openclip_dir}", cache_dir=tmp_path / "c")
    b = sg.load_encoder(f"openclip:local-dir:{other_dir}", cache_dir=tmp_path / "c")
    a.encode_images(images)
    expected = sg.load_encoder(f"openclip:local-dir:{other_dir}").encode_images(images)
    torch.testing.assert_close(b.encode_images(images), expected, atol=1e-6, rtol=0)


def test_corrupt_cache_is_detected(tiny_encoder: Any, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    spec = f"openclip:local-dir:{Path(tiny_encoder.model_id.split(':', 2)[2])}"
    enc = sg.load_encoder(spec, cache_dir=cache_dir)
    enc.encode_images(_images(2))
    path = cache_dir / "embeddings.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("UPDATE embeddings SET vector = zeroblob(length(vector))")
    fresh = sg.load_encoder(spec, cache_dir=cache_dir)
    with pytest.raises(sg.CorruptFileError, match="checksum"):
        fresh.encode_images(_images(2))

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "embeddings.sqlite3").write_bytes(b"this is not a database" * 100)
    broken = sg.load_encoder(spec, cache_dir=garbage)
    with pytest.raises(sg.CorruptFileError, match=r"not a readable SQLite database|corrupt"):
        broken.encode_images(_images(1))


def _palette_image(indices: np.ndarray, palette: list[int]) -> Any:
    from PIL import Image

    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette(palette)
    return image


def test_palette_images_with_new_colours_are_not_served_from_the_cache(
    tiny_openclip_dir: Path, tmp_path: Path
) -> None:
    """Issue 16: same palette indices, another palette -> the old embedding was returned."""
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 4, (32, 32))
    first = _palette_image(indices, [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    second = _palette_image(indices, [255, 255, 255, 0, 0, 0, 90, 90, 90, 200, 10, 10] + [0] * 756)
    spec = f"openclip:local-dir:{tiny_openclip_dir}"
    cached = sg.load_encoder(spec, cache_dir=tmp_path / "c")
    cached.encode_images([first])
    got = cached.encode_images([second])
    torch.testing.assert_close(
        got, sg.load_encoder(spec).encode_images([second]), atol=1e-6, rtol=0
    )
    # Transparency changes the composited pixels too.
    transparent = first.copy()
    transparent.info["transparency"] = 1
    assert content_key(transparent) != content_key(first)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.sampled_from(["P", "L", "RGBA", "LA"]),
)
def test_content_keys_agree_exactly_when_the_decoded_rgb_agrees(
    seed_a: int, seed_b: int, mode: str
) -> None:
    """Two in-memory images share a cache key iff the RGB the encoder sees is identical."""
    from PIL import Image

    from synthguard.encoders._images import load_image

    def make(seed: int) -> Any:
        rng = np.random.default_rng(seed)
        if mode == "P":  # few indices and colours: collisions of the RGB happen, keys must follow
            palette = rng.integers(0, 2, 12).tolist() + [0] * 756
            return _palette_image(rng.integers(0, 4, (3, 3)), [255 * v for v in palette])
        channels = {"L": 1, "RGBA": 4, "LA": 2}[mode]
        values = (rng.integers(0, 2, (3, 3, channels)) * 255).astype(np.uint8)
        return Image.fromarray(values[..., 0] if channels == 1 else values, mode=mode)

    a, b = make(seed_a), make(seed_b)
    same_rgb = load_image(a).tobytes() == load_image(b).tobytes()
    assert (content_key(a) == content_key(b)) == same_rgb
