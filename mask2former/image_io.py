"""Reading images from files, PIL images, numpy arrays and torch tensors into 8-bit RGB.

Conventions (chosen to agree with transformers where it has one, and to be correct where
it has none):

* Transparency (RGBA, LA, PA, palette images with a transparent index) is composited onto
  a white background, as ``transformers.image_transforms.convert_to_rgb`` does: PIL images
  through ``PIL.Image.alpha_composite``, arrays through ``round(a * rgb + (1 - a) * 255)``.
* 16-bit images (PIL modes ``I;16*`` and ``I``, ``uint16`` arrays) are scaled to 8 bits by
  ``round(v / 257)``. PIL's own ``convert("RGB")`` clips them at 255 instead, which turns
  most 16-bit images white; transformers inherits that, we do not.
* Floating-point arrays are taken to be in [0, 1] (``round(v * 255)``); integer-valued float
  arrays in [0, 255] are accepted as 8-bit values.
* The EXIF orientation tag is applied (``PIL.ImageOps.exif_transpose``), for files and for
  PIL images alike; transformers applies it only when it opens the file itself.
* PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) stays in force; an image
  over it raises :class:`ImageLoadError` saying how to raise the limit.
"""
from __future__ import annotations

import os
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

ImageLike = Union[str, "os.PathLike[str]", Image.Image, np.ndarray, torch.Tensor]

_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageLoadError(OSError):
    """An image file that cannot be read; ``str()`` is one line naming the file."""

    def __init__(self, path: Any, reason: str) -> None:
        self.path = os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _open_file(path: str) -> Image.Image:
    if not os.path.exists(path):
        raise ImageLoadError(path, "no such file")
    if os.path.isdir(path):
        raise ImageLoadError(path, "is a directory, not an image file")
    if os.path.getsize(path) == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")
    try:
        with Image.open(path) as img:
            img.load()  # decoding happens here: truncated data fails now, not later
            return _upright(img)
    except Image.DecompressionBombError as e:
        raise ImageLoadError(
            path,
            f"image is too large to open safely ({e}); if the file is trusted, raise the limit "
            "(segment --max-pixels N, or PIL.Image.MAX_IMAGE_PIXELS in Python)",
        ) from None
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image file, or a format PIL cannot read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # PIL signals corrupt/truncated data with any of these, depending on the codec.
        raise ImageLoadError(path, f"corrupt or truncated image ({e})") from None


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a copy only when there is something to do."""
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # unreadable EXIF is not worth failing an image over
        orientation = 1
    if orientation in (None, 1):
        return img
    return ImageOps.exif_transpose(img)


def _scale_16bit(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 with round-half-up; integer arithmetic so no float surprises."""
    v = np.clip(values.astype(np.int64), 0, 65535)
    return ((v + 128) // 257).astype(np.uint8)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.float64)
    if v.size and not np.isfinite(v).all():
        raise ValueError("image array contains NaN or infinite values")
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if lo >= 0.0 and hi <= 1.0:
        return np.round(v * 255.0).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0 and np.array_equal(v, np.round(v)):
        return v.astype(np.uint8)
    raise ValueError(
        f"float image values must be in [0, 1] (or whole numbers in [0, 255]); got [{lo}, {hi}]"
    )


def _to_uint8(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if values.dtype == np.uint16:
        return _scale_16bit(values)
    if np.issubdtype(values.dtype, np.floating):
        return _float_to_uint8(values)
    if np.issubdtype(values.dtype, np.integer):
        lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise ValueError(f"integer image values must be in [0, 65535]; got [{lo}, {hi}]")
        return values.astype(np.uint8) if hi <= 255 else _scale_16bit(values)
    raise TypeError(f"unsupported image dtype {values.dtype}")


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.round(a * rgb + (1.0 - a) * 255.0).astype(np.uint8)


def _pil_to_rgb_array(img: Image.Image) -> np.ndarray:
    img = _upright(img)
    if img.mode in _SIXTEEN_BIT_MODES:
        # Mode "I" is what older Pillow gives 16-bit PNGs, so it is read as 16-bit data too.
        gray = _scale_16bit(np.asarray(img))
        return np.repeat(gray[..., None], 3, axis=-1)
    if img.mode == "F":
        gray = _float_to_uint8(np.asarray(img))
        return np.repeat(gray[..., None], 3, axis=-1)
    if "A" in img.getbands() or img.info.get("transparency") is not None:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.array(img if img.mode == "RGB" else img.convert("RGB"))


def _array_to_rgb_array(values: np.ndarray, channels_first: bool) -> np.ndarray:
    """``channels_first``: which layout wins when both ends could be the channel axis."""
    if values.ndim == 3:
        first, last = values.shape[0] in (1, 2, 3, 4), values.shape[-1] in (1, 2, 3, 4)
        if first and (channels_first or not last):
            values = np.moveaxis(values, 0, -1)
        elif not last:
            raise ValueError(f"cannot tell the channel axis of an image of shape {tuple(values.shape)}")
    elif values.ndim == 2:
        values = values[..., None]
    else:
        raise ValueError(f"expected an image of shape HxW, HxWxC or CxHxW; got {tuple(values.shape)}")
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"empty image of shape {tuple(values.shape)}")
    values = _to_uint8(values)
    channels = values.shape[-1]
    if channels == 1:
        return np.ascontiguousarray(np.repeat(values, 3, axis=-1))
    if channels == 2:  # gray + alpha
        return _composite_on_white(np.repeat(values[..., :1], 3, axis=-1), values[..., 1])
    if channels == 4:
        return _composite_on_white(values[..., :3], values[..., 3])
    return np.ascontiguousarray(values)


def to_rgb_array(image: ImageLike) -> np.ndarray:
    """Any supported image as an (H, W, 3) ``uint8`` array (see the module notes).

    Arrays are HxW or HxWxC (CxHxW accepted when unambiguous); tensors CxHxW (HxWxC accepted
    when unambiguous). C may be 1, 2 (gray+alpha), 3 or 4 (RGBA).
    """
    if isinstance(image, (str, os.PathLike)):
        return _pil_to_rgb_array(_open_file(os.fspath(image)))
    if isinstance(image, Image.Image):
        return _pil_to_rgb_array(image)
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        return _array_to_rgb_array(t.numpy(), channels_first=True)
    if isinstance(image, np.ndarray):
        return _array_to_rgb_array(image, channels_first=False)
    raise TypeError(f"expected a path, PIL image, numpy array or torch tensor; got {type(image).__name__}")


def load_image(image: ImageLike) -> Image.Image:
    """Any supported image (path, PIL image, array, tensor) as an upright RGB PIL image."""
    if isinstance(image, (str, os.PathLike)):
        img = _open_file(os.fspath(image))
        if img.mode == "RGB" and "transparency" not in img.info:
            return img
        return Image.fromarray(_pil_to_rgb_array(img))
    return Image.fromarray(to_rgb_array(image))
