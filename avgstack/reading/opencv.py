"""OpenCV's layout and its decoders: the only place that knows about BGR.

Inputs that are not TIFF (PNG, JPEG, BMP, PNM, WebP, EXR, ...) are decoded
whole by ``cv2.imread(..., IMREAD_UNCHANGED)`` into one reused frame buffer.
Their shape and type come from headers (:mod:`.headers`) where the format
allows. This module also converts between OpenCV's BGR(A) order, used by the
public API, and the stored RGB(A) order used everywhere inside avgstack.
"""

from __future__ import annotations

import os

# must be set before cv2 is imported; the memory budget is our own limit
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(2**40))

import contextlib  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from typing import Iterator  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ..errors import InputError, ReadError  # noqa: E402
from ..windows import Band  # noqa: E402
from .base import Source  # noqa: E402
from .headers import HeaderError, check_complete, probe_header  # noqa: E402
from .layout import OPENCV_PHOTOMETRICS, info_for_opencv_layout, swap_red_blue, to_opencv_layout  # noqa: E402

log = logging.getLogger(__name__)

with contextlib.suppress(AttributeError):  # OpenCV's own log lines would bypass ours
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

_FD2_LOCK = threading.Lock()


@contextlib.contextmanager
def _stderr_to_log() -> Iterator[None]:
    """Catch what C libraries (libpng, libjpeg) write straight to file descriptor 2; log it at debug."""
    with _FD2_LOCK, tempfile.TemporaryFile() as sink:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace").strip()
            if text:
                log.debug("decoder said: %s", text)


__all__ = ["OpenCVSource", "swap_red_blue", "info_for_opencv_layout", "to_opencv_layout", "OPENCV_PHOTOMETRICS"]


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
        except HeaderError as err:
            raise InputError(f"{name}: damaged {fmt.upper()} file ({err})") from err
        except OSError as err:
            raise InputError(f"{name}: cannot read ({err.strerror or err})") from err
        if header is None:
            # no header parser for this format: decode once to learn its shape
            try:
                frame = self._imread(path, name, None)
            except ReadError as err:
                raise InputError(str(err)) from err
            height, width = frame.shape[:2]
            channels = 1 if frame.ndim == 2 else frame.shape[2]
            dtype = frame.dtype
            del frame
        else:
            height, width, channels, dtype = header.height, header.width, header.channels, header.dtype
        if height <= 0 or width <= 0:
            raise InputError(f"{name}: empty image")
        self.info = info_for_opencv_layout(name, height, width, channels, dtype, fmt, streamable=False)

    @staticmethod
    def _imread(path: str, name: str, dst: np.ndarray | None) -> np.ndarray:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            # OpenCV cannot open names that are not valid UTF-8: decode from the bytes instead
            with open(path, "rb") as fh:
                data = np.frombuffer(fh.read(), np.uint8)
            with _stderr_to_log():
                frame = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
            if frame is None:
                raise ReadError(f"{name}: OpenCV could not decode it (damaged or unsupported file)")
            return frame
        try:
            with _stderr_to_log():
                if dst is None:
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
