"""Whole-frame output in any format OpenCV encodes (PNG, JPEG, WebP, PNM, ...)."""

from __future__ import annotations

import os
import shutil
import tempfile
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

# Image sizes each encoder takes: (smallest side, largest side) in pixels, from the libraries OpenCV
# builds with: libjpeg's 65500, WebP's 16383, libpng's default user limit of 1000000 (OpenCV does not
# raise it), OpenJPEG's 6 resolution levels (each side at least 2**5). BMP headers hold 32-bit sizes.
_SIDES = {
    ".jpg": (1, 65500),
    ".jpeg": (1, 65500),
    ".jpe": (1, 65500),
    ".webp": (1, 16383),
    ".png": (1, 1_000_000),
    ".jp2": (32, 2**31 - 1),
}
_MAX_FILE_BYTES = {".bmp": 2**31 - 1, ".dib": 2**31 - 1}


def check_writable(path: str) -> str:
    """Return the extension of ``path`` if OpenCV can encode it, else raise OutputError."""
    ext = os.path.splitext(path)[1].lower()
    if not ext:
        raise OutputError(f"{path}: no file extension; use .tif, .png, ... to choose the format")
    if not ext.isascii() or not ext[1:].isalnum() or not cv2.haveImageWriter("x" + ext):
        raise OutputError(f"{path}: OpenCV cannot write {ext} files; use .tif or .png")
    return ext


def check_encodable(
    path: str, ext: str, dtype: np.dtype, channels: int, *, shape: tuple[int, int] | None = None
) -> None:
    """Refuse, before any work, results the encoder would silently convert or cannot store.

    ``shape`` is ``(height, width)`` of the result; when given, the encoder's
    size limits are checked too (:func:`check_size`).
    """
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
    if shape is not None:
        check_size(path, ext, shape, np.dtype(dtype).itemsize * channels)


def check_size(path: str, ext: str, shape: tuple[int, int], pixel_bytes: int = 1) -> None:
    """Refuse, before any work, an image size the encoder for ``ext`` cannot write."""
    height, width = int(shape[0]), int(shape[1])
    low, high = _SIDES.get(ext, (1, 2**31 - 1))
    if min(height, width) < low or max(height, width) > high:
        what = f"at least {low} pixels" if min(height, width) < low else f"at most {high} pixels"
        raise OutputError(
            f"{path}: {ext} files cannot hold a {width}x{height} image (each side must be {what}); "
            "use a .tif output"
        )
    limit = _MAX_FILE_BYTES.get(ext)
    if limit is not None:
        row = (width * max(1, pixel_bytes) + 3) // 4 * 4
        if row * height + 1078 > limit:
            raise OutputError(f"{path}: {ext} files are limited to 2 GiB; use a .tif output")


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
        if ext in _FILE_ENCODERS:
            return _write_through_file(fh, np.ascontiguousarray(frame), ext, name)
        ok, buffer = cv2.imencode(ext, np.ascontiguousarray(frame))
    except cv2.error as err:
        raise WriteError(
            f"{name}: OpenCV cannot write {image.dtype} images with {image.shape[2]} channel(s) as {ext}"
            f" ({str(err).strip().splitlines()[-1]}); choose another --dtype or format"
        ) from err
    if not ok:
        raise WriteError(f"{name}: OpenCV failed to encode the result as {ext}")
    fh.write(buffer.tobytes() if not buffer.flags.c_contiguous else memoryview(buffer))  # type: ignore[arg-type]
    return int(buffer.size)


#: Encoders that cannot write to memory: ``cv2.imencode`` would go through a file of its own in the
#: system's temporary folder (``__opencv_temp.*``), left behind when encoding fails. avgstack writes them
#: with ``cv2.imwrite`` into a private folder it removes, without changing OpenCV's settings.
_FILE_ENCODERS = {".jp2"}


def _write_through_file(fh: BinaryIO, frame: np.ndarray, ext: str, name: str) -> int:
    """Encode ``frame`` with ``cv2.imwrite`` in a private temporary folder, then copy the bytes to ``fh``."""
    with tempfile.TemporaryDirectory(prefix="avgstack-opencv-") as folder:
        path = os.path.join(folder, "result" + ext)
        if not cv2.imwrite(path, frame):
            raise WriteError(f"{name}: OpenCV failed to encode the result as {ext}")
        with open(path, "rb") as encoded:
            shutil.copyfileobj(encoded, fh, 2**20)
        return os.path.getsize(path)
