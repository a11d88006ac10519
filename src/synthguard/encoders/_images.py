"""Turning any supported image input into an RGB PIL image, and hashing it for the cache.

Supported inputs, freely mixed within one batch: file paths (``str`` / ``os.PathLike``), encoded
bytes, PIL images, HWC (or HW) numpy arrays and CHW (or HW) torch tensors. Every input ends as an
8-bit RGB image with EXIF orientation applied, so the model's own preprocessing sees the same
pixels whatever form the caller had.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "FLOAT_RANGE_ERROR",
    "ImageDecodeError",
    "content_key",
    "load_image",
]

#: Why a float image is refused; the guard recognises a whole batch of them by it.
FLOAT_RANGE_ERROR = "float images must have values in [0, 1]"

#: Pillow's own decompression-bomb warning threshold; we turn it into a per-sample error.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485

_WHITE = (255, 255, 255)
#: How transparency becomes RGB; recorded in encoder fingerprints (it changes embeddings).
RGB_CONVERSION = "alpha composited on white"


class ImageDecodeError(Exception):
    """One sample could not become an image; the message says why (becomes ``unreadable_image``)."""


def load_image(item: Any, *, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode ``item`` into an 8-bit RGB PIL image.

    Args:
        item: a path, encoded bytes, a PIL image, an HWC/HW numpy array or a CHW/HW tensor.
        max_pixels: refuse images with more pixels than this (decompression bombs);
            ``None`` disables the check.

    Returns:
        An RGB image with EXIF orientation applied; transparency is composited onto white.

    Raises:
        ImageDecodeError: the item cannot be turned into an image; the message says why.
    """
    if isinstance(item, Image.Image):
        # The same EXIF rule as for files and bytes: a photo gives one embedding whether it
        # arrives as a path or as ``Image.open(path)``.
        image = ImageOps.exif_transpose(item) or item
    elif isinstance(item, (bytes, bytearray, memoryview)):
        image = _open_encoded(io.BytesIO(bytes(item)), max_pixels, source="bytes")
    elif isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        if not os.path.exists(path):
            raise ImageDecodeError(f"file not found: {path!r}")
        if os.path.isdir(path):
            raise ImageDecodeError(f"path is a directory, not an image file: {path!r}")
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ImageDecodeError(f"cannot read {path!r}: {exc.strerror or exc}") from exc
        image = _open_encoded(io.BytesIO(data), max_pixels, source=repr(path))
    elif isinstance(item, np.ndarray):
        image = _from_array(item, layout="HWC")
    elif isinstance(item, torch.Tensor):
        array = item.detach().cpu()
        if array.dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16
            array = array.float()
        if array.ndim == 3:
            array = array.permute(1, 2, 0)  # CHW -> HWC
        image = _from_array(array.numpy(), layout="CHW")
    else:
        raise ImageDecodeError(
            f"unsupported image type {type(item).__name__}; expected a path, bytes, PIL image, "
            "HWC numpy array or CHW tensor"
        )
    return _to_rgb(image, max_pixels)


def _open_encoded(buffer: io.BytesIO, max_pixels: int | None, *, source: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # We enforce our own, configurable pixel limit below; Pillow's warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(buffer)
            _check_pixels(image, max_pixels)
            image.load()
            return ImageOps.exif_transpose(image) or image
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"cannot decode image from {source}: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Truncated or corrupt data surfaces as any of these, depending on the codec.
        raise ImageDecodeError(f"corrupt or truncated image data in {source}: {exc}") from exc


def _check_pixels(image: Image.Image, max_pixels: int | None) -> None:
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageDecodeError(f"image has zero size ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageDecodeError(
            f"image has {width * height:,} pixels ({width}x{height}), more than "
            f"max_image_pixels={max_pixels:,} (decompression-bomb guard)"
        )


def _from_array(array: np.ndarray, *, layout: str) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageDecodeError(
            f"array image must be {layout} with 1, 3 or 4 channels (or 2-D grayscale); "
            f"got shape {tuple(array.shape) if layout == 'HWC' else _chw_shape(array)}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageDecodeError(f"image has zero size (shape {tuple(array.shape)})")
    array = _to_uint8(array)
    mode = "L" if array.ndim == 2 else ("RGB" if array.shape[2] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(array), mode=mode)


def _chw_shape(hwc: np.ndarray) -> tuple[int, ...]:
    return (hwc.shape[2], hwc.shape[0], hwc.shape[1]) if hwc.ndim == 3 else tuple(hwc.shape)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Map an array to uint8 following torchvision's conventions (floats live in [0, 1])."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageDecodeError("float image contains NaN or Inf values")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ImageDecodeError(f"{FLOAT_RANGE_ERROR}; got range [{low:.4g}, {high:.4g}]")
        return np.round(array * 255.0).astype(np.uint8)
    raise ImageDecodeError(
        f"unsupported array dtype {array.dtype}; expected uint8, uint16, bool or float in [0, 1]"
    )


def _to_rgb(image: Image.Image, max_pixels: int | None) -> Image.Image:
    _check_pixels(image, max_pixels)
    with contextlib.suppress(AttributeError, EOFError):
        image.seek(0)  # animated GIF/WebP/APNG: the first frame
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_high_depth_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(f"cannot convert image mode {mode!r} to RGB: {exc}") from exc


def _high_depth_to_uint8(array: np.ndarray) -> np.ndarray:
    """16-bit (or 32-bit integer / float) grayscale to 8-bit by scaling, not clipping."""
    if np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        scale = 1.0 if finite.max(initial=0.0) <= 1.0 else 65535.0
        return np.clip(np.round(finite / scale * 255.0), 0, 255).astype(np.uint8)
    wide = array.astype(np.int64)
    # 32-bit "I" images almost always hold 16-bit samples (PNG 16-bit on older Pillow).
    bits = 8 if wide.max(initial=0) <= 255 else 16
    return np.clip(wide >> (bits - 8), 0, 255).astype(np.uint8)


def content_key(item: Any) -> str:
    """A SHA-256 of the item's content, used as the embedding-cache key.

    Files and bytes hash their encoded bytes; arrays and tensors hash their values with dtype
    and shape, so equal values with a different layout do not collide. PIL images hash the RGB
    image the encoder will see (:func:`load_image`): their raw bytes leave out the palette, the
    transparency and the EXIF orientation, each of which changes the pixels.
    """
    digest = hashlib.sha256()
    if isinstance(item, (str, os.PathLike)):
        digest.update(b"file:")
        with open(os.fspath(item), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    elif isinstance(item, (bytes, bytearray, memoryview)):
        digest.update(b"bytes:")
        digest.update(bytes(item))
    elif isinstance(item, Image.Image):
        rgb = load_image(item)
        digest.update(f"pil-rgb:{rgb.size}:".encode())
        digest.update(rgb.tobytes())
    elif isinstance(item, np.ndarray):
        digest.update(f"ndarray:{item.dtype}:{item.shape}:".encode())
        digest.update(np.ascontiguousarray(item).tobytes())
    elif isinstance(item, torch.Tensor):
        tensor = item.detach().cpu().contiguous()
        digest.update(f"tensor:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    else:
        raise ImageDecodeError(f"unsupported image type {type(item).__name__}")
    return digest.hexdigest()
