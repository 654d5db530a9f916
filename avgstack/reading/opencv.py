"""OpenCV's layout and its decoders: the only place that knows about BGR.

Inputs that are not TIFF (PNG, JPEG, BMP, PNM, PFM, WebP, HDR, GIF, Sun
raster, JPEG 2000) are decoded whole by ``cv2.imread(..., IMREAD_UNCHANGED)``
into one reused frame buffer. Their shape and type come from their headers
(:mod:`.headers`), never from a decode: a file whose header cannot be checked
is refused, and so is one larger than OpenCV's own default pixel limit, which
is left as it is. Nothing here changes process-wide state (environment,
OpenCV's log level, file descriptor 2): what C decoders such as libpng write to
stderr on a damaged file goes to stderr. This module also converts between OpenCV's BGR(A) order, used by the
public API, and the stored RGB(A) order used everywhere inside avgstack.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import cv2
import numpy as np

from ..errors import InputError, ReadError, UnsupportedInputError
from ..windows import Band
from .base import Source
from .headers import Header, HeaderError, check_complete, probe_header
from .layout import OPENCV_PHOTOMETRICS, info_for_opencv_layout, swap_red_blue, to_opencv_layout
from .png_data import verify_png_data

log = logging.getLogger(__name__)

#: OpenCV's default limits (``OPENCV_IO_MAX_IMAGE_PIXELS``, ``..._WIDTH``, ``..._HEIGHT``), left as they are.
MAX_PIXELS = 2**30
MAX_SIDE = 2**20
#: OpenCV refuses WebP files larger than this (``OPENCV_IMGCODECS_WEBP_MAX_FILE_SIZE``).
MAX_WEBP_FILE = 64 * 2**20

__all__ = ["OPENCV_PHOTOMETRICS", "OpenCVSource", "info_for_opencv_layout", "swap_red_blue", "to_opencv_layout"]


class OpenCVSource(Source):
    """An image OpenCV decodes whole; bands must span the whole frame.

    Parameters
    ----------
    path : str
        File path.
    fmt : str
        Format sniffed from the file's first bytes.
    name : str, optional
        How the input is named in messages.
    """

    def __init__(self, path: str, fmt: str, name: str | None = None) -> None:
        self.path = path
        name = name or path
        try:
            header = probe_header(path)
            check_complete(path, fmt)
            size = os.path.getsize(path)
        except HeaderError as err:
            raise InputError(f"{name}: damaged {fmt.upper()} file ({err})") from err
        except OSError as err:
            raise InputError(f"{name}: cannot read ({err.strerror or err})") from err
        _check_decodable(name, fmt, header, size)
        assert header is not None
        info = info_for_opencv_layout(
            name, header.height, header.width, header.channels, header.dtype, fmt, streamable=False
        )
        # the decoder's own memory: from the header where it says (GIF screen, JPEG 2000 planes), else measured
        scratch = max(header.scratch, info.scratch_bytes)
        if not _utf8(path):
            scratch += size + info.frame_bytes  # decoded from the file's bytes into a frame of its own
        self.info = dataclasses.replace(info, scratch_bytes=scratch)

    @staticmethod
    def _imread(path: str, name: str, dst: np.ndarray | None) -> np.ndarray:
        try:
            if not _utf8(path):
                # OpenCV cannot open names that are not valid UTF-8: decode from the bytes instead
                with open(path, "rb") as fh:
                    data = np.frombuffer(fh.read(), np.uint8)
                frame = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
                del data
            elif dst is None:
                frame = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            else:
                frame = cv2.imread(path, dst, cv2.IMREAD_UNCHANGED)
        except cv2.error as err:
            raise ReadError(f"{name}: OpenCV could not decode it ({str(err).strip().splitlines()[-1]})") from err
        if frame is None or frame.size == 0:
            raise ReadError(f"{name}: OpenCV could not decode it (damaged or unsupported file)")
        return frame

    def read_band(self, band: Band, out: np.ndarray) -> int:
        info = self.info
        if band.start != 0 or band.height != info.height:
            raise ValueError(f"{info.name}: {info.format} inputs are decoded whole, not in bands")
        target = out if info.samples > 1 else out.reshape(info.height, info.width)
        if info.format == "png":
            # find damage before libpng does: it would write its own line to stderr
            try:
                verify_png_data(self.path)
            except HeaderError as err:
                raise ReadError(f"{info.name}: {err}") from err
            except OSError as err:
                raise ReadError(f"{info.name}: read failed ({err.strerror or err})") from err
        try:
            os.stat(self.path)  # OpenCV only says "cannot decode" when the input was removed since its header was read
            frame = self._imread(self.path, info.name, target)
        except OSError as err:
            raise ReadError(f"{info.name}: read failed ({err.strerror or err})") from err
        got = (frame.shape[0], frame.shape[1], 1 if frame.ndim == 2 else frame.shape[2])
        if got != info.shape or frame.dtype != info.dtype:
            raise ReadError(
                f"{info.name}: decoded as {got[1]}x{got[0]}x{got[2]} {frame.dtype}, "
                f"header said {info.width}x{info.height}x{info.samples} {info.dtype}"
            )
        if not np.shares_memory(frame, out):
            target[...] = frame
        swap_red_blue(out, inplace=True)
        try:
            return os.path.getsize(self.path)
        except OSError:  # pragma: no cover
            return 0


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_decodable(name: str, fmt: str, header: Header | None, size: int) -> None:
    """Refuse, from the header alone, what OpenCV would not decode or would decode only to learn its size."""
    kind = fmt.upper()
    if header is None:
        if fmt in ("avif", "exr", "jxl", "qoi"):
            raise UnsupportedInputError(
                f"{name}: {kind} inputs are not read (their size cannot be checked before decoding); "
                "convert it to TIFF or PNG first"
            )
        raise UnsupportedInputError(
            f"{name}: a kind of {kind} file OpenCV does not decode, or whose header cannot be checked; "
            "convert it to TIFF or PNG first"
        )
    if header.width * header.height > MAX_PIXELS or max(header.width, header.height) > MAX_SIDE:
        raise UnsupportedInputError(
            f"{name}: {header.width}x{header.height} is larger than OpenCV decodes "
            f"({MAX_PIXELS} pixels, {MAX_SIDE} per side); save it as a tiled or striped TIFF, which is read in bands"
        )
    if fmt == "webp" and size > MAX_WEBP_FILE:
        raise UnsupportedInputError(
            f"{name}: WebP files over {MAX_WEBP_FILE // 2**20} MiB are not decoded by OpenCV; convert it to TIFF"
        )
