"""``nanobanana demo``: a batch against the fake provider on loopback, with no key or network."""

from collections.abc import Mapping
from typing import Any, cast

from .. import AsyncNanoBanana, ImageRequest, ImageToImage, PollPolicy, RetryPolicy, TextToImage
from ..testing import FakeNanoBanana
from ._batch import BatchReport, print_summary, run_batch
from ._exit import EXIT_FAILURE, EXIT_OK
from ._gallery import write_gallery
from ._names import slug
from ._rows import Row
from ._ui import Ui

__all__ = ["demo_rows", "run_demo"]

_TIME_SCALE = 0.1
_EDIT_SOURCE = "https://example.com/photos/banana.png"
# PNG only: the fake draws a picture of the prompt in a PNG (a JPEG is a flat colour).
_PROMPTS: tuple[tuple[str, str], ...] = (
    ("a banana surfing a wave at sunset", "16:9"),
    ("a banana astronaut floating above the moon", "1:1"),
    ("a watercolour of a banana market in Lisbon", "4:3"),
    ("a banana-shaped submarine in a coral reef", "16:9"),
    ("a cubist still life with bananas and a teapot", "3:4"),
    ("a banana reading a newspaper in a Paris cafe", "1:1"),
    ("a neon sign that says BANANA in the rain", "9:16"),
    ("a banana knight guarding a castle of pineapples", "2:3"),
    ("a banana tree on a tiny floating island", "1:1"),
    ("an art deco poster of a banana airship", "2:3"),
    ("a banana detective with a magnifying glass", "4:5"),
    ("a pixel-art banana jumping over a pipe", "1:1"),
    ("a banana wearing sunglasses on a skateboard", "16:9"),
    ("a banana lighthouse on a stormy night", "9:16"),
    ("a banana bread recipe card, hand-lettered", "3:2"),
    ("a banana robot watering houseplants", "1:1"),
    ("a ukiyo-e wave made of bananas", "21:9"),
    ("a banana hot-air balloon over the Alps", "5:4"),
)
_FAILING = frozenset(
    {"a banana reading a newspaper in a Paris cafe", "a banana lighthouse on a stormy night"}
)
_EDITS: tuple[str, ...] = (
    "make the banana gold",
    "put the banana in a snow globe",
)


def demo_rows(count: int) -> list[Row]:
    """The demo's requests: mostly text-to-image, a few edits, in several sizes."""
    rows: list[Row] = []
    drawn = edits = 0
    for index in range(count):
        line = index + 1
        if index % 10 == 9:
            prompt = _EDITS[edits % len(_EDITS)]
            edits += 1
            request: ImageRequest = ImageToImage(prompt=prompt, image_urls=[_EDIT_SOURCE])
        else:
            prompt, size = _PROMPTS[drawn % len(_PROMPTS)]
            drawn += 1
            request = TextToImage(prompt=prompt, image_size=cast("Any", size))
        rows.append(Row(line, request, f"{line:02d}-{slug(prompt, words=3)}"))
    return rows


def _fails(body: Mapping[str, Any]) -> bool:
    """The fake fails the same two prompts on every run, to show how failures look."""
    return bool(body.get("input", {}).get("prompt") in _FAILING)


def _client(fake: FakeNanoBanana, base_url: str) -> AsyncNanoBanana:
    """A client for the fake on loopback, its clocks scaled like ``fake.client()``'s."""
    return AsyncNanoBanana(
        api_key=fake.api_key,
        base_url=base_url,
        poll=PollPolicy().scaled(fake.time_scale),
        retry=RetryPolicy().scaled(fake.time_scale),
    )


async def run_demo(ui: Ui, report: BatchReport, *, count: int) -> int:
    """A batch against the fake provider served on loopback: no key, no network."""
    fake = FakeNanoBanana(tier="basic", time_scale=_TIME_SCALE, fail_rate=_fails)
    async with fake.serve() as base_url, _client(fake, base_url) as client:
        ui.info(
            f"nanobanana demo: {count} images from a fake provider on {base_url} "
            f"(no API key, no network; {1 / _TIME_SCALE:g}x faster than the real service)."
        )
        ui.info(
            "The client knows none of the fake's limits (the 'basic' tier) and learns them "
            "as it goes; two tasks fail on purpose, to show how failures are reported."
        )
        await run_batch(ui, client, demo_rows(count), report, what="request")
    print_summary(ui, report, what="request")
    assert report.out is not None
    gallery = write_gallery(
        report.out,
        report.entries,
        report.final,
        title="nanobanana demo",
        note=(
            "Pictures drawn by the fake provider on this machine (no API key, no network): "
            "each shows its prompt, in shapes and colours derived from it. Two requests "
            "fail on purpose, to show how failures look."
        ),
    )
    ui.info(f"Images saved in {report.out}/. Open the gallery: {gallery.resolve()}")
    ui.result(str(gallery))
    ui.info('Next: set NANOBANANA_API_KEY and try `nanobanana generate "a banana"`.')
    return EXIT_OK if report.saved else EXIT_FAILURE
