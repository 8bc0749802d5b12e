"""The fake's PNG pictures: shapes and colours derived from the prompt, the prompt written on.

Drawn with the standard library only, so that a person opening a result of the fake (the demo's,
a test's) sees at once which prompt it answers and that it came from the fake, not from the real
service. Each content word of the prompt becomes a shape whose kind, colour, place and size
come from the word's digest; the background's colours come from the whole prompt's.
"""

from __future__ import annotations

import hashlib
import math
import textwrap

from ._font import GLYPH_HEIGHT, GLYPH_WIDTH, glyph

__all__ = ["LABEL", "PICTURE_SIZE", "Canvas", "draw_picture"]

PICTURE_SIZE = 320
"""Width and height, in pixels, of the fake's PNG pictures."""

LABEL = "FAKE PROVIDER IMAGE"
"""What every picture says at its top, so nobody mistakes it for a generated image."""

_STOP_WORDS = frozenset({"a", "an", "the", "of", "on", "in", "with", "at", "and", "to", "over"})
_SCALE = 2  # every font pixel is drawn as a 2x2 block: readable on a thumbnail
_CELL = (GLYPH_WIDTH + 1) * _SCALE
_LINE = (GLYPH_HEIGHT + 2) * _SCALE
_MARGIN = 10
_PANEL_TOP = 208
_LABEL_BOTTOM = 24
_INK = (24, 24, 32)
_PAPER = (250, 247, 238)
RGB = tuple[int, int, int]


class Canvas:
    """An RGB image in memory, with the few drawing operations the pictures need.

    Args:
        width: Width in pixels.
        height: Height in pixels.
    """

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(width * height * 3)

    def span(self, y: int, x0: int, x1: int, rgb: RGB) -> None:
        """Fill the pixels ``x0 <= x < x1`` of row ``y`` (clipped to the canvas)."""
        x0, x1 = max(x0, 0), min(x1, self.width)
        if 0 <= y < self.height and x0 < x1:
            start = (y * self.width + x0) * 3
            self.pixels[start : start + (x1 - x0) * 3] = bytes(rgb) * (x1 - x0)

    def rect(self, x0: int, y0: int, x1: int, y1: int, rgb: RGB) -> None:
        """Fill the rectangle ``[x0, x1) x [y0, y1)``."""
        for y in range(y0, y1):
            self.span(y, x0, x1, rgb)

    def shape(self, kind: int, cx: int, cy: int, r: int, rgb: RGB) -> None:
        """A disc (0), a square (1), a diamond (2) or a triangle (3) of radius ``r``."""
        for dy in range(-r, r + 1):
            if kind == 0:
                half = math.isqrt(r * r - dy * dy)
            elif kind == 1:
                half = r
            elif kind == 2:
                half = r - abs(dy)
            else:
                half = (dy + r) // 2
            self.span(cy + dy, cx - half, cx + half + 1, rgb)

    def text(self, x: int, y: int, text: str, rgb: RGB, *, scale: int = _SCALE) -> None:
        """Write ``text`` in the built-in 5x7 font, its top left corner at ``(x, y)``."""
        for char in text:
            for row, bits in enumerate(glyph(char)):
                for column in range(GLYPH_WIDTH):
                    if bits >> (GLYPH_WIDTH - 1 - column) & 1:
                        left, top = x + column * scale, y + row * scale
                        self.rect(left, top, left + scale, top + scale, rgb)
            x += (GLYPH_WIDTH + 1) * scale


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _bright(digest: bytes) -> RGB:
    """A saturated colour from a digest: one channel high, one low, one anywhere."""
    order = digest[3] % 3
    channels = [80 + digest[0] % 176, 20 + digest[1] % 60, 190 + digest[2] % 66]
    return (channels[order], channels[(order + 1) % 3], channels[(order + 2) % 3])


def _text_width(text: str) -> int:
    return len(text) * _CELL - _SCALE


def draw_picture(prompt: str, size: int = PICTURE_SIZE) -> Canvas:
    """The picture of ``prompt``: a gradient, one shape per word, the label and the prompt."""
    canvas = Canvas(size, size)
    digest = _digest(prompt)
    top, bottom = _bright(digest), _bright(digest[8:])
    for y in range(size):
        t = y / max(size - 1, 1)
        # Darkened so that bright shapes stand out against it.
        colour = tuple(int((a * (1 - t) + b * t) * 0.55) for a, b in zip(top, bottom, strict=True))
        canvas.span(y, 0, size, (colour[0], colour[1], colour[2]))
    words = [word for word in prompt.lower().split() if word not in _STOP_WORDS][:8]
    area = _PANEL_TOP - _LABEL_BOTTOM
    for word in words or [prompt]:
        mark = _digest(word)
        radius = 14 + mark[4] % 30
        cx = radius + mark[5] * (size - 2 * radius) // 255
        cy = _LABEL_BOTTOM + radius + mark[6] * max(area - 2 * radius, 0) // 255
        canvas.shape(mark[7] % 4, cx, cy, radius, _bright(mark))
    canvas.rect(0, 0, size, _LABEL_BOTTOM, _INK)
    canvas.text((size - _text_width(LABEL)) // 2, 5, LABEL, (255, 214, 64))
    canvas.rect(0, _PANEL_TOP, size, size, _PAPER)
    canvas.rect(0, _PANEL_TOP, size, _PANEL_TOP + 4, top)
    columns = (size - 2 * _MARGIN) // _CELL
    rows = (size - _PANEL_TOP - 2 * _MARGIN) // _LINE
    lines = textwrap.wrap(prompt, columns, max_lines=rows, placeholder="...") or [""]
    for number, line in enumerate(lines):
        canvas.text(_MARGIN, _PANEL_TOP + _MARGIN + number * _LINE, line, _INK)
    return canvas
