"""Real, small PNG and JPEG files made with the standard library only.

A PNG is a picture of the prompt (`._picture`: shapes and colours derived from it, the prompt
written on it, labelled as the fake's); a JPEG is a solid colour derived from the prompt (the
encoder below writes flat blocks only). Both carry the prompt's digest in a comment, so
different prompts always give different bytes and the same prompt the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib

from ._picture import PICTURE_SIZE, draw_picture

__all__ = [
    "IMAGE_SIZE",
    "PICTURE_SIZE",
    "jpeg_bytes",
    "png_bytes",
    "png_pixels",
    "prompt_colour",
    "render_image",
]

IMAGE_SIZE = 64
"""Width and height, in pixels, of the fake's JPEG images (a multiple of 8)."""


def prompt_colour(prompt: str) -> tuple[bytes, tuple[int, int, int]]:
    """Return the prompt's 16-byte digest and the RGB colour derived from it."""
    digest = hashlib.blake2b(prompt.encode("utf-8"), digest_size=16).digest()
    return digest, (digest[0], digest[1], digest[2])


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_pixels(width: int, height: int, pixels: bytes, *, comment: str = "") -> bytes:
    """Encode 8-bit RGB ``pixels`` (rows top to bottom, 3 bytes a pixel) as a PNG."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    stride = width * 3
    # Each row: filter type 0 (None), then its pixels.
    raw = b"".join(b"\x00" + pixels[row * stride : (row + 1) * stride] for row in range(height))
    parts = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", ihdr)]
    if comment:
        parts.append(_png_chunk(b"tEXt", b"Comment\x00" + comment.encode("latin-1")))
    parts += [_png_chunk(b"IDAT", zlib.compress(raw, 9)), _png_chunk(b"IEND", b"")]
    return b"".join(parts)


def png_bytes(rgb: tuple[int, int, int], *, size: int = IMAGE_SIZE, comment: str = "") -> bytes:
    """Encode a solid-colour, 8-bit RGB PNG of ``size`` x ``size`` pixels."""
    return png_pixels(size, size, bytes(rgb) * (size * size), comment=comment)


# The standard DC Huffman tables (ITU T.81 Annex K.3): code counts per length 1..16, symbols.
_DC_LUMA = (bytes([0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]), bytes(range(12)))
_DC_CHROMA = (bytes([0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]), bytes(range(12)))
# A solid block has no AC energy, so the AC table needs one symbol only: EOB (0x00), code "0".
_AC_EOB_ONLY = (bytes([1] + [0] * 15), bytes([0]))


def _huffman_codes(table: tuple[bytes, bytes]) -> dict[int, tuple[int, int]]:
    """Canonical Huffman codes of a DHT table: symbol -> (code, length)."""
    counts, symbols = table
    codes: dict[int, tuple[int, int]] = {}
    code = 0
    position = 0
    for length, count in enumerate(counts, start=1):
        for _ in range(count):
            codes[symbols[position]] = (code, length)
            position += 1
            code += 1
        code <<= 1
    return codes


class _BitWriter:
    __slots__ = ("_acc", "_nbits", "out")

    def __init__(self) -> None:
        self.out = bytearray()
        self._acc = 0
        self._nbits = 0

    def write(self, value: int, length: int) -> None:
        self._acc = (self._acc << length) | (value & ((1 << length) - 1))
        self._nbits += length
        while self._nbits >= 8:
            self._nbits -= 8
            byte = (self._acc >> self._nbits) & 0xFF
            self.out.append(byte)
            if byte == 0xFF:
                self.out.append(0x00)  # byte stuffing
        self._acc &= (1 << self._nbits) - 1

    def flush(self) -> bytes:
        if self._nbits:
            self.write((1 << (8 - self._nbits)) - 1, 8 - self._nbits)  # pad with 1-bits
        return bytes(self.out)


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", 0xFF00 | marker, len(payload) + 2) + payload


def _dht(table_class: int, table_id: int, table: tuple[bytes, bytes]) -> bytes:
    return _segment(0xC4, bytes([table_class << 4 | table_id]) + table[0] + table[1])


def jpeg_bytes(rgb: tuple[int, int, int], *, size: int = IMAGE_SIZE, comment: str = "") -> bytes:
    """Encode a solid-colour baseline JPEG (JFIF, 4:4:4) of ``size`` x ``size`` pixels.

    The quantization table is all ones, so the colour survives up to YCbCr rounding.
    """
    r, g, b = rgb
    ycc = (
        0.299 * r + 0.587 * g + 0.114 * b,
        -0.168736 * r - 0.331264 * g + 0.5 * b + 128,
        0.5 * r - 0.418688 * g - 0.081312 * b + 128,
    )
    # The DC coefficient of a flat 8x8 block of level-shifted value v is 8 * v.
    dcs = [round(8 * (value - 128)) for value in ycc]
    dc_codes = (_huffman_codes(_DC_LUMA), _huffman_codes(_DC_CHROMA), _huffman_codes(_DC_CHROMA))
    eob_code, eob_length = _huffman_codes(_AC_EOB_ONLY)[0]
    bits = _BitWriter()
    previous = [0, 0, 0]
    for _ in range((size // 8) ** 2):
        for component in range(3):
            diff = dcs[component] - previous[component]
            previous[component] = dcs[component]
            category = abs(diff).bit_length()
            code, length = dc_codes[component][category]
            bits.write(code, length)
            if category:
                bits.write(diff if diff > 0 else diff + (1 << category) - 1, category)
            bits.write(eob_code, eob_length)
    components = b"".join(bytes([index + 1, 0x11, 0]) for index in range(3))
    return b"".join(
        [
            b"\xff\xd8",  # SOI
            _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),  # APP0
            _segment(0xFE, comment.encode("latin-1")) if comment else b"",  # COM
            _segment(0xDB, b"\x00" + b"\x01" * 64),  # DQT: table 0, 8-bit, all ones
            _segment(0xC0, struct.pack(">BHHB", 8, size, size, 3) + components),  # SOF0
            _dht(0, 0, _DC_LUMA),
            _dht(0, 1, _DC_CHROMA),
            _dht(1, 0, _AC_EOB_ONLY),
            # SOS: Y uses DC table 0, Cb and Cr DC table 1; all use AC table 0; Ss=0 Se=63 AhAl=0.
            _segment(0xDA, b"\x03\x01\x00\x02\x10\x03\x10\x00\x3f\x00"),
            bits.flush(),
            b"\xff\xd9",  # EOI
        ]
    )


@functools.lru_cache(maxsize=256)
def render_image(prompt: str, output_format: str) -> bytes:
    """Return the image for ``prompt`` as ``"png"`` or ``"jpeg"`` bytes (cached)."""
    digest, rgb = prompt_colour(prompt)
    comment = f"fake-nanobanana prompt-blake2b={digest.hex()}"
    if output_format == "jpeg":
        return jpeg_bytes(rgb, comment=comment)
    picture = draw_picture(prompt)
    return png_pixels(picture.width, picture.height, bytes(picture.pixels), comment=comment)
