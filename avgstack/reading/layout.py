"""OpenCV's channel layout (BGR/BGRA, 2-D gray) and avgstack's stored order (RGB/RGBA).

Pure numpy, so that using it does not import OpenCV. Only the OpenCV and
array adapters, and the API's return value, go through here.
"""

from __future__ import annotations

import numpy as np

from .base import ImageInfo

__all__ = ["swap_red_blue", "to_opencv_layout", "info_for_opencv_layout", "decode_scratch", "OPENCV_PHOTOMETRICS"]

#: Colour meanings OpenCV's layout can express: gray and BGR(A).
OPENCV_PHOTOMETRICS = ("minisblack", "rgb")


def swap_red_blue(array: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """Convert BGR(A) to RGB(A) or back; arrays with other channel counts pass through.

    Parameters
    ----------
    array : ndarray
        ``(rows, cols)`` or ``(rows, cols, channels)``.
    inplace : bool
        Swap inside ``array`` instead of returning a new array.
    """
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        return array
    if not inplace:
        order = [2, 1, 0] + ([3] if array.shape[2] == 4 else [])
        return array[..., order]
    step = max(1, 2**20 // max(1, array.shape[1] * array.itemsize))  # a temporary of at most 1 MiB
    for start in range(0, array.shape[0], step):
        rows = array[start : start + step]
        blue = rows[..., 0].copy()
        rows[..., 0] = rows[..., 2]
        rows[..., 2] = blue
    return array


def to_opencv_layout(image: np.ndarray, photometric: str) -> np.ndarray:
    """Turn a ``(rows, cols, samples)`` result in stored order into OpenCV's layout, in place.

    RGB(A) becomes BGR(A) and one sample becomes a 2-D array. Other colour
    meanings (MinIsWhite, CMYK, CIELab) keep their stored samples as they are.
    """
    if photometric == "rgb":
        swap_red_blue(image, inplace=True)
    elif photometric == "cielab":  # a*/b* back to their stored, signed encoding
        from .lab import flip_signs

        flip_signs(image)
    return image[:, :, 0] if image.shape[2] == 1 else image


#: Working memory of ``cv2.imread`` into a given frame buffer, beyond that buffer, as a multiple of the
#: frame's bytes, measured with ru_maxrss (OpenCV 5.0): WebP and Radiance HDR decode into a frame of their
#: own first, PFM converts through float copies, GIF keeps a canvas, OpenJPEG works in 32-bit planes.
_DECODE_FACTOR = {"webp": 1.05, "hdr": 1.05, "pfm": 2.1, "gif": 3.2, "jp2": 4.5, "j2k": 4.5, "exr": 3.0}
#: Row buffers, tables and inflate/IDCT state of every decoder, whatever the frame size.
_DECODE_BASE = 2 * 2**20


def decode_scratch(fmt: str, frame_bytes: int) -> int:
    """Bytes a whole-frame decoder of format ``fmt`` needs beyond the frame it decodes into."""
    if fmt == "array":
        return 0
    return _DECODE_BASE + int(_DECODE_FACTOR.get(fmt, 0.0) * frame_bytes)


def info_for_opencv_layout(
    name: str, height: int, width: int, channels: int, dtype: np.dtype, fmt: str, streamable: bool
) -> ImageInfo:
    """Describe an image that OpenCV returns with ``channels`` channels in BGR(A) order."""
    photometric = "rgb" if channels in (3, 4) else "minisblack"
    extrasamples = (2,) if channels in (2, 4) else ()  # OpenCV alpha is unassociated
    return ImageInfo(
        name=name,
        height=height,
        width=width,
        samples=channels,
        dtype=np.dtype(dtype),
        photometric=photometric,
        extrasamples=extrasamples,
        format=fmt,
        streamable=streamable,
        segment_height=1,
        scratch_bytes=decode_scratch(fmt, height * width * channels * np.dtype(dtype).itemsize),
        metadata={"extratags": []},
    )
