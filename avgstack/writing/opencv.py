"""Whole-frame output in any format OpenCV encodes (PNG, JPEG, WebP, EXR, ...)."""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np

from ..errors import OutputError, WriteError
from ..reading.opencv import cv2, swap_red_blue

__all__ = ["check_writable", "write_opencv", "encode_bytes"]


def check_writable(path: str) -> str:
    """Return the extension of ``path`` if OpenCV can encode it, else raise OutputError."""
    ext = os.path.splitext(path)[1].lower()
    if not ext:
        raise OutputError(f"{path}: no file extension; use .tif, .png, ... to choose the format")
    if not cv2.haveImageWriter("x" + ext):
        raise OutputError(f"{path}: OpenCV cannot write {ext} files; use .tif or .png")
    return ext


def encode_bytes(frame_bytes: int) -> int:
    """Memory the encoder needs beyond the result: a BGR copy and the encoded bytes."""
    return 2 * frame_bytes


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
    fh.write(buffer.tobytes())
    return int(buffer.size)
