"""Write a small example stack: eleven 640x480 RGBA TIFFs with unassociated alpha.

Usage: python scripts/make_example.py [FOLDER]   (default: example)
"""

from __future__ import annotations

import os
import sys

import numpy as np
import tifffile


def main(folder: str = "example") -> None:
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(2026)
    y, x = np.mgrid[0:480, 0:640]
    for i in range(11):
        base = np.stack(
            [x * 255 / 639, y * 255 / 479, (x + y + 20 * i) % 256, np.full_like(x, 255 - 10 * i)], axis=-1
        )
        frame = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        tifffile.imwrite(os.path.join(folder, f"frame_{i:02d}.tif"), frame, extrasamples=["unassalpha"])
    print(f"wrote 11 frames to {folder}/frame_00.tif ... frame_10.tif")


if __name__ == "__main__":
    main(*sys.argv[1:2])
