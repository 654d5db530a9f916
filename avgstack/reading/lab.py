"""CIELab TIFFs (photometric 8): L* unsigned, a* and b* signed, in 8 or 16 bits.

a* and b* are stored as two's complement integers in samples that TIFF
otherwise calls unsigned. avgstack flips their sign bit as a band is read,
which maps them one to one and in order onto offset-binary values
(``a + 128`` or ``a + 32768``) of the same unsigned type; the mean of those is
the offset mean, rounded half to even exactly as the signed mean would be
(the offset is even), and order statistics are unchanged. Weighted sums add
the offset once per unit of weight: :func:`offset_param` tells the reducer to
take the surplus ``offset * (sum(w) - 1)`` off before rounding. Flipping the
sign bit again on the way out restores the stored encoding.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError

__all__ = ["PHOTOMETRIC", "flip_signs", "offset_of", "check_output_dtype"]

#: avgstack's name for photometric 8.
PHOTOMETRIC = "cielab"


def offset_of(dtype: np.dtype) -> int:
    """The offset a flipped sign bit adds: 128 for 8-bit samples, 32768 for 16-bit."""
    return 1 << (np.dtype(dtype).itemsize * 8 - 1)


def flip_signs(rows: np.ndarray) -> np.ndarray:
    """Flip the sign bit of a* and b* (samples 1 and 2) of ``rows`` ``(..., samples)`` in place."""
    if rows.shape[-1] >= 3:
        ab = rows[..., 1:3]
        np.bitwise_xor(ab, rows.dtype.type(offset_of(rows.dtype)), out=ab)
    return rows


def check_output_dtype(name: str, in_dtype: np.dtype, out_dtype: np.dtype) -> None:
    """CIELab is written back in its own encoding: refuse another output type."""
    if np.dtype(out_dtype) != np.dtype(in_dtype):
        raise UsageError(
            f"{name}: CIELab images are written as CIELab {np.dtype(in_dtype).name}; "
            f"dtype (--dtype) {np.dtype(out_dtype).name} cannot hold its signed a*/b* samples"
        )
