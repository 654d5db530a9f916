"""Kinds of image read since issue 10: 64-bit integers, CIELab, palette TIFF and PNG.

References are computed independently: Python integers and fractions for the
means, numpy lookups for the palette expansion, hand-written TIFF bytes for
the palette files (tifffile writes 4-bit colour maps with 256 entries).
"""

from __future__ import annotations

import struct
import zlib
from fractions import Fraction

import numpy as np
import pytest
import tifffile
from conftest import bgr, read_tiff, round_half_even, write_tiff

import avgstack
from avgstack.errors import UsageError


def exact_mean_objects(frames) -> np.ndarray:
    """Half-to-even rounded mean of integer frames, in Python integers."""
    total = sum(f.astype(object) for f in frames)
    n = len(frames)
    return np.array([round_half_even(Fraction(int(v), n)) for v in total.flat], object).reshape(total.shape)


# -- 64-bit integers --------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint64", "int64"])
@pytest.mark.parametrize("count", [2, 3, 4])
def test_64bit_tiff_mean_is_exact_near_the_limits(tmp_path, rng, dtype, count):
    info = np.iinfo(dtype)
    frames = []
    for i in range(count):
        f = rng.integers(info.min, info.max, (40, 30, 2), dtype=dtype, endpoint=True)
        f[0, :5] = info.max  # sums far past 64 bits
        f[1, :5] = info.min
        f[2, :5] = info.max - i  # means of x.5 and friends, near the top
        f[3, :5] = info.min + i
        frames.append(f)
    paths = [
        write_tiff(tmp_path / f"f{i}.tif", f, photometric="minisblack", planarconfig="contig",
                   byteorder=">" if i % 2 else "<", compression="zlib" if i == 1 else None)
        for i, f in enumerate(frames)
    ]
    avgstack.average_to_file(paths, tmp_path / "out.tif", max_memory="16MiB")
    out = read_tiff(tmp_path / "out.tif")
    assert out.dtype == np.dtype(dtype)
    assert (out.astype(object) == exact_mean_objects(frames)).all()


@pytest.mark.parametrize("dtype", ["uint64", "int64"])
def test_64bit_k_copies_identity_and_arrays(tmp_path, rng, dtype):
    info = np.iinfo(dtype)
    frame = rng.integers(info.min, info.max, (17, 9, 3), dtype=dtype, endpoint=True)
    frame[0, 0] = info.max
    frame[0, 1] = info.min
    path = write_tiff(tmp_path / "a.tif", frame, photometric="rgb", tile=(16, 16))
    avgstack.average_to_file([path] * 5, tmp_path / "out.tif")
    assert np.array_equal(read_tiff(tmp_path / "out.tif"), frame)
    assert np.array_equal(avgstack.average([frame, frame, frame]), frame)
    halves = avgstack.average([frame, frame, np.zeros_like(frame), np.zeros_like(frame)], dtype="float64")
    assert np.allclose(halves, frame.astype(np.float64) / 2, rtol=1e-15, atol=0)


def test_64bit_to_narrower_output_saturates_and_counts(tmp_path):
    a = np.array([[2**63 - 1, 5, -(2**63)]], np.int64)
    assert avgstack.average([a, a], dtype="int16").tolist() == [[32767, 5, -32768]]
    path = write_tiff(tmp_path / "a.tif", a)
    report = avgstack.average_to_file([path, path], tmp_path / "out.tif", dtype="int16")
    assert report.clipped == 2


# -- CIELab -------------------------------------------------------------------------


def lab_frame(rng, dtype, shape=(12, 10)) -> np.ndarray:
    """Stored CIELab: L* unsigned, a*/b* two's complement in the same unsigned type."""
    bits = np.dtype(dtype).itemsize * 8
    L = rng.integers(0, 2**bits, shape, dtype=np.int64)
    ab = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), shape + (2,), dtype=np.int64)
    ab[0, 0] = [-(2 ** (bits - 1)), 2 ** (bits - 1) - 1]
    stored = np.concatenate([L[..., None], ab % 2**bits], axis=-1)
    return stored.astype(dtype)


def signed_lab(stored: np.ndarray) -> np.ndarray:
    bits = stored.dtype.itemsize * 8
    v = stored.astype(np.int64)
    v[..., 1:] = np.where(v[..., 1:] >= 2 ** (bits - 1), v[..., 1:] - 2**bits, v[..., 1:])
    return v


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_cielab_mean_uses_signed_a_b(tmp_path, rng, dtype):
    frames = [lab_frame(rng, dtype) for _ in range(3)]
    frames[1][1, 1] = frames[0][1, 1]
    frames[0][1, 1, 1:] = np.array([5, 5], dtype)  # a* = +5 and -5 average to 0, not to 2**(bits-1)
    frames[1][1, 1, 1:] = (-np.array([5, 5], np.int64) % 2 ** (np.dtype(dtype).itemsize * 8)).astype(dtype)
    frames[2][1, 1, 1:] = 0
    paths = [write_tiff(tmp_path / f"l{i}.tif", f, photometric="cielab") for i, f in enumerate(frames)]
    avgstack.average_to_file(paths, tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert int(tif.pages[0].photometric) == 8
        out = tif.pages[0].asarray()
    assert out.dtype == np.dtype(dtype)
    expected = exact_mean_objects([signed_lab(f) for f in frames])
    assert (signed_lab(out).astype(object) == expected).all()
    assert signed_lab(out)[1, 1, 1:].tolist() == [0, 0]
    # K copies, and the API's array in the stored encoding
    avgstack.average_to_file([paths[0]] * 3, tmp_path / "same.tif")
    assert np.array_equal(read_tiff(tmp_path / "same.tif"), frames[0])
    assert np.array_equal(avgstack.average([paths[0], paths[0]]), frames[0])


def test_cielab_weighted_sum_is_signed(tmp_path, rng):
    frames = [lab_frame(rng, "uint8") for _ in range(2)]
    paths = [write_tiff(tmp_path / f"l{i}.tif", f, photometric="cielab") for i, f in enumerate(frames)]
    weights = [0.75, 0.5]
    avgstack.average_to_file(paths, tmp_path / "out.tif", weights)
    out = signed_lab(read_tiff(tmp_path / "out.tif"))
    s = [signed_lab(f).astype(np.float64) for f in frames]
    ref = np.rint(weights[0] * s[0] + weights[1] * s[1])
    ref[..., 0] = np.clip(ref[..., 0], 0, 255)
    ref[..., 1:] = np.clip(ref[..., 1:], -128, 127)
    assert np.array_equal(out, ref.astype(np.int64))


def test_cielab_refuses_other_output_type(tmp_path, rng):
    path = write_tiff(tmp_path / "l.tif", lab_frame(rng, "uint8"), photometric="cielab")
    with pytest.raises(UsageError, match="CIELab"):
        avgstack.average_to_file([path, path], tmp_path / "out.tif", dtype="float32")


# -- palette TIFF -------------------------------------------------------------------


def palette_tiff(path, indices: np.ndarray, cmap: np.ndarray, bits: int, order: str = "<") -> str:
    """A minimal uncompressed palette TIFF written by hand (one strip), ``cmap`` (3, 2**bits) uint16."""
    h, w = indices.shape
    if bits == 4:
        padded = np.zeros((h, w + w % 2), np.uint8)
        padded[:, :w] = indices
        data = ((padded[:, 0::2] << 4) | padded[:, 1::2]).astype(np.uint8).tobytes()
    elif bits == 8:
        data = indices.astype(np.uint8).tobytes()
    else:
        data = indices.astype(order + "u2").tobytes()
    cm = np.asarray(cmap, order + "u2").tobytes()
    entries = [
        (256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, bits), (259, 3, 1, 1), (262, 3, 1, 3),
        (273, 4, 1, None), (277, 3, 1, 1), (278, 4, 1, h), (279, 4, 1, len(data)), (320, 3, cm, None),
    ]
    ifd_at = 8
    n = len(entries)
    cm_at = ifd_at + 2 + 12 * n + 4
    data_at = cm_at + len(cm)
    head = (b"II" if order == "<" else b"MM") + struct.pack(order + "HI", 42, ifd_at)
    ifd = struct.pack(order + "H", n)
    for code, typ, count, value in entries:
        if code == 273:
            value = data_at
        if code == 320:
            ifd += struct.pack(order + "HHII", code, typ, len(cm) // 2, cm_at)
            continue
        if typ == 3:
            ifd += struct.pack(order + "HHIHH", code, typ, count, value, 0)
        else:
            ifd += struct.pack(order + "HHII", code, typ, count, value)
    ifd += struct.pack(order + "I", 0)
    with open(path, "wb") as f:
        f.write(head + ifd + cm + data)
    return str(path)


@pytest.mark.parametrize("bits,order,eight", [(8, "<", False), (8, ">", True), (4, "<", True), (4, ">", False),
                                              (16, ">", False)])
def test_palette_tiff_is_averaged_as_colours(tmp_path, rng, bits, order, eight):
    entries = 1 << bits if bits < 16 else 300
    if eight:
        cmap = rng.integers(0, 256, (3, entries), dtype=np.uint16) * 257
    else:
        cmap = rng.integers(0, 65536, (3, entries), dtype=np.uint16)
    if bits == 16:
        cmap = np.concatenate([cmap, np.zeros((3, 65536 - entries), np.uint16)], axis=1)
    shape = (37, 23)  # odd width: 4-bit rows end in half a byte
    frames = [rng.integers(0, entries, shape) for _ in range(3)]
    paths = [palette_tiff(tmp_path / f"p{i}.tif", f, cmap, bits, order) for i, f in enumerate(frames)]
    rgb = [cmap.T[f] for f in frames]  # (h, w, 3) uint16
    if eight:
        rgb = [c // 257 for c in rgb]
    report = avgstack.average_to_file(paths, tmp_path / "out.tif", max_memory="8MiB", threads=2)
    out = read_tiff(tmp_path / "out.tif")
    assert out.dtype == np.dtype(np.uint8 if eight else np.uint16)
    assert out.shape == shape + (3,)
    assert (out.astype(object) == exact_mean_objects(rgb)).all()
    assert any("palette" in note for note in report.notes)
    avgstack.average_to_file([paths[1]] * 4, tmp_path / "same.tif")
    assert np.array_equal(read_tiff(tmp_path / "same.tif"), rgb[1].astype(out.dtype))
    assert np.array_equal(avgstack.average([paths[2]]), bgr(rgb[2].astype(out.dtype)))


def test_palette_tiff_in_bands_within_budget(tmp_path, rng):
    """Bands of a few rows: the indices are decoded into the band buffer and expanded chunk by chunk."""
    cmap = rng.integers(0, 65536, (3, 256), dtype=np.uint16)
    frames = [rng.integers(0, 256, (400, 700)) for _ in range(2)]
    paths = [write_tiff(tmp_path / f"p{i}.tif", f.astype(np.uint8), photometric="palette", colormap=cmap,
                        rowsperstrip=7, compression="zlib") for i, f in enumerate(frames)]
    report = avgstack.average_to_file(paths, tmp_path / "out.tif", max_memory="5MiB", threads=1)
    assert report.bands > 1
    out = read_tiff(tmp_path / "out.tif")
    assert (out.astype(object) == exact_mean_objects([cmap.T[f] for f in frames])).all()


# -- palette PNG --------------------------------------------------------------------


def palette_png(path, indices: np.ndarray, plte: np.ndarray, trns: bytes | None) -> str:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    h, w = indices.shape
    raw = b"".join(b"\0" + row.astype(np.uint8).tobytes() for row in indices)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
    png += chunk(b"PLTE", plte.astype(np.uint8).tobytes())
    if trns is not None:
        png += chunk(b"tRNS", trns)
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)
    return str(path)


@pytest.mark.parametrize("transparent", [False, True])
def test_palette_png_is_averaged_as_colours(tmp_path, rng, transparent):
    plte = rng.integers(0, 256, (40, 3))
    alpha = rng.integers(0, 256, 40) if transparent else None
    frames = [rng.integers(0, 40, (9, 11)) for _ in range(3)]
    trns = bytes(alpha[:30].astype(np.uint8)) if alpha is not None else None  # entries past it are opaque
    paths = [palette_png(tmp_path / f"p{i}.png", f, plte, trns) for i, f in enumerate(frames)]
    colours = []
    for f in frames:
        c = plte[f]
        if alpha is not None:
            a = np.where(f < 30, alpha[np.minimum(f, 29)], 255)
            c = np.concatenate([c, a[..., None]], axis=-1)
        colours.append(c.astype(np.uint8))
    out = avgstack.average(paths)
    assert out.shape == (9, 11, 4 if transparent else 3)
    assert (out.astype(object) == bgr(exact_mean_objects(colours))).all()
    assert np.array_equal(avgstack.average([paths[0]] * 3), bgr(colours[0]))
