"""Header probes for the text-headed formats: netpbm (PBM/PGM/PPM/PAM), PFM and Radiance HDR."""

from __future__ import annotations

import re

from .header_base import _EOL, _F32, _INT_MAX, _SPACE, _U8, _U16, Header, HeaderError, _Cursor, _Source

__all__ = ["probe_hdr", "probe_pfm", "probe_pnm"]


# ---------------------------------------------------------------- netpbm

def probe_pnm(src: _Source) -> Header | None:
    kind = src.head[1:2]
    if kind == b"7":
        return _probe_pam(src)
    cur = src.cursor("PNM", 2)
    width, height = _pnm_number(cur), _pnm_number(cur)
    maxval = 1 if kind in b"14" else _pnm_number(cur)
    if width == 0 or height == 0:
        raise HeaderError(f"PNM {'width' if width == 0 else 'height'} is zero")
    if not 0 < maxval <= 65535:
        raise HeaderError(f"PNM maximum value {maxval} is outside 1..65535")
    channels = 3 if kind in b"36" else 1
    return Header("pnm", height, width, channels, _U16 if maxval > 255 else _U8)


def _pnm_number(cur: _Cursor) -> int:
    """Read a decimal number as OpenCV's ``ReadNumber`` does: spaces and comments before, one byte after."""
    c = cur.byte()
    while not 0x30 <= c <= 0x39:
        if c == 0x23:  # '#': comment to the end of the line
            while cur.byte() not in _EOL:
                pass
            c = cur.byte()
        elif c in _SPACE:
            c = cur.byte()
        else:
            raise HeaderError(f"PNM header has an unexpected byte 0x{c:02X}")
    value = 0
    while 0x30 <= c <= 0x39:
        value = value * 10 + c - 0x30
        if value > _INT_MAX:
            raise HeaderError("PNM header number is too large")
        c = cur.byte()
    return value


_PAM_FIELDS = (b"ENDHDR", b"HEIGHT", b"WIDTH", b"DEPTH", b"MAXVAL", b"TUPLTYPE")
_PAM_TUPLES = {b"": None, b"BLACKANDWHITE": 1, b"GRAYSCALE": 1, b"GRAYSCALE_ALPHA": 2, b"RGB": 3, b"RGB_ALPHA": 4}


def _probe_pam(src: _Source) -> Header | None:
    cur = src.cursor("PAM", 2)
    if cur.byte() not in _EOL:
        raise HeaderError("PAM signature P7 is not followed by a line break")
    fields: dict[bytes, int] = {}
    tuple_depth: int | None = None
    while True:
        name, value = _pam_line(cur)
        if name == b"ENDHDR":
            break
        if name == b"TUPLTYPE":
            if value not in _PAM_TUPLES:
                return None  # a tuple type OpenCV does not know
            tuple_depth = _PAM_TUPLES[value]
        elif name:
            if name in fields:
                raise HeaderError(f"PAM header repeats {name.decode()}")
            match = re.fullmatch(rb"(-?)(\d*)", value)
            if not match or (match[1] and not match[2]) or int(match[2] or 0) >= _INT_MAX:
                raise HeaderError(f"PAM {name.decode()} is not an integer")
            fields[name] = int(value or 0)
    missing = [n.decode() for n in (b"WIDTH", b"HEIGHT", b"DEPTH", b"MAXVAL") if n not in fields]
    if missing:
        raise HeaderError(f"PAM header lacks {', '.join(missing)}")
    width, height, depth, maxval = fields[b"WIDTH"], fields[b"HEIGHT"], fields[b"DEPTH"], fields[b"MAXVAL"]
    if width <= 0 or height <= 0:
        raise HeaderError(f"PAM {'width' if width <= 0 else 'height'} is not positive")
    if not 0 <= maxval <= 65535:
        raise HeaderError(f"PAM maximum value {maxval} is outside 0..65535")
    if tuple_depth is None and maxval < 256 and depth in (1, 3):
        tuple_depth = depth  # OpenCV infers GRAYSCALE or RGB
    if tuple_depth != depth or (maxval == 1 and depth not in (1, 3)):
        return None  # OpenCV refuses depths it cannot match to a tuple type
    return Header("pnm", height, width, depth, _U16 if maxval > 255 else _U8)


def _pam_line(cur: _Cursor) -> tuple[bytes, bytes]:
    """Read one header line as OpenCV's ``ReadPAMHeaderLine``; comments give an empty name."""
    c = cur.byte()
    while c in _SPACE:
        c = cur.byte()
    if c == 0x23:
        while cur.byte() not in _EOL:
            pass
        return b"", b""
    name = bytearray()
    while c not in _SPACE and len(name) < 8:
        name.append(c)
        c = cur.byte()
    if c not in _SPACE or bytes(name) not in _PAM_FIELDS:
        raise HeaderError(f"PAM header has an unknown field {bytes(name)[:8].decode('latin-1')!r}")
    if c in _EOL:
        return bytes(name), b""
    c = cur.byte()
    while c in _SPACE:
        c = cur.byte()
    value = bytearray()
    while c not in _EOL:
        if len(value) == 255:
            raise HeaderError("PAM header line is too long")
        value.append(c)
        c = cur.byte()
    return bytes(name), bytes(value).rstrip(_SPACE)


def probe_pfm(src: _Source) -> Header | None:
    if src.head[2:3] != b"\n":
        raise HeaderError("PFM signature is not followed by a newline")
    cur = src.cursor("PFM", 3)
    width, height = _atoi(_pfm_token(cur)), _atoi(_pfm_token(cur))
    scale = _FLOAT.match(_pfm_token(cur))  # like atof: a leading number, else 0
    if width <= 0 or height <= 0:
        raise HeaderError(f"PFM {'width' if width <= 0 else 'height'} is not positive")
    if not (scale and abs(float(scale[0])) > 0):
        raise HeaderError("PFM scale is zero or missing")
    return Header("pfm", height, width, 3 if src.head[1:2] == b"F" else 1, _F32)


_FLOAT = re.compile(rb"[+-]?(\d+\.?\d*(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?|inf|nan)", re.IGNORECASE)


def _atoi(token: bytes) -> int:
    """Return the leading integer of ``token`` as C ``atoi`` does, 0 if there is none."""
    match = re.match(rb"[+-]?\d+", token)
    return int(match[0]) if match else 0


def _pfm_token(cur: _Cursor) -> bytes:
    """Read bytes up to one white-space byte, as OpenCV's PFM ``read_number`` does."""
    token = bytearray()
    while len(token) < 2048:
        c = cur.byte()
        if c >= 0x80:
            raise HeaderError("PFM header has a non-ASCII byte")
        if c in _SPACE:
            break
        token.append(c)
    return bytes(token).split(b"\x00")[0]


# ---------------------------------------------------------------- Radiance HDR

def probe_hdr(src: _Source) -> Header | None:
    cur = src.cursor("Radiance HDR", 0)
    _hdr_line(cur)  # '#?RADIANCE' or '#?RGBE' and anything after it
    rgbe = False
    while (line := _hdr_line(cur))[:1] != b"\n":
        rgbe = rgbe or line == b"FORMAT=32-bit_rle_rgbe\n"
    if not rgbe:
        return None  # XYZE data or no FORMAT line: OpenCV refuses them
    resolution = re.match(rb"-Y\s*([+-]?\d+)\s*\+X\s*([+-]?\d+)", _hdr_line(cur))
    if not resolution:
        return None  # rows or columns not stored top-down, left to right: OpenCV refuses them
    height, width = int(resolution[1]), int(resolution[2])
    if width <= 0 or height <= 0:
        raise HeaderError(f"Radiance HDR {'width' if width <= 0 else 'height'} is not positive")
    return Header("hdr", height, width, 3, _F32)


def _hdr_line(cur: _Cursor) -> bytes:
    """Read a line as ``fgets`` with OpenCV's 128-byte buffer does (long lines come in pieces)."""
    line = bytearray([cur.byte()])
    while line[-1] != 0x0A and len(line) < 127:
        if cur.pos >= len(cur.data) and cur.complete:
            break  # fgets returns what it has at the end of the file
        line.append(cur.byte())
    return bytes(line)
