"""Whole-frame output in any format OpenCV encodes (PNG, JPEG, WebP, PNM, ...)."""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np

from ..errors import OutputError, WriteError
from ..reading.layout import swap_red_blue
from ..reading.opencv import cv2

__all__ = ["check_writable", "check_encodable", "write_opencv", "encode_bytes"]

# What each encoder stores without converting: sample types and channel counts.
# OpenCV 5 silently falls back to 8 bits for other types, so we refuse them up front.
_ENCODABLE = {
    ".png": ({"uint8", "uint16"}, {1, 3, 4}),
    ".jpg": ({"uint8"}, {1, 3}),
    ".jpeg": ({"uint8"}, {1, 3}),
    ".jpe": ({"uint8"}, {1, 3}),
    ".webp": ({"uint8"}, {1, 3, 4}),
    ".bmp": ({"uint8"}, {1, 3, 4}),
    ".dib": ({"uint8"}, {1, 3, 4}),
    ".pgm": ({"uint8", "uint16"}, {1}),
    ".ppm": ({"uint8", "uint16"}, {3}),
    ".pnm": ({"uint8", "uint16"}, {1, 3}),
    ".pfm": ({"float32"}, {1, 3}),
    ".hdr": ({"float32"}, {3}),
    ".exr": ({"float32", "float16"}, {1, 3, 4}),
    ".jp2": ({"uint8", "uint16"}, {1, 3, 4}),
}


def check_writable(path: str) -> str:
    """Return the extension of ``path`` if OpenCV can encode it, else raise OutputError."""
    ext = os.path.splitext(path)[1].lower()
    if not ext:
        raise OutputError(f"{path}: no file extension; use .tif, .png, ... to choose the format")
    if not ext.isascii() or not ext[1:].isalnum() or not cv2.haveImageWriter("x" + ext):
        raise OutputError(f"{path}: OpenCV cannot write {ext} files; use .tif or .png")
    return ext


def check_encodable(path: str, ext: str, dtype: np.dtype, channels: int) -> None:
    """Refuse, before any work, results the encoder would silently convert."""
    dtypes, counts = _ENCODABLE.get(ext, ({"uint8"}, {1, 3, 4}))
    if np.dtype(dtype).name not in dtypes:
        raise OutputError(
            f"{path}: {ext} files cannot hold {np.dtype(dtype).name} samples "
            f"(only {', '.join(sorted(dtypes))}); use --dtype or a .tif output"
        )
    if channels not in counts:
        raise OutputError(
            f"{path}: {ext} files cannot hold {channels} channel(s) "
            f"(only {', '.join(map(str, sorted(counts)))}); use a .tif output"
        )


#: Peak memory of ``cv2.imencode`` beyond its input, as a multiple of the frame's bytes, measured with
#: ru_maxrss on incompressible 4000x3000 frames (the encoded bytes included): WebP converts to ARGB and
#: keeps several planes, JPEG 2000 (OpenJPEG) works in 32-bit integer planes.
_ENCODER_FACTOR = {
    ".png": 1.1, ".bmp": 1.1, ".dib": 1.1, ".pgm": 1.1, ".ppm": 1.1, ".pnm": 1.1, ".pbm": 1.1,
    ".pfm": 2.0, ".hdr": 1.0, ".jpg": 1.6, ".jpeg": 1.6, ".jpe": 1.6, ".webp": 12.0, ".jp2": 8.0,
    ".exr": 3.0,
}


def encode_bytes(frame_bytes: int, ext: str = "", channels: int = 1) -> int:
    """Memory the encoder needs beyond the result: a BGR copy (colour) and the encoder's own peak."""
    bgr_copy = frame_bytes if channels >= 3 else 0
    return bgr_copy + int(_ENCODER_FACTOR.get(ext, 3.0) * frame_bytes) + 2**20


def write_opencv(fh: BinaryIO, image: np.ndarray, ext: str, name: str) -> int:
    """Encode ``image`` (stored RGB order, ``(rows, cols, samples)``) and write it to ``fh``."""
    frame = swap_red_blue(image)
    if frame.shape[2] == 1:
        frame = frame[:, :, 0]
    try:
        ok, buffer = cv2.imencode(ext, np.ascontiguousarray(frame))
    except cv2.error as err:
        raise WriteError(
            f"{name}: OpenCV cannot write {image.dtype} images with {image.shape[2]} channel(s) as {ext}"
            f" ({str(err).strip().splitlines()[-1]}); choose another --dtype or format"
        ) from err
    if not ok:
        raise WriteError(f"{name}: OpenCV failed to encode the result as {ext}")
    fh.write(memoryview(buffer))
    return int(buffer.size)
