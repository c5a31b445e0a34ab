"""Request bodies to images, within limits: the body's size, its media type, the image's
pixel count. Every refusal is an :class:`ApiError` with the status that says why."""
from __future__ import annotations

import io
import os
import warnings
from typing import Optional

import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..image_io import to_rgb_array
from .errors import ApiError

RAW_TYPES = ("application/octet-stream",)  # besides image/* and no content type at all


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_raw_image_type(kind: str) -> bool:
    return kind == "" or kind.startswith("image/") or kind in RAW_TYPES


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``max_bytes`` (whatever
    Content-Length claims: chunked bodies have none)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"request body of {int(declared)} bytes is over the limit of {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"request body is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def multipart_image(request: Request, body: bytes) -> tuple[bytes, Optional[str]]:
    """(bytes, file name) of the form's ``image`` field (or its only file)."""

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=4, max_fields=32)
    try:
        files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
        chosen = [v for k, v in files if k == "image"] or [v for _, v in files]
        if not chosen:
            raise ApiError(422, "multipart body has no file field (send the image as field 'image')")
        if len(chosen) > 1:
            raise ApiError(422, "send one image per request")
        return await chosen[0].read(), chosen[0].filename
    finally:
        await form.close()


def image_stem(filename: Optional[str], default: str = "image") -> str:
    """A client's file name only labels the outputs (image_id, file_name); it never names a
    file on the server."""
    if not filename:
        return default
    stem = os.path.splitext(os.path.basename(filename.replace("\\", "/")))[0]
    return stem.strip() or default


def decode_image(data: bytes, max_pixels: int, what: str = "image") -> np.ndarray:
    """(H, W, 3) uint8, read the way ``segment`` reads files (EXIF orientation, alpha on
    white, 16-bit scaled). The pixel count is checked from the header, before decoding."""
    if not data:
        raise ApiError(400, f"{what}: empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ApiError(413, f"{what}: {w}x{h} = {w * h} pixels is over the limit of {max_pixels}")
            img.load()
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ApiError(413, f"{what}: too many pixels to decode safely ({e})") from None
    except UnidentifiedImageError:
        raise ApiError(400, f"{what}: not an image, or a format PIL cannot read") from None
    except Exception as e:  # PIL reports corrupt data with many exception types
        raise ApiError(400, f"{what}: corrupt or truncated image ({e})") from None
    try:
        return to_rgb_array(img)
    except Exception as e:
        raise ApiError(400, f"{what}: cannot convert to RGB ({e})") from None
