"""Every supported image form, mode conversions and EXIF orientation give the same pixels."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from synthguard.encoders import load_image
from synthguard.encoders._images import ImageDecodeError


def _rgb(seed: int = 0, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_all_input_forms_decode_to_identical_pixels(tmp_path: Path) -> None:
    array = _rgb()
    pil = Image.fromarray(array)
    path = tmp_path / "x.png"
    pil.save(path)
    forms: list[Any] = [
        array,
        pil,
        _png(pil),
        str(path),
        path,
        torch.from_numpy(array).permute(2, 0, 1),  # CHW uint8
        torch.from_numpy(array).permute(2, 0, 1).float() / 255.0,  # CHW float in [0, 1]
    ]
    for form in forms:
        np.testing.assert_array_equal(np.asarray(load_image(form)), array)


def test_mixed_batch_embeds_like_uniform_batch(tiny_encoder: Any, tmp_path: Path) -> None:
    arrays = [_rgb(seed) for seed in range(5)]
    path = tmp_path / "0.png"
    Image.fromarray(arrays[0]).save(path)
    mixed = [
        str(path),
        _png(Image.fromarray(arrays[1])),
        Image.fromarray(arrays[2]),
        arrays[3],
        torch.from_numpy(arrays[4]).permute(2, 0, 1),
    ]
    torch.testing.assert_close(
        tiny_encoder.encode_images(mixed), tiny_encoder.encode_images(arrays), atol=1e-6, rtol=0
    )


def test_grayscale_is_replicated_to_three_channels() -> None:
    gray = np.random.default_rng(1).integers(0, 256, (16, 16), dtype=np.uint8)
    expected = np.repeat(gray[:, :, None], 3, axis=2)
    for form in (gray, gray[:, :, None], Image.fromarray(gray, mode="L")):
        np.testing.assert_array_equal(np.asarray(load_image(form)), expected)


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    wide = np.random.default_rng(2).integers(0, 65536, (16, 16), dtype=np.uint16)
    decoded = load_image(_png(Image.fromarray(wide)))
    expected = np.repeat((wide >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(np.asarray(decoded), expected)
    np.testing.assert_array_equal(np.asarray(load_image(wide)), expected)


def test_rgba_and_palette_transparency_composite_on_white() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red where opaque
    rgba[:2, :, 3] = 255  # top half opaque, bottom half fully transparent
    out = np.asarray(load_image(rgba))
    np.testing.assert_array_equal(out[:2], np.tile([200, 0, 0], (2, 4, 1)))
    np.testing.assert_array_equal(out[2:], np.full((2, 4, 3), 255))
    palette = Image.fromarray(rgba).convert("P")  # keeps transparency as a palette entry
    palette.info["transparency"] = palette.getpixel((0, 3))
    assert np.asarray(load_image(_png(palette)))[3, 0].tolist() == [255, 255, 255]


def test_cmyk_jpeg_decodes_to_rgb() -> None:
    buffer = io.BytesIO()
    Image.fromarray(_rgb(3)).convert("CMYK").save(buffer, format="JPEG")
    image = load_image(buffer.getvalue())
    assert image.mode == "RGB" and image.size == (32, 24)


def test_exif_orientation_is_applied() -> None:
    array = _rgb(4, size=(8, 16))  # 8 high, 16 wide
    pil = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", exif=exif)
    decoded = load_image(buffer.getvalue())
    assert decoded.size == (8, 16)  # width and height swapped
    np.testing.assert_array_equal(np.asarray(decoded), np.rot90(array, k=-1))
    # One rule for every form (issue 16): the same file opened in memory decodes alike.
    opened = Image.open(io.BytesIO(buffer.getvalue()))
    np.testing.assert_array_equal(np.asarray(load_image(opened)), np.asarray(decoded))


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert np.asarray(load_image(buffer.getvalue()))[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        (b"\x89PNG\r\n\x1a\n not really", "cannot decode"),
        (np.zeros((0, 0, 3), np.uint8), "zero size"),
        ("/definitely/not/here.png", "file not found"),
        (np.zeros((4, 4, 2), np.uint8), "channels"),
        (np.full((4, 4, 3), 2.0), "[0, 1]"),
        (12, "unsupported image type int"),
    ],
)
def test_bad_images_raise_decode_errors(item: Any, fragment: str) -> None:
    with pytest.raises(ImageDecodeError, match=None) as info:
        load_image(item)
    assert fragment in str(info.value)


def test_truncated_jpeg_and_directory_are_unreadable(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_rgb(5, size=(64, 64))).save(buffer, format="JPEG")
    with pytest.raises(ImageDecodeError, match=r"corrupt or truncated|cannot decode"):
        load_image(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageDecodeError, match="directory"):
        load_image(tmp_path)


def test_decompression_bomb_limit_is_enforced_and_configurable() -> None:
    big = _png(Image.new("L", (300, 300)))
    with pytest.raises(ImageDecodeError, match="max_image_pixels"):
        load_image(big, max_pixels=80_000)
    assert load_image(big, max_pixels=90_000).size == (300, 300)


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    channels=st.sampled_from([None, 1, 3, 4]),
    seed=st.integers(0, 2**16),
)
def test_array_round_trip_property(
    height: int, width: int, channels: int | None, seed: int
) -> None:
    shape = (height, width) if channels is None else (height, width, channels)
    array = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    out = np.asarray(load_image(array))
    assert out.shape == (height, width, 3) and out.dtype == np.uint8
    if channels in (None, 1):
        np.testing.assert_array_equal(out, np.repeat(array.reshape(height, width, 1), 3, axis=2))
    elif channels == 3:
        np.testing.assert_array_equal(out, array)


def test_half_and_bfloat16_tensors_decode_like_float32() -> None:
    """Issue 16: a bf16 tensor in [0, 1] was a false ``unreadable_image`` (numpy has no bf16)."""
    chw = torch.rand(3, 8, 8)
    want = np.asarray(load_image(chw))
    for dtype in (torch.float16, torch.bfloat16):
        got = np.asarray(load_image(chw.to(dtype)))
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 2  # the dtype's rounding
