"""The fake's result images decode as real PNG and JPEG files (checked without Pillow).

The PNG pictures are also read back: the label and the prompt, glyph by glyph.
"""

from __future__ import annotations

import struct
import zlib

import pytest

from nanobanana_async.testing._font import GLYPH_HEIGHT, GLYPH_WIDTH, glyph
from nanobanana_async.testing._images import (
    PICTURE_SIZE,
    jpeg_bytes,
    png_bytes,
    prompt_colour,
    render_image,
)
from nanobanana_async.testing._picture import LABEL, Canvas, draw_picture


def decode_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int]], dict[bytes, bytes]]:
    """A strict reader of 8-bit RGB, non-interlaced PNGs: (width, height, pixels, text)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position = 8
    chunks: list[tuple[bytes, bytes]] = []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        position += 12 + length
    assert position == len(data)
    assert chunks[0][0] == b"IHDR"
    assert chunks[-1] == (b"IEND", b"")
    width, height, depth, colour_type, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", chunks[0][1]
    )
    assert (depth, colour_type, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = 1 + 3 * width
    assert len(raw) == stride * height
    pixels = []
    for row in range(height):
        line = raw[row * stride : (row + 1) * stride]
        assert line[0] == 0  # filter: None
        pixels += [tuple(line[1 + 3 * x : 4 + 3 * x]) for x in range(width)]
    text = dict(body.split(b"\x00", 1) for kind, body in chunks if kind == b"tEXt")
    return width, height, pixels, text  # type: ignore[return-value]


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0
        self.bit = 0

    def read(self, count: int) -> int:
        value = 0
        for _ in range(count):
            byte = self.data[self.position]
            value = (value << 1) | ((byte >> (7 - self.bit)) & 1)
            self.bit += 1
            if self.bit == 8:
                self.bit = 0
                self.position += 1
        return value

    def symbol(self, table: dict[tuple[int, int], int]) -> int:
        code = 0
        for length in range(1, 17):
            code = (code << 1) | self.read(1)
            if (length, code) in table:
                return table[(length, code)]
        raise AssertionError("no such Huffman code")


def _extend(value: int, size: int) -> int:
    return value if size == 0 or value >= 1 << (size - 1) else value - (1 << size) + 1


def decode_jpeg(data: bytes) -> tuple[int, int, list[tuple[int, int, int]], list[int]]:
    """A strict baseline-JPEG decoder for 4:4:4 files: (width, height, pixels, markers).

    It decodes every Huffman code of the scan, DC and AC; the fake's images are flat, so
    the test asserts that every AC coefficient is zero and computes pixels from DC alone.
    """
    assert data[:2] == b"\xff\xd8"
    markers = [0xD8]
    position = 2
    quant: dict[int, list[int]] = {}
    huffman: dict[tuple[int, int], dict[tuple[int, int], int]] = {}
    frame: tuple[int, int, list[tuple[int, int, int]]] | None = None
    scan: list[tuple[int, int, int]] = []
    while True:
        assert data[position] == 0xFF
        marker = data[position + 1]
        markers.append(marker)
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        body = data[position + 4 : position + 2 + length]
        position += 2 + length
        if marker == 0xE0:
            assert body[:5] == b"JFIF\x00"
        elif marker == 0xDB:
            while body:
                precision, table_id = body[0] >> 4, body[0] & 15
                assert precision == 0
                quant[table_id] = list(body[1:65])
                body = body[65:]
        elif marker == 0xC0:
            precision, height, width, count = struct.unpack(">BHHB", body[:6])
            assert precision == 8
            components = [(body[6 + 3 * i], body[7 + 3 * i], body[8 + 3 * i]) for i in range(count)]
            frame = (width, height, components)
        elif marker == 0xC4:
            while body:
                table_class, table_id = body[0] >> 4, body[0] & 15
                counts = body[1:17]
                symbols = body[17 : 17 + sum(counts)]
                table: dict[tuple[int, int], int] = {}
                code = index = 0
                for length, number in enumerate(counts, start=1):
                    for _ in range(number):
                        table[(length, code)] = symbols[index]
                        code += 1
                        index += 1
                    assert code <= 1 << length
                    code <<= 1
                huffman[(table_class, table_id)] = table
                body = body[17 + sum(counts) :]
        elif marker == 0xDA:
            count = body[0]
            scan = [
                (body[1 + 2 * i], body[2 + 2 * i] >> 4, body[2 + 2 * i] & 15) for i in range(count)
            ]
            assert tuple(body[1 + 2 * count :]) == (0, 63, 0)
            break
    end = data.index(b"\xff\xd9", position)
    assert end == len(data) - 2
    markers.append(0xD9)
    entropy = data[position:end].replace(b"\xff\x00", b"\xff")
    assert frame is not None
    width, height, components = frame
    assert all(sampling == 0x11 for _, sampling, _ in components)
    bits = _Bits(entropy)
    previous = [0] * len(components)
    dcs: list[list[int]] = [[] for _ in components]
    for _ in range((width // 8) * (height // 8)):
        for number, (component_id, dc_table, ac_table) in enumerate(scan):
            assert components[number][0] == component_id
            size = bits.symbol(huffman[(0, dc_table)])
            previous[number] += _extend(bits.read(size), size)
            dcs[number].append(previous[number])
            k = 1
            while k < 64:
                run_size = bits.symbol(huffman[(1, ac_table)])
                run, size = run_size >> 4, run_size & 15
                if size == 0 and run != 15:
                    break  # EOB
                k += run
                assert size == 0 or _extend(bits.read(size), size) == 0, "AC energy"
                k += 1
    if bits.bit:  # the last byte is padded with 1-bits
        pad = 8 - bits.bit
        assert bits.read(pad) == (1 << pad) - 1
    assert bits.position == len(entropy)  # the whole scan was used, nothing more
    pixels = []
    for block in range(len(dcs[0])):
        y, cb, cr = (
            dcs[n][block] * quant[components[n][2]][0] / 8 + 128 for n in range(len(components))
        )
        rgb = (
            y + 1.402 * (cr - 128),
            y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
            y + 1.772 * (cb - 128),
        )
        pixels.append(tuple(min(255, max(0, round(value))) for value in rgb))
    return width, height, pixels, markers  # type: ignore[return-value]


@pytest.mark.parametrize("prompt", ["a banana", "", "ünïcødé 🍌", "x" * 20000])
def test_png_is_a_valid_png_picture_of_the_prompt(prompt: str) -> None:
    digest, _ = prompt_colour(prompt)
    width, height, pixels, text = decode_png(render_image(prompt, "png"))
    assert (width, height) == (PICTURE_SIZE, PICTURE_SIZE)
    assert len(set(pixels)) > 4  # a picture, not a flat square
    assert digest.hex().encode() in text[b"Comment"]


@pytest.mark.parametrize(
    "rgb", [(0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255), (127, 128, 129)]
)
def test_jpeg_decodes_to_the_colour(rgb: tuple[int, int, int]) -> None:
    width, height, pixels, markers = decode_jpeg(jpeg_bytes(rgb))
    assert (width, height) == (64, 64)
    assert markers == [0xD8, 0xE0, 0xDB, 0xC0, 0xC4, 0xC4, 0xC4, 0xDA, 0xD9]
    assert len(set(pixels)) == 1
    assert max(abs(a - b) for a, b in zip(pixels[0], rgb, strict=True)) <= 2


@pytest.mark.parametrize("prompt", ["a banana", "an apple", "ÿÿÿÿ", "0", "1", "2", "3"])
def test_jpeg_of_a_prompt(prompt: str) -> None:
    _, rgb = prompt_colour(prompt)
    data = render_image(prompt, "jpeg")
    _, _, pixels, markers = decode_jpeg(data)
    assert markers[:3] == [0xD8, 0xE0, 0xFE]  # with a comment naming the prompt's digest
    assert max(abs(a - b) for a, b in zip(pixels[0], rgb, strict=True)) <= 2


def test_byte_stuffing_is_applied() -> None:
    # A DC difference whose bits contain 0xFF must be stuffed with 0x00.
    for value in range(256):
        data = jpeg_bytes((value, value, value))
        scan = data[data.index(b"\xff\xda") + 14 : -2]
        index = scan.find(b"\xff")
        while index != -1:
            assert scan[index + 1] == 0
            index = scan.find(b"\xff", index + 2)
        decode_jpeg(data)


def test_sizes_are_configurable() -> None:
    assert decode_png(png_bytes((1, 2, 3), size=8))[:2] == (8, 8)
    assert set(decode_png(png_bytes((1, 2, 3), size=8))[2]) == {(1, 2, 3)}
    assert decode_jpeg(jpeg_bytes((1, 2, 3), size=16))[:2] == (16, 16)
    assert b"tEXt" not in png_bytes((1, 2, 3))
    assert b"\xff\xfe" not in jpeg_bytes((1, 2, 3))


def test_different_prompts_different_bytes_same_prompt_same_bytes() -> None:
    prompts = [f"prompt {i}" for i in range(50)]
    for fmt in ("png", "jpeg"):
        images = [render_image(prompt, fmt) for prompt in prompts]
        assert len(set(images)) == len(prompts)
        assert render_image("prompt 3", fmt) == images[3]
    assert render_image("p", "png") != render_image("p", "jpeg")


# -- the pictures: told apart and read back ------------------------------------------------
_SCALE = 2
_CELL = (GLYPH_WIDTH + 1) * _SCALE
_BY_ROWS = {glyph(chr(code)): chr(code) for code in range(0x20, 0x7F)}


def read_line(
    pixels: list[tuple[int, int, int]], x: int, y: int, ink: tuple[int, int, int], chars: int
) -> str:
    """Read ``chars`` characters of the 5x7 font written in ``ink`` at (x, y), scale 2."""
    text = ""
    for index in range(chars):
        rows = []
        for row in range(GLYPH_HEIGHT):
            bits = 0
            for column in range(GLYPH_WIDTH):
                px = x + index * _CELL + column * _SCALE
                py = y + row * _SCALE
                bits = bits << 1 | (pixels[py * PICTURE_SIZE + px] == ink)
            rows.append(bits)
        text += _BY_ROWS.get(tuple(rows), "?")
    return text


def test_every_printable_character_has_its_own_glyph() -> None:
    assert len(_BY_ROWS) == 0x7F - 0x20
    assert glyph("\u00e9") == glyph("\u2603") != glyph(" ")  # an empty box for the rest


@pytest.mark.parametrize(
    "prompt", ["a banana surfing a wave at sunset", "Neon sign: BANANA {42} & ~rain~!"]
)
def test_the_prompt_and_the_label_can_be_read_back(prompt: str) -> None:
    _, _, pixels, _ = decode_png(render_image(prompt, "png"))
    ink, label_ink = (24, 24, 32), (255, 214, 64)
    label_x = (PICTURE_SIZE - (len(LABEL) * _CELL - _SCALE)) // 2
    assert read_line(pixels, label_x, 5, label_ink, len(LABEL)) == LABEL
    first_line = prompt[:25].rsplit(" ", 1)[0] if len(prompt) > 25 else prompt
    assert read_line(pixels, 10, 218, ink, len(first_line)) == first_line


def test_long_prompts_are_cut_with_an_ellipsis_inside_the_panel() -> None:
    prompt = " ".join(["banana"] * 200)
    canvas = draw_picture(prompt)
    pixels = [tuple(canvas.pixels[i : i + 3]) for i in range(0, len(canvas.pixels), 3)]
    last_line_y = 218 + 3 * 20  # four lines of 8 + 2 rows fit
    assert "..." in read_line(pixels, 10, last_line_y, (24, 24, 32), 25)  # type: ignore[arg-type]


def test_different_prompts_look_different() -> None:
    first, second = draw_picture("a red fox"), draw_picture("a blue whale")
    # Above the text panel, where the shapes and the background are.
    top = slice(0, 200 * PICTURE_SIZE * 3)
    differing = sum(a != b for a, b in zip(first.pixels[top], second.pixels[top], strict=True))
    assert differing > len(first.pixels[top]) // 4


def test_shapes_are_clipped_to_the_canvas() -> None:
    canvas = Canvas(10, 10)
    for kind in range(4):
        canvas.shape(kind, 0, 0, 30, (1, 2, 3))
        canvas.shape(kind, 9, 9, 30, (4, 5, 6))
    assert len(canvas.pixels) == 300
    assert canvas.pixels[:3] == bytes((4, 5, 6))
