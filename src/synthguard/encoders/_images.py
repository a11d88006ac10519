"""Turning any supported image input into an RGB PIL image, and hashing it for the cache.

Supported inputs, freely mixed within one batch: file paths (``str`` / ``os.PathLike``), encoded
bytes, PIL images, HWC (or HW) numpy arrays and CHW (or HW) torch tensors. Every input ends as an
8-bit RGB image with EXIF orientation applied, so the model's own preprocessing sees the same
pixels whatever form the caller had.

Paths are read only if they are regular files, at most ``max_bytes`` of them; a path a source
returned (:class:`~synthguard._io.SourceFile`) also stays inside its source, and an image
a source refused (:class:`~synthguard._io.RefusedImage`) fails with the source's reason.
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

from synthguard._io import (
    DEFAULT_MAX_IMAGE_BYTES,
    FileRefusedError,
    RefusedImage,
    SourceFile,
    open_regular,
    read_file,
)
from synthguard._reasons import ReasonCode

__all__ = [
    "DEFAULT_MAX_IMAGE_ASPECT",
    "DEFAULT_MAX_IMAGE_BYTES",
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

#: Longest side over shortest side. A model resizes the short side to its input size S, so an
#: image of aspect r becomes S² * r pixels: a 663-byte 600,000x1 PNG became a 9,600,000x16 image
#: (154 megapixels) for the 16-pixel digits model, 30 gigapixels at S = 224. At r <= 100 the
#: resized image stays below 100 * S² (5 megapixels at S = 224, 26 at S = 512).
DEFAULT_MAX_IMAGE_ASPECT = 100.0

_WHITE = (255, 255, 255)
#: How transparency becomes RGB; recorded in encoder fingerprints (it changes embeddings).
RGB_CONVERSION = "alpha composited on white"


class ImageDecodeError(Exception):
    """One sample could not become an image; the message says why, ``reason`` is its code
    (``unreadable_image`` unless a limit or the source's containment refused it)."""

    def __init__(self, message: str, reason: ReasonCode = ReasonCode.UNREADABLE_IMAGE) -> None:
        super().__init__(message)
        self.reason = reason


def load_image(
    item: Any,
    *,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    max_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
    max_aspect: float | None = DEFAULT_MAX_IMAGE_ASPECT,
) -> Image.Image:
    """Decode ``item`` into an 8-bit RGB PIL image.

    Args:
        item: a path, encoded bytes, a PIL image, an HWC/HW numpy array or a CHW/HW tensor.
        max_pixels: refuse images with more pixels than this (decompression bombs);
            ``None`` disables the check.
        max_bytes: read at most this many bytes of a file (a path a source returned uses the
            source's own limit); ``None`` disables the limit. Non-regular files (FIFOs,
            devices) are always refused.
        max_aspect: refuse images whose longer side is more than this many times the shorter
            one (the model's resize would build a huge image); ``None`` disables the check.

    Returns:
        An RGB image with EXIF orientation applied; transparency is composited onto white.

    Raises:
        ImageDecodeError: the item cannot be turned into an image; the message says why and
            ``reason`` is ``unreadable_image``, ``image_too_large`` or ``outside_input``.
    """
    limits = (max_pixels, max_aspect)
    if isinstance(item, RefusedImage):
        raise ImageDecodeError(item.detail, item.reason)
    if isinstance(item, Image.Image):
        # The same EXIF rule as for files and bytes: a photo gives one embedding whether it
        # arrives as a path or as ``Image.open(path)``.
        image = ImageOps.exif_transpose(item) or item
    elif isinstance(item, (bytes, bytearray, memoryview)):
        image = _open_encoded(io.BytesIO(bytes(item)), limits, source="bytes")
    elif isinstance(item, (str, os.PathLike)):
        data = read_image_file(item, max_bytes)
        image = _open_encoded(io.BytesIO(data), limits, source=repr(os.fspath(item)))
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
    return _to_rgb(image, limits)


def read_image_file(item: str | os.PathLike[str], max_bytes: int | None) -> bytes:
    """The bytes of an image file: a :class:`SourceFile` under its source's rules, any other
    path if it is a regular file of at most ``max_bytes``."""
    try:
        if isinstance(item, SourceFile):
            return item.read()
        return read_file(item, max_bytes=max_bytes, what="image")
    except FileRefusedError as exc:
        raise ImageDecodeError(str(exc), exc.reason) from exc


def source_refusal(item: Any) -> tuple[ReasonCode, str] | None:
    """Why a source refused ``item`` (a :class:`RefusedImage`, or a :class:`SourceFile` outside
    its source, not a regular file or too large), without decoding it; ``None`` otherwise.

    For encoders that read paths themselves (user objects implementing the protocol): refused
    items never reach them.
    """
    if isinstance(item, RefusedImage):
        return item.reason, item.detail
    if isinstance(item, SourceFile):
        try:
            open_regular(
                item, what="image", root=item.root, follow_symlinks=item.follow_symlinks,
                max_bytes=item.max_bytes,
            ).close()  # fmt: skip
        except FileRefusedError as exc:
            return exc.reason, str(exc)
    return None


_Limits = tuple[int | None, float | None]  # (max_pixels, max_aspect)


def _open_encoded(buffer: io.BytesIO, limits: _Limits, *, source: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # We enforce our own, configurable pixel limit below; Pillow's warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(buffer)
            _check_pixels(image, limits)  # from the header, before any pixel is decoded
            image.load()
            return ImageOps.exif_transpose(image) or image
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own limit (max_pixels=None)
        raise ImageDecodeError(
            f"cannot decode image from {source}: {exc}", ReasonCode.IMAGE_TOO_LARGE
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"cannot decode image from {source}: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Truncated or corrupt data surfaces as any of these, depending on the codec.
        raise ImageDecodeError(f"corrupt or truncated image data in {source}: {exc}") from exc


def _check_pixels(image: Image.Image, limits: _Limits) -> None:
    max_pixels, max_aspect = limits
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageDecodeError(f"image has zero size ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageDecodeError(
            f"image has {width * height:,} pixels ({width}x{height}), more than "
            f"max_image_pixels={max_pixels:,} (decompression-bomb guard)",
            ReasonCode.IMAGE_TOO_LARGE,
        )
    aspect = max(width, height) / min(width, height)
    if max_aspect is not None and aspect > max_aspect:
        raise ImageDecodeError(
            f"image is {width}x{height}, an aspect ratio of {aspect:,.4g}:1, more than "
            f"max_image_aspect={max_aspect:g}: resizing its short side to the model's input "
            f"size S would build an image of {aspect:,.4g} * S² pixels",
            ReasonCode.IMAGE_TOO_LARGE,
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


def _to_rgb(image: Image.Image, limits: _Limits) -> Image.Image:
    _check_pixels(image, limits)
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


def content_key(item: Any, *, max_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES) -> str:
    """A SHA-256 of the item's content, used as the embedding-cache key.

    Files and bytes hash their encoded bytes (a file read as :func:`load_image` reads it,
    ``max_bytes`` at most); arrays and tensors hash their values with dtype and shape, so equal
    values with a different layout do not collide. PIL images hash the RGB image the encoder
    will see (:func:`load_image`): their raw bytes leave out the palette, the transparency and
    the EXIF orientation, each of which changes the pixels.
    """
    digest = hashlib.sha256()
    if isinstance(item, RefusedImage):
        raise ImageDecodeError(item.detail, item.reason)
    if isinstance(item, (str, os.PathLike)):
        digest.update(b"file:")
        digest.update(read_image_file(item, max_bytes))
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
